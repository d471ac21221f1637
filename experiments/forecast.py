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

With ``--dataset=csv:PATH`` the last ``--test_size`` values are the test, forecast multi-step from
the values before them, and scored (MAPE, sMAPE, RMSE, MAE in original units) beside the naive and
seasonal-naive forecasts of the same span; configs/csv_forecast.py describes the recipe. Each
transform chain it tries is a whole run in ``<workdir>/candidates/<chain>``; the run's summary is
the one chosen on the validation span.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from experiments import common
from experiments.train import Job, model_config, train_config
from lstm_jax import plots
from lstm_jax.data import dataset as data_lib
from lstm_jax.data import panel as panel_lib
from lstm_jax.data import series as series_lib
from lstm_jax.data import synthetic
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.forecast import recipe
from lstm_jax.forecast.recipe import Problem, RecipeConfig, reference_forecasts
from lstm_jax.nn.models import Forecaster
from lstm_jax.train.loop import Trainer
from lstm_jax.train.steps import rng_streams
from lstm_jax.train.tasks import RegressionTask
from lstm_jax.train.workdir import Workdir, to_jsonable

FLAGS = flags.FLAGS
SHORTCUTS = (*common.TRAINING, *common.MODEL, "dataset", "window", "val_fraction", "column", "date_column",
             "test_size", "season", "missing", "transform", "strategy", "horizon", "val_size", "recipe", "id_column",
             "time_column", "covariates", "quantiles", "statistical")

MIN_TRAIN_WINDOWS = 32  # an automatic horizon is shortened until training keeps this many windows
MIN_STEPS_PER_EPOCH = 20  # short series repeat their windows within an epoch, so that patience means enough steps


def default_config(dataset: str | None) -> str:
    if dataset and dataset.startswith("tsf:"):
        return "tsf_forecast"
    return "csv_forecast" if dataset and dataset.startswith("csv:") else "sine"


# -- the ensemble recipe (experiments/forecast_recipe.py): csv, long csv and tsf ---------------------

def runs_itself(config: ml_collections.ConfigDict) -> bool:
    """tsf panels, long-format csv files and csv runs with recipe=ensemble train an ensemble themselves."""
    d = config.data
    if config.dataset.startswith("tsf:"):
        return True
    if config.dataset.startswith("csv:"):
        if d.recipe not in ("ensemble", "transforms"):
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


