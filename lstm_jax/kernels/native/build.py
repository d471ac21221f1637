"""The native extension's build status, and the registration of its FFI targets with XLA.

The C++ kernels in ``lstm_jax/csrc`` are built into ``lstm_jax._native`` by ``pip install``
(setup.py). Where the extension is missing (no compiler at install time) :func:`available` is False and
``impl='auto'`` uses the XLA fast path instead. Environment: ``LSTM_JAX_NATIVE_THREADS`` sets the
thread count (default: the CPUs this process may use); ``LSTM_JAX_NATIVE_ISA=avx2|generic``
forces a narrower kernel; ``LSTM_JAX_NATIVE_HUGEPAGES=0`` stops the kernels asking Linux for
transparent huge pages over their outputs and over the block of XLA's temporaries that holds them
(which a training step otherwise faults in afresh 4 KB at a time: see ``csrc/runtime.cc``). All
are read once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

try:
    from lstm_jax import _native
except ImportError:  # built without a compiler, or an unsupported platform
    _native = None

Array = jax.Array
# XLA's target name -> the capsule the module exports (csrc/runtime.cc's module init lists them all).
_TARGETS = {"lstm_jax_fwd": "lstm_fwd", "lstm_jax_fwd_infer": "lstm_fwd_infer", "lstm_jax_bwd": "lstm_bwd",
            "lstm_jax_bwd_no_dx": "lstm_bwd_no_dx", "lstm_jax_ln_fwd": "lstm_ln_fwd", "lstm_jax_ln_bwd": "lstm_ln_bwd",
            "lstm_jax_gru_fwd": "gru_fwd", "lstm_jax_gru_fwd_infer": "gru_fwd_infer", "lstm_jax_gru_bwd": "gru_bwd",
            "lstm_jax_gru_bwd_no_dx": "gru_bwd_no_dx"}
_registered = False


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


def register_targets() -> None:
    """Registers every kernel's FFI target (the LSTM family's and the GRU's) with XLA, once."""
    global _registered
    if not _registered:
        for target, name in _TARGETS.items():
            jax.ffi.register_ffi_target(target, getattr(_native, name), platform="cpu")
        _registered = True


def mask(mask_TxB: Array | None, T: int, B: int) -> Array:
    """The valid steps as a bool [T, B] array (all valid when None), as the kernels take them."""
    return jnp.ones((T, B), bool) if mask_TxB is None else jnp.asarray(mask_TxB).astype(bool)
