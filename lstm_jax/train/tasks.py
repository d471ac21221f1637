"""Tasks: what a model's output is scored against. A task gives a loss and metrics per example.

``loss(out, y) -> [B]`` and ``metrics(out, y) -> {name: [B]}`` are pure JAX; the training loop
weights and sums them over batches, so every reported metric is an exact mean over real rows.
``shown`` names the metrics printed each epoch (and drawn in the learning curves).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax.errors import ConfigError

Array = jax.Array


class BinaryTask:
    """Logits [B] against labels {0, 1}: binary cross-entropy and accuracy."""

    shown = ("loss", "accuracy")

    @staticmethod
    def loss(logits_B: Array, y_B: Array) -> Array:
        return optax.sigmoid_binary_cross_entropy(logits_B, y_B)

    @staticmethod
    def metrics(logits_B: Array, y_B: Array) -> dict[str, Array]:
        return {"accuracy": ((logits_B > 0) == (y_B > 0.5)).astype(jnp.float32)}


class RegressionTask:
    """Predictions [B, K] against targets [B, K]: mean squared error (and MAE)."""

    shown = ("loss", "mae")

    @staticmethod
    def loss(pred_BxK: Array, y_BxK: Array) -> Array:
        return jnp.mean(jnp.square(pred_BxK - y_BxK), axis=-1)

    @staticmethod
    def metrics(pred_BxK: Array, y_BxK: Array) -> dict[str, Array]:
        return {"mse": jnp.mean(jnp.square(pred_BxK - y_BxK), axis=-1), "mae": jnp.mean(jnp.abs(pred_BxK - y_BxK), axis=-1)}


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


class SoftmaxTask:
    """K-class classification: logits [B, K] (K > 2) or the logits [B] of one sigmoid unit (K = 2)
    against class indices y [B] (any dtype holding 0..K-1): cross-entropy, and accuracy.

    ``label_smoothing`` a: the target puts 1 - a on the true class and a / K on every class (for one
    sigmoid unit: the target 1 becomes 1 - a / 2, the target 0 becomes a / 2). ``class_weights`` [K]:
    each example's loss is multiplied by the weight of its true class (``balanced_class_weights`` gives
    N / (K * n_k), so every class carries the same total weight on an unbalanced training set). With
    neither, a sigmoid unit's loss is exactly ``optax.sigmoid_binary_cross_entropy`` (``BinaryTask``'s).
    The metrics are never weighted or smoothed: ``accuracy`` is the share of rows predicted right.
    """

    shown = ("loss", "accuracy")

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0,
                 class_weights: Sequence[float] | None = None):
        if num_classes < 2:
            raise ConfigError(f"a classification task needs num_classes >= 2, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if class_weights is not None:
            class_weights = tuple(float(w) for w in class_weights)
            if len(class_weights) != num_classes or min(class_weights) < 0 or not all(np.isfinite(class_weights)):
                raise ConfigError(f"class_weights needs {num_classes} finite weights >= 0, got {class_weights}")
        self.num_classes, self.label_smoothing, self.class_weights = num_classes, float(label_smoothing), class_weights

    def _check(self, out: Array) -> None:
        want = (1,) if self.num_classes == 2 else (2,)
        if out.ndim not in want or (out.ndim == 2 and out.shape[-1] != self.num_classes):
            shape = "[B] (one sigmoid unit)" if self.num_classes == 2 else f"[B, {self.num_classes}]"
            raise ConfigError(f"{self.num_classes} classes need logits {shape}, got shape {out.shape}")

    def loss(self, out: Array, y_B: Array) -> Array:
        self._check(out)
        y = y_B.astype(jnp.int32)
        a = self.label_smoothing
        if self.num_classes == 2:
            target = y.astype(out.dtype)
            if a:
                target = target * (1.0 - a) + 0.5 * a
            loss = optax.sigmoid_binary_cross_entropy(out, target)
        else:
            target = jax.nn.one_hot(y, self.num_classes, dtype=out.dtype)
            if a:
                target = optax.smooth_labels(target, a)
            loss = optax.softmax_cross_entropy(out, target)
        if self.class_weights is not None:
            loss = loss * jnp.asarray(self.class_weights, out.dtype)[y]
        return loss

    def metrics(self, out: Array, y_B: Array) -> dict[str, Array]:
        self._check(out)
        pred = (out > 0).astype(jnp.int32) if self.num_classes == 2 else jnp.argmax(out, axis=-1)
        return {"accuracy": (pred == y_B.astype(jnp.int32)).astype(jnp.float32)}


def balanced_class_weights(y_N, num_classes: int) -> tuple[float, ...]:
    """N / (K * n_k) for each class k of the labels ``y_N`` (scikit-learn's 'balanced'); a class with
    no row gets 0 (it never weighs an example anyway)."""
    counts = np.bincount(np.asarray(y_N).astype(np.int64), minlength=num_classes).astype(np.float64)
    n = counts.sum()
    return tuple(float(n / (num_classes * c)) if c else 0.0 for c in counts)


# Metrics for which a higher value is better; every other metric (loss, mse, mae, ...) is minimised.
_HIGHER_IS_BETTER = ("accuracy", "auc", "f1", "precision", "recall", "coverage")


def selection_mode(metric: str) -> str:
    """'max' for metrics where higher is better (accuracy, AUC, F1, ...), else 'min' (losses, errors)."""
    return "max" if any(metric.endswith(k) for k in _HIGHER_IS_BETTER) else "min"
