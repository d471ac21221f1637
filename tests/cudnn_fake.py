"""Puts jax's pure reference of the cuDNN LSTM (``jax.experimental.rnn.lstm_ref``) in place of the
cuDNN call, so that the whole cuDNN code path of lstm_jax runs on a CPU. Shared by the tests."""

from __future__ import annotations

import jax.numpy as jnp

CALLS: list[dict] = []


def reference_lstm(x, h0, c0, weights, seq_lengths, *, input_size, hidden_size, num_layers, dropout, bidirectional,
                   precision=None):
    """``jax.experimental.rnn.lstm``'s signature over ``lstm_ref``; records what it was given."""
    from jax.experimental import rnn

    CALLS.append({"x": x.dtype, "h0": h0.dtype, "c0": c0.dtype, "lengths": seq_lengths.dtype,
                  "precision": precision, "batch": x.shape[0]})
    # What the real call would refuse (it reads the precision before reaching cuDNN).
    rnn._lstm_cudnn_allow_tf32(precision)
    assert h0.dtype == c0.dtype == x.dtype == jnp.float32 and seq_lengths.dtype == jnp.int32
    # cuDNN wants every length in [1, T]; the reference would silently read out of range.
    ok = jnp.all((seq_lengths >= 1) & (seq_lengths <= x.shape[1]))
    seq_lengths = jnp.where(ok, seq_lengths, -(10**6))  # an out-of-range length poisons the result
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    y, h, c = rnn.lstm_ref(x, h0, c0, *unpacked, jnp.maximum(seq_lengths, 1), input_size, hidden_size, num_layers,
                           dropout, bidirectional)
    nan = jnp.where(ok, 0.0, jnp.nan)
    return y + nan, h + nan, c + nan


def install(monkeypatch_setattr) -> None:
    """``monkeypatch_setattr(obj, name, value)``: pytest's ``monkeypatch.setattr`` or a plain setattr."""
    from jax.experimental import rnn

    from lstm_jax.kernels import cudnn

    monkeypatch_setattr(rnn, "lstm", reference_lstm)
    monkeypatch_setattr(cudnn, "available", lambda: True)
