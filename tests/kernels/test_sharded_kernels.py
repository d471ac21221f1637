"""With 4 forced CPU devices the custom-call kernels run once per batch shard.

A batch-sharded jit of a training step must run the native kernels (and cuDNN, here its pure
reference) on each device's rows, with no all-gather of the input, and match one device's scan.
The device count is fixed when jax starts, so the checks run in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from harness import REPO_ROOT, TESTS

from lstm_jax.kernels import native

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from lstm_jax.nn.layers import LSTM, Bidirectional
from lstm_jax.kernels import native

assert jax.device_count() == 4
B, T, D, H = 8, 7, 3, 16
x = jax.random.normal(jax.random.key(0), (B, T, D))
lengths = jnp.array([7, 1, 0, 5, 7, 3, 6, 2])
mesh = Mesh(np.array(jax.devices()), ("data",))
batch = NamedSharding(mesh, P("data"))
replicated = NamedSharding(mesh, P())

def build(make, impl):
    model = make(impl)
    graphdef, params = nnx.split(model)
    def loss(params, x, lengths):
        out, final = nnx.merge(graphdef, params)(x, lengths, return_carry=True)
        carry_term = sum(jnp.sum(jnp.cos(k + 1.0) * c) for k, c in enumerate(jax.tree.leaves(final)))
        return jnp.sum(jnp.sin(out)) + carry_term, out
    return model, params, jax.value_and_grad(loss, has_aux=True)

def compare(make, impl):
    model, params, f = build(make, impl)
    sharded = jax.jit(f, in_shardings=(replicated, batch, batch), out_shardings=((replicated, batch), replicated))
    lowered = sharded.lower(params, jax.device_put(x, batch), jax.device_put(lengths, batch))
    hlo = lowered.compile().as_text()
    got = sharded(params, jax.device_put(x, batch), jax.device_put(lengths, batch))
    _, ref_params, g = build(make, "scan")
    one = jax.devices()[0]
    ref = jax.jit(g)(jax.device_put(ref_params, one), jax.device_put(x, one), jax.device_put(lengths, one))
    err = max(float(jnp.max(jnp.abs(np.asarray(a) - np.asarray(b))) / max(1.0, float(jnp.max(jnp.abs(np.asarray(b))))))
              for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)))
    return {"impl": model.impl if hasattr(model, "impl") else model.forward.impl, "err": err,
            "all_gather": "all-gather" in hlo, "custom_calls": hlo.count("custom-call"),
            "all_reduce": "all-reduce" in hlo}

out = {}
if native.available():
    out["native"] = compare(lambda impl: LSTM(D, H, impl=impl if impl == "scan" else "auto", rngs=nnx.Rngs(0)), "auto")
    out["peephole_native"] = compare(lambda impl: LSTM(D, H, cell="peephole", impl=impl if impl == "scan" else "auto",
                                                       rngs=nnx.Rngs(0)), "auto")
    out["gru_native"] = compare(lambda impl: LSTM(D, H, cell="gru", impl=impl if impl == "scan" else "auto",
                                                  rngs=nnx.Rngs(0)), "auto")
    out["fgr_native"] = compare(lambda impl: LSTM(D, H, cell="fgr", impl=impl if impl == "scan" else "auto",
                                                  rngs=nnx.Rngs(0)), "auto")
    out["layernorm_native"] = compare(lambda impl: LSTM(D, H, cell="layernorm", impl=impl if impl == "scan" else "auto",
                                                        rngs=nnx.Rngs(0)), "auto")
    out["bidirectional_native"] = compare(lambda impl: Bidirectional.create(D, H, impl=impl if impl == "scan" else "auto",
                                                                            rngs=nnx.Rngs(0)), "auto")
out["gru_xla"] = compare(lambda impl: LSTM(D, H, cell="gru", impl=impl, rngs=nnx.Rngs(0)), "xla")
import cudnn_fake
cudnn_fake.install(setattr)
out["cudnn"] = compare(lambda impl: Bidirectional.create(D, H, impl="scan" if impl == "scan" else "auto",
                                                         rngs=nnx.Rngs(0)), "auto")
out["cudnn_shard_batch"] = sorted({c["batch"] for c in cudnn_fake.CALLS})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(TESTS)]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")
def test_auto_picks_native_on_four_devices_and_runs_it_per_shard(four_devices):
    r = four_devices["native"]
    assert r["impl"] == "native"
    assert r["custom_calls"] >= 2  # forward and backward kernels
    assert not r["all_gather"], "the batch was gathered around the native kernels"
    assert r["all_reduce"]  # the weight gradients are summed over the shards
    assert r["err"] <= 1e-5


# Each other native layer, and what it adds to the sharding: the peepholes (and FGR's R) replicated
# like the weights with their gradients summed; both directions of a bidirectional layer in one
# call with a leading direction axis; FGR's gates carry split like c and h; the GRU's own kernels.
@pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")
@pytest.mark.parametrize("case", ["peephole_native", "bidirectional_native", "gru_native", "fgr_native",
                                  "layernorm_native"])
def test_every_native_layer_runs_its_kernels_per_shard(four_devices, case):
    r = four_devices[case]
    assert r["impl"] == "native" and r["custom_calls"] >= 2 and not r["all_gather"] and r["all_reduce"]
    assert r["err"] <= 1e-5


def test_generic_fast_path_shards_like_any_xla_code(four_devices):
    r = four_devices["gru_xla"]
    assert r["impl"] == "xla" and not r["all_gather"] and r["err"] <= 1e-5


def test_cudnn_path_runs_per_shard(four_devices):
    r = four_devices["cudnn"]
    assert r["impl"] == "cudnn" and not r["all_gather"] and r["err"] <= 1e-5
    assert four_devices["cudnn_shard_batch"] == [2]  # 8 rows over 4 devices: each call saw its 2
