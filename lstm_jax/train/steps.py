"""Training state and the pure steps the loop jits: ``train_step``, ``eval_step``, ``predict_step``.

Each step is a function of (state, batch[, key]); nothing is read from outside. Randomness comes
from one seed split into named streams (``rng_streams``); a step's dropout key is
``fold_in(streams['dropout'], step)``, so a resumed run replays the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

if TYPE_CHECKING:
    from lstm_jax.train.config import TrainConfig

Array = jax.Array
STREAMS = ("params", "dropout", "shuffle")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def rng_streams(seed: int) -> dict[str, Array]:
    """One seed -> independent named keys: 'params', 'dropout', 'shuffle'."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, k) for k, name in enumerate(STREAMS)}


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[Any], Any] | float:
    """The learning rate as a function of the step (or a constant)."""
    total = config.epochs * steps_per_epoch
    lr = config.learning_rate
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total)
    if config.schedule == "warmup_cosine":
        warmup = config.warmup_epochs * steps_per_epoch
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), total)
    return lr


def learning_rate_at(schedule, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with the configured schedule and optional global-norm clipping."""
    tx = optax.adam(make_schedule(config, steps_per_epoch))
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), tx) if config.clip_norm else tx


@flax.struct.dataclass
class TrainState:
    """Parameters as a plain nested dict, optax state, and the step count."""

    step: Array
    params: Any
    opt_state: Any
    graphdef: Any = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: nnx.Module, tx: optax.GradientTransformation) -> TrainState:
        graphdef, params = nnx.split(model, nnx.Param)
        # A copy: the jitted step donates its state, and the caller's model must keep its own arrays.
        params = jax.tree.map(jnp.copy, nnx.to_pure_dict(params))
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
    ``sums['finite']`` says whether the loss and every gradient were finite.
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
