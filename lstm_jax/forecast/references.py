"""The reference forecasts every LSTM forecast is scored beside, on the same training parts.

Two kinds, one word ("references") for both:

* the **naive references**, model-free: ``naive`` (the last value repeated) and ``seasonal_naive``
  (the last season repeated; with a season), from ``lstm_jax.data.series``;
* the **statistical references**, statsforecast's AutoETS, AutoTheta and AutoARIMA
  (``lstm_jax.forecast.statistical``; optional, ``pip install -e '.[baselines]'``).

A run's ``summary.json`` records their scores under the key ``baselines`` (the name it has always
had; kept so that earlier runs and tools still read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lstm_jax.data import series as series_lib
from lstm_jax.forecast import statistical as statistical_lib


def reference_forecasts(train_parts: Sequence[np.ndarray], steps: int, season: int, *, statistical: bool = True,
                        log: Callable[[str], None] = print, fitted=None) -> dict[str, list[np.ndarray]]:
    """What every forecast is reported beside, per series: naive, seasonal naive (with a season) and,
    with statsforecast installed, AutoETS, AutoTheta and AutoARIMA fitted on the same training parts
    (one line says when they are skipped). A model statsforecast cannot fit on some series is left
    out of the references altogether, so that every mean is over the same series.

    ``fitted()``, when given, returns what ``statistical.statistical_forecasts_many`` returned for
    these training parts (started earlier, e.g. in a worker process while a network trains)."""

    out: dict[str, list[np.ndarray]] = {"naive": [series_lib.naive(t, steps) for t in train_parts]}
    if season > 1:
        out["seasonal_naive"] = [series_lib.seasonal_naive(t, steps, season) if len(t) >= season
                                 else series_lib.naive(t, steps) for t in train_parts]
    if not statistical:
        return out
    per_series = fitted() if fitted is not None else \
        statistical_lib.statistical_forecasts_many(train_parts, steps, season)
    if per_series is None:
        log(statistical_lib.SKIPPED)
        return out
    for name in statistical_lib.MODELS:
        if all(name in p for p in per_series):
            out[name] = [p[name] for p in per_series]
    return out


def series_references(train_T: np.ndarray, steps: int, season: int, *, statistical: bool = True,
                      log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """``reference_forecasts`` of one series: name -> its forecast of the ``steps`` values after ``train_T``."""
    return {k: v[0] for k, v in reference_forecasts([train_T], steps, season, statistical=statistical, log=log).items()}
