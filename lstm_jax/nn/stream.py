"""Streaming inference: a model's step as one pure, jitted function of (parameters, state, input).

``step_fn(model) -> (fn, params)`` gives the pure function behind ``model.step``::

    y_B_or_BxK, new_state = fn(params, state, x_BxD, valid_B)

* ``params``: the ``nnx.State`` of ``nnx.split(model)`` (every variable of the model), as returned;
* ``state``: ``model.init_state(B)`` or a state ``fn`` returned; for ``Classifier`` / ``Forecaster`` a
  dict ``{"carries": tuple with one carry per layer, each a tuple of [B, H_layer] arrays}`` plus
  ``"sum"`` [B, H] and ``"count"`` [B] for pooling 'mean'; all leaves float32 (the carry dtype);
* ``x_BxD``: one step of input, float32 [B, D];
* ``valid_B``: bool [B] (False: a padding step, which keeps the row's state), or None (all valid);
* ``y``: what the model gives for the sequence ending at this step: a ``Classifier``'s logits [B]
  (2 classes) or [B, K], a ``Forecaster``'s [B, horizon].

``fn`` is pure (the graph definition is closed over), so it can be jitted, exported with
``jax.export`` or converted, with ``params`` as arguments or closed over as constants.
``Stream(model, B)`` jits it once and keeps the state: ``y = s(x_BxD, valid_B=None)``, ``s.reset()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax.errors import DataError

Array = jax.Array
StepFn = Callable[[nnx.State, Any, Array, Array | None], tuple[Array, Any]]


def step_fn(model: nnx.Module) -> tuple[StepFn, nnx.State]:
    """``(fn, params)`` with ``fn(params, state, x_BxD, valid_B) -> (y, new_state)`` equal to
    ``model.step(state, x_BxD, valid_B)`` (see the module docstring). ``params`` is the model's state
    now; a later change to the model is not seen. Raises ``ConfigError`` for a model that cannot
    stream (bidirectional, LSTM-FCN)."""
    model.init_state(1)  # a model that cannot stream says so here, before anything is traced
    graphdef, params = nnx.split(model)

    def fn(params: nnx.State, state, x_BxD: Array, valid_B: Array | None = None):
        return nnx.merge(graphdef, params).step(state, x_BxD, valid_B)

    return fn, params


class Stream:
    """A model run one step at a time with its state kept here: ``s = Stream(model, batch_size)``,
    ``y = s(x_BxD, valid_B=None)`` per step, ``s.reset()`` to start new sequences.

    The step is jitted once (``valid_B`` None is passed as all True, so both forms share one
    program); ``traces`` counts how often it was traced. ``state`` is the current state (settable);
    ``params`` are the model's parameters when the stream was built.
    """

    def __init__(self, model: nnx.Module, batch_size: int):
        fn, self.params = step_fn(model)
        self.batch_size = batch_size
        self.initial_state = model.init_state(batch_size)
        self.state = self.initial_state
        self.traces = 0
        # What a call passes is kept as cheap to pass as it gets: the parameters as a flat list of
        # arrays (an nnx.State costs jit more to flatten than the step costs to run at batch 1) and
        # one all-True mask, built once.
        self._leaves, treedef = jax.tree.flatten(self.params)
        self._all_valid = jnp.ones((batch_size,), bool)

        def traced(leaves, state, x_BxD, valid_B):
            self.traces += 1  # runs only while jax traces
            return fn(jax.tree.unflatten(treedef, leaves), state, x_BxD, valid_B)

        self.compiled = jax.jit(traced)

    def reset(self) -> None:
        """Back to the state before the first step, for every row."""
        self.state = self.initial_state

    def __call__(self, x_BxD: Array, valid_B: Array | None = None) -> Array:
        """One step of input [B, D] -> the model's output for the sequences so far; advances ``state``."""
        valid_B = self._all_valid if valid_B is None else valid_B
        if np.ndim(x_BxD) != 2 or np.shape(x_BxD)[0] != self.batch_size or np.shape(valid_B) != (self.batch_size,):
            raise DataError(f"this stream takes x [{self.batch_size}, D] and valid [{self.batch_size}], "
                            f"got {tuple(np.shape(x_BxD))} and {tuple(np.shape(valid_B))}")
        if getattr(valid_B, "dtype", None) != jnp.bool_:
            valid_B = np.asarray(valid_B).astype(bool)
        y, self.state = self.compiled(self._leaves, self.state, x_BxD, valid_B)
        return y
