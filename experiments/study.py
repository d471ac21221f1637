"""Ablation studies on Optuna: each variant tuned on its own, then compared (Greff et al. 2017).

    python -m experiments.study --config=experiments/configs/studies/quick.py --workdir=runs/quick
    python -m experiments.study --config=experiments/configs/studies/greff.py --workdir=runs/greff --workers=2
    python -m experiments.study --config=... --workdir=runs/greff --storage=postgresql://user@host/db
    python -m experiments.study --config=... --workdir=runs/greff --report

A study is a config file (experiments/configs/studies/): ``base`` (any experiment's config),
``datasets``, ``variants`` (cells, or names in ``variant_fields``), ``baseline``, ``trials_per_variant``, ``space``
(lstm_jax.study.space), ``sampler``, ``pruner``, ``seeds``, ``metric``. Each trial is an ordinary run
in ``<workdir>/trials/<dataset>/<variant>/<number>/``. The storage is ``<workdir>/study.db``
(SQLite) unless ``--storage`` (or $LSTM_JAX_STUDY_STORAGE, which keeps a password out of the
command line) names a database that workers on other machines share: the same command there adds
workers to the same study. At the end (and with ``--report``): ``report.md`` and its pictures, and
``best/<dataset>-<variant>.py``, each variant's best trial as a config file that trains it again.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import time

import ml_collections
from absl import flags
from ml_collections import config_flags

from experiments import common
from experiments.train import EXPERIMENTS, train_and_evaluate
from lstm_jax.errors import ConfigError, UserError
from lstm_jax.nn.cells import CELLS
from lstm_jax.study import configfile, engine, optuna_api, report
from lstm_jax.study.space import parse_space
from lstm_jax.train.workdir import atomic_write, check_path, to_jsonable

FLAGS = flags.FLAGS
STORAGE_ENV = "LSTM_JAX_STUDY_STORAGE"
RECORD = "study.json"
# Threads per worker when --workers is not given: the layout measured faster on 2 cores
# (docs/results.md, "Study workers").
THREADS_PER_WORKER = 1


# -- the study config -> the engine's plan and each trial's config ----------------------------------

def _fields(text: str, what: str) -> dict:
    """'model.hidden_size=(64,); data.znorm=True' -> {field: value} (values read as Python literals)."""
    out = {}
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"{what}: {part!r} is not FIELD=VALUE")
        field, raw = (s.strip() for s in part.split("=", 1))
        try:
            out[field] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[field] = raw
    return out


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in str(text).split(",") if n.strip())


class Study:
    """The study config, checked, with the trial configs it makes."""

    def __init__(self, config: ml_collections.ConfigDict, name: str):
        self.config = config
        base = config.base
        if "experiment" not in base or base.experiment not in EXPERIMENTS:
            raise ConfigError(f"base must be an experiment config ({', '.join(EXPERIMENTS)}); "
                              f"see experiments/configs/studies/quick.py")
        self.base = base
        self.datasets = _names(config.datasets) or (base.dataset,)
        self.variants = _names(config.variants)
        self.variant_fields = {k: _fields(v, f"variant_fields.{k}") for k, v in config.variant_fields.items()}
        self.dataset_fields = {k: _fields(v, f"dataset_fields.{k}") for k, v in config.dataset_fields.items()}
        for v in self.variants:
            if v not in CELLS and v not in self.variant_fields:
                raise ConfigError(f"variant {v!r} is not a cell ({', '.join(sorted(CELLS))}) "
                                  "nor a name in variant_fields")
        self.baseline = config.baseline
        if self.baseline and self.baseline not in self.variants:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the variants ({', '.join(self.variants)})")
        for key in self.dataset_fields:
            if key not in {report.safe_name(d) for d in self.datasets}:
                raise ConfigError(f"dataset_fields.{key}: no dataset of the study is named so "
                                  f"(datasets: {', '.join(report.safe_name(d) for d in self.datasets)})")
        known = {n for n, s in common.SHORTCUTS.items() if _has(base, s.field)}
        for n in config.space:
            if n not in known:
                raise ConfigError(f"space.{n}: not a field this {base.experiment} config can search; "
                                  f"one of {', '.join(sorted(known))}")
        space = parse_space(dict(config.space))
        metric = config.metric or base.select
        self.plan = engine.Plan(
            name=config.name or name, datasets=self.datasets, variants=self.variants,
            trials_per_variant=config.trials_per_variant, space=space, sampler=config.sampler,
            pruner=config.pruner, seed=base.seed, seeds=config.seeds, metric=metric,
            heartbeat_seconds=config.heartbeat_seconds, record=to_jsonable(config))
        for d in self.datasets:  # every field a trial sets must exist: refused now, not in trial 40
            for v in self.variants:
                self.trial_config(d, v, {}, base.seed)

    def trial_config(self, dataset: str, variant: str, params: dict, seed: int) -> ml_collections.ConfigDict:
        c = copy.deepcopy(self.base)
        c.dataset = dataset
        fields = dict(self.dataset_fields.get(report.safe_name(dataset), {}))
        fields.update(self.variant_fields.get(variant, {"model.cell": variant}))
        for field, value in fields.items():
            common.set_field(c, field, tuple(value) if isinstance(value, list) else value)
        for name, value in params.items():
            common.set_field(c, common.SHORTCUTS[name].field, common.shortcut_value(name, value))
        c.seed = seed
        return c


def _has(config: ml_collections.ConfigDict, path: str) -> bool:
    try:
        common.get_field(config, path)
        return True
    except (KeyError, AttributeError):
        return False


# -- the study's folder ---------------------------------------------------------------------------

def open_folder(workdir: str, study: Study, *, create: bool) -> None:
    """Refuses a folder that is a file, holds a run, or holds another study; records this one."""
    check_path(workdir)
    record_path = os.path.join(workdir, RECORD)
    if os.path.exists(record_path):
        with open(record_path) as f:
            recorded = json.load(f)
        if json.dumps(recorded, sort_keys=True) != json.dumps(study.plan.record, sort_keys=True):
            raise ConfigError(f"{workdir} holds another study (its {RECORD} differs from this config); "
                              "choose another --workdir")
        return
    if any(os.path.exists(os.path.join(workdir, f)) for f in ("summary.json", "metrics.jsonl", "trials")):
        raise ConfigError(f"{workdir} holds a run that is not this study; choose another --workdir")
    if not create:
        raise UserError(f"{workdir} holds no study ({RECORD} is missing)")
    os.makedirs(workdir, exist_ok=True)
    atomic_write(record_path, json.dumps(study.plan.record, indent=2) + "\n")


def storage_url_default(workdir: str) -> str:
    return f"sqlite:///{os.path.join(workdir, 'study.db')}"


def storage_url(workdir: str) -> str:
    return FLAGS.storage or os.environ.get(STORAGE_ENV) or storage_url_default(workdir)


# -- running --------------------------------------------------------------------------------------

def run_trial(study: Study, tr: engine.TrialRun) -> dict:
    config = study.trial_config(tr.dataset, tr.variant, tr.params, tr.seed)
    return train_and_evaluate(config, tr.workdir, log=lambda _: None, on_epoch=tr.on_epoch)


def worker_layout(workers: int) -> list[list[int] | None]:
    """Each worker's CPU cores (None: not pinned, when there are more workers than cores)."""
    cores = sorted(os.sched_getaffinity(0))
    per = len(cores) // workers
    if per < 1:
        return [None] * workers
    return [cores[k * per:(k + 1) * per] for k in range(workers)]


