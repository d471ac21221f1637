"""The native CPU kernels: every ISA build and thread split against the XLA fast path and NumPy."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from harness import assert_same_bits_on_repeat, max_rel_err

from lstm_jax.kernels import native
from lstm_jax.kernels import xla as fast
from lstm_jax.kernels.native import lstm as native_lstm

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")

# B = 29 splits into uneven row blocks on any thread count, with a tile remainder; H = 40 is no
# multiple of any vector width, so every kernel runs partial vectors.
T, B, D, H = 11, 29, 3, 40


def problem(seed=0):
    k = jax.random.split(jax.random.key(seed), 7)
    x = jax.random.normal(k[0], (T, B, D))
    W = jax.random.normal(k[1], (D, 4 * H)) * 0.5
    b = jax.random.normal(k[2], (4 * H,)) * 0.5
    U = jax.random.normal(k[3], (H, 4 * H)) / np.sqrt(H)
    carry = (jax.random.normal(k[4], (B, H)), jax.random.normal(k[5], (B, H)))
    lengths = jax.random.randint(k[6], (B,), 0, T + 1)
    mask = jnp.arange(T)[:, None] < lengths[None, :]
    return x, W, b, U, carry, mask


def value_and_grads(use_native, x, W, b, U, carry, mask):
    def loss(x, W, b, U, carry):
        (c, h), out = (native_lstm if use_native else fast).lstm(x, W, b, U, carry, mask)
        return jnp.sum(jnp.sin(out)) + jnp.sum(c * c) - jnp.sum(h), (out, c, h)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(x, W, b, U, carry)


@pytest.mark.parametrize("with_mask", [False, True])
def test_native_matches_the_xla_fast_path(with_mask):
    x, W, b, U, carry, mask = problem()
    mask = mask if with_mask else None
    got = value_and_grads(True, x, W, b, U, carry, mask)
    ref = value_and_grads(False, x, W, b, U, carry, mask)
    assert max_rel_err(got, ref) <= 1e-5


def test_native_forward_matches_numpy(np_reference):
    np_lstm, _ = np_reference
    x, W, b, U, (c0, h0), _ = problem(1)
    (c, h), out = jax.jit(native_lstm.lstm)(x, W, b, U, (c0, h0))
    as64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    ref_out, (ref_c, ref_h) = np_lstm(as64(x).swapaxes(0, 1), as64(W), as64(U), as64(b), c0_BxH=as64(c0),
                                      h0_BxH=as64(h0))
    assert max_rel_err((out, c, h), (ref_out.swapaxes(0, 1), ref_c, ref_h)) <= 1e-5


def test_native_under_vmap_runs_each_member():
    """Bidirectional-style batching of whole layers: vmap over the native call, against one at a time."""
    x, W, b, U, carry, mask = problem(2)
    xs = jnp.stack([x, -x])
    run = lambda x: native_lstm.lstm(x, W, b, U, carry, mask)  # noqa: E731
    (c, h), out = jax.jit(jax.vmap(run))(xs)
    for k in range(2):
        (ck, hk), outk = run(xs[k])
        assert max_rel_err((out[k], c[k], h[k]), (outk, ck, hk)) <= 1e-6


def test_large_inputs_saturate_instead_of_overflowing():
    """Pre-activations far outside exp's float range give saturated gates, not inf or NaN."""
    x, W, b, U, carry, _ = problem(4)
    (c, h), out = native_lstm.lstm(x * 1e4, W, b, U, carry)
    (rc, rh), rout = fast.lstm(x * 1e4, W, b, U, carry)
    assert np.all(np.isfinite(np.asarray(out)))
    assert max_rel_err((out, c, h), (rout, rc, rh)) <= 1e-5


def test_gradients_are_the_same_from_run_to_run():
    """Threads finish their row blocks in any order; the gradients must not depend on it."""
    args = problem(5)
    assert_same_bits_on_repeat(lambda: value_and_grads(True, *args), 5)


