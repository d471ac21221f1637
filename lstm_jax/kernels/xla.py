"""The XLA fast paths: the standard ``LSTMCell`` on raw arrays, and a generic custom VJP for every cell.

:func:`lstm` runs a whole layer as one ``jax.custom_vjp``:

* forward: the input projection ``x W`` for all steps as one matmul, hoisted out of the scan; per
  step, one fused dot ``h U`` [B, H] @ [H, 4H] and one pass of elementwise work over the contiguous
  gate blocks (i, f, o, g);
* backward: per step, only the dh/dc recursion and ``dz U^T``; the weight gradients dW, dU and db
  (and dx) are single matmuls over all steps after the scan.

On CPU the cost that matters next to the arithmetic is fresh memory: every call page-faults its
whole temporary allocation. So the gates overwrite the projected inputs in place, and the gate
gradients overwrite the gates, one [T, B, 4H] buffer for all three; without a gradient the
projection is made a chunk of steps at a time. The scans run unrolled once only (see
``default_unroll``). bf16 matmuls suit GPUs; on XLA:CPU they are slower than f32 (measured in
``docs/results.md``, "Design measurements").

Semantics are those of ``nn.layers.scan_cell`` with ``LSTMCell.step``: past a row's length the carry
is frozen and the output is zero. Arrays are time-major here: ``x_TxBxD``, ``mask_TxB``.
Matmuls run in the dtype of W and U (bf16 works); the elementwise work and the cell state run in
the carry's dtype (float32).

Every other cell (Greff's variants, the GRU, a user's subclass) runs :func:`cell_layer`, the same
scheme written once over the cell's own ``project`` / ``recurrent`` / ``combine``. :func:`supports`
and :func:`layer` pick between the two, with the same signatures as the other backends'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax.kernels.common import Static, cell_weights, dense, generic_supports, remat_scan
from lstm_jax.nn.cells import ACTIVATIONS, LSTMCell, RecurrentCell

Array = jax.Array

# d act(z) / dz written in terms of y = act(z), so the backward pass needs only the saved gates.
_GRAD_FROM_OUTPUT: dict[Callable, Callable[[Array], Array]] = {
    ACTIVATIONS["sigmoid"]: lambda y: y * (1 - y),
    ACTIVATIONS["tanh"]: lambda y: 1 - y * y,
    ACTIVATIONS["relu"]: lambda y: (y > 0).astype(y.dtype),
    ACTIVATIONS["linear"]: lambda y: jnp.ones_like(y),
}


def supports_activations(activation: Callable, recurrent_activation: Callable) -> bool:
    """Whether the standard cell's custom VJP has closed-form derivatives for these activations."""
    return activation in _GRAD_FROM_OUTPUT and recurrent_activation in _GRAD_FROM_OUTPUT


def default_unroll() -> int:
    """``lax.scan`` unroll of the generic scan path, per backend.

    On CPU a larger unroll only adds work; GPUs amortise per-step launch latency with a larger
    unroll. The custom VJPs always run unroll 1: unrolled, XLA copies their in-place buffers each
    iteration. The measurements behind both choices: ``docs/results.md``, "Design measurements".
    """
    return 1 if jax.default_backend() == "cpu" else 8


# -- the recurrence --------------------------------------------------------------------------------

def _activate(act, rec_act, z):
    """Pre-activations [B, 4H] -> gates (i, f, o, g), activated, in one [B, 4H] array."""
    H = z.shape[-1] // 4
    if act is ACTIVATIONS["tanh"] and rec_act is ACTIVATIONS["sigmoid"]:
        # tanh(x) = 2 sigmoid(2x) - 1: one sigmoid pass covers all four blocks and writes them once,
        # instead of two passes and a concatenation.
        is_g = jnp.arange(4 * H) >= 3 * H
        y = jax.nn.sigmoid(jnp.where(is_g, 2 * z, z))
        return jnp.where(is_g, 2 * y - 1, y)
    return jnp.concatenate([rec_act(z[:, : 3 * H]), act(z[:, 3 * H :])], axis=-1)


