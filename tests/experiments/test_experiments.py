"""The experiment front-ends end to end, as a user runs them: outputs, workdirs, resume, flag errors.

Each command-line run pays jax start-up and compilation, so the true command lines are few (the
seed program, the forecast, the benchmark, a bad flag and a bad shape), started together, and each
one is checked for everything it can show. The other runs go through the same front-end code in
this process (``front_end``: ``common.run`` with the module's flags and main, tests/harness.py),
which a separate process would prove nothing more about. In-process runs of ``train_and_evaluate``
alone are in tests/experiments/test_train_and_evaluate.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import jax
import pytest
from harness import run_front_end, snapshot

from lstm_jax.kernels import native

SMALL = ("--epochs=1", "--hidden_size=8")
BINARY_VARIANTS = {  # "basic" on the command line, the others in process
    "basic": (),
    "stacked": ("--stacked",),
    "bidirectional": ("--bidirectional",),
    # The same run as "bidirectional", from its config file with dotted overrides.
    "bidirectional_config": ("--config=experiments/configs/bidirectional.py", "--config.epochs=1",
                             "--config.model.hidden_size=8"),
}
BINARY_KEYS = ("test_accuracy", "test_loss", "val_accuracy", "wall_seconds", "num_devices", "config")
FORECAST_KEYS = ("val_mse", "wall_seconds", "num_devices", "config")
BENCH_IMPLS = ("lstm_jax:scan", "lstm_jax:xla", "lstm_jax:native", "lstm_jax:cudnn", "flax_nnx")
# benchmarks.inference's peers in the test (torch.compile and ONNX export of lstm_jax left out: their
# compilers and plugins cost seconds).
INFERENCE_IMPLS = ("lstm_jax", "lstm_jax:xla", "lstm_jax:step_fn", "lstm_jax:export", "torch", "onnxruntime:torch")


def collect(procs):
    """Waits for every started process; returns name -> (returncode, stdout, stderr)."""
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = (proc.returncode, stdout, stderr)
    return out


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_experiment):
    """One-epoch runs of every variant: the command lines started at once so that their start-ups
    overlap, the in-process runs while they run."""
    base = tmp_path_factory.mktemp("experiments")
    workdirs = {name: base / f"binary_{name}" for name in BINARY_VARIANTS}
    workdirs["forecast"] = base / "forecast"

    def flags(name):
        return (*(() if name.endswith("_config") else SMALL), *BINARY_VARIANTS[name], f"--workdir={workdirs[name]}")

    procs = {"basic": start_experiment("binary", *flags("basic"))}
    procs["forecast"] = start_experiment("forecast", *SMALL, f"--workdir={workdirs['forecast']}")
    workdirs["benchmark"] = base / "bench" / "tiny"
    procs["benchmark"] = start_experiment("benchmarks.benchmark", "--shapes=3x4x2x5", f"--impls={','.join(BENCH_IMPLS)}",
                                          "--rounds=2", "--warmup=0", "--peak_size=64",
                                          f"--out={workdirs['benchmark']}")
    procs["benchmark_bad_shape"] = start_experiment("benchmarks.benchmark", "--shapes=3x4x2")
    workdirs["inference"] = base / "bench" / "inference"
    procs["inference"] = start_experiment("benchmarks.inference", "--step_shapes=1x2x5", "--seq_shapes=3x4x2x5",
                                          "--train_shapes=3x4x2x5", f"--impls={','.join(INFERENCE_IMPLS)}",
                                          "--rounds=2", "--warmup=0", "--sample_ms=0", "--peak_size=64",
                                          f"--out={workdirs['inference']}")
    workdirs["benchmark_bad_shape"] = None
    workdirs["unknown_flag"] = base / "unknown_flag"
    procs["unknown_flag"] = start_experiment("binary", *BAD_FLAGS["unknown_flag"], f"--workdir={workdirs['unknown_flag']}")
    in_process = {}
    for name in BINARY_VARIANTS:
        if name != "basic":
            r = run_front_end("binary", *flags(name))
            in_process[name] = (r.returncode, r.stdout, r.stderr)
    results = {**collect(procs), **in_process}
    return {name: (*results[name], workdirs[name]) for name in results}


def assert_finished_run(rc, stdout, stderr, workdir, keys):
    assert rc == 0, f"exit {rc}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert "Traceback" not in stderr
    assert os.path.isfile(workdir / "metrics.jsonl")
    assert os.path.isdir(workdir / "checkpoints")
    assert any(n.isdigit() for n in os.listdir(workdir / "checkpoints"))
    summary = read_json(workdir / "summary.json")
    missing = [k for k in keys if k not in summary]
    assert not missing, f"summary.json lacks {missing}"
    assert summary["num_devices"] == jax.device_count()
    assert summary["wall_seconds"] > 0
    return summary


@pytest.mark.parametrize("variant", list(BINARY_VARIANTS))
def test_binary_runs_end_to_end(runs, variant):
    rc, stdout, stderr, workdir = runs[variant]
    summary = assert_finished_run(rc, stdout, stderr, workdir, BINARY_KEYS)
    m = re.search(r"test accuracy: ([0-9.]+)", stdout)
    assert m, stdout
    assert float(m.group(1)) == pytest.approx(summary["test_accuracy"], abs=5e-5)
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and 0.0 <= summary["val_accuracy"] <= 1.0
    assert [r["epoch"] for r in read_metrics(workdir)] == [1]
    assert os.path.isdir(workdir / "checkpoints" / "1")

    model = summary["config"]["model"]
    assert summary["config"]["epochs"] == 1
    if variant == "stacked":
        # The seed's stacked model: LSTM(2h) -> Dropout(0.2) -> LSTM(h).
        assert model["hidden_size"] == [16, 8] and model["num_layers"] == 2 and model["dropout"] == 0.2
    else:
        assert model["hidden_size"] == [8] and model["num_layers"] == 1
    assert model["bidirectional"] == variant.startswith("bidirectional")
    assert os.path.isfile(workdir / "config.json") and os.path.isfile(workdir / "confusion_matrix.png")
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir))


def test_config_file_and_shortcut_flags_give_the_same_run(runs):
    """--config=bidirectional.py with dotted overrides is --bidirectional with short flags."""
    by_flags = read_json(runs["bidirectional"][3] / "summary.json")
    by_file = read_json(runs["bidirectional_config"][3] / "summary.json")
    assert by_file["test_accuracy"] == by_flags["test_accuracy"]
    assert by_file["test_loss"] == pytest.approx(by_flags["test_loss"], rel=1e-6)
    assert by_file["config"] == by_flags["config"]
    assert by_file["config_source"]["file"].endswith("bidirectional.py")
    assert by_file["config_source"]["overrides"] == {"epochs": 1, "model.hidden_size": [8]}
    assert by_flags["config_source"]["overrides"] == {"epochs": 1, "model.bidirectional": True,
                                                      "model.hidden_size": [8]}


def test_forecast_runs_end_to_end(runs):
    rc, stdout, stderr, workdir = runs["forecast"]
    summary = assert_finished_run(rc, stdout, stderr, workdir, FORECAST_KEYS)
    m = re.search(r"val_mse: (\S+)", stdout)
    assert m, stdout
    assert float(m.group(1)) == pytest.approx(summary["val_mse"], rel=1e-3)
    assert summary["val_mse"] >= 0
    assert len(summary["first_predictions"]) == 10
    assert len(re.findall(r"predicted [+-][0-9.]+\s+actual [+-][0-9.]+", stdout)) == 10
    assert [r["epoch"] for r in read_metrics(workdir)] == [1]
    assert summary["config"]["model"]["hidden_size"] == [8]


def test_benchmark_runs_end_to_end(runs):
    rc, stdout, stderr, out = runs["benchmark"]
    assert rc == 0, f"exit {rc}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    report = read_json(f"{out}.json")
    assert report["command"].startswith("python -m benchmarks.benchmark --shapes=3x4x2x5 "), report["command"]
    ran = {(r["impl"], r["mode"]) for r in report["results"]}
    expected_skips = {"lstm_jax:cudnn"} if jax.default_backend() != "gpu" else set()
    if not native.available():
        expected_skips.add("lstm_jax:native")
    assert set(report["skipped"]) == expected_skips
    assert ran == {(i, m) for i in BENCH_IMPLS if i not in expected_skips for m in ("train", "forward")}
    for r in report["results"]:
        assert r["median_ms"] > 0 and r["gflops"] > 0 and r["rounds"] == 2
        assert r["shape"] == {"B": 3, "T": 4, "I": 2, "H": 5}
    with open(f"{out}.md") as f:
        table = f.read()
    assert report["command"] in table
    for impl in {i for i, _ in ran}:
        assert re.search(rf"^\| {re.escape(impl)} \| [0-9.]+ \| [0-9.]+ \|", table, re.M), impl


def test_inference_benchmark_runs_end_to_end(runs):
    """Every section and peer ran or is listed as skipped, with the same threads everywhere."""
    rc, stdout, stderr, out = runs["inference"]
    assert rc == 0, f"exit {rc}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    report = read_json(f"{out}.json")
    assert report["command"].startswith("python -m benchmarks.inference --step_shapes=1x2x5 "), report["command"]
    expected = {"dispatch": {"jax: jit identity", "jax: jit, the step's arguments", "torch", "onnxruntime"},
                "step": {"lstm_jax", "lstm_jax:step_fn", "lstm_jax:export", "torch", "onnxruntime:torch"},
                "sequence": {"lstm_jax", "lstm_jax:xla", "lstm_jax:export", "torch", "onnxruntime:torch"},
                "train": {"lstm_jax", "lstm_jax:xla", "torch"}}
    for section, peers in expected.items():
        rows = [r for r in report["results"] if r["section"] == section]
        ran = {r["impl"] if section != "dispatch" or r["impl"].startswith("jax") else r["impl"].split(":")[0]
               for r in rows}
        skipped = {k.split(": ", 1)[1] for k in report["skipped"] if k.startswith(section + ": ")}
        assert ran | skipped == peers and not ran & skipped, (section, ran, skipped)
        for r in rows:
            assert r["median_ms"] > 0 and r["rounds"] == 2 and r["calls_per_sample"] == 1
            assert r["shape"]["B"] == (1 if section in ("dispatch", "step") else 3)
            assert section == "dispatch" or r["gflops"] > 0
    lstm_jax = {(r["section"], r["impl"]): r["path"] for r in report["results"] if r["impl"].startswith("lstm_jax")}
    assert lstm_jax[("sequence", "lstm_jax:xla")] == "xla" and lstm_jax[("sequence", "lstm_jax:export")] == "scan"
    assert lstm_jax[("sequence", "lstm_jax")] == ("native" if native.available() else "xla")
    threads = report["threads"]
    counts = {k: v for k, v in threads.items() if k not in ("torch_interop", "xla_cpu_pool")}
    assert len(set(counts.values())) == 1, threads
    with open(f"{out}.md") as f:
        table = f.read()
    assert report["command"] in table
    for r in report["results"]:
        assert re.search(rf"^\| {re.escape(r['impl'])}( \([a-z ]+\))? \| [0-9.]+ \|", table, re.M), r["impl"]


def test_benchmark_bad_shape_gives_one_error_line(runs):
    rc, stdout, stderr, _ = runs["benchmark_bad_shape"]
    assert rc != 0
    lines = stderr.strip().splitlines()
    assert lines == ["error: a shape is BxTxIxH, four positive integers, got '3x4x2'"], stderr
    assert "Traceback" not in stdout


def used_workdir(runs, tmp_path):
    """A copy of the basic run's finished workdir, and a snapshot of it."""
    rc, _, _, original = runs["basic"]
    assert rc == 0
    workdir = tmp_path / "wd"
    shutil.copytree(original, workdir)
    return workdir, snapshot(workdir)


