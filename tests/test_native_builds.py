"""Every native kernel (LSTM, its variants, GRU) under each ISA build and thread split.

The ISA and the thread count are fixed when the kernels load, so each combination runs in its own
process; one process checks all three kernel families, so a build costs one JAX start-up, and the
processes of all the builds run at once.
"""

from __future__ import annotations

import pytest
from conftest import ISA_SPLITS, kernel_build_result, start_kernel_builds

_SUBPROCESS = """
import json, sys
sys.path.insert(0, {tests!r})
import test_native, test_native_fgr, test_native_gru, test_native_variants
from conftest import max_rel_err
from lstm_jax.kernels import native
from lstm_jax.kernels.native import gru as native_gru
err = {{}}
args = test_native.problem(3)
err["lstm"] = max_rel_err(test_native.value_and_grads(True, *args), test_native.value_and_grads(False, *args))
for name in ("peephole", "cifg", "noaf", "layernorm"):
    got, ref = test_native_variants.pair(name, seed=11, reverse=name == "cifg")
    x, lengths, carry = test_native_variants.problem(12)
    v = test_native_variants.value_and_grads
    err[name] = max_rel_err(v(got, x, lengths, carry), v(ref, x, lengths, carry))
got, ref = test_native_fgr.pair(lambda impl: test_native_fgr.LSTM(test_native_fgr.D, test_native_fgr.H, cell="fgr",
                                impl=impl, reverse=True, rngs=test_native_fgr.nnx.Rngs(0)), seed=13)
x, lengths, carry = test_native_fgr.problem(14)
v = test_native_fgr.value_and_grads
err["fgr"] = max_rel_err(v(got, x, lengths, carry), v(ref, x, lengths, carry))
if native_gru.available():
    args = test_native_gru.problem(9)
    v = test_native_gru.value_and_grads
    err["gru"] = max_rel_err(v(native_gru.gru_layer, *args), v(test_native_gru.scan_gru, *args))
print(json.dumps({{"isa": native.isa(), "threads": native.threads(), "gru_isa": native_gru.isa(),
                  "gru_threads": native_gru.threads(), "err": err}}))
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
    assert set(result["err"]) >= {"lstm", "peephole", "cifg", "noaf", "layernorm", "fgr"}
    if "gru" in result["err"]:
        assert (result["gru_isa"], result["gru_threads"]) == (isa, threads)
    assert max(result["err"].values()) <= 1e-5, result["err"]
