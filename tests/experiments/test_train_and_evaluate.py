"""train_and_evaluate in-process: every config file, the recipes' automatic settings, candidates."""

from __future__ import annotations

import importlib
import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

# Every experiment module imports into one process (their flags are defined when a front-end starts).
from experiments import binary, classify, forecast, seeds, ucr  # noqa: F401
from experiments.configs import base
from experiments.train import train_and_evaluate
from lstm_jax.errors import ConfigError

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "base"))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_builds_and_says_how_to_run_it(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    config = module.get_config()
    assert config.experiment in ("binary", "forecast", "classify")
    assert f"python -m experiments.{config.experiment}" in module.__doc__
    assert "Expected" in module.__doc__
    # The typed model config accepts what the file says.
    from experiments.train import model_config

    model_config(config.model)


def small(config, **fields):
    config.model.hidden_size = (8,)
    for k, v in fields.items():
        config[k] = v
    return config


def test_stacked_config_in_process(tmp_path):
    from experiments.configs import stacked

    summary = train_and_evaluate(small(stacked.get_config(), epochs=1), str(tmp_path / "wd"), log=lambda _: None)
    assert summary["config"]["model"]["num_layers"] == 2 and summary["config"]["model"]["dropout"] == 0.2
    assert summary["epochs_trained"] == 1 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert np.sum(summary["test_confusion_matrix"]) == 1000
    for f in ("summary.json", "config.json", "metrics.jsonl", "learning_curves.png", "confusion_matrix.png"):
        assert os.path.isfile(tmp_path / "wd" / f), f


def test_recipe_budget_sets_epochs_and_eval_batch(tmp_path):
    """The UCR recipe (epochs 0) on an npz dataset: epochs from the budget, validation in one batch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12, 1)).astype(np.float32)
    y = (x[:, :6, 0].sum(1) > 0).astype(np.int64)
    path = tmp_path / "d.npz"
    np.savez(path, X=x, y=y)
    from experiments.configs import ucr as ucr_config

    config = ucr_config.get_config()
    config.dataset = f"npz:{path}"
    config.budget.work = 40 * 12 * 6.0  # about 9 passes over the 25 training rows (clipped to [5, 300])
    config.data.min_epoch_rows = 64
    summary = train_and_evaluate(config, str(tmp_path / "wd"), log=lambda _: None)
    # 25 training rows (40 - 8 test - 7 validation), repeated 3 times to reach 64 rows an epoch.
    rows = summary["dataset"]["train_repeats_per_epoch"]
    assert rows == 3
    passes = int(config.budget.work / (25 * 12))
    assert summary["epochs_trained"] == max(1, round(passes * 25 / 75))
    assert summary["config"]["epochs"] == 0  # the config as given; the loop's epochs are resolved


def test_epochs_zero_without_a_budget_is_a_config_error(tmp_path):
    config = base.binary(epochs=0)
    with pytest.raises(ConfigError, match="budget"):
        train_and_evaluate(config, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd")


def write_series_csv(path, n=160, season=12):
    """Writes a generated series (linear trend, sine season, Gaussian noise) as columns step,value."""
    t = np.arange(n)
    values = 10 + 0.05 * t + 2 * np.sin(2 * np.pi * t / season) + np.random.default_rng(0).normal(0, 0.2, n)
    np.savetxt(path, np.column_stack([t, values]), fmt=("%d", "%.4f"), delimiter=",", header="step,value", comments="")
    return values


def test_csv_forecast_trains_each_candidate_and_keeps_the_one_chosen_on_validation(tmp_path):
    path = tmp_path / "s.csv"
    values = write_series_csv(path)
    from experiments.configs import csv_forecast

    config = csv_forecast.get_config()
    config.dataset = f"csv:{path}"
    config.data.column, config.data.test_size = "value", 12
    config.data.recipe = "transforms"  # the ensemble recipe: tests/test_forecast_recipe.py
    config.epochs, config.patience = 2, 0
    config.model.hidden_size = (8,)
    wd = tmp_path / "wd"
    summary = train_and_evaluate(config, str(wd), log=lambda _: None)
    assert len(summary["candidates"]) == 2
    key = summary["chosen_by"]
    assert key in ("val_multistep_mape", "val_multistep_mae")
    chosen = min(summary["candidates"], key=lambda n: summary["candidates"][n][key])
    assert summary["chosen"] == chosen
    with open(wd / "candidates" / chosen.replace(",", "-") / "summary.json") as f:
        own = json.load(f)
    assert own["test_mape"] == summary["test_mape"] and own["forecast"] == summary["forecast"]
    # The test metrics are those of the forecast against the last 12 values.
    pred, actual = np.array(summary["forecast"]), values[-12:]
    assert summary["test_mae"] == pytest.approx(float(np.mean(np.abs(pred - np.round(actual, 4)))), rel=1e-5)
    assert {"naive", "seasonal_naive"} <= set(summary["baselines"])
    from lstm_jax.forecast import statistical as baselines

    if baselines.available():  # statsforecast's models beside the LSTM, with MASE like every metric
        assert {"AutoETS", "AutoTheta", "AutoARIMA"} <= set(summary["baselines"])
        assert np.isfinite(summary["baselines"]["AutoARIMA"]["test_mase"]) and np.isfinite(summary["test_mase"])
    for f in ("summary.json", "config.json", "forecast.png", "learning_curves.png"):
        assert os.path.isfile(wd / f), f
    # The parent run is a run: a second start in the same place is refused.
    from lstm_jax.errors import CheckpointError

    with pytest.raises(CheckpointError, match="already holds a run"):
        train_and_evaluate(config, str(wd), log=lambda _: None)


def test_a_trained_job_model_predicts_what_the_summary_reports(tmp_path):
    """The model a Job hands the loop holds the best weights afterwards (the README's promise)."""
    config = small(base.binary(), epochs=2)
    job = binary.build(config)
    from lstm_jax.train.loop import fit

    summary = fit(job.model, job.task, job.data, job.train, str(tmp_path / "wd"), log=lambda _: None)
    logits = np.asarray(job.model(jnp.asarray(job.data.test.x)))
    assert float(np.mean((logits > 0) == (job.data.test.y > 0.5))) == pytest.approx(summary["test_accuracy"], abs=1e-6)
