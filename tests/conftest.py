"""Shared fixtures (float32 JAX, the NumPy reference, experiment subprocesses, the real data) and
the quick tier's marks. The helpers themselves are in tests/harness.py."""

from __future__ import annotations

import os
import shutil
import tempfile

import harness
import jax
import pytest
from study.postgres import postgres_url  # noqa: F401  (the session's PostgreSQL, tests/study/postgres.py)

# Every test runs in float32 unless it opts into float64 with ``jax.enable_x64(True)`` locally.
jax.config.update("jax_enable_x64", False)

# One persistent XLA compilation cache for the run, empty at its start and removed at its end: a
# program that several tests or processes compile (the same model in a subprocess and in process,
# the same step in every ISA build) is compiled once. Front-ends read LSTM_JAX_COMPILATION_CACHE,
# any other jax process the JAX_* variables.
_XLA_CACHE = tempfile.mkdtemp(prefix="lstm_jax-tests-xla-")
os.environ.update({"LSTM_JAX_COMPILATION_CACHE": _XLA_CACHE, "JAX_COMPILATION_CACHE_DIR": _XLA_CACHE,
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture
def np_reference():
    """The NumPy LSTM reference and a weight extractor: ``(np_lstm, cell_weights)``."""
    return harness.np_lstm, harness.cell_weights


@pytest.fixture(scope="session")
def run_experiment():
    """``run_experiment(name, *flags) -> CompletedProcess`` (text stdout/stderr)."""
    return harness.run_experiment


@pytest.fixture(scope="session")
def start_experiment():
    """``start_experiment(name, *flags) -> Popen``; collect with ``communicate()``."""
    return harness.start_experiment


@pytest.fixture(scope="session")
def shared_data_dir():
    """``../shared/data`` beside the checkout (real data, never copied in); skips when absent."""
    path = harness.REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


# -- the quick tier -----------------------------------------------------------------------------------
# `pytest -m "not slow"` is the plumbing and one reference check of each layer: configs, data,
# metrics, tasks, files, the loop, the NumPy references of the cell and layer. It leaves out what
# takes long on 2 cores (compilation, mostly): every test that starts an experiment as a separate
# process, the in-process end-to-end runs, the sweeps over every cell, implementation and kernel build, the multi-device files, and
# the longest in-process runs listed below. CI runs everything.
SLOW_FIXTURES = {"run_experiment", "start_experiment"}
SLOW_MODULES = {"test_parallel.py", "test_kernels.py", "test_cell_variants.py",
                "test_native.py", "test_native_gru.py", "test_native_variants.py", "test_native_builds.py",
                "test_native_bidirectional.py", "test_sharded_kernels.py", "test_multiclass_models.py",
                "test_forecast_recipe.py", "test_cudnn.py", "test_xla.py", "test_paths.py", "test_dropout.py", "test_classify.py",
                "test_interop.py", "test_postgres.py"}
SLOW_TESTS = {
    "test_train_and_evaluate.py": ("test_stacked_config", "test_recipe_budget", "test_csv_forecast",
                                   "test_a_trained_job_model"),
    "test_readme.py": ("test_python_api_block",),
    "test_loop.py": ("test_trainer_resume_continues", "test_fit_leaves", "test_profile_steps",
                     "test_every_parameter_changes", "test_nan_after_resume", "test_select_last", "test_on_epoch"),
    "test_cells.py": ("test_bptt_gradients_match_finite_differences",),
    "test_native.py": ("test_weight_gradient_partials", "test_huge_pages"),
    "test_cell_variants.py": ("test_every_cell_trains", "test_backward_matches_finite_differences",
                              "test_user_cell_registers_and_trains"),
    "test_dropout.py": ("test_classifier_trains_with_every_dropout",),
    "test_datasets.py": ("test_lstm_fcn_train_step_changes_every_parameter", "test_lstm_fcn_shape_and_lengths",
                         "test_lstm_fcn_config_errors",
                         "test_binary_recipe_yields_to_flags", "test_binary_on_a_real_ucr_set"),
    "test_series.py": ("test_csv_forecast_end_to_end",),
    "test_export.py": ("test_bad_requests",),
    "test_study.py": ("test_quick_study", "test_a_worker_killed", "test_report_on_a_study", "test_the_engine",
                      "test_stopping", "test_a_pruner"),
    "test_report.py": ("test_write_report_categorical", "test_write_report_end_to_end"),
    "test_run.py": ("test_a_reloaded", "test_predict_front_end", "test_bad_input_is_one_line", "test_export_front_end", "test_the_readme_block"),
}


# One check of each fast path stays in the quick tier, from the slow files above.
QUICK = {"test_paths.py::test_path_matches_the_scan[xla-lstm-fwd-full-carry_none]",
         "test_native.py::test_native_matches_the_xla_fast_path[False]",
         "test_paths.py::test_path_matches_the_scan[native-gru-fwd-lengths-carry_given]",
         "test_paths.py::test_path_matches_the_scan[xla-gru-fwd-lengths-carry_given]"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        if f"{module}::{item.name}" in QUICK:
            continue
        slow = (module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or any(item.name.startswith(prefix) for prefix in SLOW_TESTS.get(module, ())))
        if slow:
            item.add_marker(pytest.mark.slow)
