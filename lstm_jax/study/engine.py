"""A study's engine: datasets x variants, each an Optuna study, filled by any number of workers.

One Optuna study per (dataset, variant), named ``<name>/<dataset>/<variant>`` in the storage, so
that each variant's sampler (random search, TPE) sees only its own trials. A worker repeatedly
takes the pair with the fewest finished-or-running trials and runs one trial of it through
``optuna_api.optimize_one`` (heartbeat included); it ends when every pair has its trials. Any
number of workers, in any number of processes on any number of machines, can share one storage:

* a worker killed mid-trial leaves a trial that stops beating; the next worker to look fails it
  and queues it again with the same hyperparameters and seed (Optuna's heartbeat);
* stopping every worker and starting again continues where the study stopped;
* a trial that diverges (non-finite loss) is recorded failed with the reason, and another runs.

What a trial trains is the caller's: ``run(TrialRun) -> summary`` (``experiments.study`` trains an
ordinary run with ``train_and_evaluate``). The engine knows no config fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from lstm_jax.errors import ConfigError, DataError, NonFiniteError
from lstm_jax.study import optuna_api
from lstm_jax.study.report import TrialRecord, safe_name
from lstm_jax.train.tasks import selection_mode

SURPLUS = "surplus"  # the note of a trial that lost the race for a pair's last place


class Surplus(Exception):
    """Another worker started the pair's last trial first; this one ends failed, noted, uncounted."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the study asks for; equal in every worker (the storage keeps it and refuses another)."""

    name: str
    datasets: tuple[str, ...]
    variants: tuple[str, ...]
    trials_per_variant: int  # finished (complete or pruned) trials per (dataset, variant)
    space: dict[str, Any]  # name -> Optuna distribution
    sampler: str = "random"
    pruner: str = "none"
    seed: int = 0
    seeds: int = 1  # training runs per trial (seeds seed, seed + 1, ...); the objective is their mean
    metric: str = "val_accuracy"
    heartbeat_seconds: int = 10
    record: dict = dataclasses.field(default_factory=dict)  # the study config as JSON, kept in the storage

    def __post_init__(self):
        if not self.datasets or not self.variants:
            raise ConfigError("a study needs at least one dataset and one variant")
        for what, names in (("dataset", self.datasets), ("variant", self.variants)):
            if len(set(names)) != len(names):
                raise ConfigError(f"a {what} is named twice: {', '.join(names)}")
        if self.trials_per_variant < 1 or self.seeds < 1 or self.heartbeat_seconds < 1:
            raise ConfigError("trials_per_variant, seeds and heartbeat_seconds must be >= 1")
        if not self.metric.startswith("val_"):
            raise ConfigError(f"metric must be a validation metric (val_...), got {self.metric!r}")
        if self.pruner != "none" and self.seeds > 1:
            raise ConfigError("a pruner watches one run per trial; use seeds=1 with it")
        optuna_api.sampler(self.sampler, 0)
        optuna_api.pruner(self.pruner)

    @property
    def direction(self) -> str:
        return "maximize" if selection_mode(self.metric) == "max" else "minimize"

    @property
    def test_metric(self) -> str:
        return "test_" + self.metric[len("val_"):]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(d, v) for d in self.datasets for v in self.variants]

    def study_name(self, dataset: str, variant: str) -> str:
        return f"{self.name}/{dataset}/{variant}"

    def trial_folder(self, root: str, dataset: str, variant: str, number: int) -> str:
        return os.path.join(root, "trials", safe_name(dataset), safe_name(variant), str(number))


@dataclasses.dataclass(frozen=True)
class TrialRun:
    """One training run of a trial, for the caller's ``run``."""

    dataset: str
    variant: str
    params: dict[str, Any]  # the sampled hyperparameters
    seed: int
    workdir: str
    on_epoch: Callable[[dict], None] | None  # the pruner's hook (None: no pruning)


# -- opening ----------------------------------------------------------------------------------------

