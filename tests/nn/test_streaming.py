"""Streaming: layers and models fed one step at a time give their whole-sequence outputs.

The reference is each module's own sequence call with its default implementation (on the CPU the
native kernels); the step runs the cell's plain XLA step. Every parameter is random
(as ``harness.randomize`` draws them) so that peepholes, gate recurrences and layer-norm gains take part.
"""

from __future__ import annotations

import harness
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstm_jax import LSTM, Classifier, ConfigError, DataError, Forecaster, LSTMStack, ModelConfig, Stream, step_fn
from lstm_jax.nn.cells import CELLS
from lstm_jax.nn.layers import use_impl
from lstm_jax.nn.models import LSTMFCN

B, T, D = 3, 6, 3
LENGTHS_B = jnp.array([0, 4, T])  # an empty row, a padded one and a full one
TOL = 1e-6  # float32; native kernels against the XLA step measured at most 4e-7


@nnx.jit
def sequence(module, x_BxTxD, lengths_B):
    """The whole-sequence call: (outputs, final carry) of a layer or stack, or a model's output."""
    if isinstance(module, (LSTM, LSTMStack)):
        return module(x_BxTxD, lengths_B, return_carry=True)
    return module(x_BxTxD, lengths_B)


def randomized(module, seed):
    """``module`` with every float parameter random, as ``harness.randomize`` does (matrices
    N(0, 0.4^2), vectors their initial value plus that), but drawn in NumPy: eager JAX draws compile
    once per shape, which would take most of this module's time."""
    graphdef, state = nnx.split(module)
    leaves, tree = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(0.4 * rng.standard_normal(v.shape) + (np.asarray(v) if v.ndim == 1 else 0.0), v.dtype)
              if jnp.issubdtype(v.dtype, jnp.floating) else v for v in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def inputs(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


def steps(step, state, x_BxTxD, lengths_B):
    """Feeds x step by step (``valid = t < lengths``; all True without lengths): (outputs [B, T, ...], state)."""
    ys = []
    for t in range(T):
        valid_B = jnp.ones((B,), bool) if lengths_B is None else t < lengths_B
        y, state = step(state, x_BxTxD[:, t], valid_B)
        ys.append(y)
    return jnp.stack(ys, axis=1), state


def pure_step(module):
    """A jitted ``module.step`` as a function of (carry, x, valid), compiled once per module."""
    graphdef, params = nnx.split(module)
    step = jax.jit(lambda params, carry, x, valid: nnx.merge(graphdef, params).step(carry, x, valid))
    return lambda carry, x, valid: step(params, carry, x, valid)


@pytest.mark.slow  # a sweep over every cell
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_layer_steps_match_sequence(cell):
    layer = randomized(LSTM(D, 4, cell=cell, rngs=nnx.Rngs(0)), seed=1)
    step, x = pure_step(layer), inputs()
    for lengths_B in (None, LENGTHS_B):
        h_ref, carry_ref = sequence(layer, x, lengths_B)
        h, carry = steps(step, layer.initial_carry(B), x, lengths_B)
        harness.assert_close(h, h_ref, TOL)
        harness.assert_close(carry, carry_ref, TOL)


MODELS = {  # name: (build, config); stacks of two widths, both poolings, each model kind
    "classifier2-last": (lambda c: Classifier(D, c, rngs=nnx.Rngs(0)), ModelConfig(hidden_size=(6, 4))),
    "classifier3-mean": (lambda c: Classifier(D, c, num_classes=3, rngs=nnx.Rngs(0)),
                         ModelConfig(cell="gru", hidden_size=(4, 6), pooling="mean")),
    "forecaster-mean": (lambda c: Forecaster(D, c, horizon=2, rngs=nnx.Rngs(0)),
                        ModelConfig(cell="peephole", hidden_size=5, pooling="mean")),
    "forecaster-last": (lambda c: Forecaster(D, c, rngs=nnx.Rngs(0)), ModelConfig(cell="cifg", hidden_size=(5, 4))),
}


@pytest.mark.slow  # a sweep over model kinds (test_step_fn_without_valid is the quick tier's check)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_stream_matches_sequence(name):
    """``Stream`` over a sequence with lengths, reset, then without lengths: each step's output is the
    model's output for the sequence cut at that step, and the step is traced once."""
    build, config = MODELS[name]
    model = randomized(build(config), seed=3)
    stream, x = Stream(model, B), inputs(2)
    for lengths_B in (LENGTHS_B, None):
        stream.reset()
        jax.tree.map(np.testing.assert_array_equal, stream.state, model.init_state(B))
        ys = [stream(x[:, t], None if lengths_B is None else t < lengths_B) for t in range(T)]
        harness.assert_close(ys[-1], sequence(model, x, lengths_B), TOL)
        full_B = jnp.full((B,), T) if lengths_B is None else lengths_B
        for t in range(T):  # the sequences cut after step t (one compiled program for every t)
            harness.assert_close(ys[t], sequence(model, x, jnp.minimum(full_B, t + 1)), TOL)
    assert stream.traces == 1


@pytest.mark.slow  # float64 programs of their own
def test_float64_stream_is_exact():
    """In float64 the stream and the generic scan agree to rounding (1e-12), so what float32 shows is
    float32 rounding alone: a stack of layer-normalised cells with random gains amplifies it, up to
    2e-6 between the native kernels, the scan and the step (measured), past this module's 1e-6."""
    model = randomized(Forecaster(D, ModelConfig(cell="layernorm", hidden_size=(5, 4), pooling="mean"),
                                  rngs=nnx.Rngs(0)), seed=5)
    with jax.enable_x64(True):
        graphdef, params = nnx.split(model)
        model = use_impl(nnx.merge(graphdef, jax.tree.map(lambda v: v.astype(jnp.float64), params)), "scan")
        stream, x = Stream(model, B), inputs(2).astype(jnp.float64)
        for lengths_B in (LENGTHS_B, None):
            stream.reset()
            ys = [stream(x[:, t], None if lengths_B is None else t < lengths_B) for t in range(T)]
            assert ys[-1].dtype == jnp.float64
            harness.assert_close(ys[-1], sequence(model, x, lengths_B), 1e-12)


def test_step_fn_without_valid():
    """The pure function the export builds on, jitted, with ``valid_B=None`` (every step valid): a
    stack of two widths with pooling 'mean' gives the model's outputs; its state is float32 arrays."""
    model = randomized(Forecaster(D, ModelConfig(hidden_size=(6, 4), pooling="mean"), rngs=nnx.Rngs(0)), seed=4)
    fn, params = step_fn(model)
    step, state, x = jax.jit(fn), model.init_state(B), inputs(3)
    for t in range(T):
        y, state = step(params, state, x[:, t], None)
    harness.assert_close(y, sequence(model, x, None), TOL)
    assert set(state) == {"carries", "sum", "count"} and len(state["carries"]) == 2
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state))
    np.testing.assert_array_equal(state["count"], [T] * B)


