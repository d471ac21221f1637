"""The forecasting recipe end to end, in process, on tiny synthetic panels (seconds, not minutes)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lstm_jax.errors import DataError
from lstm_jax.forecast import recipe as fr

TINY = {"hidden_size": 8, "input_multiples": (1.0,), "seeds": 1, "epochs": 2, "patience": 0, "min_steps_per_epoch": 2}


def _panel(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [np.exp(np.cumsum(rng.normal(0.05, 0.05, 20 + 3 * i))) * 10 ** i for i in range(n)]


def test_choose_level_prefers_the_naive_stand_in_for_a_trend_and_the_mean_for_noise():
    t = np.arange(30.0)
    assert fr.choose_level([t[:24]], [t[24:]])[0] == "last"
    noise = np.random.default_rng(0).normal(size=60)
    assert fr.choose_level([noise[:50]], [noise[50:]])[0] == "none"


def test_a_panel_run_writes_means_per_series_and_the_interval(tmp_path):
    values = _panel()
    problem = fr.Problem([f"s{i}" for i in range(5)], values, test_size=3, season=1, val_size=3)
    lines = []
    summary = fr.run(problem, fr.RecipeConfig(**TINY, quantiles=(0.1, 0.5, 0.9)), str(tmp_path), statistical=False,
                     log=lines.append)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["num_series"] == 5 and on_disk["level"] == "last"
    rows = list(csv.DictReader((tmp_path / "per_series.csv").open()))
    assert [r["series"] for r in rows] == [f"s{i}" for i in range(5)]
    # The summary's means are the means of the per-series rows.
    assert on_disk["test_mase"] == pytest.approx(np.mean([float(r["lstm_jax_mase"]) for r in rows]), rel=1e-5)
    assert on_disk["baselines"]["naive"]["test_mase"] == pytest.approx(
        np.mean([float(r["naive_mase"]) for r in rows]), rel=1e-5)
    # The naive forecast's MASE is the ratio of its test error to the in-sample naive error, by hand.
    v = values[0]
    naive_mase = np.mean(np.abs(v[-3:] - v[-4])) / np.mean(np.abs(np.diff(v[:-3])))
    assert float(rows[0]["naive_mase"]) == pytest.approx(naive_mase, rel=1e-5)
    assert 0.0 <= on_disk["test_coverage"] <= 1.0 and on_disk["test_width"] > 0
    assert on_disk["test_nominal_coverage"] == pytest.approx(0.8)
    assert (tmp_path / "forecast.png").stat().st_size > 0
    assert any(line.startswith("mean of 5") for line in lines)
    assert summary["members"][0]["input_size"] == 6


def test_the_seasonal_profile_is_chosen_on_validation_by_the_first_member(tmp_path):
    """season_profile='auto' fits the first member with each profile and keeps the one with the lower
    validation MASE; the other's member stays in its own folder. A fixed profile trains once."""
    t = np.arange(96.0)
    y = 10 + 0.2 * t + np.sin(2 * np.pi * t / 12) * (1 + t / 48) + 0.1 * np.random.default_rng(0).normal(size=96)
    problem = fr.Problem(["y"], [y], test_size=12, season=12, val_size=12)
    lines = []
    summary = fr.run(problem, fr.RecipeConfig(**TINY), str(tmp_path / "auto"), statistical=False, log=lines.append)
    scores = summary["season_profile_scores"]
    assert set(scores) == {"all", "recent"} and summary["season_profile"] == min(scores, key=scores.get)
    assert summary["val_multistep_mase"] == pytest.approx(scores[summary["season_profile"]], rel=1e-6)
    assert (tmp_path / "auto" / "profile-recent" / "members" / "L24-seed0").is_dir()
    assert any(line.startswith("seasonal profile chosen on validation") for line in lines)
    fixed = fr.run(problem, fr.RecipeConfig(**TINY, season_profile="recent"), str(tmp_path / "fixed"),
                   statistical=False, log=lambda _: None)
    assert fixed["season_profile"] == "recent" and fixed["season_profile_scores"] == {}
    assert fixed["val_multistep_mase"] == pytest.approx(scores["recent"], rel=1e-6)  # the same member
    from lstm_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="season_profile"):
        fr.run(problem, fr.RecipeConfig(**TINY, season_profile="latest"), str(tmp_path / "bad"), statistical=False)


def test_a_single_series_with_covariates(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 2))
    y = np.convolve(x[:, 0], [0, 0.8], mode="full")[:120] + 0.1 * rng.normal(size=120)  # y[t] ~ x[t-1]
    problem = fr.Problem(["y"], [y], test_size=8, season=1, val_size=8, covariates=[x], covariate_names=("a", "b"))
    summary = fr.run(problem, fr.RecipeConfig(**TINY), str(tmp_path), statistical=False, log=lambda _: None)
    assert summary["covariates"] == ["a", "b"] and len(summary["forecast"]) == 8
    assert np.isfinite(summary["test_mae"])
    assert not (tmp_path / "per_series.csv").exists()


