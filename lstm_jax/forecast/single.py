"""The transform-chain recipe for one series (``--recipe=transforms``): one LSTM per transform chain.

For a series split into training and test parts (``problem.SeriesSplit``), each transform chain the
model-free stand-ins propose (``series.transform_candidates``: log, differencing, deseasoning,
standardising) is one run: windows of the transformed training part (``rules.transforms_window``
inputs, ``rules.model_horizon`` targets at once, or one with ``strategy='recursive'``), the last
``val_size`` values' windows for validation (early stopping, the checkpoint), the whole validation
span then forecast multi-step in original units. ``choose`` keeps the chain whose validation
forecast is best; only then is the test span scored, beside the reference forecasts.

``TransformRun`` is one chain's run: its data, model and what it adds to the summary; the caller
trains it (``experiments.train.train_and_evaluate`` does, one workdir per chain).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from flax import nnx

from lstm_jax import plots
from lstm_jax.data import dataset as data_lib
from lstm_jax.data import series as series_lib
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.forecast import rules
from lstm_jax.forecast.problem import SeriesSplit
from lstm_jax.forecast.references import series_references
from lstm_jax.nn.models import Forecaster, ModelConfig
from lstm_jax.train.loop import Trainer
from lstm_jax.train.steps import rng_streams

STRATEGIES = ("direct", "recursive")


def _print(line: str) -> None:
    print(line, flush=True)


def transform_specs(split: SeriesSplit) -> list[str]:
    """The transform chains to try on ``split`` (``parse_transform`` specs), best stand-in first."""
    return [c.spec for c in series_lib.transform_candidates(split.train_T, split.season, split.val_size)]


def transform_name(spec: str, season: int) -> str:
    """The name of a chain (``log,sdiff,standard`` with season 12 -> ``log,diff12,standard``)."""
    return series_lib.parse_transform(spec, season).name


def choose(summaries: dict[str, dict]) -> tuple[str, str]:
    """Kept by multi-step validation MAPE, the headline metric; by MAE where MAPE is undefined (a zero)."""
    key = "val_multistep_mape" if all(s["val_multistep_mape"] is not None for s in summaries.values()) else "val_multistep_mae"
    return min(summaries, key=lambda n: summaries[n][key]), key


class TransformRun:
    """One chain's run on one series: ``data`` (training windows, repeated to ``rules.MIN_STEPS_PER_EPOCH``
    steps an epoch, and validation windows), ``model``, and the hooks a trainer calls after fitting:
    ``evaluate`` (validation and test metrics, the references', the forecast) and ``finish`` (the picture).

    ``window`` and ``horizon`` 0 are automatic (``rules.transforms_window``, ``rules.model_horizon``).
    """

    def __init__(self, split: SeriesSplit, transform: str, *, model_config: ModelConfig, seed: int, batch_size: int,
                 window: int = 0, strategy: str = "direct", horizon: int = 0, statistical: bool = True,
                 log: Callable[[str], None] = _print):
        if transform == "auto":
            raise ConfigError("transform=auto tries several chains: run it through train_and_evaluate")
        self.split, self.strategy, self.statistical, self.log = split, strategy, statistical, log
        s = split
        self.chain = chain = series_lib.parse_transform(transform, s.season).fit(s.train_T)
        z_T = chain.forward(s.train_T)
        val_size, test_size = s.val_size, len(s.test_T)
        n_fit = len(z_T) - val_size  # transformed values the training windows may draw targets from
        if n_fit < 2:
            raise DataError(f"after the transform {chain.name} and {val_size} validation values, {max(n_fit, 0)} "
                            f"training values are left: use a smaller --val_size or --test_size")
        self.window = window = window or rules.transforms_window(s.season, n_fit)
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be direct or recursive, got {strategy!r}")
        if strategy == "recursive":
            self.horizon = horizon = 1
        else:
            self.horizon = horizon = horizon or rules.model_horizon(test_size, n_fit, window)
        if window + horizon > n_fit:
            raise DataError(f"--window={window} plus a horizon of {horizon} is longer than the training part: it "
                            f"leaves {n_fit} values to train on (after the transform {chain.name} and {val_size} "
                            f"values for validation)")
        # Windows whose targets end in the last val_size values validate (early stopping, the choice of
        # checkpoint); the others train. The test span is in neither.
        x_NxWx1, y_NxH = data_lib.windows(z_T, window, horizon)
        is_val_N = np.arange(len(x_NxWx1)) + window + horizon - 1 >= len(z_T) - val_size
        n_train = int((~is_val_N).sum())
        repeats = rules.epoch_repeats(n_train, batch_size)
        info = {"name": "csv", "path": os.path.abspath(s.path), "column": s.loaded.column,
                "length": len(s.loaded.values_T), "missing_filled": s.loaded.num_missing, "test_size": test_size,
                "val_size": val_size, "transform": chain.name, "train_windows": n_train, "train_repeats": repeats}
        self.data = data_lib.Dataset(
            data_lib.Split(np.tile(x_NxWx1[~is_val_N], (repeats, 1, 1)), np.tile(y_NxH[~is_val_N], (repeats, 1))),
            data_lib.Split(x_NxWx1[is_val_N], y_NxH[is_val_N]), info=info)
        self.model = Forecaster(1, model_config, horizon=horizon, rngs=nnx.Rngs(rng_streams(seed)["params"]))
        log(f"[{chain.name}] {strategy}, window {window}, horizon {horizon}")

    def forecast(self, trainer: Trainer, history_T: np.ndarray, steps: int) -> np.ndarray:
        """The ``steps`` values after ``history_T``, both in original units."""
        chain, horizon = self.chain, self.horizon

        def predict(windows_NxW):
            x = windows_NxW[..., None].astype(np.float32)
            return trainer.predict(data_lib.Split(x, np.zeros((len(x), horizon), np.float32)))

        z_H = series_lib.block_forecast(predict, chain.forward(history_T), steps, self.window)
        return chain.inverse(z_H, history_T)

    def evaluate(self, trainer: Trainer) -> dict:
        """After fitting (``trainer.model`` holds the chosen checkpoint): the summary's entries."""
        s, chain = self.split, self.chain
        val_size, test_size = s.val_size, len(s.test_T)
        fit_T, val_T = s.train_T[:-val_size], s.train_T[-val_size:]
        # The validation span forecast multi-step from the values before it, in original units.
        val = series_lib.forecast_metrics(val_T, self.forecast(trainer, fit_T, val_size))
        val_refs = {n: series_lib.forecast_metrics(val_T, p)
                    for n, p in series_lib.naive_forecasts(fit_T, val_size, s.season).items()}
        # Scoring: the test span is read here only, after training and the choice of checkpoint.
        pred_T = self.forecast(trainer, s.train_T, test_size)
        refs = series_references(s.train_T, test_size, s.season, statistical=self.statistical)
        metrics = lambda p: series_lib.forecast_metrics(s.test_T, p, s.train_T, s.season)  # noqa: E731
        out = {f"test_{k}": v for k, v in metrics(pred_T).items()}
        # The references' scores (the summary's key for them has always been "baselines").
        out["baselines"] = {n: {**{f"test_{k}": v for k, v in metrics(p).items()},
                                **{f"val_{k}": v for k, v in val_refs.get(n, {}).items()}} for n, p in refs.items()}
        out.update({f"val_multistep_{k}": (v if np.isfinite(v) else None) for k, v in val.items()})
        out.update({"season": s.season, "season_source": s.season_source, "transform": chain.name,
                    "strategy": self.strategy, "window": self.window, "horizon": self.horizon, "val_size": val_size,
                    "forecast": pred_T.tolist()})
        if s.loaded.dates_T:
            out["test_dates"] = [s.loaded.dates_T[len(s.train_T)], s.loaded.dates_T[-1]]
        self.log(f"[{chain.name}] validation MAE {val['mae']:.4g}, MAPE {val['mape']:.3f}%")
        return out

    def finish(self, trainer: Trainer, summary: dict) -> None:
        """``forecast.png``: the end of the series with the test forecast and the references'."""
        s = self.split
        values_T, test_size = s.loaded.values_T, len(s.test_T)
        shown = min(len(values_T), max(4 * test_size, 3 * s.season, 100))  # enough past to judge the forecast
        refs = series_references(s.train_T, test_size, s.season, statistical=self.statistical, log=lambda _: None)
        plots.forecast(values_T[-shown:], shown - test_size, np.array(summary["forecast"]),
                       os.path.join(trainer.workdir, "forecast.png"), baselines=refs,
                       title=f"{s.loaded.column}: the last {shown} values; test forecast by {self.chain.name}")
