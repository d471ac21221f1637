"""Every native kernel (LSTM, its variants, GRU) under each ISA build and thread split.

The ISA and the thread count are fixed when the kernels load, so each combination runs in its own
process; one process checks all three kernel families, so a build costs one JAX start-up, and the
processes of all the builds run at once.
"""

from __future__ import annotations

import pytest
from harness import ISA_SPLITS, kernel_build_result, start_kernel_builds

# The cases: the raw LSTM kernel (tests/kernels/test_native.py's problem), four variants and FGR
# through their layers on the harness's problem (tests/harness.py), the raw GRU kernel.
_SUBPROCESS = """
import json, os, sys
sys.path.insert(0, os.path.join("tests", "kernels"))
import harness, test_native, test_native_gru
from flax import nnx
from lstm_jax.kernels import native
from lstm_jax.kernels.native import gru as native_gru
from lstm_jax.nn.layers import LSTM
err = {}
args = test_native.problem(3)
err["lstm"] = harness.max_rel_err(test_native.value_and_grads(True, *args), test_native.value_and_grads(False, *args))
for seed, name in enumerate(("peephole", "cifg", "noaf", "layernorm", "fgr")):
    reverse = name in ("cifg", "fgr")
    got, ref = (harness.randomize(LSTM(harness.D, harness.H, cell=name, impl=impl, reverse=reverse,
                                       rngs=nnx.Rngs(0)), 11 + seed) for impl in ("native", "scan"))
    case = harness.inputs(got, 20 + seed)
    err[name] = harness.max_rel_err(harness.value_and_grads(got, *case), harness.value_and_grads(ref, *case))
args = test_native_gru.problem(9)
v = test_native_gru.value_and_grads
err["gru"] = harness.max_rel_err(v(native_gru.gru_layer, *args), v(test_native_gru.scan_gru, *args))
print(json.dumps({"isa": native.isa(), "threads": native.threads(), "err": err}))
"""


@pytest.fixture(scope="module")
def builds():
    procs = start_kernel_builds(_SUBPROCESS)
    yield procs
    for proc in procs.values():  # any a failed test left running
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("isa,threads", ISA_SPLITS)
def test_every_kernel_build_and_thread_split(builds, isa, threads):
    result = kernel_build_result(builds, isa, threads)
    assert result["threads"] == threads
    # One runtime for every kernel: the GRU runs on the same ISA and threads as the LSTM family.
    assert set(result["err"]) >= {"lstm", "peephole", "cifg", "noaf", "layernorm", "fgr", "gru"}
    assert max(result["err"].values()) <= 1e-5, result["err"]
