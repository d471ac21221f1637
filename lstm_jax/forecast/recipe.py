"""The forecasting recipe: an ensemble of global LSTMs over level-normalised windows.

One procedure for a single series (``csv:``) and for panels of many (``tsf:``, long CSV), following
what made recurrent forecasters competitive on short series in the M4 competition (ES-RNN, Smyl
2020) and what N-BEATS (Oreshkin et al. 2020) did for its ensembles:

1. **Per-series transform** fitted on each series' training part (``panel.series_transform``): log
   for a positive series that at least doubles over it (growth becomes additive), removal of a
   seasonal profile when there is a season (ES-RNN's seasonal normalisation with fixed indices),
   then division by the in-sample naive error (``panel.MaseScale``): an error of 1 is a MASE of 1,
   so the loss weighs every series as the metric does. The profile is either each phase's mean
   over the whole training part, or a classical decomposition's over its last seasons (which
   follows a trend, a changing profile and a period that is not a whole number of steps, such as
   52 weeks for a year); the first member of the ensemble is fitted with each, and the one whose
   validation MASE is lower is kept (``season_profile='auto'``).
2. **Per-window level**: the input and targets of each window are taken relative to the window's
   last input value (ES-RNN divides by its level; after the log that is a ratio), so that one model
   learns shapes shared by series of any size. Whether a panel is level-normalised or left
   stationary (windows in absolute scaled units, for series that revert to a mean) is decided, as
   the transforms are, by model-free stand-ins on the validation span: the naive forecast (what a
   level model tends to) against the training mean.
3. **Direct multi-step**: one model call emits the whole horizon (MIMO), trained with the pinball
   loss (the median, i.e. absolute error, unless quantiles are asked for).
4. **Validation**: the last ``val_size`` values of each training part; windows whose targets reach
   into them choose the epoch (early stopping), nothing else sees them during fitting.
5. **Refit**: each member is then retrained on all windows of the training part for the chosen
   number of epochs, so that the most recent values, the most informative ones for short series,
   are learnt from and not only read.
6. **Ensemble**: members over input windows (1, 1.5 and 2 times a base length, as N-BEATS
   ensembles over look-backs) and seeds; the forecast is the median over members, per step and
   quantile. The members' validation forecasts are combined the same way and reported.

Nothing here reads the test span: ``GlobalRecipe.fit`` takes the training parts only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from flax import nnx

from lstm_jax import plots
from lstm_jax.data import panel as panel_lib
from lstm_jax.data import series as series_lib
from lstm_jax.data.dataset import Dataset, Split
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.forecast import rules
from lstm_jax.forecast import statistical as statistical_lib
from lstm_jax.forecast.references import reference_forecasts
from lstm_jax.nn.models import Forecaster, ModelConfig, ModelSpec
from lstm_jax.train.config import TrainConfig
from lstm_jax.train.loop import Trainer
from lstm_jax.train.steps import rng_streams
from lstm_jax.train.tasks import QuantileTask
from lstm_jax.train.workdir import INFERENCE_FORMAT, INFERENCE_RECORD, atomic_write, to_jsonable


@dataclasses.dataclass
class RecipeConfig:
    """The recipe's settings. Defaults were chosen for short yearly to long weekly series alike."""

    hidden_size: int = 64
    input_multiples: tuple[float, ...] = (1.0, 1.5, 2.0)  # look-backs, in units of the base window
    seeds: int = 2  # members per look-back
    seed: int = 0  # the first member's seed; the others count up from it
    budget: int = 200_000  # members stop once their windows x input lengths would pass this (one at least)
    epochs: int = 60
    patience: int = 10
    learning_rate: float = 3e-3
    batch_size: int = 64
    min_steps_per_epoch: int = rules.MIN_STEPS_PER_EPOCH  # short data repeat their windows so patience counts enough steps
    min_train_windows: int = rules.MIN_TRAIN_WINDOWS  # an automatic model horizon is shortened until training keeps this many
    refit: bool = True
    quantiles: tuple[float, ...] = (0.5,)
    level: str = "auto"  # last | none | auto (chosen by stand-ins on the validation span)
    log: str = "auto"  # auto | yes | no
    deseason: bool = True
    season_profile: str = "auto"  # all | recent | auto (the first member fitted with each; lower validation MASE)
    recent_seasons: int = 6  # the seasons a 'recent' profile is fitted on (a Holt-Winters-like memory)
    window: int = 0  # the base input window; 0: automatic (rules.ensemble_window)
    model_kwargs: dict = dataclasses.field(default_factory=dict)


