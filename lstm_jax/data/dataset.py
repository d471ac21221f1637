"""Datasets as NumPy arrays, and the batches the training loop consumes.

A ``Split`` holds ``x`` [N, T, D], ``y`` ([N] labels or [N, K] targets) and optional ``lengths`` [N].
A ``Dataset`` holds train / val / (optional) test splits and a JSON-able ``info`` dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from lstm_jax.errors import DataError


@dataclasses.dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray | None = None

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise DataError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if self.x.ndim != 3:
            raise DataError(f"x must be [N, T, D], got shape {self.x.shape}")

    def __len__(self) -> int:
        return len(self.x)


@dataclasses.dataclass
class Dataset:
    train: Split
    val: Split
    test: Split | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return self.train.x.shape[-1]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def batches(split: Split, batch_size: int, order: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches of exactly ``batch_size`` rows in ``order`` (default: as stored).

    The last batch is padded by repeating rows with ``weight`` 0, so every step sees one shape
    (one compilation) and a weighted mean over a batch equals the plain mean over its real rows.
    """
    n = len(split)
    order = np.arange(n) if order is None else np.asarray(order)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        weight = np.ones(batch_size, np.float32)
        if len(idx) < batch_size:
            weight[len(idx) :] = 0.0
            idx = np.concatenate([idx, np.resize(idx, batch_size - len(idx))])
        batch = {"x": split.x[idx], "y": split.y[idx], "weight": weight}
        if split.lengths is not None:
            batch["lengths"] = split.lengths[idx]
        yield batch


# -- forecasting ----------------------------------------------------------------------------------

def windows(series: np.ndarray, window: int, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows: x [N, window, D] and the following values y [N, horizon * D].

    ``series`` is [T] or [T, D]; N = T - window - horizon + 1.
    """
    s = np.asarray(series, np.float32)
    if s.ndim == 1:
        s = s[:, None]
    if window < 1 or horizon < 1:
        raise DataError(f"window and horizon must be >= 1, got {window} and {horizon}")
    n = len(s) - window - horizon + 1
    if n < 1:
        raise DataError(f"a window of {window} plus a horizon of {horizon} is longer than the series ({len(s)} values)")
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]
    x = s[idx]
    y = s[np.arange(horizon)[None, :] + np.arange(window, window + n)[:, None]].reshape(n, -1)
    return x, y
