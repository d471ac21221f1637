"""Every registered cell against a NumPy reference of its own equations, forward and backward,
through the public layers, and trained through the public API; plus a user-defined cell.

The references below are written from the equations in each class docstring (and the papers),
not from the JAX code: they only share the documented weight layout (gate blocks in ``gates`` order).
"""

import functools
import inspect
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lstm_jax
from lstm_jax.nn.cells import CELLS
from lstm_jax.nn.models import Classifier, ModelConfig
from lstm_jax.train.steps import TrainState, train_step
from lstm_jax.train.tasks import BinaryTask

NAMES = ("lstm", "np", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "fgr", "layernorm", "gru")
B, T, D, H = 2, 4, 3, 4


# -- NumPy references ---------------------------------------------------------------------------------

def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def blocks(z, names):
    """Splits [B, G*H] pre-activations into named [B, H] blocks."""
    return dict(zip(names, np.split(z, len(names), axis=-1)))


def ref_lstm(P, x):
    W, U, b = P["kernel"], P["recurrent_kernel"], P.get("bias", 0.0)
    c = h = np.zeros((x.shape[0], U.shape[0]))
    out = []
    for t in range(x.shape[1]):
        z = blocks(x[:, t] @ W + h @ U + b, "ifog")
        i, f, o, g = sigmoid(z["i"]), sigmoid(z["f"]), sigmoid(z["o"]), np.tanh(z["g"])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


# Greff et al. 2017: which gate blocks each variant keeps.
GREFF_GATES = {"peephole": "ifog", "nig": "fog", "nfg": "iog", "nog": "ifg", "niaf": "ifog",
               "noaf": "ifog", "cifg": "iog", "fgr": "ifog"}


def ref_greff(P, x, variant):
    W, U, b = P["kernel"], P["recurrent_kernel"], P.get("bias", 0.0)
    names = GREFF_GATES[variant]
    Bn, Hn = x.shape[0], U.shape[0]
    c = h = np.zeros((Bn, Hn))
    prev_gates = np.zeros((Bn, 3 * Hn))  # fgr only: [i f o] of the previous step
    out = []
    for t in range(x.shape[1]):
        z = blocks(x[:, t] @ W + h @ U + b, names)
        if variant == "fgr":
            r = blocks(prev_gates @ P["gate_recurrent_kernel"], "ifo")
            z = {k: v + r.get(k, 0.0) for k, v in z.items()}
        i = sigmoid(z["i"] + P["p_i"] * c) if "i" in names else 1.0
        if variant == "cifg":
            f = 1.0 - i
        else:
            f = sigmoid(z["f"] + P["p_f"] * c) if "f" in names else 1.0
        g = z["g"] if variant == "niaf" else np.tanh(z["g"])
        c = f * c + i * g
        o = sigmoid(z["o"] + P["p_o"] * c) if "o" in names else 1.0
        h = o * (c if variant == "noaf" else np.tanh(c))
        prev_gates = np.concatenate([i, f, o], -1) if variant == "fgr" else prev_gates
        out.append(h)
    return np.stack(out, 1)


def layer_norm(v, gain, shift=0.0, eps=1e-5):
    mu = v.mean(-1, keepdims=True)
    var = ((v - mu) ** 2).mean(-1, keepdims=True)
    return gain * (v - mu) / np.sqrt(var + eps) + shift


def ref_layernorm(P, x):
    W, U, b = P["kernel"], P["recurrent_kernel"], P.get("bias", 0.0)
    Hn = U.shape[0]

    def ln_blocks(v, gain):  # LN of each [H] gate block on its own
        return np.concatenate([layer_norm(v[:, k * Hn:(k + 1) * Hn], gain[k * Hn:(k + 1) * Hn]) for k in range(4)], -1)

    c = h = np.zeros((x.shape[0], Hn))
    out = []
    for t in range(x.shape[1]):
        z = blocks(ln_blocks(x[:, t] @ W, P["gain_x"]) + ln_blocks(h @ U, P["gain_h"]) + b, "ifog")
        i, f, o, g = sigmoid(z["i"]), sigmoid(z["f"]), sigmoid(z["o"]), np.tanh(z["g"])
        c = f * c + i * g
        h = o * np.tanh(layer_norm(c, P["gain_c"], P["shift_c"]))
        out.append(h)
    return np.stack(out, 1)


