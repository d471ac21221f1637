"""The one training loop every experiment shares.

``train_step`` and ``eval_step`` are pure functions of (state, batch, key) and are jitted where the
loop uses them. Randomness comes from one seed split into named streams (``rng_streams``); the
dropout key of a step is ``fold_in(streams['dropout'], step)`` and the shuffle of an epoch is
``fold_in(streams['shuffle'], epoch)``, so a resumed run replays exactly the same randomness.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lstm_jax.checkpoint import Checkpointer
from lstm_jax.data import Dataset, Split, batches, num_batches
from lstm_jax.errors import CheckpointError, ConfigError, NonFiniteError

Array = jax.Array
STREAMS = ("params", "dropout", "shuffle")


def rng_streams(seed: int) -> dict[str, Array]:
    """One seed -> independent named keys: 'params', 'dropout', 'shuffle'."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, k) for k, name in enumerate(STREAMS)}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train, apart from the model: epochs, batch size, Adam's learning rate, the seed."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    eval_batch_size: int = 512
    patience: int = 0  # stop after this many epochs without a better validation metric; 0: never
    schedule: str = "constant"  # learning rate over training: constant | cosine | warmup_cosine
    warmup_epochs: int = 0  # for warmup_cosine: linear warmup from 0 over this many epochs
    clip_norm: float = 0.0  # clip gradients to this global norm; 0: no clipping

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_size} and {self.eval_batch_size}")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs or (self.warmup_epochs and self.schedule != "warmup_cosine"):
            raise ConfigError(f"warmup_epochs must be in [0, epochs) and needs schedule=warmup_cosine, got {self.warmup_epochs}")
        if self.clip_norm < 0:
            raise ConfigError(f"clip_norm must be >= 0, got {self.clip_norm}")


SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with the configured schedule and optional global-norm clipping."""
    total = config.epochs * steps_per_epoch
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, total)
    elif config.schedule == "warmup_cosine":
        warmup = config.warmup_epochs * steps_per_epoch
        lr = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), total)
    tx = optax.adam(lr)
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), tx) if config.clip_norm else tx


# -- tasks: a loss and metrics per example --------------------------------------------------------

class BinaryTask:
    """Logits [B] against labels {0, 1}: binary cross-entropy and accuracy."""

    best_metric, best_mode = "val_accuracy", "max"
    shown = ("loss", "accuracy")

    @staticmethod
    def loss(logits_B: Array, y_B: Array) -> Array:
        return optax.sigmoid_binary_cross_entropy(logits_B, y_B)

    @staticmethod
    def metrics(logits_B: Array, y_B: Array) -> dict[str, Array]:
        return {"accuracy": ((logits_B > 0) == (y_B > 0.5)).astype(jnp.float32)}


class RegressionTask:
    """Predictions [B, K] against targets [B, K]: mean squared error (and MAE)."""

    best_metric, best_mode = "val_loss", "min"
    shown = ("loss", "mae")

    @staticmethod
    def loss(pred_BxK: Array, y_BxK: Array) -> Array:
        return jnp.mean(jnp.square(pred_BxK - y_BxK), axis=-1)

    @staticmethod
    def metrics(pred_BxK: Array, y_BxK: Array) -> dict[str, Array]:
        return {"mse": jnp.mean(jnp.square(pred_BxK - y_BxK), axis=-1), "mae": jnp.mean(jnp.abs(pred_BxK - y_BxK), axis=-1)}


# -- state and pure steps -------------------------------------------------------------------------

@flax.struct.dataclass
class TrainState:
    """Parameters as a plain nested dict, optax state, and the step count."""

    step: Array
    params: Any
    opt_state: Any
    graphdef: Any = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: nnx.Module, tx: optax.GradientTransformation) -> "TrainState":
        graphdef, params = nnx.split(model, nnx.Param)
        params = nnx.to_pure_dict(params)
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), graphdef=graphdef, tx=tx)

    def model(self, params=None) -> nnx.Module:
        return nnx.merge(self.graphdef, self.params if params is None else params)


def _apply(state: TrainState, params, batch, key):
    return state.model(params)(batch["x"], batch.get("lengths"), key=key)


def _weighted_sums(task, out, batch) -> dict[str, Array]:
    w = batch["weight"]
    sums = {"loss": jnp.sum(task.loss(out, batch["y"]) * w), "count": jnp.sum(w)}
    sums.update({k: jnp.sum(v * w) for k, v in task.metrics(out, batch["y"]).items()})
    return sums


def train_step(state: TrainState, batch: dict[str, Array], dropout_key: Array, task) -> tuple[TrainState, dict[str, Array]]:
    """One Adam step on the weighted mean loss. Returns the new state and this batch's sums.

    ``dropout_key`` is the run's dropout stream; this step uses ``fold_in(dropout_key, step)``.
    """
    key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
        out = _apply(state, params, batch, key)
        sums = _weighted_sums(task, out, batch)
        return sums["loss"] / jnp.maximum(sums["count"], 1.0), sums

    (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    sums["finite"] = jnp.isfinite(loss) & jnp.all(
        jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    )
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums


def eval_step(state: TrainState, batch: dict[str, Array], task) -> dict[str, Array]:
    """This batch's weighted sums of the loss and metrics, without dropout."""
    return _weighted_sums(task, _apply(state, state.params, batch, None), batch)


