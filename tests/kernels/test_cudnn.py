"""The whole cuDNN code path on any backend, with jax's pure reference ``lstm_ref`` in place of cuDNN
(tests/cudnn_fake.py): Bidirectional with a zero length and one past T, the float32 carry and the
explicit precision. Reverse, lengths, every gradient and a loss on the final carry alone are
tests/kernels/test_paths.py's cudnn cases (on a GPU, the real kernel: benchmarks/gpu_check.sh)."""

from __future__ import annotations

import cudnn_fake
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from harness import assert_close

from lstm_jax.kernels import cudnn
from lstm_jax.nn.layers import LSTM, Bidirectional

B, T, D, H = 6, 9, 5, 8
LENGTHS = np.array([9, 1, 0, 5, 12, 7])  # a zero length, and one past T (read as T)


@pytest.fixture
def fake_cudnn(monkeypatch):
    cudnn_fake.CALLS.clear()
    cudnn_fake.install(monkeypatch.setattr)
    return cudnn_fake.CALLS


def results(layer, x, lengths, carry, carry_only):
    graphdef, params = nnx.split(layer)

    def loss(params, x, carry):
        out, final = nnx.merge(graphdef, params)(x, lengths, carry, return_carry=True)
        value = sum(jnp.sum(jnp.cos(k + 1.0) * c * c) for k, c in enumerate(jax.tree.leaves(final)))
        if not carry_only:
            value = value + jnp.sum(jnp.sin(out) * jnp.linspace(-1, 1, out.shape[-1]))
        return value, (out, final)

    with jax.default_matmul_precision("float32"):  # full f32 on a GPU too (TF32 would miss 1e-5)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, x, carry)


def data(seed, bidirectional=False):
    k = jax.random.split(jax.random.key(seed), 3)
    carry = (0.5 * jax.random.normal(k[1], (B, H)), 0.5 * jax.random.normal(k[2], (B, H)))
    return jax.random.normal(k[0], (B, T, D)), ((carry, carry) if bidirectional else carry)


def test_bidirectional_on_cudnn_matches_scan(fake_cudnn):
    layer = Bidirectional.create(D, H, rngs=nnx.Rngs(0))
    assert layer.forward.impl == layer.backward.impl == "cudnn"
    x, carry = data(2, bidirectional=True)
    lengths = jnp.asarray(LENGTHS)
    got = results(layer, x, lengths, carry, False)
    ref = results(Bidirectional.create(D, H, impl="scan", rngs=nnx.Rngs(0)), x, lengths, carry, False)
    assert_close(got, ref)


def test_a_bf16_carry_reaches_cudnn_as_float32(fake_cudnn):
    layer = LSTM(D, H, rngs=nnx.Rngs(0))
    x, (c, h) = data(3)
    (c2, h2), out = cudnn.layer(layer.cell, x, jnp.asarray(LENGTHS), (c.astype(jnp.bfloat16), h.astype(jnp.bfloat16)))
    assert fake_cudnn[-1]["h0"] == fake_cudnn[-1]["c0"] == jnp.float32
    assert c2.dtype == h2.dtype == jnp.bfloat16 and out.dtype == jnp.bfloat16


@pytest.mark.parametrize("setting", ["bfloat16", "default", "tensorfloat32", "highest"])
def test_any_global_precision_gets_an_explicit_one(fake_cudnn, setting):
    """jax.experimental.rnn refuses global settings that canonicalize to bfloat16 (bfloat16, default); the call
    passes its own."""
    layer = LSTM(D, H, rngs=nnx.Rngs(0))
    x, carry = data(4)
    with jax.default_matmul_precision(setting):
        layer(x, jnp.asarray(LENGTHS), carry)
        expected = jax.lax.Precision.HIGHEST if setting in ("float32", "highest") else jax.lax.Precision.HIGH
        assert fake_cudnn[-1]["precision"] == expected