def start_workers(workdir: str, url: str, workers: int) -> list[subprocess.Popen]:
    """``workers`` processes of this command in the worker role, each pinned to its own cores."""
    skip = ("--workers", "--report", "--workdir", "--storage", "--role", "--worker_index")
    argv = [a for a in sys.argv[1:] if not a.startswith(skip)]
    procs = []
    for k, cores in enumerate(worker_layout(workers)):
        # The URL travels in the environment, not the command line that `ps` shows.
        env = {**os.environ, STORAGE_ENV: url}
        if cores:
            env["LSTM_JAX_NATIVE_THREADS"] = str(len(cores))
        cmd = [sys.executable, "-m", "experiments.study", *argv, f"--workdir={workdir}", "--role=worker",
               f"--worker_index={k}"]
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=(lambda c=cores: os.sched_setaffinity(0, c))
                                      if cores else None))
    return procs


def work_here(study: Study, workdir: str, url: str, worker: int) -> int:
    store = optuna_api.storage(url, heartbeat_seconds=study.plan.heartbeat_seconds)
    return engine.work(study.plan, store, lambda tr: run_trial(study, tr), workdir, worker=worker,
                       log=lambda line: print(line, flush=True))


def rerun_command(experiment: str, path: str, cores: int | None) -> str:
    """The command that trains a trial again bit for bit: on as many cores as the trial had."""
    command = f"python -m experiments.{experiment} --config={path}"
    if cores and cores < len(os.sched_getaffinity(0)):
        command = f"taskset -c 0-{cores - 1} {command}" if cores > 1 else f"taskset -c 0 {command}"
    return command


