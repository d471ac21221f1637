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
from lstm_jax.series import MinMax


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


# -- the synthetic binary task --------------------------------------------------------------------

def make_order_task(num: int, *, length: int = 20, features: int = 3, noise: float = 0.2, seed: int = 0) -> Split:
    """Which came first? A temporal pattern no bag-of-values model can read.

    Each row is Gaussian noise (std ``noise``) on ``features`` channels. Channel 0 carries a unit
    pulse at a random step ``a`` and channel 1 one at a different random step ``b``; any further
    channels are pure noise. The label is 1 when ``a < b``. Classes are balanced by construction.
    """
    if length < 2 or features < 2:
        raise DataError(f"the order task needs length >= 2 and features >= 2, got {length} and {features}")
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, noise, (num, length, features)).astype(np.float32)
    a = rng.integers(0, length, num)
    b = (a + rng.integers(1, length, num)) % length  # uniform over the other steps
    rows = np.arange(num)
    x[rows, a, 0] += 1.0
    x[rows, b, 1] += 1.0
    return Split(x, (a < b).astype(np.float32))


def synthetic_binary(*, train: int = 3000, val: int = 500, test: int = 1000, length: int = 20, features: int = 3, seed: int = 0) -> Dataset:
    """The default binary task: ``make_order_task`` with independent train/val/test draws."""
    mk = lambda n, k: make_order_task(n, length=length, features=features, seed=seed * 1000 + k)
    return Dataset(
        mk(train, 1), mk(val, 2), mk(test, 3),
        info={"name": "synthetic", "task": "order of two pulses", "length": length, "features": features},
    )


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


def sine_series(num: int = 1000, stop: float = 100.0) -> np.ndarray:
    """The seed program's series: ``np.sin(np.linspace(0, stop, num))``."""
    return np.sin(np.linspace(0.0, stop, num))


def sine_forecast(*, window: int = 50, num: int = 1000, val_fraction: float = 0.2) -> tuple[Dataset, MinMax]:
    """The seed forecasting data: MinMax-scaled sine, windows of ``window`` predicting the next value.

    The validation split is the last ``val_fraction`` of the windows, unshuffled, as Keras'
    ``validation_split`` takes it. The scaler (``series.MinMax``, the one scaler of the package) is
    fitted on the whole series, as in the original; ``scaler.inverse(z)`` gives original units.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    series = sine_series(num)
    scaler = MinMax().fit(series)
    x, y = windows(scaler.forward(series), window)
    cut = int(len(x) * (1.0 - val_fraction))
    if cut < 1 or cut >= len(x):
        raise DataError(f"{len(x)} windows cannot be split {1 - val_fraction:.0%} / {val_fraction:.0%}")
    info = {"name": "sine", "num": num, "window": window, "val_fraction": val_fraction}
    return Dataset(Split(x[:cut], y[:cut]), Split(x[cut:], y[cut:]), info=info), scaler
