"""QuantileTask: the pinball loss by hand, its minimiser is the quantile, coverage and width."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.errors import ConfigError
from lstm_jax.train.tasks import QuantileTask


def test_pinball_loss_and_metrics_by_hand():
    task = QuantileTask((0.9, 0.1, 0.5))  # sorted internally
    assert task.quantiles == (0.1, 0.5, 0.9) and task.median_index == 1
    # One example, H=2 steps, Q=3 quantiles each: [q0.1, q0.5, q0.9] per step.
    out = jnp.array([[0.0, 1.0, 2.0, 10.0, 11.0, 12.0]])
    y = jnp.array([[1.5, 9.0]])
    # Step 1: errors y - p = 1.5, 0.5, -0.5 -> 0.1*1.5, 0.5*0.5, 0.1*0.5; step 2: -1, -2, -3 -> 0.9*1, 0.5*2, 0.1*3.
    want = np.mean([0.15, 0.25, 0.05, 0.9, 1.0, 0.3])
    np.testing.assert_allclose(task.loss(out, y), [want], rtol=1e-6)
    m = task.metrics(out, y)
    np.testing.assert_allclose(m["mae"], [(0.5 + 2.0) / 2], rtol=1e-6)
    np.testing.assert_allclose(m["coverage"], [0.5])  # 1.5 in [0, 2]; 9 not in [10, 12]
    np.testing.assert_allclose(m["width"], [2.0])
    assert QuantileTask((0.5,)).metrics(out[:, :2], y).keys() == {"mae"}


def test_the_minimiser_of_the_pinball_loss_is_the_quantile():
    y = jnp.asarray(np.random.default_rng(0).exponential(size=4000), jnp.float32)[:, None]
    task = QuantileTask((0.1, 0.5, 0.9))
    loss = lambda p: jnp.mean(task.loss(jnp.broadcast_to(p, (len(y), 3)), y))
    # Plain subgradient descent on three constants, with a decaying step.
    step = lambda k, p: p - 0.5 / (1.0 + k / 100.0) * jax.grad(loss)(p)
    p = jax.jit(lambda p: jax.lax.fori_loop(0, 4000, step, p))(jnp.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(p, np.quantile(np.asarray(y), [0.1, 0.5, 0.9]), atol=0.03)


@pytest.mark.parametrize("bad", [(), (0.0, 0.5), (0.5, 1.0), (0.5, 0.5)])
def test_bad_quantiles(bad):
    with pytest.raises(ConfigError):
        QuantileTask(bad)
