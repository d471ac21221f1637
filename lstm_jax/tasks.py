"""Tasks: what a model's output is scored against. A task gives a loss and metrics per example.

``loss(out, y) -> [B]`` and ``metrics(out, y) -> {name: [B]}`` are pure JAX; the training loop
weights and sums them over batches, so every reported metric is an exact mean over real rows.
``shown`` names the metrics printed each epoch (and drawn in the learning curves).
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class Task(Protocol):
    shown: tuple[str, ...]

    def loss(self, out: Array, y: Array) -> Array: ...

    def metrics(self, out: Array, y: Array) -> dict[str, Array]: ...


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


# Metrics for which a higher value is better; every other metric (loss, mse, mae, ...) is minimised.
_HIGHER_IS_BETTER = ("accuracy", "auc", "f1", "precision", "recall", "coverage")


def selection_mode(metric: str) -> str:
    """'max' for metrics where higher is better (accuracy, AUC, F1, ...), else 'min' (losses, errors)."""
    return "max" if any(metric.endswith(k) for k in _HIGHER_IS_BETTER) else "min"
