"""The native CPU recurrence of the LSTM cells (standard, Greff's variants, layer-normalised), as XLA FFI custom calls.

The C++ kernels in ``lstm_jax/csrc`` are built into ``lstm_jax._native`` by ``pip install``
(setup.py). Each runs a whole layer in one call: per step a register-tiled matmul of [x_t, h] by
[W; U], with the gate math done on the tile while it is still in registers. Batch rows are
independent, so the rows are split into blocks that each run the whole sequence, on XLA's own
intra-op threads, with no synchronisation between steps. The backward kernel gives every gradient:
the gate gradients of a few steps at a time stay in cache and go straight into dW, dU and db (so
they never reach memory), and dx is skipped when the input needs no gradient.

The same kernels run Greff et al.'s variants (``np``, ``peephole``, ``nig``, ``nfg``, ``nog``,
``niaf``, ``noaf``, ``cifg``), picked by a ``variant`` attribute: each variant's gate math is its own
compiled instantiation, with only the gate blocks it has in the tile, and the peepholes' gradient
comes from the backward kernel beside db. The layer-normalised LSTM is a variant too: the tile
computes x W and h U apart, and the kernels normalise them, and c, row by row; its backward kernel
recomputes x W and the gates rather than keeping them (see ``csrc/kernel.h``). FGR is the peephole
variant with a second recurrent product in the same register tile, the previous step's gates
times R, and a third part of the carry (those gates); its backward pass carries their gradient and
sums dR beside dW and dU.

One call may also run several layers of one shape over the same input side by side
(:func:`lstm_layers`): ``Bidirectional`` runs both its directions so, as one parallel loop over
(direction, row block) on the same threads, the backward direction reading each row's valid
prefix in reverse and both writing their halves of the [T, B, 2H] output in place; nothing is
reversed or concatenated around the kernels (two separate calls, each on every thread, took about
15% longer per FLOP than one layer; see ``csrc/kernel.h``).

With several devices each call runs once per batch shard (``shard_map``, see
:mod:`lstm_jax.kernels.sharding`), so a data-parallel step keeps its batch split.

Where the extension is missing (no compiler at install time) :func:`available` is False and
``impl='auto'`` uses the XLA fast path instead. Environment: ``LSTM_JAX_NATIVE_THREADS`` sets the
thread count (default: the CPUs this process may use); ``LSTM_JAX_NATIVE_ISA=avx2|generic``
forces a narrower kernel; ``LSTM_JAX_NATIVE_HUGEPAGES=0`` stops the kernels asking Linux for
transparent huge pages over their outputs and over the block of XLA's temporaries that holds them
(which a training step otherwise faults in afresh 4 KB at a time: see ``csrc/runtime.cc``). All
are read once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lstm_jax.kernels import sharding
from lstm_jax.kernels.sharding import BATCH, REPLICATED, TIME_BATCH

try:
    from lstm_jax import _native
except ImportError:  # built without a compiler, or an unsupported platform
    _native = None

Array = jax.Array
_TARGETS = {"lstm_jax_fwd": "lstm_fwd", "lstm_jax_fwd_infer": "lstm_fwd_infer", "lstm_jax_bwd": "lstm_bwd",
            "lstm_jax_bwd_no_dx": "lstm_bwd_no_dx", "lstm_jax_ln_fwd": "lstm_ln_fwd", "lstm_jax_ln_bwd": "lstm_ln_bwd"}
_registered = False

# The LSTM variants of the kernels, as bits (csrc/kernel.h's Variant): gates present, coupling,
# linear activations, peepholes.
INPUT, FORGET, OUTPUT, COUPLED, LINEAR_INPUT, LINEAR_OUTPUT, PEEPHOLE = 1, 2, 4, 8, 16, 32, 64
GATE_RECURRENCE = 256  # FGR: with STANDARD | PEEPHOLE
STANDARD = INPUT | FORGET | OUTPUT


def built() -> bool:
    """Whether the extension was built and imports."""
    return _native is not None


def available() -> bool:
    """Whether the native kernels can run here: built, and JAX's default backend is the CPU."""
    return built() and jax.default_backend() == "cpu"


