"""Models: classifiers (any number of classes) and a forecaster on top of an ``LSTMStack``.

A classifier for ``num_classes`` K gives logits [B] (one sigmoid unit) when K == 2 and [B, K]
(softmax) when K > 2; ``make_classifier`` builds the one ``ModelConfig.architecture`` names.

Both take ``x_BxTxD`` and optional ``lengths_B`` and a dropout ``key`` (None at evaluation).
``ModelConfig`` describes the network alone; how it is trained lives in ``TrainConfig``.

Streaming (inference, no dropout): ``state = model.init_state(B)``, then ``y, state = model.step(state,
x_BxD, valid_B=None)`` once per step; ``y`` is what ``model`` gives for the sequence up to that step
(``valid_B = t < lengths`` reproduces ``model(x, lengths)``), for pooling 'last' and 'mean'. The state
is a dict of float arrays: ``{"carries": one carry per layer}``, plus ``"sum"`` [B, H] and ``"count"``
[B] (the running sum and number of the valid outputs) for pooling 'mean'. Bidirectional models and
``LSTMFCN`` read the whole series and raise ``ConfigError``. ``lstm_jax.nn.stream`` jits the step.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax.errors import ConfigError
from lstm_jax.nn.cells import get_activation, get_cell
from lstm_jax.nn.layers import DROPOUT_MODES, LSTMStack, dropout, valid_mask

Array = jax.Array
State = dict[str, Any]  # a streaming model's state: a dict of (tuples of) float arrays, see the module docstring

POOLINGS = ("last", "mean")
# 'lstm': the recurrent stack (bidirectional with ``bidirectional=True``); 'lstm_fcn': LSTM-FCN as
# published (the LSTM reads the dimension-shuffled input); 'lstm_fcn_time': LSTM-FCN whose LSTM runs
# over time; 'fcn': the convolutional branch alone.
ARCHITECTURES = ("lstm", "lstm_fcn", "lstm_fcn_time", "fcn")
CONV_NORMS = ("global", "layer", "group", "instance")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The recurrent network.

    ``hidden_size`` is one width for every layer, or a tuple with one width per layer.
    ``pooling='last'`` reads each row's last valid step (the final carry; for a bidirectional
    layer, the forward state at the end beside the backward state at the start); ``'mean'``
    averages the outputs over the valid steps.
    """

    cell: str = "lstm"
    hidden_size: int | tuple[int, ...] = 50
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers
    input_dropout: float = 0.0  # on each layer's input, inside the layer
    recurrent_dropout: float = 0.0  # on the h that feeds each recurrence
    dropout_mode: str = "variational"  # input/recurrent masks: one per sequence, or "per_step"
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    forget_bias: float = 1.0
    pooling: str = "last"
    unroll: int | None = None  # lax.scan unroll; None: a per-backend default
    # Which classifier ``make_classifier`` builds (see ARCHITECTURES). The fields below are read by
    # 'lstm_fcn', 'lstm_fcn_time' and 'fcn' only; see ``LSTMFCN``.
    architecture: str = "lstm"
    conv_filters: tuple[int, ...] = (128, 256, 128)
    conv_kernels: tuple[int, ...] = (8, 5, 3)
    conv_norm: str = "global"

    def __post_init__(self):
        if isinstance(self.hidden_size, Sequence):
            sizes = tuple(int(h) for h in self.hidden_size)
            if self.num_layers == 1 and len(sizes) > 1:
                object.__setattr__(self, "num_layers", len(sizes))
            elif len(sizes) != self.num_layers:
                raise ConfigError(f"num_layers={self.num_layers} but hidden_size has {len(sizes)} entries")
            object.__setattr__(self, "hidden_size", sizes)
        if self.num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {self.num_layers}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.unroll is not None and self.unroll < 1:
            raise ConfigError(f"unroll must be >= 1, got {self.unroll}")
        for name in ("input_dropout", "recurrent_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.dropout_mode not in DROPOUT_MODES:
            raise ConfigError(f"dropout_mode must be one of {', '.join(DROPOUT_MODES)}, got {self.dropout_mode!r}")
        get_cell(self.cell)
        get_activation(self.activation)
        get_activation(self.recurrent_activation)
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        filters, kernels = tuple(int(f) for f in self.conv_filters), tuple(int(k) for k in self.conv_kernels)
        object.__setattr__(self, "conv_filters", filters)
        object.__setattr__(self, "conv_kernels", kernels)
        if not filters or len(filters) != len(kernels) or min(filters + kernels) < 1:
            raise ConfigError(f"conv_filters and conv_kernels need one positive entry per convolution each, "
                              f"got {filters} and {kernels}")
        if self.conv_norm not in CONV_NORMS:
            raise ConfigError(f"conv_norm must be one of {', '.join(CONV_NORMS)}, got {self.conv_norm!r}")

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        if isinstance(self.hidden_size, tuple):
            return self.hidden_size
        return (self.hidden_size,) * self.num_layers

    def stack(self, in_features: int, rngs: nnx.Rngs) -> LSTMStack:
        return LSTMStack(
            in_features,
            self.hidden_sizes,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            cell=self.cell,
            unroll=self.unroll,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
            dropout_mode=self.dropout_mode,
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            forget_bias=self.forget_bias,
            rngs=rngs,
        )


def pool(stack: LSTMStack, h_BxTxH: Array, carries, lengths_B: Array | None, pooling: str) -> Array:
    """[B, T, H] outputs -> [B, H] features, honouring the valid lengths."""
    if pooling == "last":
        return stack.final_output(carries)
    if lengths_B is None:
        return h_BxTxH.mean(axis=1)
    # Outputs past a row's length are already zero, so the sum only needs the right divisor.
    return h_BxTxH.sum(axis=1) / jnp.maximum(jnp.asarray(lengths_B), 1)[:, None].astype(h_BxTxH.dtype)


class _Head(nnx.Module):
    def __init__(self, in_features: int, out_features: int, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = config.stack(in_features, rngs)
        self.head = nnx.Linear(self.encoder.out_features, out_features, rngs=rngs)

    def features(self, x_BxTxD: Array, lengths: Array | None = None, *, key: Array | None = None) -> Array:
        h, carries = self.encoder(x_BxTxD, lengths, return_carry=True, key=key)
        return pool(self.encoder, h, carries, lengths, self.config.pooling)

    def readout(self, features_BxH: Array) -> Array:
        """Pooled features [B, H] -> the model's output."""
        return self.head(features_BxH)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, *, key: Array | None = None) -> Array:
        return self.readout(self.features(x_BxTxD, lengths, key=key))

    def init_state(self, batch_size: int) -> State:
        """The streaming state before the first step (zeros); raises ``ConfigError`` for a
        bidirectional model."""
        self.encoder.check_streamable()
        carries = self.encoder.initial_carry(batch_size)
        state = {"carries": carries}
        if self.config.pooling == "mean":
            dtype = jax.tree.leaves(carries)[0].dtype
            state["sum"] = jnp.zeros((batch_size, self.encoder.out_features), dtype)
            state["count"] = jnp.zeros((batch_size,), dtype)
        return state

    def step(self, state: State, x_BxD: Array, valid_B: Array | None = None) -> tuple[Array, State]:
        """One step of input x [B, D] -> (output as if each row's sequence ended here, new state).

        Rows where ``valid_B`` (bool [B]) is False are padding: their state stays and their output is
        that of their last valid step, as ``model(x, lengths)`` reads it. No dropout (inference).
        """
        h_BxH, carries = self.encoder.step(state["carries"], x_BxD, valid_B)
        new = {"carries": carries}
        if self.config.pooling == "last":
            features = self.encoder.final_output(carries)
        else:  # h is zero at invalid rows, so only the count needs the mask (as in ``pool``)
            valid = 1.0 if valid_B is None else jnp.asarray(valid_B).astype(h_BxH.dtype)
            new["sum"] = state["sum"] + h_BxH
            new["count"] = state["count"] + valid
            features = new["sum"] / jnp.maximum(new["count"], 1.0)[:, None]
        return self.readout(features), new


def head_width(num_classes: int) -> int:
    """One sigmoid unit for two classes, one logit per class for more."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs num_classes >= 2, got {num_classes}")
    return 1 if num_classes == 2 else num_classes


class Classifier(_Head):
    """``model(x_BxTxD, lengths=None, *, key=None)`` -> logits [B] (``num_classes`` 2: one sigmoid
    unit) or [B, K] (``num_classes`` K > 2). One step at a time: ``init_state(B)`` and
    ``step(state, x_BxD, valid_B=None) -> (logits, state)``."""

    def __init__(self, in_features: int, config: ModelConfig, *, num_classes: int = 2, rngs: nnx.Rngs):
        self.num_classes = num_classes
        super().__init__(in_features, head_width(num_classes), config, rngs=rngs)

    def readout(self, features_BxH: Array) -> Array:
        logits = self.head(features_BxH)
        return logits[:, 0] if self.num_classes == 2 else logits


class Forecaster(_Head):
    """Window -> next ``horizon`` values: ``model(x_BxTxD, lengths=None, *, key=None)`` -> [B, horizon].
    One step at a time: ``init_state(B)`` and ``step(state, x_BxD, valid_B=None) -> ([B, horizon], state)``."""

    def __init__(self, in_features: int, config: ModelConfig, *, horizon: int = 1, rngs: nnx.Rngs):
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        super().__init__(in_features, horizon, config, rngs=rngs)


# -- LSTM-FCN -------------------------------------------------------------------------------------

class MaskedNorm(nnx.Module):
    """Stateless normalisation of conv features [B, T, C], then a per-channel scale and bias.

    ``'global'``: each row over all its valid steps and channels (GroupNorm with one group).
    ``'layer'``: over the C channels of each step. ``'group'``: 8 (or fewer) groups of channels, each
    over the valid steps. ``'instance'``: each channel over the valid steps. Statistics never read a
    step past a row's length. Used instead of BatchNorm, whose running statistics are state that the
    training loop (which carries ``nnx.Param`` only) would never update. On small UCR sets 'global'
    did best (it keeps how the amplitude varies along the series, which per-step 'layer' removes right
    after the first convolution); see benchmarks/ucr_results.md.
    """

    def __init__(self, channels: int, kind: str = "layer", *, eps: float = 1e-5, rngs: nnx.Rngs):
        self.kind, self.eps = kind, eps
        self.groups = {"layer": 1, "global": 1, "instance": channels,
                       "group": next(g for g in (8, 4, 2, 1) if channels % g == 0)}[kind]
        self.scale = nnx.Param(jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))

    def __call__(self, h_BxTxC: Array, mask_BxT: Array | None) -> Array:
        B, T, C = h_BxTxC.shape
        if self.kind == "layer":
            mean = h_BxTxC.mean(-1, keepdims=True)
            var = jnp.square(h_BxTxC - mean).mean(-1, keepdims=True)
            z = (h_BxTxC - mean) * jax.lax.rsqrt(var + self.eps)
        else:
            G = self.groups
            h = h_BxTxC.reshape(B, T, G, C // G)
            m = jnp.ones((B, T), h.dtype) if mask_BxT is None else mask_BxT.astype(h.dtype)
            m = m[:, :, None, None]
            n = jnp.maximum(m.sum(1, keepdims=True), 1.0) * (C // G)
            mean = (h * m).sum((1, 3), keepdims=True) / n
            var = (jnp.square(h - mean) * m).sum((1, 3), keepdims=True) / n
            z = ((h - mean) * jax.lax.rsqrt(var + self.eps)).reshape(B, T, C)
        return z * self.scale[...] + self.bias[...]


LSTM_FCN_STEP_ERROR = ("LSTM-FCN ('lstm_fcn', 'lstm_fcn_time', 'fcn') cannot stream: its convolutions ('SAME' "
                       "padding) and normalisation read the whole series; use architecture='lstm' to run step by step")


class LSTMFCN(nnx.Module):
    """LSTM-FCN (Karim et al. 2017): ``model(x_BxTxD, lengths=None, *, key=None)`` -> logits [B] for
    ``num_classes`` 2 (one sigmoid unit), [B, K] for K > 2.

    Two branches read the same input, their features are concatenated, and one Dense gives the logits:

    * LSTM branch, by ``config.architecture``:

      - ``'lstm_fcn'`` (as published): over the *dimension-shuffled* input: the D channels are the
        steps and the T time points are the features of each step (so a univariate series is one step
        of T features: no recurrence happens). It is ``config.stack(T)`` and its last output.
      - ``'lstm_fcn_time'``: over time, ``config.stack(D)`` on [B, T, D] with ``lengths``, pooled by
        ``config.pooling`` (the last valid step, or the mean over the valid steps).
      - ``'fcn'``: no LSTM branch (FCN alone, Wang et al. 2017).

      Then dropout ``config.dropout`` (the paper uses 0.8).
    * FCN branch: ``Conv1D(f, k) -> norm -> ReLU`` for each (f, k) of ``conv_filters`` /
      ``conv_kernels`` (the paper's 128-8, 256-5, 128-3), then global average pooling over time.

    Deviation from the paper: the paper's BatchNorm is replaced by ``MaskedNorm`` (``config.conv_norm``),
    which needs no running statistics. With ``lengths``, steps past a row's length are zeroed before each
    convolution and left out of the normalisation and the pooling, so padding never changes a logit.
    With the dimension shuffle the network is built for one series length ``length`` (the LSTM
    branch's input width); shorter series are zero-padded to it by the caller and passed with
    ``lengths``. The other two read any length. It cannot stream: ``init_state`` and ``step`` raise
    ``ConfigError`` (the convolutions and the normalisation read the whole series).
    """

    def __init__(self, in_features: int, length: int | None, config: ModelConfig, *, num_classes: int = 2,
                 rngs: nnx.Rngs):
        self.shuffle = config.architecture == "lstm_fcn"
        if self.shuffle and (length is None or length < 1):
            raise ConfigError(f"LSTM-FCN needs the series length (>= 1), got {length}")
        self.config, self.length, self.num_classes = config, length, num_classes
        width = head_width(num_classes)
        if config.architecture == "fcn":
            self.encoder = None
        else:  # built first, so that the binary 'lstm_fcn' draws its parameters as it always has
            self.encoder = config.stack(length if self.shuffle else in_features, rngs)
        convs, norms = [], []
        c = in_features
        for f, k in zip(config.conv_filters, config.conv_kernels):
            convs.append(nnx.Conv(c, f, kernel_size=(k,), padding="SAME", rngs=rngs))
            norms.append(MaskedNorm(f, config.conv_norm, rngs=rngs))
            c = f
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        lstm_width = 0 if self.encoder is None else self.encoder.out_features
        self.head = nnx.Linear(lstm_width + c, width, rngs=rngs)

    def init_state(self, batch_size: int) -> State:
        """Always raises ``ConfigError``: LSTM-FCN cannot run one step at a time."""
        raise ConfigError(LSTM_FCN_STEP_ERROR)

    def step(self, state: State, x_BxD: Array, valid_B: Array | None = None) -> tuple[Array, State]:
        """Always raises ``ConfigError``: LSTM-FCN cannot run one step at a time."""
        raise ConfigError(LSTM_FCN_STEP_ERROR)

    def lstm_features(self, x_BxTxD: Array, lengths: Array | None, key: Array | None) -> Array | None:
        """The LSTM branch's [B, H] features (before dropout); None for FCN alone."""
        if self.encoder is None:
            return None
        if self.shuffle:  # [B, D, T]: D steps of T features; every step is valid.
            _, carries = self.encoder(jnp.swapaxes(x_BxTxD, 1, 2), None, return_carry=True, key=key)
            return self.encoder.final_output(carries)
        h, carries = self.encoder(x_BxTxD, lengths, return_carry=True, key=key)
        return pool(self.encoder, h, carries, lengths, self.config.pooling)

    def __call__(self, x_BxTxD: Array, lengths: Array | None = None, *, key: Array | None = None) -> Array:
        B, T, D = x_BxTxD.shape
        if self.shuffle and T != self.length:
            raise ConfigError(f"this LSTM-FCN was built for series of length {self.length}, got {T}; "
                              f"zero-pad shorter series and pass lengths")
        mask_BxT = valid_mask(lengths, T)
        keep = (lambda h: h) if mask_BxT is None else (lambda h: jnp.where(mask_BxT[:, :, None], h, 0.0))
        x_BxTxD = keep(x_BxTxD)
        k_stack, k_out = (None, None) if key is None else tuple(jax.random.split(key))
        f_lstm = self.lstm_features(x_BxTxD, lengths, k_stack)
        h = x_BxTxD
        for conv, norm in zip(self.convs, self.norms):
            # Zeroing past the length makes 'SAME' padding at the end of a short row read zeros too.
            h = keep(jax.nn.relu(norm(conv(h), mask_BxT)))
        if lengths is None:
            f_conv = h.mean(axis=1)
        else:
            f_conv = h.sum(axis=1) / jnp.maximum(jnp.asarray(lengths), 1)[:, None].astype(h.dtype)
        features = f_conv if f_lstm is None else jnp.concatenate(
            [dropout(f_lstm, self.config.dropout, k_out), f_conv], axis=-1)
        logits = self.head(features)
        return logits[:, 0] if self.num_classes == 2 else logits


def make_classifier(in_features: int, config: ModelConfig, rngs: nnx.Rngs, *, length: int | None = None,
                    num_classes: int = 2) -> nnx.Module:
    """The classifier ``config.architecture`` names for ``num_classes`` classes: logits [B] for 2 (one
    sigmoid unit), [B, K] for more. 'lstm_fcn' (dimension shuffle) needs the series ``length``."""
    head_width(num_classes)
    if config.architecture == "lstm_fcn" and length is None:
        raise ConfigError("architecture='lstm_fcn' needs the series length (make_classifier(..., length=T))")
    if config.architecture in ("lstm_fcn", "lstm_fcn_time", "fcn"):
        return LSTMFCN(in_features, length, config, num_classes=num_classes, rngs=rngs)
    return Classifier(in_features, config, num_classes=num_classes, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a run's network: its kind, ``ModelConfig`` and constructor arguments."""

    kind: str  # 'classifier' | 'forecaster'
    config: ModelConfig
    in_features: int
    num_classes: int = 2  # classifier
    length: int | None = None  # classifier: the series length it was built for ('lstm_fcn' needs it)
    horizon: int = 1  # forecaster: outputs per call

    def build(self, seed: int = 0) -> nnx.Module:
        """The network with freshly drawn weights (``load_run`` then puts the run's in)."""
        rngs = nnx.Rngs(seed)
        if self.kind == "classifier":
            return make_classifier(self.in_features, self.config, rngs, length=self.length,
                                   num_classes=self.num_classes)
        if self.kind == "forecaster":
            return Forecaster(self.in_features, self.config, horizon=self.horizon, rngs=rngs)
        raise ConfigError(f"unknown model kind {self.kind!r}; one of classifier, forecaster")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists; ``from_json`` reads them back)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**{**d, "config": ModelConfig(**d["config"])})