def wants_log(train_T: np.ndarray, setting: str) -> bool:
    """Log for a positive series whose training part spans a factor of 2 or more (``setting`` auto)."""
    positive = bool(np.min(train_T) > 0)
    if setting == "yes":
        if not positive:
            raise DataError("--log=yes needs positive values in every training part")
        return True
    return setting == "auto" and positive and float(np.max(train_T)) >= 2 * float(np.min(train_T))


def choose_level(fit_parts: Sequence[np.ndarray], val_parts: Sequence[np.ndarray]) -> tuple[str, dict]:
    """``last`` when the naive forecast beats the training mean on the validation spans (summed
    MASE-scaled error over series), else ``none``. Model-free: the stand-ins of a level model and
    of a stationary one."""
    naive = mean = 0.0
    for fit, val in zip(fit_parts, val_parts):
        scale = series_lib.mase_scale(fit) if len(fit) > 1 else 1.0
        scale = scale if scale > 0 else 1.0
        naive += float(np.mean(np.abs(val - fit[-1]))) / scale
        mean += float(np.mean(np.abs(val - fit.mean()))) / scale
    n = max(len(fit_parts), 1)
    return ("last" if naive <= mean else "none"), {"naive_mase": naive / n, "mean_mase": mean / n}


@dataclasses.dataclass
class Member:
    input_size: int
    seed: int
    best_epoch: int
    epochs_trained: int
    seconds: float
    run: str = ""  # the folder of the trainer whose weights forecast (the refit's), relative to the recipe's
    run_epoch: int = 0  # that trainer's best epoch: the checkpoint the forecasts came from


