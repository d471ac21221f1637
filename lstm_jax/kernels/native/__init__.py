"""The native CPU kernels (C++, XLA FFI custom calls): which cell runs in which kernel.

:mod:`.build` says whether the extension is built and registers its targets; :mod:`.lstm` holds
the LSTM family (the standard cell and Greff's variants, FGR among them), :mod:`.layernorm` the
layer-normalised LSTM and :mod:`.gru` the GRU. Every registered cell class has an entry here (its
``supports`` and ``layer``); a user's own cell plugs in with :func:`register`.
"""

from __future__ import annotations

import jax

from lstm_jax.kernels.native import gru, layernorm, lstm
from lstm_jax.kernels.native.build import available, built, isa, threads
from lstm_jax.kernels.native.lstm import cell_layers, stackable
from lstm_jax.nn.cells import GRUCell, LayerNormLSTMCell

Array = jax.Array

__all__ = ["available", "built", "isa", "threads", "cell_layers", "stackable", "register", "supports", "layer"]

# cell class -> (supports(cell) -> bool, layer(cell, x_TxBxD, carry, mask_TxB, *, remat) -> (carry, out))
_ENTRIES: dict = {
    **{cls: (lstm.supports, lstm.layer) for cls in lstm.VARIANTS},
    LayerNormLSTMCell: (layernorm.supports, layernorm.layer),
    GRUCell: (gru.supports, gru.layer),
}


def register(cell_class, supports_fn, layer_fn) -> None:
    """Adds a native kernel for exactly ``cell_class`` (subclasses are ablations and are not matched).

    ``supports_fn(cell) -> bool`` says whether it runs this cell here (dtype, activations, backend);
    ``layer_fn(cell, x_TxBxD, carry, mask_TxB, *, remat) -> (final carry, outputs [T, B, H])`` runs
    it with the semantics of ``nn.layers.scan_cell``. The standard LSTM, Greff's variants (``np``,
    ``peephole``, ``nig``, ``nfg``, ``nog``, ``niaf``, ``noaf``, ``cifg``, ``fgr``), ``layernorm`` and the GRU
    are registered from the start.
    """
    _ENTRIES[cell_class] = (supports_fn, layer_fn)


def supports(cell) -> bool:
    """Whether a native kernel runs ``cell`` here."""
    entry = _ENTRIES.get(type(cell))
    return entry is not None and entry[0](cell)


def layer(cell, x_TxBxD: Array, carry, mask_TxB: Array | None = None, *, remat: bool = False):
    """``cell`` over a time-major sequence in its native kernel. Returns (final carry, outputs [T, B, H])."""
    return _ENTRIES[type(cell)][1](cell, x_TxBxD, carry, mask_TxB, remat=remat)
