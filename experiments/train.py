"""``train_and_evaluate(config, workdir)``: the one entry point every experiment runs through.

An experiment module (``config.experiment`` names it: ``binary``, ``forecast``, ...) turns a config
into a ``Job``: the data, the model, the task and the training settings, plus what to add to the
summary once the model holds its best weights (``evaluate``) and what to draw (``finish``). This
module does the rest, the same way for every experiment: the ``Trainer``, fit, evaluation, the
summary and the pictures.

A recipe that trains several models and combines them (the forecasting ensemble) gives
``runs_itself(config)`` and ``run(config, workdir, ...)``, and writes its run itself.
A recipe that tries several variants and keeps one (the CSV forecaster's transform chains) gives
``candidates(config)``; each variant is a whole run of its own in ``<workdir>/candidates/<name>``,
and the one its ``choose`` picks, on validation data only, becomes the run's summary.
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
from lstm_jax.nn.models import ModelConfig
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


def experiment_module(config: ml_collections.ConfigDict):
    try:
        return importlib.import_module(EXPERIMENTS[config.experiment])
    except KeyError:
        raise ConfigError(f"unknown experiment {config.experiment!r}; one of {', '.join(EXPERIMENTS)}") from None


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
                       log: Callable[[str], None] = print, source: dict | None = None) -> dict[str, Any]:
    """Trains and evaluates what ``config`` describes, writing the run into ``workdir``.

    Returns the summary (also in ``<workdir>/summary.json``). ``source`` (optional) records where
    the config came from (file, overrides) in the summary.
    """
    module = experiment_module(config)
    if hasattr(module, "runs_itself") and module.runs_itself(config):
        # A recipe that trains many models itself (an ensemble) writes its own run.
        return module.run(config, workdir, resume=resume, log=log, source=source)
    candidates = module.candidates(config) if hasattr(module, "candidates") else None
    if not candidates:
        return _train_one(module, config, workdir, resume=resume, log=log, source=source)
    files = Workdir(workdir, resume=resume)  # refuses a used workdir before any candidate starts
    record = to_jsonable(config)
    if resume:
        files.check_config(record)
    files.write_config(record)
    summaries, folders = {}, {}
    for name, cand in candidates.items():
        folders[name] = os.path.join(files.path, "candidates", re.sub(r"[^\w.-]+", "-", name))
        summaries[name] = _train_one(module, cand, folders[name], resume=resume, log=log, source=source)
    chosen, by = module.choose(summaries)
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


def _train_one(module, config, workdir, *, resume, log, source) -> dict[str, Any]:
    job: Job = module.build(config)
    record = to_jsonable(config)
    trainer = Trainer(job.model, job.task, job.data, job.train, workdir, resume=resume, record=record, log=log)
    try:
        summary = trainer.fit()
        if job.evaluate is not None:
            summary.update(job.evaluate(trainer))
        if source is not None:
            summary["config_source"] = source
        trainer.write_summary(summary)
        if job.finish is not None and trainer.is_primary:
            job.finish(trainer, summary)
    finally:
        trainer.close()
    return summary
