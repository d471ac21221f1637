"""What the test modules share: an independent NumPy LSTM, tolerances, and the kernel harness.

The kernel harness is one definition of the layer problem that every implementation (``impl``) of
every cell is checked on against the generic scan: :func:`randomize` (every parameter random, so no
term hides behind a zero), :func:`inputs` (x, lengths, a random initial carry, output weights) and
:func:`value_and_grads` (outputs, final carry and the gradient w.r.t. parameters, x and carry of a
loss that touches all of them). tests/kernels/test_paths.py runs it over impl x cell x reverse x
lengths x carry; other modules use the same pieces for their own checks.

Imported as ``harness`` (pyproject's ``pythonpath = ["tests"]``; subprocess scripts put the tests
folder on ``sys.path`` themselves).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = REPO_ROOT / "tests"


# -- the NumPy reference of the standard LSTM -----------------------------------------------------------

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


NP_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
}


def np_lstm(x_BxTxD, W_DxGH, U_HxGH, b_GH, activation="tanh", c0_BxH=None, h0_BxH=None):
    """Plain NumPy LSTM over a whole sequence (no masking), fused gate blocks in order (i, f, o, g).

    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o); g = act(z_g);
    c' = f * c + i * g; h' = o * act(c'), with z = x W + h U + b.
    Returns (h_BxTxH, (c_BxH, h_BxH)) computed in the dtype of the inputs (use float64 for references).
    """
    act = NP_ACTIVATIONS[activation]
    x_BxTxD = np.asarray(x_BxTxD)
    B, T, _ = x_BxTxD.shape
    H = U_HxGH.shape[0]
    dt = np.result_type(x_BxTxD, W_DxGH)
    c = np.zeros((B, H), dt) if c0_BxH is None else np.asarray(c0_BxH, dt)
    h = np.zeros((B, H), dt) if h0_BxH is None else np.asarray(h0_BxH, dt)
    outs = []
    for t in range(T):
        z = x_BxTxD[:, t] @ W_DxGH + h @ U_HxGH + b_GH
        zi, zf, zo, zg = (z[:, k * H : (k + 1) * H] for k in range(4))
        i, f, o, g = _sigmoid(zi), _sigmoid(zf), _sigmoid(zo), act(zg)
        c = f * c + i * g
        h = o * act(c)
        outs.append(h)
    return np.stack(outs, axis=1), (c, h)


def cell_weights(cell, dtype=np.float64):
    """(W, U, b) of an LSTMCell as NumPy arrays in ``dtype``."""
    return (
        np.asarray(cell.kernel[...], dtype),
        np.asarray(cell.recurrent_kernel[...], dtype),
        np.asarray(cell.bias[...], dtype),
    )


# -- tolerances -------------------------------------------------------------------------------------------

def max_rel_err(a, b) -> float:
    """Largest |a - b| over all leaves of two pytrees of the same shapes, relative to each leaf's
    scale (at least 1)."""
    worst = 0.0
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
        assert p.shape == q.shape
        worst = max(worst, float(np.max(np.abs(p - q), initial=0.0)) / max(1.0, float(np.max(np.abs(q), initial=0.0))))
    return worst


def assert_close(actual, expected, tol=1e-5):
    """Every leaf within ``tol`` of the reference, relative to the leaf's scale (at least 1)."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape
        scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
        assert float(np.max(np.abs(a - e), initial=0.0)) <= tol * scale, (a, e)


# -- the kernel harness -----------------------------------------------------------------------------------

# B = 29 splits into uneven row blocks on any thread count, with a tile remainder; H = 40 is no
# multiple of any vector width, so every native kernel runs partial vectors (and the GRU's padded
# gate blocks); T = 13 is no multiple of remat's chunk, so its padding is exercised too.
T, B, D, H = 13, 29, 3, 40


def randomize(module, seed, scale=0.4):
    """Every float parameter drawn at random: N(0, scale^2) for matrices, plus the initial value for
    vectors (biases, and the layer-norm gains that start at 1); peepholes, gate recurrences and
    shifts start at zero otherwise, and a zero hides its term of the maths."""
    graphdef, state = nnx.split(module)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [scale * jax.random.normal(k, v.shape, v.dtype) + (v if v.ndim == 1 else 0)
              if jnp.issubdtype(v.dtype, jnp.floating) else v for k, v in zip(keys, leaves, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def lengths_for(batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """Random lengths in [0, steps] with the edge cases first: a zero, a one and a full row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, steps + 1, batch)
    lengths[:3] = [0, 1, steps][:batch]
    return lengths


def inputs(layer, seed=0, batch=B, steps=T, features=D):
    """(x [B, T, D], lengths [B], a random initial carry of the layer's structure, w_out [B, T, out])."""
    k = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k[0], (batch, steps, features))
    leaves, tree = jax.tree.flatten(layer.initial_carry(batch))
    carry = jax.tree.unflatten(tree, [0.5 * jax.random.normal(kk, z.shape, z.dtype)
                                      for z, kk in zip(leaves, jax.random.split(k[1], len(leaves)), strict=True)])
    w_out = jax.random.normal(k[2], (batch, steps, layer.out_features))
    return x, jnp.asarray(lengths_for(batch, steps, seed)), carry, w_out


def value_and_grads(layer, x, lengths, carry, w_out, carry_only=False, wrt_x=True):
    """Outputs, final carry and the gradients of a loss touching all of them, w.r.t. params, x, carry.

    Each part of the final carry enters with its own weight (``cos(k + 1)``) and squared, so a wrong
    part or a sign error shows; ``carry_only`` leaves the outputs out of the loss (their cotangent is
    then a symbolic zero, as with pooling='last'); ``wrt_x=False`` holds x constant and
    differentiates the parameters and the carry only, as for a model's first layer (the kernels then
    leave dx out)."""
    graphdef, params = nnx.split(layer)

    def loss(params, x, carry):
        out, final = nnx.merge(graphdef, params)(x, lengths, carry, return_carry=True)
        value = sum(jnp.sum(jnp.cos(k + 1.0) * c * c) for k, c in enumerate(jax.tree.leaves(final)))
        if not carry_only:
            value = value + jnp.sum(jnp.sin(out) * w_out)
        return value, (out, final)

    with jax.default_matmul_precision("float32"):  # full f32 on a GPU too (TF32 would miss 1e-5)
        if not wrt_x:
            f = jax.value_and_grad(lambda params, carry: loss(params, x, carry), argnums=(0, 1), has_aux=True)
            (_, aux), grads = jax.jit(f)(params, carry)
            return aux, grads
        (_, aux), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, x, carry)
    return aux, grads


# -- native kernel builds in processes of their own ---------------------------------------------------------

ISA_SPLITS = [("avx512", 3), ("avx2", 2), ("generic", 1)]  # (kernel build, threads) for start_kernel_builds


def start_kernel_builds(script: str) -> dict[tuple[str, int], subprocess.Popen]:
    """Starts ``script`` (its last line of output a JSON object with at least the kernels' "isa";
    the tests folder is on its ``sys.path``) once per ``ISA_SPLITS`` entry, all at once, each in a
    process whose native kernels are fixed to that build and thread count (both are chosen once, at
    import). The first runs alone and fills the run's compilation cache (conftest.py); the others,
    whose programs are the same (the build is chosen inside the kernels, not in XLA's program), then
    start together and mostly load them. Collect each with :func:`kernel_build_result`."""
    procs = {}
    for isa, threads in ISA_SPLITS:
        if isa != "generic" and os.uname().machine != "x86_64":
            continue
        env = dict(os.environ, LSTM_JAX_NATIVE_ISA=isa, LSTM_JAX_NATIVE_THREADS=str(threads), JAX_PLATFORMS="cpu",
                   PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(TESTS)]))
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not procs:
            _BUILD_OUTPUT[proc.pid] = proc.communicate(timeout=300)
        procs[isa, threads] = proc
    return procs


_BUILD_OUTPUT: dict[int, tuple[str, str]] = {}  # (stdout, stderr) of the build processes already collected


def kernel_build_result(procs: dict[tuple[str, int], subprocess.Popen], isa: str, threads: int) -> dict:
    """The JSON object that the :func:`start_kernel_builds` process for ``isa`` and ``threads`` printed
    last. Skips where this CPU lacks ``isa``."""
    if (isa, threads) not in procs:
        pytest.skip("an x86-64 kernel")
    proc = procs[isa, threads]
    try:
        stdout, stderr = _BUILD_OUTPUT.get(proc.pid) or proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["isa"] != isa:
        pytest.skip(f"this CPU has no {isa} (got {result['isa']})")
    return result


# -- experiments as a user runs them ------------------------------------------------------------------------

def _module(name: str) -> str:
    """``experiments.<name>``, or ``name`` itself when dotted (``benchmarks.benchmark``)."""
    return name if "." in name else f"experiments.{name}"


def run_experiment(name: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs ``python -m experiments.<name> *args`` from the repository root and captures its output."""
    return subprocess.run(
        [sys.executable, "-m", _module(name), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def start_experiment(name: str, *args: str) -> subprocess.Popen:
    """Starts an experiment without waiting, so that several jax start-ups can overlap."""
    return subprocess.Popen(
        [sys.executable, "-m", _module(name), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_front_end(name: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m experiments.<name> *args`` in this process: the front-end's own ``define_flags``
    and ``main`` through ``common.run`` (flag parsing, one-line errors, exit codes), with its stdout
    and stderr captured. Returns what :func:`run_experiment` returns, without the process start-up.

    The flags it defines are removed afterwards, so that the next run defines them again. The
    persistent compilation cache it turns on is the test run's own (conftest.py sets its folder).
    """
    import contextlib
    import importlib
    import io

    from absl import flags

    from experiments import common

    module = importlib.import_module(f"experiments.{name}")
    FLAGS = flags.FLAGS
    before, was_parsed = set(FLAGS), FLAGS.is_parsed()
    argv = sys.argv
    sys.argv = [f"experiments/{name}.py", *args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            common.run(module.main, define=module.define_flags)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        for flag in set(FLAGS) - before:
            delattr(FLAGS, flag)
        if not was_parsed:
            FLAGS.unparse_flags()
    return subprocess.CompletedProcess([sys.executable, "-m", f"experiments.{name}", *args], code, out.getvalue(),
                                       err.getvalue())


def assert_same_bits_on_repeat(run: Callable[[], object], times: int) -> None:
    """``run()`` again ``times`` times gives the same bits as the first time (threads finishing their
    row blocks in another order must not change a sum)."""
    first = run()
    for _ in range(times):
        again = run()
        for p, q in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


def write_three_class_ts(root: pathlib.Path, name: str = "Tri", n_train: int = 30, n_test: int = 15) -> pathlib.Path:
    """Two channels, lengths 6-10, word labels: 'up' ramps, 'down' ramps, 'flat' noise."""
    rng = np.random.default_rng(0)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    head = (f"@problemName {name}\n@timeStamps false\n@missing false\n@univariate false\n@dimensions 2\n"
            "@equalLength false\n@classLabel true up down flat\n@data\n")
    for part, n in (("TRAIN", n_train), ("TEST", n_test)):
        lines = []
        for i in range(n):
            label = ("up", "down", "flat")[i % 3]
            L = 6 + i % 5
            slope = {"up": 1.0, "down": -1.0, "flat": 0.0}[label]
            a = slope * np.linspace(0, 1, L) + 0.1 * rng.normal(size=L)
            b = 0.5 * rng.normal(size=L)
            lines.append(",".join(f"{v:.4f}" for v in a) + ":" + ",".join(f"{v:.4f}" for v in b) + f":{label}")
        (folder / f"{name}_{part}.ts").write_text(head + "\n".join(lines) + "\n")
    (root / "BASELINES.md").write_text("| dataset | classes | 1NN-DTW | FCN |\n|---|---|---|---|\n| Tri | 3 | .700 | – |\n")
    return root


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to prove that a refused command touched nothing."""
    files = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, folder)] = f.read()
    return files
