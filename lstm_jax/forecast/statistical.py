"""The statistical reference forecasts, from statsforecast (an optional dependency): AutoETS, AutoTheta, AutoARIMA.

With the naive ones they are the references every forecast is scored beside (``references``).

The one place lstm_jax touches statsforecast (``pip install -e '.[baselines]'``; tested with 2.1).
Each model is fitted on a training part with a given season and forecasts the ``steps`` values
after it at once, the way the M competitions score them. Without statsforecast, ``available()``
is False and ``SKIPPED`` is the one line a run prints.

Cost: statsforecast 2.x has no first-run compilation, but importing it is slow, so it is imported
only when a run asks for statistical forecasts. AutoARIMA's exact likelihood grows with the seasonal
period (its state space has about ``season * P`` dimensions), so above ``EXACT_SEASON_MAX`` it
selects its model by conditional sum of squares (statsforecast's ``approximation=True``, what R's
``auto.arima`` does for long or high-frequency series); at seasons up to 12 the fit stays exact,
statsforecast's default, which reproduces ``../shared/data/forecast/README.md``. The measured
import and fit times: ``docs/results.md``, "Design measurements".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from lstm_jax.errors import DataError

MODELS = ("AutoETS", "AutoTheta", "AutoARIMA")
EXACT_SEASON_MAX = 12  # monthly and quarterly data; weekly (52) and longer seasons use the approximation
# The one line a run prints without statsforecast (quoted as is in docs/forecasting.md).
SKIPPED = "statistical baselines skipped: statsforecast is not installed (pip install -e '.[baselines]')"


def _models():
    """The statsforecast model classes by name; ImportError when it is not installed."""
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta

    return {"AutoETS": AutoETS, "AutoTheta": AutoTheta, "AutoARIMA": AutoARIMA}


def available() -> bool:
    """Whether statsforecast can be imported (importing it compiles numba code: seconds)."""
    try:
        _models()
    except ImportError:
        return False
    return True


def _make(cls, name: str, season: int):
    """One statsforecast model; AutoARIMA approximates its search above ``EXACT_SEASON_MAX``."""
    if name == "AutoARIMA" and season > EXACT_SEASON_MAX:
        return cls(season_length=season, approximation=True)
    return cls(season_length=season)


def statistical_forecasts(train_T: np.ndarray, steps: int, season: int = 1,
                          models: Sequence[str] = MODELS) -> dict[str, np.ndarray]:
    """Each model in ``models`` fitted on ``train_T`` -> its forecast of the next ``steps`` values.

    ``season`` is the seasonal period (1: none); it is dropped to 1 for a model when the training
    part is shorter than two seasons, which the seasonal fits need; above a season of
    ``EXACT_SEASON_MAX`` AutoARIMA approximates its model search (see the module). A model that fails to fit on
    this series (statsforecast raises on some degenerate inputs) is left out of the result, with a
    warning, rather than failing the run. Raises ImportError without statsforecast (see
    ``available``).
    """
    classes = _models()
    unknown = [m for m in models if m not in classes]
    if unknown:
        raise DataError(f"unknown statistical model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    y = np.asarray(train_T, np.float64)
    if y.ndim != 1 or len(y) < 3 or not np.all(np.isfinite(y)):
        raise DataError(f"statistical forecasts need a finite 1-D training part of at least 3 values, got {y.shape}")
    if steps < 1:
        raise DataError(f"statistical forecasts need steps >= 1, got {steps}")
    m = int(season) if season > 1 and len(y) >= 2 * season else 1
    out = {}
    for name in models:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # statsforecast's convergence chatter, not the user's problem
                pred = _make(classes[name], name, m).forecast(y=y, h=steps)["mean"]
        except Exception as e:  # noqa: BLE001 - one failing model must not end the run
            warnings.warn(f"{name} could not be fitted: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
            continue
        pred = np.asarray(pred, np.float64)
        if pred.shape == (steps,) and np.all(np.isfinite(pred)):
            out[name] = pred
        else:
            warnings.warn(f"{name} gave a forecast of shape {pred.shape} with non-finite values; left out",
                          RuntimeWarning, stacklevel=2)
    return out


def try_statistical_forecasts(train_T: np.ndarray, steps: int, season: int = 1,
                              models: Sequence[str] = MODELS, log=print) -> dict[str, np.ndarray]:
    """``statistical_forecasts``, or ``{}`` after logging ``SKIPPED`` when statsforecast is missing."""
    try:
        return statistical_forecasts(train_T, steps, season, models)
    except ImportError:
        log(SKIPPED)
        return {}


def statistical_forecasts_many(train_parts: Sequence[np.ndarray], steps: int, season: int = 1,
                               models: Sequence[str] = MODELS) -> list[dict[str, np.ndarray]] | None:
    """``statistical_forecasts`` for each training part; None without statsforecast. A plain function
    of arrays, so that a run can compute it in a worker process while its network trains."""
    if not available():
        return None
    return [statistical_forecasts(t, steps, season, models) for t in train_parts]
