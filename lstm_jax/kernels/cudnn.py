"""The standard LSTM cell in cuDNN, through ``jax.experimental.rnn`` (CUDA GPUs).

The whole layer is one cuDNN call. What the call needs that the rest of lstm_jax does not:

* weights in one flat vector, gate blocks in cuDNN's order (i, f, g, o), two biases;
* an initial carry in float32 (a bf16 carry would reach the kernel uncast);
* lengths in [1, T]: a zero length runs one step whose results are then discarded, and a length
  past T means all T steps, as the mask of the scan path reads it;
* an explicit matmul precision: under a global precision of bfloat16, fastest or default,
  ``jax.experimental.rnn`` raises NotImplementedError, so the call asks for TF32 (``HIGH``) unless
  the global setting is highest/float32 (``HIGHEST``, full float32);
* with several devices, one call per batch shard (:mod:`lstm_jax.kernels.sharding`).

``jax.experimental.rnn.lstm`` is looked up at each call, so a test can put its pure reference
``lstm_ref`` in its place and run this whole path on a CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lstm_jax.kernels import sharding, xla
from lstm_jax.kernels.sharding import BATCH, REPLICATED, TIME_BATCH
from lstm_jax.nn.cells import ACTIVATIONS

Array = jax.Array

# Our gate blocks are (i, f, o, g); cuDNN's are (i, f, g, o).
_ORDER = (0, 1, 3, 2)


def available() -> bool:
    """Whether the default backend is a CUDA GPU (where jax.experimental.rnn has cuDNN kernels)."""
    if jax.default_backend() != "gpu":
        return False
    from jax.extend.backend import get_backend

    version = str(get_backend().platform_version).lower()
    return "rocm" not in version and "hip" not in version


def supports(cell) -> bool:
    """Whether cuDNN can run ``cell``: the standard cell in float32 with tanh and sigmoid, on CUDA."""
    return (
        xla.supports_lstm(cell)
        and cell.activation is ACTIVATIONS["tanh"]
        and cell.recurrent_activation is ACTIVATIONS["sigmoid"]
        and cell.dtype in (None, jnp.float32)
        and cell.kernel[...].dtype == jnp.float32
        and available()
    )


def _to_cudnn(a_xG: Array) -> Array:
    """[..., 4H] in our gate order -> [4H, ...] in cuDNN's."""
    blocks = jnp.split(a_xG, 4, axis=-1)
    return jnp.concatenate([blocks[k] for k in _ORDER], axis=-1).T


def weights(cell) -> Array:
    """The cell's weights as the flat vector ``jax.experimental.rnn.lstm`` takes (one layer, one direction):
    W_ih [4H, D], W_hh [4H, H], b_ih, b_hh, each in cuDNN's gate order."""
    H = cell.hidden_size
    b = jnp.zeros((4 * H,), jnp.float32) if cell.bias is None else cell.bias[...].astype(jnp.float32)
    return jnp.concatenate([
        _to_cudnn(cell.kernel[...].astype(jnp.float32)).ravel(),
        _to_cudnn(cell.recurrent_kernel[...].astype(jnp.float32)).ravel(),
        _to_cudnn(b),
        jnp.zeros((4 * H,), jnp.float32),  # cuDNN's second (recurrent) bias; ours is folded into b
    ])


def precision() -> jax.lax.Precision:
    """The precision passed to cuDNN: HIGHEST where the global setting asks for full float32, else
    HIGH (TF32; cuDNN's own default). Passing it keeps jax.experimental.rnn from reading a global
    bfloat16/fastest/default setting, which it refuses with NotImplementedError."""
    setting = jax.config.jax_default_matmul_precision
    full = setting is not None and str(setting).lower() in ("highest", "float32")
    return jax.lax.Precision.HIGHEST if full else jax.lax.Precision.HIGH


def layer(cell, x_BxTxD: Array, lengths_B: Array | None, carry, *, run=None):
    """The standard cell over a batch-first sequence. Returns (final (c, h), outputs [B, T, H]).

    Same semantics as the scan path: zero lengths included, lengths past T read as T. ``run``
    stands in for ``jax.experimental.rnn.lstm``.
    """
    if run is None:
        from jax.experimental import rnn

        run = rnn.lstm
    B, T, D = x_BxTxD.shape
    H = cell.hidden_size
    f32 = jnp.float32
    c0, h0 = carry
    dtype = c0.dtype
    lengths = jnp.full((B,), T, jnp.int32) if lengths_B is None else jnp.asarray(lengths_B).astype(jnp.int32)
    prec = precision()

    def call(x, h0, c0, w, seq_lengths):
        return run(x, h0, c0, w, seq_lengths, input_size=D, hidden_size=H, num_layers=1, dropout=0.0,
                   bidirectional=False, precision=prec)

    call = sharding.per_shard(call, sharding.batch_mesh(B), (BATCH, TIME_BATCH, TIME_BATCH, REPLICATED, BATCH),
                              (BATCH, TIME_BATCH, TIME_BATCH))
    y, h_n, c_n = call(x_BxTxD.astype(f32), h0.astype(f32)[None], c0.astype(f32)[None], weights(cell),
                       jnp.clip(lengths, 1, T))
    c, h = c_n[0].astype(dtype), h_n[0].astype(dtype)
    y = y.astype(dtype)
    if lengths_B is not None:
        empty = (lengths <= 0)[:, None]
        c, h = jnp.where(empty, c0, c), jnp.where(empty, h0, h)
        y = jnp.where(empty[:, :, None], jnp.zeros_like(y), y)
    return (c, h), y
