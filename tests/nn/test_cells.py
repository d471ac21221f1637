"""LSTMCell against an independent NumPy LSTM: forward values, BPTT gradients, registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstm_jax.errors import ConfigError
from lstm_jax.nn import cells
from lstm_jax.nn.cells import LSTMCell, get_cell, register
from lstm_jax.nn.layers import LSTM

B, T, D, H = 2, 6, 3, 4


@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 2.5])
def test_bias_init_puts_forget_bias_in_the_f_block_only(forget_bias):
    cell = LSTMCell(D, H, forget_bias=forget_bias, rngs=nnx.Rngs(0))
    expected_G_H = np.zeros(4 * H, np.float32)
    expected_G_H[H : 2 * H] = forget_bias  # blocks are (i, f, o, g): f is the second
    np.testing.assert_array_equal(np.asarray(cell.bias[...]), expected_G_H)
    assert cell.gates == ("i", "f", "o", "g")
    assert cell.kernel[...].shape == (D, 4 * H)
    assert cell.recurrent_kernel[...].shape == (H, 4 * H)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("random_bias", [False, True])
def test_forward_matches_numpy_reference(np_reference, activation, random_bias):
    np_lstm, cell_weights = np_reference
    rng = np.random.default_rng(1)
    cell = LSTMCell(D, H, activation=activation, forget_bias=1.5, rngs=nnx.Rngs(2))
    if random_bias:
        # The init bias is zero outside the f block; a random one makes every gate's bias observable.
        cell.bias[...] = jnp.asarray(rng.normal(0, 0.5, 4 * H), jnp.float32)
    x_BxTxD = rng.normal(size=(B, T, D)).astype(np.float32)
    c0_BxH = rng.normal(0, 0.5, (B, H)).astype(np.float32)
    h0_BxH = rng.normal(0, 0.5, (B, H)).astype(np.float32)

    W, U, b = cell_weights(cell)
    ref_h_BxTxH, (ref_c, ref_h) = np_lstm(x_BxTxD.astype(np.float64), W, U, b, activation, c0_BxH, h0_BxH)

    # Step by step from raw inputs (__call__) ...
    carry = (jnp.asarray(c0_BxH), jnp.asarray(h0_BxH))
    hs = []
    for t in range(T):
        carry, h_BxH = cell(carry, jnp.asarray(x_BxTxD[:, t]))
        hs.append(h_BxH)
    np.testing.assert_allclose(np.stack(hs, 1), ref_h_BxTxH, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(carry[0], ref_c, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(carry[1], ref_h, rtol=2e-5, atol=2e-5)

    # ... and through the project/step split the sequence layer uses.
    xp_BxTxG = cell.project(jnp.asarray(x_BxTxD))
    carry = (jnp.asarray(c0_BxH), jnp.asarray(h0_BxH))
    for t in range(T):
        carry, h_BxH = cell.step(carry, xp_BxTxG[:, t])
        np.testing.assert_allclose(h_BxH, ref_h_BxTxH[:, t], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(carry[0], ref_c, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bptt_gradients_match_finite_differences_float64(np_reference, activation):
    """jax.grad through the scanned layer vs central differences of the NumPy reference, in float64."""
    np_lstm, cell_weights = np_reference
    Bg, Tg = 2, 5
    rng = np.random.default_rng(3)
    x_BxTxD = rng.normal(size=(Bg, Tg, D))
    c0_BxH = rng.normal(0, 0.5, (Bg, H))
    h0_BxH = rng.normal(0, 0.5, (Bg, H))
    bias_G_H = rng.normal(0, 0.5, 4 * H)
    # Fixed random loss weights make every output and the final cell state matter to the gradient.
    w_BxTxH = rng.normal(size=(Bg, Tg, H))
    v_BxH = rng.normal(size=(Bg, H))

    def ref_loss(W, U, b, x, c0, h0):
        h_BxTxH, (c_T, _) = np_lstm(x, W, U, b, activation, c0, h0)
        return float(np.sum(w_BxTxH * h_BxTxH) + np.sum(v_BxH * c_T))

    with jax.enable_x64(True):
        layer = LSTM(D, H, activation=activation, param_dtype=jnp.float64, rngs=nnx.Rngs(4))
        layer.cell.bias[...] = jnp.asarray(bias_G_H)
        W, U, b = cell_weights(layer.cell)
        graphdef, params = nnx.split(layer)

        def loss(params, x, c0, h0):
            model = nnx.merge(graphdef, params)
            h_BxTxH, (c_T, _) = model(x, initial_carry=(c0, h0), return_carry=True)
            return jnp.sum(w_BxTxH * h_BxTxH) + jnp.sum(v_BxH * c_T)

        args = (params, jnp.asarray(x_BxTxD), jnp.asarray(c0_BxH), jnp.asarray(h0_BxH))
        value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(*args)
        g_params, g_x, g_c0, g_h0 = grads
        g = nnx.to_pure_dict(g_params)["cell"]
        jax_grads = [np.asarray(a) for a in (g["kernel"], g["recurrent_kernel"], g["bias"], g_x, g_c0, g_h0)]
        assert all(a.dtype == np.float64 for a in jax_grads)

    inputs = [W, U, b, x_BxTxD, c0_BxH, h0_BxH]
    np.testing.assert_allclose(float(value), ref_loss(*inputs), rtol=1e-12, atol=1e-12)
    eps = 1e-6
    for k, (arr, jg) in enumerate(zip(inputs, jax_grads)):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus = [a.copy() for a in inputs]
            minus = [a.copy() for a in inputs]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            fd[idx] = (ref_loss(*plus) - ref_loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(jg, fd, rtol=1e-6, atol=1e-7, err_msg=f"gradient of input {k}")


def test_get_cell_resolves_names_and_classes():
    assert get_cell("lstm") is LSTMCell
    assert get_cell(LSTMCell) is LSTMCell
    assert cells.CELLS["lstm"] is LSTMCell
    assert LSTMCell.name == "lstm"


@pytest.mark.parametrize("bad", ["no_such_cell", "", 123, ["lstm"]])
def test_get_cell_unknown_raises_config_error(bad):
    with pytest.raises(ConfigError, match="unknown cell"):
        get_cell(bad)
    with pytest.raises(ConfigError):
        LSTM(D, H, cell=bad, rngs=nnx.Rngs(0))


def test_register_new_cell_and_refuse_name_clash():
    name = "test_cells_plain_subclass"
    assert name not in cells.CELLS
    try:

        @register(name)
        class Plain(LSTMCell):
            pass

        assert get_cell(name) is Plain
        assert Plain.name == name
        layer = LSTM(D, H, cell=name, rngs=nnx.Rngs(0))
        assert type(layer.cell) is Plain
        # Registering the same class again under its own name is harmless.
        assert register(name)(Plain) is Plain

        class Other(LSTMCell):
            pass

        with pytest.raises(ConfigError, match="already registered"):
            register("lstm")(Other)
        with pytest.raises(ConfigError, match="already registered"):
            register(name)(Other)
        assert cells.CELLS["lstm"] is LSTMCell
        assert cells.CELLS[name] is Plain
    finally:
        cells.CELLS.pop(name, None)


def test_bad_cell_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="unknown activation"):
        LSTMCell(D, H, activation="no_such_activation", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="unknown activation"):
        LSTMCell(D, H, recurrent_activation="no_such_activation", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        LSTMCell(D, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        LSTMCell(0, H, rngs=nnx.Rngs(0))


def test_carry_follows_parameter_dtype():
    """f64 parameters keep an f64 state; bf16 parameters keep an f32 state (never narrower)."""
    import lstm_jax

    with jax.enable_x64(True):
        layer = lstm_jax.LSTM(3, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        h, (c, h_last) = layer(jnp.ones((2, 5, 3), jnp.float64), return_carry=True)
        assert h.dtype == c.dtype == jnp.float64
    for name in sorted(lstm_jax.CELLS):
        cell = lstm_jax.CELLS[name](3, 4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        assert all(a.dtype == jnp.float32 for a in cell.initial_carry(2)), name
