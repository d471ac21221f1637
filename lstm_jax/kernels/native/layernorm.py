"""``LayerNormLSTMCell`` in the native LSTM kernels: x W and h U in the register tile, their
normalisations and the gate math on each row, and every gradient in one backward call, which
recomputes x W and the gates rather than keeping them (see ``csrc/kernel.h``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.kernels import sharding
from lstm_jax.kernels.common import Static, cell_weights, dense, generic_supports, remat_scan
from lstm_jax.kernels.native.build import mask as mask_of
from lstm_jax.kernels.native.build import register_targets
from lstm_jax.kernels.native.lstm import supports_activations
from lstm_jax.kernels.sharding import BATCH, REPLICATED, TIME_BATCH
from lstm_jax.nn.cells import LayerNormLSTMCell


def _ln_call(name, shapes, mesh, in_specs, out_specs, reduced=(), **attrs):
    """An FFI call per batch shard; the results at the indices ``reduced`` are summed over the shards."""
    call = jax.ffi.ffi_call(name, shapes, vmap_method="sequential")

    def run(*args):
        results = call(*args, **attrs)
        if mesh is None:
            return tuple(results)
        return tuple(sharding.psum(r) if k in reduced else r for k, r in enumerate(results))

    return sharding.per_shard(run, mesh, in_specs, out_specs)


@jax.custom_vjp
def _ln(x, W, U, ln, c0, h0, mask):
    (c, h), out, _ = _ln_fwd_call(x, W, U, ln, c0, h0, mask)
    return (c, h), out


def _ln_fwd_call(x, W, U, ln, c0, h0, mask):
    register_targets()
    T, B, _ = x.shape
    H, f32 = U.shape[0], jnp.float32
    mesh = sharding.batch_mesh(B)
    b = B if mesh is None else B // mesh.size
    shapes = [jax.ShapeDtypeStruct(s, f32) for s in ((T, b, H), (b, H), (b, H), (T, b, H), (T, b, 4 * H), (T, b, 5))]
    run = _ln_call("lstm_jax_ln_fwd", shapes, mesh,
                   (TIME_BATCH, REPLICATED, REPLICATED, REPLICATED, BATCH, BATCH, TIME_BATCH),
                   (TIME_BATCH, BATCH, BATCH) + (TIME_BATCH,) * 3)
    out, c, h, *res = run(x.astype(f32), W.astype(f32), U.astype(f32), ln.astype(f32), c0.astype(f32),
                          h0.astype(f32), mask_of(mask, T, B))
    return (c, h), out, res


def _ln_fwd(x, W, U, ln, c0, h0, mask):
    need_dx = Static(x.perturbed)  # symbolic_zeros: each argument says whether it is perturbed
    x, W, U, ln, c0, h0, mask = jax.custom_derivatives.custom_vjp_primal_tree_values((x, W, U, ln, c0, h0, mask))
    (c, h), out, res = _ln_fwd_call(x, W, U, ln, c0, h0, mask)
    return ((c, h), out), (x, W, U, ln, h0, mask, out, *res, need_dx)


def _ln_bwd(res, cotangents):
    x, W, U, ln, h0, mask, out, cprev, nhu, rstd, need_dx = res
    (dcT, dhT), dout = cotangents
    dcT, dhT, dout = dense(dcT, h0), dense(dhT, h0), dense(dout, out)
    T, B, I = x.shape
    H, f32 = U.shape[0], jnp.float32
    mesh = sharding.batch_mesh(B)
    b = B if mesh is None else B // mesh.size
    with_dx = bool(need_dx.value)
    shapes = [jax.ShapeDtypeStruct(s, f32) for s in ((I + H, 4 * H), (14 * H,), (T if with_dx else 0, b, I), (b, H),
                                                     (b, H))]
    in_specs = (TIME_BATCH,) * 5 + (REPLICATED, REPLICATED, REPLICATED, BATCH, BATCH, TIME_BATCH, TIME_BATCH, BATCH)
    run = _ln_call("lstm_jax_ln_bwd", shapes, mesh, in_specs, (REPLICATED, REPLICATED, TIME_BATCH, BATCH, BATCH),
                   reduced=(0, 1), with_dx=np.int32(with_dx))
    dWU, dln, dx, dc0, dh0 = run(cprev, nhu, rstd, dout.astype(f32), x.astype(f32), W.astype(f32), U.astype(f32),
                                 ln, dcT.astype(f32), dhT.astype(f32), mask_of(mask, T, B), out, h0.astype(f32))
    dx = dx.astype(x.dtype) if with_dx else None
    return dx, dWU[:I].astype(W.dtype), dWU[I:].astype(U.dtype), dln.astype(ln.dtype), dc0, dh0, None


_ln.defvjp(_ln_fwd, _ln_bwd, symbolic_zeros=True)


def supports(cell) -> bool:
    """Whether the kernels run this ``LayerNormLSTMCell`` here (exactly that class; float32, tanh and sigmoid)."""
    W, _, U = cell_weights(cell)
    return (type(cell) is LayerNormLSTMCell and generic_supports(cell)
            and supports_activations(cell.activation, cell.recurrent_activation, W.dtype, U.dtype, cell.carry_dtype))


def layer(cell, x_TxBxD, carry, mask_TxB, *, remat: bool = False):
    """``LayerNormLSTMCell`` in the kernels, in one call each way: x W and h U in the register tile,
    their normalisations and the gate math on each row (in XLA these took longer than the whole
    recurrence), and every gradient (dW and dx too) in the backward call, which recomputes x W and
    the gates instead of keeping them."""
    W, b, U = cell_weights(cell)
    b = jnp.zeros((W.shape[1],), jnp.float32) if b is None else b
    ln = jnp.concatenate([cell.gain_x[...], b, cell.gain_h[...], cell.gain_c[...], cell.shift_c[...]])

    def run(x, carry, mask):
        c0, h0 = carry
        return _ln(x, W, U, ln.astype(jnp.float32), c0, h0.astype(c0.dtype), mask)

    if not remat:
        return run(x_TxBxD, carry, mask_TxB)
    return remat_scan(run, x_TxBxD, carry, mask_TxB)
