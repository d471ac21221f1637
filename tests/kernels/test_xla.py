"""The fast paths of the standard cell beyond tests/kernels/test_paths.py: the forward alone, other
activations, bf16, the raw kernels against NumPy, a bidirectional layer, the auto choice, the cuDNN
weight layout and an install without the native kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from harness import B, D, H, assert_close, inputs, value_and_grads

from lstm_jax.errors import ConfigError
from lstm_jax.kernels import cudnn, native
from lstm_jax.kernels import xla as fast
from lstm_jax.kernels.native import lstm as native_lstm
from lstm_jax.nn.cells import LSTMCell
from lstm_jax.nn.layers import LSTM, Bidirectional

# The XLA fast path everywhere; the native kernels where they are built and the backend is the CPU.
FAST = ["xla", pytest.param("native", marks=pytest.mark.skipif(not native.available(),
                                                                reason="native kernels not built, or not on CPU"))]


def make(impl, reverse=False, **kw):
    return LSTM(D, H, impl=impl, reverse=reverse, rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("T_long", [40, 37])  # chunks of 20 steps; a prime length, chunks of one step
def test_forward_alone_matches_scan(impl, T_long):
    """Without a gradient the fast path projects the sequence chunk by chunk."""
    x, lengths, _, _ = inputs(make("scan"), 9, steps=T_long)
    ref = make("scan", reverse=True)(x, lengths, return_carry=True)
    got = make(impl, reverse=True)(x, lengths, return_carry=True)
    assert_close(got, ref)


@pytest.mark.parametrize("activation,recurrent_activation", [("relu", "sigmoid"), ("linear", "tanh")])
def test_other_activations_match_scan(activation, recurrent_activation):
    x, lengths, carry, w = inputs(make("scan"), 2)
    kw = dict(activation=activation, recurrent_activation=recurrent_activation)
    ref = value_and_grads(make("scan", **kw), 0.5 * x, lengths, carry, w)
    got = value_and_grads(make("xla", **kw), 0.5 * x, lengths, carry, w)
    assert_close(got, ref)


def test_bf16_keeps_the_cell_state_in_float32():
    x, _, carry, w = inputs(make("scan"), 3)
    ref = value_and_grads(make("scan"), x, None, carry, w)
    layer = make("xla", dtype=jnp.bfloat16)
    (out, (c, h)), grads = value_and_grads(layer, x, None, carry, w)
    assert out.dtype == c.dtype == h.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    assert_close((out, c, h), ref[0], tol=5e-2)
    assert_close(grads, ref[1], tol=1e-1)


@pytest.mark.parametrize("impl", FAST)
def test_raw_lstm_matches_a_numpy_lstm(impl, np_reference):
    np_lstm, cell_weights = np_reference
    x = inputs(make("scan"), 4)[0]
    cell = make("xla").cell
    W, U, b = cell_weights(cell)
    zeros = jnp.zeros((B, H))
    raw = native_lstm.lstm if impl == "native" else fast.lstm
    (c, h), out = raw(jnp.swapaxes(x, 0, 1), cell.kernel[...], cell.bias[...], cell.recurrent_kernel[...],
                      (zeros, zeros))
    ref_out, (ref_c, ref_h) = np_lstm(np.asarray(x, np.float64), W, U, b)
    assert_close((jnp.swapaxes(out, 0, 1), c, h), (ref_out, ref_c, ref_h))


@pytest.mark.parametrize("impl", FAST)
def test_bidirectional_fast_matches_scan(impl):
    x, lengths, _, w = inputs(Bidirectional.create(D, H, rngs=nnx.Rngs(0)), 5)
    results = []
    for name in ("scan", impl):
        layer = Bidirectional.create(D, H, impl=name, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(layer)

        def loss(params, x, graphdef=graphdef):
            out, ((cf, hf), (cb, hb)) = nnx.merge(graphdef, params)(x, lengths, return_carry=True)
            return jnp.sum(jnp.sin(out) * w) + jnp.sum(cf * hb) + jnp.sum(cb - hf), out

        results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x))
    assert_close(results[1], results[0])


def test_auto_picks_the_fast_path_for_the_standard_cell_only():
    backend_default = "cudnn" if cudnn.available() else "native" if native.available() else "xla"
    assert make("auto").impl == backend_default
    assert make("auto", remat=True).impl == ("native" if native.available() else "xla")
    assert make("auto", dtype=jnp.bfloat16).impl == "xla"  # the native and cuDNN kernels are float32
    # Other activations and other cells take the generic fast path (tests/kernels/test_kernels.py).
    assert make("auto", activation="gelu").impl == "xla"
    # Greff's variants and the GRU have native kernels of their own (tests/kernels/test_paths.py).
    assert LSTM(D, H, cell="peephole", rngs=nnx.Rngs(0)).impl == ("native" if native.available() else "xla")
    assert LSTM(D, H, cell="np", rngs=nnx.Rngs(0)).impl == ("native" if native.available() else "xla")
    assert LSTM(D, H, cell="gru", rngs=nnx.Rngs(0)).impl == ("native" if native.available() else "xla")

    # Any other subclass of LSTMCell is an ablation: even one with the same maths takes the generic path.
    class Same(LSTMCell):
        pass

    assert LSTM(D, H, cell=Same, rngs=nnx.Rngs(0)).impl == "xla"
    assert make("auto", recurrent_dropout=0.1).impl == "scan"


def test_bad_impl_is_a_config_error():
    with pytest.raises(ConfigError, match="impl must be one of"):
        make("fastest")
    with pytest.raises(ConfigError, match="remat"):
        make("scan", remat=True)
    if not cudnn.available():
        with pytest.raises(ConfigError, match="impl='cudnn'"):
            make("cudnn")
    with pytest.raises(ConfigError, match="impl='native'"):
        make("native", activation="relu")


def test_cudnn_weight_layout_matches_scan_on_any_backend():
    """The cuDNN path with jax's pure-JAX reference of the cuDNN LSTM in place of the kernel."""
    from jax.experimental import rnn

    def reference(x, h0, c0, weights, seq_lengths, *, input_size, hidden_size, num_layers, dropout, bidirectional,
                  precision):
        unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
        return rnn.lstm_ref(x, h0, c0, *unpacked, seq_lengths, input_size, hidden_size, num_layers, dropout,
                            bidirectional)

    layer = make("scan")
    x, lengths, carry, _ = inputs(layer, 8)
    ref_out, (ref_c, ref_h) = layer(x, lengths, carry, return_carry=True)
    (c, h), out = cudnn.layer(layer.cell, x, lengths, carry, run=reference)
    assert_close((out, c, h), (ref_out, ref_c, ref_h))


_WITHOUT_NATIVE = """
import sys
sys.modules["lstm_jax._native"] = None  # as if the install had no compiler: the import fails
import jax, jax.numpy as jnp
from flax import nnx
from lstm_jax.kernels import native
from lstm_jax.nn.cells import LSTMCell
from lstm_jax.errors import ConfigError
from lstm_jax.nn.layers import LSTM
assert not native.built() and not native.available()
layer = LSTM(3, 8, rngs=nnx.Rngs(0))
out = layer(jnp.ones((2, 5, 3)))
try:
    LSTM(3, 8, impl="native", rngs=nnx.Rngs(0))
    raise SystemExit("impl='native' was accepted without the kernels")
except ConfigError as e:
    msg = str(e)
print(layer.impl, out.shape, msg)
"""


def test_without_the_native_kernels_auto_takes_the_xla_path():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _WITHOUT_NATIVE], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    impl, rest = proc.stdout.split(" ", 1)
    assert impl == "xla"
    assert "(2, 5, 8)" in rest and "not built" in rest