def isa() -> str | None:
    """The kernel the CPU got: 'avx512', 'avx2' or 'generic' (None when not built)."""
    return None if _native is None else _native.isa


def threads() -> int | None:
    """The most threads one call uses (None when not built)."""
    return None if _native is None else _native.threads


def _register() -> None:
    global _registered
    if not _registered:
        for target, name in _TARGETS.items():
            jax.ffi.register_ffi_target(target, getattr(_native, name), platform="cpu")
        _registered = True


def _mask(mask_TxB: Array | None, T: int, B: int) -> Array:
    return jnp.ones((T, B), bool) if mask_TxB is None else mask_TxB.astype(bool)


LAYER_TIME_BATCH = P(None, None, sharding.AXIS)  # [N, T, B, ...]


def _peepholes(p_Nx3H: Array | None, N: int) -> Array:
    return jnp.zeros((N, 0), jnp.float32) if p_Nx3H is None else p_Nx3H.astype(jnp.float32)


def _empty_carry(N: int, B: int) -> Array:
    return jnp.zeros((N, B, 0), jnp.float32)


def forward(x_TxBxI: Array, W_NxIxG: Array, b_NxG: Array, U_NxHxG: Array, carry0, mask_TxB: Array | None, *,
            save: bool, variant: int = STANDARD, p_Nx3H: Array | None = None, R_Nx3Hx3H: Array | None = None,
            reversed: int = 0):
    """The forward pass of N layers of one shape over the same x, input projection included (float32).

    ``variant`` picks the cell (the standard LSTM, or a peephole variant: see ``csrc/kernel.h``);
    G is its number of gate blocks times H, and ``p_Nx3H`` the layers' peepholes (p_i, p_f, p_o;
    zeros for an absent gate) when it has them. ``carry0`` is (c0 [N, B, H], h0 [N, B, H]), and with
    ``GATE_RECURRENCE`` (FGR) also a0 [N, B, 3H], the gates before the first step, with
    ``R_Nx3Hx3H`` the gate recurrence. Bit l of ``reversed``: layer l runs backwards over
    each row's valid prefix (``mask_TxB``), its outputs aligned with x. The layers run at the same
    time, on the same threads. Returns (out [T, B, N H] (layer l's in columns l H..(l+1) H), the
    final carry (cT, hT[, aT]) and, with ``save``, the residuals of the backward pass: the activated
    gates [N, T, B, G] and the cell state entering each step [N, T, B, H] (in step order); else None).
    """
    _register()
    T, B, _ = x_TxBxI.shape
    N, H, G = U_NxHxG.shape
    f32 = jnp.float32
    fgr = bool(variant & GATE_RECURRENCE)
    A = 3 * H if fgr else 0
    mesh = sharding.batch_mesh(B)
    b = B if mesh is None else B // mesh.size  # under shard_map the call sees one shard's rows
    shapes = [jax.ShapeDtypeStruct((T, b, N * H), f32), jax.ShapeDtypeStruct((N, b, H), f32),
              jax.ShapeDtypeStruct((N, b, H), f32), jax.ShapeDtypeStruct((N, b, A), f32)]
    if save:
        shapes += [jax.ShapeDtypeStruct((N, T, b, G), f32), jax.ShapeDtypeStruct((N, T, b, H), f32)]
    call = jax.ffi.ffi_call("lstm_jax_fwd" if save else "lstm_jax_fwd_infer", shapes, vmap_method="sequential")
    out_specs = (TIME_BATCH,) * 4 + ((LAYER_TIME_BATCH, LAYER_TIME_BATCH) if save else ())
    in_specs = (TIME_BATCH, REPLICATED, REPLICATED, REPLICATED, REPLICATED, REPLICATED, TIME_BATCH, TIME_BATCH,
                TIME_BATCH, TIME_BATCH)
    attrs = {"variant": np.int32(variant), "reversed": np.int32(reversed)}
    call = sharding.per_shard(lambda *args, ffi=call: tuple(ffi(*args, **attrs)), mesh, in_specs, out_specs)
    c0, h0, *a0 = carry0
    R = jnp.zeros((N, 0, 0), f32) if R_Nx3Hx3H is None else R_Nx3Hx3H.astype(f32)
    a0 = a0[0].astype(f32) if fgr else _empty_carry(N, B)
    out, cT, hT, aT, *res = call(x_TxBxI.astype(f32), W_NxIxG.astype(f32), b_NxG.astype(f32), U_NxHxG.astype(f32),
                                 _peepholes(p_Nx3H, N), R, c0.astype(f32), h0.astype(f32), a0,
                                 _mask(mask_TxB, T, B))
    return out, ((cT, hT, aT) if fgr else (cT, hT)), (tuple(res) if save else None)


