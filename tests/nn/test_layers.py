"""Sequence layers: lengths/padding, causality, reverse, bidirectional, stacks, carries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstm_jax.errors import ConfigError
from lstm_jax.kernels import native
from lstm_jax.nn.layers import LSTM, Bidirectional, LSTMStack, dropout, reverse_valid

B, T, D, H = 3, 7, 3, 5
LENGTHS_B = np.array([5, 2, 7])
TOL = dict(rtol=1e-5, atol=1e-5)


def _run(layer, x_BxTxD, lengths_B=None, initial_carry=None, return_carry=False, key=None):
    kw = {} if key is None else {"key": key}
    return layer(x_BxTxD, lengths_B, initial_carry, return_carry, **kw)


# Calling a layer eagerly retraces and recompiles its scan every time; one jitted entry point
# compiles once per (layer structure, shapes) and keeps the suite fast.
run = nnx.jit(_run, static_argnames="return_carry")


def padded_batch(seed=0, garbage=50.0):
    """x [B, T, D] whose steps past each row's length hold large garbage."""
    rng = np.random.default_rng(seed)
    x_BxTxD = rng.normal(size=(B, T, D)).astype(np.float32)
    pad_BxT = np.arange(T)[None, :] >= LENGTHS_B[:, None]
    x_BxTxD[pad_BxT] = rng.normal(0, garbage, (pad_BxT.sum(), D))
    return x_BxTxD


def test_reverse_valid_flips_prefix_and_keeps_padding():
    x_BxTx1 = np.arange(B * T, dtype=np.float32).reshape(B, T, 1)
    out = np.asarray(reverse_valid(jnp.asarray(x_BxTx1), jnp.asarray(LENGTHS_B)))
    for b, L in enumerate(LENGTHS_B):
        np.testing.assert_array_equal(out[b, :L], x_BxTx1[b, :L][::-1])
        np.testing.assert_array_equal(out[b, L:], x_BxTx1[b, L:])
    again = reverse_valid(jnp.asarray(out), jnp.asarray(LENGTHS_B))
    np.testing.assert_array_equal(np.asarray(again), x_BxTx1)
    np.testing.assert_array_equal(np.asarray(reverse_valid(jnp.asarray(x_BxTx1), None)), x_BxTx1[:, ::-1])
    # A length past T means the whole row, as valid_mask reads it (it used to index out of range: NaN).
    longer = reverse_valid(jnp.asarray(x_BxTx1), jnp.full((B,), T + 3))
    np.testing.assert_array_equal(np.asarray(longer), x_BxTx1[:, ::-1])


def test_forward_layer_matches_numpy_reference_per_row(np_reference):
    """Padded batch with lengths == each valid prefix run alone through the NumPy LSTM; padding outputs are zero."""
    np_lstm, cell_weights = np_reference
    layer = LSTM(D, H, rngs=nnx.Rngs(0))
    x_BxTxD = padded_batch()
    h_BxTxH, (c_BxH, hT_BxH) = run(layer, jnp.asarray(x_BxTxD), jnp.asarray(LENGTHS_B), return_carry=True)
    h_BxTxH = np.asarray(h_BxTxH)
    W, U, b = cell_weights(layer.cell)
    for r, L in enumerate(LENGTHS_B):
        ref_h_1xLxH, (ref_c, ref_h) = np_lstm(x_BxTxD[r : r + 1, :L].astype(np.float64), W, U, b)
        np.testing.assert_allclose(h_BxTxH[r, :L], ref_h_1xLxH[0], **TOL)
        np.testing.assert_array_equal(h_BxTxH[r, L:], 0.0)
        np.testing.assert_allclose(c_BxH[r], ref_c[0], **TOL)
        np.testing.assert_allclose(hT_BxH[r], ref_h[0], **TOL)


