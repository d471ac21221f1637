"""Which implementation runs a layer's recurrence, in one place.

* ``scan``: ``lax.scan`` of ``cell.step`` (``nn.layers.scan_cell``); every cell, recurrent dropout.
* ``xla``: :mod:`~lstm_jax.kernels.xla`, a custom VJP in XLA: the standard ``LSTMCell`` has a
  hand-written one; every other cell with the project / recurrent / combine structure (all the
  registered ones, and a user's subclass that keeps ``step`` and ``recurrent``) the generic one.
  ``'fast'``, its former name, is still accepted.
* ``native``: :mod:`~lstm_jax.kernels.native`, C++ kernels on the CPU (every registered cell; other
  cells plug in with ``native.register``).
* ``cudnn``: :mod:`~lstm_jax.kernels.cudnn`, cuDNN on a CUDA GPU (the standard cell).

:func:`choose` resolves ``'auto'`` and checks a forced choice; :func:`run` runs one. The native and
cuDNN calls run per batch shard with several devices (:mod:`~lstm_jax.kernels.sharding`), so
``'auto'`` picks them on one device or many.

Each backend module has ``supports(cell)`` and ``layer(cell, ...)``. The XLA and native layers take
time-major ``x_TxBxD`` with a ``mask_TxB`` (their scans and kernels step over the leading axis);
cuDNN's takes what ``jax.experimental.rnn`` takes, batch-first ``x_BxTxD`` with ``lengths_B``, so
that no transpose is added around it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lstm_jax.errors import ConfigError
from lstm_jax.kernels import cudnn, native, xla

Array = jax.Array
IMPLS = ("auto", "scan", "xla", "native", "cudnn")
ALIASES = {"fast": "xla"}  # earlier names of an impl, still accepted


def choose(cell, impl: str = "auto", *, remat: bool = False, recurrent_dropout: float = 0.0) -> str:
    """'auto' -> the fastest implementation that runs ``cell`` here; a forced one is checked.

    Order: cuDNN (GPU), native (CPU), the XLA fast path, the scan. Recurrent dropout needs a mask
    inside the recurrence, which only the scan has. Raises ConfigError for an impossible choice.
    """
    impl = ALIASES.get(impl, impl)
    if impl not in IMPLS:
        raise ConfigError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if recurrent_dropout > 0.0:
        if impl not in ("auto", "scan"):
            raise ConfigError(f"recurrent_dropout runs on impl='scan' (or 'auto'), not {impl!r}")
        impl = "scan"
    if impl == "auto":
        if cudnn.supports(cell) and not remat:
            impl = "cudnn"
        elif native.supports(cell):
            impl = "native"
        else:
            impl = "xla" if xla.supports(cell) else "scan"
    elif impl == "xla" and not xla.supports(cell):
        raise ConfigError(
            f"impl='xla' runs cells whose step is combine(carry, xp, recurrent(h)) with the base class's "
            f"recurrent matmul; this {type(cell).__name__} overrides step or recurrent; use impl='scan' or 'auto'")
    elif impl == "native" and not native.supports(cell):
        why = "they are not built here (see lstm_jax.kernels.native)" if not native.built() else (
            f"backend {jax.default_backend()}" if not native.available() else f"this {type(cell).__name__}")
        raise ConfigError(
            "impl='native' runs the registered cells (exactly their classes), in float32 with "
            "tanh and sigmoid on the CPU, "
            f"with the C++ kernels built; not {why}; use impl='auto'")
    elif impl == "cudnn" and not cudnn.supports(cell):
        raise ConfigError(
            "impl='cudnn' needs a CUDA GPU and the standard LSTMCell in float32 with tanh and sigmoid "
            f"(backend here: {jax.default_backend()}); use impl='auto'")
    if remat and impl not in ("xla", "native"):
        raise ConfigError(f"remat=True is an option of the xla and native paths, not of impl={impl!r}")
    return impl


# Where 'auto' keeps the native kernels on the CPU, by the size of the packed weights [D + H, G*H]
# (float32 bytes) and the batch. Each thread runs its block of rows through the whole sequence and
# streams all the weights every step; XLA's dot reads them once per step for all rows. With small
# weights that does not matter; with large ones native wins only with enough rows per thread.
# Measured on 2 cores (docs/results.md, "Inference"): native won at B=1..64 with 0.3 MB of weights
# and at B >= 32 up to 8 MB; it lost at B <= 16 from 2 MB and at every B with 32 MB (H=1024).
NATIVE_SMALL_WEIGHTS = 512 * 1024
NATIVE_LARGE_WEIGHTS = 8 * 1024 * 1024
NATIVE_MIN_ROWS_LARGE = 32


def refine(impl: str, cell, batch: int, in_features: int) -> str:
    """'auto''s choice made at build time, refined by the problem's size when the layer is called:
    'native' becomes 'xla' where the measurements above say XLA is faster (and it runs the cell)."""
    if impl != "native" or not xla.supports(cell):
        return impl
    weight_bytes = 4 * (in_features + cell.hidden_size) * cell.num_gates * cell.hidden_size
    if weight_bytes <= NATIVE_SMALL_WEIGHTS:
        return impl
    if weight_bytes <= NATIVE_LARGE_WEIGHTS and batch >= NATIVE_MIN_ROWS_LARGE:
        return impl
    return "xla"


def run(impl: str, cell, x_BxTxD: Array, mask_BxT: Array | None, lengths_B: Array | None, carry, *,
        remat: bool = False):
    """One layer's recurrence by ``impl`` (not 'scan' or 'auto'). Returns (final carry, outputs [B, T, H]).

    Semantics of ``nn.layers.scan_cell``: row b is valid on [0, lengths[b]); past it the carry is
    frozen and the outputs are zero. ``mask_BxT`` is that prefix as a mask (None: all valid).
    """
    if impl == "cudnn":
        return cudnn.layer(cell, x_BxTxD, lengths_B, carry)
    # Time-major before the projection, where the feature axis is still narrow.
    x_TxBxD = jnp.swapaxes(x_BxTxD, 0, 1)
    mask_TxB = None if mask_BxT is None else mask_BxT.T
    backend = native if impl == "native" else xla
    carry, h_TxBxH = backend.layer(cell, x_TxBxD, carry, mask_TxB, remat=remat)
    return carry, jnp.swapaxes(h_TxBxH, 0, 1)
