"""Forecasting a series with an LSTM.

    python -m experiments.forecast                                  # the seed program (sine)
    python -m experiments.forecast --dataset=csv:PATH --column=NAME --test_size=N   # a real series

Each run is a config file (experiments/configs/: sine.py by default, csv_forecast.py for a csv
dataset) with overrides; the short flags (--window, --column, ...; --helpfull lists them) are
shortcuts onto its fields.

The seed program: np.sin(np.linspace(0, 100, 1000)), MinMax-scaled to (0, 1), windows of 50
predicting the next value, LSTM(50) -> Dense(1), Adam + MSE, 20 epochs of batch 32, the last 20% of
windows held out (unshuffled) for validation. Prints val_mse and the first 10 predictions in
original units.

With ``--dataset=csv:PATH`` (or ``tsf:PATH``) the last ``--test_size`` values are the test, forecast
multi-step from the values before them, and scored (MASE, MAPE, sMAPE, RMSE, MAE in original units)
beside the reference forecasts of the same span (naive, seasonal naive and statsforecast's models,
``lstm_jax.forecast.references``). Two recipes, both library code in ``lstm_jax.forecast``:
``--recipe=ensemble`` (the default, and every panel: ``recipe``, configs/csv_forecast.py) and
``--recipe=transforms`` (one series, one LSTM per transform chain: ``single``; each chain is a whole
run in ``<workdir>/candidates/<chain>``, and the run's summary is the one chosen on the validation
span). Their automatic window, horizon and epoch settings are ``lstm_jax.forecast.rules``.

This module is the front-end: flags -> config -> ``train_and_evaluate`` (through ``EXPERIMENT``,
its hooks), then the printed report.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from experiments import common
from experiments.train import Experiment, Job, model_config, train_config
from lstm_jax.data import dataset as data_lib
from lstm_jax.data import synthetic
from lstm_jax.errors import ConfigError
from lstm_jax.forecast import recipe, single
from lstm_jax.forecast.problem import SeriesSplit, load_problem
from lstm_jax.forecast.recipe import RecipeConfig
from lstm_jax.nn.models import Forecaster
from lstm_jax.train.loop import Trainer
from lstm_jax.train.steps import rng_streams
from lstm_jax.train.tasks import RegressionTask
from lstm_jax.train.workdir import Workdir, to_jsonable

FLAGS = flags.FLAGS
SHORTCUTS = (*common.TRAINING, *common.MODEL, "dataset", "window", "val_fraction", "column", "date_column",
             "test_size", "season", "missing", "transform", "strategy", "horizon", "val_size", "recipe", "id_column",
             "time_column", "covariates", "quantiles", "statistical")
RECIPES = ("ensemble", "transforms")  # data.recipe for a csv dataset (lstm_jax.forecast.recipe, .single)


def default_config(dataset: str | None) -> str:
    if dataset and dataset.startswith("tsf:"):
        return "tsf_forecast"
    return "csv_forecast" if dataset and dataset.startswith("csv:") else "sine"


# -- the ensemble recipe (lstm_jax.forecast.recipe): csv, long csv and tsf ---------------------------

def runs_itself(config: ml_collections.ConfigDict) -> bool:
    """tsf panels, long-format csv files and csv runs with recipe=ensemble train an ensemble themselves."""
    d = config.data
    if config.dataset.startswith("tsf:"):
        return True
    if config.dataset.startswith("csv:"):
        if d.recipe not in RECIPES:
            raise ConfigError(f"recipe must be ensemble or transforms, got {d.recipe!r}")
        if d.recipe == "transforms" and (d.id_column or d.covariates or d.quantiles):
            raise ConfigError("id_column, covariates and quantiles need recipe=ensemble")
        return d.recipe == "ensemble"
    return False


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def problem_of(config: ml_collections.ConfigDict) -> recipe.Problem:
    """The config's series to forecast (``lstm_jax.forecast.problem.load_problem``)."""
    d = config.data
    return load_problem(config.dataset, column=d.column, test_size=d.test_size, season=d.season, val_size=d.val_size,
                        id_column=d.id_column, time_column=d.time_column, covariates=_names(d.covariates),
                        date_column=d.date_column, missing=d.missing)


def recipe_config(config: ml_collections.ConfigDict) -> RecipeConfig:
    """The config's fields -> the ensemble recipe's settings."""
    e, m = config.ensemble, config.model
    sizes = tuple(m.hidden_size)
    return RecipeConfig(
        hidden_size=sizes[0], input_multiples=tuple(float(v) for v in e.input_multiples), seeds=e.seeds, seed=config.seed,
        budget=e.budget, epochs=config.epochs, patience=config.patience, learning_rate=config.learning_rate,
        batch_size=config.batch_size, refit=e.refit, quantiles=_floats(config.data.quantiles, "quantiles") or (0.5,),
        level=e.level, log=e.log, deseason=e.deseason, season_profile=e.season_profile,
        recent_seasons=e.recent_seasons, window=config.data.window,
        model_kwargs={k: v for k, v in dataclasses.asdict(model_config(m)).items()
                      if k in ("cell", "num_layers", "dropout", "input_dropout", "recurrent_dropout", "dropout_mode",
                               "activation", "unroll") and not (k == "num_layers" and len(sizes) > 1)})