@pytest.mark.parametrize("kind", ["forward", "reverse", "bidirectional"])
def test_padding_invariance(kind):
    """Garbage past a row's length changes nothing: outputs and final carry equal the row run alone."""
    rngs = nnx.Rngs(1)
    layer = {
        "forward": lambda: LSTM(D, H, rngs=rngs),
        "reverse": lambda: LSTM(D, H, reverse=True, rngs=rngs),
        "bidirectional": lambda: Bidirectional.create(D, H, rngs=rngs),
    }[kind]()
    x_BxTxD = padded_batch(seed=2)
    out, carry = run(layer, jnp.asarray(x_BxTxD), jnp.asarray(LENGTHS_B), return_carry=True)
    other_garbage = padded_batch(seed=2, garbage=1e3)
    out2 = run(layer, jnp.asarray(other_garbage), jnp.asarray(LENGTHS_B))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out2))
    for r, L in enumerate(LENGTHS_B):
        alone, alone_carry = run(layer, jnp.asarray(x_BxTxD[r : r + 1, :L]), return_carry=True)
        np.testing.assert_allclose(np.asarray(out)[r, :L], np.asarray(alone)[0], **TOL)
        np.testing.assert_array_equal(np.asarray(out)[r, L:], 0.0)
        for leaf, alone_leaf in zip(jax.tree.leaves(carry), jax.tree.leaves(alone_carry)):
            np.testing.assert_allclose(np.asarray(leaf)[r], np.asarray(alone_leaf)[0], **TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_no_gradient_flows_from_padding(reverse):
    layer = LSTM(D, H, reverse=reverse, rngs=nnx.Rngs(3))
    x_BxTxD = jnp.asarray(padded_batch(seed=4))
    g_BxTxD = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(layer(x, jnp.asarray(LENGTHS_B))))))(x_BxTxD)
    g_BxTxD = np.asarray(g_BxTxD)
    for r, L in enumerate(LENGTHS_B):
        np.testing.assert_array_equal(g_BxTxD[r, L:], 0.0)
        assert np.all(np.abs(g_BxTxD[r, :L]).sum(-1) > 0)


def test_full_lengths_equal_no_lengths():
    layer = Bidirectional.create(D, H, rngs=nnx.Rngs(5))
    x_BxTxD = jnp.asarray(padded_batch(seed=6, garbage=1.0))
    full_B = jnp.full((B,), T)
    np.testing.assert_allclose(np.asarray(run(layer, x_BxTxD, full_B)), np.asarray(run(layer, x_BxTxD)), **TOL)


def test_forward_layer_is_causal():
    layer = LSTM(D, H, rngs=nnx.Rngs(7))
    x_BxTxD = padded_batch(seed=8, garbage=1.0)
    base = np.asarray(run(layer, jnp.asarray(x_BxTxD)))
    t = 3
    changed_BxTxD = x_BxTxD.copy()
    changed_BxTxD[:, t] += 10.0
    out = np.asarray(run(layer, jnp.asarray(changed_BxTxD)))
    np.testing.assert_array_equal(out[:, :t], base[:, :t])
    assert np.all(np.abs(out[:, t:] - base[:, t:]).max(-1) > 1e-6)


def test_reverse_layer_is_anticausal_within_valid_prefix():
    layer = LSTM(D, H, reverse=True, rngs=nnx.Rngs(7))
    x_BxTxD = padded_batch(seed=8, garbage=1.0)
    base = np.asarray(run(layer, jnp.asarray(x_BxTxD), jnp.asarray(LENGTHS_B)))
    t = 1
    changed_BxTxD = x_BxTxD.copy()
    changed_BxTxD[:, t] += 10.0
    out = np.asarray(run(layer, jnp.asarray(changed_BxTxD), jnp.asarray(LENGTHS_B)))
    # Outputs after t (within the valid prefix) have not seen step t yet in the backward pass.
    for r in range(len(LENGTHS_B)):
        np.testing.assert_array_equal(out[r, t + 1 :], base[r, t + 1 :])
        assert np.abs(out[r, : t + 1] - base[r, : t + 1]).max() > 1e-6


def test_reverse_equals_forward_cell_on_flipped_valid_prefix():
    rev = LSTM(D, H, reverse=True, rngs=nnx.Rngs(9))
    fwd = LSTM(D, H, rngs=nnx.Rngs(10))
    nnx.update(fwd, nnx.state(rev, nnx.Param))  # the same cell weights, run forwards
    x_BxTxD = padded_batch(seed=11)
    out, carry = run(rev, jnp.asarray(x_BxTxD), jnp.asarray(LENGTHS_B), return_carry=True)
    out = np.asarray(out)
    for r, L in enumerate(LENGTHS_B):
        flipped_1xLxD = x_BxTxD[r : r + 1, :L][:, ::-1]
        ref, ref_carry = run(fwd, jnp.asarray(flipped_1xLxD.copy()), return_carry=True)
        np.testing.assert_allclose(out[r, :L], np.asarray(ref)[0, ::-1], **TOL)
        np.testing.assert_array_equal(out[r, L:], 0.0)
        # The backward carry has read the prefix down to step 0.
        np.testing.assert_allclose(np.asarray(carry[1])[r], np.asarray(ref_carry[1])[0], **TOL)
        np.testing.assert_allclose(np.asarray(carry[1])[r], out[r, 0], **TOL)


