"""Models: a binary classifier and a forecaster on top of an ``LSTMStack``.

Both take ``x_BxTxD`` and optional ``lengths_B`` and a dropout ``key`` (None at evaluation).
``ModelConfig`` describes the network alone; how it is trained lives in ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax.cells import get_activation, get_cell
from lstm_jax.errors import ConfigError
from lstm_jax.layers import DROPOUT_MODES, LSTMStack

Array = jax.Array

POOLINGS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The recurrent network.

    ``hidden_size`` is one width for every layer, or a tuple with one width per layer.
    ``pooling='last'`` reads each row's last valid step (the final carry; for a bidirectional
    layer, the forward state at the end beside the backward state at the start); ``'mean'``
    averages the outputs over the valid steps.
    """

    cell: str = "lstm"
    hidden_size: int | tuple[int, ...] = 50
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers
    input_dropout: float = 0.0  # on each layer's input, inside the layer
    recurrent_dropout: float = 0.0  # on the h that feeds each recurrence
    dropout_mode: str = "variational"  # input/recurrent masks: one per sequence, or "per_step"
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    forget_bias: float = 1.0
    pooling: str = "last"
    unroll: int | None = None  # lax.scan unroll; None: a per-backend default

    def __post_init__(self):
        if isinstance(self.hidden_size, Sequence):
            sizes = tuple(int(h) for h in self.hidden_size)
            if self.num_layers == 1 and len(sizes) > 1:
                object.__setattr__(self, "num_layers", len(sizes))
            elif len(sizes) != self.num_layers:
                raise ConfigError(f"num_layers={self.num_layers} but hidden_size has {len(sizes)} entries")
            object.__setattr__(self, "hidden_size", sizes)
        if self.num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {self.num_layers}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.unroll is not None and self.unroll < 1:
            raise ConfigError(f"unroll must be >= 1, got {self.unroll}")
        for name in ("input_dropout", "recurrent_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.dropout_mode not in DROPOUT_MODES:
            raise ConfigError(f"dropout_mode must be one of {', '.join(DROPOUT_MODES)}, got {self.dropout_mode!r}")
        get_cell(self.cell)
        get_activation(self.activation)
        get_activation(self.recurrent_activation)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        if isinstance(self.hidden_size, tuple):
            return self.hidden_size
        return (self.hidden_size,) * self.num_layers

    def stack(self, in_features: int, rngs: nnx.Rngs) -> LSTMStack:
        return LSTMStack(
            in_features,
            self.hidden_sizes,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            cell=self.cell,
            unroll=self.unroll,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
            dropout_mode=self.dropout_mode,
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            forget_bias=self.forget_bias,
            rngs=rngs,
        )


def pool(stack: LSTMStack, h_BxTxH: Array, carries, lengths_B: Array | None, pooling: str) -> Array:
    """[B, T, H] outputs -> [B, H] features, honouring the valid lengths."""
    if pooling == "last":
        return stack.final_output(carries)
    if lengths_B is None:
        return h_BxTxH.mean(axis=1)
    # Outputs past a row's length are already zero, so the sum only needs the right divisor.
    return h_BxTxH.sum(axis=1) / jnp.maximum(jnp.asarray(lengths_B), 1)[:, None].astype(h_BxTxH.dtype)


class _Head(nnx.Module):
    def __init__(self, in_features: int, out_features: int, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = config.stack(in_features, rngs)
        self.head = nnx.Linear(self.encoder.out_features, out_features, rngs=rngs)

    def features(self, x_BxTxD: Array, lengths: Array | None = None, *, key: Array | None = None) -> Array:
        h, carries = self.encoder(x_BxTxD, lengths, return_carry=True, key=key)
        return pool(self.encoder, h, carries, lengths, self.config.pooling)


class Classifier(_Head):
    """Binary classifier: ``model(x_BxTxD, lengths=None, *, key=None)`` -> logits [B]."""

    def __init__(self, in_features: int, config: ModelConfig, *, rngs: nnx.Rngs):
        super().__init__(in_features, 1, config, rngs=rngs)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, *, key: Array | None = None) -> Array:
        return self.head(self.features(x_BxTxD, lengths, key=key))[:, 0]


class Forecaster(_Head):
    """Window -> next ``horizon`` values: ``model(x_BxTxD, lengths=None, *, key=None)`` -> [B, horizon]."""

    def __init__(self, in_features: int, config: ModelConfig, *, horizon: int = 1, rngs: nnx.Rngs):
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        super().__init__(in_features, horizon, config, rngs=rngs)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, *, key: Array | None = None) -> Array:
        return self.head(self.features(x_BxTxD, lengths, key=key))