def test_no_input_gradient_skips_dx_and_keeps_the_rest():
    """With x not differentiated (a model's first layer) the backward kernel leaves dx out."""
    x, W, b, U, carry, mask = problem(6)

    def grads(use_native):
        def loss(W, b, U):
            (c, h), out = (native_lstm if use_native else fast).lstm(x, W, b, U, carry, mask)
            return jnp.sum(jnp.sin(out)) + jnp.sum(c * h)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    hlo = grads(True).lower(W, b, U).as_text()
    assert "lstm_jax_bwd_no_dx" in hlo and '"lstm_jax_bwd"' not in hlo
    assert max_rel_err(grads(True)(W, b, U), grads(False)(W, b, U)) <= 1e-5


def test_only_the_final_state_used():
    """The outputs' cotangent is then a symbolic zero: it must enter the kernels as zeros."""
    x, W, b, U, carry, mask = problem(7)

    def grads(use_native):
        def loss(x, W, U):
            (_, h), _ = (native_lstm if use_native else fast).lstm(x, W, b, U, carry, mask)
            return jnp.sum(h * h)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, W, U)

    assert max_rel_err(grads(True), grads(False)) <= 1e-5


def test_weight_gradient_partials_beyond_their_memory_budget():
    """At H = 1024 a row block's [dW; dU] partial is 17 MB: four blocks exceed the kernel's 64 MB,
    so lanes run several blocks each; the sums must not change."""
    k = jax.random.split(jax.random.key(8), 4)
    T_, B_, D_, H_ = 3, 24, 5, 1024
    x = jax.random.normal(k[0], (T_, B_, D_))
    W = jax.random.normal(k[1], (D_, 4 * H_)) * 0.3
    U = jax.random.normal(k[2], (H_, 4 * H_)) / np.sqrt(H_)
    b = jax.random.normal(k[3], (4 * H_,)) * 0.3
    zeros = jnp.zeros((B_, H_))
    assert max_rel_err(value_and_grads(True, x, W, b, U, (zeros, zeros), None),
                       value_and_grads(False, x, W, b, U, (zeros, zeros), None)) <= 1e-5


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (9, 13, 70, 65), (3, 64, 129, 8)])
def test_odd_shapes(shape):
    """One step and one row; inputs wider than a tile's 4 vectors (dx and dW in several column
    blocks, dW row tiles ending off the tile size); a hidden size below one vector."""
    T_, B_, D_, H_ = shape
    k = jax.random.split(jax.random.key(sum(shape)), 7)
    x = jax.random.normal(k[0], (T_, B_, D_))
    W = jax.random.normal(k[1], (D_, 4 * H_)) * 0.5
    b = jax.random.normal(k[2], (4 * H_,)) * 0.5
    U = jax.random.normal(k[3], (H_, 4 * H_)) / np.sqrt(H_)
    carry = (jax.random.normal(k[4], (B_, H_)), jax.random.normal(k[5], (B_, H_)))
    mask = jnp.arange(T_)[:, None] < jax.random.randint(k[6], (B_,), 0, T_ + 1)[None, :]
    assert max_rel_err(value_and_grads(True, x, W, b, U, carry, mask),
                       value_and_grads(False, x, W, b, U, carry, mask)) <= 1e-5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_huge_pages_for_xlas_temporary_block():
    """A training forward whose outputs pass 32 MB (so that malloc maps XLA's temporaries as a block
    of their own) asks huge pages for that whole block; the results are those of the XLA path."""
    from lstm_jax import _native

    k = jax.random.split(jax.random.key(9), 4)
    T_, B_, D_, H_ = 64, 256, 8, 128  # gates alone: 64 * 256 * 512 floats, 34 MB
    x = jax.random.normal(k[0], (T_, B_, D_))
    W = jax.random.normal(k[1], (D_, 4 * H_)) * 0.5
    U = jax.random.normal(k[2], (H_, 4 * H_)) / np.sqrt(H_)
    b = jax.random.normal(k[3], (4 * H_,)) * 0.5
    zeros = jnp.zeros((B_, H_))
    before = _native.advised_blocks()
    got = jax.block_until_ready(value_and_grads(True, x, W, b, U, (zeros, zeros), None))  # dispatch is async
    assert _native.advised_blocks() > before
    assert max_rel_err(got, value_and_grads(False, x, W, b, U, (zeros, zeros), None)) <= 1e-5