def backward(gates_NxTxBxG: Array, cprev_NxTxBxH: Array, dout_TxBxNH: Array, W_NxIxG: Array, U_NxHxG: Array,
             d_carry, mask_TxB: Array | None, x_TxBxI: Array, out_TxBxNH: Array, carry0, *, with_dx: bool = True,
             variant: int = STANDARD, p_Nx3H: Array | None = None, R_Nx3Hx3H: Array | None = None,
             reversed: int = 0):
    """The backward pass of :func:`forward`, from its residuals, inputs (x, the initial carry) and output.

    ``d_carry`` is the final carry's cotangent (dcT, dhT[, daT]), ``carry0`` the initial carry.
    ``mask_TxB`` must mark a prefix of each row. Returns (db [N, G], dWU [N, I + H, G] (dW over dU),
    dx [N, T, B, I] (each layer's part; None without ``with_dx``), the initial carry's cotangent
    (dc0, dh0[, da0]), dp [N, 3H] (None without peepholes), dR [N, 3H, 3H] (None without FGR)).
    """
    _register()
    N, T, B, G = gates_NxTxBxG.shape
    H, I = U_NxHxG.shape[1], W_NxIxG.shape[1]
    f32 = jnp.float32
    fgr = bool(variant & GATE_RECURRENCE)
    A = 3 * H if fgr else 0
    mesh = sharding.batch_mesh(B)
    b = B if mesh is None else B // mesh.size
    peep = variant & PEEPHOLE
    shapes = [jax.ShapeDtypeStruct((N, G), f32), jax.ShapeDtypeStruct((N, I + H, G), f32),
              jax.ShapeDtypeStruct((N, 3 * H if peep else 0), f32), jax.ShapeDtypeStruct((N, A, A), f32)]
    shapes += [jax.ShapeDtypeStruct((N, T, b, I), f32)] if with_dx else []
    shapes += [jax.ShapeDtypeStruct((N, b, H), f32), jax.ShapeDtypeStruct((N, b, H), f32),
               jax.ShapeDtypeStruct((N, b, A), f32)]
    call = jax.ffi.ffi_call("lstm_jax_bwd" if with_dx else "lstm_jax_bwd_no_dx", shapes, vmap_method="sequential")

    def run(*args):
        db, dWU, dp, dR, *rest = call(*args, variant=np.int32(variant), reversed=np.int32(reversed))
        if mesh is not None:  # each shard's weight gradients cover its rows only
            db, dWU, dp, dR = (sharding.psum(v) for v in (db, dWU, dp, dR))
        return (db, dWU, dp, dR, *rest)

    out_specs = (REPLICATED,) * 4 + ((LAYER_TIME_BATCH,) if with_dx else ()) + (TIME_BATCH,) * 3
    in_specs = (LAYER_TIME_BATCH, LAYER_TIME_BATCH, TIME_BATCH, REPLICATED, REPLICATED, REPLICATED, REPLICATED,
                TIME_BATCH, TIME_BATCH, TIME_BATCH, TIME_BATCH, TIME_BATCH, TIME_BATCH, TIME_BATCH, TIME_BATCH)
    run = sharding.per_shard(run, mesh, in_specs, out_specs)
    dcT, dhT, *daT = d_carry
    _, h0, *a0 = carry0
    R = jnp.zeros((N, 0, 0), f32) if R_Nx3Hx3H is None else R_Nx3Hx3H.astype(f32)
    daT, a0 = (daT[0].astype(f32), a0[0].astype(f32)) if fgr else (_empty_carry(N, B), _empty_carry(N, B))
    args = (gates_NxTxBxG, cprev_NxTxBxH, dout_TxBxNH, W_NxIxG, U_NxHxG)
    db, dWU, dp, dR, *rest = run(*(a.astype(f32) for a in args), _peepholes(p_Nx3H, N), R, dcT.astype(f32),
                                 dhT.astype(f32), daT, _mask(mask_TxB, T, B), x_TxBxI.astype(f32),
                                 out_TxBxNH.astype(f32), h0.astype(f32), a0)
    dx, dc0, dh0, da0 = rest if with_dx else (None, *rest)
    return db, dWU, dx, ((dc0, dh0, da0) if fgr else (dc0, dh0)), (dp if peep else None), (dR if fgr else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _layers(variant, reversed, x, W, b, U, p, R, carry0, mask):
    out, carry, _ = forward(x, W, _bias(b, W), U, carry0, mask, save=False, variant=variant, p_Nx3H=p, R_Nx3Hx3H=R,
                            reversed=reversed)
    return carry, out


def _bias(b, W):
    return jnp.zeros(W.shape[::2], jnp.float32) if b is None else b


def _layers_fwd(variant, reversed, x, W, b, U, p, R, carry0, mask):
    from lstm_jax.kernels.xla import _Static

    # symbolic_zeros: each argument comes as a CustomVJPPrimal, which says whether it is perturbed.
    need_dx = _Static(x.perturbed)
    x, W, b, U, p, R, carry0, mask = jax.custom_derivatives.custom_vjp_primal_tree_values(
        (x, W, b, U, p, R, carry0, mask))
    out, carry, (gates, c_prev) = forward(x, W, _bias(b, W), U, carry0, mask, save=True, variant=variant, p_Nx3H=p,
                                          R_Nx3Hx3H=R, reversed=reversed)
    return (carry, out), (x, W, b, U, p, R, carry0, mask, out, gates, c_prev, need_dx)


def _layers_bwd(variant, reversed, res, cotangents):
    from lstm_jax.kernels.xla import _dense

    x, W, b, U, p, R, carry0, mask, out, gates, c_prev, need_dx = res
    d_carry, dout = cotangents
    d_carry = tuple(_dense(d, c) for d, c in zip(d_carry, carry0, strict=True))
    db, dWU, dx, d_carry0, dp, dR = backward(gates, c_prev, _dense(dout, out), W, U, d_carry, mask, x, out, carry0,
                                             with_dx=need_dx.value, variant=variant, p_Nx3H=p, R_Nx3Hx3H=R,
                                             reversed=reversed)
    I = x.shape[-1]
    db = None if b is None else db.astype(b.dtype)
    dx = None if dx is None else jnp.sum(dx, axis=0).astype(x.dtype)  # every layer read the same x
    dp = None if p is None else dp.astype(p.dtype)
    dR = None if R is None else dR.astype(R.dtype)
    d_carry0 = tuple(d.astype(c.dtype) for d, c in zip(d_carry0, carry0, strict=True))
    return dx, dWU[:, :I].astype(W.dtype), db, dWU[:, I:].astype(U.dtype), dp, dR, d_carry0, None


_layers.defvjp(_layers_fwd, _layers_bwd, symbolic_zeros=True)


def lstm_layers(x_TxBxI: Array, W_NxIxG: Array, b_NxG: Array | None, U_NxHxG: Array, p_Nx3H: Array | None,
                carries, mask_TxB: Array | None = None, *, variant: int = STANDARD, reversed: int = 0,
                R_Nx3Hx3H: Array | None = None):
    """N layers of one shape and variant over the same time-major x, in one native call each way.

    Differentiable (a custom VJP over :func:`forward` and :func:`backward`). ``carries`` is
    (c0 [N, B, H], h0 [N, B, H]), and with FGR (``variant`` with ``GATE_RECURRENCE``, ``R_Nx3Hx3H``
    its gate recurrence) also a0 [N, B, 3H]; ``reversed`` and the rest as in :func:`forward`.
    Returns (the final carries, (cT, hT[, aT]) each [N, B, ...], out [T, B, N H]): ``Bidirectional``
    concatenates its two directions so, with no reversal or concatenation of its own.
    """
    c0, *rest = carries
    carry0 = (c0, *(v.astype(c0.dtype) for v in rest))
    return _layers(variant, reversed, x_TxBxI, W_NxIxG, b_NxG, U_NxHxG, p_Nx3H, R_Nx3Hx3H, carry0, mask_TxB)


# -- the layer-normalised LSTM -------------------------------------------------------------------------

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
    _register()
    T, B, _ = x.shape
    H, f32 = U.shape[0], jnp.float32
    mesh = sharding.batch_mesh(B)
    b = B if mesh is None else B // mesh.size
    shapes = [jax.ShapeDtypeStruct(s, f32) for s in ((T, b, H), (b, H), (b, H), (T, b, H), (T, b, 4 * H), (T, b, 5))]
    run = _ln_call("lstm_jax_ln_fwd", shapes, mesh,
                   (TIME_BATCH, REPLICATED, REPLICATED, REPLICATED, BATCH, BATCH, TIME_BATCH),
                   (TIME_BATCH, BATCH, BATCH) + (TIME_BATCH,) * 3)
    out, c, h, *res = run(x.astype(f32), W.astype(f32), U.astype(f32), ln.astype(f32), c0.astype(f32),
                          h0.astype(f32), _mask(mask, T, B))
    return (c, h), out, res


def _ln_fwd(x, W, U, ln, c0, h0, mask):
    from lstm_jax.kernels.xla import _Static

    need_dx = _Static(x.perturbed)  # symbolic_zeros: each argument says whether it is perturbed
    x, W, U, ln, c0, h0, mask = jax.custom_derivatives.custom_vjp_primal_tree_values((x, W, U, ln, c0, h0, mask))
    (c, h), out, res = _ln_fwd_call(x, W, U, ln, c0, h0, mask)
    return ((c, h), out), (x, W, U, ln, h0, mask, out, *res, need_dx)


def _ln_bwd(res, cotangents):
    from lstm_jax.kernels.xla import _dense

    x, W, U, ln, h0, mask, out, cprev, nhu, rstd, need_dx = res
    (dcT, dhT), dout = cotangents
    dcT, dhT, dout = _dense(dcT, h0), _dense(dhT, h0), _dense(dout, out)
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
                                 ln, dcT.astype(f32), dhT.astype(f32), _mask(mask, T, B), out, h0.astype(f32))
    dx = dx.astype(x.dtype) if with_dx else None
    return dx, dWU[:I].astype(W.dtype), dWU[I:].astype(U.dtype), dln.astype(ln.dtype), dc0, dh0, None


