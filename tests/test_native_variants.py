"""Greff's LSTM variants (peephole, NIG, NFG, NOG, NIAF, NOAF, CIFG, NP) and the layer-normalised LSTM
in the native LSTM kernels.

The reference is each cell's own ``impl='scan'`` layer (``cell.step`` in ``lax.scan``), with every
parameter, peepholes included, drawn at random so that no term of the maths hides behind a zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_rel_err
from flax import nnx

from lstm_jax import kernels
from lstm_jax.errors import ConfigError
from lstm_jax.kernels import native
from lstm_jax.kernels.native import lstm as native_lstm
from lstm_jax.nn.cells import LayerNormLSTMCell, PeepholeCell
from lstm_jax.nn.layers import LSTM

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")

VARIANTS = ("np", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "layernorm")
# B = 29 splits into uneven row blocks on any thread count, with a tile remainder; H = 40 is no
# multiple of any vector width, so every kernel runs partial vectors.
T, B, D, H = 11, 29, 3, 40


def randomize(layer, seed, scale=0.5):
    """Every float parameter drawn from N(0, scale^2) (peepholes start at zero otherwise)."""
    graphdef, state = nnx.split(layer)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [jax.random.normal(k, v.shape, v.dtype) * scale if jnp.issubdtype(v.dtype, jnp.floating) else v
              for k, v in zip(keys, leaves, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def problem(seed, shape=(T, B, D)):
    T_, B_, D_ = shape
    k = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(k[0], (B_, T_, D_))
    lengths = jax.random.randint(k[1], (B_,), 0, T_ + 1)
    carry = (jax.random.normal(k[2], (B_, H)), jax.random.normal(k[3], (B_, H)))
    return x, lengths, carry


def value_and_grads(layer, x, lengths, carry, *, wrt_x=True, carry_only=False):
    """A loss on the outputs and the final carry; its value, outputs and gradients (parameters, x, carry)."""
    graphdef, params = nnx.split(layer)

    def loss(params, x, carry):
        out, (c, h) = nnx.merge(graphdef, params)(x, lengths, carry, return_carry=True)
        value = jnp.sum(c * c) - jnp.sum(h) if carry_only else jnp.sum(jnp.sin(out)) + jnp.sum(c * c) - jnp.sum(h)
        return value, out

    if wrt_x:
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, x, carry)
    return jax.jit(jax.value_and_grad(lambda p, c: loss(p, x, c), argnums=(0, 1), has_aux=True))(params, carry)


def pair(name, seed=1, **kw):
    """The same randomised layer on the native kernels and on the scan."""
    got = randomize(LSTM(D, H, cell=name, rngs=nnx.Rngs(0), **kw), seed)
    ref = randomize(LSTM(D, H, cell=name, impl="scan", rngs=nnx.Rngs(0), **kw), seed)
    return got, ref


@pytest.mark.parametrize("name,reverse", [(n, k % 2 == 1) for k, n in enumerate(VARIANTS)])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_every_variant_picks_native_and_matches_its_scan(name, reverse, with_lengths):
    """Outputs, final carry and every gradient (weights, bias, peepholes, x, initial carry)."""
    got, ref = pair(name, reverse=reverse)
    assert got.impl == "native"
    x, lengths, carry = problem(2)
    lengths = lengths if with_lengths else None
    assert max_rel_err(value_and_grads(got, x, lengths, carry), value_and_grads(ref, x, lengths, carry)) <= 1e-5


@pytest.mark.parametrize("name", ["peephole", "cifg"])
def test_no_input_gradient_skips_dx_and_keeps_the_rest(name):
    got, ref = pair(name, seed=3)
    x, lengths, carry = problem(4)
    graphdef, params = nnx.split(got)
    hlo = jax.jit(lambda p: nnx.merge(graphdef, p)(x, lengths).sum()).lower(params).as_text()
    assert "lstm_jax_fwd" in hlo
    grad_hlo = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(x, lengths).sum())).lower(params).as_text()
    assert "lstm_jax_bwd_no_dx" in grad_hlo and '"lstm_jax_bwd"' not in grad_hlo
    assert max_rel_err(value_and_grads(got, x, lengths, carry, wrt_x=False),
                       value_and_grads(ref, x, lengths, carry, wrt_x=False)) <= 1e-5


def test_layernorm_skips_dx_where_x_needs_no_gradient():
    """Its backward call computes dW itself, and dx only when asked (the first layer of a model)."""
    got, ref = pair("layernorm", seed=3)
    x, lengths, carry = problem(4)
    graphdef, params = nnx.split(got)
    grad_hlo = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(x, lengths).sum())).lower(params).as_text()
    assert "lstm_jax_ln_bwd" in grad_hlo and "with_dx = 0 : i32" in grad_hlo
    assert max_rel_err(value_and_grads(got, x, lengths, carry, wrt_x=False),
                       value_and_grads(ref, x, lengths, carry, wrt_x=False)) <= 1e-5


@pytest.mark.parametrize("name", ["peephole", "nog", "layernorm"])
def test_a_loss_on_the_final_carry_alone_and_remat(name):
    """The outputs' cotangent is then a symbolic zero; remat recomputes chunks in the kernels."""
    x, lengths, carry = problem(5)
    _, ref = pair(name, seed=6)
    want = value_and_grads(ref, x, lengths, carry, carry_only=True)
    for kw in ({}, {"remat": True}):
        got = randomize(LSTM(D, H, cell=name, rngs=nnx.Rngs(0), **kw), 6)
        assert got.impl == "native"
        assert max_rel_err(value_and_grads(got, x, lengths, carry, carry_only=True), want) <= 1e-5


