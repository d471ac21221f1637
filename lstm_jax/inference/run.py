"""A finished run, loaded back: its networks with the best weights and the preprocessing they were fitted with.

    from lstm_jax.inference import load_run
    run = load_run("runs/classify-20261207-120000")
    table = run.predict_file("BasicMotions_TEST.ts")   # labels and probabilities, in the run's labels
    labels = run.predict(x_NxTxD, lengths_N)            # raw series: the run's normalisation is applied

    run = load_run("runs/forecast-20261207-130000")     # the ensemble recipe
    out = run.forecast_file("series.csv")               # the next horizon after each series' end

A run that can be loaded holds ``inference.json`` beside its ``summary.json``. For a classifier
(``ClassifierRun``): what rebuilds the network (``nn.models.ModelSpec``) and what turned raw series
into its inputs on the training data (``SeriesInputs``: the label map, the normalisation and its
training statistics). For the forecasting ensemble (``ForecastRun``): every member's network and
checkpoint, and each series' transform chain fitted on its training part. Runs write it when they
end; a run that chose among candidates loads the chosen one. Predictions use the training loop's
own jitted ``predict_step`` over the run's evaluation batches (``Predictor``), so a reloaded run
gives the training run's outputs bit for bit on the same machine.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from lstm_jax import plots
from lstm_jax.data import archives
from lstm_jax.data import panel as panel_lib
from lstm_jax.data.dataset import Split, batches
from lstm_jax.errors import CheckpointError, ConfigError, DataError
from lstm_jax.forecast.problem import read_series
from lstm_jax.forecast.recipe import forecast_blocks, member_median, to_original
from lstm_jax.nn.models import ModelSpec
from lstm_jax.train.checkpoint import Checkpointer
from lstm_jax.train.steps import TrainState, predict_step
from lstm_jax.train.workdir import INFERENCE_FORMAT as FORMAT
from lstm_jax.train.workdir import INFERENCE_RECORD as RECORD
from lstm_jax.train.workdir import atomic_write, to_jsonable

NORMS = ("series", "channel", "none")


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

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SeriesInputs:
        stats = {k: None if d[k] is None else tuple(d[k]) for k in ("mean", "std")}
        return cls(**{**d, **stats})

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
              "inputs": None if inputs is None else inputs.to_json(),
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
    if "chosen" in summary:  # the chosen candidate's folder, under this one (wherever the run now lies)
        chosen = summary["candidates"][summary["chosen"]]["workdir"]
        path = os.path.join(path, "candidates", os.path.basename(chosen))
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


class Predictor:
    """A network and the training loop's own jitted ``predict_step``, over batches of the run's
    evaluation size: the outputs the training run's evaluation got, bit for bit."""

    def __init__(self, model: nnx.Module, eval_batch_size: int):
        self.model, self.eval_batch_size = model, int(eval_batch_size)
        self._state = TrainState.create(model, optax.identity())
        self._predict = jax.jit(predict_step)

    def outputs(self, split: Split) -> np.ndarray:
        """The network's raw outputs for every row of ``split`` (logits, or forecasts)."""
        outs = [np.asarray(self._predict(self._state, b)) for b in batches(split, self.eval_batch_size)]
        return np.concatenate(outs)[: len(split)]


def load_model(spec: ModelSpec, folder: str, epoch: int) -> nnx.Module:
    """``spec``'s network with the weights of checkpoint ``epoch`` of the run in ``folder``."""
    model = spec.build()
    restore_params(model, os.path.join(folder, "checkpoints"), epoch)
    return model


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


class ClassifierRun:
    """A loaded classification run (``experiments.classify`` or ``experiments.binary``): ``model``
    holds the best checkpoint's weights, ``inputs`` the preprocessing fitted on the training data."""

    def __init__(self, folder: str, summary: dict[str, Any], record: dict[str, Any]):
        self.workdir, self.summary, self.record = folder, summary, record
        self.spec = ModelSpec.from_json(record["model"])
        self.model = load_model(self.spec, folder, int(summary["best_epoch"]))
        self.predictor = Predictor(self.model, record["eval_batch_size"])
        self.inputs = SeriesInputs.from_json(record["inputs"])
        self.classes = self.inputs.class_labels

    def prepare(self, x_NxTxD: np.ndarray, lengths_N: np.ndarray | None = None) -> Split:
        return self.inputs.prepare(x_NxTxD, lengths_N, fixed_length=self.spec.config.architecture == "lstm_fcn")

    def predict_proba(self, x_NxTxD: np.ndarray, lengths_N: np.ndarray | None = None) -> np.ndarray:
        """Raw series [N, T, D] (NaN past a length is fine) -> class probabilities [N, K]."""
        logits = self.predictor.outputs(self.prepare(x_NxTxD, lengths_N))
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