def test_bidirectional_is_concat_of_numpy_forward_and_backward(np_reference):
    np_lstm, cell_weights = np_reference
    layer = Bidirectional.create(D, H, rngs=nnx.Rngs(12))
    assert layer.out_features == 2 * H
    x_BxTxD = padded_batch(seed=13)
    out, carry = run(layer, jnp.asarray(x_BxTxD), jnp.asarray(LENGTHS_B), return_carry=True)
    out = np.asarray(out)
    assert out.shape == (B, T, 2 * H)
    final_Bx2H = np.asarray(layer.final_output(carry))
    Wf, Uf, bf = cell_weights(layer.forward.cell)
    Wb, Ub, bb = cell_weights(layer.backward.cell)
    assert not np.allclose(Wf, Wb)  # two independent directions, not one shared cell
    for r, L in enumerate(LENGTHS_B):
        xr_1xLxD = x_BxTxD[r : r + 1, :L].astype(np.float64)
        hf, _ = np_lstm(xr_1xLxD, Wf, Uf, bf)
        hb, _ = np_lstm(xr_1xLxD[:, ::-1], Wb, Ub, bb)
        hb = hb[:, ::-1]
        np.testing.assert_allclose(out[r, :L, :H], hf[0], **TOL)
        np.testing.assert_allclose(out[r, :L, H:], hb[0], **TOL)
        np.testing.assert_array_equal(out[r, L:], 0.0)
        # final_output: forward state after the last valid step beside backward state after step 0.
        np.testing.assert_allclose(final_Bx2H[r], np.concatenate([hf[0, L - 1], hb[0, 0]]), **TOL)


def test_bidirectional_needs_one_forward_and_one_reverse_layer():
    f = LSTM(D, H, rngs=nnx.Rngs(0))
    r = LSTM(D, H, reverse=True, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        Bidirectional(f, f)
    with pytest.raises(ConfigError):
        Bidirectional(r, r)
    with pytest.raises(ConfigError):
        Bidirectional(r, f)


@pytest.mark.parametrize("make", ["lstm", "stack"])
def test_carry_continues_a_split_sequence(make):
    """Running [0, t) then [t, T) from the returned carry equals running [0, T) at once."""
    layer = LSTM(D, H, rngs=nnx.Rngs(14)) if make == "lstm" else LSTMStack(D, (H, H), rngs=nnx.Rngs(14))
    x_BxTxD = jnp.asarray(padded_batch(seed=15, garbage=1.0))
    full, full_carry = run(layer, x_BxTxD, return_carry=True)
    plain = run(layer, x_BxTxD)
    assert isinstance(plain, jax.Array)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(full))
    zeros = layer.initial_carry(B)
    assert all(np.all(np.asarray(z) == 0) for z in jax.tree.leaves(zeros))
    np.testing.assert_allclose(np.asarray(run(layer, x_BxTxD, initial_carry=zeros)), np.asarray(full), **TOL)
    t = 4
    first, carry = run(layer, x_BxTxD[:, :t], return_carry=True)
    second, carry2 = run(layer, x_BxTxD[:, t:], initial_carry=carry, return_carry=True)
    np.testing.assert_allclose(np.asarray(first), np.asarray(full)[:, :t], **TOL)
    np.testing.assert_allclose(np.asarray(second), np.asarray(full)[:, t:], **TOL)
    for a, b in zip(jax.tree.leaves(carry2), jax.tree.leaves(full_carry)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def test_bidirectional_carries_continue_in_their_own_time_direction():
    """Forward carry flows from chunk [0, t) into [t, T); the backward carry from [t, T) into [0, t)."""
    layer = Bidirectional.create(D, H, rngs=nnx.Rngs(14))
    x_BxTxD = jnp.asarray(padded_batch(seed=15, garbage=1.0))
    full, (full_cf, full_cb) = run(layer, x_BxTxD, return_carry=True)
    full = np.asarray(full)
    zf, zb = layer.initial_carry(B)
    t = 4
    _, (cf, _) = run(layer, x_BxTxD[:, :t], return_carry=True)
    late, (cf2, cb) = run(layer, x_BxTxD[:, t:], initial_carry=(cf, zb), return_carry=True)
    early, (_, cb2) = run(layer, x_BxTxD[:, :t], initial_carry=(zf, cb), return_carry=True)
    # The backward direction over [t, T) starts at T either way, so the whole late chunk matches.
    np.testing.assert_allclose(np.asarray(late), full[:, t:], **TOL)
    np.testing.assert_allclose(np.asarray(early), full[:, :t], **TOL)
    for a, b in zip(jax.tree.leaves((cf2, cb2)), jax.tree.leaves((full_cf, full_cb))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def test_zero_length_rows_keep_the_initial_carry():
    layer = Bidirectional.create(D, H, rngs=nnx.Rngs(21))
    lengths_B = jnp.asarray([0, 3, 7])
    out, carry = run(layer, jnp.asarray(padded_batch(seed=22)), lengths_B, return_carry=True)
    np.testing.assert_array_equal(np.asarray(out)[0], 0.0)
    for leaf in jax.tree.leaves(carry):
        np.testing.assert_array_equal(np.asarray(leaf)[0], 0.0)
    assert np.all(np.abs(np.asarray(out)[1, :3]).sum(-1) > 0)


def test_final_carry_h_is_last_valid_output():
    layer = LSTM(D, H, rngs=nnx.Rngs(16))
    x_BxTxD = jnp.asarray(padded_batch(seed=17))
    out, carry = run(layer, x_BxTxD, jnp.asarray(LENGTHS_B), return_carry=True)
    last_BxH = np.asarray(out)[np.arange(B), LENGTHS_B - 1]
    np.testing.assert_array_equal(np.asarray(layer.final_output(carry)), last_BxH)


def test_stack_dropout_only_with_key_and_only_between_layers():
    stack = LSTMStack(D, (H, H), dropout=0.5, rngs=nnx.Rngs(18))
    assert stack.out_features == H and len(stack.layers) == 2
    x_BxTxD = jnp.asarray(padded_batch(seed=19))
    lengths = jnp.asarray(LENGTHS_B)
    eval_a = np.asarray(run(stack, x_BxTxD, lengths))
    eval_b = np.asarray(run(stack, x_BxTxD, lengths, key=None))
    np.testing.assert_array_equal(eval_a, eval_b)
    # Without a key the stack is exactly its layers applied in turn.
    manual = run(stack.layers[1], run(stack.layers[0], x_BxTxD, lengths), lengths)
    np.testing.assert_allclose(eval_a, np.asarray(manual), **TOL)

    k1, k2 = jax.random.key(0), jax.random.key(1)
    train_1 = np.asarray(run(stack, x_BxTxD, lengths, key=k1))
    np.testing.assert_array_equal(train_1, np.asarray(run(stack, x_BxTxD, lengths, key=k1)))
    assert not np.allclose(train_1, eval_a)
    assert not np.allclose(train_1, np.asarray(run(stack, x_BxTxD, lengths, key=k2)))
    # Dropout must not leak into padding.
    for r, L in enumerate(LENGTHS_B):
        np.testing.assert_array_equal(train_1[r, L:], 0.0)

    # A single layer has no "between": a key changes nothing, so there is no dropout after the last layer.
    single = LSTMStack(D, H, dropout=0.5, rngs=nnx.Rngs(20))
    np.testing.assert_array_equal(np.asarray(run(single, x_BxTxD, lengths, key=k1)), np.asarray(run(single, x_BxTxD, lengths)))


def test_dropout_function_is_inverted_dropout():
    x = jnp.ones((2000,))
    y = np.asarray(dropout(x, 0.25, jax.random.key(0)))
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.2 < np.mean(y == 0) < 0.3
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.25, None)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.0, jax.random.key(0))), np.asarray(x))


