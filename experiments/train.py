"""``train_and_evaluate(config, workdir)``: the one entry point every experiment runs through.

An experiment module (``config.experiment`` names it: ``binary``, ``forecast``, ...) exports its
hooks as one ``Experiment``, ``EXPERIMENT``; ``train_and_evaluate`` calls them and nothing else:

* ``build(config) -> Job`` (every experiment): the data, the model, the task and the training
  settings, plus what to add to the summary once the model holds its best weights (``evaluate``)
  and what to draw (``finish``). This module does the rest, the same way for every experiment:
  the ``Trainer``, fit, evaluation, the summary and the pictures.
* ``candidates(config)`` and ``choose(summaries)`` (optional, together): a recipe that tries several
  variants and keeps one (the CSV forecaster's transform chains, classify's models). Each variant
  is a whole run of its own in ``<workdir>/candidates/<name>``, and the one ``choose`` picks, on
  validation data only, becomes the run's summary. ``candidates`` returns None where the config
  asks for one run.
* ``runs_itself(config)`` and ``run(config, workdir, *, resume, log, source)`` (optional, together):
  a recipe that trains several models and combines them (the forecasting ensemble) and writes its
  run itself, for the configs ``runs_itself`` accepts.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import ml_collections
from flax import nnx

from lstm_jax.data.dataset import Dataset
from lstm_jax.errors import ConfigError
from lstm_jax.inference.run import SeriesInputs, write_record
from lstm_jax.nn.models import ModelConfig, ModelSpec
from lstm_jax.train.config import TrainConfig
from lstm_jax.train.loop import Trainer
from lstm_jax.train.workdir import Workdir, to_jsonable

EXPERIMENTS = {"binary": "experiments.binary", "forecast": "experiments.forecast", "classify": "experiments.classify"}


@dataclasses.dataclass
class Job:
    """What an experiment hands the shared loop."""

    data: Dataset
    model: nnx.Module
    task: Any
    train: TrainConfig
    # After fit (``trainer.model`` holds the best weights): more summary entries, e.g. test metrics.
    evaluate: Callable[[Trainer], dict] | None = None
    # After the summary is written, on the primary process: pictures and other files.
    finish: Callable[[Trainer, dict], None] | None = None
    # What lstm_jax.inference.load_run needs to load the finished run: the network, and how raw
    # series became its inputs (written as inference.json when the run ends).
    spec: ModelSpec | None = None
    inputs: SeriesInputs | None = None


Config = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The hooks of one experiment (see the module docstring); each module exports one as ``EXPERIMENT``."""

    build: Callable[[Config], Job]
    # Variants of a config, each trained as a run of its own, or None for one run; and the choice among them.
    candidates: Callable[[Config], dict[str, Config] | None] | None = None
    choose: Callable[[dict[str, dict]], tuple[str, str]] | None = None
    # Whether a config is a recipe that writes its run itself, and that run (returning its summary).
    runs_itself: Callable[[Config], bool] | None = None
    run: Callable[..., dict[str, Any]] | None = None

    def __post_init__(self):
        if (self.candidates is None) != (self.choose is None):
            raise TypeError("an Experiment gives candidates and choose together, or neither")
        if (self.runs_itself is None) != (self.run is None):
            raise TypeError("an Experiment gives runs_itself and run together, or neither")


def experiment_module(config: ml_collections.ConfigDict):
    try:
        return importlib.import_module(EXPERIMENTS[config.experiment])
    except KeyError:
        raise ConfigError(f"unknown experiment {config.experiment!r}; one of {', '.join(EXPERIMENTS)}") from None


def experiment(config: ml_collections.ConfigDict) -> Experiment:
    """The ``Experiment`` that ``config.experiment`` names (its module's ``EXPERIMENT``)."""
    found = experiment_module(config).EXPERIMENT
    if not isinstance(found, Experiment):
        raise TypeError(f"{EXPERIMENTS[config.experiment]}.EXPERIMENT is not an Experiment")
    return found


