"""Greff's LSTM variants (peephole, NIG, NFG, NOG, NIAF, NOAF, CIFG, NP, FGR) and the layer-normalised
LSTM in the native LSTM kernels: what the kernels do beyond matching the scan (that, for every
variant, reverse, lengths and carry, is tests/kernels/test_paths.py): dx left out for a first layer,
one kernel call each way, odd shapes without biases, the same bits from run to run, the cells they
refuse.

The reference is each cell's own ``impl='scan'`` layer with every parameter drawn at random
(tests/harness.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from harness import D, H, assert_same_bits_on_repeat, inputs, max_rel_err, randomize, value_and_grads

from lstm_jax import kernels
from lstm_jax.errors import ConfigError
from lstm_jax.kernels import native
from lstm_jax.kernels.native import lstm as native_lstm
from lstm_jax.nn.cells import LayerNormLSTMCell, PeepholeCell
from lstm_jax.nn.layers import LSTM, Bidirectional

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")


def pair(name, seed=1, make=LSTM, **kw):
    """The same randomised layer on the native kernels and on the scan."""
    got = randomize(make(D, H, cell=name, rngs=nnx.Rngs(0), **kw), seed)
    ref = randomize(make(D, H, cell=name, impl="scan", rngs=nnx.Rngs(0), **kw), seed)
    return got, ref


@pytest.mark.parametrize("name", ["peephole", "cifg"])
def test_no_input_gradient_skips_dx_and_keeps_the_rest(name):
    got, ref = pair(name, seed=3)
    x, lengths, carry, w = inputs(got, 4)
    graphdef, params = nnx.split(got)
    hlo = jax.jit(lambda p: nnx.merge(graphdef, p)(x, lengths).sum()).lower(params).as_text()
    assert "lstm_jax_fwd" in hlo
    grad_hlo = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(x, lengths).sum())).lower(params).as_text()
    assert "lstm_jax_bwd_no_dx" in grad_hlo and '"lstm_jax_bwd"' not in grad_hlo
    assert max_rel_err(value_and_grads(got, x, lengths, carry, w, wrt_x=False),
                       value_and_grads(ref, x, lengths, carry, w, wrt_x=False)) <= 1e-5


def test_layernorm_skips_dx_where_x_needs_no_gradient():
    """Its backward call computes dW itself, and dx only when asked (the first layer of a model)."""
    got, ref = pair("layernorm", seed=3)
    x, lengths, carry, w = inputs(got, 4)
    graphdef, params = nnx.split(got)
    grad_hlo = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(x, lengths).sum())).lower(params).as_text()
    assert "lstm_jax_ln_bwd" in grad_hlo and "with_dx = 0 : i32" in grad_hlo
    # 2e-5, not the harness's usual 1e-5: the kernel recomputes x W, its normalisation and the gates in
    # the backward pass and sums in another order than the scan; on these draws one gradient leaf
    # differs by 1.2e-5 of its scale (float32 rounding; other draws give 2e-6).
    assert max_rel_err(value_and_grads(got, x, lengths, carry, w, wrt_x=False),
                       value_and_grads(ref, x, lengths, carry, w, wrt_x=False)) <= 2e-5


@pytest.mark.parametrize("name", ["peephole", "nfg", "layernorm", "fgr"])
def test_without_biases_and_with_odd_shapes(name):
    """No bias; one step and one row; a hidden size below one vector with 70 rows."""
    for (steps, batch, features), hidden in (((1, 1, 1), 1), ((4, 70, 9), 5)):
        got = randomize(LSTM(features, hidden, cell=name, use_bias=False, rngs=nnx.Rngs(0)), 7)
        ref = randomize(LSTM(features, hidden, cell=name, use_bias=False, impl="scan", rngs=nnx.Rngs(0)), 7)
        assert got.impl == "native"
        args = inputs(got, 8, batch=batch, steps=steps, features=features)
        assert max_rel_err(value_and_grads(got, *args), value_and_grads(ref, *args)) <= 1e-5


@pytest.mark.parametrize("name", ["peephole", "layernorm"])
def test_gradients_are_the_same_bits_from_run_to_run(name):
    """The peepholes' (or gains') gradient is summed over row blocks in a fixed order, as db and dW are."""
    got, _ = pair(name, seed=9)
    args = inputs(got, 10)
    assert_same_bits_on_repeat(lambda: value_and_grads(got, *args), 3)


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


# -- FGR: the peephole kernel with a second recurrent product (the previous step's gates [i f o]
# times R [3H, 3H]) and a carry of three parts (c, h, a).

def test_fgr_runs_one_kernel_call_each_way_and_skips_dx():
    got, ref = pair("fgr", seed=3)
    x, lengths, carry, w = inputs(got, 4)
    graphdef, params = nnx.split(got)
    grad_hlo = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(x, lengths).sum())).lower(params).as_text()
    assert grad_hlo.count("lstm_jax_fwd") == 1 and "lstm_jax_bwd_no_dx" in grad_hlo
    assert "while" not in grad_hlo  # no scan left around the kernels
    assert max_rel_err(value_and_grads(got, x, lengths, carry, w, wrt_x=False),
                       value_and_grads(ref, x, lengths, carry, w, wrt_x=False)) <= 1e-5


def test_fgr_bidirectional_runs_both_directions_in_one_call():
    got, ref = pair("fgr", seed=7, make=Bidirectional.create)
    assert got.forward.impl == "native" and got._fusable(None)
    args = inputs(got, 8)
    graphdef, params = nnx.split(got)
    hlo = jax.jit(lambda p: nnx.merge(graphdef, p)(args[0], args[1]).sum()).lower(params).as_text()
    assert hlo.count("lstm_jax_fwd") == 1
    assert max_rel_err(value_and_grads(got, *args), value_and_grads(ref, *args)) <= 1e-5