def open_studies(plan: Plan, store, *, worker: int = 0) -> dict[tuple[str, str], Any]:
    """Each pair's Optuna study, created on first use; refuses a storage that holds another study of this name."""
    out = {}
    host = zlib.crc32(socket.gethostname().encode())
    for k, (dataset, variant) in enumerate(plan.pairs):
        # Each worker samples from its own stream: two workers with one seed would propose the same points.
        seed = int(np.random.SeedSequence([plan.seed, k, worker, host]).generate_state(1)[0] % (2**31))
        study = optuna_api.open_study(store, plan.study_name(dataset, variant), direction=plan.direction,
                                      sampler_name=plan.sampler, pruner_name=plan.pruner, seed=seed)
        recorded = study.user_attrs.get("study")
        if recorded is None:
            study.set_user_attr("study", plan.record)
        elif json.dumps(recorded, sort_keys=True) != json.dumps(plan.record, sort_keys=True):
            raise ConfigError(f"the storage already holds a study {plan.name!r} with another config; "
                              "give this one another name (--config.name) or storage")
        out[(dataset, variant)] = study
    return out


# -- working ----------------------------------------------------------------------------------------

def _counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in optuna_api.trials(study):
        if t.user_attrs.get("note") != SURPLUS:
            counts[optuna_api.state_name(t)] = counts.get(optuna_api.state_name(t), 0) + 1
    return counts


def _surplus(plan: Plan, study, number: int) -> bool:
    """Whether trials finished, or running with a lower number, already fill the pair: two workers
    that counted at the same moment both started one; trial numbers are given in order, so the
    later one yields."""
    taken = 0
    for t in optuna_api.trials(study):
        state = optuna_api.state_name(t)
        if t.user_attrs.get("note") == SURPLUS or t.number == number:
            continue
        taken += state in optuna_api.FINISHED or (state == "RUNNING" and t.number < number)
    return taken >= plan.trials_per_variant


def progress(plan: Plan, studies) -> dict[tuple[str, str], dict[str, int]]:
    """Per pair: trials by state (stale ones failed first)."""
    out = {}
    for pair, study in studies.items():
        optuna_api.fail_stale(study)
        out[pair] = _counts(study)
    return out


def finished(counts: dict[str, int]) -> int:
    return sum(counts.get(s, 0) for s in optuna_api.FINISHED)


def complete(plan: Plan, studies) -> bool:
    return all(finished(c) >= plan.trials_per_variant for c in progress(plan, studies).values())


def work(plan: Plan, store, run: Callable[[TrialRun], dict], root: str, *, worker: int = 0,
         log: Callable[[str], None] = print, max_trials: int | None = None) -> int:
    """Runs trials until every pair has its finished trials (or ``max_trials`` ran here). Returns trials run."""
    studies = open_studies(plan, store, worker=worker)
    order = {pair: k for k, pair in enumerate(plan.pairs)}
    ran = 0
    while max_trials is None or ran < max_trials:
        counts = progress(plan, studies)
        for pair, c in counts.items():
            if c.get("FAIL", 0) > 2 * plan.trials_per_variant + 10:
                raise DataError(f"{pair[0]}/{pair[1]}: {c['FAIL']} trials failed; see the trial folders' notes "
                                "(python -m experiments.study --report)")
        todo = [p for p, c in counts.items() if finished(c) < plan.trials_per_variant]
        if not todo:
            break
        # Queued retries first; then pairs that running trials will not fill by themselves.
        free = [p for p in todo if counts[p].get("WAITING", 0)
                or finished(counts[p]) + counts[p].get("RUNNING", 0) < plan.trials_per_variant]
        if not free:
            time.sleep(plan.heartbeat_seconds)  # others are finishing the last trials; watch for a stale one
            continue
        pair = min(free, key=lambda p: (finished(counts[p]) + counts[p].get("RUNNING", 0), order[p]))
        optuna_api.optimize_one(studies[pair], _objective(plan, pair, run, root, worker, log, studies[pair]),
                                catch=(NonFiniteError, Surplus))
        ran += 1
    return ran


