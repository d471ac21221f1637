"""torch.nn.LSTM <-> lstm_jax: outputs, padded batches and final states match torch's exactly."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

import lstm_jax  # noqa: E402
from lstm_jax.errors import ConfigError  # noqa: E402
from lstm_jax.nn.interop import carry_from_torch, carry_to_torch, from_torch, to_torch  # noqa: E402

I, H, B, T = 3, 5, 3, 6
LENGTHS = [6, 3, 1]


def random_torch_lstm(num_layers, bidirectional, batch_first, bias, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5)  # larger than torch's init, so every gate matters
    return m.eval()


@functools.partial(jax.jit, static_argnums=0)
def run_jax(graphdef, state, x, lengths):
    """Outputs and final carries; jitted on the graph, so batch_first cases share one compile."""
    return nnx.merge(graphdef, state)(x, lengths, return_carry=True)


def jax_forward(stack, x_BxTxI, lengths=None):
    graphdef, state = nnx.split(stack)
    return run_jax(graphdef, state, jnp.asarray(x_BxTxI), None if lengths is None else jnp.asarray(lengths))


def torch_forward(m, x_BxTxI, lengths=None):
    """torch's outputs as [B, T, dirs·H] and its (h_n, c_n); packed when lengths are given."""
    x = torch.from_numpy(x_BxTxI)
    if not m.batch_first:
        x = x.transpose(0, 1)
    with torch.no_grad():
        if lengths is None:
            y, (h, c) = m(x)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.tensor(lengths), batch_first=m.batch_first, enforce_sorted=False)
            y, (h, c) = m(packed)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=m.batch_first, total_length=T)
    if not m.batch_first:
        y = y.transpose(0, 1)
    return y.numpy(), h.numpy(), c.numpy()


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


CASES = list(itertools.product([1, 2, 3], [False, True], [True, False], [True, False]))


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias", CASES)
def test_from_torch_matches(num_layers, bidirectional, batch_first, bias):
    m = random_torch_lstm(num_layers, bidirectional, batch_first, bias)
    stack = from_torch(m)
    assert isinstance(stack, lstm_jax.LSTMStack) and stack.out_features == (2 if bidirectional else 1) * H
    x = np.random.default_rng(1).normal(size=(B, T, I)).astype(np.float32)

    y_t, h_t, c_t = torch_forward(m, x)
    y_j, carries = jax_forward(stack, x)
    assert y_j.shape == y_t.shape
    assert max_diff(y_j, y_t) <= 1e-5
    h_j, c_j = carry_to_torch(carries, bidirectional=bidirectional)
    assert max(max_diff(h_j, h_t), max_diff(c_j, c_t)) <= 1e-5

    # Padded batch: garbage past each row's length must not matter; torch's padding is zero, as ours.
    x_pad = x.copy()
    for b, L in enumerate(LENGTHS):
        x_pad[b, L:] = 7.0
    y_t, h_t, c_t = torch_forward(m, x_pad, LENGTHS)
    y_j, carries = jax_forward(stack, x_pad, LENGTHS)
    valid = np.arange(T)[None, :] < np.array(LENGTHS)[:, None]
    assert max_diff(np.asarray(y_j)[valid], y_t[valid]) <= 1e-5
    np.testing.assert_array_equal(np.asarray(y_j)[~valid], 0.0)
    h_j, c_j = carry_to_torch(carries, bidirectional=bidirectional)
    assert max(max_diff(h_j, h_t), max_diff(c_j, c_t)) <= 1e-5


@pytest.mark.parametrize("bidirectional", [False, True])
def test_initial_carry_from_torch(bidirectional):
    m = random_torch_lstm(2, bidirectional, True, True)
    dirs = 2 if bidirectional else 1
    rng = np.random.default_rng(2)
    h0, c0 = (torch.from_numpy(rng.normal(size=(2 * dirs, B, H)).astype(np.float32)) for _ in range(2))
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    with torch.no_grad():
        y_t, _ = m(torch.from_numpy(x), (h0, c0))
    y_j = from_torch(m)(jnp.asarray(x), initial_carry=carry_from_torch(h0, c0, bidirectional=bidirectional))
    assert max_diff(y_j, y_t.numpy()) <= 1e-5


@pytest.mark.parametrize("bidirectional,bias", [(False, True), (True, False)])
def test_round_trip(bidirectional, bias):
    m = random_torch_lstm(2, bidirectional, False, bias)
    back = to_torch(from_torch(m), batch_first=False)
    assert (back.num_layers, back.bidirectional, back.bias, back.batch_first) == (2, bidirectional, bias, False)
    # Weights come back exactly; the two torch biases come back as one sum in bias_ih.
    for name, p in m.named_parameters():
        q = getattr(back, name)
        if name.startswith("bias_ih"):
            expected = p + getattr(m, name.replace("bias_ih", "bias_hh"))
            assert max_diff(q.detach(), expected.detach()) <= 1e-6
        elif name.startswith("bias_hh"):
            assert not q.detach().any()
        else:
            assert torch.equal(q, p)
    x = np.random.default_rng(3).normal(size=(B, T, I)).astype(np.float32)
    assert max_diff(torch_forward(back, x)[0], torch_forward(m, x)[0]) <= 1e-5


def test_to_torch_from_lstm_jax():
    """A freshly initialised lstm_jax stack, and single layers, run the same in torch."""
    x = np.random.default_rng(4).normal(size=(B, T, I)).astype(np.float32)
    stack = lstm_jax.LSTMStack(I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    assert max_diff(torch_forward(to_torch(stack), x)[0], stack(jnp.asarray(x))) <= 1e-5
    for layer in (lstm_jax.LSTM(I, H, rngs=nnx.Rngs(1)), lstm_jax.Bidirectional.create(I, H, rngs=nnx.Rngs(2))):
        assert max_diff(torch_forward(to_torch(layer), x)[0], layer(jnp.asarray(x))) <= 1e-5


def test_proj_size_is_refused():
    with pytest.raises(ConfigError, match="proj_size"):
        from_torch(torch.nn.LSTM(I, H, proj_size=2))


def test_refuses_what_torch_cannot_hold():
    with pytest.raises(ConfigError, match="torch.nn.LSTM"):
        from_torch(torch.nn.GRU(I, H))
    for bad in (
        lstm_jax.LSTM(I, H, cell="peephole", rngs=nnx.Rngs(0)),
        lstm_jax.LSTM(I, H, activation="relu", rngs=nnx.Rngs(0)),
        lstm_jax.LSTM(I, H, reverse=True, rngs=nnx.Rngs(0)),
        lstm_jax.LSTMStack(I, (H, H + 1), rngs=nnx.Rngs(0)),
    ):
        with pytest.raises(ConfigError):
            to_torch(bad)
