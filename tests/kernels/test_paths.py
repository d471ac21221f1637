"""Every kernel path of every cell against the generic scan: one harness over impl x cell x reverse
x lengths x carry, forward values, the final carry and every gradient (parameters, x, initial carry).

The impls: ``xla`` (the custom VJP in XLA, every registered cell), ``native`` (the C++ CPU kernels,
where built: the standard LSTM, Greff's variants, FGR, layer norm, the GRU) and ``cudnn`` (on a CPU
with jax's pure reference of the cuDNN LSTM in its place, tests/cudnn_fake.py; the real kernel on a
GPU). The carry axis: ``none`` (the zero initial carry), ``given`` (a random one) or ``only`` (a
random one, and a loss on the final carry alone, so the outputs' cotangent is a symbolic zero).

The scan reference of a case is computed once and shared by every impl (``_reference``). The
problem (``harness.randomize``, ``harness.inputs``, ``harness.value_and_grads``) is the one of
tests/harness.py: B = 29 rows in uneven row blocks, H = 40 in partial vectors, T = 13 against
remat's chunks, lengths with a zero, a one and a full row.
"""

from __future__ import annotations

import functools

import cudnn_fake
import pytest
from flax import nnx
from harness import D, H, assert_close, inputs, randomize, value_and_grads

from lstm_jax.kernels import cudnn, native
from lstm_jax.nn.cells import CELLS
from lstm_jax.nn.layers import LSTM

CELL_NAMES = sorted(CELLS)
NATIVE_CELLS = ("lstm", "np", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "fgr", "layernorm", "gru")

# The standard cell: every pair of (reverse, lengths, carry) values together.
PAIRWISE = [(False, False, "none"), (True, True, "none"), (True, False, "given"), (False, True, "given"),
            (False, True, "only"), (True, False, "only")]


def combos(name: str):
    """The (reverse, with_lengths, carry) cases of cell ``name``: all pairs for the standard cell; for
    every other one two cases that flip each option (A: lengths and a given carry; B: full rows and
    a loss on the final carry alone), reversed in A on every other cell."""
    if name == "lstm":
        return PAIRWISE
    k = CELL_NAMES.index(name)
    return [(k % 2 == 1, True, "given"), (k % 2 == 0, False, "only")]


needs_native = pytest.mark.skipif(not native.available(), reason="native kernels not built, or not on CPU")

# On the generic XLA path every cell takes case A; case B for one cell of each kind of carry update
# (peepholes, the GRU's one-part carry, layer norm): the path's code is one for every cell.
XLA_CASE_B = ("peephole", "gru", "layernorm")


def cases():
    out = []
    for impl, names in (("xla", CELL_NAMES), ("native", NATIVE_CELLS), ("cudnn", ("lstm",))):
        for name in names:
            chosen = combos(name)
            if impl == "xla" and name != "lstm" and name not in XLA_CASE_B:
                chosen = chosen[:1]
            for reverse, with_lengths, carry in chosen:
                marks = [needs_native] if impl == "native" else []
                out.append(pytest.param(impl, name, reverse, with_lengths, carry, marks=marks,
                                        id=f"{impl}-{name}-{'rev' if reverse else 'fwd'}-"
                                           f"{'lengths' if with_lengths else 'full'}-carry_{carry}"))
    return out


@pytest.fixture
def fake_cudnn(monkeypatch):
    """cuDNN where there is none: jax's pure reference of its LSTM in place of the kernel."""
    if cudnn.available():
        return None
    cudnn_fake.CALLS.clear()
    cudnn_fake.install(monkeypatch.setattr)
    return cudnn_fake.CALLS


def make(name, impl, reverse, seed=1, **kw):
    return randomize(LSTM(D, H, cell=name, impl=impl, reverse=reverse, rngs=nnx.Rngs(0), **kw), seed)


def problem(name, reverse, with_lengths, carry, seed):
    layer = make(name, "scan", reverse)
    x, lengths, initial, w_out = inputs(layer, seed)
    return x, lengths if with_lengths else None, None if carry == "none" else initial, w_out


@functools.cache
def _reference(name, reverse, with_lengths, carry, seed=2):
    """The scan's outputs, final carry and gradients of one case (computed once for every impl)."""
    args = problem(name, reverse, with_lengths, carry, seed)
    return value_and_grads(make(name, "scan", reverse), *args, carry_only=carry == "only")


def check(layer, name, reverse, with_lengths, carry, seed=2):
    args = problem(name, reverse, with_lengths, carry, seed)
    assert_close(value_and_grads(layer, *args, carry_only=carry == "only"),
                 _reference(name, reverse, with_lengths, carry, seed))


@pytest.mark.parametrize("impl,name,reverse,with_lengths,carry", cases())
def test_path_matches_the_scan(impl, name, reverse, with_lengths, carry, request):
    calls = request.getfixturevalue("fake_cudnn") if impl == "cudnn" else None
    layer = make(name, impl, reverse)
    assert layer.impl == impl
    check(layer, name, reverse, with_lengths, carry)
    if calls is not None:
        assert calls, "the cuDNN stand-in was never called"


# remat recomputes the forward chunk by chunk in the backward pass (T = 13: the last chunk is padded).
REMAT = [("xla", "lstm"), ("xla", "peephole"), ("xla", "gru"), ("xla", "layernorm"),
         pytest.param("native", "lstm", marks=needs_native), pytest.param("native", "peephole", marks=needs_native),
         pytest.param("native", "nog", marks=needs_native), pytest.param("native", "layernorm", marks=needs_native),
         pytest.param("native", "fgr", marks=needs_native)]


@pytest.mark.parametrize("impl,name", REMAT)
def test_remat_matches_the_scan(impl, name):
    """The standard cell reversed with lengths and a given carry; the others with case B's loss on
    the final carry alone."""
    reverse, with_lengths, carry = (True, True, "given") if name == "lstm" else combos(name)[1]
    layer = make(name, impl, reverse, remat=True)
    assert layer.impl == impl and layer.remat
    check(layer, name, reverse, with_lengths, carry)