def _objective(plan: Plan, pair: tuple[str, str], run: Callable[[TrialRun], dict], root: str, worker: int,
               log: Callable[[str], None], study):
    dataset, variant = pair

    def objective(trial) -> float:
        t0 = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        # The cores it ran on: XLA's sums depend on its thread count, so a bit-exact rerun needs as many.
        trial.set_user_attr("cores", len(os.sched_getaffinity(0)))
        if _surplus(plan, study, trial.number):
            trial.set_user_attr("note", SURPLUS)
            raise Surplus
        # Kept in the trial before training: a retried trial (its worker died) trains the same seed.
        seed = trial.user_attrs.get("seed")
        if seed is None:
            seed = plan.seed + plan.seeds * trial.number
            trial.set_user_attr("seed", seed)
        params = {name: optuna_api.suggest(trial, name, d) for name, d in plan.space.items()}
        folder = plan.trial_folder(root, dataset, variant, trial.number)
        trial.set_user_attr("workdir", os.path.relpath(folder, root))

        def on_epoch(record: dict) -> None:
            trial.report(float(record[plan.metric]), int(record["epoch"]))
            if trial.should_prune():
                trial.set_user_attr("seconds", time.perf_counter() - t0)
                log(f"[w{worker}] {dataset}/{variant} #{trial.number}: pruned at epoch {record['epoch']}")
                raise optuna_api.prune_now()

        summaries = []
        try:
            for k in range(plan.seeds):
                wd = folder if plan.seeds == 1 else os.path.join(folder, f"seed{k}")
                summaries.append(run(TrialRun(dataset, variant, params, seed + k, wd,
                                              on_epoch if plan.pruner != "none" else None)))
        except NonFiniteError as e:
            trial.set_user_attr("note", f"diverged: {e}")
            log(f"[w{worker}] {dataset}/{variant} #{trial.number}: failed, {e}")
            raise
        values = [float(s[plan.metric]) for s in summaries]
        tests = [s.get(plan.test_metric) for s in summaries]
        seconds = time.perf_counter() - t0
        trial.set_user_attr("seconds", seconds)
        overhead = overhead_seconds(folder if plan.seeds == 1 else os.path.join(folder, "seed0"),
                                    seconds / plan.seeds)
        if overhead is not None:
            trial.set_user_attr("overhead_seconds", overhead)
        if all(t is not None for t in tests):
            trial.set_user_attr("test", float(np.mean(tests)))
        value = float(np.mean(values))
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()) or "fixed"
        log(f"[w{worker}] {dataset}/{variant} #{trial.number}: {plan.metric} {value:.4f}  "
            f"({shown}; seed {seed}; {seconds:.1f}s)")
        return value

    return objective


def overhead_seconds(run_folder: str, run_seconds: float) -> float | None:
    """A run's time beyond its epochs at their steady pace: loading, building, compiling, the final
    evaluation. The steady pace is the median epoch after the first (which carries the compilation)."""
    path = os.path.join(run_folder, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        epochs = [json.loads(line)["seconds"] for line in f if line.strip()]
    if len(epochs) < 2:
        return None
    return run_seconds - len(epochs) * float(np.median(epochs[1:]))


# -- reading ----------------------------------------------------------------------------------------

def records(plan: Plan, studies) -> list[TrialRecord]:
    """Every trial of the study, for the report."""
    out = []
    for (dataset, variant), study in studies.items():
        for t in optuna_api.trials(study):
            if t.user_attrs.get("note") == SURPLUS:
                continue
            state = optuna_api.state_name(t)
            value = t.value if state == "COMPLETE" else None
            out.append(TrialRecord(dataset=dataset, variant=variant, number=t.number, state=state,
                                   params=dict(t.params), value=value, test=t.user_attrs.get("test"),
                                   seconds=t.user_attrs.get("seconds"), note=t.user_attrs.get("note", "")))
    return out


def best_trials(plan: Plan, studies) -> dict[tuple[str, str], Any]:
    """Per pair, the complete trial best on validation (absent for a pair with none)."""
    out = {}
    for pair, study in studies.items():
        done = [t for t in optuna_api.trials(study) if optuna_api.state_name(t) == "COMPLETE"]
        if done:  # ties go to the lower trial number, as in the report's ranking
            sign = -1.0 if plan.direction == "maximize" else 1.0
            out[pair] = min(done, key=lambda t: (sign * t.value, t.number))
    return out
