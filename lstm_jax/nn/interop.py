"""Exact weight transfer between ``torch.nn.LSTM`` and lstm_jax (``pip install -e '.[torch]'``).

torch keeps, per layer ``k`` and direction (suffix ``_reverse`` for the backward one),
``weight_ih_lk`` [4H, I], ``weight_hh_lk`` [4H, H] and two biases ``bias_ih_lk``, ``bias_hh_lk`` [4H],
with gate blocks in the order (i, f, g, o). lstm_jax's ``LSTMCell`` keeps ``kernel`` [I, 4H],
``recurrent_kernel`` [H, 4H] and one ``bias`` [4H] in the order (i, f, o, g). Both compute the same
LSTM (no peepholes, σ gates, tanh), so a transfer is a transpose, a swap of the last two blocks
and, for the bias, a sum.

lstm_jax is batch first; ``from_torch`` models take [B, T, I] whatever the torch module's
``batch_first``. Carries: torch's ``(h, c)`` [L·dirs, B, H] against lstm_jax's per-layer
``(c, h)`` (``((c, h), (c, h))`` for a bidirectional layer); see ``carry_from_torch``.

This is the only module that imports torch, and only inside its functions.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax.errors import ConfigError
from lstm_jax.nn.cells import ACTIVATIONS, LSTMCell
from lstm_jax.nn.layers import LSTM, Bidirectional, LSTMStack

# Our block k is torch's block _ORDER[k]: (i, f, o, g) <- (i, f, g, o). The swap is its own inverse.
_ORDER = (0, 1, 3, 2)


def _swap_blocks(w_4HxN: np.ndarray) -> np.ndarray:
    """Reorders the four gate blocks along axis 0 (either way: the permutation is an involution)."""
    blocks = np.split(w_4HxN, 4, axis=0)
    return np.concatenate([blocks[k] for k in _ORDER], axis=0)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ConfigError("PyTorch interop needs torch: pip install -e '.[torch]'") from None
    return torch


def _directions(layer) -> tuple[LSTM, ...]:
    return (layer.forward, layer.backward) if isinstance(layer, Bidirectional) else (layer,)


def from_torch(module, *, param_dtype=jnp.float32) -> LSTMStack:
    """A ``torch.nn.LSTM`` -> an equivalent ``LSTMStack`` (cell 'lstm', tanh / sigmoid).

    ``stack(x_BxTxI, lengths=None)`` returns [B, T, dirs·H], equal to torch's output (for packed
    sequences: at every valid position; padding is zero in both). Inter-layer dropout is copied
    and, as in torch, only applies when a dropout ``key`` is given (torch: ``train()`` mode).
    """
    torch = _import_torch()
    if not isinstance(module, torch.nn.LSTM):
        raise ConfigError(f"from_torch takes a torch.nn.LSTM, got {type(module).__name__}")
    if module.proj_size:
        raise ConfigError(
            f"torch.nn.LSTM with proj_size={module.proj_size} (projected h, Sak et al. 2014) has no "
            "lstm_jax equivalent; only proj_size=0 can be imported"
        )
    H = module.hidden_size
    stack = LSTMStack(
        module.input_size, H, num_layers=module.num_layers, bidirectional=module.bidirectional,
        dropout=float(module.dropout), cell="lstm", activation="tanh", recurrent_activation="sigmoid",
        use_bias=module.bias, param_dtype=param_dtype, rngs=nnx.Rngs(0),
    )

    def get(name: str) -> np.ndarray:
        return getattr(module, name).detach().cpu().double().numpy()

    for k, layer in enumerate(stack.layers):
        for d, sub in enumerate(_directions(layer)):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            cell = sub.cell
            cell.kernel[...] = jnp.asarray(_swap_blocks(get("weight_ih" + sfx)).T, param_dtype)
            cell.recurrent_kernel[...] = jnp.asarray(_swap_blocks(get("weight_hh" + sfx)).T, param_dtype)
            if module.bias:
                # Summed in float64, so the one rounding is to param_dtype.
                b = get("bias_ih" + sfx) + get("bias_hh" + sfx)
                cell.bias[...] = jnp.asarray(_swap_blocks(b), param_dtype)
    return stack


def _check_exportable(layers) -> tuple[int, bool, bool]:
    """(hidden size, bidirectional, bias) shared by every layer, or a ConfigError saying what differs."""
    seen = set()
    for k, layer in enumerate(layers):
        if not isinstance(layer, (LSTM, Bidirectional)):
            raise ConfigError(f"layer {k} is a {type(layer).__name__}; to_torch takes LSTM and Bidirectional layers")
        if isinstance(layer, LSTM) and layer.reverse:
            raise ConfigError(f"layer {k} runs backwards on its own; torch.nn.LSTM has no such layer")
        for sub in _directions(layer):
            cell = sub.cell
            if type(cell) is not LSTMCell:
                raise ConfigError(
                    f"layer {k} has a {type(cell).__name__}; torch.nn.LSTM is the plain LSTM (cell 'lstm')"
                )
            if cell.activation is not ACTIVATIONS["tanh"] or cell.recurrent_activation is not ACTIVATIONS["sigmoid"]:
                raise ConfigError(f"layer {k}: torch.nn.LSTM needs activation 'tanh' and recurrent_activation 'sigmoid'")
            seen.add((cell.hidden_size, isinstance(layer, Bidirectional), cell.bias is not None))
    if len(seen) != 1:
        raise ConfigError(
            "torch.nn.LSTM needs one hidden size, one direction count and one bias setting for every layer; "
            f"got (hidden, bidirectional, bias) = {sorted(seen)}"
        )
    return seen.pop()


def to_torch(layer: LSTMStack | LSTM | Bidirectional, *, batch_first: bool = True):
    """An ``LSTMStack`` (or one ``LSTM`` / ``Bidirectional`` layer) of plain LSTM cells -> ``torch.nn.LSTM``.

    Our single bias goes to ``bias_ih``; ``bias_hh`` is zero. The torch module's dtype follows the
    parameters'; ``batch_first`` defaults to True, lstm_jax's layout.
    """
    torch = _import_torch()
    layers = list(layer.layers) if isinstance(layer, LSTMStack) else [layer]
    H, bidirectional, bias = _check_exportable(layers)
    first = _directions(layers[0])[0].cell
    dtype = {jnp.dtype(jnp.float64): torch.float64}.get(jnp.dtype(first.kernel[...].dtype), torch.float32)
    module = torch.nn.LSTM(
        first.in_features, H, num_layers=len(layers), bias=bias, batch_first=batch_first,
        dropout=float(layer.dropout) if isinstance(layer, LSTMStack) and len(layers) > 1 else 0.0,
        bidirectional=bidirectional, dtype=dtype,
    )

    def put(name: str, value: np.ndarray) -> None:
        getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)).to(dtype))

    with torch.no_grad():
        for k, lay in enumerate(layers):
            for d, sub in enumerate(_directions(lay)):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                cell = sub.cell
                put("weight_ih" + sfx, _swap_blocks(np.asarray(cell.kernel[...]).T))
                put("weight_hh" + sfx, _swap_blocks(np.asarray(cell.recurrent_kernel[...]).T))
                if bias:
                    put("bias_ih" + sfx, _swap_blocks(np.asarray(cell.bias[...])))
                    put("bias_hh" + sfx, np.zeros(4 * H))
    return module


def carry_from_torch(h_LDxBxH, c_LDxBxH, *, bidirectional: bool):
    """torch's ``(h, c)`` [num_layers·dirs, B, H] -> an ``LSTMStack`` carry (one entry per layer)."""
    h, c = (jnp.asarray(np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)) for a in (h_LDxBxH, c_LDxBxH))
    dirs = 2 if bidirectional else 1
    per_layer = []
    for k in range(h.shape[0] // dirs):
        states = tuple((c[k * dirs + d], h[k * dirs + d]) for d in range(dirs))
        per_layer.append(states if bidirectional else states[0])
    return tuple(per_layer)


def carry_to_torch(carries, *, bidirectional: bool):
    """An ``LSTMStack`` carry -> torch's ``(h, c)``, each a NumPy array [num_layers·dirs, B, H]."""
    states = [s for layer in carries for s in (layer if bidirectional else (layer,))]
    return np.stack([np.asarray(h) for _, h in states]), np.stack([np.asarray(c) for c, _ in states])
