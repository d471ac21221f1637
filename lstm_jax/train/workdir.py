"""A run's folder and the files in it. Every write is atomic: a reader sees the old file or the new one.

    config.json          the resolved configuration, written when the run starts (``--resume`` checks it)
    metrics.jsonl        one JSON object per epoch
    summary.json         written at the end
    learning_curves.png  loss and metrics per epoch
    events.out.tfevents.*  TensorBoard: per-epoch scalars, learning rate, steps/s, hyperparameters
    plugins/profile/     a ``jax.profiler`` trace, when asked for (TensorBoard's profiler, Perfetto)
    checkpoints/         orbax checkpoints (``lstm_jax.train.checkpoint``)
    inference.json       what loading the finished run for prediction needs (``lstm_jax.inference.run``)

A path that is a file, or that cannot be created, is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from lstm_jax import plots
from lstm_jax.errors import CheckpointError, ConfigError

INFERENCE_RECORD = "inference.json"
INFERENCE_FORMAT = 1  # the version of that record; a reader refuses another


def atomic_write(path: str, text: str) -> None:
    """Writes ``text`` so that a reader sees the old file or the new one, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_jsonable(x: Any) -> Any:
    """Dataclasses, NumPy and JAX values, tuples -> plain JSON types. NaN and inf become null."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if hasattr(x, "to_dict") and callable(x.to_dict):  # an ml_collections ConfigDict
        return to_jsonable(x.to_dict())
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.generic, jax.Array, np.ndarray)):
        return to_jsonable(np.asarray(x).item() if np.ndim(x) == 0 else np.asarray(x).tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def check_path(path: str) -> None:
    """Refuses a workdir that is a file, or that lies under a file, or that could not be created."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"--workdir {path} is a file, not a folder; choose another --workdir")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CheckpointError(f"--workdir {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"--workdir {path} cannot be created: {parent} is not writable")


class Workdir:
    """The files of one run in ``path``. Only the primary process (``primary``) writes."""

    def __init__(self, path: str, *, resume: bool = False, primary: bool = True):
        self.path = os.path.abspath(path)
        self.primary = primary
        check_path(self.path)
        self.metrics_path = self.file("metrics.jsonl")
        self.summary_path = self.file("summary.json")
        self.config_path = self.file("config.json")
        self.checkpoints = self.file("checkpoints")
        # A run is what trained: metrics, checkpoints, or candidate runs. A config.json alone is a
        # start that ended before its first epoch (a crash, a killed job) and is written anew.
        nonempty = lambda d: os.path.isdir(d) and bool(os.listdir(d))  # noqa: E731
        has_run = (os.path.exists(self.metrics_path) or nonempty(self.checkpoints)
                   or nonempty(self.file("candidates")))
        if resume and not has_run:
            raise CheckpointError(f"--resume: {self.path} holds no run to resume")
        if not resume and has_run:
            raise CheckpointError(f"{self.path} already holds a run; pass --resume to continue it or choose another --workdir")
        if primary:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise CheckpointError(f"--workdir {self.path} cannot be created: {e.strerror}") from None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- config -----------------------------------------------------------------------------------
    def check_config(self, config: dict[str, Any], *, may_differ: tuple[str, ...] = ("epochs",)) -> None:
        """On resume: the run's recorded config must equal ``config`` but for ``may_differ``."""
        if not os.path.exists(self.config_path):
            return  # a run from before config.json existed: nothing to compare
        with open(self.config_path) as f:
            recorded = json.load(f)
        old, new = flatten(recorded), flatten(to_jsonable(config))
        for name in sorted(set(old) | set(new)):
            if name.split(".")[-1] in may_differ or name in may_differ:
                continue
            if old.get(name, "<absent>") != new.get(name, "<absent>"):
                raise ConfigError(f"--resume: {name} is {new.get(name, '<absent>')!r} but the run in {self.path} "
                                  f"used {old.get(name, '<absent>')!r}; only the number of epochs may change")

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_json(self.config_path, config)

    # -- records ----------------------------------------------------------------------------------
    def write_json(self, path: str, value: Any) -> None:
        if self.primary:
            atomic_write(path, json.dumps(to_jsonable(value), indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        if self.primary:
            atomic_write(self.metrics_path, "".join(json.dumps(to_jsonable(r)) + "\n" for r in history))

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.write_json(self.summary_path, summary)

    def learning_curves(self, history: list[dict[str, Any]], shown: tuple[str, ...]) -> None:
        if self.primary and history:
            plots.learning_curves(history, self.file("learning_curves.png"), shown)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level with dotted keys ({'a': {'b': 1}} -> {'a.b': 1})."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