def _new_c(gates, c):
    """c' = f * c + i * g."""
    H = c.shape[-1]
    return gates[:, H : 2 * H] * c + gates[:, :H] * gates[:, 3 * H :]


def _forward(act, rec_act, save, x, W, b, U, c0, h0, mask):
    """The forward pass. Returns ((c, h), outputs [T, B, H], residuals or None).

    The residuals are the activated gates [T, B, 4H] and the cell state entering each step
    [T, B, H]. The gates overwrite the projected inputs step by step, in place: the loop carries
    that buffer instead of stacking a new one, which saves allocating and first-touching T*B*4H
    floats (on CPU, page faults on fresh memory cost more than the arithmetic).
    """
    T = x.shape[0]
    H = c0.shape[-1]
    f32 = c0.dtype
    xp = jnp.dot(x.astype(W.dtype), W)  # the hoisted projection; the bias is added in the step, for free
    bias = jnp.zeros((4 * H,), f32) if b is None else b.astype(f32)

    def body(carry, inputs):
        c, h, buf = carry
        t, m_t = inputs
        xp_t = jax.lax.dynamic_index_in_dim(buf, t, keepdims=False)
        z = xp_t.astype(f32) + bias + jnp.dot(h.astype(U.dtype), U, preferred_element_type=f32)
        gates = _activate(act, rec_act, z)
        c_new = _new_c(gates, c)
        h_new = gates[:, 2 * H : 3 * H] * act(c_new)
        out = h_new
        if m_t is not None:
            m = m_t[:, None]
            c_new, h_new = jnp.where(m, c_new, c), jnp.where(m, h_new, h)
            out = jnp.where(m, out, jnp.zeros_like(out))
        if save:
            buf = jax.lax.dynamic_update_index_in_dim(buf, gates.astype(buf.dtype), t, 0)
        return (c_new, h_new, buf), ((out, c) if save else out)

    steps = jnp.arange(T, dtype=jnp.int32)
    (c, h, buf), ys = jax.lax.scan(body, (c0, h0, xp), (steps, mask))
    if save:
        out, c_prev = ys
        return (c, h), out, (buf, c_prev)
    return (c, h), ys, None


