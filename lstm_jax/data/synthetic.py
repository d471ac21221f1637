"""The synthetic tasks of the seed programs: the order task (binary) and the scaled sine (forecasting)."""

from __future__ import annotations

import numpy as np

from lstm_jax.data.dataset import Dataset, Split, windows
from lstm_jax.data.series import MinMax
from lstm_jax.errors import DataError

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
