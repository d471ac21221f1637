"""Sequence layers: a cell scanned over time, both directions, and stacks of them.

Every layer takes ``x_BxTxD`` (batch first) and optional ``lengths_B``: row b is valid on
``[0, lengths[b])``. Past a row's length its carry is frozen and its outputs are zero, so padding
never changes a valid output, and the reverse direction reverses only the valid prefix.

Streaming: a forward ``LSTM`` and a stack of them also run one step at a time,
``layer.step(carry, x_BxD, valid_B=None) -> (h_BxH, carry)`` from ``layer.initial_carry(B)``; fed a
sequence step by step (``valid_B = t < lengths``) they give what the whole-sequence call gives.
Backward and bidirectional layers read the sequence from its end and cannot step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax import kernels
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.kernels import native, xla
from lstm_jax.nn.cells import RecurrentCell, get_cell

Array = jax.Array


def valid_mask(lengths_B: Array | None, T: int) -> Array | None:
    """[B, T] boolean mask of the valid prefix, or None when every step is valid."""
    if lengths_B is None:
        return None
    # iota rather than arange: the same program, and converters (jax2onnx) take it with a symbolic T.
    return jax.lax.broadcasted_iota(jnp.int32, (1, T), 1) < jnp.asarray(lengths_B)[:, None]


def reverse_valid(x_BxTx_: Array, lengths_B: Array | None) -> Array:
    """Reverses each row's valid prefix in time and leaves its padding in place (an involution)."""
    if lengths_B is None:
        return jnp.flip(x_BxTx_, axis=1)
    T = x_BxTx_.shape[1]
    t = jax.lax.broadcasted_iota(jnp.int32, (1, T), 1)
    L = jnp.minimum(jnp.asarray(lengths_B), T)[:, None]  # a length past T means the whole row, as in valid_mask
    idx_BxT = jnp.where(t < L, L - 1 - t, t)
    idx = idx_BxT.reshape(idx_BxT.shape + (1,) * (x_BxTx_.ndim - 2))
    return jnp.take_along_axis(x_BxTx_, idx, axis=1)


DROPOUT_MODES = ("variational", "per_step")


def dropout(x: Array, rate: float, key: Array | None) -> Array:
    """Inverted dropout: each entry 0 with probability ``rate``, else x / (1 - rate); the identity when
    ``key`` is None (evaluation) or ``rate`` is 0. The one place a dropout draw is made."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def dropout_mask(key: Array, shape: tuple[int, ...], rate: float, dtype=jnp.float32) -> Array:
    """The mask :func:`dropout` applies, for a mask shared over steps or passed to a cell's ``step``:
    0 with probability ``rate``, else 1 / (1 - rate)."""
    return dropout(jnp.ones(shape, dtype), rate, key)


def freeze_invalid(valid_B: Array, new_carry, old_carry, h_BxH: Array):
    """(carry, h) after a step, where rows with ``valid_B`` False keep ``old_carry`` and output zeros:
    how every step past a row's length is treated, in a sequence or one step at a time."""
    m = valid_B[:, None]
    new_carry = jax.tree.map(lambda n, o: jnp.where(m, n, o), new_carry, old_carry)
    return new_carry, jnp.where(m, h_BxH, jnp.zeros_like(h_BxH))


BIDIRECTIONAL_STEP_ERROR = ("a bidirectional model reads the whole sequence in both directions and cannot stream; "
                            "build it with bidirectional=False to run one step at a time")
REVERSE_STEP_ERROR = ("a layer with reverse=True reads each sequence from its last step back and cannot stream; "
                      "only forward layers run one step at a time")