def train_config(config: ml_collections.ConfigDict, **resolved) -> TrainConfig:
    """The TrainConfig of a config's top-level training fields; ``resolved`` fills automatic ones."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return TrainConfig(**{**{n: config[n] for n in names}, **resolved})


def model_config(m: ml_collections.ConfigDict, **overrides) -> ModelConfig:
    """``config.model`` -> ``ModelConfig`` (one width for every layer, or one per layer)."""
    sizes = tuple(m.hidden_size)
    filters = tuple(m.conv_filters)
    kwargs = dict(
        architecture=m.architecture, cell=m.cell, hidden_size=sizes[0] if len(sizes) == 1 else sizes,
        num_layers=m.num_layers, bidirectional=m.bidirectional, dropout=m.dropout, input_dropout=m.input_dropout,
        recurrent_dropout=m.recurrent_dropout, dropout_mode=m.dropout_mode, activation=m.activation,
        pooling=m.pooling, unroll=m.unroll, conv_filters=filters,
        # Fewer filters than kernels (--conv_filters=64,128) take the first kernels.
        conv_kernels=tuple(m.conv_kernels)[: len(filters)] if len(m.conv_kernels) > len(filters) else tuple(m.conv_kernels),
        conv_norm=m.conv_norm)
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False,
                       log: Callable[[str], None] = print, source: dict | None = None,
                       on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Trains and evaluates what ``config`` describes, writing the run into ``workdir``.

    Returns the summary (also in ``<workdir>/summary.json``). ``source`` (optional) records where
    the config came from (file, overrides) in the summary. ``on_epoch`` goes to the ``Trainer``
    (its per-epoch hook); a recipe that trains several models (candidates, an ensemble) has no one
    sequence of epochs to report and refuses it.
    """
    exp = experiment(config)
    refuse_hook = ConfigError(f"this {config.experiment} config trains several models (candidates or an ensemble); "
                              "a per-epoch hook (a study's pruner) needs a config that trains one")
    if exp.runs_itself is not None and exp.runs_itself(config):
        if on_epoch is not None:
            raise refuse_hook
        # A recipe that trains many models itself (an ensemble) writes its own run.
        return exp.run(config, workdir, resume=resume, log=log, source=source)
    candidates = exp.candidates(config) if exp.candidates is not None else None
    if candidates and on_epoch is not None:
        raise refuse_hook
    if not candidates:
        return _train_one(exp, config, workdir, resume=resume, log=log, source=source, on_epoch=on_epoch)
    files = Workdir(workdir, resume=resume)  # refuses a used workdir before any candidate starts
    record = to_jsonable(config)
    if resume:
        files.check_config(record)
    files.write_config(record)
    summaries, folders = {}, {}
    for name, cand in candidates.items():
        folders[name] = os.path.join(files.path, "candidates", re.sub(r"[^\w.-]+", "-", name))
        summaries[name] = _train_one(exp, cand, folders[name], resume=resume, log=log, source=source)
    chosen, by = exp.choose(summaries)
    summary = dict(summaries[chosen])
    summary.update({
        "chosen": chosen, "chosen_by": by,
        "candidates": {n: {by: s.get(by), "best_epoch": s["best_epoch"], "workdir": folders[n]}
                       for n, s in summaries.items()},
        "wall_seconds": sum(s["wall_seconds"] for s in summaries.values()),
    })
    files.write_summary(summary)
    if files.primary:  # the chosen candidate's pictures at the top of the run
        for f in os.listdir(folders[chosen]):
            if f.endswith(".png"):
                shutil.copy(os.path.join(folders[chosen], f), files.file(f))
    return summary


def _train_one(exp: Experiment, config, workdir, *, resume, log, source, on_epoch=None) -> dict[str, Any]:
    job: Job = exp.build(config)
    record = to_jsonable(config)
    trainer = Trainer(job.model, job.task, job.data, job.train, workdir, resume=resume, record=record, log=log,
                      on_epoch=on_epoch)
    try:
        summary = trainer.fit()
        if job.evaluate is not None:
            summary.update(job.evaluate(trainer))
        if source is not None:
            summary["config_source"] = source
        trainer.write_summary(summary)
        if job.spec is not None and trainer.is_primary:
            write_record(trainer.workdir, job.spec, job.inputs, eval_batch_size=job.train.eval_batch_size,
                         experiment=config.experiment)
        if job.finish is not None and trainer.is_primary:
            job.finish(trainer, summary)
    finally:
        trainer.close()
    return summary