def test_stack_configuration_errors():
    with pytest.raises(ConfigError):
        LSTMStack(D, (H, H), num_layers=3, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        LSTMStack(D, (), rngs=nnx.Rngs(0))
    for rate in (1.0, -0.1):
        with pytest.raises(ConfigError):
            LSTMStack(D, H, dropout=rate, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        LSTM(D, H, unroll=0, rngs=nnx.Rngs(0))
    stack = LSTMStack(D, H, num_layers=3, bidirectional=True, rngs=nnx.Rngs(0))
    assert [layer.out_features for layer in stack.layers] == [2 * H] * 3
    assert stack.layers[1].forward.in_features == 2 * H


def test_auto_refines_native_by_the_size_of_the_weights_and_the_batch():
    if not native.supports(LSTM(2, 4, rngs=nnx.Rngs(0)).cell):
        pytest.skip("the native kernels are not built here")
    small = LSTM(8, 16, rngs=nnx.Rngs(0))  # 24 x 64 floats: native at any batch
    assert small.call_impl(1) == small.call_impl(64) == "native"
    large = LSTM(160, 128, rngs=nnx.Rngs(0))  # 288 x 512 floats, 0.6 MB: XLA below 32 rows
    assert (large.impl, large.call_impl(4), large.call_impl(32)) == ("native", "xla", "native")
    forced = LSTM(160, 128, impl="native", rngs=nnx.Rngs(0))
    assert forced.call_impl(4) == "native"
    # What a call runs (traced, not compiled): the native kernels are an FFI custom call.
    calls_native = lambda B: "ffi_call" in str(jax.make_jaxpr(lambda x: large(x))(jnp.zeros((B, 3, 160))))  # noqa: E731
    assert not calls_native(2) and calls_native(32)