def ref_gru(P, x):
    W, U = P["kernel"], P["recurrent_kernel"]
    b, b_hn = P.get("bias", 0.0), P.get("recurrent_bias", 0.0)
    h = np.zeros((x.shape[0], U.shape[0]))
    out = []
    for t in range(x.shape[1]):
        xw, hu = blocks(x[:, t] @ W + b, "rzn"), blocks(h @ U, "rzn")
        r = sigmoid(xw["r"] + hu["r"])
        z = sigmoid(xw["z"] + hu["z"])
        n = np.tanh(xw["n"] + r * (hu["n"] + b_hn))
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, 1)


def reference(name, P, x):
    if name in ("lstm", "np"):  # Greff's NP (no peepholes) is the standard LSTM
        return ref_lstm(P, x)
    if name == "layernorm":
        return ref_layernorm(P, x)
    if name == "gru":
        return ref_gru(P, x)
    return ref_greff(P, x, name)


# -- helpers ------------------------------------------------------------------------------------------

def randomize(module, seed, scale=0.5):
    """Every Param to N(0, scale²): peepholes, gains and the FGR kernel start at 0 or 1 otherwise."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(state))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [scale * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
    nnx.replace_by_pure_dict(state, jax.tree.unflatten(treedef, new))
    nnx.update(module, state)


def cell_params(layer):
    return {k: np.array(v, np.float64) for k, v in nnx.to_pure_dict(nnx.state(layer.cell, nnx.Param)).items()}


def num_params(module):
    return sum(v.size for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


# -- tests --------------------------------------------------------------------------------------------

def test_all_cells_registered():
    assert set(NAMES) <= set(CELLS) and len(NAMES) == 12


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_numpy(name, use_bias):
    layer = lstm_jax.LSTM(D, H, cell=name, use_bias=use_bias, rngs=nnx.Rngs(0))
    randomize(layer, 1)
    x = np.random.default_rng(2).normal(size=(B, T, D)).astype(np.float32)
    np.testing.assert_allclose(layer(jnp.asarray(x)), reference(name, cell_params(layer), x), atol=2e-5)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(name):
    """Float64 JAX gradients against central differences of the NumPy reference."""
    with jax.enable_x64(True):
        layer = lstm_jax.LSTM(D, H, cell=name, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        randomize(layer, 3)
        rng = np.random.default_rng(4)
        x = rng.normal(size=(B, T, D))
        w_out = rng.normal(size=(B, T, H))  # a loss that weighs every output differently
        graphdef, params = nnx.split(layer, nnx.Param)
        params = nnx.to_pure_dict(params)

        def loss(p, x):
            layer = nnx.merge(graphdef, p)
            carry = layer.cell.initial_carry(B, jnp.float64)  # the default carry is float32
            return jnp.sum(layer(x, initial_carry=carry) * w_out)

        g_params, g_x = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x))

    P = cell_params(layer)

    def numeric(f, arr, eps=1e-6):
        grad = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = f()
            arr[idx] = old - eps
            down = f()
            arr[idx] = old
            grad[idx] = (up - down) / (2 * eps)
        return grad

    ref_loss = lambda: np.sum(reference(name, P, x) * w_out)  # noqa: E731
    for k, arr in P.items():
        np.testing.assert_allclose(g_params["cell"][k], numeric(ref_loss, arr), atol=1e-7, rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(g_x, numeric(ref_loss, x), atol=1e-7, rtol=1e-6, err_msg="x")


def param_formula(name, D, H, bias=True):
    """Parameter count of one cell, as tabled in docs/cells.md."""
    b = int(bias)
    G = {"lstm": 4, "np": 4, "peephole": 4, "niaf": 4, "noaf": 4, "fgr": 4, "layernorm": 4, "gru": 3}.get(name, 3)
    n = G * H * (D + H) + b * G * H
    peepholes = {"lstm": 0, "np": 0, "layernorm": 0, "gru": 0, "peephole": 3, "niaf": 3, "noaf": 3, "fgr": 3}.get(name, 2)
    n += peepholes * H
    n += {"fgr": 9 * H * H, "layernorm": 2 * 4 * H + 2 * H, "gru": b * H}.get(name, 0)
    return n


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts(name, use_bias):
    cell = CELLS[name](5, 7, use_bias=use_bias, rngs=nnx.Rngs(0))
    assert num_params(cell) == param_formula(name, 5, 7, use_bias)


@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_valid_outputs(name):
    """LSTMStack of Bidirectional layers inside the Classifier, with lengths: whatever the padding
    holds, valid outputs and logits equal those of the batch cut to the short row's length."""
    cfg = ModelConfig(cell=name, hidden_size=(4, 3), bidirectional=True)
    model = Classifier(D, cfg, rngs=nnx.Rngs(0))
    randomize(model, 5, scale=0.3)
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(x, lengths):
        model = nnx.merge(graphdef, state)
        return model.encoder(x, lengths), model(x, lengths)

    x = np.random.default_rng(6).normal(size=(2, 5, D)).astype(np.float32)
    lengths = jnp.array([5, 2])
    h9, logits9 = run(jnp.asarray(x).at[1, 2:].set(9.0), lengths)
    h3, logits3 = run(jnp.asarray(x).at[1, 2:].set(-3.0), lengths)
    np.testing.assert_array_equal(h9, h3)
    np.testing.assert_array_equal(logits9, logits3)
    np.testing.assert_array_equal(h9[1, 2:], 0.0)
    h_cut, logits_cut = run(jnp.asarray(x[:, :2]), jnp.array([2, 2]))
    np.testing.assert_allclose(h9[1, :2], h_cut[1], atol=1e-5)
    np.testing.assert_allclose(logits9[1], logits_cut[1], atol=1e-5)


