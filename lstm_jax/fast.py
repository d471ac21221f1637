"""Fast paths for the standard ``LSTMCell``, on raw arrays.

The sequence layer hoists the input projection (``xp = x W + b``, one large matmul) and hands the
recurrence to :func:`lstm_scan`, which keeps only what must be sequential inside ``lax.scan``:

* forward, per step: one fused dot ``h U`` [B, H] @ [H, 4H] and one pass of elementwise work over
  the contiguous gate blocks (i, f, o, g);
* backward (a ``jax.custom_vjp``), per step: only the dh/dc recursion and ``dz U^T``. The weight
  gradient ``dU = sum_t h_{t-1}^T dz_t`` is one [H, T*B] @ [T*B, 4H] matmul after the scan, and the
  layer's autodiff turns ``dxp`` into dW and db as single matmuls over all steps too.

Semantics are those of ``layers.scan_cell`` with ``LSTMCell.step``: past a row's length the carry
is frozen and the output is zero. Arrays are time-major here: ``xp_TxBxG``, ``mask_TxB``.

Matmuls run in the dtype of ``xp`` and ``U`` (bf16 works); the elementwise work and the cell state
run in the carry's dtype (float32). On a GPU, :func:`cudnn_lstm` runs the whole layer in cuDNN.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from lstm_jax.cells import ACTIVATIONS

Array = jax.Array

# d act(z) / dz written in terms of y = act(z), so the backward pass needs only the saved gates.
_GRAD_FROM_OUTPUT: dict[Callable, Callable[[Array], Array]] = {
    ACTIVATIONS["sigmoid"]: lambda y: y * (1 - y),
    ACTIVATIONS["tanh"]: lambda y: 1 - y * y,
    ACTIVATIONS["relu"]: lambda y: (y > 0).astype(y.dtype),
    ACTIVATIONS["linear"]: lambda y: jnp.ones_like(y),
}


def supports(activation: Callable, recurrent_activation: Callable) -> bool:
    """Whether the fast path has closed-form derivatives for these activations."""
    return activation in _GRAD_FROM_OUTPUT and recurrent_activation in _GRAD_FROM_OUTPUT


def default_unroll() -> int:
    """``lax.scan`` unroll per backend: GPUs amortise per-step launch latency; XLA:CPU gains nothing."""
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


def _forward(act, rec_act, unroll, save, xp, U, c0, h0, mask):
    """The forward scan. Returns ((c, h), outputs [T, B, H], residuals or None).

    The residuals are the activated gates [T, B, 4H] (in the compute dtype) and the cell state
    entering each step [T, B, H].
    """
    H = c0.shape[-1]
    f32 = c0.dtype

    def body(carry, inputs):
        c, h = carry
        xp_t, m_t = inputs
        z = xp_t.astype(f32) + jnp.dot(h.astype(U.dtype), U, preferred_element_type=f32)
        gates = _activate(act, rec_act, z)
        c_new = _new_c(gates, c)
        h_new = gates[:, 2 * H : 3 * H] * act(c_new)
        out = h_new
        if m_t is not None:
            m = m_t[:, None]
            c_new, h_new = jnp.where(m, c_new, c), jnp.where(m, h_new, h)
            out = jnp.where(m, out, jnp.zeros_like(out))
        return (c_new, h_new), ((out, gates.astype(xp_t.dtype), c) if save else out)

    (c, h), ys = jax.lax.scan(body, (c0, h0), (xp, mask), unroll=unroll)
    if save:
        out, gates, c_prev = ys
        return (c, h), out, (gates, c_prev)
    return (c, h), ys, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _lstm(act, rec_act, unroll, xp, U, c0, h0, mask):
    (c, h), out, _ = _forward(act, rec_act, unroll, False, xp, U, c0, h0, mask)
    return (c, h), out


def _lstm_fwd(act, rec_act, unroll, xp, U, c0, h0, mask):
    (c, h), out, (gates, c_prev) = _forward(act, rec_act, unroll, True, xp, U, c0, h0, mask)
    return ((c, h), out), (U, h0, mask, out, gates, c_prev)


def _lstm_bwd(act, rec_act, unroll, res, cotangents):
    U, h0, mask, out, gates, c_prev = res
    (dc_T, dh_T), dout = cotangents
    H = h0.shape[-1]
    f32 = c_prev.dtype
    d_act, d_rec = _GRAD_FROM_OUTPUT[act], _GRAD_FROM_OUTPUT[rec_act]
    U_t = U.T  # transposed once, so each step's dz U^T is a plain row-major dot

    def body(carry, inputs):
        dc, dh = carry
        gates_t, cp_t, dout_t, m_t = inputs
        gates_t = gates_t.astype(f32)
        ifo, g = gates_t[:, : 3 * H], gates_t[:, 3 * H :]
        i, f, o = ifo[:, :H], ifo[:, H : 2 * H], ifo[:, 2 * H :]
        a = act(_new_c(gates_t, cp_t))  # recomputed: cheaper than saving another [T, B, H]
        dh_t = dh + dout_t
        dc_t = dc + dh_t * o * d_act(a)
        d_ifo = jnp.concatenate([dc_t * g, dc_t * cp_t, dh_t * a], axis=-1) * d_rec(ifo)
        dz = jnp.concatenate([d_ifo, dc_t * i * d_act(g)], axis=-1)
        dc_prev = dc_t * f
        if m_t is not None:
            # Past its length a row's step was the identity on the carry, with a zero output.
            m = m_t[:, None]
            dz = jnp.where(m, dz, jnp.zeros_like(dz))
            dc_prev = jnp.where(m, dc_prev, dc)
        dz = dz.astype(U_t.dtype)
        dh_prev = jnp.dot(dz, U_t, preferred_element_type=f32)
        if m_t is not None:
            dh_prev = dh_prev + jnp.where(m, jnp.zeros_like(dh), dh)
        return (dc_prev, dh_prev), dz

    (dc0, dh0), dz = jax.lax.scan(body, (dc_T, dh_T), (gates, c_prev, dout, mask), reverse=True, unroll=unroll)
    # dU = sum_t h_{t-1}^T dz_t as one matmul. At a valid step t the previous output equals the
    # previous carry (the valid region is a prefix); at the other steps dz is zero.
    h_prev = jnp.concatenate([h0[None], out[:-1]], axis=0).astype(U.dtype)
    T, B, G = dz.shape
    dU = jnp.dot(h_prev.reshape(T * B, H).T, dz.reshape(T * B, G), preferred_element_type=f32)
    return dz.astype(gates.dtype), dU.astype(U.dtype), dc0, dh0, None


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def lstm_scan(
    xp_TxBxG: Array,
    U_HxG: Array,
    carry: tuple[Array, Array],
    mask_TxB: Array | None = None,
    *,
    activation: Callable = jnp.tanh,
    recurrent_activation: Callable = jax.nn.sigmoid,
    unroll: int | None = None,
):
    """The LSTM recurrence over projected inputs. Returns (final (c, h), outputs [T, B, H]).

    ``xp_TxBxG`` holds ``x W + b`` with gate blocks (i, f, o, g); ``carry`` is ``(c, h)``, each
    [B, H], in the dtype the elementwise work and the outputs use (float32). ``mask_TxB`` marks the
    valid steps (a prefix of each row). ``activation`` and ``recurrent_activation`` must be among
    sigmoid, tanh, relu and linear (``lstm_jax.cells.ACTIVATIONS``).
    """
    if not supports(activation, recurrent_activation):
        raise ValueError("lstm_scan supports the activations sigmoid, tanh, relu and linear only")
    c0, h0 = carry
    h0 = h0.astype(c0.dtype)
    unroll = default_unroll() if unroll is None else unroll
    return _lstm(activation, recurrent_activation, unroll, xp_TxBxG, U_HxG, c0, h0, mask_TxB)


# -- the standard cell as a layer ------------------------------------------------------------------

def supports_cell(cell) -> bool:
    """Whether ``cell`` is exactly the standard ``LSTMCell`` with activations the fast path knows."""
    from lstm_jax.cells import LSTMCell

    return type(cell) is LSTMCell and supports(cell.activation, cell.recurrent_activation)


def _weights(cell):
    """(W [D, 4H], b [4H] or None, U [H, 4H]), W and U in the cell's compute dtype."""
    cast = (lambda a: a) if cell.dtype is None else (lambda a: a.astype(cell.dtype))
    b = None if cell.bias is None else cell.bias[...]
    return cast(cell.kernel[...]), b, cast(cell.recurrent_kernel[...])


