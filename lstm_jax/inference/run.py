"""A finished run, loaded back: its model with the best weights and the preprocessing it was fitted with.

    from lstm_jax.inference import load_run
    run = load_run("runs/classify-20261207-120000")
    table = run.predict_file("BasicMotions_TEST.ts")   # labels and probabilities, in the run's labels
    labels = run.predict(x_NxTxD, lengths_N)            # raw series: the run's normalisation is applied

A run that can be loaded holds ``inference.json`` beside its ``summary.json``: what rebuilds the
network (``ModelSpec``) and what turned raw series into its inputs on the training data
(``SeriesInputs``: the label map, the normalisation and its training statistics). Experiments write
it when a run ends (``write_record``); a run that chose among candidates loads the chosen one.
Predictions use the training loop's own jitted ``predict_step`` with the run's evaluation batch
size, so a reloaded run gives the training run's outputs bit for bit on the same machine.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from lstm_jax.data import archives
from lstm_jax.data.dataset import Split, batches
from lstm_jax.errors import CheckpointError, DataError
from lstm_jax.nn.models import Forecaster, ModelConfig, make_classifier
from lstm_jax.train.checkpoint import Checkpointer
from lstm_jax.train.steps import TrainState, predict_step
from lstm_jax.train.workdir import atomic_write, to_jsonable

RECORD = "inference.json"
FORMAT = 1
NORMS = ("series", "channel", "none")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a run's network: its kind, ``ModelConfig`` and constructor arguments."""

    kind: str  # 'classifier' | 'forecaster'
    config: ModelConfig
    in_features: int
    num_classes: int = 2  # classifier
    length: int | None = None  # classifier: the series length it was built for ('lstm_fcn' needs it)
    horizon: int = 1  # forecaster: outputs per call

    def build(self, seed: int = 0) -> nnx.Module:
        """The network with freshly drawn weights (``load_run`` then puts the run's in)."""
        rngs = nnx.Rngs(seed)
        if self.kind == "classifier":
            return make_classifier(self.in_features, self.config, rngs, length=self.length,
                                   num_classes=self.num_classes)
        if self.kind == "forecaster":
            return Forecaster(self.in_features, self.config, horizon=self.horizon, rngs=rngs)
        raise CheckpointError(f"unknown model kind {self.kind!r} in {RECORD}")

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**{**d, "config": ModelConfig(**d["config"])})


@dataclasses.dataclass(frozen=True)
class SeriesInputs:
    """How raw series became a classifier's inputs, fitted on its training split.

    ``labels`` maps each original label (a string) to its class index; ``norm`` is 'series'
    (each series z-normalised on its own), 'channel' (each channel scaled by the training split's
    ``mean`` and ``std``) or 'none'; ``length`` is the training series' length; values missing
    inside a series are handled as ``missing`` says.
    """

    features: int
    length: int
    labels: dict[str, int]
    norm: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    missing: str = "interpolate"

    @classmethod
    def from_info(cls, info: dict[str, Any], *, features: int, length: int, missing: str) -> SeriesInputs:
        """From a loaded ``Dataset.info`` (``lstm_jax.data.archives``): the label map, and the
        normalisation it records ('norm', or the older 'znorm' flag, and 'channel_standardisation')."""
        norm = info.get("norm") or ("series" if info.get("znorm") else "none")
        stats = info.get("channel_standardisation") or {}
        return cls(features=features, length=length, labels=dict(info.get("labels") or {"0": 0, "1": 1}),
                   norm=norm, mean=tuple(stats["mean"]) if stats else None,
                   std=tuple(stats["std"]) if stats else None, missing=missing)

    @property
    def class_labels(self) -> list[str]:
        """The original label of each class index."""
        by_index = {v: k for k, v in self.labels.items()}
        return [by_index[k] for k in range(len(by_index))]

    def prepare(self, x_NxTxD: np.ndarray, lengths_N: np.ndarray | None = None, *, fixed_length: bool = False) -> Split:
        """Raw series (NaN or anything past each length) -> the model's inputs, as the training data got them.

        Series shorter than the training length are zero-padded to it with lengths (as the archive
        loader pads a test split); longer ones are kept whole, unless the network was built for one
        length (``fixed_length``).
        """
        x = np.asarray(x_NxTxD, np.float64)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3 or len(x) == 0 or x.shape[1] == 0:
            raise DataError(f"series to classify must be [N, T, D] with N, T >= 1, got shape {x.shape}")
        N, T, D = x.shape
        if D != self.features:
            raise DataError(f"the input has {D} channel{'s' if D != 1 else ''} per step, but the run was trained "
                            f"on {self.features}")
        lengths = np.full(N, T, np.int32) if lengths_N is None else np.asarray(lengths_N, np.int32)
        if lengths.shape != (N,) or lengths.min() < 1 or lengths.max() > T:
            raise DataError(f"lengths must be [N] with values in [1, {T}]")
        if fixed_length and lengths.max() > self.length:
            raise DataError(f"this network reads series of at most {self.length} steps (its LSTM was built for "
                            f"the training length), got {int(lengths.max())}")
        x = np.where((np.arange(T)[None, :] < lengths[:, None])[:, :, None], x, np.nan)
        if not np.isfinite(x[np.arange(T)[None, :] < lengths[:, None]]).all():
            raise DataError("the series hold missing or non-finite values inside their lengths; "
                            "read them with lstm_jax.data.archives.read_inputs, which interpolates them")
        split = archives.as_split(archives.pad_time(x, max(T, self.length)), lengths, np.zeros(N, np.float32))
        if self.norm == "series":
            split = archives.znormalise(split)
        elif self.norm == "channel":
            split = archives.scale_channels(split, np.array(self.mean), np.array(self.std))
        return split


