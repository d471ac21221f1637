"""The native CPU recurrence of ``GRUCell`` (PyTorch's convention), as XLA FFI custom calls.

The GRU's counterpart of :mod:`.lstm` (registered in :mod:`lstm_jax.kernels.native` as ``GRUCell``'s entry): the C++ kernels in
``lstm_jax/csrc/gru_*`` run a whole layer per call. Forward: per step one register tile holds
x (W_r, W_z, 0, W_n) + h (U_r, U_z, U_n), so the input projection is never written out and both
halves of n (x W_n and h U_n + b_hn, which the reset gate scales alone) are at hand for the gate
math. Backward: every gradient in one pass, the gate gradients of a few steps kept in cache and
added into dW, dU, db and db_hn as one matmul; dx is skipped when x needs no gradient; the sums
run in a fixed order, so the gradients are the same bits from run to run.

:func:`gru_layer` is the differentiable entry point (``jax.custom_vjp``). Semantics are those of
``nn.layers.scan_cell`` with ``GRUCell.step``: past a row's length the carry is frozen and the output
is zero. float32, tanh and sigmoid, on the CPU. The handlers live in the same extension as the
LSTM's (``lstm_jax._native``), whose module exports them as PyCapsules beside the LSTM's; they share
its runtime, so the environment variables of :mod:`.build` (threads, ISA, huge
pages) apply to them too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lstm_jax.errors import ConfigError
from lstm_jax.kernels import sharding, xla
from lstm_jax.kernels.common import Static, dense
from lstm_jax.kernels.native.build import available, register_targets
from lstm_jax.kernels.native.build import mask as mask_of
from lstm_jax.kernels.sharding import BATCH, REPLICATED, TIME_BATCH
from lstm_jax.nn.cells import ACTIVATIONS, GRUCell, get_activation

Array = jax.Array


def forward(x_TxBxI: Array, W_IxG: Array, b_G: Array, U_HxG: Array, b_hn_H: Array, h0_BxH: Array,
            mask_TxB: Array | None, *, save: bool):
    """The forward kernel: (out [T, B, H], hT [B, H]) and, with ``save``, the residuals of the
    backward pass, (r, z, n, h U_n + b_hn) per step: [T, B, 4H]."""
    register_targets()
    T, B, _ = x_TxBxI.shape
    H = U_HxG.shape[0]
    f32 = jnp.float32
    mesh = sharding.batch_mesh(B)  # with several devices: once per batch shard (kernels.sharding)
    b = B if mesh is None else B // mesh.size
    shapes = [jax.ShapeDtypeStruct((T, b, H), f32), jax.ShapeDtypeStruct((b, H), f32)]
    if save:
        shapes.append(jax.ShapeDtypeStruct((T, b, 4 * H), f32))
    call = jax.ffi.ffi_call("lstm_jax_gru_fwd" if save else "lstm_jax_gru_fwd_infer", shapes,
                            vmap_method="sequential")
    in_specs = (TIME_BATCH, REPLICATED, REPLICATED, REPLICATED, REPLICATED, BATCH, TIME_BATCH)
    out_specs = (TIME_BATCH, BATCH) + ((TIME_BATCH,) if save else ())
    run = sharding.per_shard(lambda *args: tuple(call(*args)), mesh, in_specs, out_specs)
    return run(x_TxBxI, W_IxG, b_G, U_HxG, b_hn_H, h0_BxH, mask_of(mask_TxB, T, B))


def backward(gates_TxBx4H: Array, dout_TxBxH: Array, W_IxG: Array, U_HxG: Array, dhT_BxH: Array,
             mask_TxB: Array | None, x_TxBxI: Array, out_TxBxH: Array, h0_BxH: Array, *, with_dx: bool = True):
    """The backward kernel, from the residuals, the inputs (x, h0) and the output.

    ``mask_TxB`` must mark a prefix of each row. Returns (db [3H], db_hn [H], dWU [I + H, 3H]
    (dW over dU), dx [T, B, I] (None without ``with_dx``), dh0 [B, H]).
    """
    register_targets()
    T, B, G4 = gates_TxBx4H.shape
    H, I = G4 // 4, W_IxG.shape[0]
    f32 = jnp.float32
    mesh = sharding.batch_mesh(B)
    b = B if mesh is None else B // mesh.size
    shapes = [jax.ShapeDtypeStruct((3 * H,), f32), jax.ShapeDtypeStruct((H,), f32),
              jax.ShapeDtypeStruct((I + H, 3 * H), f32)]
    shapes += [jax.ShapeDtypeStruct((T, b, I), f32)] if with_dx else []
    shapes.append(jax.ShapeDtypeStruct((b, H), f32))
    call = jax.ffi.ffi_call("lstm_jax_gru_bwd" if with_dx else "lstm_jax_gru_bwd_no_dx", shapes,
                            vmap_method="sequential")

    def shard(*args):
        db, dbhn, dWU, *rest = call(*args)
        if mesh is not None:  # each shard's weight gradients cover its rows only
            db, dbhn, dWU = sharding.psum(db), sharding.psum(dbhn), sharding.psum(dWU)
        return (db, dbhn, dWU, *rest)

    in_specs = (TIME_BATCH, TIME_BATCH, REPLICATED, REPLICATED, BATCH, TIME_BATCH, TIME_BATCH, TIME_BATCH, BATCH)
    out_specs = (REPLICATED,) * 3 + ((TIME_BATCH,) if with_dx else ()) + (BATCH,)
    run = sharding.per_shard(shard, mesh, in_specs, out_specs)
    results = run(gates_TxBx4H, dout_TxBxH, W_IxG, U_HxG, dhT_BxH, mask_of(mask_TxB, T, B), x_TxBxI, out_TxBxH,
                  h0_BxH)
    if with_dx:
        return tuple(results)
    db, dbhn, dWU, dh0 = results
    return db, dbhn, dWU, None, dh0


# -- the differentiable layer ----------------------------------------------------------------------

@jax.custom_vjp
def _gru(x, W, U, b, bhn, h0, mask):
    out, hT = forward(x, W, b, U, bhn, h0, mask, save=False)
    return hT, out


def _gru_fwd(x, W, U, b, bhn, h0, mask):
    # symbolic_zeros: each argument comes as a CustomVJPPrimal, which says whether it is perturbed.
    need_dx = Static(x.perturbed)
    x, W, U, b, bhn, h0, mask = jax.custom_derivatives.custom_vjp_primal_tree_values((x, W, U, b, bhn, h0, mask))
    out, hT, gates = forward(x, W, b, U, bhn, h0, mask, save=True)
    return (hT, out), (x, W, U, h0, mask, out, gates, need_dx)


def _gru_bwd(res, cotangents):
    x, W, U, h0, mask, out, gates, need_dx = res
    dhT, dout = cotangents
    dhT, dout = dense(dhT, h0), dense(dout, out)
    db, dbhn, dWU, dx, dh0 = backward(gates, dout, W, U, dhT, mask, x, out, h0, with_dx=need_dx.value)
    I = x.shape[-1]
    return dx, dWU[:I], dWU[I:], db, dbhn, dh0, None


_gru.defvjp(_gru_fwd, _gru_bwd, symbolic_zeros=True)


def _check(activation, recurrent_activation, arrays) -> None:
    act, rec = get_activation(activation), get_activation(recurrent_activation)
    if act is not ACTIVATIONS["tanh"] or rec is not ACTIVATIONS["sigmoid"]:
        raise ConfigError("the native GRU runs activation='tanh' with recurrent_activation='sigmoid' only")
    for name, a in arrays.items():
        if a is not None and jnp.dtype(a.dtype) != jnp.float32:
            raise ConfigError(f"the native GRU runs float32 only, got {name} in {jnp.dtype(a.dtype).name}")
    if not available():
        raise ConfigError("the native GRU needs lstm_jax._native built with its GRU kernels, on the CPU backend")


def gru_layer(
    x_TxBxI: Array,
    W_IxG: Array,
    U_HxG: Array,
    b_G: Array | None,
    b_hn_H: Array | None,
    h0_BxH: Array,
    mask_TxB: Array | None = None,
    *,
    activation: str | Callable = "tanh",
    recurrent_activation: str | Callable = "sigmoid",
) -> tuple[Array, Array]:
    """``GRUCell`` over a time-major sequence in the native kernels. Returns (h_T [B, H], out [T, B, H]).

    ``W_IxG`` [I, 3H], ``U_HxG`` [H, 3H] and ``b_G`` [3H] hold the gate blocks (r, z, n) as
    ``GRUCell`` does (kernel, recurrent_kernel, bias); ``b_hn_H`` [H] is its recurrent_bias. A
    bias may be None (a cell without biases). ``mask_TxB`` marks the valid steps, a prefix of
    each row. Differentiable in every array; the input's gradient is not computed when x is not
    being differentiated. Raises ConfigError for other activations, dtypes other than float32, or
    where the kernels are not available.
    """
    _check(activation, recurrent_activation,
           {"x": x_TxBxI, "W": W_IxG, "U": U_HxG, "b": b_G, "b_hn": b_hn_H, "h0": h0_BxH})
    H = U_HxG.shape[0]
    if (x_TxBxI.ndim != 3 or W_IxG.shape != (x_TxBxI.shape[-1], 3 * H) or U_HxG.shape != (H, 3 * H)
            or h0_BxH.shape != (x_TxBxI.shape[1], H) or (b_G is not None and b_G.shape != (3 * H,))
            or (b_hn_H is not None and b_hn_H.shape != (H,))
            or (mask_TxB is not None and jnp.shape(mask_TxB) != x_TxBxI.shape[:2])):
        raise ConfigError(
            "the native GRU needs x [T, B, I], W [I, 3H], U [H, 3H], b [3H], b_hn [H], h0 [B, H], mask [T, B]; got "
            f"x {x_TxBxI.shape}, W {W_IxG.shape}, U {U_HxG.shape}, b {None if b_G is None else b_G.shape}, "
            f"b_hn {None if b_hn_H is None else b_hn_H.shape}, h0 {h0_BxH.shape}, "
            f"mask {None if mask_TxB is None else jnp.shape(mask_TxB)}")
    b = jnp.zeros((3 * H,), jnp.float32) if b_G is None else b_G
    bhn = jnp.zeros((H,), jnp.float32) if b_hn_H is None else b_hn_H
    mask = None if mask_TxB is None else jnp.asarray(mask_TxB).astype(bool)
    return _gru(x_TxBxI, W_IxG, U_HxG, b, bhn, h0_BxH, mask)


# -- GRUCell as a layer ----------------------------------------------------------------------------

def supports(cell) -> bool:
    """Whether the native GRU runs ``cell``: exactly ``GRUCell``, float32 parameters and compute,
    tanh and sigmoid, with the kernels available here."""
    if type(cell) is not GRUCell or not available():
        return False
    params = [cell.kernel[...], cell.recurrent_kernel[...]]
    params += [p[...] for p in (cell.bias, cell.recurrent_bias) if p is not None]
    return (
        cell.activation is ACTIVATIONS["tanh"]
        and cell.recurrent_activation is ACTIVATIONS["sigmoid"]
        and cell.dtype in (None, jnp.float32)
        and jnp.dtype(cell.carry_dtype) == jnp.float32
        and all(p.dtype == jnp.float32 for p in params)
    )


def layer(cell, x_TxBxI: Array, carry: tuple[Array], mask_TxB: Array | None = None, *, remat: bool = False):
    """``cell`` (a ``GRUCell``, see :func:`supports`) over a time-major sequence in the native
    kernels. Returns (final carry (h,), outputs [T, B, H]): what ``nn.layers.scan_cell`` gives, time-major.

    The GRU kernels keep every step; ``remat`` runs the generic XLA path, which recomputes."""
    if remat:
        return xla.cell_layer(cell, x_TxBxI, carry, mask_TxB, remat=True)
    (h0,) = carry
    h, out = gru_layer(
        x_TxBxI, cell.kernel[...], cell.recurrent_kernel[...],
        None if cell.bias is None else cell.bias[...],
        None if cell.recurrent_bias is None else cell.recurrent_bias[...],
        h0, mask_TxB, activation=cell.activation, recurrent_activation=cell.recurrent_activation,
    )
    return (h,), out