@pytest.mark.parametrize("name", ["peephole", "nfg", "layernorm"])
def test_without_biases_and_with_odd_shapes(name):
    """No bias; one step and one row; a hidden size below one vector."""
    for shape, hidden in (((1, 1, 1), 1), ((4, 70, 9), 5)):
        got = randomize(LSTM(shape[2], hidden, cell=name, use_bias=False, rngs=nnx.Rngs(0)), 7)
        ref = randomize(LSTM(shape[2], hidden, cell=name, use_bias=False, impl="scan", rngs=nnx.Rngs(0)), 7)
        assert got.impl == "native"
        k = jax.random.split(jax.random.key(8), 3)
        x = jax.random.normal(k[0], (shape[1], shape[0], shape[2]))
        lengths = jax.random.randint(k[1], (shape[1],), 0, shape[0] + 1)
        carry = tuple(jax.random.normal(kk, (shape[1], hidden)) for kk in jax.random.split(k[2]))
        assert max_rel_err(value_and_grads(got, x, lengths, carry), value_and_grads(ref, x, lengths, carry)) <= 1e-5


@pytest.mark.parametrize("name", ["peephole", "layernorm"])
def test_gradients_are_the_same_bits_from_run_to_run(name):
    """The peepholes' (or gains') gradient is summed over row blocks in a fixed order, as db and dW are."""
    got, _ = pair(name, seed=9)
    x, lengths, carry = problem(10)
    first = value_and_grads(got, x, lengths, carry)
    for _ in range(3):
        again = value_and_grads(got, x, lengths, carry)
        for p, q in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


def test_a_users_subclass_takes_the_generic_path():
    """The kernels run exactly the registered classes: a subclass may change the maths."""

    class Clipped(PeepholeCell):
        def squash(self, c):
            return jnp.clip(c, -1.0, 1.0)

    class OwnStep(PeepholeCell):
        def step(self, carry, xp, h_mask=None):
            return super().step(carry, xp, h_mask)

    for cls, impl in ((Clipped, "xla"), (OwnStep, "scan")):
        layer = LSTM(D, H, cell=cls, rngs=nnx.Rngs(0))
        assert not native.supports(layer.cell) and layer.impl == impl
    with pytest.raises(ConfigError, match="impl='native'"):
        LSTM(D, H, cell=Clipped, impl="native", rngs=nnx.Rngs(0))
    class OwnNorm(LayerNormLSTMCell):
        def normalize(self, v, blocks):
            return super().normalize(v, blocks) * 2.0

    assert LSTM(D, H, cell=OwnNorm, rngs=nnx.Rngs(0)).impl == "xla"
    # Nor other activations or dtypes.
    assert LSTM(D, H, cell="peephole", activation="relu", rngs=nnx.Rngs(0)).impl == "xla"
    assert LSTM(D, H, cell="layernorm", dtype=jnp.bfloat16, rngs=nnx.Rngs(0)).impl == "xla"
    assert LSTM(D, H, cell="cifg", dtype=jnp.bfloat16, rngs=nnx.Rngs(0)).impl == "xla"
    assert kernels.choose(LSTM(D, H, cell="nig", rngs=nnx.Rngs(0)).cell) == "native"


def test_the_kernels_refuse_an_unknown_variant():
    """Only the variants the kernels were built for run; anything else is an error, not wrong numbers."""
    x = jnp.zeros((2, 3, D))
    W, U, b = jnp.zeros((1, D, 2 * H)), jnp.zeros((1, H, 2 * H)), jnp.zeros((1, 2 * H))
    c0 = jnp.zeros((1, 3, H))
    with pytest.raises(Exception, match="unknown LSTM variant"):
        jax.block_until_ready(native_lstm.forward(x, W, b, U, (c0, c0), None, save=False, variant=native_lstm.FORGET))
    W, U, b = jnp.zeros((1, D, 4 * H)), jnp.zeros((1, H, 4 * H)), jnp.zeros((1, 4 * H))
    with pytest.raises(Exception, match="reversed bits"):  # a second layer that is not there
        jax.block_until_ready(native_lstm.forward(x, W, b, U, (c0, c0), None, save=False, reversed=0b10))
    fgr = native_lstm.STANDARD | native_lstm.PEEPHOLE | native_lstm.GATE_RECURRENCE
    with pytest.raises(Exception, match="gate recurrence"):  # R must be [N, 3H, 3H]
        jax.block_until_ready(native_lstm.forward(x, W, b, U, (c0, c0, jnp.zeros((1, 3, 3 * H))), None, save=False,
                                             variant=fgr, p_Nx3H=jnp.zeros((1, 3 * H)),
                                             R_Nx3Hx3H=jnp.zeros((1, 3 * H, H))))