_ln.defvjp(_ln_fwd, _ln_bwd, symbolic_zeros=True)


def _ln_supports(cell) -> bool:
    from lstm_jax.cells import LayerNormLSTMCell
    from lstm_jax.kernels import xla

    W, _, U = xla._weights(cell)
    return (type(cell) is LayerNormLSTMCell and xla.generic_supports(cell)
            and supports_lstm(cell.activation, cell.recurrent_activation, W.dtype, U.dtype, cell.carry_dtype))


def _ln_layer(cell, x_TxBxD, carry, mask_TxB, *, remat: bool = False):
    """``LayerNormLSTMCell`` in the kernels, in one call each way: x W and h U in the register tile,
    their normalisations and the gate math on each row (in XLA these took longer than the whole
    recurrence), and every gradient (dW and dx too) in the backward call, which recomputes x W and
    the gates instead of keeping them."""
    from lstm_jax.kernels import xla

    W, b, U = xla._weights(cell)
    b = jnp.zeros((W.shape[1],), jnp.float32) if b is None else b
    ln = jnp.concatenate([cell.gain_x[...], b, cell.gain_h[...], cell.gain_c[...], cell.shift_c[...]])

    def run(x, carry, mask):
        c0, h0 = carry
        return _ln(x, W, U, ln.astype(jnp.float32), c0, h0.astype(c0.dtype), mask)

    if not remat:
        return run(x_TxBxD, carry, mask_TxB)
    return xla._remat_scan(run, x_TxBxD, carry, mask_TxB)