def scan_cell(cell: RecurrentCell, xp_BxTxG: Array, carry, mask_BxT: Array | None, unroll: int = 1, *,
              recurrent_dropout: float = 0.0, key: Array | None = None, variational: bool = True):
    """Runs ``cell.step`` over time. Returns (final carry, outputs [B, T, H]).

    With ``recurrent_dropout`` and a ``key``, the h entering the recurrent matmul is masked: one
    [B, H] mask for the whole sequence when ``variational`` (Gal & Ghahramani 2016), else a fresh
    mask at step t drawn inside the scan from ``fold_in(key, t)``.
    """
    B, T = xp_BxTxG.shape[:2]
    H = cell.hidden_size
    dropping = key is not None and recurrent_dropout > 0.0
    h_mask = dropout_mask(key, (B, H), recurrent_dropout, cell.carry_dtype) if dropping and variational else None
    xs = {"xp": jnp.swapaxes(xp_BxTxG, 0, 1), "t": jax.lax.iota(jnp.int32, T)}
    if mask_BxT is not None:
        xs["valid"] = jnp.swapaxes(mask_BxT, 0, 1)

    def body(carry, x):
        m_h = h_mask
        if dropping and not variational:
            m_h = dropout_mask(jax.random.fold_in(key, x["t"]), (B, H), recurrent_dropout, cell.carry_dtype)
        new, h = cell.step(carry, x["xp"], m_h)
        if "valid" in x:
            new, h = freeze_invalid(x["valid"], new, carry, h)
        return new, h

    carry, h_TxBxH = jax.lax.scan(body, carry, xs, unroll=unroll)
    return carry, jnp.swapaxes(h_TxBxH, 0, 1)