def test_what_cannot_stream_says_why():
    rngs = nnx.Rngs(0)
    with pytest.raises(ConfigError, match=r"^a layer with reverse=True .* cannot stream"):
        LSTM(D, 4, reverse=True, rngs=rngs).step(None, jnp.zeros((B, D)))
    bidirectional = Classifier(D, ModelConfig(hidden_size=4, bidirectional=True), rngs=rngs)
    stack = bidirectional.encoder
    for call, args in ((bidirectional.init_state, (B,)), (Stream, (bidirectional, B)),
                       (stack.step, (stack.initial_carry(B), jnp.zeros((B, D)))),
                       (stack.layers[0].step, (stack.layers[0].initial_carry(B), jnp.zeros((B, D))))):
        with pytest.raises(ConfigError, match="^a bidirectional model reads the whole sequence in both directions "
                                              "and cannot stream; [^\n]*$"):
            call(*args)
    small = dict(hidden_size=4, conv_filters=(4,), conv_kernels=(3,))
    for architecture in ("lstm_fcn", "lstm_fcn_time", "fcn"):
        model = LSTMFCN(D, T, ModelConfig(architecture=architecture, **small), rngs=rngs)
        for call, args in ((model.init_state, (B,)), (model.step, ({}, jnp.zeros((B, D)))), (step_fn, (model,))):
            with pytest.raises(ConfigError, match=r"^LSTM-FCN .* cannot stream: its convolutions [^\n]*$"):
                call(*args)


def test_a_step_of_the_wrong_shape_is_a_data_error():
    model = Classifier(D, ModelConfig(hidden_size=4), rngs=nnx.Rngs(0))
    with pytest.raises(DataError, match=r"x \[3, 3\]; got shape \(3, 1, 3\)"):
        model.step(model.init_state(B), jnp.zeros((B, 1, D)))
    with pytest.raises(DataError, match="this stream takes x"):
        Stream(model, B)(jnp.zeros((B + 1, D)))