def write_record(workdir: str, spec: ModelSpec, inputs: SeriesInputs | None, *, eval_batch_size: int,
                 experiment: str) -> None:
    """Writes ``inference.json`` into a run's folder (the training process's primary writes it)."""
    record = {"format": FORMAT, "experiment": experiment, "model": spec.to_json(),
              "inputs": None if inputs is None else to_jsonable(dataclasses.asdict(inputs)),
              "eval_batch_size": eval_batch_size}
    atomic_write(os.path.join(workdir, RECORD), json.dumps(record, indent=2) + "\n")


# -- loading ------------------------------------------------------------------------------------------

def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {what} ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: unreadable {what} (not a JSON object)")
    return value


def run_folder(workdir: str) -> tuple[str, dict[str, Any]]:
    """The folder of a finished run that holds the model to load (the chosen candidate's, for a
    run that chose among several), and its summary. One-line errors for anything else."""
    path = os.path.abspath(workdir)
    if not os.path.exists(path):
        raise CheckpointError(f"--workdir {workdir}: no such folder")
    if not os.path.isdir(path):
        raise CheckpointError(f"--workdir {workdir} is a file, not a run folder")
    summary_path = os.path.join(path, "summary.json")
    if not os.path.exists(summary_path):
        raise CheckpointError(f"{workdir} holds no finished run (no summary.json): train it to the end first")
    summary = _read_json(summary_path, "summary")
    if "chosen" in summary:  # candidates/<name>, as train_and_evaluate names their folders
        path = os.path.join(path, "candidates", re.sub(r"[^\w.-]+", "-", str(summary["chosen"])))
        summary = _read_json(os.path.join(path, "summary.json"), "summary")
    return path, summary


def restore_params(model: nnx.Module, checkpoints: str, step: int) -> None:
    """Puts the parameters of checkpoint ``step`` into ``model`` (in place), checking every shape."""
    if not os.path.isdir(checkpoints):
        raise CheckpointError(f"{checkpoints}: no checkpoints folder")
    ckpt = Checkpointer(checkpoints, metric="epoch", read_only=True)
    try:
        if step not in ckpt.all_steps():
            raise CheckpointError(f"{checkpoints}: the best checkpoint (epoch {step}) is missing")
        saved, _ = ckpt.restore_as_saved(step)
    finally:
        ckpt.close()
    params = nnx.state(model, nnx.Param)
    want = nnx.to_pure_dict(params)

    def take(w, s, where):
        if isinstance(w, dict):
            if not isinstance(s, dict):
                raise CheckpointError(f"{checkpoints}: the checkpoint's parameters differ from the run's model at {where}")
            s = {str(k): v for k, v in s.items()}
            extra = set(s) - {str(k) for k in w}
            if extra or any(str(k) not in s for k in w):
                raise CheckpointError(f"{checkpoints}: the checkpoint's parameters differ from the run's model at "
                                      f"{where or 'the top'} (a checkpoint of another model?)")
            return {k: take(v, s[str(k)], f"{where}/{k}") for k, v in w.items()}
        if np.shape(s) != np.shape(w):
            raise CheckpointError(f"{checkpoints}: parameter {where} has shape {np.shape(s)} in the checkpoint but "
                                  f"{np.shape(w)} in the run's model (a checkpoint of another model shape?)")
        return jax.numpy.asarray(s, dtype=w.dtype)

    nnx.replace_by_pure_dict(params, take(want, saved.get("params"), ""))
    nnx.update(model, params)