class LSTM(nnx.Module):
    """One recurrent layer: ``LSTM(in_features, hidden_size, *, rngs)``.

    ``layer(x_BxTxD, lengths=None, initial_carry=None, return_carry=False)`` returns the outputs
    [B, T, H], and ``(outputs, final_carry)`` when ``return_carry``. ``cell`` is a registered name
    (see ``lstm_jax.nn.cells.CELLS``) or a cell class; extra keyword arguments go to the cell.
    ``reverse=True`` runs backwards over each row's valid prefix; its outputs stay aligned with the
    inputs. ``unroll`` is passed to the generic path's ``lax.scan`` (None: a per-backend default).

    ``impl`` picks how the recurrence runs (see ``lstm_jax.kernels``): ``'scan'`` is the generic
    ``lax.scan`` of ``cell.step`` (every cell); ``'xla'`` is a custom VJP in XLA (every registered
    cell); ``'native'`` runs C++ kernels (every registered cell, float32, tanh/sigmoid, on
    the CPU);
    ``'cudnn'`` is cuDNN through ``jax.experimental.rnn`` (standard cell with tanh/sigmoid, on a
    GPU); ``'auto'`` takes the fastest one that applies, judged by the default backend when the
    layer is built. With several devices the native and cuDNN kernels run once per batch shard.
    ``layer.step(carry, x_BxD, valid_B=None)`` runs one step (see :meth:`step`).
    ``remat=True`` (xla and native paths) recomputes the forward in chunks during the backward
    pass, so that long sequences train in O(sqrt(T)) activation memory.
    Pass ``dtype=jnp.bfloat16`` (a cell argument) to compute in bf16; the cell state c stays f32.

    Dropout, active only when the call gets a ``key``: ``input_dropout`` on x and
    ``recurrent_dropout`` on the h that feeds the recurrence (never on the carried state). With
    ``dropout_mode='variational'`` (default; Gal & Ghahramani 2016) each sequence keeps one mask for
    all its steps; with ``'per_step'`` every step draws new masks (recurrent ones from
    ``fold_in(key, t)`` inside the scan). Recurrent dropout runs on the scan path.
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        *,
        cell: str | type[RecurrentCell] = "lstm",
        reverse: bool = False,
        unroll: int | None = None,
        impl: str = "auto",
        remat: bool = False,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        dropout_mode: str = "variational",
        rngs: nnx.Rngs,
        **cell_kwargs: Any,
    ):
        if unroll is not None and unroll < 1:
            raise ConfigError(f"unroll must be >= 1, got {unroll}")
        for name, rate in (("input_dropout", input_dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {rate}")
        if dropout_mode not in DROPOUT_MODES:
            raise ConfigError(f"dropout_mode must be one of {', '.join(DROPOUT_MODES)}, got {dropout_mode!r}")
        self.cell = get_cell(cell)(in_features, hidden_size, rngs=rngs, **cell_kwargs)
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.reverse = reverse
        self.unroll = unroll
        self.remat = remat
        self.input_dropout = input_dropout
        self.recurrent_dropout = recurrent_dropout
        self.dropout_mode = dropout_mode
        self.impl = kernels.choose(self.cell, impl, remat=remat, recurrent_dropout=recurrent_dropout)
        # 'auto' picks again by the problem's size when called (``kernels.refine``); a forced impl stays.
        self.auto = impl == "auto"

    def call_impl(self, batch: int) -> str:
        """The implementation a call with ``batch`` rows runs: ``impl``, refined by size for 'auto'."""
        return kernels.refine(self.impl, self.cell, batch, self.in_features) if self.auto else self.impl

    @property
    def out_features(self) -> int:
        return self.hidden_size

    def initial_carry(self, batch_size: int):
        return self.cell.initial_carry(batch_size)

    def final_output(self, carry) -> Array:
        """The last valid step's output [B, H], read from a final carry."""
        return self.cell.output(carry)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, initial_carry=None, return_carry: bool = False,
                 *, key: Array | None = None):
        B, T, D = x_BxTxD.shape
        if self.reverse:
            x_BxTxD = reverse_valid(x_BxTxD, lengths)
        carry = self.initial_carry(B) if initial_carry is None else initial_carry
        variational = self.dropout_mode == "variational"
        if key is not None and self.input_dropout > 0.0:
            shape = (B, 1, D) if variational else (B, T, D)
            x_BxTxD = x_BxTxD * dropout_mask(jax.random.fold_in(key, 0), shape, self.input_dropout, x_BxTxD.dtype)
        impl = self.call_impl(B)
        if impl == "scan":
            xp = self.cell.project(x_BxTxD)
            unroll = xla.default_unroll() if self.unroll is None else self.unroll
            carry, h_BxTxH = scan_cell(
                self.cell, xp, carry, valid_mask(lengths, T), unroll, recurrent_dropout=self.recurrent_dropout,
                key=None if key is None else jax.random.fold_in(key, 1), variational=variational)
        else:
            carry, h_BxTxH = kernels.run(impl, self.cell, x_BxTxD, valid_mask(lengths, T), lengths, carry,
                                         remat=self.remat)
        if self.reverse:
            h_BxTxH = reverse_valid(h_BxTxH, lengths)
        return (h_BxTxH, carry) if return_carry else h_BxTxH

    def step(self, carry, x_BxD: Array, valid_B: Array | None = None):
        """One step from raw input, for inference: (carry, x [B, D]) -> (h [B, H], new carry).

        The cell's ``project`` then ``step`` (what ``cell(carry, x)`` computes), on plain XLA whatever
        ``impl`` is, with no dropout. Rows where ``valid_B`` (bool [B]) is False keep their carry and
        output zeros, as the sequence call treats steps past a row's length; so from
        ``initial_carry(B)``, step t with ``valid_B = t < lengths`` gives ``layer(x, lengths)[:, t]``.
        A layer with ``reverse=True`` raises ``ConfigError``.
        """
        if self.reverse:
            raise ConfigError(REVERSE_STEP_ERROR)
        B = jax.tree.leaves(carry)[0].shape[0]
        if x_BxD.ndim != 2 or x_BxD.shape != (B, self.in_features):
            raise DataError(f"a step takes one input per row, x [{B}, {self.in_features}]; got shape {tuple(x_BxD.shape)}")
        new, h_BxH = self.cell.step(carry, self.cell.project(x_BxD))
        if valid_B is not None:
            new, h_BxH = freeze_invalid(jnp.asarray(valid_B).astype(bool), new, carry, h_BxH)
        return h_BxH, new


def use_impl(model: nnx.Module, impl: str) -> nnx.Module:
    """Sets the recurrence implementation of every ``LSTM`` layer inside ``model``, in place; returns it.

    For a program that must run where this package's kernels do not exist (``jax.export``, ONNX):
    ``'portable'`` picks, per layer, ``'xla'`` where the cell supports it, else ``'scan'``; both are
    plain XLA, with no native or cuDNN custom call. Any other ``impl`` is checked as ``LSTM`` checks it.
    """
    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, LSTM):
            if impl == "portable":
                layer.impl = "xla" if xla.supports(layer.cell) else "scan"
            else:
                layer.impl = kernels.choose(layer.cell, impl, remat=layer.remat,
                                            recurrent_dropout=layer.recurrent_dropout)
            layer.auto = impl == "auto"
    return model