def forecast_blocks(predict: Callable[[np.ndarray], np.ndarray], z_list: Sequence[np.ndarray], input_size: int,
                    steps: int, *, model_horizon: int, num_quantiles: int, median_index: int, level: str,
                    season: int, cov_list: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """[S] arrays [steps, Q] in transformed units after each series of ``z_list``, from ``predict``
    (windows x [N, L, D] -> [N, model_horizon * Q]); blocks longer than the model's horizon are fed
    back (their median) as the recipe's single-series forecasts always were."""
    z_list = [list(z) for z in z_list]
    out = [[] for _ in z_list]
    H, Q = model_horizon, num_quantiles
    while len(out[0]) < steps:
        if cov_list is not None and len(out[0]) > 0:
            raise DataError("covariates are past values only: the horizon must fit in one model call "
                            "(shorten the test span or give --horizon)")
        x, lev = panel_lib.last_windows([np.asarray(z) for z in z_list], input_size, level=level, season=season,
                                        covariates=cov_list)
        p = predict(x).reshape(len(x), H, Q) + lev[:, None, None]
        for i in range(len(z_list)):
            out[i].extend(p[i])
            z_list[i].extend(p[i, :, median_index])
    return [np.asarray(o[:steps]) for o in out]


def to_original(chains: Sequence[series_lib.Chain], z_SxHxQ: Sequence[np.ndarray],
                histories: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Forecasts in transformed units -> original units, each series by its chain after its history."""
    # The chains (log, deseason, scale) are monotone per step, so quantiles map to quantiles.
    return [np.stack([c.inverse(z[:, q], h) for q in range(z.shape[1])], axis=1)
            for c, z, h in zip(chains, z_SxHxQ, histories)]


def member_median(preds: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The median over members, per series, step and quantile; quantiles kept in order."""
    return [np.sort(np.median(np.stack([m[i] for m in preds]), axis=0), axis=-1) for i in range(len(preds[0]))]


class GlobalRecipe:
    """Fits the ensemble on the training parts of ``S`` series and forecasts after them.

    ``train_parts`` [S] raw training values; ``covariates`` [S] optional [T_i, C] arrays covering at
    least the training parts (only past values are read); ``horizon`` the span to forecast.
    """

    def __init__(self, train_parts: Sequence[np.ndarray], *, horizon: int, season: int, val_size: int,
                 config: RecipeConfig, workdir: str, covariates: Sequence[np.ndarray] | None = None,
                 log: Callable[[str], None] = print, train_log: Callable[[str], None] = lambda _: None,
                 profile: str = "all"):
        self.train_parts = [np.asarray(t, np.float64) for t in train_parts]
        self.profile = profile
        self.horizon, self.season, self.val_size, self.config = horizon, season, val_size, config
        self.workdir, self.log, self.train_log = workdir, log, train_log
        self.task = QuantileTask(config.quantiles)
        self.quantiles = self.task.quantiles
        self.uses_log = [wants_log(t, config.log) for t in self.train_parts]
        self.chains = [panel_lib.series_transform(t, log=lg, season=season, deseason=config.deseason, scaling="mase",
                                                  profile=profile, recent_seasons=config.recent_seasons)
                       for t, lg in zip(self.train_parts, self.uses_log)]
        self.z = [c.forward(t) for c, t in zip(self.chains, self.train_parts)]
        n_train = [len(t) for t in self.train_parts]
        self.cov = None
        if covariates is not None:
            self.cov = [panel_lib.scale_covariates(np.asarray(c)[:n], n) for c, n in zip(covariates, n_train)]
        if config.level == "auto":
            self.level, self.level_scores = choose_level([t[:-val_size] for t in self.train_parts],
                                                         [t[-val_size:] for t in self.train_parts])
        else:
            self.level, self.level_scores = config.level, {}
        self.single = len(self.train_parts) == 1
        n_fit = min(n_train) - val_size
        # The base window is capped by the shortest fitting part for one series; panels pad short series.
        base = config.window or rules.ensemble_window(season, horizon, n_fit if self.single else max(n_train) * 3)
        if self.single and config.window and config.window + 1 > n_fit:
            raise DataError(f"--window={config.window} is longer than the {n_fit} training values before the "
                            f"validation span: use a smaller --window, --val_size or --test_size")
        self.input_sizes = sorted({max(2, round(base * m)) for m in config.input_multiples})
        if self.single:  # a single series gets no padded windows: keep enough of them
            self.input_sizes = [s for s in self.input_sizes if s <= max(2, n_fit // 3)] or [max(2, n_fit // 3)]
            self.model_horizon = rules.model_horizon(horizon, n_fit, max(self.input_sizes), config.min_train_windows)
            self.min_input = None  # = the input size
        else:
            self.model_horizon = horizon
            self.min_input = 2
        self.members: list[Member] = []
        self._val_preds: list[list[np.ndarray]] = []
        self._test_preds: list[list[np.ndarray]] = []

    # -- one member ------------------------------------------------------------------------------
    def _windows(self, z, L, **kw):
        return panel_lib.make_windows(z, L, self.model_horizon, level=self.level, season=self.season,
                                      covariates=self.cov, min_input=self.min_input or L, **kw)

    def _dataset(self, train: panel_lib.Windows, val: panel_lib.Windows, info: dict) -> Dataset:
        bs = self.config.batch_size
        reps = rules.epoch_repeats(len(train), bs, self.config.min_steps_per_epoch)
        return Dataset(Split(np.tile(train.x_NxLxD, (reps, 1, 1)), np.tile(train.y_NxH, (reps, 1))),
                       Split(val.x_NxLxD, val.y_NxH), info={**info, "train_windows": len(train), "repeats": reps})

    def model_spec(self) -> ModelSpec:
        """Every member's network: inputs the target and the covariates, outputs each step's quantiles."""
        cfg = self.config
        features = 1 + (0 if self.cov is None else self.cov[0].shape[1])
        return ModelSpec("forecaster", ModelConfig(hidden_size=cfg.hidden_size, **cfg.model_kwargs), features,
                         horizon=self.model_horizon * len(self.quantiles))

    def _trainer(self, L: int, seed: int, data: Dataset, epochs: int, patience: int, workdir: str) -> Trainer:
        cfg = self.config
        spec = self.model_spec()
        model_cfg = spec.config
        model = Forecaster(data.num_features, model_cfg, horizon=spec.horizon, rngs=nnx.Rngs(rng_streams(seed)["params"]))
        train_cfg = TrainConfig(epochs=max(1, epochs), batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                seed=seed, patience=patience, schedule="cosine")
        return Trainer(model, self.task, data, train_cfg, workdir, log=self.train_log,
                       record={"train": train_cfg, "model": model_cfg, "experiment": "forecast", "input_size": L,
                               "level": self.level, "quantiles": self.quantiles})

    def _forecast(self, trainer: Trainer, L: int, z_list: Sequence[np.ndarray], steps: int,
                  cov_list: Sequence[np.ndarray] | None) -> list[np.ndarray]:
        """[S] arrays [steps, Q] in transformed units (``forecast_blocks`` with the trainer's model)."""
        H, Q = self.model_horizon, len(self.quantiles)
        predict = lambda x: trainer.predict(Split(x, np.zeros((len(x), H * Q), np.float32)))  # noqa: E731
        return forecast_blocks(predict, z_list, L, steps, model_horizon=H, num_quantiles=Q,
                               median_index=self.task.median_index, level=self.level, season=self.season,
                               cov_list=cov_list)

    def _to_original(self, z_SxHxQ: Sequence[np.ndarray], histories: Sequence[np.ndarray]) -> list[np.ndarray]:
        return to_original(self.chains, z_SxHxQ, histories)

    def plan(self) -> list[tuple[int, int]]:
        """The members (input size, seed): every look-back with the first seed, then with the next, ...
        while their window-steps (windows x input length, what a member's epoch costs) fit the budget."""
        cfg, out, spent = self.config, [], 0
        for k in range(cfg.seeds):
            for L in self.input_sizes:
                cost = len(self._windows(self.z, L)) * L
                if out and spent + cost > cfg.budget:
                    return out
                out.append((L, cfg.seed + k))
                spent += cost
        return out

    def fit(self, info: dict | None = None, max_members: int | None = None) -> None:
        """Fits the planned members not fitted yet (at most ``max_members`` of them; a later call
        goes on from there)."""
        cfg, V = self.config, self.val_size
        fit_z = [z[:-V] for z in self.z]
        fit_cov = None if self.cov is None else [c[:-V] for c in self.cov]
        todo = self.plan()[len(self.members):]
        for L, seed in todo[:max_members]:
            name = f"L{L}-seed{seed}"
            wd = os.path.join(self.workdir, "members", name)
            train = self._windows(self.z, L, targets_before=[len(z) - V for z in self.z])
            val = self._windows(self.z, L, targets_from=[len(z) - V for z in self.z])
            trainer = self._trainer(L, seed, self._dataset(train, val, info or {}), cfg.epochs, cfg.patience, wd)
            summary = trainer.fit()
            val_pred = self._forecast(trainer, L, fit_z, V, fit_cov)
            seconds = summary["wall_seconds"]
            if cfg.refit:
                trainer.close()
                every = self._windows(self.z, L)
                trainer = self._trainer(L, seed, self._dataset(every, val, info or {}), summary["best_epoch"], 0,
                                        wd + "-refit")
                refit = trainer.fit()
                seconds += refit["wall_seconds"]
                run_epoch = int(refit["best_epoch"])
            else:
                run_epoch = int(summary["best_epoch"])
            test_pred = self._forecast(trainer, L, self.z, self.horizon, self.cov)
            trainer.close()
            self._val_preds.append(self._to_original(val_pred, [t[:-V] for t in self.train_parts]))
            self._test_preds.append(self._to_original(test_pred, self.train_parts))
            self.members.append(Member(L, seed, summary["best_epoch"], summary["epochs_trained"], seconds,
                                       run=os.path.relpath(trainer.workdir, self.workdir), run_epoch=run_epoch))
            self.log(f"[{name}] best epoch {summary['best_epoch']} of {summary['epochs_trained']}"
                     f"{', refit' if cfg.refit else ''}; {seconds:.1f}s")

    @staticmethod
    def _median(preds: list[list[np.ndarray]]) -> list[np.ndarray]:
        return member_median(preds)

    def inference_record(self, top: str, source: dict) -> dict:
        """What ``lstm_jax.inference.load_run`` needs to forecast after new values: the members'
        networks and checkpoints (folders relative to the run's folder ``top``), each series' fitted
        chain, and how the run's series were read (``source``)."""
        return {
            "format": INFERENCE_FORMAT, "experiment": "forecast", "model": {"kind": "ensemble"},
            "ensemble": {
                "horizon": self.horizon, "model_horizon": self.model_horizon, "quantiles": list(self.quantiles),
                "median_index": self.task.median_index, "level": self.level, "season": self.season,
                "eval_batch_size": TrainConfig.eval_batch_size, "spec": self.model_spec().to_json(),
                "members": [{"input_size": m.input_size, "seed": m.seed, "epoch": m.run_epoch,
                             "run": os.path.relpath(os.path.join(self.workdir, m.run), top)} for m in self.members],
                "series": [{"chain": panel_lib.chain_state(c), "train_length": len(t)}
                           for c, t in zip(self.chains, self.train_parts)],
                "covariates": self.cov is not None,
            },
            "source": source,
        }

    def val_mase(self) -> float:
        """The mean over series of the members' median validation forecast's MASE."""
        V, mid = self.val_size, self.task.median_index
        return float(np.mean([series_lib.forecast_metrics(t[-V:], f[:, mid], t[:-V], self.season)["mase"]
                              for t, f in zip(self.train_parts, self.val_forecasts())]))

    def val_forecasts(self) -> list[np.ndarray]:
        """[S] arrays [val_size, Q]: the validation span forecast from the values before it."""
        return self._median(self._val_preds)

    def forecasts(self) -> list[np.ndarray]:
        """[S] arrays [horizon, Q]: the span after each training part, in original units."""
        return self._median(self._test_preds)


# -- scores (the reference forecasts: lstm_jax.forecast.references) -----------------------------------

def score(test_parts: Sequence[np.ndarray], preds: Sequence[np.ndarray], train_parts: Sequence[np.ndarray],
          season: int) -> list[dict[str, float]]:
    """``series.forecast_metrics`` per series, MASE scaled by each training part's seasonal-naive error."""
    return [series_lib.forecast_metrics(a, p, t, season) for a, p, t in zip(test_parts, preds, train_parts)]


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over series (NaN where a series leaves it undefined, e.g. MAPE at 0)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# -- a whole run -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Problem:
    """What to forecast: named series, the last ``test_size`` values of each are the test."""

    names: list[str]
    values: list[np.ndarray]
    test_size: int
    season: int
    val_size: int
    covariates: list[np.ndarray] | None = None
    covariate_names: tuple[str, ...] = ()
    source: dict = dataclasses.field(default_factory=dict)


def _finite(v: float) -> float | None:
    """JSON has no NaN: an undefined metric (MAPE with a zero actual) is written as null."""
    return float(v) if np.isfinite(v) else None


def run(problem: Problem, config: RecipeConfig, workdir: str, *, statistical: bool = True,
        log: Callable[[str], None] = print, train_log: Callable[[str], None] = lambda _: None,
        source: dict | None = None) -> dict:
    """Fits the recipe on the training parts, scores it and the references on the test spans, and writes
    ``summary.json``, ``per_series.csv`` (panels), ``forecast.png`` into ``workdir``. Returns the summary.

    For one series the summary's ``test_*`` are its metrics; for many, their means over series
    (``test_mase``, ``test_smape``, ...), with each series' own in ``per_series.csv``.
    """
    t0 = time.perf_counter()
    H, season, V = problem.test_size, problem.season, problem.val_size
    for name, v in zip(problem.names, problem.values):
        if len(v) - H - V < 2:
            raise DataError(f"series {name!r} has {len(v)} values: too few for a test of {H} and a validation "
                            f"span of {V} with 2 values left to fit on")
    train = [v[:-H] for v in problem.values]
    test = [v[-H:] for v in problem.values]
    cov = problem.covariates
    make = lambda profile, wd: GlobalRecipe(train, horizon=H, season=season, val_size=V, config=config, workdir=wd,
                                            covariates=cov, log=log, train_log=train_log, profile=profile)
    if config.season_profile not in ("auto", *panel_lib.PROFILES):
        raise ConfigError(f"season_profile must be auto or one of {', '.join(panel_lib.PROFILES)}, "
                          f"got {config.season_profile!r}")
    profiles = list(panel_lib.PROFILES) if config.season_profile == "auto" else [config.season_profile]
    if not (config.deseason and season > 1 and any(len(t) >= 2 * season for t in train)):
        profiles = ["all"]  # nothing is deseasoned: the profiles are the same
    recipe = make(profiles[0], workdir)
    recipes = {profiles[0]: recipe}
    # statsforecast's fits (a minute or more for long seasonal series) run in a worker process while
    # the network trains: on 2 cores the run takes about the longer of the two, not their sum.
    pool = fitted = None
    if statistical:
        pool = multiprocessing.get_context("spawn").Pool(1)
        fitted = pool.apply_async(statistical_lib.statistical_forecasts_many, (train, H, season)).get
    n = len(train)
    log(f"{n} series, the last {H} values of each are the test; season {season}; level "
        f"{recipe.level}; log on {sum(recipe.uses_log)} of {n}; input windows {recipe.input_sizes} x "
        f"{config.seeds} seeds; model horizon {recipe.model_horizon}"
        + (f"; covariates {', '.join(problem.covariate_names)}" if cov is not None else ""))
    info = {"name": problem.source.get("name", "forecast"), "series": n}
    profile_scores = {}
    try:
        if len(profiles) > 1:  # the first member with each seasonal profile; the lower validation MASE stays
            for p in profiles[1:]:
                recipes[p] = make(p, os.path.join(workdir, f"profile-{p}"))
            for p, r in recipes.items():
                r.log(f"seasonal profile '{p}':")
                r.fit(info, max_members=1)
                profile_scores[p] = r.val_mase()
            recipe = recipes[min(profiles, key=lambda p: (profile_scores[p], profiles.index(p)))]
            log("seasonal profile chosen on validation: " + recipe.profile + "  ("
                + "  ".join(f"{p} MASE {v:.4f}" for p, v in profile_scores.items()) + ")")
        recipe.fit(info)
    except BaseException:
        if pool is not None:
            pool.terminate()  # the worker's fits are of no use now
        raise
    fit_seconds = time.perf_counter() - t0

    # Scoring: the first and only time the test spans are read.
    mid = recipe.task.median_index
    q_forecasts = recipe.forecasts()
    ours = [f[:, mid] for f in q_forecasts]
    val_ours = [f[:, mid] for f in recipe.val_forecasts()]
    t1 = time.perf_counter()
    try:
        refs = reference_forecasts(train, H, season, statistical=statistical, log=log, fitted=fitted)
    finally:
        if pool is not None:
            pool.terminate()
    ref_seconds = time.perf_counter() - t1  # what the references added after training
    val_refs = reference_forecasts([t[:-V] for t in train], V, season, statistical=False)
    scores = {"lstm_jax": score(test, ours, train, season), **{k: score(test, p, train, season) for k, p in refs.items()}}
    val_scores = {"lstm_jax": score([t[-V:] for t in train], val_ours, [t[:-V] for t in train], season),
                  **{k: score([t[-V:] for t in train], p, [t[:-V] for t in train], season) for k, p in val_refs.items()}}
    means = {k: mean_scores(rows) for k, rows in scores.items()}
    val_means = {k: mean_scores(rows) for k, rows in val_scores.items()}

    summary: dict = {f"test_{k}": _finite(v) for k, v in means["lstm_jax"].items()}
    summary.update({f"val_multistep_{k}": _finite(v) for k, v in val_means["lstm_jax"].items()})
    # The references' scores (naive and statistical; the summary's key for them has always been "baselines").
    summary["baselines"] = {name: {**{f"test_{k}": _finite(v) for k, v in means[name].items()},
                                   **{f"val_{k}": _finite(v) for k, v in val_means.get(name, {}).items()}}
                            for name in refs}
    if len(recipe.quantiles) > 1:
        iv = [series_lib.interval_metrics(a, f[:, 0], f[:, -1]) for a, f in zip(test, q_forecasts)]
        lo, hi = recipe.quantiles[0], recipe.quantiles[-1]
        summary.update({"quantiles": list(recipe.quantiles), "interval": [lo, hi],
                        "test_coverage": float(np.mean([i["coverage"] for i in iv])),
                        "test_width": float(np.mean([i["width"] for i in iv])),
                        "test_nominal_coverage": hi - lo})
    summary.update({
        "num_series": n, "test_size": H, "val_size": V, "season": season, "level": recipe.level,
        "season_profile": recipe.profile, "season_profile_scores": profile_scores,
        "level_scores": recipe.level_scores, "log_series": int(sum(recipe.uses_log)),
        "input_sizes": recipe.input_sizes, "model_horizon": recipe.model_horizon,
        "members": [dataclasses.asdict(m) for m in recipe.members],
        "recipe": dataclasses.asdict(config), "dataset": problem.source,
        "covariates": list(problem.covariate_names), "config_source": source,
        "fit_seconds": fit_seconds, "reference_seconds": ref_seconds, "wall_seconds": time.perf_counter() - t0,
    })
    if n == 1:
        summary["forecast"] = ours[0].tolist()
        if len(recipe.quantiles) > 1:
            summary["forecast_quantiles"] = {str(q): q_forecasts[0][:, k].tolist() for k, q in enumerate(recipe.quantiles)}
    os.makedirs(workdir, exist_ok=True)
    record = recipe.inference_record(workdir, {**problem.source, "names": problem.names})
    atomic_write(os.path.join(workdir, INFERENCE_RECORD), json.dumps(to_jsonable(record), indent=2) + "\n")
    atomic_write(os.path.join(workdir, "summary.json"), json.dumps(to_jsonable(summary), indent=2) + "\n")
    if n > 1:
        write_per_series(os.path.join(workdir, "per_series.csv"), problem.names, problem.values, scores,
                         q_forecasts, recipe.quantiles, test)
    _picture(problem, ours, q_forecasts, recipe.quantiles, refs, scores, os.path.join(workdir, "forecast.png"))
    print_table(scores, means, H, n, log)
    if len(recipe.quantiles) > 1:
        log(f"{(hi - lo):.0%} interval [q{lo:g}, q{hi:g}]: test coverage {summary['test_coverage']:.1%}, "
            f"mean width {summary['test_width']:.4g}")
    return summary


def write_per_series(path: str, names, values, scores, q_forecasts, quantiles, test) -> None:
    models = list(scores)
    metrics = list(scores["lstm_jax"][0])
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["series", "length"] + [f"{m}_{k}" for m in models for k in metrics]
    if len(quantiles) > 1:
        header += ["lstm_jax_coverage", "lstm_jax_width"]
    w.writerow(header)
    for i, name in enumerate(names):
        row = [name, len(values[i])] + [f"{scores[m][i][k]:.6g}" for m in models for k in metrics]
        if len(quantiles) > 1:
            iv = series_lib.interval_metrics(test[i], q_forecasts[i][:, 0], q_forecasts[i][:, -1])
            row += [f"{iv['coverage']:.6g}", f"{iv['width']:.6g}"]
        w.writerow(row)

    atomic_write(path, buf.getvalue())


def print_table(scores, means, H, n, log=print) -> None:
    what = f"test ({H})" if n == 1 else f"mean of {n}"
    log(f"{what:<16}{'MASE':>9}{'MAPE %':>10}{'sMAPE %':>10}{'RMSE':>12}{'MAE':>12}")
    for name, m in means.items():
        log(f"{name:<16}{m['mase']:>9.3f}{m['mape']:>10.3f}{m['smape']:>10.3f}{m['rmse']:>12.4g}{m['mae']:>12.4g}")


def _picture(problem: Problem, ours, q_forecasts, quantiles, refs, scores, path: str) -> None:
    """The single series (or, for a panel, the series nearest the median MASE) with every forecast."""

    if len(ours) == 1:
        i = 0
    else:
        mase = np.array([r["mase"] for r in scores["lstm_jax"]])
        i = int(np.argsort(mase)[len(mase) // 2])
    values, H, season = problem.values[i], problem.test_size, problem.season
    shown = min(len(values), max(4 * H, 3 * season, 100))
    band = None
    if len(quantiles) > 1:
        band = (q_forecasts[i][:, 0], q_forecasts[i][:, -1])
    label = f"{problem.names[i]}" if len(ours) > 1 else problem.names[0]
    plots.forecast(values[-shown:], shown - H, ours[i], path, baselines={k: v[i] for k, v in refs.items()},
                   band=band, band_label=f"q{quantiles[0]:g}-q{quantiles[-1]:g}",
                   title=f"{label}: the last {shown} values and the test forecasts"
                         + (f" (the series of median MASE of {len(ours)})" if len(ours) > 1 else ""))