def _forward_chunked(act, rec_act, x, W, b, U, c0, h0, mask, most: int = 32):
    """The forward pass without residuals, projecting K <= ``most`` steps at a time (K divides T).

    With nothing to keep for a backward pass there is no need for a [T, B, 4H] buffer: the
    projection of a chunk stays in cache and nothing large is first-touched (measured in
    ``docs/results.md``, "Design measurements"). Returns ((c, h), outputs [T, B, H]).
    """
    T, B, D = x.shape
    K = max(k for k in range(1, min(T, most) + 1) if T % k == 0)
    ms = None if mask is None else mask.reshape(T // K, K, B)

    def chunk(carry, inputs):
        x_c, m_c = inputs
        carry, out, _ = _forward(act, rec_act, False, x_c, W, b, U, *carry, m_c)
        return carry, out

    (c, h), out = jax.lax.scan(chunk, (c0, h0), (x.reshape(T // K, K, B, D), ms))
    return (c, h), out.reshape(T, B, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lstm(act, rec_act, x, W, b, U, c0, h0, mask):
    return _forward_chunked(act, rec_act, x, W, b, U, c0, h0, mask)


def _lstm_fwd(act, rec_act, x, W, b, U, c0, h0, mask):
    x, W, b, U, c0, h0, mask = jax.custom_derivatives.custom_vjp_primal_tree_values((x, W, b, U, c0, h0, mask))
    (c, h), out, (gates, c_prev) = _forward(act, rec_act, True, x, W, b, U, c0, h0, mask)
    return ((c, h), out), (x, W, b, U, h0, mask, out, gates, c_prev)


def _dz(act, rec_act, gates, cp, dc, dh):
    """One step back through the elementwise cell: -> (dz [B, 4H], dc_prev [B, H])."""
    H = cp.shape[-1]
    i, f, o, g = (gates[:, k * H : (k + 1) * H] for k in range(4))
    d_act, d_rec = _GRAD_FROM_OUTPUT[act], _GRAD_FROM_OUTPUT[rec_act]
    a = act(f * cp + i * g)  # recomputed: cheaper than saving another [T, B, H]
    dc = dc + dh * o * d_act(a)
    dz = jnp.concatenate([dc * g * d_rec(i), dc * cp * d_rec(f), dh * a * d_rec(o), dc * i * d_act(g)], axis=-1)
    return dz, dc * f


def _lstm_bwd(act, rec_act, res, cotangents):
    x, W, b, U, h0, mask, out, gates, c_prev = res
    (dc_T, dh_T), dout = cotangents
    dc_T, dh_T, dout = dense(dc_T, h0), dense(dh_T, h0), dense(dout, out)
    dz, dc0, dh0 = _backward_scan(act, rec_act, gates, c_prev, dout, U, dc_T, dh_T, mask)
    db = None if b is None else jnp.sum(dz.reshape(-1, dz.shape[-1]).astype(c_prev.dtype), axis=0)
    return _weight_grads(x, W, b, U, h0, out, dz, db, dc0, dh0)


def _backward_scan(act, rec_act, gates, c_prev, dout, U, dc_T, dh_T, mask):
    """The backward recurrence as a lax.scan. Returns (dz [T, B, 4H] over the gates' buffer, dc0, dh0)."""
    T = gates.shape[0]
    f32 = c_prev.dtype
    U_t = U.T  # transposed once, so each step's dz U^T is a plain row-major dot

    def body(carry, inputs):
        dc, dh, buf, gates_t = carry
        t, cp_t, dout_t, m_t = inputs
        dz, dc_prev = _dz(act, rec_act, gates_t.astype(f32), cp_t, dc, dh + dout_t)
        if m_t is not None:
            # Past its length a row's step was the identity on the carry, with a zero output.
            m = m_t[:, None]
            dz = jnp.where(m, dz, jnp.zeros_like(dz))
            dc_prev = jnp.where(m, dc_prev, dc)
        dz = dz.astype(U_t.dtype)
        dh_prev = jnp.dot(dz, U_t, preferred_element_type=f32)
        if m_t is not None:
            dh_prev = dh_prev + jnp.where(m, jnp.zeros_like(dh), dh)
        # dz overwrites its step's gates in place (see _forward). The next step's gates are read
        # after that write and carried: XLA would copy the whole buffer if a read could follow it.
        buf = jax.lax.dynamic_update_index_in_dim(buf, dz.astype(buf.dtype), t, 0)
        gates_next = jax.lax.dynamic_index_in_dim(buf, jnp.maximum(t - 1, 0), keepdims=False)
        return (dc_prev, dh_prev, buf, gates_next), None

    steps = jnp.arange(T, dtype=jnp.int32)
    init = (dc_T, dh_T, gates, gates[T - 1])
    (dc0, dh0, dz, _), _ = jax.lax.scan(body, init, (steps, c_prev, dout, mask), reverse=True)
    return dz, dc0, dh0


def _weight_grads(x, W, b, U, h0, out, dz, db, dc0, dh0):
    """dx, dW, dU (and db, and the carry's cotangents, passed on) from the gate gradients dz [T, B, 4H]."""
    T, B, G = dz.shape
    H = G // 4
    f32 = dc0.dtype
    # The weight gradients as single matmuls over all steps. At a valid step t the previous output
    # equals the previous carry h (the valid region is a prefix); at the other steps dz is zero.
    dz2 = dz.reshape(T * B, G)
    h_prev = jnp.concatenate([h0[None], out[:-1]], axis=0).reshape(T * B, H).astype(U.dtype)
    x2 = x.reshape(T * B, -1).astype(W.dtype)
    dU = jnp.dot(h_prev.T, dz2.astype(U.dtype), preferred_element_type=f32).astype(U.dtype)
    dW = jnp.dot(x2.T, dz2.astype(W.dtype), preferred_element_type=f32).astype(W.dtype)
    db = None if b is None else db.astype(b.dtype)
    dx = jnp.dot(dz2.astype(W.dtype), W.T, preferred_element_type=f32).reshape(x.shape).astype(x.dtype)
    return dx, dW, db, dU, dc0, dh0, None


_lstm.defvjp(_lstm_fwd, _lstm_bwd, symbolic_zeros=True)


def lstm(
    x_TxBxD: Array,
    W_DxG: Array,
    b_G: Array | None,
    U_HxG: Array,
    carry: tuple[Array, Array],
    mask_TxB: Array | None = None,
    *,
    activation: Callable = jnp.tanh,
    recurrent_activation: Callable = jax.nn.sigmoid,
):
    """The standard LSTM over a time-major sequence. Returns (final (c, h), outputs [T, B, H]).

    ``W_DxG``, ``b_G`` and ``U_HxG`` hold the gate blocks (i, f, o, g), as ``LSTMCell`` does; the
    dtype of W and U is the matmul dtype (bf16 works). ``carry`` is ``(c, h)``, each [B, H], in the
    dtype of the elementwise work and the outputs (float32). ``mask_TxB`` marks the valid steps
    (a prefix of each row). The activations must be among sigmoid, tanh, relu and linear
    (``lstm_jax.nn.cells.ACTIVATIONS``).
    """
    if not supports_activations(activation, recurrent_activation):
        raise ValueError("the fast LSTM supports the activations sigmoid, tanh, relu and linear only")
    c0, h0 = carry
    h0 = h0.astype(c0.dtype)
    return _lstm(activation, recurrent_activation, x_TxBxD, W_DxG, b_G, U_HxG, c0, h0, mask_TxB)


# -- the standard cell as a layer ------------------------------------------------------------------

def supports_lstm(cell) -> bool:
    """Whether ``cell`` is exactly the standard ``LSTMCell`` with activations its custom VJP knows."""
    return type(cell) is LSTMCell and supports_activations(cell.activation, cell.recurrent_activation)


def supports(cell) -> bool:
    """Whether a custom VJP here runs ``cell`` (the standard cell's own, or the generic one)."""
    return supports_lstm(cell) or generic_supports(cell)


def layer(cell, x_TxBxD: Array, carry, mask_TxB: Array | None = None, *, remat: bool = False):
    """``cell`` over a time-major sequence: :func:`lstm_layer` for the standard cell, else :func:`cell_layer`."""
    run = lstm_layer if supports_lstm(cell) else cell_layer
    return run(cell, x_TxBxD, carry, mask_TxB, remat=remat)


def lstm_layer(cell, x_TxBxD: Array, carry, mask_TxB: Array | None = None, *, remat: bool = False):
    """The standard ``LSTMCell`` over a time-major sequence. Returns (final (c, h), outputs [T, B, H]).

    ``remat`` keeps only the carries between chunks of about sqrt(T) steps and recomputes each
    chunk's forward pass during the backward pass (``common.remat_scan``).
    """
    W, b, U = cell_weights(cell)
    kw = dict(activation=cell.activation, recurrent_activation=cell.recurrent_activation)
    if not remat:
        return lstm(x_TxBxD, W, b, U, carry, mask_TxB, **kw)
    return remat_scan(lambda x, c, m: lstm(x, W, b, U, c, m, **kw), x_TxBxD, carry, mask_TxB)


def stackable(*cells) -> bool:
    """Whether these cells can run as one batched scan: standard cells of one configuration."""
    first = cells[0]
    key = lambda c: (c.activation, c.recurrent_activation, c.dtype, c.bias is None, c.kernel[...].shape,  # noqa: E731
                     c.kernel[...].dtype)
    return all(supports_lstm(c) for c in cells) and all(key(c) == key(first) for c in cells)


def lstm_layers(cells, xs_NxTxBxD: Array, carries, mask_TxB: Array | None = None):
    """N standard cells of one configuration, each over its own sequence, as one scan.

    A ``vmap`` of :func:`lstm`: each step runs one batched dot [N, B, H] @ [N, H, 4H] and one set
    of elementwise ops for all N layers, so the per-op cost is paid once (``Bidirectional`` runs its
    two directions so). Returns (a list of final (c, h), outputs [N, T, B, H]).
    """
    weights = [cell_weights(c) for c in cells]
    W, U = (jnp.stack([w[k] for w in weights]) for k in (0, 2))
    b = None if weights[0][1] is None else jnp.stack([w[1] for w in weights])
    c0 = jnp.stack([c for c, _ in carries])
    h0 = jnp.stack([h for _, h in carries])
    kw = dict(activation=cells[0].activation, recurrent_activation=cells[0].recurrent_activation)

    def one(x, W, b, U, c0, h0):
        return lstm(x, W, b, U, (c0, h0), mask_TxB, **kw)

    (c, h), out = jax.vmap(one)(xs_NxTxBxD, W, b, U, c0, h0)
    return [(c[k], h[k]) for k in range(len(cells))], out


# -- every other cell: the generic custom VJP ------------------------------------------------------

def _is_matrix(path, value) -> bool:
    """The two weight matrices, whose gradients are single matmuls after the backward scan."""
    return bool(path) and path[-1] in ("kernel", "recurrent_kernel")


def cell_layer(cell, x_TxBxD: Array, carry, mask_TxB: Array | None = None, *, remat: bool = False):
    """Any cell with ``common.generic_supports`` over a time-major sequence, as one custom VJP.

    Returns (final carry, outputs [T, B, H]), the results of ``layers.scan_cell``. Forward: the
    cell's ``project`` over all steps as one matmul, then per step one dot ``recurrent(h)`` and the
    cell's ``combine``. Backward: per step, the VJP of ``combine`` (elementwise work; the cell's
    small parameters, such as peepholes and gains, accumulate in the scan's carry) and dh as one dot
    with U^T; after the scan dU, dW, db and dx are single matmuls through the VJPs of
    ``recurrent`` and ``project`` over all steps at once. ``remat`` as in :func:`lstm_layer`.
    """
    graphdef, mats, rest = nnx.split(cell, _is_matrix, ...)
    additive = _additive(cell)
    if not remat:
        return _generic(graphdef, additive, mats, rest, x_TxBxD, carry, mask_TxB)
    return remat_scan(lambda x, c, m: _generic(graphdef, additive, mats, rest, x, c, m), x_TxBxD, carry, mask_TxB)


def _where_valid(m_t, new, old):
    m = m_t[:, None]
    return jax.tree.map(lambda n, o: jnp.where(m, n, o), new, old)


def _additive(cell) -> bool:
    """Whether the cell keeps the base ``combine``: z = xp + hU goes to ``update``. Then the backward
    scan needs z alone (dxp = dhU = dz), which halves what it saves and writes."""
    return type(cell).combine is RecurrentCell.combine


def _generic_step(cell, additive, carry, a_t, hu_t, m_t):
    """One step after the dot, with the padding semantics of ``scan_cell`` (frozen carry, zero output).
    ``a_t`` is z when ``additive`` (``hu_t`` unused), else the projected input."""
    if additive:
        new = cell.update(carry, a_t)
        out = cell.output(new)
    else:
        new, out = cell.combine(carry, a_t, hu_t)
    if m_t is not None:
        new = _where_valid(m_t, new, carry)
        out = jnp.where(m_t[:, None], out, jnp.zeros_like(out))
    return new, out


def _generic_forward(graphdef, additive, mats, rest, x, carry, mask, save):
    """Returns (final carry, outputs, saved) with saved = (carries entering each step, z or (xp, hU))."""
    cell = nnx.merge(graphdef, mats, rest)
    xp = cell.project(x)

    def body(carry, inputs):
        xp_t, m_t = inputs
        hu = cell.recurrent(cell.output(carry))
        if additive:
            a, hu = xp_t + hu.astype(xp_t.dtype), None
        else:
            a = xp_t
        new, out = _generic_step(cell, additive, carry, a, hu, m_t)
        if not save:
            return new, out
        return new, (out, carry, a if additive else hu)

    final, ys = jax.lax.scan(body, carry, (xp, mask))
    if not save:
        return final, ys, None
    out, carries, per_step = ys
    return final, out, (carries, per_step if additive else (xp, per_step))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _generic(graphdef, additive, mats, rest, x, carry, mask):
    final, out, _ = _generic_forward(graphdef, additive, mats, rest, x, carry, mask, False)
    return final, out


def _generic_fwd(graphdef, additive, mats, rest, x, carry, mask):
    need_dx = Static(x.perturbed)
    mats, rest, x, carry, mask = jax.custom_derivatives.custom_vjp_primal_tree_values((mats, rest, x, carry, mask))
    final, out, (carries, per_step) = _generic_forward(graphdef, additive, mats, rest, x, carry, mask, True)
    return (final, out), (mats, rest, x, carries, per_step, mask, need_dx, Static((out.shape, out.dtype)))


def _generic_bwd(graphdef, additive, res, cotangents):
    mats, rest, x, carries, per_step, mask, need_dx, out_like = res
    d_final, dout = cotangents
    first = jax.tree.map(lambda a: a[0], carries)
    d_final = jax.tree.map(dense, d_final, first, is_leaf=lambda c: isinstance(c, jax.custom_derivatives.SymbolicZero))
    dout = dense(dout, jax.ShapeDtypeStruct(*out_like.value))
    cell = nnx.merge(graphdef, mats, rest)
    h_like = cell.output(first)
    transpose_dot = jax.linear_transpose(cell.recurrent, h_like)
    hu_dtype = jax.eval_shape(cell.recurrent, h_like).dtype

    def body(acc, inputs):
        d_carry, d_rest = acc
        carry_t, saved_t, dout_t, m_t = inputs
        if additive:
            def local(carry_t, z_t, rest):
                return _generic_step(nnx.merge(graphdef, mats, rest), True, carry_t, z_t, None, m_t)

            _, vjp = jax.vjp(local, carry_t, saved_t, rest)
            d_prev, dz_t, dr = vjp((d_carry, dout_t.astype(h_like.dtype)))
            dhu_t, ys = dz_t, dz_t
        else:
            def local(carry_t, xp_t, hu_t, rest):
                return _generic_step(nnx.merge(graphdef, mats, rest), False, carry_t, xp_t, hu_t, m_t)

            _, vjp = jax.vjp(local, carry_t, *saved_t, rest)
            d_prev, dxp_t, dhu_t, dr = vjp((d_carry, dout_t.astype(h_like.dtype)))
            ys = (dxp_t, dhu_t)
        (dh,) = transpose_dot(dhu_t.astype(hu_dtype))
        _, out_vjp = jax.vjp(cell.output, carry_t)
        (d_prev_h,) = out_vjp(dh.astype(h_like.dtype))
        d_prev = jax.tree.map(jnp.add, d_prev, d_prev_h)
        return (d_prev, jax.tree.map(jnp.add, d_rest, dr)), ys

    zeros_rest = jax.tree.map(jnp.zeros_like, rest)
    (d_carry0, d_rest), ys = jax.lax.scan(body, (d_final, zeros_rest), (carries, per_step, dout, mask), reverse=True)
    dxp, dhu = (ys, ys) if additive else ys

    # dU over all steps at once: the h that entered each step's dot, against dhu.
    h_prev = jax.vmap(cell.output)(carries)

    def dot_all(mats):
        return nnx.merge(graphdef, mats, rest).recurrent(h_prev)

    _, dot_vjp = jax.vjp(dot_all, mats)
    (d_mats,) = dot_vjp(dhu.astype(hu_dtype))

    def project_all(mats, rest, x):
        return nnx.merge(graphdef, mats, rest).project(x)

    if need_dx.value:
        _, proj_vjp = jax.vjp(project_all, mats, rest, x)
        dm, dr, dx = proj_vjp(dxp)
    else:
        _, proj_vjp = jax.vjp(lambda m, r: project_all(m, r, x), mats, rest)
        (dm, dr), dx = proj_vjp(dxp), None
    d_mats = jax.tree.map(jnp.add, d_mats, dm)
    d_rest = jax.tree.map(jnp.add, d_rest, dr)
    return d_mats, d_rest, dx, d_carry0, None


_generic.defvjp(_generic_fwd, _generic_bwd, symbolic_zeros=True)