class Bidirectional(nnx.Module):
    """A forward and a backward layer over the same input; outputs concatenated to [B, T, 2H].

    Build it from two layers, ``Bidirectional(fwd, bwd)``, or from sizes with ``Bidirectional.create``.
    The final carry is ``(forward_carry, backward_carry)``; the backward carry has read the whole
    valid prefix, from its last step back to step 0.
    """

    def __init__(self, forward: LSTM, backward: LSTM):
        if not backward.reverse or forward.reverse:
            raise ConfigError("Bidirectional needs a forward layer and a layer with reverse=True")
        self.forward = forward
        self.backward = backward

    @classmethod
    def create(cls, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **kwargs) -> Bidirectional:
        return cls(
            LSTM(in_features, hidden_size, rngs=rngs, **kwargs),
            LSTM(in_features, hidden_size, reverse=True, rngs=rngs, **kwargs),
        )

    @property
    def out_features(self) -> int:
        return self.forward.out_features + self.backward.out_features

    def initial_carry(self, batch_size: int):
        return (self.forward.initial_carry(batch_size), self.backward.initial_carry(batch_size))

    def final_output(self, carry) -> Array:
        """[B, 2H]: the forward state after the last valid step beside the backward one after step 0."""
        return jnp.concatenate([self.forward.final_output(carry[0]), self.backward.final_output(carry[1])], -1)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, initial_carry=None, return_carry: bool = False,
                 *, key: Array | None = None):
        if self._fusable(key, x_BxTxD.shape[0]):
            h, carry = self._call_fused(x_BxTxD, lengths, initial_carry)
            return (h, carry) if return_carry else h
        cf, cb = (None, None) if initial_carry is None else initial_carry
        kf, kb = (None, None) if key is None else jax.random.split(key)
        hf, cf = self.forward(x_BxTxD, lengths, cf, return_carry=True, key=kf)
        hb, cb = self.backward(x_BxTxD, lengths, cb, return_carry=True, key=kb)
        h = jnp.concatenate([hf, hb], axis=-1)
        return (h, (cf, cb)) if return_carry else h

    def step(self, carry, x_BxD: Array, valid_B: Array | None = None):
        """Always raises ``ConfigError``: the backward direction needs the sequence's end first."""
        raise ConfigError(BIDIRECTIONAL_STEP_ERROR)

    def _fusable(self, key, batch: int = 1) -> bool:
        """Both directions on the XLA path, or both in the native LSTM kernels, with one
        configuration, and no dropout to draw."""
        f, b = self.forward, self.backward
        no_dropout = key is None or (f.input_dropout == 0.0 and b.input_dropout == 0.0)
        if f.remat or b.remat or not no_dropout:
            return False
        fi, bi = f.call_impl(batch), b.call_impl(batch)
        if fi == bi == "native":
            return native.stackable(f.cell, b.cell)
        return fi == bi == "xla" and xla.stackable(f.cell, b.cell)

    def _call_fused(self, x_BxTxD: Array, lengths: Array | None, initial_carry):
        """Both directions at once; the same results as running them apart.

        Native: one kernel call each way runs both directions on the same threads, the backward one
        reading each row's valid prefix in reverse, and writes the outputs side by side, so nothing
        is reversed or concatenated here (``kernels.native.cell_layers``). XLA: one batched scan
        (``kernels.xla.lstm_layers``).
        """
        B, T, _ = x_BxTxD.shape
        cf, cb = (None, None) if initial_carry is None else initial_carry
        carries = [self.forward.initial_carry(B) if cf is None else cf,
                   self.backward.initial_carry(B) if cb is None else cb]
        mask_TxB = None if lengths is None else valid_mask(lengths, T).T
        if self.forward.call_impl(B) == "native":
            (cf, cb), h_TxBx2H = native.cell_layers([self.forward.cell, self.backward.cell],
                                                    jnp.swapaxes(x_BxTxD, 0, 1), carries, mask_TxB, reversed=0b10)
            return jnp.swapaxes(h_TxBx2H, 0, 1), (cf, cb)
        xs = jnp.stack([x_BxTxD, reverse_valid(x_BxTxD, lengths)])
        (cf, cb), h_2xTxBxH = xla.lstm_layers(
            [self.forward.cell, self.backward.cell], jnp.swapaxes(xs, 1, 2), carries, mask_TxB)
        hf = jnp.swapaxes(h_2xTxBxH[0], 0, 1)
        hb = reverse_valid(jnp.swapaxes(h_2xTxBxH[1], 0, 1), lengths)
        return jnp.concatenate([hf, hb], axis=-1), (cf, cb)


