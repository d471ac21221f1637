"""Kernel dispatch and the generic fast path: every registered cell on impl='xla' matches the scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from flax import nnx

from lstm_jax import kernels
from lstm_jax.errors import ConfigError
from lstm_jax.nn.cells import CELLS, LSTMCell
from lstm_jax.nn.layers import LSTM, LSTMStack

B, T, D, H = 6, 13, 5, 8
LENGTHS = np.array([13, 1, 0, 5, 13, 7])


def randomize(module, seed):
    """Every parameter drawn at random (peepholes, gate recurrences and gains start at 0 or 1)."""
    graphdef, params = nnx.split(module)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [0.4 * jax.random.normal(k, p.shape, p.dtype) + (p if p.ndim == 1 else 0) for k, p in zip(keys, leaves)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def make(cell, impl, seed=0, **kw):
    return randomize(LSTM(D, H, cell=cell, impl=impl, rngs=nnx.Rngs(0), **kw), seed)


def value_and_grads(layer, x, lengths, carry, w_out, carry_only=False):
    """Outputs, final carry and the gradients of a loss touching all of them, w.r.t. params, x, carry."""
    graphdef, params = nnx.split(layer)

    def loss(params, x, carry):
        out, final = nnx.merge(graphdef, params)(x, lengths, carry, return_carry=True)
        value = sum(jnp.sum(jnp.cos(k + 1.0) * c * c) for k, c in enumerate(jax.tree.leaves(final)))
        if not carry_only:
            value = value + jnp.sum(jnp.sin(out) * w_out)
        return value, (out, final)

    with jax.default_matmul_precision("float32"):  # full f32 on a GPU too (TF32 would miss 1e-5)
        (_, aux), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, x, carry)
    return aux, grads


def inputs(layer, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k[0], (B, T, D))
    zero = layer.initial_carry(B)
    carry = jax.tree.map(lambda z, kk: 0.5 * jax.random.normal(kk, z.shape, z.dtype), zero,
                         tuple(jax.random.split(k[1], len(zero))))
    return x, carry, jax.random.normal(k[2], (B, T, H))


# Every cell with lengths; every other one also reversed (reverse only flips the input and output).
@pytest.mark.parametrize("name,reverse", [(n, k % 2 == 1) for k, n in enumerate(sorted(CELLS))])
def test_every_cell_fast_matches_scan(name, reverse, with_lengths=True):
    fast = make(name, "xla", reverse=reverse)
    assert fast.impl == "xla"
    x, carry, w = inputs(fast, 1)
    lengths = jnp.asarray(LENGTHS) if with_lengths else None
    got = value_and_grads(fast, x, lengths, carry, w)
    ref = value_and_grads(make(name, "scan", reverse=reverse), x, lengths, carry, w)
    assert_close(got, ref)


@pytest.mark.parametrize("name", ["peephole", "gru", "layernorm"])
def test_generic_fast_path_with_remat_and_a_loss_on_the_carry_alone(name):
    x, carry, w = inputs(make(name, "scan"), 2)
    lengths = jnp.asarray(LENGTHS)
    ref = value_and_grads(make(name, "scan"), x, lengths, carry, w, carry_only=True)
    for kw in ({}, {"remat": True}):
        assert_close(value_and_grads(make(name, "xla", **kw), x, lengths, carry, w, carry_only=True), ref)


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
    x, carry, w = inputs(make(Janet, "scan"), 3)
    lengths = jnp.asarray(LENGTHS)
    assert_close(value_and_grads(make(Janet, "xla"), x, lengths, carry, w),
                 value_and_grads(make(Janet, "scan"), x, lengths, carry, w))


def test_bf16_generic_fast_path_is_close_to_the_bf16_scan():
    x, carry, w = inputs(make("gru", "scan"), 4)
    got = value_and_grads(make("gru", "xla", dtype=jnp.bfloat16), x, None, carry, w)
    ref = value_and_grads(make("gru", "scan", dtype=jnp.bfloat16), x, None, carry, w)
    assert_close(got, ref, tol=3e-2)


@pytest.mark.parametrize("name", ["gru", "peephole"])
def test_stacked_bidirectional_generic_matches_scan(name):
    lengths = jnp.asarray(LENGTHS)
    x = jax.random.normal(jax.random.key(5), (B, T, D))
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