def write_report(study: Study, workdir: str, url: str, command: str) -> str:
    store = optuna_api.storage(url, heartbeat_seconds=study.plan.heartbeat_seconds)
    plan = study.plan
    held = set(optuna_api.study_names(store))
    if not any(plan.study_name(d, v) in held for d, v in plan.pairs):
        raise UserError(f"{optuna_api.redact(url)} holds no trial of study {plan.name!r}; run the study first")
    studies = engine.open_studies(plan, store)
    records = engine.records(plan, studies)
    if not any(r.state == "COMPLETE" for r in records):
        raise UserError(f"study {plan.name!r} has no complete trial yet; nothing to report")
    best_files = {}
    os.makedirs(os.path.join(workdir, "best"), exist_ok=True)
    for (d, v), t in engine.best_trials(plan, studies).items():
        rel = os.path.join("best", f"{report.safe_name(d)}-{report.safe_name(v)}.py")
        config = study.trial_config(d, v, dict(t.params), t.user_attrs["seed"])
        configfile.write(os.path.join(workdir, rel), config, (
            f"Study {plan.name!r}: the best trial of {v} on {d} (trial {t.number}), {plan.metric} {t.value:.6g}.\n\n"
            f"    {rerun_command(config.experiment, os.path.join(workdir, rel), t.user_attrs.get('cores'))}\n\n"
            f"trains it again (its own run: {t.user_attrs.get('workdir')}) to the same {plan.metric} on this machine,\n"
            f"on as many cores as its worker had ({t.user_attrs.get('cores')}): XLA's sums follow its thread count."))
        best_files[(d, v)] = rel
    info = report.StudyInfo(title=plan.name, metric=plan.metric, test_metric=plan.test_metric,
                            direction=plan.direction, baseline=study.baseline, space=plan.space, command=command,
                            best_files=best_files)
    return report.write_report(workdir, records, info)


def main(argv):
    optuna_api.require()
    config = FLAGS.config
    name = os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS["config"])))[0]
    study = Study(config, name)
    workdir = os.path.abspath(FLAGS.workdir or common.default_workdir(f"study-{study.plan.name}"))
    url = storage_url(workdir)
    common.enable_compilation_cache(os.path.join(workdir, "compilation_cache"))
    command = "python -m experiments.study " + " ".join(a for a in sys.argv[1:] if not a.startswith("--storage"))
    if FLAGS.role == "worker":
        open_folder(workdir, study, create=False)
        work_here(study, workdir, url, FLAGS.worker_index)
        return
    # A storage of its own is opened before the folder is made, so a bad URL leaves nothing behind,
    # and before any worker starts, so it is one line here rather than one per worker.
    store = None
    if not FLAGS.report and url != storage_url_default(workdir):
        store = optuna_api.storage(url, heartbeat_seconds=study.plan.heartbeat_seconds)
    open_folder(workdir, study, create=not FLAGS.report)
    if not FLAGS.report:
        print(f"study {study.plan.name}: {len(study.plan.pairs)} (dataset, variant) pairs x "
              f"{study.plan.trials_per_variant} trials; storage {optuna_api.redact(url)}; workdir {workdir}", flush=True)
        store = store or optuna_api.storage(url, heartbeat_seconds=study.plan.heartbeat_seconds)
        engine.open_studies(study.plan, store)
        workers = FLAGS.workers or max(1, len(os.sched_getaffinity(0)) // THREADS_PER_WORKER)
        t0 = time.perf_counter()
        if engine.complete(study.plan, engine.open_studies(study.plan, store)):
            print("the study is already complete")
        elif workers == 1:
            work_here(study, workdir, url, 0)
        else:
            # Workers inherit this process's cache folder through the environment.
            os.environ.setdefault(common.COMPILATION_CACHE, os.path.join(workdir, "compilation_cache"))
            procs = start_workers(workdir, url, workers)
            codes = [p.wait() for p in procs]
            if any(codes):
                raise UserError(f"{sum(1 for c in codes if c)} of {workers} workers stopped with an error (above)")
        if not engine.complete(study.plan, engine.open_studies(study.plan, store)):
            print("the study is not complete: run the same command again to continue it")
            return
        print(f"study complete in {time.perf_counter() - t0:.0f}s")
    print(f"report: {write_report(study, workdir, url, command)}")


def define_flags() -> None:
    config_flags.DEFINE_config_file(
        "config", os.path.join(common.CONFIG_DIR, "studies", "quick.py"),
        "A study config (experiments/configs/studies/*.py); override fields with --config.FIELD=VALUE.",
        lock_config=True)
    flags.DEFINE_string("workdir", None, "The study's folder (default: a fresh runs/study-<name>-<time>).")
    flags.DEFINE_string("storage", None, f"An Optuna storage URL shared by every worker, e.g. "
                        f"postgresql://user@host/db (default: <workdir>/study.db; env {STORAGE_ENV}).")
    flags.DEFINE_integer("workers", 0, "Worker processes on this machine (0: one per "
                         f"{THREADS_PER_WORKER} core(s), each pinned to its own).", lower_bound=0)
    flags.DEFINE_bool("report", False, "Only write report.md and the best configs from the trials so far.")
    flags.DEFINE_enum("role", "main", ["main", "worker"], "Internal: a worker started by --workers.")
    flags.DEFINE_integer("worker_index", 0, "Internal: this worker's index.")


if __name__ == "__main__":
    common.run(main, define=define_flags)
