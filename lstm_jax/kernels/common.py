"""What every kernel path shares: the cell's weights as arrays, custom-VJP helpers, and remat by chunks.

The XLA, native and cuDNN paths each import from here; none imports another's helpers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_jax.nn.cells import RecurrentCell

Array = jax.Array


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Static:
    """A Python value among a custom VJP's residuals (static: part of the tree's structure, not traced)."""

    value: object


def dense(ct, like):
    """A cotangent as an array: symbolic zeros (an output nobody used) become zeros shaped as ``like``."""
    if isinstance(ct, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros(like.shape, like.dtype)
    return ct


def cell_weights(cell):
    """(W [D, G], b [G] or None, U [H, G]) of a cell, W and U in the cell's compute dtype."""
    cast = (lambda a: a) if cell.dtype is None else (lambda a: a.astype(cell.dtype))
    b = None if cell.bias is None else cell.bias[...]
    return cast(cell.kernel[...]), b, cast(cell.recurrent_kernel[...])


def generic_supports(cell) -> bool:
    """Whether ``cell`` has the structure the custom VJPs rely on: a step that is
    ``combine(carry, xp, recurrent(output(carry)))`` with ``recurrent`` the base class's h U.

    Every registered cell has it, and so has a user's subclass that overrides ``update``,
    ``combine``, ``project`` or ``output`` (not ``step`` or ``recurrent``).
    """
    cls = type(cell)
    return cls.step is RecurrentCell.step and cls.recurrent is RecurrentCell.recurrent


def remat_scan(layer, x_TxBxD, carry, mask_TxB):
    """``layer(x, carry, mask) -> (carry, out)`` over chunks of about sqrt(T) steps, each chunk
    checkpointed: the backward pass keeps only the carries between chunks and recomputes the rest,
    so activation memory grows as sqrt(T), not T."""
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
    chunk = jax.checkpoint(lambda carry, x, m: layer(x, carry, m))

    def body(carry, inputs):
        x_c, m_c = inputs
        return chunk(carry, x_c, m_c)

    carry, h = jax.lax.scan(body, carry, (xs, ms))
    return carry, h.reshape(n * K, B, -1)[:T]