class _Loaded:
    """The parts every loaded run has: its folder, summary, record, network and a jitted predict."""

    def __init__(self, folder: str, summary: dict[str, Any], record: dict[str, Any]):
        self.workdir, self.summary, self.record = folder, summary, record
        self.spec = ModelSpec.from_json(record["model"])
        self.model = self.spec.build()
        restore_params(self.model, os.path.join(folder, "checkpoints"), int(summary["best_epoch"]))
        self.eval_batch_size = int(record["eval_batch_size"])
        # The training loop's own predict step over the same batches: the same outputs bit for bit.
        self._state = TrainState.create(self.model, optax.identity())
        self._predict = jax.jit(predict_step)

    def outputs(self, split: Split) -> np.ndarray:
        """The network's raw outputs for every row of ``split`` (logits, or forecasts)."""
        outs = [np.asarray(self._predict(self._state, b)) for b in batches(split, self.eval_batch_size)]
        return np.concatenate(outs)[: len(split)]


@dataclasses.dataclass
class Predictions:
    """One row per series: the predicted original label, each class's probability, and the true
    label where the input had one."""

    labels: list[str]
    probabilities: np.ndarray  # [N, K]
    classes: list[str]
    true_labels: list[str] | None = None

    @property
    def accuracy(self) -> float | None:
        if self.true_labels is None:
            return None
        return float(np.mean([p == t for p, t in zip(self.labels, self.true_labels)]))

    def to_csv(self) -> str:
        """``predicted`` and one ``p_<label>`` column per class (and ``label``, the true one, if known)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["row", "predicted", *(f"p_{c}" for c in self.classes)]
                   + (["label"] if self.true_labels is not None else []))
        for i, label in enumerate(self.labels):
            w.writerow([i, label, *(f"{p:.9g}" for p in self.probabilities[i])]
                       + ([self.true_labels[i]] if self.true_labels is not None else []))
        return buf.getvalue()


class ClassifierRun(_Loaded):
    """A loaded classification run (``experiments.classify`` or ``experiments.binary``)."""

    def __init__(self, folder: str, summary: dict[str, Any], record: dict[str, Any]):
        super().__init__(folder, summary, record)
        self.inputs = SeriesInputs(**{**record["inputs"],
                                      "mean": None if record["inputs"]["mean"] is None else tuple(record["inputs"]["mean"]),
                                      "std": None if record["inputs"]["std"] is None else tuple(record["inputs"]["std"])})
        self.classes = self.inputs.class_labels

    def prepare(self, x_NxTxD: np.ndarray, lengths_N: np.ndarray | None = None) -> Split:
        return self.inputs.prepare(x_NxTxD, lengths_N, fixed_length=self.spec.config.architecture == "lstm_fcn")

    def predict_proba(self, x_NxTxD: np.ndarray, lengths_N: np.ndarray | None = None) -> np.ndarray:
        """Raw series [N, T, D] (NaN past a length is fine) -> class probabilities [N, K]."""
        logits = self.outputs(self.prepare(x_NxTxD, lengths_N))
        if self.spec.num_classes == 2:
            p1 = np.asarray(jax.nn.sigmoid(logits), np.float64)
            return np.stack([1.0 - p1, p1], axis=1)
        return np.asarray(jax.nn.softmax(logits.astype(np.float64), axis=-1))

    def predict(self, x_NxTxD: np.ndarray, lengths_N: np.ndarray | None = None) -> list[str]:
        """Raw series -> the predicted original label of each."""
        return self._labels(self.predict_proba(x_NxTxD, lengths_N))

    def _labels(self, proba: np.ndarray) -> list[str]:
        # Two classes: class 1 when its probability is above one half, as the binary accuracy counts.
        idx = (proba[:, 1] > 0.5).astype(int) if self.spec.num_classes == 2 else proba.argmax(axis=1)
        return [self.classes[k] for k in idx]

    def predict_file(self, path: str) -> Predictions:
        """Series from a ``.ts``, ``.tsv`` or ``.npz`` file (labels optional) -> ``Predictions``."""
        x, lengths, labels, _ = archives.read_inputs(path, missing=self.inputs.missing)
        true = None
        if labels is not None:
            true = [str(v) for v in labels]
            unknown = sorted(set(true) - set(self.inputs.labels))
            if unknown:
                raise DataError(f"{path}: label{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])} never "
                                f"occurred in the run's training data (its classes: {', '.join(self.classes)})")
        proba = self.predict_proba(x, lengths)
        return Predictions(self._labels(proba), proba, self.classes, true)


def load_run(workdir: str) -> ClassifierRun:
    """The finished run in ``workdir`` with its best weights and preprocessing (see the module docstring)."""
    folder, summary = run_folder(workdir)
    record_path = os.path.join(folder, RECORD)
    if not os.path.exists(record_path):
        raise CheckpointError(f"{workdir}: no {RECORD}, so its preprocessing is unknown; runs written by "
                              f"experiments.classify, binary and forecast since predict exists have one")
    record = _read_json(record_path, "inference record")
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{record_path}: record format {record.get('format')!r}, this lstm_jax reads {FORMAT}")
    if record["model"]["kind"] == "classifier":
        return ClassifierRun(folder, summary, record)
    raise CheckpointError(f"{record_path}: runs of kind {record['model']['kind']!r} cannot be loaded yet")
