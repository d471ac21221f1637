"""Forecasting a series with an LSTM.

    python -m experiments.forecast                                  # the seed program (sine)
    python -m experiments.forecast --dataset=csv:PATH --column=NAME --test_size=N   # a real series

The defaults are the seed program: np.sin(np.linspace(0, 100, 1000)), MinMax-scaled to (0, 1),
windows of 50 predicting the next value, LSTM(50) -> Dense(1), Adam + MSE, 20 epochs of batch 32,
the last 20% of windows held out (unshuffled) for validation.
Expected on 2 CPU cores: val_mse <= 3e-5 (MSE on the scaled validation windows), in seconds.
Prints val_mse and the first 10 predictions in original units.

With ``--dataset=csv:PATH`` the last ``--test_size`` values are the test, forecast multi-step
from the values before them, and scored (MAPE, sMAPE, RMSE, MAE in original units) beside the
naive and seasonal-naive forecasts of the same span; see ``lstm_jax.series`` for the recipe.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
from absl import flags
from flax import nnx

from experiments import common
from lstm_jax import data as data_lib
from lstm_jax import series as series_lib
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.models import Forecaster, ModelConfig
from lstm_jax.training import RegressionTask, Trainer, atomic_write, rng_streams, to_jsonable

common.define_training_flags(epochs=20, batch_size=32)
common.define_model_flags(hidden_size=50, activation="tanh")
flags.DEFINE_integer("window", 50, "Input window length (csv: two seasons, or 24 steps without one, unless given).")
flags.DEFINE_float("val_fraction", 0.2, "Fraction of windows, taken from the end, held out for validation.")
flags.DEFINE_string("dataset", "sine", "'sine' (the seed program) or 'csv:PATH' (a column of a CSV file).")
flags.DEFINE_string("column", None, "csv: the column to forecast.")
flags.DEFINE_string("date_column", None, "csv: an optional column of dates, recorded beside the forecast.")
flags.DEFINE_integer("test_size", 0, "csv: the last N values are the test, forecast multi-step.")
flags.DEFINE_integer("season", 0, "csv: the seasonal period in steps (0: detect it from the training part; 1: none).")
flags.DEFINE_enum("missing", "interpolate", ["interpolate", "error"],
                  "csv: fill empty fields by linear interpolation (with a warning) or refuse them.")
flags.DEFINE_string("transform", "auto", "csv: 'auto' or a chain such as 'log,sdiff,standard' "
                    "(none, log, diff, sdiff, diffK, standard, minmax), fitted on the training part.")
flags.DEFINE_enum("strategy", "direct", ["direct", "recursive"],
                  "csv: direct (the model emits --horizon values at once) or recursive (one at a time, fed back).")
flags.DEFINE_integer("horizon", 0, "csv, direct: values per model call (0: the whole test span, "
                     "capped so that training keeps enough windows); longer spans go block by block.")
flags.DEFINE_integer("val_size", 0, "csv: values at the end of the training part used for validation (0: --test_size, "
                     "at most a quarter of the training part).")
FLAGS = flags.FLAGS


def main(argv):
    if FLAGS.dataset == "sine":
        return main_sine()
    if FLAGS.dataset.startswith("csv:"):
        return main_csv(FLAGS.dataset[len("csv:"):])
    raise ConfigError(f"unknown --dataset {FLAGS.dataset!r}; use 'sine' or 'csv:PATH'")


def main_sine():
    model_cfg = ModelConfig(hidden_size=FLAGS.hidden_size, **common.model_kwargs())
    train_cfg = common.train_config()
    data, scaler = data_lib.sine_forecast(window=FLAGS.window, val_fraction=FLAGS.val_fraction)
    model = Forecaster(data.num_features, model_cfg, rngs=nnx.Rngs(rng_streams(FLAGS.seed)["params"]))
    workdir = FLAGS.workdir or common.default_workdir("forecast")
    trainer = Trainer(model, RegressionTask(), data, train_cfg, workdir, resume=FLAGS.resume, log=common.log_fn(),
                      extra_config={"model": model_cfg, "experiment": "forecast"})
    print(f"workdir: {trainer.workdir}")
    summary = trainer.fit()
    everything = data_lib.Split(np.concatenate([data.train.x, data.val.x]), np.concatenate([data.train.y, data.val.y]))
    pred = scaler.inverse(trainer.predict(everything)[:10, 0])
    true = scaler.inverse(everything.y[:10, 0])
    summary["first_predictions"] = pred.tolist()
    trainer.write_summary(summary)
    trainer.close()
    print(f"val_mse: {summary['val_mse']:.3e}  (best epoch {summary['best_epoch']}, {summary['wall_seconds']:.1f}s)")
    print("first 10 predictions (original units):")
    for k, (p, t) in enumerate(zip(pred, true)):
        print(f"  {k:2d}  predicted {p:+.5f}  actual {t:+.5f}")



# -- real series from a CSV file ------------------------------------------------------------------
#
# The recipe: season detected from the training part; one undifferenced and one differenced
# transform chain proposed by lstm_jax.series.transform_candidates; an LSTM trained on each, and
# the one that forecasts the validation span (the end of the training part) better is kept (by
# MAPE, the headline metric, in original units; by MAE where a zero value leaves MAPE undefined). Forecasts are direct: one model call emits the whole test span (MIMO), which
# does not compound its own errors the way feeding back one step at a time does; a span too
# long for that goes block by block. Tuned on no single dataset: for series of ~100 to a few
# thousand values. Flags given on the command line win over these settings.

CSV_TRAIN = {"epochs": 80, "batch_size": 32, "learning_rate": 1e-3, "patience": 12, "schedule": "cosine"}
CSV_HIDDEN = 64
MIN_TRAIN_WINDOWS = 32  # an automatic horizon is shortened until training keeps this many windows
MIN_STEPS_PER_EPOCH = 20  # short series repeat their windows within an epoch, so that patience means enough steps


def _load_series(path: str) -> series_lib.LoadedSeries:
    if not FLAGS.column:
        raise ConfigError("--dataset=csv:PATH needs --column=NAME")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", series_lib.MissingValuesWarning)
        loaded = series_lib.load_csv(path, FLAGS.column, FLAGS.date_column, FLAGS.missing)
    for w in caught:  # one line, not Python's two-line warning with a source excerpt
        print(f"warning: {w.message}", file=sys.stderr, flush=True)
    return loaded


def _auto_window(season: int, n_fit: int) -> int:
    """Two seasons (at least 16 steps; 24 without a season), but at most a third of the fitting part."""
    want = max(2 * season, 16) if season > 1 else 24
    return max(2, min(want, n_fit // 3))


class Candidate:
    """One transform chain and the LSTM trained on it, in ``workdir``; forecasts in original units."""

    def __init__(self, spec: str, train_T: np.ndarray, season: int, val_size: int, test_size: int, workdir: str,
                 info: dict):
        self.chain = series_lib.parse_transform(spec, season).fit(train_T)
        self.name = self.chain.name
        z_T = self.chain.forward(train_T)
        n_fit = len(z_T) - val_size  # transformed values the training windows may draw targets from
        if n_fit < 2:
            raise DataError(f"after the transform {self.name} and {val_size} validation values, {max(n_fit, 0)} "
                            f"training values are left: use a smaller --val_size or --test_size")
        self.window = window = FLAGS.window if FLAGS["window"].present else _auto_window(season, n_fit)
        if FLAGS.strategy == "recursive":
            horizon = 1
        elif FLAGS.horizon:
            horizon = FLAGS.horizon
        else:
            horizon = max(1, min(test_size, n_fit - window - MIN_TRAIN_WINDOWS + 1))
        self.horizon = horizon
        if window + horizon > n_fit:
            raise DataError(f"--window={window} plus a horizon of {horizon} is longer than the training part: it "
                            f"leaves {n_fit} values to train on (after the transform {self.name} and {val_size} "
                            f"values for validation)")

        # Windows whose targets end in the last val_size values validate (early stopping, the
        # choice of checkpoint); the others train. The test span is in neither.
        x_NxWx1, y_NxH = data_lib.windows(z_T, window, horizon)
        is_val_N = np.arange(len(x_NxWx1)) + window + horizon - 1 >= len(z_T) - val_size
        train_cfg = common.train_config(**CSV_TRAIN)
        n_train = int((~is_val_N).sum())
        repeats = max(1, -(-MIN_STEPS_PER_EPOCH * train_cfg.batch_size // n_train))
        data = data_lib.Dataset(
            data_lib.Split(np.tile(x_NxWx1[~is_val_N], (repeats, 1, 1)), np.tile(y_NxH[~is_val_N], (repeats, 1))),
            data_lib.Split(x_NxWx1[is_val_N], y_NxH[is_val_N]),
            info={**info, "transform": self.name, "train_windows": n_train, "train_repeats": repeats},
        )
        hidden = FLAGS.hidden_size if FLAGS["hidden_size"].present else CSV_HIDDEN
        self.model_cfg = ModelConfig(hidden_size=hidden, **common.model_kwargs())
        model = Forecaster(1, self.model_cfg, horizon=horizon, rngs=nnx.Rngs(rng_streams(FLAGS.seed)["params"]))
        self.recipe = {"transform": self.name, "strategy": FLAGS.strategy, "window": window, "horizon": horizon}
        self.trainer = Trainer(model, RegressionTask(), data, train_cfg, workdir, resume=FLAGS.resume,
                               log=common.log_fn(),
                               extra_config={"model": self.model_cfg, "experiment": "forecast", "recipe": self.recipe})

    def fit(self) -> dict:
        self.summary = self.trainer.fit()
        return self.summary

    def _predict(self, windows_NxW: np.ndarray) -> np.ndarray:
        x = windows_NxW[..., None].astype(np.float32)
        return self.trainer.predict(data_lib.Split(x, np.zeros((len(x), self.horizon), np.float32)))

    def forecast(self, history_T: np.ndarray, steps: int) -> np.ndarray:
        """The ``steps`` values after ``history_T``, both in original units."""
        z_H = series_lib.block_forecast(self._predict, self.chain.forward(history_T), steps, self.window)
        return self.chain.inverse(z_H, history_T)


def main_csv(path: str):
    test_size = FLAGS.test_size
    if test_size < 1:
        raise ConfigError("--dataset=csv:PATH needs --test_size=N >= 1 (the last N values are the test)")
    if FLAGS.season < 0:
        raise ConfigError(f"--season must be >= 0, got {FLAGS.season}")
    loaded = _load_series(path)
    values_T = loaded.values_T
    if len(values_T) - test_size < 8:
        raise DataError(f"{path} has {len(values_T)} values: too few to hold out {test_size} for the test "
                        f"and still train on at least 8")
    train_T, test_T = values_T[:-test_size], values_T[-test_size:]

    # Everything until the scoring below sees train_T only.
    season = FLAGS.season or series_lib.detect_season(train_T)
    season_source = "given" if FLAGS.season else "detected"
    val_size = FLAGS.val_size or max(1, min(test_size, len(train_T) // 4))
    if FLAGS.transform == "auto":
        specs = [c.spec for c in series_lib.transform_candidates(train_T, season, val_size)]
    else:
        specs = [FLAGS.transform]
    workdir = os.path.abspath(FLAGS.workdir or common.default_workdir("forecast"))
    info = {"name": "csv", "path": os.path.abspath(path), "column": loaded.column, "length": len(values_T),
            "missing_filled": loaded.num_missing, "test_size": test_size, "val_size": val_size}
    print(f"workdir: {workdir}")
    print(f"{loaded.column}: {len(values_T)} values, the last {test_size} are the test; season {season} "
          f"({season_source}); transforms tried: {', '.join(specs)}", flush=True)

    fit_T, val_T = train_T[:-val_size], train_T[-val_size:]
    candidates, val_scores = [], {}
    for spec in specs:
        cand = Candidate(spec, train_T, season, val_size, test_size,
                         os.path.join(workdir, "candidates", spec.replace(",", "-")), info)
        print(f"[{cand.name}] {FLAGS.strategy}, window {cand.window}, horizon {cand.horizon}: training", flush=True)
        cand.fit()
        # The validation span forecast multi-step from the values before it, in original units.
        val_scores[cand.name] = series_lib.forecast_metrics(val_T, cand.forecast(fit_T, val_size))
        print(f"[{cand.name}] best epoch {cand.summary['best_epoch']} of {cand.summary['epochs_trained']}, "
              f"{cand.summary['wall_seconds']:.1f}s; validation MAE {val_scores[cand.name]['mae']:.4g}, "
              f"MAPE {val_scores[cand.name]['mape']:.3f}%", flush=True)
        candidates.append(cand)
    # Kept by validation MAPE, the headline metric; by MAE where MAPE is undefined (a zero value).
    key = "mape" if all(np.isfinite(v["mape"]) for v in val_scores.values()) else "mae"
    chosen = min(candidates, key=lambda c: val_scores[c.name][key])
    for name, pred in series_lib.baseline_forecasts(fit_T, val_size, season).items():
        val_scores[name] = series_lib.forecast_metrics(val_T, pred)

    # Scoring: the first and only time the test span is read.
    pred_T = chosen.forecast(train_T, test_size)
    baselines = series_lib.baseline_forecasts(train_T, test_size, season)
    scores = {"lstm_jax": series_lib.forecast_metrics(test_T, pred_T),
              **{name: series_lib.forecast_metrics(test_T, p) for name, p in baselines.items()}}

    summary = dict(chosen.summary)
    summary.update({f"test_{k}": _finite(v) for k, v in scores["lstm_jax"].items()})
    summary["baselines"] = {name: {**{f"test_{k}": _finite(v) for k, v in scores[name].items()},
                                   **{f"val_{k}": _finite(v) for k, v in val_scores[name].items()}}
                            for name in baselines}
    summary.update({f"val_multistep_{k}": _finite(v) for k, v in val_scores[chosen.name].items()})
    summary.update({"season": season, "season_source": season_source, **chosen.recipe, "val_size": val_size,
                    "chosen_by": f"val_multistep_{key}",
                    "candidates": {c.name: {"val_multistep_mae": _finite(val_scores[c.name]["mae"]),
                                            "val_multistep_mape": _finite(val_scores[c.name]["mape"]),
                                            "best_epoch": c.summary["best_epoch"], "workdir": c.trainer.workdir}
                                   for c in candidates},
                    "forecast": pred_T.tolist(),
                    "wall_seconds": sum(c.summary["wall_seconds"] for c in candidates)})
    if loaded.dates_T:
        summary["test_dates"] = [loaded.dates_T[len(train_T)], loaded.dates_T[-1]]
    for c in candidates:
        c.trainer.close()
    if chosen.trainer.is_primary:  # one set of files for a multi-process job
        from lstm_jax import plots

        atomic_write(os.path.join(workdir, "summary.json"), json.dumps(to_jsonable(summary), indent=2) + "\n")
        plots.learning_curves(chosen.trainer.history, os.path.join(workdir, "learning_curves.png"),
                              RegressionTask.shown)
        shown = min(len(values_T), max(4 * test_size, 3 * season, 100))  # enough past to judge the forecast
        plots.forecast(values_T[-shown:], shown - test_size, pred_T, os.path.join(workdir, "forecast.png"),
                       baselines=baselines,
                       title=f"{loaded.column}: the last {shown} values; test forecast by {chosen.name}")

    print(f"kept {chosen.name} (lower validation {key.upper()}); season {season}, {FLAGS.strategy} forecasting, "
          f"window {chosen.window}, horizon {chosen.horizon}; {summary['wall_seconds']:.1f}s of training")
    print(f"{'test (' + str(test_size) + ')':<16}{'MAPE %':>10}{'sMAPE %':>10}{'RMSE':>12}{'MAE':>12}")
    for name, m in scores.items():
        print(f"{name:<16}{m['mape']:>10.3f}{m['smape']:>10.3f}{m['rmse']:>12.4g}{m['mae']:>12.4g}")


def _finite(v: float) -> float | None:
    """JSON has no NaN: an undefined metric (MAPE with a zero actual) is written as null."""
    return float(v) if np.isfinite(v) else None


if __name__ == "__main__":
    common.run(main)
