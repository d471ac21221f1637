"""Moved to :mod:`lstm_jax.kernels.native`; this name stays for code that imports it."""

from lstm_jax.kernels.native import *  # noqa: F401,F403
from lstm_jax.kernels.native import available, backward, built, forward, isa, threads  # noqa: F401