def run(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False, log=print,
        source: dict | None = None) -> dict:
    """The ensemble recipe end to end (``lstm_jax.forecast.recipe.run``); returns the summary."""

    if resume:
        raise ConfigError("--resume is not supported by the ensemble recipe: start a fresh workdir")
    problem = problem_of(config)
    files = Workdir(workdir, resume=False)  # refuses a workdir that already holds a run
    files.write_config(to_jsonable(config))
    return recipe.run(problem, recipe_config(config), files.path, statistical=config.data.statistical,
                      log=lambda line: print(line, flush=True), train_log=log, source=source)


def build(config: ml_collections.ConfigDict) -> Job:
    if config.dataset == "sine":
        return _build_sine(config)
    if config.dataset.startswith("csv:"):
        return _build_csv(config)
    raise ConfigError(f"unknown dataset {config.dataset!r}; use 'sine' or 'csv:PATH'")


# -- the seed program -----------------------------------------------------------------------------

def _build_sine(config) -> Job:
    data, scaler = synthetic.sine_forecast(window=config.data.window or 50, val_fraction=config.data.val_fraction)
    model = Forecaster(data.num_features, model_config(config.model), rngs=nnx.Rngs(rng_streams(config.seed)["params"]))

    def evaluate(trainer: Trainer) -> dict:
        everything = data_lib.Split(np.concatenate([data.train.x, data.val.x]), np.concatenate([data.train.y, data.val.y]))
        pred = scaler.inverse(trainer.predict(everything)[:10, 0])
        return {"first_predictions": pred.tolist(), "first_actuals": scaler.inverse(everything.y[:10, 0]).tolist()}

    return Job(data, model, RegressionTask(), train_config(config), evaluate=evaluate)


# -- one series from a CSV file, one LSTM per transform chain (lstm_jax.forecast.single) ----------

def split_of(config: ml_collections.ConfigDict) -> SeriesSplit:
    """The config's csv series, split into training and test parts."""
    d = config.data
    return SeriesSplit.load(config.dataset[len("csv:"):], d.column, test_size=d.test_size, season=d.season,
                            val_size=d.val_size, date_column=d.date_column or None, missing=d.missing)


def candidates(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict] | None:
    """transform='auto' on a csv series: one run per transform chain the recipe proposes."""
    if not config.dataset.startswith("csv:") or config.data.transform != "auto":
        return None
    s = split_of(config)
    specs = single.transform_specs(s)
    print(f"{s.loaded.column}: {len(s.loaded.values_T)} values, the last {len(s.test_T)} are the test; season "
          f"{s.season} ({s.season_source}); transforms tried: {', '.join(specs)}", flush=True)
    out = {}
    for spec in specs:
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.transform = spec
        out[single.transform_name(spec, s.season)] = c
    return out


def _build_csv(config) -> Job:
    d = config.data
    s = split_of(config)
    chain = single.TransformRun(s, d.transform, model_config=model_config(config.model), seed=config.seed,
                                batch_size=config.batch_size, window=d.window, strategy=d.strategy,
                                horizon=d.horizon, statistical=d.statistical)
    return Job(chain.data, chain.model, RegressionTask(), train_config(config), evaluate=chain.evaluate,
               finish=chain.finish)


EXPERIMENT = Experiment(build=build, candidates=candidates, choose=single.choose, runs_itself=runs_itself, run=run)


# -- the command line -----------------------------------------------------------------------------

def report(summary: dict) -> None:
    if summary["dataset"].get("name") == "sine":
        print(f"val_mse: {summary['val_mse']:.3e}  (best epoch {summary['best_epoch']}, {summary['wall_seconds']:.1f}s)")
        print("first 10 predictions (original units):")
        for k, (p, t) in enumerate(zip(summary["first_predictions"], summary["first_actuals"])):
            print(f"  {k:2d}  predicted {p:+.5f}  actual {t:+.5f}")
        return
    if "members" in summary:  # the ensemble recipe printed its table as it finished
        print(f"{len(summary['members'])} members; {summary['wall_seconds']:.1f}s in all "
              f"({summary['reference_seconds']:.1f}s for the references)")
        return
    how = f" (lower {summary['chosen_by'].removeprefix('val_multistep_').upper()} on the validation span)" \
        if "chosen_by" in summary else ""
    print(f"kept {summary['transform']}{how}; season {summary['season']}, {summary['strategy']} forecasting, "
          f"window {summary['window']}, horizon {summary['horizon']}; {summary['wall_seconds']:.1f}s of training")
    test_size = summary["dataset"]["test_size"]
    print(f"{'test (' + str(test_size) + ')':<16}{'MASE':>9}{'MAPE %':>10}{'sMAPE %':>10}{'RMSE':>12}{'MAE':>12}")
    rows = {"lstm_jax": {k[5:]: v for k, v in summary.items() if k.startswith("test_")},
            **{n: {k[5:]: v for k, v in b.items() if k.startswith("test_")} for n, b in summary["baselines"].items()}}
    num = lambda v, spec: format(float("nan") if v is None else v, spec)
    for name, m in rows.items():
        print(f"{name:<16}{num(m['mase'], '>9.3f')}{num(m['mape'], '>10.3f')}{num(m['smape'], '>10.3f')}{num(m['rmse'], '>12.4g')}"
              f"{num(m['mae'], '>12.4g')}")


def main(argv):
    common.train_from_flags("forecast", SHORTCUTS, default_config, report)


def define_flags() -> None:
    common.define_flags("forecast", "sine", SHORTCUTS)


if __name__ == "__main__":
    common.run(main, define=define_flags)
