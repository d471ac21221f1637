"""Greff's FGR (full gate recurrence) in the native LSTM kernels.

FGR is the peephole kernel with a second recurrent product, the previous step's gates [i f o] times
R [3H, 3H], and a carry of three parts (c, h, a). The reference is the cell's own ``impl='scan'``
layer, with every parameter (R and the peepholes too, which start at zero) and the initial carry
(a included) drawn at random.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from conftest import max_rel_err
from flax import nnx
from test_native_variants import randomize

from lstm_jax.kernels import native
from lstm_jax.nn.layers import LSTM, Bidirectional

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")

T, B, D, H = 11, 29, 3, 40  # uneven row blocks and partial vectors, as in test_native_variants


def problem(seed, T_=T, B_=B, D_=D, H_=H):
    k = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(k[0], (B_, T_, D_))
    lengths = jax.random.randint(k[1], (B_,), 0, T_ + 1)
    carry = (jax.random.normal(k[2], (B_, H_)), jax.random.normal(k[3], (B_, H_)),
             jax.random.uniform(k[4], (B_, 3 * H_)))  # previous gates lie in (0, 1)
    return x, lengths, carry


def value_and_grads(layer, x, lengths, carry, *, wrt_x=True, carry_only=False):
    """A loss on the outputs and every part of the final carry(s); its value, outputs and gradients."""
    graphdef, params = nnx.split(layer)

    def loss(params, x, carry):
        out, final = nnx.merge(graphdef, params)(x, lengths, carry, return_carry=True)
        carry_term = sum(jnp.sum(jnp.cos(k + 1.0) * v) for k, v in enumerate(jax.tree.leaves(final)))
        return (carry_term if carry_only else jnp.sum(jnp.sin(out)) + carry_term), out

    if wrt_x:
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, x, carry)
    return jax.jit(jax.value_and_grad(lambda p, c: loss(p, x, c), argnums=(0, 1), has_aux=True))(params, carry)


def pair(make, seed=1):
    return randomize(make("auto"), seed), randomize(make("scan"), seed)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_fgr_picks_native_and_matches_its_scan(reverse, with_lengths):
    """Outputs, the final (c, h, a) and every gradient: W, U, b, peepholes, R, x and the initial carry."""
    got, ref = pair(lambda impl: LSTM(D, H, cell="fgr", impl=impl, reverse=reverse, rngs=nnx.Rngs(0)))
    assert got.impl == "native"
    x, lengths, carry = problem(2)
    lengths = lengths if with_lengths else None
    assert max_rel_err(value_and_grads(got, x, lengths, carry), value_and_grads(ref, x, lengths, carry)) <= 1e-5


def test_fgr_runs_one_kernel_call_each_way_and_skips_dx():
    got, ref = pair(lambda impl: LSTM(D, H, cell="fgr", impl=impl, rngs=nnx.Rngs(0)), seed=3)
    x, lengths, carry = problem(4)
    graphdef, params = nnx.split(got)
    grad_hlo = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(x, lengths).sum())).lower(params).as_text()
    assert grad_hlo.count("lstm_jax_fwd") == 1 and "lstm_jax_bwd_no_dx" in grad_hlo
    assert "while" not in grad_hlo  # no scan left around the kernels
    assert max_rel_err(value_and_grads(got, x, lengths, carry, wrt_x=False),
                       value_and_grads(ref, x, lengths, carry, wrt_x=False)) <= 1e-5


def test_fgr_loss_on_the_final_carry_alone_and_remat():
    x, lengths, carry = problem(5)
    _, ref = pair(lambda impl: LSTM(D, H, cell="fgr", impl=impl, rngs=nnx.Rngs(0)), seed=6)
    want = value_and_grads(ref, x, lengths, carry, carry_only=True)
    for kw in ({}, {"remat": True}):
        got = randomize(LSTM(D, H, cell="fgr", rngs=nnx.Rngs(0), **kw), 6)
        assert got.impl == "native"
        assert max_rel_err(value_and_grads(got, x, lengths, carry, carry_only=True), want) <= 1e-5


def test_fgr_bidirectional_runs_both_directions_in_one_call():
    got, ref = pair(lambda impl: Bidirectional.create(D, H, cell="fgr", impl=impl, rngs=nnx.Rngs(0)), seed=7)
    assert got.forward.impl == "native" and got._fusable(None)
    x, lengths, carry_f = problem(8)
    carry_b = problem(9)[2]
    graphdef, params = nnx.split(got)
    hlo = jax.jit(lambda p: nnx.merge(graphdef, p)(x, lengths).sum()).lower(params).as_text()
    assert hlo.count("lstm_jax_fwd") == 1
    assert max_rel_err(value_and_grads(got, x, lengths, (carry_f, carry_b)),
                       value_and_grads(ref, x, lengths, (carry_f, carry_b))) <= 1e-5


def test_fgr_odd_shapes_and_no_bias():
    """One step and one row; a hidden size below one vector with 70 rows; no bias."""
    for (T_, B_, D_), H_ in (((1, 1, 1), 1), ((4, 70, 9), 5)):
        got = randomize(LSTM(D_, H_, cell="fgr", use_bias=False, rngs=nnx.Rngs(0)), 10)
        ref = randomize(LSTM(D_, H_, cell="fgr", use_bias=False, impl="scan", rngs=nnx.Rngs(0)), 10)
        assert got.impl == "native"
        x, lengths, carry = problem(11, T_, B_, D_, H_)
        assert max_rel_err(value_and_grads(got, x, lengths, carry), value_and_grads(ref, x, lengths, carry)) <= 1e-5