# -- which cells run here: one entry per cell class --------------------------------------------------

def supports_lstm(activation, recurrent_activation, *dtypes) -> bool:
    """Whether the LSTM kernels run these activations and dtypes here (built, CPU backend)."""
    from lstm_jax.cells import ACTIVATIONS

    return (activation is ACTIVATIONS["tanh"] and recurrent_activation is ACTIVATIONS["sigmoid"]
            and all(jnp.dtype(d) == jnp.float32 for d in dtypes) and available())


def _lstm_supports(cell) -> bool:
    from lstm_jax.kernels import xla

    W, _, U = xla._weights(cell)
    return xla.supports_cell(cell) and supports_lstm(cell.activation, cell.recurrent_activation, W.dtype, U.dtype,
                                                     cell.carry_dtype)


def _lstm_layer(cell, x_TxBxD, carry, mask_TxB, *, remat: bool = False):
    from lstm_jax.kernels import xla

    return xla.lstm_layer(cell, x_TxBxD, carry, mask_TxB, remat=remat, native=True)


def _variants() -> dict:
    """The cell classes the LSTM kernels run, each exactly (a subclass may change the maths), by variant."""
    from lstm_jax import cells

    peep = PEEPHOLE
    return {cells.NPCell: STANDARD, cells.PeepholeCell: STANDARD | peep, cells.NIGCell: FORGET | OUTPUT | peep,
            cells.NFGCell: INPUT | OUTPUT | peep, cells.NOGCell: INPUT | FORGET | peep,
            cells.NIAFCell: STANDARD | LINEAR_INPUT | peep, cells.NOAFCell: STANDARD | LINEAR_OUTPUT | peep,
            cells.CIFGCell: INPUT | OUTPUT | COUPLED | peep, cells.FGRCell: STANDARD | peep | GATE_RECURRENCE}


