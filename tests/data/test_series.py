"""Real-series forecasting: the CSV loader, transforms, season detection, baselines, metrics, and
``experiments.forecast --dataset=csv:...`` end to end (errors as one line; a tiny real run)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from harness import run_front_end

from lstm_jax.data import series
from lstm_jax.errors import ConfigError, DataError

SHARED_FORECAST = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "forecast"


# The transform-chain recipe (the ensemble one is tested in process in test_forecast_recipe.py).
# (statsforecast's AutoARIMA on 700 monthly values takes minutes on a busy machine: left out here and
# tested on a short series in test_train_and_evaluate.py.)
ELNINO_FLAGS = ("--column=sst", "--date_column=month", "--test_size=36", "--epochs=1", "--quiet", "--recipe=transforms",
                "--statistical=false")


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- loading --------------------------------------------------------------------------------------

def test_gaps_are_interpolated_with_a_warning_that_counts_them(tmp_path):
    path = write(tmp_path, "day,v\n1,1.0\n2,\n3,\n4,4.0\n5,NA\n6,8\n")
    with pytest.warns(series.MissingValuesWarning, match="3 missing values"):
        s = series.load_csv(path, "v", date_column="day")
    np.testing.assert_allclose(s.values_T, [1, 2, 3, 4, 6, 8])
    assert s.num_missing == 3 and s.missing_lines == [3, 4, 6]
    assert s.dates_T == ["1", "2", "3", "4", "5", "6"]


def test_gaps_at_the_ends_take_the_nearest_value(tmp_path):
    path = write(tmp_path, "v\n\n5\n6\n\n")  # blank lines are no rows (and no missing values)
    assert series.load_csv(path, "v").values_T.tolist() == [5, 6]
    path = write(tmp_path, "t,v\n1,\n2,5\n3,7\n4,\n", "ends.csv")
    with pytest.warns(series.MissingValuesWarning, match="2 missing values"):
        assert series.load_csv(path, "v").values_T.tolist() == [5, 5, 7, 7]


def test_missing_error_refuses_gaps(tmp_path):
    path = write(tmp_path, "t,v\n1,1\n2,\n3,3\n")
    with pytest.raises(DataError, match=r"1 missing value in column v \(lines 3\)"):
        series.load_csv(path, "v", missing="error")
    with pytest.raises(ConfigError):
        series.load_csv(path, "v", missing="drop")


def test_a_non_numeric_value_names_its_line(tmp_path):
    path = write(tmp_path, "t,v\n1,1\n2,2\n3,abc\n")
    with pytest.raises(DataError, match=r"line 4: v is 'abc', not a number"):
        series.load_csv(path, "v")


def test_an_unknown_column_lists_the_available_ones(tmp_path):
    path = write(tmp_path, "month,sst\n1,1\n")
    with pytest.raises(DataError, match=r"no column 'temp' .*available: month, sst"):
        series.load_csv(path, "temp")
    with pytest.raises(DataError, match="no column 'day'"):
        series.load_csv(path, "sst", date_column="day")


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        series.load_csv(tmp_path / "absent.csv", "v")


# -- transforms -----------------------------------------------------------------------------------

def test_every_transform_chain_inverts_exactly():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    x_T = 50 + 0.3 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, 120)
    train_T, rest_T = x_T[:100], x_T[100:]
    for spec in ("standard", "minmax", "log", "diff,standard", "sdiff,standard", "deseason,standard",
                 "log,diff,sdiff,standard", "log,deseason,diff,standard"):
        chain = series.parse_transform(spec, season=12).fit(train_T)
        z_T = chain.forward(x_T)
        assert len(z_T) == len(x_T) - chain.drops
        # The transformed values of the held-out part, undone from the history before them.
        back_H = chain.inverse(z_T[100 - chain.drops:], train_T)
        np.testing.assert_allclose(back_H, rest_T, rtol=1e-12, err_msg=spec)


def test_transforms_are_fitted_on_the_training_part_only():
    train_T = np.array([1.0, 2.0, 3.0, 4.0])
    chain = series.parse_transform("standard").fit(train_T)
    std = chain.transforms[0]
    assert std.mean == 2.5 and std.std == pytest.approx(np.std(train_T))
    # Values far beyond the training range map linearly (so a model's output can extrapolate).
    assert chain.forward(np.array([14.0]))[0] == pytest.approx((14 - 2.5) / np.std(train_T))
    assert chain.inverse(np.array([10.0]), train_T)[0] == pytest.approx(2.5 + 10 * np.std(train_T))
    mm = series.parse_transform("minmax").fit(train_T)
    assert mm.forward(np.array([7.0]))[0] == pytest.approx(2.0)


def test_deseason_removes_the_training_profile_and_continues_its_phase():
    train_T = np.array([1.0, 10.0, 3.0, 12.0])  # phase means 2 and 11
    chain = series.parse_transform("deseason", season=2).fit(train_T)
    assert chain.forward(train_T).tolist() == [-1, -1, 1, 1]
    # Three steps after a history of 5 values: phases 1, 0, 1.
    assert chain.inverse(np.zeros(3), np.zeros(5)).tolist() == [11, 2, 11]


def test_deseason_detrend_reads_the_season_of_a_trend_and_recent_follows_a_changing_profile():
    season, t = 4, np.arange(40.0)
    profile = np.array([1.0, -2.0, 0.5, 0.5])
    x_T = 0.3 * t + profile[t.astype(int) % season]
    plain = series.Deseason(season).fit(x_T)
    # The plain phase means climb by the slope from phase to phase: a saw-tooth stays behind.
    assert np.ptp(np.diff(plain.forward(x_T))) > 1.0
    classical = series.Deseason(season, detrend=True).fit(x_T)
    np.testing.assert_allclose(classical.means - classical.means.mean(), profile - profile.mean(), atol=1e-9)
    np.testing.assert_allclose(np.diff(classical.forward(x_T)), 0.3, atol=1e-9)  # the trend alone
    assert classical.means.mean() == pytest.approx(x_T.mean())  # centred as the plain one
    # A profile that changes: 'recent' fits the last seasons only.
    new = np.array([3.0, -1.0, -1.0, -1.0])
    y_T = np.concatenate([np.tile(profile, 10), np.tile(new, 6)])
    recent = series.Deseason(season, detrend=True, recent=4).fit(y_T)
    np.testing.assert_allclose(recent.means - recent.means.mean(), new - new.mean(), atol=1e-9)
    whole = series.Deseason(season, detrend=True).fit(y_T)
    assert np.abs((whole.means - whole.means.mean()) - (new - new.mean())).max() > 1.0
    with pytest.raises(ConfigError, match="recent"):
        series.Deseason(season, recent=-1)


def test_transform_errors():
    with pytest.raises(ConfigError, match="unknown transform"):
        series.parse_transform("boxcox")
    for spec in ("sdiff", "deseason"):
        with pytest.raises(ConfigError, match="needs a season"):
            series.parse_transform(spec, season=1)
    with pytest.raises(DataError, match="positive"):
        series.parse_transform("log").fit(np.array([1.0, 0.0, 2.0]))


def test_transform_candidates_difference_a_trend_and_keep_a_stationary_level():
    rng = np.random.default_rng(1)
    t = np.arange(240)
    season = 10 * np.sin(2 * np.pi * t / 12)
    trending = series.transform_candidates(100 + 2 * t + season + rng.normal(0, 1, 240), 12, 24)
    assert trending[0].spec == "sdiff,standard"
    stationary = series.transform_candidates(100 + season + rng.normal(0, 3, 240), 12, 24)
    assert stationary[0].spec == "deseason,standard"
    assert {c.spec for c in stationary} == {"deseason,standard", "sdiff,standard"}
    no_season = series.transform_candidates(100 + 2 * t + rng.normal(0, 1, 240), 1, 24)
    assert [c.spec for c in no_season] == ["diff,standard", "standard"]


# -- season, baselines, metrics, multi-step -------------------------------------------------------

def test_season_detection():
    rng = np.random.default_rng(2)
    t = np.arange(300)
    for period in (4, 7, 12, 24):
        x = 3 * np.sin(2 * np.pi * t / period) + 0.05 * t + rng.normal(0, 1, 300)
        assert series.detect_season(x) == period
    assert series.detect_season(rng.normal(size=300)) == 1
    assert series.detect_season(np.cumsum(rng.normal(size=300))) == 1  # a random walk has no season
    assert series.detect_season(np.arange(5.0)) == 1


def test_baselines_by_hand():
    history = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert series.naive(history, 3).tolist() == [8, 8, 8]
    assert series.seasonal_naive(history, 5, 4).tolist() == [5, 6, 7, 8, 5]
    assert series.seasonal_naive(history, 2, 1).tolist() == [8, 8]
    with pytest.raises(DataError):
        series.seasonal_naive(history, 2, 10)


def test_metrics_by_hand():
    m = series.forecast_metrics(np.array([100.0, 200.0]), np.array([110.0, 180.0]))
    assert m["mae"] == pytest.approx(15.0)
    assert m["rmse"] == pytest.approx(np.sqrt((100 + 400) / 2))
    assert m["mape"] == pytest.approx(10.0)  # (10% + 10%) / 2
    assert m["smape"] == pytest.approx(100 * (20 / 210 + 40 / 380) / 2)
    z = series.forecast_metrics(np.array([0.0, 1.0]), np.array([0.0, 2.0]))
    assert np.isnan(z["mape"]) and z["smape"] == pytest.approx(100 * (0 + 2 / 3) / 2)


def test_mase_by_hand():
    history = np.array([10.0, 12.0, 11.0, 15.0, 14.0])  # naive errors 2, 1, 4, 1: mean 2
    m = series.forecast_metrics(np.array([16.0, 13.0]), np.array([15.0, 16.0]), history)
    assert m["mae"] == pytest.approx(2.0)
    assert m["mase"] == pytest.approx(2.0 / 2.0)
    # Seasonal: the in-sample error of the value one season (2) before: |11-10|, |15-12|, |14-11| -> 7/3.
    assert series.mase_scale(history, 2) == pytest.approx(7 / 3)
    assert series.forecast_metrics(np.array([16.0]), np.array([14.0]), history, season=2)["mase"] == pytest.approx(2 / (7 / 3))
    # A season as long as the history falls back to the naive scale; no history, no MASE.
    assert series.mase_scale(history, 5) == pytest.approx(2.0)
    assert "mase" not in series.forecast_metrics(np.array([1.0]), np.array([2.0]))
    assert np.isnan(series.forecast_metrics(np.array([1.0]), np.array([2.0]), np.ones(4))["mase"])  # constant history
    with pytest.raises(DataError):
        series.mase_scale(np.array([1.0]))


def test_interval_metrics_by_hand():
    m = series.interval_metrics(np.array([1.0, 5.0, 3.0, 9.0]), np.array([0.0, 0.0, 3.0, 0.0]), np.array([2.0, 4.0, 4.0, 10.0]))
    assert m["coverage"] == pytest.approx(3 / 4)  # 5 is outside [0, 4]; 3 on the edge counts
    assert m["width"] == pytest.approx((2 + 4 + 1 + 10) / 4)


def test_minmax_is_the_one_scaler_and_the_seed_data_uses_it():
    from lstm_jax.data import synthetic as data

    assert not hasattr(data, "MinMaxScaler")
    ds, scaler = data.sine_forecast(window=5, num=40)
    assert isinstance(scaler, series.MinMax)
    raw = data.sine_series(40)
    np.testing.assert_allclose(scaler.inverse(ds.train.x[:, 0, 0].astype(np.float64)), raw[: len(ds.train)], atol=1e-6)
    assert ds.train.x.min() >= 0.0 and ds.train.x.max() <= 1.0
    with pytest.raises(DataError):
        series.MinMax().fit(np.array([1.0, np.nan]))


def test_block_forecast_recursive_and_direct():
    # A "model" that continues a line: next values = last + 1, last + 2, ... (horizon k).
    def line(k):
        return lambda w_NxW: w_NxW[:, -1:] + np.arange(1, k + 1)[None, :]

    z = np.array([0.0, 1.0, 2.0])
    for k in (1, 2, 5):
        np.testing.assert_allclose(series.block_forecast(line(k), z, 5, window=2), [3, 4, 5, 6, 7])
    with pytest.raises(DataError, match="window of 4"):
        series.block_forecast(line(1), z, 2, window=4)


# -- the experiment front-end ---------------------------------------------------------------------

def _assert_one_error_line(returncode: int, stderr: str, needle: str) -> None:
    assert returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert needle in errors[0], errors[0]


def test_csv_errors_are_one_line_each(tmp_path):
    gaps = write(tmp_path, "t,v\n1,1\n2,\n3,3\n4,4\n", "gaps.csv")
    bad = write(tmp_path, "t,v\n1,1\n2,x\n", "bad.csv")
    short = write(tmp_path, "t,v\n" + "".join(f"{k},{k % 5}\n" for k in range(30)), "short.csv")
    cases = {
        "missing file": (["--dataset=csv:" + str(tmp_path / "none.csv"), "--column=v", "--test_size=2"], "no such file"),
        "unknown column": ([f"--dataset=csv:{gaps}", "--column=w", "--test_size=2"], "available: t, v"),
        "non-numeric": ([f"--dataset=csv:{bad}", "--column=v", "--test_size=1"], "line 3"),
        "refused gaps": ([f"--dataset=csv:{gaps}", "--column=v", "--test_size=1", "--missing=error"], "1 missing value"),
        "window too long": ([f"--dataset=csv:{short}", "--column=v", "--test_size=5", "--window=100"], "--window=100"),
    }
    for name, (args, needle) in cases.items():  # in process (tests/harness.py's run_front_end)
        proc = run_front_end("forecast", *args, f"--workdir={tmp_path / name.replace(' ', '_')}")
        _assert_one_error_line(proc.returncode, proc.stderr, needle)


def test_csv_forecast_end_to_end_on_a_real_series(tmp_path):
    """A tiny real run (``../shared/data/forecast/elnino_monthly.csv``), in process."""
    path = SHARED_FORECAST / "elnino_monthly.csv"
    if not path.is_file():
        pytest.skip(f"no shared forecasting data at {SHARED_FORECAST}")
    workdir = tmp_path / "run"
    proc = run_front_end("forecast", f"--dataset=csv:{path}", *ELNINO_FLAGS, f"--workdir={workdir}")
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 0, stderr
    summary = json.loads((workdir / "summary.json").read_text())
    for key in ("test_mape", "test_smape", "test_rmse", "test_mae"):
        assert np.isfinite(summary[key])
        for name in ("naive", "seasonal_naive"):
            assert np.isfinite(summary["baselines"][name][key])
    assert summary["season"] == 12 and summary["season_source"] == "detected"
    assert summary["strategy"] == "direct" and summary["horizon"] == 36 and len(summary["forecast"]) == 36
    assert summary["transform"] in summary["candidates"]
    assert summary["test_dates"] == ["2008-01", "2010-12"]
    # The baselines beside the model are the ones computed here, on the same split.
    values = series.load_csv(path, "sst").values_T
    snaive = series.forecast_metrics(values[-36:], series.seasonal_naive(values[:-36], 36, 12))
    assert summary["baselines"]["seasonal_naive"]["test_mape"] == pytest.approx(snaive["mape"])
    assert (workdir / "forecast.png").stat().st_size > 0 and (workdir / "learning_curves.png").exists()
    assert "seasonal_naive" in stdout
    # MASE beside the other metrics; the statistical baselines when statsforecast is installed.
    assert summary["baselines"]["naive"]["test_mase"] == pytest.approx(
        np.mean(np.abs(values[-36:] - values[-37])) / series.mase_scale(values[:-36], 12))
    assert "AutoARIMA" not in summary["baselines"] and "skipped" not in stdout  # --statistical=false