@dataclasses.dataclass
class Forecasts:
    """The next ``horizon`` steps after the end of each series: ``values`` [S] arrays [horizon, Q]
    (one column per quantile, ``median_index`` the forecast), beside the ``histories`` they follow."""

    ids: list[str]
    values: list[np.ndarray]
    quantiles: list[float]
    median_index: int
    histories: list[np.ndarray]

    @property
    def horizon(self) -> int:
        return len(self.values[0])

    def to_csv(self) -> str:
        """Long format: ``id,step,forecast`` and, with several quantiles, one ``q<level>`` column each."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        several = len(self.quantiles) > 1
        w.writerow(["id", "step", "forecast", *((f"q{q:g}" for q in self.quantiles) if several else ())])
        for name, v in zip(self.ids, self.values):
            for h in range(len(v)):
                w.writerow([name, h + 1, f"{v[h, self.median_index]:.10g}",
                            *((f"{x:.10g}" for x in v[h]) if several else ())])
        return buf.getvalue()

    def picture(self, path: str) -> str:
        """The first series' recent values and its forecast (with the outer quantiles as a band)."""
        history, v = self.histories[0], self.values[0]
        shown = min(len(history), max(4 * len(v), 100))
        band = (v[:, 0], v[:, -1]) if len(self.quantiles) > 1 else None
        return plots.forecast(history[-shown:], shown, v[:, self.median_index], path, band=band,
                              band_label=f"q{self.quantiles[0]:g}-q{self.quantiles[-1]:g}",
                              title=f"{self.ids[0]}: the last {shown} values and the next {len(v)}")


class ForecastRun:
    """A loaded forecasting run (the ensemble recipe of ``experiments.forecast``): every member's
    network with its checkpoint, and each series' transform chain fitted on its training part."""

    def __init__(self, folder: str, summary: dict[str, Any], record: dict[str, Any]):
        self.workdir, self.summary, self.record = folder, summary, record
        e = self.ensemble = record["ensemble"]
        self.spec = ModelSpec.from_json(e["spec"])
        self.members = [(int(m["input_size"]), Predictor(load_model(self.spec, os.path.join(folder, m["run"]),
                                                                    int(m["epoch"])), e["eval_batch_size"]))
                        for m in e["members"]]
        self.names = list(record["source"]["names"])
        self.chains = {n: panel_lib.chain_from_state(s["chain"]) for n, s in zip(self.names, e["series"])}
        self.quantiles = [float(q) for q in e["quantiles"]]

    def forecast(self, names: list[str], values: list[np.ndarray]) -> Forecasts:
        """The next ``horizon`` steps after each named series (values [T_i] from the series' start,
        as the run read it), by every member, combined by the median as the run combined them."""
        e = self.ensemble
        if e["covariates"]:
            raise ConfigError("this run reads covariates; forecasting it from new data is not supported yet")
        unknown = [n for n in names if n not in self.chains]
        if unknown:
            raise DataError(f"series {', '.join(map(str, unknown[:5]))} {'were' if len(unknown) > 1 else 'was'} not "
                            f"in the run (its series: {', '.join(map(str, self.names[:10]))}"
                            f"{', ...' if len(self.names) > 10 else ''})")
        if not names:
            raise DataError("no series to forecast")
        chains = [self.chains[n] for n in names]
        values = [np.asarray(v, np.float64) for v in values]
        z = [c.forward(v) for c, v in zip(chains, values)]
        Q, H = len(self.quantiles), int(e["model_horizon"])
        preds = []
        for L, predictor in self.members:
            predict = lambda x, p=predictor: p.outputs(Split(x, np.zeros((len(x), H * Q), np.float32)))  # noqa: E731
            z_pred = forecast_blocks(predict, z, L, int(e["horizon"]), model_horizon=H, num_quantiles=Q,
                                     median_index=int(e["median_index"]), level=e["level"], season=int(e["season"]))
            preds.append(to_original(chains, z_pred, values))
        return Forecasts(list(names), member_median(preds), self.quantiles, int(e["median_index"]), values)

    def forecast_file(self, path: str) -> Forecasts:
        """``forecast`` of every series in a file of the run's own format (its CSV columns, or .tsf)."""
        names, values = read_series(path, self.record["source"])
        return self.forecast(names, values)


def load_run(workdir: str) -> ClassifierRun | ForecastRun:
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
    if record["model"]["kind"] == "ensemble":
        return ForecastRun(folder, summary, record)
    raise CheckpointError(f"{record_path}: runs of kind {record['model']['kind']!r} cannot be loaded yet")
