"""The four seed programs, each run as its own command, and a table of what they reached.

    python -m experiments.seeds                 # all four, into runs/seeds-<time>/<program>/
    python -m experiments.seeds --only=forecast --epochs=2

The seeds are the Keras programs this project started from: LSTM(50), stacked LSTM(100) ->
LSTM(50) and Bidirectional(LSTM(50)) binary classifiers with relu activation, then the sine
forecaster. Each runs as ``python -m experiments.<name> ...`` in a fresh process with its own
workdir, so the wall time includes start-up and compilation, as a user sees it. The table (markdown)
is printed and written to results.md beside the workdirs, with results.json; each command's output
goes to <program>.log. Exits non-zero if any program failed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from typing import NamedTuple

from absl import flags

from experiments import common
from lstm_jax.errors import ConfigError


class Seed(NamedTuple):
    name: str
    module: str
    flags: tuple[str, ...]
    metric: str  # key in summary.json


SEEDS = (
    Seed("basic", "experiments.binary", ("--activation=relu",), "test_accuracy"),
    Seed("stacked", "experiments.binary", ("--stacked", "--activation=relu"), "test_accuracy"),
    Seed("bidirectional", "experiments.binary", ("--bidirectional", "--activation=relu"), "test_accuracy"),
    Seed("forecast", "experiments.forecast", (), "val_mse"),
)

FLAGS = flags.FLAGS


def extra_flags() -> list[str]:
    return [f"--{name}={FLAGS[name].value}" for name in ("epochs", "seed") if FLAGS[name].value is not None]


def run_one(seed: Seed, parent: str) -> dict:
    """Runs one program to completion; returns its row of the table."""
    args = ["-m", seed.module, *seed.flags, *extra_flags()]
    shown = ["python", *args]
    argv = [sys.executable, *args, f"--workdir={os.path.join(parent, seed.name)}"]
    log_path = os.path.join(parent, f"{seed.name}.log")
    print(f"[{seed.name}] {shlex.join(shown)}", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    row = {"program": seed.name, "command": shlex.join(shown), "metric": seed.metric,
           "value": None, "wall_seconds": wall, "fit_seconds": None, "exit_code": rc, "log": log_path}
    if rc == 0:
        with open(os.path.join(parent, seed.name, "summary.json")) as f:
            summary = json.load(f)
        row.update(value=summary[seed.metric], fit_seconds=summary["wall_seconds"])
        print(f"[{seed.name}] {seed.metric} {row['value']:.4g} in {wall:.1f}s", flush=True)
    else:
        with open(log_path) as f:
            tail = f.read().splitlines()[-15:]
        print(f"[{seed.name}] FAILED with exit code {rc}; the end of {log_path}:", file=sys.stderr)
        print("\n".join(f"    {line}" for line in tail), file=sys.stderr, flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| program | command | metric | value | wall s | fit s |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r['value']:.4g}" if r["exit_code"] == 0 else f"FAILED (exit {r['exit_code']})"
        fit = f"{r['fit_seconds']:.1f}" if r["fit_seconds"] is not None else "-"
        lines.append(f"| {r['program']} | `{r['command']}` | {r['metric']} | {value} | {r['wall_seconds']:.1f} | {fit} |")
    return "\n".join(lines)


def main(argv):
    by_name = {s.name: s for s in SEEDS}
    unknown = [n for n in FLAGS.only if n not in by_name]
    if unknown:
        raise ConfigError(f"--only: unknown program {', '.join(unknown)}; choose from {', '.join(by_name)}")
    parent = os.path.abspath(FLAGS.workdir or common.default_workdir("seeds"))
    if os.path.isdir(parent) and os.listdir(parent):
        raise ConfigError(f"{parent} is not empty; choose another --workdir")
    os.makedirs(parent, exist_ok=True)
    print(f"workdir: {parent}", flush=True)
    rows = [run_one(by_name[n], parent) for n in FLAGS.only]
    text = table(rows)
    with open(os.path.join(parent, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(parent, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print()
    print(text)
    failed = [r["program"] for r in rows if r["exit_code"] != 0]
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Parent of the four workdirs (default: a fresh runs/seeds-<time>).")
    flags.DEFINE_list("only", [s.name for s in SEEDS], "Which programs to run, in this order.")
    flags.DEFINE_integer("epochs", None, "Passed to every program as --epochs (default: each program's own).")
    flags.DEFINE_integer("seed", None, "Passed to every program as --seed (default: each program's own, 0).")


if __name__ == "__main__":
    common.run(main, define=define_flags)