def test_used_workdir_is_refused_then_resume_continues(runs, tmp_path):
    workdir, before = used_workdir(runs, tmp_path)

    refused = run_front_end("binary", *SMALL, f"--workdir={workdir}")
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), refused.stderr
    assert "--resume" in lines[0]
    assert "Traceback" not in refused.stderr + refused.stdout
    assert snapshot(workdir) == before

    resumed = run_front_end("binary", "--epochs=2", "--hidden_size=8", "--resume", f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "test accuracy:" in resumed.stdout
    # Only epoch 2 is trained: one new epoch line, and each epoch appears once in the metrics.
    assert len(re.findall(r"^epoch\s+\d+/2", resumed.stdout, re.M)) == 1
    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == read_metrics(runs["basic"][3])[0]
    summary = read_json(workdir / "summary.json")
    assert summary["epochs_trained"] == 2
    assert summary["steps"] == 2 * records[0]["step"]


BAD_FLAGS = {
    "negative_epochs": ("--epochs=-1",),
    "zero_hidden": ("--hidden_size=0",),
    "dropout_one": ("--dropout=1.0",),
    "negative_dropout": ("--dropout=-0.1",),
    "epochs_not_int": ("--epochs=abc",),
    "unknown_dataset": ("--dataset=no_such_dataset",),
    "unknown_flag": ("--no_such_flag=1",),
    "unknown_config_field": ("--config.model.no_such_field=1",),
    "missing_config_file": ("--config=experiments/configs/no_such_config.py",),
    "flag_and_override_clash": ("--epochs=2", "--config.epochs=3"),
    "forecast_flag_in_binary": ("--window=10",),
    "unknown_cell": ("--cell=no_such_cell",),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_give_one_error_line(case, tmp_path):
    """In process; "unknown_flag" also on the command line (test_a_bad_flag_on_the_command_line)."""
    workdir = tmp_path / case
    out = run_front_end("binary", *BAD_FLAGS[case], f"--workdir={workdir}")
    assert_one_error_line(out.returncode, out.stdout, out.stderr, workdir)


def test_a_bad_flag_on_the_command_line(runs):
    assert_one_error_line(*runs["unknown_flag"])


def assert_one_error_line(rc, stdout, stderr, workdir):
    assert rc != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr + stdout
    assert not os.path.exists(workdir), "a refused run must not create its workdir"


def test_a_file_as_workdir_is_refused_in_one_line(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("my notes")
    out = run_front_end("binary", *SMALL, f"--workdir={path}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: --workdir {path} is a file, not a folder; choose another --workdir"]
    assert path.read_text() == "my notes"


def test_resume_with_another_config_is_refused_naming_the_field(runs, tmp_path):
    workdir, before = used_workdir(runs, tmp_path)
    out = run_front_end("binary", "--epochs=2", "--hidden_size=8", "--learning_rate=0.01", "--resume",
                        f"--workdir={workdir}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "learning_rate" in lines[0] and "only the number of epochs may change" in lines[0]
    assert snapshot(workdir) == before
