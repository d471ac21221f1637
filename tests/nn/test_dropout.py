"""Input and recurrent dropout inside the sequence layer, against a NumPy reference with the same masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from lstm_jax.errors import ConfigError
from lstm_jax.nn.layers import dropout_mask
from lstm_jax.nn.models import Classifier, ModelConfig
from lstm_jax.train.steps import TrainState, train_step
from lstm_jax.train.tasks import BinaryTask

B, T, D, H = 3, 6, 2, 4


def np_lstm(W, U, b, x, h_masks):
    """Standard LSTM, gates (i, f, o, g); ``h_masks[t]`` multiplies the h entering step t's h @ U."""
    sig = lambda v: 1 / (1 + np.exp(-v))
    c = h = np.zeros((x.shape[0], H))
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ W + (h * h_masks[t]) @ U + b
        i, f, o, g = sig(z[:, :H]), sig(z[:, H:2 * H]), sig(z[:, 2 * H:3 * H]), np.tanh(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def weights(layer):
    cell = layer.cell
    return [np.asarray(a, np.float64) for a in (cell.kernel[...], cell.recurrent_kernel[...], cell.bias[...])]


@pytest.fixture
def x():
    return jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D)), jnp.float32)


def test_no_key_means_no_dropout(x):
    layer = lstm_jax.LSTM(D, H, input_dropout=0.5, recurrent_dropout=0.5, rngs=nnx.Rngs(0))
    plain = lstm_jax.LSTM(D, H, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(layer(x), plain(x), atol=1e-6)


@pytest.mark.parametrize("mode", ["variational", "per_step"])
def test_recurrent_masks_match_reference(x, mode):
    rate, key = 0.4, jax.random.key(7)
    layer = lstm_jax.LSTM(D, H, recurrent_dropout=rate, dropout_mode=mode, rngs=nnx.Rngs(1))
    out = layer(x, key=key)
    k_rec = jax.random.fold_in(key, 1)  # the layer's documented split: 0 input, 1 recurrent
    if mode == "variational":
        masks = [np.asarray(dropout_mask(k_rec, (B, H), rate))] * T
    else:
        masks = [np.asarray(dropout_mask(jax.random.fold_in(k_rec, t), (B, H), rate)) for t in range(T)]
    assert any((m == 0).any() for m in masks)  # the draw really drops something
    np.testing.assert_allclose(out, np_lstm(*weights(layer)[:2], weights(layer)[2], np.asarray(x), masks), atol=1e-5)
    if mode == "variational":
        assert all(np.array_equal(m, masks[0]) for m in masks)
    else:
        assert not all(np.array_equal(m, masks[0]) for m in masks)


def test_variational_input_mask_is_shared_over_time(x):
    rate, key = 0.5, jax.random.key(3)
    layer = lstm_jax.LSTM(D, H, input_dropout=rate, rngs=nnx.Rngs(2))
    mask = np.asarray(dropout_mask(jax.random.fold_in(key, 0), (B, 1, D), rate))
    ones = [np.ones((B, H))] * T
    expected = np_lstm(*weights(layer)[:2], weights(layer)[2], np.asarray(x) * mask, ones)
    np.testing.assert_allclose(layer(x, key=key), expected, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
def test_padding_never_changes_valid_outputs_under_dropout(x, cell):
    layer = lstm_jax.LSTM(D, H, cell=cell, input_dropout=0.3, recurrent_dropout=0.3, dropout_mode="per_step",
                          rngs=nnx.Rngs(4))
    lengths = jnp.array([T, 2, 4])
    key = jax.random.key(5)
    a = layer(x, lengths, key=key)
    b = layer(x.at[1, 2:].set(9.0).at[2, 4:].set(-5.0), lengths, key=key)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, layer(x, lengths)), "dropout must change something when a key is given"


def test_recurrent_dropout_takes_the_scan_path():
    assert lstm_jax.LSTM(D, H, recurrent_dropout=0.2, rngs=nnx.Rngs(0)).impl == "scan"
    with pytest.raises(ConfigError):
        lstm_jax.LSTM(D, H, recurrent_dropout=0.2, impl="xla", rngs=nnx.Rngs(0))
    for bad in (dict(recurrent_dropout=1.0), dict(input_dropout=-0.1), dict(dropout_mode="sometimes")):
        with pytest.raises(ConfigError):
            lstm_jax.LSTM(D, H, rngs=nnx.Rngs(0), **bad)
        with pytest.raises(ConfigError):
            ModelConfig(**bad)


def test_classifier_trains_with_every_dropout(x):
    cfg = ModelConfig(hidden_size=(H, H), bidirectional=True, dropout=0.2, input_dropout=0.2, recurrent_dropout=0.2)
    model = Classifier(D, cfg, rngs=nnx.Rngs(0))
    import optax

    state = TrainState.create(model, optax.adam(1e-2))
    batch = {"x": x, "y": jnp.array([0.0, 1.0, 1.0]), "weight": jnp.ones(B)}
    step = jax.jit(lambda s, b, k: train_step(s, b, k, BinaryTask()))
    new, sums = step(state, batch, jax.random.key(0))
    assert bool(sums["finite"])
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params)
    assert all(jax.tree.leaves(changed))
