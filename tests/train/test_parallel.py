"""Data parallelism, multi-process jobs, exact resume and checkpoint safety, end to end.

The multi-device and multi-process runs are subprocesses, because the device count is fixed when
jax starts; their one-device references, the resumed runs and the refused ones run in this
process through the same front-end code (``run_front_end``, tests/harness.py), while the
subprocesses run.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from harness import run_front_end

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(module: str, *args: str, devices: int = 1, timeout: float = 300, wait: bool = True):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", f"experiments.{module}", "--quiet", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    return finish(proc, module, *args, devices=devices, timeout=timeout)


def finish(proc: subprocess.Popen, module: str, *args: str, devices: int, timeout: float = 300):
    """Waits for a :func:`run` started with ``wait=False``; a run that XLA:CPU aborted in a collective
    is run once more."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode == -signal.SIGABRT and "rendezvous" in err and devices > 1:
        # XLA:CPU aborts an in-process all-reduce whose forced-device threads do not all arrive in
        # time, which a starved 2-core machine can cause; that is the runtime, not our code: run once
        # more, into a workdir emptied of what the aborted run wrote.
        for a in args:
            if a.startswith("--workdir="):
                shutil.rmtree(a.split("=", 1)[1], ignore_errors=True)
        return run(module, *args, devices=devices, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def summary(workdir) -> dict:
    return json.loads((pathlib.Path(workdir) / "summary.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]


class OneDeviceRun:
    """The reference: ``module`` for one epoch on this process's one device, run in process when a
    test first asks for its :meth:`summary` (after starting its own subprocesses, so the two overlap)."""

    def __init__(self, tmp_path_factory, module: str):
        self.wd = tmp_path_factory.mktemp(f"one_{module}") / "run"
        self.module = module
        self._summary = None

    def summary(self) -> dict:
        if self._summary is None:
            proc = run_front_end(self.module, "--quiet", "--epochs=1", f"--workdir={self.wd}")
            assert proc.returncode == 0, proc.stderr
            self._summary = summary(self.wd)
        return self._summary


@pytest.fixture(scope="module")
def one_device_forecast(tmp_path_factory):
    return OneDeviceRun(tmp_path_factory, "forecast")


def test_four_devices_match_one(one_device_forecast, tmp_path):
    """The seed forecaster on four CPU devices against one (the reference the two-process test and
    the refusal tests below share: one in-process run for all of them)."""
    args = ("--epochs=1", f"--workdir={tmp_path / 'run'}")
    proc = run("forecast", *args, devices=4, wait=False)
    one = one_device_forecast.summary()
    done = finish(proc, "forecast", *args, devices=4)
    assert done.returncode == 0, done.stderr
    four = summary(tmp_path / "run")
    assert four["num_devices"] == 4 and one["num_devices"] == 1
    assert four["val_mse"] == pytest.approx(one["val_mse"], rel=1e-4)


def test_two_processes_match_one(one_device_forecast, tmp_path):
    """Two processes on localhost, two CPU devices each, train the same job as one device.

    The forecast job keeps cross-process collectives few (24 steps), so a loaded machine stays quick.
    """
    port = free_port()
    wd = tmp_path / "run"
    procs = [
        run("forecast", "--epochs=1", f"--workdir={wd}", f"--coordinator_address=localhost:{port}",
            "--num_processes=2", f"--process_id={k}", devices=2, wait=False)
        for k in range(2)
    ]
    try:
        one = one_device_forecast.summary()
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:  # never leave a half of the job waiting on its peer
            p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    s = summary(wd)
    assert (s["num_processes"], s["num_devices"]) == (2, 4)
    assert s["val_mse"] == pytest.approx(one["val_mse"], rel=1e-4)
    # One report per job (gloo's own C++ notes on stdout are not ours to silence).
    assert "val_mse" in results[0][0] and "val_mse" not in results[1][0]


def test_batch_must_divide_by_devices(tmp_path):
    proc = run("binary", "--epochs=1", "--batch_size=30", f"--workdir={tmp_path / 'run'}", devices=4)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error:") and "divide" in lines[0]


def test_exact_resume(tmp_path):
    """Four epochs straight, and two then two more after a resume: the same model (in process)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    for epochs, wd in ((4, straight), (2, split)):
        proc = run_front_end("forecast", "--quiet", f"--epochs={epochs}", f"--workdir={wd}")
        assert proc.returncode == 0, proc.stderr
    proc = run_front_end("forecast", "--quiet", "--epochs=4", "--resume", f"--workdir={split}")
    assert proc.returncode == 0, proc.stderr
    a, b = summary(straight)["val_mse"], summary(split)["val_mse"]
    assert b == pytest.approx(a, rel=1e-6)
    epochs = [json.loads(line)["epoch"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def _snapshot(path: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _copy_of_one_device_forecast(ref: OneDeviceRun, tmp_path) -> pathlib.Path:
    """A finished one-epoch forecast workdir of the test's own: a copy of the reference run's."""
    ref.summary()  # runs it, once
    wd = tmp_path / "run"
    shutil.copytree(ref.wd, wd)
    return wd


def test_corrupted_checkpoint_is_refused_and_kept(one_device_forecast, tmp_path):
    wd = _copy_of_one_device_forecast(one_device_forecast, tmp_path)
    ckpt = wd / "checkpoints"
    victims = [p for p in ckpt.rglob("*") if p.is_file() and p.stat().st_size > 64 and "state" in p.parts]
    assert victims, "expected array files in the checkpoint"
    for p in victims:  # truncate every array file, as a full disk or killed copy would
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    before = _snapshot(wd)
    proc = run_front_end("forecast", "--quiet", "--epochs=2", "--resume", f"--workdir={wd}")
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error:") and "unreadable" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(wd) == before


def test_used_workdir_is_refused_without_resume(one_device_forecast, tmp_path):
    wd = _copy_of_one_device_forecast(one_device_forecast, tmp_path)
    before = _snapshot(wd)
    proc = run_front_end("forecast", "--quiet", "--epochs=1", f"--workdir={wd}")
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and "already holds a run" in lines[0]
    assert _snapshot(wd) == before