def make_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, D)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray((x[:, :, 0].sum(1) > 0).astype(np.float32)),
            "lengths": jnp.asarray(rng.integers(2, 7, size=n)), "weight": jnp.ones(n, jnp.float32)}


def train_a_few_steps(cell, steps=3):
    model = Classifier(D, ModelConfig(cell=cell, hidden_size=6, dropout=0.0), rngs=nnx.Rngs(0))
    state = TrainState.create(model, optax.adam(1e-2))
    step = jax.jit(functools.partial(train_step, task=BinaryTask))
    batch, key = make_batch(), jax.random.key(0)
    losses = []
    new = state
    for _ in range(steps):
        new, sums = step(new, batch, key)
        assert bool(sums["finite"])
        losses.append(float(sums["loss"] / sums["count"]))
    return state, new, losses


def assert_trained(state, new, losses):
    assert all(np.isfinite(losses))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params)
    assert all(jax.tree.leaves(changed)), changed
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_trains(name):
    assert_trained(*train_a_few_steps(name))


# -- a cell from outside the package: the example of docs/cells.md ------------------------------------

def define_janet():
    # --- docs/cells.md example begins ---
    from lstm_jax import LSTMCell, register

    @register("janet")
    class JANETCell(LSTMCell):
        """JANET (van der Westhuizen & Lasenby 2018): an LSTM with only a forget gate.

            f = σ(z_f),  g = tanh(z_g),  c' = f ⊙ c + (1 − f) ⊙ g,  h' = c'
        """

        gates = ("f", "g")

        def update(self, carry, z):
            c, _ = carry
            f = self.recurrent_activation(z[..., self.gate_slice("f")])
            g = self.activation(z[..., self.gate_slice("g")])
            c = f * c + (1.0 - f) * g
            return c, c
    # --- docs/cells.md example ends ---
    return JANETCell


@pytest.fixture
def janet():
    cls = define_janet()
    try:
        yield cls
    finally:
        CELLS.pop("janet", None)  # keep the registry as the package defines it for other tests


def ref_janet(P, x):
    W, U, b = P["kernel"], P["recurrent_kernel"], P["bias"]
    c = np.zeros((x.shape[0], U.shape[0]))
    out = []
    for t in range(x.shape[1]):
        z = blocks(x[:, t] @ W + c @ U + b, "fg")
        f = sigmoid(z["f"])
        c = f * c + (1 - f) * np.tanh(z["g"])
        out.append(c)
    return np.stack(out, 1)


def test_user_cell_registers_and_trains(janet):
    assert CELLS["janet"] is janet
    layer = lstm_jax.LSTM(D, H, cell="janet", rngs=nnx.Rngs(0))
    randomize(layer, 7)
    x = np.random.default_rng(8).normal(size=(B, T, D)).astype(np.float32)
    np.testing.assert_allclose(layer(jnp.asarray(x)), ref_janet(cell_params(layer), x), atol=2e-5)
    assert num_params(layer) == 2 * H * (D + H) + 2 * H
    assert_trained(*train_a_few_steps("janet", steps=5))


def test_docs_show_the_tested_example():
    src = inspect.getsource(define_janet).splitlines()
    start = next(k for k, l in enumerate(src) if "example begins" in l) + 1
    end = next(k for k, l in enumerate(src) if "example ends" in l)
    example = textwrap.dedent("\n".join(src[start:end]))
    assert len(example.strip().splitlines()) < 20
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "cells.md")).read()
    assert f"```python\n{example}\n```" in docs
