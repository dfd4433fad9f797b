"""The evaluation's settings and their defaults: the one place they are set.

:class:`EvalSettings` holds the protocol (``python -m training evaluate`` reads its option
defaults from it, and experiment recipes override its fields); :class:`MLPConfig` is one
classifier's configuration, its defaults those of :class:`EvalSettings`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

HIDDEN_UNITS = 512  # per hidden layer (paper section 4.4)


@dataclass
class EvalSettings:
    """The evaluation protocol (section 4.4 classifiers, light supervision, QbE draws)."""

    seed: int = 0
    qbe_max_per_class: int = 100
    qbe_draws: int = 5
    classifiers: bool = True
    epochs: int = 50
    # 3 stopped some folds at a validation-loss dip in epoch 1-2 (debian-sfx, first release:
    # 2-layer fold mAP 0.084 at patience 3, 0.235 at 10, with a later, lower minimum).
    patience: int = 10
    val_fraction: float = 0.1
    batch_size: int = 256
    lr: float = 1e-3
    light_per_class: int = 20
    light_trials: int = 3
    light_steps: int = 300
    light_batch_size: int = 32
    max_windows: int = 10

    def mlp(self, layers: int) -> "MLPConfig":
        """The classifier of the standard protocol (early stopping on a validation split)."""
        return MLPConfig(hidden_layers=layers, epochs=self.epochs, batch_size=self.batch_size,
                         lr=self.lr, val_fraction=self.val_fraction, patience=self.patience,
                         max_windows=self.max_windows, seed=self.seed)

    def light_mlp(self, layers: int) -> "MLPConfig":
        """The light-supervision classifier: a fixed number of steps, no validation split."""
        return MLPConfig(hidden_layers=layers, steps=self.light_steps,
                         batch_size=self.light_batch_size, lr=self.lr, val_fraction=0.0,
                         max_windows=self.max_windows, seed=self.seed)


@dataclass
class MLPConfig:
    """One shallow classifier (``training.evaluation.classifiers``)."""

    hidden_layers: int = 1
    hidden_units: int = HIDDEN_UNITS
    epochs: int = EvalSettings.epochs
    batch_size: int = EvalSettings.batch_size
    lr: float = EvalSettings.lr
    weight_decay: float = 0.0
    val_fraction: float = EvalSettings.val_fraction
    patience: int = EvalSettings.patience
    max_windows: int | None = EvalSettings.max_windows
    steps: int | None = None  # a fixed number of gradient steps instead of ``epochs``
    seed: int = EvalSettings.seed

    def to_dict(self) -> dict:
        return asdict(self)
