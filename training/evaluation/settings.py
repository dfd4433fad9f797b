"""The evaluation's settings and their defaults: the one place the protocol is set.

:class:`EvalSettings` holds the protocol (``python -m training evaluate`` reads its option
defaults from it, and experiment recipes override its fields); :class:`MLPConfig` is one
classifier's configuration. The classifier's own defaults (epochs, patience, batch, ...) are
set once, in ``audioembed.mlp.MLPConfig``, the code the evaluator and ``audioembed classify``
share; :class:`EvalSettings` starts from them.
"""
from __future__ import annotations

from dataclasses import dataclass

from audioembed.mlp import HIDDEN_UNITS, MLPConfig  # noqa: F401 (API: MLPConfig lived here)


@dataclass
class EvalSettings:
    """The evaluation protocol (section 4.4 classifiers, light supervision, QbE draws)."""

    seed: int = 0
    qbe_max_per_class: int = 100
    qbe_draws: int = 5
    classifiers: bool = True
    epochs: int = MLPConfig.epochs
    patience: int = MLPConfig.patience  # why 10: see MLPConfig
    val_fraction: float = MLPConfig.val_fraction
    batch_size: int = MLPConfig.batch_size
    lr: float = MLPConfig.lr
    light_per_class: int = 20
    light_trials: int = 3
    light_steps: int = 300
    light_batch_size: int = 32
    max_windows: int = MLPConfig.max_windows

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
