"""The one training loop every experiment shares: ``Trainer`` (and ``fit``, its one-call form).

The loop owns epochs, evaluation, early stopping, checkpoints and resume; the pieces it uses each
live in their own module: the state and pure jitted steps (``lstm_jax.train.steps``), devices and hosts
(``lstm_jax.train.distributed``), the run's files (``lstm_jax.train.workdir``), TensorBoard
(``lstm_jax.train.tensorboard``) and checkpoints (``lstm_jax.train.checkpoint``).

After ``fit()`` the model the caller passed in holds the weights of the best checkpoint (by
``TrainConfig.select``): ``model(x)`` gives the predictions the summary's metrics came from.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from lstm_jax.data.dataset import Dataset, Split, batches, num_batches
from lstm_jax.errors import CheckpointError, ConfigError, NonFiniteError
from lstm_jax.train import distributed
from lstm_jax.train.checkpoint import Checkpointer
from lstm_jax.train.config import TrainConfig
from lstm_jax.train.steps import (
    TrainState,
    eval_step,
    learning_rate_at,
    make_optimizer,
    make_schedule,
    predict_step,
    rng_streams,
    train_step,
)
from lstm_jax.train.tensorboard import Writer
from lstm_jax.train.workdir import Workdir, flatten, to_jsonable

Array = jax.Array


def _finalise(sums: dict[str, Any], prefix: str) -> dict[str, float]:
    n = max(float(sums["count"]), 1.0)
    return {f"{prefix}_{k}": float(v) / n for k, v in sums.items() if k not in ("count", "finite")}


class _Profile:
    """Traces ``steps`` training steps with ``jax.profiler``, starting after the first (compiling) one."""

    def __init__(self, steps: int, logdir: str, log: Callable[[str], None]):
        self.left, self.logdir, self.log = steps, logdir, log
        self.seen, self.active = 0, False

    def before_step(self) -> None:
        if self.left and not self.active and self.seen == 1:
            jax.profiler.start_trace(self.logdir, create_perfetto_trace=True)
            self.active = True

    def after_step(self, state) -> None:
        self.seen += 1
        if self.active:
            self.left -= 1
            if self.left == 0:
                self.stop(state)

    def stop(self, state) -> None:
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            self.log(f"profile: a trace of {self.seen - 1} steps in {self.logdir}/plugins/profile")


class Trainer:
    """Trains ``model`` on ``data`` for ``task``, writing everything into ``workdir``.

    ``record`` is the configuration written to config.json and the summary (default: the
    TrainConfig); ``--resume`` refuses to continue a run whose recorded configuration differs in
    anything but the number of epochs. A workdir that already holds a run is refused unless
    ``resume``, which continues from its latest checkpoint and replays exactly the randomness an
    uninterrupted run would have used.

    ``on_epoch(record)`` (optional) is called after each epoch is checkpointed and logged, with that
    epoch's record (``epoch``, ``train_*``, ``val_*``, seconds). It is the loop's one hook for code
    outside it, e.g. a study's pruner: an exception it raises ends training there and propagates.
    """

    def __init__(self, model: nnx.Module, task, data: Dataset, config: TrainConfig, workdir: str, *,
                 resume: bool = False, record: dict | None = None, log: Callable[[str], None] = print,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None):
        self.model, self.task, self.data, self.config = model, task, data, config
        self.on_epoch = on_epoch
        self.streams = rng_streams(config.seed)
        self.mesh = distributed.data_mesh()
        self.is_primary = distributed.is_primary()
        self.log = log if self.is_primary else (lambda _: None)  # one progress stream for the whole job
        n_dev = self.mesh.size
        if config.batch_size % n_dev or config.eval_batch_size % n_dev:
            raise ConfigError(
                f"batch_size ({config.batch_size}) and eval_batch_size ({config.eval_batch_size}) must divide by "
                f"the number of devices ({n_dev})"
            )
        self.record = to_jsonable(record if record is not None else {"train": config})
        self.files = Workdir(workdir, resume=resume, primary=self.is_primary)
        self.workdir = self.files.path
        if resume:
            self.files.check_config(self.record)
        self.steps_per_epoch = num_batches(len(data.train), config.batch_size)
        self.schedule = make_schedule(config, self.steps_per_epoch)
        self.state = distributed.replicate(TrainState.create(model, make_optimizer(config, self.steps_per_epoch)), self.mesh)
        self.ckpt = Checkpointer(self.files.checkpoints, metric=config.select_metric, mode=config.select_mode)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        if resume:
            self._resume()
        self.files.write_config(self.record)
        self.tb = None
        if self.is_primary:
            self.tb = Writer(self.workdir, purge_step=self.epoch + 1 if resume else None)
        self._train_step = jax.jit(functools.partial(train_step, task=task), donate_argnums=0)
        self._eval_step = jax.jit(functools.partial(eval_step, task=task))
        self._predict_step = jax.jit(predict_step)
        self._profile = _Profile(config.profile_steps, self.workdir, self.log)

    # -- checkpoints ------------------------------------------------------------------------------
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
        self.state = distributed.replicate(
            self.state.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"]), self.mesh)
        return meta

    @property
    def step(self) -> int:
        return int(distributed.to_host(self.state.step))

    def _resume(self) -> None:
        step = self.ckpt.latest_step()
        if step is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.ckpt.directory}")
        meta = self._restore(step)
        self.epoch = int(meta["epoch"])
        # Epochs after the checkpoint will be trained again: drop their records so none appears twice.
        self.history = [r for r in self.files.read_metrics() if r["epoch"] <= self.epoch]
        self.files.write_metrics(self.history)
        self.log(f"resumed from {self.ckpt.directory} at epoch {self.epoch} (step {self.step})")

    # -- running ----------------------------------------------------------------------------------
    def _shard(self, batch: dict[str, np.ndarray]) -> dict[str, Array]:
        return distributed.shard_batch(batch, self.mesh)

    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Mean loss and metrics over ``split``, keys ``<prefix>_loss``, ... (no dropout)."""
        sums = [self._eval_step(self.state, self._shard(b)) for b in batches(split, self.config.eval_batch_size)]
        total = distributed.to_host(jax.tree.map(lambda *xs: sum(xs), *sums))
        return _finalise(total, prefix)

    def predict(self, split: Split) -> np.ndarray:
        """Model outputs for every row of ``split``, on every process."""
        outs = [distributed.gather(self._predict_step(self.state, self._shard(b)))
                for b in batches(split, self.config.eval_batch_size)]
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
            self._profile.before_step()
            self.state, sums = self._train_step(self.state, self._shard(batch), self.streams["dropout"])
            self._profile.after_step(self.state)
            per_step.append(sums)
        per_step = distributed.to_host(per_step)
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
        values = [r[self.config.select_metric] for r in self.history]
        best = int(np.argmin(values) if self.config.select_mode == "min" else np.argmax(values))
        return len(values) - 1 - best

    def _log_epoch(self, record: dict[str, Any]) -> None:
        cfg = self.config
        shown = "  ".join(f"{p}_{k} {record[f'{p}_{k}']:.4g}" for p in ("train", "val") for k in self.task.shown)
        # The first epoch carries compilation; later epochs predict the rest better.
        recent = [r["seconds"] for r in self.history[-3:]]
        eta = (cfg.epochs - self.epoch) * float(np.median(recent))
        steps_per_s = self.steps_per_epoch / record["train_seconds"]
        self.log(f"epoch {self.epoch:>3}/{cfg.epochs}  {shown}  "
                 f"{steps_per_s:.0f} steps/s  {record['seconds']:.2f}s  eta {eta:.0f}s")
        if self.tb is not None:
            scalars = {f"{k.split('_', 1)[0]}/{k.split('_', 1)[1]}": v for k, v in record.items()
                       if k.startswith(("train_", "val_")) and k != "train_seconds"}
            scalars["learning_rate"] = learning_rate_at(self.schedule, max(self.step - 1, 0))
            scalars["steps_per_second"] = steps_per_s
            self.tb.scalars(self.epoch, scalars)

    def fit(self) -> dict[str, Any]:
        """Trains the remaining epochs, then evaluates the best checkpoint. Returns the summary.

        Afterwards ``self.model`` (the caller's model) holds the best checkpoint's weights.
        """
        t0 = time.perf_counter()
        cfg = self.config
        stopped_early = False
        while self.epoch < cfg.epochs:
            if cfg.patience and self.epochs_without_improvement() >= cfg.patience:
                stopped_early = True
                self.log(f"early stop: no better {cfg.select} for {cfg.patience} epochs")
                break
            te = time.perf_counter()
            record = self.train_epoch()
            train_seconds = time.perf_counter() - te
            record.update(self.evaluate(self.data.val, "val"))
            if cfg.select != "last" and cfg.select not in record:
                raise ConfigError(f"select={cfg.select!r} is not a validation metric of this task; choose one of "
                                  f"{', '.join(k for k in record if k.startswith('val_'))}")
            self.epoch += 1
            record = {"epoch": self.epoch, "step": self.step, **record,
                      "seconds": time.perf_counter() - te, "train_seconds": train_seconds}
            self._save(record)
            self.history.append(record)
            self.files.write_metrics(self.history)
            self._log_epoch(record)
            if self.on_epoch is not None:
                self.on_epoch(dict(record))
        self._profile.stop(self.state)
        meta = self._restore(self.ckpt.best_step())
        # The caller's model gets the best weights (copies: the state's arrays may be donated later).
        params = nnx.state(self.model, nnx.Param)
        nnx.replace_by_pure_dict(params, jax.tree.map(jax.numpy.copy, self.state.params))
        nnx.update(self.model, params)
        summary: dict[str, Any] = {"best_epoch": int(meta["epoch"]), "selected_by": cfg.select}
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
            "config": self.record,
        })
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Writes summary.json, the learning curves and the run's hyperparameters for TensorBoard."""
        self.files.write_summary(summary)
        self.files.learning_curves(self.history, self.task.shown)
        if self.tb is not None:
            hparams = {k: v for k, v in flatten(self.record).items() if isinstance(v, (bool, int, float, str))}
            final = {k: v for k, v in summary.items()
                     if k.startswith(("val_", "test_")) and isinstance(v, (int, float)) and np.isfinite(v)}
            self.tb.hparams(hparams, final)
            self.tb.flush()

    def close(self) -> None:
        self.ckpt.close()
        if self.tb is not None:
            self.tb.close()


def fit(model: nnx.Module, task, data: Dataset, config: TrainConfig, workdir: str, **kwargs) -> dict[str, Any]:
    """Trains ``model`` in place and writes its run into ``workdir``; returns the summary.

    Afterwards ``model`` holds the best checkpoint's weights. ``kwargs`` go to ``Trainer``.
    """
    trainer = Trainer(model, task, data, config, workdir, **kwargs)
    try:
        summary = trainer.fit()
        trainer.write_summary(summary)
    finally:
        trainer.close()
    return summary
