"""Shared test helpers: float32 JAX, an independent NumPy LSTM, experiment subprocesses."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import jax
import numpy as np
import pytest

# Every test runs in float32 unless it opts into float64 with ``jax.enable_x64(True)`` locally.
jax.config.update("jax_enable_x64", False)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


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


def assert_close(actual, expected, tol=1e-5):
    """Every leaf within ``tol`` of the reference, relative to the leaf's scale (at least 1)."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape
        scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
        assert float(np.max(np.abs(a - e), initial=0.0)) <= tol * scale, (a, e)


def cell_weights(cell, dtype=np.float64):
    """(W, U, b) of an LSTMCell as NumPy arrays in ``dtype``."""
    return (
        np.asarray(cell.kernel[...], dtype),
        np.asarray(cell.recurrent_kernel[...], dtype),
        np.asarray(cell.bias[...], dtype),
    )


@pytest.fixture
def np_reference():
    """The NumPy LSTM reference and a weight extractor: ``(np_lstm, cell_weights)``."""
    return np_lstm, cell_weights


def _run_experiment(name: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs ``python -m experiments.<name> *args`` from the repository root and captures its output."""
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _start_experiment(name: str, *args: str) -> subprocess.Popen:
    """Starts an experiment without waiting, so that several jax start-ups can overlap."""
    return subprocess.Popen(
        [sys.executable, "-m", f"experiments.{name}", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def max_rel_err(a, b) -> float:
    """Largest |a - b| over all leaves of two pytrees of the same shapes, relative to each leaf's
    scale (at least 1)."""
    worst = 0.0
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
        assert p.shape == q.shape
        worst = max(worst, float(np.max(np.abs(p - q), initial=0.0)) / max(1.0, float(np.max(np.abs(q), initial=0.0))))
    return worst


ISA_SPLITS = [("avx512", 3), ("avx2", 2), ("generic", 1)]  # (kernel build, threads) for start_kernel_builds


def start_kernel_builds(script: str) -> dict[tuple[str, int], subprocess.Popen]:
    """Starts ``script`` (``{tests}`` filled with the tests folder; its last line of output a JSON
    object with at least the kernels' "isa") once per ``ISA_SPLITS`` entry, all at once, each in a
    process whose native kernels are fixed to that build and thread count (both are chosen once, at
    import). Their JAX start-ups and compilations overlap; collect each with :func:`kernel_build_result`."""
    procs = {}
    for isa, threads in ISA_SPLITS:
        if isa != "generic" and os.uname().machine != "x86_64":
            continue
        env = dict(os.environ, LSTM_JAX_NATIVE_ISA=isa, LSTM_JAX_NATIVE_THREADS=str(threads), JAX_PLATFORMS="cpu")
        procs[isa, threads] = subprocess.Popen([sys.executable, "-c", script.format(tests=str(REPO_ROOT / "tests"))],
                                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True)
    return procs


def kernel_build_result(procs: dict[tuple[str, int], subprocess.Popen], isa: str, threads: int) -> dict:
    """The JSON object that the :func:`start_kernel_builds` process for ``isa`` and ``threads`` printed
    last. Skips where this CPU lacks ``isa``."""
    if (isa, threads) not in procs:
        pytest.skip("an x86-64 kernel")
    proc = procs[isa, threads]
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["isa"] != isa:
        pytest.skip(f"this CPU has no {isa} (got {result['isa']})")
    return result


@pytest.fixture(scope="session")
def run_experiment():
    """``run_experiment(name, *flags) -> CompletedProcess`` (text stdout/stderr)."""
    return _run_experiment


@pytest.fixture(scope="session")
def start_experiment():
    """``start_experiment(name, *flags) -> Popen``; collect with ``communicate()``."""
    return _start_experiment


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
    """``../shared/data`` beside the checkout (real data, never copied in); skips when absent."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


# -- the quick tier -----------------------------------------------------------------------------------
# `pytest -m "not slow"` is the plumbing and one reference check of each layer: configs, data,
# metrics, tasks, files, the loop, the NumPy references of the cell and layer. It leaves out what
# takes long on 2 cores (compilation, mostly): every test that starts an experiment as a separate
# process, the sweeps over every cell, implementation and kernel build, the multi-device files, and
# the longest in-process runs listed below. CI runs everything.
SLOW_FIXTURES = {"run_experiment", "start_experiment"}
SLOW_MODULES = {"test_experiments.py", "test_parallel.py", "test_kernels.py", "test_cell_variants.py",
                "test_native.py", "test_native_gru.py", "test_native_variants.py", "test_native_builds.py",
                "test_native_bidirectional.py", "test_sharded_kernels.py", "test_multiclass_models.py",
                "test_forecast_recipe.py", "test_cudnn.py", "test_fast.py", "test_dropout.py", "test_classify.py",
                "test_interop.py"}
SLOW_TESTS = {
    "test_train_and_evaluate.py": ("test_stacked_config", "test_recipe_budget", "test_csv_forecast",
                                   "test_a_trained_job_model"),
    "test_readme.py": ("test_python_api_block",),
    "test_loop.py": ("test_trainer_resume_continues", "test_fit_leaves", "test_profile_steps",
                     "test_every_parameter_changes", "test_nan_after_resume"),
    "test_cells.py": ("test_bptt_gradients_match_finite_differences",),
    "test_native.py": ("test_weight_gradient_partials", "test_huge_pages"),
    "test_cell_variants.py": ("test_every_cell_trains", "test_backward_matches_finite_differences",
                              "test_user_cell_registers_and_trains"),
    "test_dropout.py": ("test_classifier_trains_with_every_dropout",),
    "test_datasets.py": ("test_lstm_fcn_train_step_changes_every_parameter", "test_lstm_fcn_shape_and_lengths"),
}


# One check of each fast path stays in the quick tier, from the slow files above.
QUICK = {"test_fast.py::test_fast_matches_scan[False-False-False-fast]",
         "test_native.py::test_native_matches_the_xla_fast_path[False]",
         "test_native_gru.py::test_a_gru_layer_takes_the_native_kernels_and_matches_its_scan",
         "test_kernels.py::test_generic_fast_path_takes_a_users_subclass"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        if f"{module}::{item.name}" in QUICK:
            continue
        slow = (module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or any(item.name.startswith(prefix) for prefix in SLOW_TESTS.get(module, ())))
        if slow:
            item.add_marker(pytest.mark.slow)
