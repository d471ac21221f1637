"""Both directions of a bidirectional layer in one native call each way (kernels.native.cell_layers).

The reference is the same layer on ``impl='scan'`` (two scans, the backward one over the reversed
valid prefix), with every parameter drawn at random.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from harness import D, H, inputs, max_rel_err, randomize, value_and_grads

from lstm_jax.kernels import native
from lstm_jax.nn.layers import LSTM, Bidirectional, LSTMStack

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")


@pytest.mark.parametrize("name", ["lstm", "peephole", "nig", "cifg"])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_one_call_runs_both_directions_and_matches_the_scan(name, with_lengths):
    got = randomize(Bidirectional.create(D, H, cell=name, rngs=nnx.Rngs(0)), 1)
    ref = randomize(Bidirectional.create(D, H, cell=name, impl="scan", rngs=nnx.Rngs(0)), 1)
    assert got.forward.impl == got.backward.impl == "native" and got._fusable(None)
    x, lengths, carry, w = inputs(got, 2)  # a random initial carry for each direction
    lengths = lengths if with_lengths else None
    assert max_rel_err(value_and_grads(got, x, lengths, carry, w), value_and_grads(ref, x, lengths, carry, w)) <= 1e-5


def test_nothing_is_reversed_or_concatenated_around_the_kernels():
    """One forward and one backward kernel call for both directions, and no reversal of x or outputs."""
    model = Bidirectional.create(D, H, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    x, lengths, _, _ = inputs(model, 4)

    def loss(params):
        return jnp.sum(jnp.sin(nnx.merge(graphdef, params)(x, lengths)))

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    assert hlo.count('custom_call_target="lstm_jax_fwd"') == 1
    assert hlo.count('custom_call_target="lstm_jax_bwd_no_dx"') == 1
    assert " reverse(" not in hlo and " gather(" not in hlo


def test_a_stack_of_bidirectional_layers_sums_both_directions_input_gradients():
    """The second layer's dx comes from both directions (the kernel's dx [2, T, B, I], summed)."""
    got = randomize(LSTMStack(D, H, num_layers=2, bidirectional=True, cell="peephole", rngs=nnx.Rngs(0)), 6)
    ref = randomize(LSTMStack(D, H, num_layers=2, bidirectional=True, cell="peephole", impl="scan",
                              rngs=nnx.Rngs(0)), 6)
    assert got.layers[1]._fusable(None)
    x, lengths, _, w = inputs(got, 5)
    assert max_rel_err(value_and_grads(got, x, lengths, None, w), value_and_grads(ref, x, lengths, None, w)) <= 1e-5


def test_layers_that_cannot_share_a_call_run_apart():
    """Different cells, a GRU, dropout or remat: the directions run one after the other, still right."""
    mixed = Bidirectional(LSTM(D, H, rngs=nnx.Rngs(0)), LSTM(D, H, cell="peephole", reverse=True, rngs=nnx.Rngs(1)))
    assert not mixed._fusable(None)
    assert not Bidirectional.create(D, H, cell="gru", rngs=nnx.Rngs(0))._fusable(None)
    assert not Bidirectional.create(D, H, remat=True, rngs=nnx.Rngs(0))._fusable(None)
    dropping = Bidirectional.create(D, H, input_dropout=0.1, rngs=nnx.Rngs(0))
    assert dropping._fusable(None) and not dropping._fusable(jax.random.key(0))
    x, lengths, _, _ = inputs(mixed, 7)
    scan = Bidirectional(LSTM(D, H, impl="scan", rngs=nnx.Rngs(0)),
                         LSTM(D, H, cell="peephole", impl="scan", reverse=True, rngs=nnx.Rngs(1)))
    np.testing.assert_allclose(np.asarray(mixed(x, lengths)), np.asarray(scan(x, lengths)), atol=1e-5, rtol=1e-5)


def test_a_batch_of_one_row_and_an_empty_row():
    got = randomize(Bidirectional.create(D, H, cell="noaf", rngs=nnx.Rngs(0)), 9)
    ref = randomize(Bidirectional.create(D, H, cell="noaf", impl="scan", rngs=nnx.Rngs(0)), 9)
    x, _, carry, w = inputs(got, 8, batch=1)
    for lengths in (jnp.array([x.shape[1]]), jnp.array([0]), jnp.array([1])):
        assert max_rel_err(value_and_grads(got, x, lengths, carry, w), value_and_grads(ref, x, lengths, carry, w)) <= 1e-5
