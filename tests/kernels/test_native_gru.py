"""The native CPU GRU kernels (lstm_jax.kernels.native.gru) against the generic scan of GRUCell.

The reference is what the layer's scan path runs: ``cell.project`` then ``layers.scan_cell`` over
``GRUCell.step``, with the cell's parameters replaced by the test's arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from harness import max_rel_err

from lstm_jax.errors import ConfigError
from lstm_jax.kernels import native
from lstm_jax.kernels.native import gru as native_gru
from lstm_jax.nn.cells import GRUCell
from lstm_jax.nn.layers import scan_cell

needs_kernels = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")

# B = 29 splits into uneven row blocks on any thread count, with a tile remainder; H = 40 is no
# multiple of any vector width, so every kernel runs partial vectors and padded gate blocks.
T, B, I, H = 11, 29, 3, 40


def problem(seed=0, shape=(T, B, I, H), bias=True):
    """(x [T, B, I], W, U, b, b_hn, h0, mask [T, B]) with random lengths, the first row's zero."""
    T_, B_, I_, H_ = shape
    rng = np.random.default_rng(seed)  # NumPy: no compilation per shape, as eager jax.random would take
    normal = lambda scale, *s: jnp.asarray(rng.normal(scale=scale, size=s), jnp.float32)
    x = normal(1.0, T_, B_, I_)
    W = normal(0.5, I_, 3 * H_)
    U = normal(1 / np.sqrt(H_), H_, 3 * H_)
    b = normal(0.5, 3 * H_) if bias else None
    bhn = normal(0.5, H_) if bias else None
    h0 = normal(1.0, B_, H_)
    lengths = rng.integers(0, T_ + 1, B_)
    lengths[0] = 0
    mask = jnp.asarray(np.arange(T_)[:, None] < lengths[None, :])
    return x, W, U, b, bhn, h0, mask


def scan_gru(x, W, U, b, bhn, h0, mask):
    """GRUCell's generic scan on these arrays (time-major in and out): (h_T, out [T, B, H])."""
    I_, G = W.shape
    graphdef, state = nnx.split(GRUCell(I_, G // 3, use_bias=b is not None, rngs=nnx.Rngs(0)))
    new = {"kernel": W, "recurrent_kernel": U, "bias": b, "recurrent_bias": bhn}
    cell = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(lambda p, _: new[str(p[0].key)], state))
    (h,), out = scan_cell(cell, cell.project(jnp.swapaxes(x, 0, 1)), (h0,), None if mask is None else mask.T)
    return h, jnp.swapaxes(out, 0, 1)


def value_and_grads(layer, x, W, U, b, bhn, h0, mask):
    """A loss of the outputs and of the final state, with its gradient in every array."""
    args = (x, W, U, b, bhn, h0)
    argnums = tuple(k for k, a in enumerate(args) if a is not None)

    def loss(*a):
        h, out = layer(*a, mask)
        return jnp.sum(jnp.sin(out)) + jnp.sum(h * h) - jnp.sum(h), (out, h)

    return jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(*args)


@needs_kernels
@pytest.mark.parametrize("with_mask", [False, True])
def test_forward_and_every_gradient_match_the_scan(with_mask):
    x, W, U, b, bhn, h0, mask = problem()
    mask = mask if with_mask else None
    got = value_and_grads(native_gru.gru_layer, x, W, U, b, bhn, h0, mask)
    ref = value_and_grads(scan_gru, x, W, U, b, bhn, h0, mask)
    assert len(jax.tree.leaves(got)) == 3 + 6  # loss, out, h; dx, dW, dU, db, db_hn, dh0
    assert max_rel_err(got, ref) <= 1e-5


@needs_kernels
def test_lengths_freeze_the_carry_and_zero_the_outputs():
    """Past its length a row's output is zero and its final state is its state at its length; a
    zero-length row keeps h0."""
    x, W, U, b, bhn, h0, mask = problem(1)
    h, out = native_gru.gru_layer(x, W, U, b, bhn, h0, mask)
    lengths = np.asarray(mask.sum(0))
    out = np.asarray(out)
    assert lengths[0] == 0 and lengths.max() > 0
    np.testing.assert_array_equal(np.asarray(h)[0], np.asarray(h0)[0])
    for row, n in enumerate(lengths):
        assert not np.any(out[n:, row])
        if n > 0:
            np.testing.assert_array_equal(np.asarray(h)[row], out[n - 1, row])


@needs_kernels
def test_without_biases():
    x, W, U, _, _, h0, mask = problem(2, bias=False)
    got = value_and_grads(native_gru.gru_layer, x, W, U, None, None, h0, mask)
    ref = value_and_grads(scan_gru, x, W, U, None, None, h0, mask)
    assert max_rel_err(got, ref) <= 1e-5


@needs_kernels
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 5, 2, 7), (9, 13, 70, 65), (4, 64, 129, 8), (3, 7, 5, 33)])
def test_odd_shapes(shape):
    """One step and one row; inputs wider than a tile's 4 vectors (dx and dW in several column
    blocks, dW row tiles ending off the tile size); hidden sizes below one vector and just past a
    multiple of one."""
    args = problem(sum(shape), shape)
    assert max_rel_err(value_and_grads(native_gru.gru_layer, *args), value_and_grads(scan_gru, *args)) <= 1e-5


@needs_kernels
def test_gradients_are_the_same_bits_from_run_to_run():
    """Threads finish their row blocks in any order; the gradients must not depend on it."""
    args = problem(3, (13, 53, 6, 72))
    first = value_and_grads(native_gru.gru_layer, *args)
    for _ in range(5):
        again = value_and_grads(native_gru.gru_layer, *args)
        for p, q in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