def _variant_supports(cell) -> bool:
    from lstm_jax.kernels import xla

    W, _, U = xla._weights(cell)
    return (type(cell) in _variants() and xla.generic_supports(cell)
            and supports_lstm(cell.activation, cell.recurrent_activation, W.dtype, U.dtype, cell.carry_dtype))


def _cell_peepholes(cell) -> Array | None:
    """(p_i, p_f, p_o) [3H] of a peephole cell, zeros for a gate it does not have; None for NP."""
    ps = [getattr(cell, f"p_{g}", None) for g in "ifo"]
    if all(p is None for p in ps):
        return None
    zeros = jnp.zeros((cell.hidden_size,), jnp.float32)
    return jnp.concatenate([zeros if p is None else p[...].astype(jnp.float32) for p in ps])


def _variant_layer(cell, x_TxBxD, carry, mask_TxB, *, remat: bool = False):
    from lstm_jax.kernels import xla

    if _variants()[type(cell)] & GATE_RECURRENCE:  # FGR: a carry of three parts and R, as a stack of one
        def run(x, carry, mask):
            (final,), out = cell_layers([cell], x, [carry], mask)
            return final, out

        return xla._remat_scan(run, x_TxBxD, carry, mask_TxB) if remat else run(x_TxBxD, carry, mask_TxB)
    return xla.lstm_layer(cell, x_TxBxD, carry, mask_TxB, remat=remat, native=True, variant=_variants()[type(cell)],
                          peepholes_3H=_cell_peepholes(cell))


def stackable(*cells) -> bool:
    """Whether these cells can run side by side in one call of the LSTM kernels (:func:`cell_layers`):
    each one the kernels run here, all of one class and shape, with or without biases alike."""
    from lstm_jax.cells import LSTMCell

    first = cells[0]
    key = lambda c: (type(c), c.kernel[...].shape, c.bias is None, c.dtype)  # noqa: E731
    kernel_cells = (LSTMCell, *_variants())
    return all(type(c) in kernel_cells and supports(c) and key(c) == key(first) for c in cells)


