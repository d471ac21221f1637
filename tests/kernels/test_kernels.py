"""Kernel dispatch and the generic fast path's own cases: a user's subclass, bf16, stacked
bidirectional layers. Every registered cell on impl='xla' against the scan is in test_paths.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from harness import D, H, assert_close, inputs, randomize, value_and_grads

from lstm_jax import kernels
from lstm_jax.errors import ConfigError
from lstm_jax.nn.cells import CELLS, LSTMCell
from lstm_jax.nn.layers import LSTM, LSTMStack


def make(cell, impl, seed=0, **kw):
    return randomize(LSTM(D, H, cell=cell, impl=impl, rngs=nnx.Rngs(0), **kw), seed)


def test_generic_fast_path_takes_a_users_subclass():
    class Janet(LSTMCell):
        gates = ("f", "g")

        def update(self, carry, z):
            c, _ = carry
            f = self.recurrent_activation(z[..., self.gate_slice("f")])
            c = f * c + (1.0 - f) * self.activation(z[..., self.gate_slice("g")])
            return c, c

    class OwnStep(LSTMCell):
        def step(self, carry, xp, h_mask=None):
            return super().step(carry, xp, h_mask)

    assert make(Janet, "auto").impl == "xla"
    assert make(OwnStep, "auto").impl == "scan"  # a step of its own is opaque to the fast path
    with pytest.raises(ConfigError, match="impl='xla'"):
        make(OwnStep, "xla")
    args = inputs(make(Janet, "scan"), 3)
    assert_close(value_and_grads(make(Janet, "xla"), *args), value_and_grads(make(Janet, "scan"), *args))


def test_bf16_generic_fast_path_is_close_to_the_bf16_scan():
    x, _, carry, w = inputs(make("gru", "scan"), 4)
    got = value_and_grads(make("gru", "xla", dtype=jnp.bfloat16), x, None, carry, w)
    ref = value_and_grads(make("gru", "scan", dtype=jnp.bfloat16), x, None, carry, w)
    assert_close(got, ref, tol=3e-2)


@pytest.mark.parametrize("name", ["gru", "peephole"])
def test_stacked_bidirectional_generic_matches_scan(name):
    x, lengths, _, _ = inputs(make(name, "scan"), 5)
    results = []
    for impl in ("scan", "xla"):
        stack = randomize(LSTMStack(D, H, num_layers=2, bidirectional=True, cell=name, impl=impl, rngs=nnx.Rngs(0)), 6)
        graphdef, params = nnx.split(stack)

        def loss(params, x, graphdef=graphdef):
            out = nnx.merge(graphdef, params)(x, lengths)
            return jnp.sum(jnp.sin(out)), out

        with jax.default_matmul_precision("float32"):
            results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x))
    assert_close(results[1], results[0])


def test_choose_is_the_one_place_that_picks():
    cell = LSTM(D, H, rngs=nnx.Rngs(0)).cell
    expected = "cudnn" if kernels.cudnn.supports(cell) else "native" if kernels.native.supports(cell) else "xla"
    assert kernels.choose(cell) == expected
    assert kernels.choose(cell, recurrent_dropout=0.1) == "scan"
    for name in CELLS:
        other = LSTM(D, H, cell=name, rngs=nnx.Rngs(0)).cell
        assert kernels.choose(other) in ("xla", "native", "cudnn")
    with pytest.raises(ConfigError, match="impl must be one of"):
        kernels.choose(cell, "fastest")
    with pytest.raises(ConfigError, match="recurrent_dropout"):
        kernels.choose(cell, "xla", recurrent_dropout=0.1)
    with pytest.raises(ConfigError, match="remat"):
        kernels.choose(cell, "scan", remat=True)
