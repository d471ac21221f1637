"""Classifiers for K > 2 classes: logits [B, K], padding invariance with lengths, every parameter
trained; the binary shapes and parameters unchanged; SoftmaxTask against a NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lstm_jax.errors import ConfigError
from lstm_jax.nn.cells import CELLS
from lstm_jax.nn.models import LSTMFCN, Classifier, ModelConfig, make_classifier
from lstm_jax.train.tasks import SoftmaxTask, balanced_class_weights

K, T, D = 4, 9, 2
CONV = {"conv_filters": (6, 8, 6), "conv_norm": "global"}
ARCHS = {
    "lstm": ModelConfig(hidden_size=5),
    "bidirectional": ModelConfig(hidden_size=5, bidirectional=True),
    "stacked_mean": ModelConfig(hidden_size=(6, 5), dropout=0.2, pooling="mean"),
    "lstm_fcn": ModelConfig(architecture="lstm_fcn", hidden_size=4, dropout=0.5, **CONV),
    "lstm_fcn_time": ModelConfig(architecture="lstm_fcn_time", hidden_size=4, dropout=0.5, **CONV),
    "lstm_fcn_time_bi": ModelConfig(architecture="lstm_fcn_time", hidden_size=4, bidirectional=True, **CONV),
    "fcn": ModelConfig(architecture="fcn", **CONV),
}


def _data(seed: int = 1, B: int = 8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    lengths = np.array([T, 4, 7, 2, T, 5, 3, 8][:B])
    y = np.arange(B) % K
    return x, lengths, y


def _jitted(model):
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, x, lengths: nnx.merge(graphdef, s)(x, lengths))
    return lambda x, lengths=None: f(state, x, lengths)


def _check(model, num_classes: int, *, without_lengths: bool = True, **task_kwargs):
    """Logits of the right shape, unchanged by garbage past each row's length (and, for a full-length
    row, by dropping ``lengths``), and one Adam step on SoftmaxTask's loss that changes every parameter.
    One compiled program gives the logits and the gradients (compiling dominates these tests)."""
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    x, lengths, y = _data()
    task = SoftmaxTask(num_classes, **task_kwargs)

    @jax.jit
    def logits_and_grads(p, x):
        def loss(p):
            return task.loss(nnx.merge(graphdef, p)(x, lengths, key=jax.random.key(0)), jnp.asarray(y)).mean()
        return nnx.merge(graphdef, p)(x, lengths), jax.grad(loss)(p)

    out, grads = logits_and_grads(params, x)
    assert out.shape == ((8,) if num_classes == 2 else (8, num_classes))
    garbage = x.copy()
    rng = np.random.default_rng(5)
    for b, L in enumerate(lengths):
        garbage[b, L:] = rng.normal(scale=50, size=(T - L, D))
    np.testing.assert_allclose(logits_and_grads(params, garbage)[0], out, atol=1e-5)
    if without_lengths:
        np.testing.assert_allclose(_jitted(model)(x)[0], out[0], atol=1e-5)

    tx = optax.adam(1e-2)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, new)
    flat = jax.tree_util.tree_flatten_with_path(changed)[0]
    assert flat and all(v for _, v in flat), [jax.tree_util.keystr(k) for k, v in flat if not v]


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_architectures_for_k_classes(name):
    model = make_classifier(D, ARCHS[name], nnx.Rngs(0), length=T, num_classes=K)
    assert model.head.out_features == K
    _check(model, K)


# Every cell compiles a gradient program of its own (~10 s each on 2 busy cores): 'lstm' runs in the
# quick suite through the architectures above, the whole registry under the slow marker.
@pytest.mark.slow
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_registered_cell_for_k_classes(cell):
    model = make_classifier(D, ModelConfig(cell=cell, hidden_size=5), nnx.Rngs(0), num_classes=K)
    _check(model, K, without_lengths=False)


@pytest.mark.parametrize("name", ["lstm", "lstm_fcn", "fcn"])
def test_two_classes_keep_one_sigmoid_unit(name):
    cfg = ARCHS[name]
    model = make_classifier(D, cfg, nnx.Rngs(0), length=T, num_classes=2)
    assert model.head.out_features == 1
    _check(model, 2, without_lengths=False, label_smoothing=0.1, class_weights=(1.0, 2.0))
    # num_classes=2 is the default: the same parameters, drawn the same way, as before the argument existed.
    default = make_classifier(D, cfg, nnx.Rngs(0), length=T)
    a, b = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in (model, default))
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))


def test_architecture_types_and_errors():
    assert isinstance(make_classifier(D, ARCHS["lstm"], nnx.Rngs(0), num_classes=3), Classifier)
    fcn = make_classifier(D, ARCHS["fcn"], nnx.Rngs(0), num_classes=3)
    assert isinstance(fcn, LSTMFCN) and fcn.encoder is None
    # Over time, the LSTM reads D features a step and any length; the shuffle needs the length.
    timed = make_classifier(D, ARCHS["lstm_fcn_time"], nnx.Rngs(0), num_classes=3)
    assert timed.encoder.layers[0].in_features == D
    assert _jitted(timed)(np.zeros((2, 13, D), np.float32)).shape == (2, 3)
    with pytest.raises(ConfigError, match="needs the series length"):
        make_classifier(D, ARCHS["lstm_fcn"], nnx.Rngs(0), num_classes=3)
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        make_classifier(D, ARCHS["lstm"], nnx.Rngs(0), num_classes=1)


def test_lstm_fcn_time_uses_the_order_of_steps():
    # Reversing time changes an LSTM-over-time's features; the shuffled LSTM of a univariate series
    # sees one step, and FCN's pooled features are built from local windows: the point of the comparison.
    x = np.random.default_rng(0).normal(size=(3, T, 1)).astype(np.float32)
    timed = make_classifier(1, ModelConfig(architecture="lstm_fcn_time", hidden_size=4, **CONV), nnx.Rngs(0), num_classes=3)
    f = jax.jit(lambda x: timed.lstm_features(x, None, None))
    assert not np.allclose(f(x), f(x[:, ::-1]), atol=1e-4)


# -- SoftmaxTask ----------------------------------------------------------------------------------

def _np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_softmax_task_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 2, 1, 0], np.float32)  # the loaders' float32 class indices
    a, w = 0.2, (1.0, 2.0, 0.5)
    task = SoftmaxTask(3, label_smoothing=a, class_weights=w)
    target = np.eye(3)[y.astype(int)] * (1 - a) + a / 3
    want = -(target * _np_log_softmax(logits.astype(np.float64))).sum(1) * np.array(w)[y.astype(int)]
    np.testing.assert_allclose(task.loss(jnp.asarray(logits), jnp.asarray(y)), want, rtol=1e-5)
    plain = -_np_log_softmax(logits.astype(np.float64))[np.arange(6), y.astype(int)]
    np.testing.assert_allclose(SoftmaxTask(3).loss(jnp.asarray(logits), jnp.asarray(y)), plain, rtol=1e-5)
    acc = SoftmaxTask(3).metrics(jnp.asarray(logits), jnp.asarray(y))["accuracy"]
    np.testing.assert_array_equal(acc, (logits.argmax(1) == y).astype(np.float32))


def test_softmax_task_with_one_sigmoid_unit():
    z = jnp.array([2.0, -1.0, 0.3, -0.2])
    y = jnp.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(SoftmaxTask(2).loss(z, y), optax.sigmoid_binary_cross_entropy(z, y))
    smooth = SoftmaxTask(2, label_smoothing=0.2).loss(z, y)
    np.testing.assert_allclose(smooth, optax.sigmoid_binary_cross_entropy(z, y * 0.8 + 0.1), rtol=1e-6)
    np.testing.assert_array_equal(SoftmaxTask(2).metrics(z, y)["accuracy"], [1, 1, 0, 0])


def test_softmax_task_errors_and_balanced_weights():
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        SoftmaxTask(1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        SoftmaxTask(3, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="3 finite weights"):
        SoftmaxTask(3, class_weights=(1.0, 2.0))
    with pytest.raises(ConfigError, match=r"logits \[B, 3\]"):
        SoftmaxTask(3).loss(jnp.zeros((4,)), jnp.zeros((4,)))
    w = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert w == pytest.approx((6 / 12, 6 / 4, 6 / 8, 0.0))