class LSTMStack(nnx.Module):
    """Layers on top of each other with dropout between them (not after the last).

    ``hidden_sizes`` gives each layer's width (an int repeats for ``num_layers``). Each layer is an
    ``LSTM`` or, with ``bidirectional``, a ``Bidirectional``. Called like ``LSTM``, plus a dropout
    ``key`` (None means evaluation: no dropout). Carries are a tuple with one entry per layer.
    ``stack.step(carries, x_BxD, valid_B=None)`` runs one step of every layer (see :meth:`step`).
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: int | Sequence[int],
        *,
        num_layers: int | None = None,
        bidirectional: bool = False,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
        **layer_kwargs: Any,
    ):
        if isinstance(hidden_sizes, int):
            hidden_sizes = (hidden_sizes,) * (num_layers or 1)
        elif num_layers is not None and num_layers != len(hidden_sizes):
            raise ConfigError(f"num_layers={num_layers} but {len(hidden_sizes)} hidden sizes were given")
        if not hidden_sizes:
            raise ConfigError("an LSTM stack needs at least one layer")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        layers = []
        d = in_features
        for h in hidden_sizes:
            layer = (
                Bidirectional.create(d, h, rngs=rngs, **layer_kwargs)
                if bidirectional
                else LSTM(d, h, rngs=rngs, **layer_kwargs)
            )
            layers.append(layer)
            d = layer.out_features
        self.layers = nnx.List(layers)
        self.dropout = dropout

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    def initial_carry(self, batch_size: int):
        return tuple(layer.initial_carry(batch_size) for layer in self.layers)

    def final_output(self, carries) -> Array:
        """The top layer's last-valid-step features, read from the stack's final carries."""
        return self.layers[-1].final_output(carries[-1])

    def check_streamable(self) -> None:
        """Raises ``ConfigError`` (one line, saying why) unless every layer can run one step at a time."""
        for layer in self.layers:
            if isinstance(layer, Bidirectional):
                raise ConfigError(BIDIRECTIONAL_STEP_ERROR)
            if layer.reverse:
                raise ConfigError(REVERSE_STEP_ERROR)

    def step(self, carries, x_BxD: Array, valid_B: Array | None = None):
        """One step of every layer, bottom to top, for inference (no dropout):
        (carries, x [B, D]) -> (h [B, H_out], new carries), with ``valid_B`` as in :meth:`LSTM.step`.
        Raises ``ConfigError`` for a bidirectional stack."""
        self.check_streamable()
        h, new = x_BxD, []
        for layer, carry in zip(self.layers, carries, strict=True):
            h, carry = layer.step(carry, h, valid_B)
            new.append(carry)
        return h, tuple(new)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, initial_carry=None,
                 return_carry: bool = False, *, key: Array | None = None):
        """Outputs [B, T, H_out], and ``(outputs, carries)`` with one carry per layer when ``return_carry``."""
        n = len(self.layers)
        inits = (None,) * n if initial_carry is None else tuple(initial_carry)
        keys = [None] * n if key is None else list(jax.random.split(key, n))
        carries = []
        h = x_BxTxD
        for k, layer in enumerate(self.layers):
            between, inside = (None, None) if keys[k] is None else jax.random.split(keys[k])
            if k > 0:
                h = dropout(h, self.dropout, between)
            h, carry = layer(h, lengths, inits[k], return_carry=True, key=inside)
            carries.append(carry)
        return (h, tuple(carries)) if return_carry else h
