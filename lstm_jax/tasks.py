"""What a model is trained for: the loss and metrics per example that the training loop sums.

A task has ``loss(out, y)`` and ``metrics(out, y)`` returning one value per example [B] (the loop
weights and sums them), ``shown`` (the metric names in progress lines) and ``best_metric`` /
``best_mode`` (which checkpoint is the best).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array

from lstm_jax.errors import ConfigError


class QuantileTask:
    """Quantile forecasts trained with the pinball (quantile) loss.

    The model emits ``out_BxHQ`` = [B, H * Q]: for each of the H steps, the Q quantiles in the
    order of ``quantiles`` (``reshape(B, H, Q)``). The targets are ``y_BxH``. The pinball loss of
    quantile q is ``max(q * (y - p), (q - 1) * (y - p))``; its minimiser is the q-quantile of y
    given the input, so with ``quantiles=(0.5,)`` this is half the absolute error (a median
    forecast). The loss is its mean over steps and quantiles.

    Metrics per example: ``mae`` of the median (the quantile nearest 0.5), and, with two or more
    quantiles, ``coverage`` (the fraction of steps whose target lies between the lowest and the
    highest quantile) and ``width`` (their mean distance).
    """

    best_metric, best_mode = "val_loss", "min"
    shown = ("loss", "mae")

    def __init__(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9)):
        q = [float(v) for v in quantiles]
        if not q or any(not 0.0 < v < 1.0 for v in q) or len(set(q)) != len(q):
            raise ConfigError(f"quantiles must be distinct numbers in (0, 1), got {list(quantiles)}")
        self.quantiles = tuple(sorted(q))
        self.median_index = int(np.argmin([abs(v - 0.5) for v in self.quantiles]))

    @property
    def num_quantiles(self) -> int:
        return len(self.quantiles)

    def split(self, out_BxHQ: Array) -> Array:
        """[B, H * Q] -> [B, H, Q]."""
        return out_BxHQ.reshape(out_BxHQ.shape[0], -1, self.num_quantiles)

    def loss(self, out_BxHQ: Array, y_BxH: Array) -> Array:
        q_Q = jnp.asarray(self.quantiles, out_BxHQ.dtype)
        err_BxHxQ = y_BxH[..., None] - self.split(out_BxHQ)
        return jnp.mean(jnp.maximum(q_Q * err_BxHxQ, (q_Q - 1) * err_BxHxQ), axis=(-2, -1))

    def metrics(self, out_BxHQ: Array, y_BxH: Array) -> dict[str, Array]:
        p_BxHxQ = self.split(out_BxHQ)
        out = {"mae": jnp.mean(jnp.abs(p_BxHxQ[..., self.median_index] - y_BxH), axis=-1)}
        if self.num_quantiles >= 2:
            lo, hi = p_BxHxQ[..., 0], p_BxHxQ[..., -1]
            out["coverage"] = jnp.mean(((y_BxH >= lo) & (y_BxH <= hi)).astype(out_BxHQ.dtype), axis=-1)
            out["width"] = jnp.mean(hi - lo, axis=-1)
        return out