def _project(x, W, b):
    """``LSTMCell.project`` on raw arrays."""
    xp = x.astype(W.dtype) @ W
    return xp if b is None else xp + b.astype(xp.dtype)


def lstm_layer(cell, x_TxBxD: Array, carry, mask_TxB: Array | None = None, *, unroll: int | None = None,
               remat: bool = False):
    """The standard ``LSTMCell`` over a time-major sequence. Returns (final (c, h), outputs [T, B, H]).

    ``remat`` keeps only the carries between chunks of about sqrt(T) steps and recomputes each
    chunk's forward pass during the backward pass, so activation memory grows as sqrt(T), not T.
    """
    W, b, U = _weights(cell)
    kw = dict(activation=cell.activation, recurrent_activation=cell.recurrent_activation, unroll=unroll)
    if not remat:
        return lstm_scan(_project(x_TxBxD, W, b), U, carry, mask_TxB, **kw)
    return _remat_scan(x_TxBxD, W, b, U, carry, mask_TxB, kw)


def _remat_scan(x_TxBxD, W, b, U, carry, mask_TxB, kw):
    T, B, D = x_TxBxD.shape
    K = max(1, round(T ** 0.5))
    n = -(-T // K)
    pad = n * K - T
    if pad:
        # Padded steps are masked out: the carry stays frozen through them and their outputs are zero.
        mask = jnp.ones((T, B), bool) if mask_TxB is None else mask_TxB
        mask_TxB = jnp.pad(mask, ((0, pad), (0, 0)))
        x_TxBxD = jnp.pad(x_TxBxD, ((0, pad), (0, 0), (0, 0)))
    xs = x_TxBxD.reshape(n, K, B, D)
    ms = None if mask_TxB is None else mask_TxB.reshape(n, K, B)

    @jax.checkpoint
    def chunk(carry, x_KxBxD, m_KxB, W, b, U):
        # Projected per chunk, so not even xp [T, B, 4H] is kept for the backward pass.
        return lstm_scan(_project(x_KxBxD, W, b), U, carry, m_KxB, **kw)

    def body(carry, inputs):
        x_c, m_c = inputs
        return chunk(carry, x_c, m_c, W, b, U)

    carry, h = jax.lax.scan(body, carry, (xs, ms))
    return carry, h.reshape(n * K, B, -1)[:T]


# -- cuDNN -----------------------------------------------------------------------------------------

def cudnn_available() -> bool:
    """Whether the default backend is a CUDA GPU with jax's cuDNN RNN kernels."""
    if jax.default_backend() != "gpu":
        return False
    try:
        from jax._src.lib import gpu_rnn
    except ImportError:
        return False
    platform = getattr(jax.devices()[0].client, "platform_version", "").lower()
    return gpu_rnn is not None and "cuda" in platform


def cudnn_supports(cell) -> bool:
    """Whether cuDNN can run ``cell``: the standard cell in float32 with tanh and sigmoid, on CUDA."""
    return (
        supports_cell(cell)
        and cell.activation is ACTIVATIONS["tanh"]
        and cell.recurrent_activation is ACTIVATIONS["sigmoid"]
        and cell.dtype in (None, jnp.float32)
        and cell.kernel[...].dtype == jnp.float32
        and cudnn_available()
    )


# Our gate blocks are (i, f, o, g); cuDNN's are (i, f, g, o).
_CUDNN_ORDER = (0, 1, 3, 2)


def _to_cudnn(a_xG: Array, H: int) -> Array:
    """[..., 4H] in our gate order -> [4H, ...] in cuDNN's."""
    blocks = jnp.split(a_xG, 4, axis=-1)
    return jnp.concatenate([blocks[k] for k in _CUDNN_ORDER], axis=-1).T


def cudnn_lstm(cell, x_BxTxD: Array, lengths_B: Array | None, carry):
    """The standard cell over a batch-first sequence through cuDNN. Returns (final (c, h), outputs [B, T, H]).

    Same semantics as the scan path, a zero length included (cuDNN wants lengths >= 1, so such rows
    run one step whose results are then discarded).
    """
    from jax.experimental import rnn

    B, T, D = x_BxTxD.shape
    H = cell.hidden_size
    c0, h0 = carry
    b = jnp.zeros((4 * H,), jnp.float32) if cell.bias is None else cell.bias[...]
    weights = jnp.concatenate([
        _to_cudnn(cell.kernel[...], H).ravel(),
        _to_cudnn(cell.recurrent_kernel[...], H).ravel(),
        _to_cudnn(b, H),
        jnp.zeros((4 * H,), jnp.float32),  # cuDNN has a second, recurrent bias; ours is folded into b
    ])
    full = jnp.full((B,), T, jnp.int32)
    lengths = full if lengths_B is None else jnp.asarray(lengths_B, jnp.int32)
    y, h_n, c_n = rnn.lstm(
        x_BxTxD.astype(jnp.float32), h0[None], c0[None], weights, jnp.maximum(lengths, 1),
        input_size=D, hidden_size=H, num_layers=1, dropout=0.0, bidirectional=False,
    )
    c, h = c_n[0], h_n[0]
    if lengths_B is not None:
        empty = (lengths == 0)[:, None]
        c, h = jnp.where(empty, c0, c), jnp.where(empty, h0, h)
        y = jnp.where(empty[:, :, None], 0.0, y)
    return (c, h), y
