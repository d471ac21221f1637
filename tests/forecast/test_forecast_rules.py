"""The forecasting recipes' automatic settings have one definition (lstm_jax.forecast.rules), and every
experiment module hands train_and_evaluate its hooks as one Experiment."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from experiments import binary, classify, forecast
from experiments.train import EXPERIMENTS, Experiment, experiment
from lstm_jax.data import series as series_lib
from lstm_jax.forecast import recipe, rules, single
from lstm_jax.forecast.problem import SeriesSplit
from lstm_jax.nn.models import ModelConfig


def test_the_window_rule_and_the_recipes_own_lengths_without_a_season():
    # With a season both recipes read two seasons (at least 16 steps), at most a third of the fitting part.
    for season, n_fit, want in ((12, 600, 24), (4, 600, 16), (52, 2000, 104), (52, 90, 30), (12, 4, 2)):
        assert rules.transforms_window(season, n_fit) == want
        assert rules.ensemble_window(season, 10, n_fit) == want
    # Without one: 24 steps for the transform chains, the horizon (at least 6) for the ensemble.
    assert rules.transforms_window(1, 600) == rules.TRANSFORMS_WINDOW_NO_SEASON == 24
    assert rules.ensemble_window(1, 6, 600) == 6 and rules.ensemble_window(1, 3, 600) == 6
    assert rules.ensemble_window(1, 10, 600) == 10
    assert rules.transforms_window(1, 30) == rules.ensemble_window(1, 20, 30) == 10
    assert rules.model_horizon(36, 500, 24) == 36 and rules.model_horizon(36, 80, 24) == 25
    assert rules.model_horizon(36, 40, 24) == 1
    assert rules.epoch_repeats(100, 32) == 7 and rules.epoch_repeats(10_000, 32) == 1
    assert rules.val_size(36, 600) == 36 and rules.val_size(36, 80) == 20 and rules.val_size(6, 40, 90) == 6
    # The ensemble's settings default to the same constants.
    assert recipe.RecipeConfig().min_train_windows == rules.MIN_TRAIN_WINDOWS
    assert recipe.RecipeConfig().min_steps_per_epoch == rules.MIN_STEPS_PER_EPOCH


def _split(n=120, test=12) -> SeriesSplit:
    values = 10 + np.sin(np.arange(n) / 3.0) + np.arange(n) * 0.05
    loaded = series_lib.LoadedSeries(values, "v", "x.csv")
    return SeriesSplit(loaded, values[:-test], values[-test:], 1, "given", test, "x.csv")


def test_both_recipes_take_their_window_from_the_one_rule(monkeypatch):
    calls = []

    def rule(season, n_fit, no_season):
        calls.append(no_season)
        return 5

    monkeypatch.setattr(rules, "base_window", rule)
    run = single.TransformRun(_split(), "standard", model_config=ModelConfig(hidden_size=4), seed=0, batch_size=8,
                              log=lambda _: None)
    assert run.window == 5 and calls == [rules.TRANSFORMS_WINDOW_NO_SEASON]
    train = [_split().train_T]
    g = recipe.GlobalRecipe(train, horizon=12, season=1, val_size=12, config=recipe.RecipeConfig(input_multiples=(1.0,)),
                            workdir="unused", log=lambda _: None)
    assert g.input_sizes == [5] and calls[-1] == 12


def test_every_experiment_exports_its_hooks():
    for name in EXPERIMENTS:
        assert isinstance(experiment(ml_collections.ConfigDict({"experiment": name})), Experiment)
    assert binary.EXPERIMENT.candidates is None and binary.EXPERIMENT.run is None
    assert classify.EXPERIMENT.choose is classify.choose
    assert forecast.EXPERIMENT.runs_itself is forecast.runs_itself and forecast.EXPERIMENT.choose is single.choose
    with pytest.raises(TypeError, match="together"):
        Experiment(build=binary.build, candidates=classify.candidates)
    with pytest.raises(TypeError, match="together"):
        Experiment(build=binary.build, run=forecast.run)