def predict_step(state: TrainState, batch: dict[str, Array]) -> Array:
    return _apply(state, state.params, batch, None)


# -- devices and hosts ----------------------------------------------------------------------------

def data_mesh() -> Mesh:
    """A 1-D 'data' mesh over every device of every process, each process's devices contiguous.

    Process p then owns rows [p * B / P, (p + 1) * B / P) of every global batch.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), ("data",))


def to_host(tree: Any) -> Any:
    """Device values -> NumPy. Replicated values that span other processes are read locally."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


# -- files ----------------------------------------------------------------------------------------

def atomic_write(path: str, text: str) -> None:
    """Writes ``text`` so that a reader sees the old file or the new one, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.generic, jax.Array)):
        return np.asarray(x).item() if np.ndim(x) == 0 else np.asarray(x).tolist()
    return x


# -- the loop -------------------------------------------------------------------------------------

def _finalise(sums: dict[str, Any], prefix: str) -> dict[str, float]:
    n = max(float(sums["count"]), 1.0)
    return {f"{prefix}_{k}": float(v) / n for k, v in sums.items() if k not in ("count", "finite")}


class Trainer:
    """Trains ``model`` on ``data`` for ``task``, writing everything into ``workdir``.

    Workdir contents: ``metrics.jsonl`` (one object per epoch), ``checkpoints/`` (latest and best),
    ``summary.json`` (written at the end). A workdir that already holds a run is refused unless
    ``resume``, which continues from its latest checkpoint.
    """

    def __init__(self, model: nnx.Module, task, data: Dataset, config: TrainConfig, workdir: str, *,
                 resume: bool = False, extra_config: dict | None = None, log: Callable[[str], None] = print):
        self.task, self.data, self.config, self.log = task, data, config, log
        self.workdir = os.path.abspath(workdir)
        self.extra_config = extra_config or {}
        self.streams = rng_streams(config.seed)
        self.mesh = data_mesh()
        self.is_primary = jax.process_index() == 0
        if not self.is_primary:
            log = lambda _: None  # one progress stream for the whole job
        self.log = log
        n_dev = self.mesh.size
        if config.batch_size % n_dev or config.eval_batch_size % n_dev:
            raise ConfigError(
                f"batch_size ({config.batch_size}) and eval_batch_size ({config.eval_batch_size}) must divide by "
                f"the number of devices ({n_dev})"
            )
        self.metrics_path = os.path.join(self.workdir, "metrics.jsonl")
        self.summary_path = os.path.join(self.workdir, "summary.json")
        self._check_workdir(resume)
        if self.is_primary:
            os.makedirs(self.workdir, exist_ok=True)
        self.ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                 metric=task.best_metric, mode=task.best_mode)
        replicated = NamedSharding(self.mesh, P())
        tx = make_optimizer(config, num_batches(len(data.train), config.batch_size))
        self.state = jax.device_put(TrainState.create(model, tx), replicated)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        if resume:
            self._resume()
        self._train_step = jax.jit(functools.partial(train_step, task=task), donate_argnums=0)
        self._eval_step = jax.jit(functools.partial(eval_step, task=task))
        self._predict_step = jax.jit(predict_step)

    # -- workdir ----------------------------------------------------------------------------------
    def _check_workdir(self, resume: bool) -> None:
        ckpt_dir = os.path.join(self.workdir, "checkpoints")
        has_run = os.path.exists(self.metrics_path) or (os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir))
        if resume and not has_run:
            raise CheckpointError(f"--resume: {self.workdir} holds no run to resume")
        if not resume and has_run:
            raise CheckpointError(
                f"{self.workdir} already holds a run; pass --resume to continue it or choose another --workdir"
            )

    def _ckpt_tree(self) -> dict[str, Any]:
        s = self.state
        return {"params": s.params, "opt_state": s.opt_state, "step": s.step,
                "rng": {k: np.asarray(jax.random.key_data(v)) for k, v in self.streams.items()}}

    def _save(self, record: dict[str, Any]) -> None:
        meta = {"epoch": self.epoch, "step": self.step, **record}
        self.ckpt.save(self.epoch, self._ckpt_tree(), meta)

    def _restore(self, step: int) -> dict[str, Any]:
        tree, meta = self.ckpt.restore(step, self._ckpt_tree())
        seed_rng = {k: jax.random.key_data(v) for k, v in self.streams.items()}
        if any(not np.array_equal(tree["rng"][k], seed_rng[k]) for k in seed_rng):
            raise CheckpointError(f"the checkpoint in {self.ckpt.directory} was made with another --seed")
        replicated = NamedSharding(self.mesh, P())
        self.state = jax.device_put(
            self.state.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"]), replicated)
        return meta

    @property
    def step(self) -> int:
        return int(to_host(self.state.step))

    def _resume(self) -> None:
        step = self.ckpt.latest_step()
        if step is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.ckpt.directory}")
        meta = self._restore(step)
        self.epoch = int(meta["epoch"])
        # Epochs after the checkpoint will be trained again: drop their records so none appears twice.
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                self.history = [r for r in map(json.loads, filter(str.strip, f)) if r["epoch"] <= self.epoch]
            self._write_metrics()
        self.log(f"resumed from {self.ckpt.directory} at epoch {self.epoch} (step {self.step})")

    def _write_metrics(self) -> None:
        if self.is_primary:
            atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.history))

    # -- running ----------------------------------------------------------------------------------
    def _shard(self, batch: dict[str, np.ndarray]) -> dict[str, Array]:
        """A global batch -> arrays split over the data mesh; each process supplies only its rows."""
        sharding = NamedSharding(self.mesh, P("data"))
        if jax.process_count() == 1:
            return jax.device_put(batch, sharding)
        p, n = jax.process_index(), jax.process_count()

        def local(x):
            rows = len(x) // n
            return jax.make_array_from_process_local_data(sharding, x[p * rows : (p + 1) * rows], x.shape)

        return jax.tree.map(local, batch)

    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        sums = [self._eval_step(self.state, self._shard(b)) for b in batches(split, self.config.eval_batch_size)]
        total = to_host(jax.tree.map(lambda *xs: sum(xs), *sums))
        return _finalise(total, prefix)

    def predict(self, split: Split) -> np.ndarray:
        """Model outputs for every row of ``split``, on every process."""
        from jax.experimental import multihost_utils

        outs = []
        for b in batches(split, self.config.eval_batch_size):
            out = self._predict_step(self.state, self._shard(b))
            outs.append(np.asarray(out if out.is_fully_addressable else multihost_utils.process_allgather(out, tiled=True)))
        return np.concatenate(outs)[: len(split)]

    def train_epoch(self) -> dict[str, float]:
        """One pass over the shuffled training split. Returns the epoch's train metrics."""
        try:
            return self._train_epoch()
        except NonFiniteError:
            self.ckpt.wait()  # the last good checkpoint must be whole before we stop
            raise

    def _train_epoch(self) -> dict[str, float]:
        train = self.data.train
        key = jax.random.fold_in(self.streams["shuffle"], self.epoch)
        order = np.asarray(jax.random.permutation(key, len(train)))
        first = self.step
        per_step = []
        for batch in batches(train, self.config.batch_size, order):
            self.state, sums = self._train_step(self.state, self._shard(batch), self.streams["dropout"])
            per_step.append(sums)
        per_step = to_host(per_step)
        bad = [k for k, s in enumerate(per_step) if not s["finite"]]
        if bad:
            raise NonFiniteError(
                f"non-finite loss or gradient at step {first + bad[0] + 1} (epoch {self.epoch + 1}); "
                f"the last good checkpoint is kept in {self.ckpt.directory}"
            )
        total = jax.tree.map(lambda *xs: sum(xs), *per_step)
        return _finalise(total, "train")

    def epochs_without_improvement(self) -> int:
        """Epochs since the best validation metric so far (0 when the last epoch was the best)."""
        if not self.history:
            return 0
        values = [r[self.task.best_metric] for r in self.history]
        best = int(np.argmin(values) if self.task.best_mode == "min" else np.argmax(values))
        return len(values) - 1 - best

    def fit(self) -> dict[str, Any]:
        """Trains the remaining epochs, then evaluates the best checkpoint. Returns the summary."""
        t0 = time.perf_counter()
        cfg = self.config
        stopped_early = False
        steps_per_epoch = num_batches(len(self.data.train), cfg.batch_size)
        while self.epoch < cfg.epochs:
            if cfg.patience and self.epochs_without_improvement() >= cfg.patience:
                stopped_early = True
                self.log(f"early stop: no better {self.task.best_metric} for {cfg.patience} epochs")
                break
            te = time.perf_counter()
            record = self.train_epoch()
            train_seconds = time.perf_counter() - te
            record.update(self.evaluate(self.data.val, "val"))
            self.epoch += 1
            record = {"epoch": self.epoch, "step": self.step, **record,
                      "seconds": time.perf_counter() - te, "train_seconds": train_seconds}
            self._save(record)
            self.history.append(record)
            self._write_metrics()
            shown = "  ".join(f"{p}_{k} {record[f'{p}_{k}']:.4g}" for p in ("train", "val") for k in self.task.shown)
            # The first epoch carries compilation; later epochs predict the rest better.
            recent = [r["seconds"] for r in self.history[-3:]]
            eta = (cfg.epochs - self.epoch) * float(np.median(recent))
            self.log(f"epoch {self.epoch:>3}/{cfg.epochs}  {shown}  "
                     f"{steps_per_epoch / record['seconds']:.0f} steps/s  {record['seconds']:.2f}s  eta {eta:.0f}s")
        best = self.ckpt.best_step()
        meta = self._restore(best)
        summary: dict[str, Any] = {"best_epoch": int(meta["epoch"])}
        summary.update(self.evaluate(self.data.val, "val"))
        if self.data.test is not None:
            summary.update(self.evaluate(self.data.test, "test"))
        summary.update({
            "epochs_trained": self.epoch,
            "stopped_early": stopped_early,
            "steps": self.step,
            "wall_seconds": time.perf_counter() - t0,
            "num_devices": self.mesh.size,
            "num_processes": jax.process_count(),
            "dataset": self.data.info,
            "config": to_jsonable({"train": self.config, **self.extra_config}),
        })
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Writes summary.json and the learning curves into the workdir (on the primary process)."""
        if not self.is_primary:
            return
        atomic_write(self.summary_path, json.dumps(to_jsonable(summary), indent=2) + "\n")
        if self.history:
            from lstm_jax import plots  # matplotlib is slow to import; only the end of a run needs it

            plots.learning_curves(self.history, os.path.join(self.workdir, "learning_curves.png"), self.task.shown)

    def close(self) -> None:
        self.ckpt.close()