def load_problem(config: ml_collections.ConfigDict):
    """The named series to forecast, their test and validation sizes, season and covariates."""

    d = config.data
    covs = _names(d.covariates)
    if d.test_size < 0 or d.season < 0 or d.val_size < 0:
        raise ConfigError("test_size, season and val_size must be >= 0")
    if config.dataset.startswith("tsf:"):
        if covs:
            raise ConfigError("a .tsf file has no covariate columns")
        path = config.dataset[len("tsf:"):]
        pan = panel_lib.read_tsf(path)
        test_size = d.test_size or pan.horizon
        if not test_size:
            raise ConfigError(f"{path} has no @horizon: give --test_size=N")
        season = d.season or pan.season or 1
        source = {"name": "tsf", "path": os.path.abspath(path), "frequency": pan.frequency, "horizon": pan.horizon}
        names, values, cov = [s.name for s in pan.series], [s.values_T for s in pan.series], None
    else:
        path = config.dataset[len("csv:"):]
        if not d.column:
            raise ConfigError("--dataset=csv:PATH needs --column=NAME")
        if d.test_size < 1:
            raise ConfigError("--dataset=csv:PATH needs --test_size=N >= 1 (the last N values of each series are the test)")
        test_size = d.test_size
        if d.id_column or d.time_column or covs:
            pan = panel_lib.read_long_csv(path, id_column=d.id_column or None, time_column=d.time_column or None,
                                          value_column=d.column, covariates=covs)
            names, values = [s.name for s in pan.series], [s.values_T for s in pan.series]
            cov = [s.covariates_TxC for s in pan.series] if covs else None
            if not d.id_column:
                names = [d.column]
        else:
            loaded = _Series.load(config).loaded
            names, values, cov = [d.column], [loaded.values_T], None
        longest = max(values, key=len)
        if len(longest) - test_size < 8:
            raise DataError(f"{path}: the longest series has {len(longest)} values, too few to hold out {test_size} "
                            f"for the test and still train on at least 8")
        season = d.season or series_lib.detect_season(longest[:-test_size])
        source = {"name": "csv", "path": os.path.abspath(path), "column": d.column, "id_column": d.id_column or None}
    # One series: a quarter of its training part at most; a panel: the test span (each series' last values).
    n_train = min(len(v) for v in values) - test_size
    val_size = d.val_size or (max(1, min(test_size, n_train // 4)) if len(values) == 1 else test_size)
    source.update({"num_series": len(values), "test_size": test_size, "val_size": val_size})
    return Problem(names, values, test_size, season, val_size, cov, covs, source)


def recipe_config(config: ml_collections.ConfigDict):

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
    """The ensemble recipe end to end (see experiments/forecast_recipe.py); returns the summary."""

    if resume:
        raise ConfigError("--resume is not supported by the ensemble recipe: start a fresh workdir")
    problem = load_problem(config)
    files = Workdir(workdir, resume=False)  # refuses a workdir that already holds a run
    files.write_config(to_jsonable(config))
    summary = recipe.run(problem, recipe_config(config), files.path, statistical=config.data.statistical,
                                  log=lambda line: print(line, flush=True), train_log=log, source=source)
    return summary


def build(config: ml_collections.ConfigDict) -> Job:
    if config.dataset == "sine":
        return _build_sine(config)
    if config.dataset.startswith("csv:"):
        return _build_csv(config, _Series.load(config))
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


# -- real series from a CSV file ------------------------------------------------------------------

@dataclasses.dataclass
class _Series:
    """The series of a csv run, split: train (fit + validation span) and test."""

    loaded: series_lib.LoadedSeries
    train_T: np.ndarray
    test_T: np.ndarray
    season: int
    season_source: str
    val_size: int

    @classmethod
    def load(cls, config) -> _Series:
        d = config.data
        path = config.dataset[len("csv:"):]
        if not d.column:
            raise ConfigError("--dataset=csv:PATH needs --column=NAME")
        if d.test_size < 1:
            raise ConfigError("--dataset=csv:PATH needs --test_size=N >= 1 (the last N values are the test)")
        if d.season < 0:
            raise ConfigError(f"--season must be >= 0, got {d.season}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", series_lib.MissingValuesWarning)
            loaded = series_lib.load_csv(path, d.column, d.date_column or None, d.missing)
        for w in caught:  # one line, not Python's two-line warning with a source excerpt
            print(f"warning: {w.message}", file=sys.stderr, flush=True)
        values_T = loaded.values_T
        if len(values_T) - d.test_size < 8:
            raise DataError(f"{path} has {len(values_T)} values: too few to hold out {d.test_size} for the test "
                            f"and still train on at least 8")
        train_T, test_T = values_T[: -d.test_size], values_T[-d.test_size:]
        # Everything until the scoring sees train_T only.
        season = d.season or series_lib.detect_season(train_T)
        val_size = d.val_size or max(1, min(d.test_size, len(train_T) // 4))
        return cls(loaded, train_T, test_T, season, "given" if d.season else "detected", val_size)


def candidates(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict] | None:
    """transform='auto' on a csv series: one run per transform chain the recipe proposes."""
    if not config.dataset.startswith("csv:") or config.data.transform != "auto":
        return None
    s = _Series.load(config)
    specs = [c.spec for c in series_lib.transform_candidates(s.train_T, s.season, s.val_size)]
    print(f"{s.loaded.column}: {len(s.loaded.values_T)} values, the last {len(s.test_T)} are the test; season "
          f"{s.season} ({s.season_source}); transforms tried: {', '.join(specs)}", flush=True)
    out = {}
    for spec in specs:
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.transform = spec
        out[series_lib.parse_transform(spec, s.season).name] = c
    return out


def choose(summaries: dict[str, dict]) -> tuple[str, str]:
    """Kept by multi-step validation MAPE, the headline metric; by MAE where MAPE is undefined (a zero)."""
    key = "val_multistep_mape" if all(s["val_multistep_mape"] is not None for s in summaries.values()) else "val_multistep_mae"
    return min(summaries, key=lambda n: summaries[n][key]), key


def _auto_window(season: int, n_fit: int) -> int:
    """Two seasons (at least 16 steps; 24 without a season), but at most a third of the fitting part."""
    want = max(2 * season, 16) if season > 1 else 24
    return max(2, min(want, n_fit // 3))


def references(train_T: np.ndarray, steps: int, season: int, statistical: bool, log=print) -> dict[str, np.ndarray]:
    """Naive, seasonal naive and (with statsforecast) AutoETS, AutoTheta, AutoARIMA on ``train_T``."""

    return {k: v[0] for k, v in reference_forecasts([train_T], steps, season, statistical=statistical, log=log).items()}


def _build_csv(config, s: _Series) -> Job:
    d = config.data
    if d.transform == "auto":
        raise ConfigError("transform=auto tries several chains: run it through train_and_evaluate")
    chain = series_lib.parse_transform(d.transform, s.season).fit(s.train_T)
    z_T = chain.forward(s.train_T)
    val_size, test_size = s.val_size, len(s.test_T)
    n_fit = len(z_T) - val_size  # transformed values the training windows may draw targets from
    if n_fit < 2:
        raise DataError(f"after the transform {chain.name} and {val_size} validation values, {max(n_fit, 0)} "
                        f"training values are left: use a smaller --val_size or --test_size")
    window = d.window or _auto_window(s.season, n_fit)
    if d.strategy not in ("direct", "recursive"):
        raise ConfigError(f"strategy must be direct or recursive, got {d.strategy!r}")
    if d.strategy == "recursive":
        horizon = 1
    else:
        horizon = d.horizon or max(1, min(test_size, n_fit - window - MIN_TRAIN_WINDOWS + 1))
    if window + horizon > n_fit:
        raise DataError(f"--window={window} plus a horizon of {horizon} is longer than the training part: it "
                        f"leaves {n_fit} values to train on (after the transform {chain.name} and {val_size} "
                        f"values for validation)")
    # Windows whose targets end in the last val_size values validate (early stopping, the choice of
    # checkpoint); the others train. The test span is in neither.
    x_NxWx1, y_NxH = data_lib.windows(z_T, window, horizon)
    is_val_N = np.arange(len(x_NxWx1)) + window + horizon - 1 >= len(z_T) - val_size
    n_train = int((~is_val_N).sum())
    repeats = max(1, -(-MIN_STEPS_PER_EPOCH * config.batch_size // n_train))
    info = {"name": "csv", "path": os.path.abspath(config.dataset[len("csv:"):]), "column": s.loaded.column,
            "length": len(s.loaded.values_T), "missing_filled": s.loaded.num_missing, "test_size": test_size,
            "val_size": val_size, "transform": chain.name, "train_windows": n_train, "train_repeats": repeats}
    data = data_lib.Dataset(
        data_lib.Split(np.tile(x_NxWx1[~is_val_N], (repeats, 1, 1)), np.tile(y_NxH[~is_val_N], (repeats, 1))),
        data_lib.Split(x_NxWx1[is_val_N], y_NxH[is_val_N]), info=info)
    model = Forecaster(1, model_config(config.model), horizon=horizon, rngs=nnx.Rngs(rng_streams(config.seed)["params"]))
    print(f"[{chain.name}] {d.strategy}, window {window}, horizon {horizon}", flush=True)

    def forecast(trainer: Trainer, history_T: np.ndarray, steps: int) -> np.ndarray:
        """The ``steps`` values after ``history_T``, both in original units."""
        def predict(windows_NxW):
            x = windows_NxW[..., None].astype(np.float32)
            return trainer.predict(data_lib.Split(x, np.zeros((len(x), horizon), np.float32)))

        z_H = series_lib.block_forecast(predict, chain.forward(history_T), steps, window)
        return chain.inverse(z_H, history_T)

    fit_T, val_T = s.train_T[:-val_size], s.train_T[-val_size:]

    def evaluate(trainer: Trainer) -> dict:
        # The validation span forecast multi-step from the values before it, in original units.
        val = series_lib.forecast_metrics(val_T, forecast(trainer, fit_T, val_size))
        val_base = {n: series_lib.forecast_metrics(val_T, p)
                    for n, p in series_lib.baseline_forecasts(fit_T, val_size, s.season).items()}
        # Scoring: the test span is read here only, after training and the choice of checkpoint.
        pred_T = forecast(trainer, s.train_T, test_size)
        base = references(s.train_T, test_size, s.season, config.data.statistical)
        metrics = lambda p: series_lib.forecast_metrics(s.test_T, p, s.train_T, s.season)  # noqa: E731
        out = {f"test_{k}": v for k, v in metrics(pred_T).items()}
        out["baselines"] = {n: {**{f"test_{k}": v for k, v in metrics(p).items()},
                                **{f"val_{k}": v for k, v in val_base.get(n, {}).items()}} for n, p in base.items()}
        out.update({f"val_multistep_{k}": (v if np.isfinite(v) else None) for k, v in val.items()})
        out.update({"season": s.season, "season_source": s.season_source, "transform": chain.name,
                    "strategy": d.strategy, "window": window, "horizon": horizon, "val_size": val_size,
                    "forecast": pred_T.tolist()})
        if s.loaded.dates_T:
            out["test_dates"] = [s.loaded.dates_T[len(s.train_T)], s.loaded.dates_T[-1]]
        print(f"[{chain.name}] validation MAE {val['mae']:.4g}, MAPE {val['mape']:.3f}%", flush=True)
        return out

    def finish(trainer: Trainer, summary: dict) -> None:

        values_T = s.loaded.values_T
        shown = min(len(values_T), max(4 * test_size, 3 * s.season, 100))  # enough past to judge the forecast
        base = references(s.train_T, test_size, s.season, config.data.statistical, log=lambda _: None)
        plots.forecast(values_T[-shown:], shown - test_size, np.array(summary["forecast"]),
                       os.path.join(trainer.workdir, "forecast.png"), baselines=base,
                       title=f"{s.loaded.column}: the last {shown} values; test forecast by {chain.name}")

    return Job(data, model, RegressionTask(), train_config(config), evaluate=evaluate, finish=finish)


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