def cell_layers(cells, x_TxBxD: Array, carries, mask_TxB: Array | None = None, *, reversed: int = 0):
    """:func:`stackable` cells over the same time-major x in one native call each way.

    ``carries`` holds each cell's carry ((c, h), or FGR's (c, h, a)); bit l of ``reversed`` runs
    cell l backwards over each row's valid prefix (its outputs aligned with x). Returns (a list of
    final carries, outputs [T, B, N H]).
    """
    from lstm_jax.kernels import xla

    weights = [xla._weights(c) for c in cells]
    W, U = (jnp.stack([w[k] for w in weights]) for k in (0, 2))
    b = None if weights[0][1] is None else jnp.stack([w[1] for w in weights])
    peeps = [_cell_peepholes(c) for c in cells]
    p = None if peeps[0] is None else jnp.stack(peeps)
    variant = _variants().get(type(cells[0]), STANDARD)
    R = jnp.stack([c.gate_recurrent_kernel[...] for c in cells]) if variant & GATE_RECURRENCE else None
    stacked = tuple(jnp.stack(parts) for parts in zip(*carries, strict=True))
    final, out = lstm_layers(x_TxBxD, W, b, U, p, stacked, mask_TxB, variant=variant, reversed=reversed, R_Nx3Hx3H=R)
    return [tuple(v[k] for v in final) for k in range(len(cells))], out


def _gru_layer(cell, x_TxBxD, carry, mask_TxB, *, remat: bool = False):
    if remat:  # the GRU kernels keep every step; remat runs the generic XLA path, which recomputes
        from lstm_jax.kernels import xla

        return xla.cell_layer(cell, x_TxBxD, carry, mask_TxB, remat=True)
    from lstm_jax.kernels import native_gru

    return native_gru.gru_cell_layer(cell, x_TxBxD, carry, mask_TxB)


def _gru_supports(cell) -> bool:
    from lstm_jax.kernels import native_gru

    return native_gru.supports_cell(cell)


def _entries() -> dict:
    from lstm_jax.cells import GRUCell, LSTMCell

    variants = {cls: (_variant_supports, _variant_layer) for cls in _variants()}
    from lstm_jax.cells import LayerNormLSTMCell

    return {LSTMCell: (_lstm_supports, _lstm_layer), GRUCell: (_gru_supports, _gru_layer), **variants,
            LayerNormLSTMCell: (_ln_supports, _ln_layer), **_EXTRA}


_EXTRA: dict = {}


def register(cell_class, supports_fn, layer_fn) -> None:
    """Adds a native kernel for exactly ``cell_class`` (subclasses are ablations and are not matched).

    ``supports_fn(cell) -> bool`` says whether it runs this cell here (dtype, activations, backend);
    ``layer_fn(cell, x_TxBxD, carry, mask_TxB, *, remat) -> (final carry, outputs [T, B, H])`` runs
    it with the semantics of ``layers.scan_cell``. The standard LSTM, Greff's variants (``np``,
    ``peephole``, ``nig``, ``nfg``, ``nog``, ``niaf``, ``noaf``, ``cifg``, ``fgr``) and ``layernorm`` (the
    LSTM kernels with their variant flags) and the GRU (:mod:`~lstm_jax.kernels.native_gru`) are
    registered from the start.
    """
    _EXTRA[cell_class] = (supports_fn, layer_fn)


def supports(cell) -> bool:
    """Whether a native kernel runs ``cell`` here."""
    entry = _entries().get(type(cell))
    return entry is not None and entry[0](cell)


def layer(cell, x_TxBxD: Array, carry, mask_TxB: Array | None = None, *, remat: bool = False):
    """``cell`` over a time-major sequence in its native kernel. Returns (final carry, outputs [T, B, H])."""
    return _entries()[type(cell)][1](cell, x_TxBxD, carry, mask_TxB, remat=remat)
