"""Builds the optional native CPU kernels, lstm_jax._native (everything else is in pyproject.toml).

The kernels are XLA FFI custom calls; their headers come with jaxlib (a build requirement). The
extension is optional: without a C++17 compiler, or on a platform where it fails to build, the
install still succeeds and lstm_jax runs its XLA paths (``lstm_jax.kernels.native.built()`` is False).
"""

import os
import sys

from setuptools import Extension, setup


def _ffi_include_dir():
    try:
        import jaxlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    return path if os.path.isfile(os.path.join(path, "xla", "ffi", "api", "ffi.h")) else None


def _extensions():
    include = _ffi_include_dir()
    if include is None or sys.platform == "win32":
        print("lstm_jax: not building the native kernels (no jaxlib FFI headers, or Windows)", file=sys.stderr)
        return []
    csrc = os.path.join("lstm_jax", "csrc")
    return [Extension(
        "lstm_jax._native",
        sources=[os.path.join(csrc, f) for f in
                 ("runtime.cc", "lstm_cpu.cc", "gru_cpu.cc", "kernel_generic.cc", "kernel_avx2.cc", "kernel_avx512.cc")],
        include_dirs=[include, csrc],
        depends=[os.path.join(csrc, f) for f in ("runtime.h", "kernel_common.h", "simd.inc", "kernel.h", "kernel.inc",
                                                 "gru_kernel.h", "gru_kernel.inc")],
        language="c++",
        # fp-contract: the tiles' a*b+c become FMAs (ISO C++ mode would leave them as two roundings).
        extra_compile_args=["-std=c++17", "-O3", "-ffp-contract=fast", "-fvisibility=hidden", "-pthread"],
        extra_link_args=["-pthread"],
        optional=True,
    )]


setup(ext_modules=_extensions())
