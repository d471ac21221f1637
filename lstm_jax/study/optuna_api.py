"""Everything lstm_jax takes from Optuna, in one file: its API moves between releases, our use of it here.

Optuna is the optional ``study`` extra (``pip install -e '.[study]'``); without it, :func:`require`
says so in one line. Storage is an Optuna ``RDBStorage`` in every case, so that heartbeats (a
killed worker's trial is found stale and run again) work the same on the embedded SQLite file and
on a PostgreSQL server shared by many machines.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from lstm_jax.errors import ConfigError, UserError

try:  # the optional extra: every entry point below calls require() first
    import optuna
    import sqlalchemy.engine
    import sqlalchemy.exc
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState
except ImportError:  # pragma: no cover - exercised where the extra is absent
    optuna = None
    BaseDistribution = CategoricalDistribution = FloatDistribution = IntDistribution = TrialState = None

# States by name, as the study's records and report spell them.
FINISHED = ("COMPLETE", "PRUNED")
SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "hyperband")


def require() -> None:
    if optuna is None:
        raise UserError("studies need Optuna: pip install -e '.[study]' (optuna; psycopg for PostgreSQL)")
    # Optuna logs every trial at INFO; the study prints its own one line per trial. Heartbeats and
    # retries are marked experimental in every release since 2.8; the warning says nothing new each call.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)


# -- distributions ----------------------------------------------------------------------------------

def float_range(low: float, high: float, log: bool) -> BaseDistribution:
    return FloatDistribution(low, high, log=log)


def int_range(low: int, high: int, log: bool) -> BaseDistribution:
    return IntDistribution(low, high, log=log)


def choice(values: Sequence[Any]) -> BaseDistribution:
    return CategoricalDistribution(tuple(values))


def is_log(d: BaseDistribution) -> bool:
    return bool(getattr(d, "log", False))


def is_categorical(d: BaseDistribution) -> bool:
    return isinstance(d, CategoricalDistribution)


def suggest(trial, name: str, d: BaseDistribution) -> Any:
    """The trial's value of ``name`` (a retried trial gets its original value back)."""
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, log=d.log)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_categorical(name, d.choices)


# -- storage ----------------------------------------------------------------------------------------

def redact(url: str) -> str:
    """The URL without its password (for logs, records and the report)."""
    require()
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<a malformed URL>"


def storage(url: str, *, heartbeat_seconds: int):
    """An Optuna RDBStorage on ``url`` with heartbeats: a trial silent for 3 beats is stale.

    A stale trial (its worker was killed, its machine lost) is marked failed and queued again with
    the same hyperparameters (and the same seed, which the study keeps in its user attributes).
    """
    require()
    shown = redact(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"--storage {shown}: not a database URL (e.g. postgresql://user@host/db)") from None
    if parsed.drivername == "postgresql":
        # The study extra's driver, psycopg (3), whatever SQLAlchemy's default for a bare postgresql://
        # (psycopg2 before SQLAlchemy 2.1).
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_seconds, grace_period=3 * heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            # Many workers share one server: check connections before use and wait for a busy SQLite file.
            engine_kwargs={"pool_pre_ping": True, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})})
    except ImportError as e:
        raise UserError(f"--storage {shown}: its database driver is not installed ({str(e).splitlines()[0]})") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UserError(f"--storage {shown}: cannot open it: {reason.replace(url, shown)}") from None


# -- studies ----------------------------------------------------------------------------------------

def sampler(name: str, seed: int):
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def pruner(name: str):
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_study(store, name: str, *, direction: str, sampler_name: str, pruner_name: str, seed: int):
    """The Optuna study ``name`` in ``store``, created on first use (any number of processes may race)."""
    for attempt in range(5):
        try:
            return optuna.create_study(storage=store, study_name=name, direction=direction, load_if_exists=True,
                                       sampler=sampler(sampler_name, seed), pruner=pruner(pruner_name))
        except (sqlalchemy.exc.IntegrityError, optuna.exceptions.DuplicatedStudyError):
            time.sleep(0.2 * (attempt + 1))  # another worker created it a moment ago: load it
    raise UserError(f"cannot open study {name} in the storage")


def study_names(store) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]


def fail_stale(study) -> None:
    optuna.storages.fail_stale_trials(study)


def trials(study) -> list:
    return study.get_trials(deepcopy=False)


def state_name(trial) -> str:
    return trial.state.name


def optimize_one(study, objective: Callable, catch: tuple[type[Exception], ...]) -> None:
    """One trial of ``objective``, with Optuna's heartbeat thread and stale-trial check around it.

    Exceptions in ``catch`` mark the trial failed and return; any other ends the trial failed and
    propagates.
    """
    study.optimize(objective, n_trials=1, catch=catch, gc_after_trial=False)


def prune_now() -> Exception:
    return optuna.TrialPruned()


def complete_trial(params: dict, distributions: dict, value: float):
    """A finished trial outside any storage (ValueError or TypeError when a value is off its distribution)."""
    return optuna.trial.create_trial(params=params, distributions=distributions, value=value)


def fanova(trials: Sequence, direction: str) -> dict[str, float] | str:
    """fANOVA importances (Optuna's evaluator, seed 0) of ``trials`` (from :func:`complete_trial`), or
    a one-line reason they cannot be computed."""
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        return "fANOVA needs scikit-learn, which is not installed (pip install scikit-learn)"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory" per dataset
    try:
        study = optuna.create_study(direction=direction)
        study.add_trials(trials)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except RuntimeError as e:  # "zero total variance in all trees": the forest saw no signal
        return f"fANOVA could not share out the variance ({e})"
    finally:
        optuna.logging.set_verbosity(verbosity)