def test_statistical_references_beside_the_lstm(tmp_path):
    pytest.importorskip("statsforecast")
    problem = fr.Problem(["a", "b"], _panel(2), test_size=3, season=1, val_size=3)
    summary = fr.run(problem, fr.RecipeConfig(**TINY), str(tmp_path), log=lambda _: None)
    assert {"naive", "AutoETS", "AutoTheta", "AutoARIMA"} <= set(summary["baselines"])
    assert all(np.isfinite(summary["baselines"][m]["test_mase"]) for m in ("AutoETS", "AutoTheta", "AutoARIMA"))


def test_too_short_a_series_is_one_data_error(tmp_path):
    problem = fr.Problem(["a"], [np.arange(1.0, 8.0)], test_size=3, season=1, val_size=3)
    with pytest.raises(DataError, match="too few"):
        fr.run(problem, fr.RecipeConfig(**TINY), str(tmp_path), statistical=False, log=lambda _: None)


# -- through experiments.forecast and train_and_evaluate ---------------------------------------------

def _small(config, **data):
    config.model.hidden_size = (8,)
    config.epochs, config.patience = 2, 0
    config.ensemble.seeds, config.ensemble.input_multiples = 1, (1.0,)
    config.data.statistical = False
    for k, v in data.items():
        config.data[k] = v
    return config


def test_tsf_dataset_through_train_and_evaluate(tmp_path):
    from experiments.configs import tsf_forecast
    from experiments.train import train_and_evaluate

    rows = "".join(f"S{i}:2000-01-01 00-00-00:" + ",".join(f"{v:.3f}" for v in s) + "\n" for i, s in enumerate(_panel(4)))
    path = tmp_path / "p.tsf"
    path.write_text("@attribute series_name string\n@attribute start_timestamp date\n@frequency yearly\n"
                    "@horizon 4\n@data\n" + rows)
    config = _small(tsf_forecast.get_config())
    config.dataset = f"tsf:{path}"
    summary = train_and_evaluate(config, str(tmp_path / "wd"), log=lambda _: None)
    assert summary["num_series"] == 4 and summary["test_size"] == 4 and summary["season"] == 1
    assert np.isfinite(summary["test_mase"]) and "naive" in summary["baselines"]
    for f in ("summary.json", "config.json", "per_series.csv", "forecast.png"):
        assert (tmp_path / "wd" / f).is_file(), f
    # --test_size overrides the header's horizon.
    config.data.test_size = 3
    assert train_and_evaluate(config, str(tmp_path / "wd3"), log=lambda _: None)["test_size"] == 3


def test_long_csv_with_an_id_column_is_one_global_model(tmp_path):
    from experiments.configs import csv_forecast
    from experiments.train import train_and_evaluate

    path = tmp_path / "long.csv"
    with open(path, "w") as f:
        f.write("id,t,v\n")
        for i, s in enumerate(_panel(3)):
            f.writelines(f"s{i},{t},{v:.4f}\n" for t, v in enumerate(s))
    config = _small(csv_forecast.get_config(), column="v", id_column="id", time_column="t", test_size=4,
                    quantiles="0.1,0.5,0.9")
    config.dataset = f"csv:{path}"
    summary = train_and_evaluate(config, str(tmp_path / "wd"), log=lambda _: None)
    assert summary["num_series"] == 3 and summary["quantiles"] == [0.1, 0.5, 0.9]
    assert 0.0 <= summary["test_coverage"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "wd" / "per_series.csv").open()))
    assert [r["series"] for r in rows] == ["s0", "s1", "s2"] and "lstm_jax_coverage" in rows[0]


def test_ensemble_config_errors(tmp_path):
    from experiments.configs import csv_forecast, tsf_forecast
    from experiments.train import train_and_evaluate
    from lstm_jax.errors import ConfigError

    path = tmp_path / "nohorizon.tsf"
    path.write_text("@attribute series_name string\n@data\nA:1,2,3,4,5,6,7,8,9,10,11,12\n")
    config = _small(tsf_forecast.get_config())
    config.dataset = f"tsf:{path}"
    with pytest.raises(ConfigError, match="no @horizon"):
        train_and_evaluate(config, str(tmp_path / "a"), log=lambda _: None)
    config = _small(csv_forecast.get_config(), column="v", test_size=2, covariates="w", recipe="transforms")
    config.dataset = f"csv:{path}"
    with pytest.raises(ConfigError, match="need recipe=ensemble"):
        train_and_evaluate(config, str(tmp_path / "b"), log=lambda _: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_references_say_in_one_line_that_statsforecast_is_missing(monkeypatch):
    from lstm_jax.forecast import statistical as baselines

    monkeypatch.setattr(baselines, "available", lambda: False)
    lines = []
    refs = fr.reference_forecasts([np.arange(1.0, 30.0)], 4, 12, log=lines.append)
    assert set(refs) == {"naive", "seasonal_naive"} and lines == [baselines.SKIPPED]
