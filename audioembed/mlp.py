"""The shallow classifier of paper section 4.4: one code for the evaluator and ``classify``.

An MLP with ``hidden_layers`` hidden layers of ``hidden_units`` ReLU units and one independent
sigmoid output per class, trained on *window* features (Adam, binary cross-entropy). Inputs
are standardised with the training windows' mean and standard deviation; the affine map is a
fixed first layer, so no standardised copy of the data is made (a 6144-d log-mel fold would be
hundreds of MB). ``hidden_layers=0`` is a linear (logistic) classifier on the same inputs.

``training.evaluation.classifiers`` builds folds and light supervision on top of this module;
``audioembed.classify`` fits one classifier for users. Neither copies it.

    >>> import torch
    >>> x, y = torch.randn(40, 8), torch.eye(2)[torch.arange(40) % 2]
    >>> model, log = train_mlp(x, y, MLPConfig(hidden_units=16, epochs=3, val_fraction=0.0))
    >>> window_probabilities(model, x).shape
    (40, 2)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

HIDDEN_UNITS = 512  # per hidden layer (paper section 4.4)


@dataclass
class MLPConfig:
    """One shallow classifier and how it is trained; the defaults are the evaluator's
    standard protocol (``training.evaluation.settings.EvalSettings`` reads them from here)."""

    hidden_layers: int = 1
    hidden_units: int = HIDDEN_UNITS
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    # 3 stopped some folds at a validation-loss dip in epoch 1-2 (debian-sfx, first release:
    # 2-layer fold mAP 0.084 at patience 3, 0.235 at 10, with a later, lower minimum).
    patience: int = 10
    max_windows: int | None = 10  # training windows per segment (see :func:`capped_windows`)
    steps: int | None = None  # a fixed number of gradient steps instead of ``epochs``
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Standardize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


def mlp_network(n_inputs: int, n_classes: int, hidden_layers: int, hidden_units: int = HIDDEN_UNITS,
                mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.nn.Sequential:
    """Standardisation (identity until ``mean``/``std`` or a state dict are given), the hidden
    layers and a linear output: the layout :func:`build_mlp` trains and ``classify`` stores."""
    mean = torch.zeros(n_inputs) if mean is None else mean
    std = torch.ones(n_inputs) if std is None else std
    layers: list[torch.nn.Module] = [Standardize(mean, std)]
    width = n_inputs
    for _ in range(hidden_layers):
        layers += [torch.nn.Linear(width, hidden_units), torch.nn.ReLU()]
        width = hidden_units
    layers.append(torch.nn.Linear(width, n_classes))
    return torch.nn.Sequential(*layers)


def build_mlp(x_train: torch.Tensor, n_classes: int, config: MLPConfig) -> torch.nn.Sequential:
    """Standardisation fitted on ``x_train``, then the hidden layers and a linear output."""
    mean = x_train.mean(dim=0)
    # Constant dimensions (e.g. always-padded log-mel frames) would divide by zero.
    std = x_train.std(dim=0).clamp_min(1e-5)
    return mlp_network(x_train.shape[1], n_classes, config.hidden_layers, config.hidden_units, mean, std)


def mean_loss(model, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    """Binary cross-entropy per window and class (the validation loss of early stopping)."""
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            total += torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y[i:i + batch], reduction="sum").item()
    return total / (len(x) * y.shape[1])


def train_mlp(x: torch.Tensor, y: torch.Tensor, config: MLPConfig,
              val: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.nn.Module, dict]:
    """Train on windows ``x`` (float32) with targets ``y`` (float32 multi-hot); returns the model
    (eval mode) and a log with the epochs run and the best validation loss.

    With ``val`` the weights of the epoch with the lowest validation loss are kept (stop after
    ``patience`` epochs without improvement, at most ``epochs``); without, all ``epochs`` (or
    ``steps`` gradient steps) are run. Deterministic given ``config.seed``.
    """
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_mlp(x, y.shape[1], config)
    # foreach: one kernel per step over all tensors; the per-tensor loop costs ~30% more
    # on the 6144x512 first layer of the log-mel baseline.
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                           foreach=True)
    best, best_state, best_epoch, stale = math.inf, None, 0, 0
    epochs = config.epochs if config.steps is None else math.ceil(
        config.steps / math.ceil(len(x) / config.batch_size))
    step, epoch = 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), config.batch_size):
            if config.steps is not None and step == config.steps:
                break
            step += 1
            idx = order[i:i + config.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if val is None:
            continue
        model.eval()
        vloss = mean_loss(model, *val)
        if vloss < best:
            best, best_epoch, stale = vloss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"epochs_run": epoch, "steps": step, "best_epoch": best_epoch or epoch,
                   "val_loss": None if val is None else best}


def window_probabilities(model: torch.nn.Module, x: torch.Tensor, batch: int = 4096) -> np.ndarray:
    """The sigmoid outputs ``(n_windows, n_classes)`` float32 of windows ``x``."""
    probs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            probs.append(torch.sigmoid(model(x[i:i + batch])).numpy())
    return np.concatenate(probs) if probs else np.zeros((0, model[-1].out_features), np.float32)


def capped_windows(seg: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (sorted) of a random ``cap`` of each segment's windows; ``seg`` is the segment
    of each window, non-decreasing. One 20-minute recording then does not outweigh a thousand
    short clips nor dominate the training time."""
    order = np.lexsort((rng.random(len(seg)), seg))  # by segment, shuffled within
    rank = np.arange(len(seg)) - np.searchsorted(seg[order], seg[order])
    return np.sort(order[rank < cap])