@needs_kernels
def test_no_input_gradient_skips_dx_and_keeps_the_rest():
    """With x not differentiated (a model's first layer) the backward kernel leaves dx out."""
    x, W, U, b, bhn, h0, mask = problem(4)

    def grads(layer):
        def loss(W, U, b, bhn, h0):
            h, out = layer(x, W, U, b, bhn, h0, mask)
            return jnp.sum(jnp.sin(out)) + jnp.sum(h * h)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))

    hlo = grads(native_gru.gru_layer).lower(W, U, b, bhn, h0).as_text()
    assert "lstm_jax_gru_bwd_no_dx" in hlo and '"lstm_jax_gru_bwd"' not in hlo
    assert max_rel_err(grads(native_gru.gru_layer)(W, U, b, bhn, h0), grads(scan_gru)(W, U, b, bhn, h0)) <= 1e-5


@needs_kernels
def test_only_the_final_state_used():
    """The outputs' cotangent is then a symbolic zero: it must enter the kernel as zeros."""
    x, W, U, b, bhn, h0, mask = problem(5)

    def grads(layer):
        def loss(x, W, U, b):
            h, _ = layer(x, W, U, b, bhn, h0, mask)
            return jnp.sum(h * h)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, W, U, b)

    assert max_rel_err(grads(native_gru.gru_layer), grads(scan_gru)) <= 1e-5


@needs_kernels
def test_inference_forward_matches():
    """Without a gradient the forward kernel saves no residuals; same outputs."""
    args = problem(6)
    got = jax.jit(native_gru.gru_layer)(*args)
    assert max_rel_err(got, scan_gru(*args)) <= 1e-5
    assert "lstm_jax_gru_fwd_infer" in jax.jit(native_gru.gru_layer).lower(*args).as_text()


@needs_kernels
def test_under_vmap_runs_each_member():
    x, W, U, b, bhn, h0, mask = problem(7)
    xs = jnp.stack([x, -x])
    run = lambda x: native_gru.gru_layer(x, W, U, b, bhn, h0, mask)
    h, out = jax.jit(jax.vmap(run))(xs)
    for k in range(2):
        assert max_rel_err((h[k], out[k]), run(xs[k])) <= 1e-6


@needs_kernels
def test_large_inputs_saturate_instead_of_overflowing():
    x, W, U, b, bhn, h0, _ = problem(8)
    got = native_gru.gru_layer(x * 1e4, W, U, b, bhn, h0)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in got)
    assert max_rel_err(got, scan_gru(x * 1e4, W, U, b, bhn, h0, None)) <= 1e-5


def test_other_activations_are_refused():
    x, W, U, b, bhn, h0, _ = problem(10, (2, 3, 2, 4))
    with pytest.raises(ConfigError, match="tanh"):
        native_gru.gru_layer(x, W, U, b, bhn, h0, activation="relu")
    with pytest.raises(ConfigError, match="sigmoid"):
        native_gru.gru_layer(x, W, U, b, bhn, h0, recurrent_activation="hard_sigmoid")


@needs_kernels
def test_other_dtypes_and_shapes_are_refused():
    x, W, U, b, bhn, h0, _ = problem(11, (2, 3, 2, 4))
    with pytest.raises(ConfigError, match="float32"):
        native_gru.gru_layer(x, W.astype(jnp.bfloat16), U, b, bhn, h0)
    with pytest.raises(ConfigError, match="W"):
        native_gru.gru_layer(x, W[:, :-1], U, b, bhn, h0)


@needs_kernels
def test_a_grucell_as_a_layer_matches_its_scan():
    """native_gru.layer on a GRUCell's own parameters: outputs, final carry and parameter gradients."""
    x, _, _, _, _, h0, mask = problem(12, (6, 9, 4, 24))
    cell = GRUCell(4, 24, rngs=nnx.Rngs(1))
    assert native_gru.supports(cell)
    graphdef, params = nnx.split(cell)

    def run(native, params):
        c = nnx.merge(graphdef, params)
        if native:
            (h,), out = native_gru.layer(c, x, (h0,), mask)
            return h, out
        (h,), out = scan_cell(c, c.project(jnp.swapaxes(x, 0, 1)), (h0,), mask.T)
        return h, jnp.swapaxes(out, 0, 1)

    def loss(params, native):
        h, out = run(native, params)
        return jnp.sum(jnp.sin(out)) + jnp.sum(h * h), (h, out)

    got, ref = (jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(params, n) for n in (True, False))
    assert max_rel_err(got, ref) <= 1e-5


def test_cells_the_native_gru_does_not_run():
    from lstm_jax.nn.cells import LSTMCell

    assert not native_gru.supports(LSTMCell(3, 8, rngs=nnx.Rngs(0)))
    assert not native_gru.supports(GRUCell(3, 8, activation="relu", rngs=nnx.Rngs(0)))
    assert not native_gru.supports(GRUCell(3, 8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))


@needs_kernels
def test_a_gru_layer_with_remat_matches_its_scan():
    """remat has no native GRU variant: the layer runs the generic path's remat instead. (A GRU
    layer's native kernels against its scan, every gradient: tests/kernels/test_paths.py.)"""
    from lstm_jax import LSTM

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(5, 7, 3)), jnp.float32)
    lengths = jnp.array([7, 4, 0, 1, 6])
    scan = LSTM(3, 6, cell="gru", impl="scan", rngs=nnx.Rngs(0))
    remat = LSTM(3, 6, cell="gru", remat=True, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(remat(x, lengths)), np.asarray(scan(x, lengths)), rtol=1e-5, atol=1e-5)
