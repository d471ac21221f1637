"""``TrainConfig``: how to train, apart from the model (the model's config is ``nn.models.ModelConfig``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from lstm_jax.errors import ConfigError
from lstm_jax.train.steps import SCHEDULES
from lstm_jax.train.tasks import selection_mode


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train, apart from the model: epochs, batch size, Adam's learning rate, the seed, ...

    ``select`` names the validation metric that picks the best checkpoint (the one scored at the
    end, and early stopping's measure); higher is better for accuracy-like metrics, lower for the
    rest (``lstm_jax.train.tasks.selection_mode``). ``select='last'`` scores the last epoch's weights
    (validation is still measured and logged, but chooses nothing): the choice for a schedule that
    decays to zero on a validation set too small to rank checkpoints. ``profile_steps`` > 0 writes a ``jax.profiler`` trace
    of that many training steps (after the first, which compiles) into the workdir.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    eval_batch_size: int = 512
    patience: int = 0  # stop after this many epochs without a better validation metric; 0: never
    schedule: str = "constant"  # learning rate over training: constant | cosine | warmup_cosine
    warmup_epochs: int = 0  # for warmup_cosine: linear warmup from 0 over this many epochs
    clip_norm: float = 0.0  # clip gradients to this global norm; 0: no clipping
    select: str = "val_loss"
    profile_steps: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_size} and {self.eval_batch_size}")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs or (self.warmup_epochs and self.schedule != "warmup_cosine"):
            raise ConfigError(f"warmup_epochs must be in [0, epochs) and needs schedule=warmup_cosine, got {self.warmup_epochs}")
        if self.clip_norm < 0:
            raise ConfigError(f"clip_norm must be >= 0, got {self.clip_norm}")
        if not (self.select.startswith("val_") or self.select == "last"):
            raise ConfigError(f"select must name a validation metric (val_loss, val_accuracy, ...) or be 'last', "
                              f"got {self.select!r}")
        if self.select == "last" and self.patience:
            raise ConfigError("patience needs a validation metric to watch; select='last' has none")
        if self.profile_steps < 0:
            raise ConfigError(f"profile_steps must be >= 0, got {self.profile_steps}")

    @property
    def select_mode(self) -> str:
        return "max" if self.select == "last" else selection_mode(self.select)

    @property
    def select_metric(self) -> str:
        """The checkpoint metadata entry that ranks checkpoints ('last' ranks by epoch)."""
        return "epoch" if self.select == "last" else self.select
