"""The statsforecast wrapper: forecasts of the right length, the one-line skip without statsforecast."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from lstm_jax.errors import DataError
from lstm_jax.forecast import statistical as baselines


def _seasonal(n=48, season=4):
    t = np.arange(n)
    return 10 + 0.1 * t + 2 * np.sin(2 * np.pi * t / season) + np.random.default_rng(0).normal(0, 0.1, n)


def test_skip_line_when_statsforecast_cannot_be_imported(monkeypatch):
    real_import = builtins.__import__

    def no_statsforecast(name, *args, **kwargs):
        if name.startswith("statsforecast"):
            raise ImportError("No module named 'statsforecast'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_statsforecast)
    assert not baselines.available()
    lines = []
    assert baselines.try_statistical_forecasts(_seasonal(), 4, 4, log=lines.append) == {}
    assert lines == [baselines.SKIPPED]
    assert "statsforecast is not installed" in lines[0] and "pip install -e '.[baselines]'" in lines[0]
    with pytest.raises(ImportError):
        baselines.statistical_forecasts(_seasonal(), 4, 4)


def test_wrappers_forecast_a_seasonal_series():
    pytest.importorskip("statsforecast")
    y = _seasonal()
    out = baselines.statistical_forecasts(y[:-8], 8, season=4)
    assert set(out) == set(baselines.MODELS)
    truth = y[-8:]
    for name, pred in out.items():
        assert pred.shape == (8,) and np.all(np.isfinite(pred))
        # A clean trend plus season: every model should be far better than the series' own spread.
        assert np.mean(np.abs(pred - truth)) < 0.25 * np.std(y), name
    # Too short for two seasons: fitted without one rather than failing.
    short = baselines.statistical_forecasts(y[:7], 3, season=4)
    assert {k: v.shape for k, v in short.items()} == {name: (3,) for name in baselines.MODELS}
    # A model statsforecast refuses (AutoETS on 6 values: "tiny datasets") is left out with a warning.
    with pytest.warns(RuntimeWarning, match="AutoETS could not be fitted"):
        tiny = baselines.statistical_forecasts(y[:6], 3, season=4)
    assert set(tiny) == {"AutoTheta", "AutoARIMA"}


def test_bad_input():
    pytest.importorskip("statsforecast")
    with pytest.raises(DataError, match="unknown statistical model"):
        baselines.statistical_forecasts(_seasonal(), 4, models=("Prophet",))
    with pytest.raises(DataError, match="at least 3 values"):
        baselines.statistical_forecasts(np.array([1.0, np.nan, 2.0]), 4)


def test_long_seasons_approximate_the_arima_search():
    """Seasons above 12 make an exact AutoARIMA search take many minutes (CO2's 52 weeks): it
    approximates there, and stays exact (statsforecast's default, the shared figures) up to 12."""
    pytest.importorskip("statsforecast")
    classes = baselines._models()
    assert baselines._make(classes["AutoARIMA"], "AutoARIMA", 52).approximation is True
    assert baselines._make(classes["AutoARIMA"], "AutoARIMA", 12).approximation is False
    assert baselines._make(classes["AutoARIMA"], "AutoARIMA", 1).approximation is False
    # A long weekly-like season still gives a sane forecast through the public function.
    y = _seasonal(n=24 * 6, season=24)
    out = baselines.statistical_forecasts(y[:-24], 24, season=24, models=("AutoARIMA",))
    assert np.mean(np.abs(out["AutoARIMA"] - y[-24:])) < 0.25 * np.std(y)
