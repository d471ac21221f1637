"""The UCR recipe on every dataset in a folder, and a results table against the published baselines.

    python -m experiments.ucr                                  # every set in ../shared/data/ucr
    python -m experiments.ucr --data_dir=DIR --datasets=ECG200,Earthquakes

Each dataset is one run of exactly the command a user would type,
``python -m experiments.binary --dataset=ucr:NAME --data_dir=DIR`` (plus ``--flags``), in its own
process and workdir ``<workdir>/NAME``; the wall time is that whole command, start-up included.
The table (markdown) is printed and written to ``<workdir>/results.md``, the numbers to
``<workdir>/results.json``. Published columns come from the BASELINES.md beside --data_dir.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

from absl import flags

from experiments import common
from lstm_jax import datasets
from lstm_jax.errors import DataError

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLISHED = ("1NN-DTW", "FCN", "LSTM-FCN")

FLAGS = flags.FLAGS


def find_datasets(data_dir: str) -> list[str]:
    """Sub-folders NAME of ``data_dir`` that hold NAME_TRAIN.tsv or NAME_TRAIN.ts, sorted."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} is not a folder")
    return sorted(n for n in os.listdir(data_dir)
                  if any(os.path.isfile(os.path.join(data_dir, n, f"{n}_TRAIN.{e}")) for e in ("tsv", "ts")))


def run_one(name: str, data_dir: str, workdir: str, extra: list[str]) -> dict:
    """One experiments.binary run; returns its row: accuracy, wall seconds, or the error line."""
    cmd = [sys.executable, "-m", "experiments.binary", f"--dataset=ucr:{name}", f"--data_dir={data_dir}",
           f"--workdir={workdir}", "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    row = {"dataset": name, "wall_seconds": time.perf_counter() - t0, "workdir": workdir}
    summary_path = os.path.join(workdir, "summary.json")
    if proc.returncode != 0 or not os.path.isfile(summary_path):
        row["error"] = _error_line(proc.stderr, proc.returncode)
        return row
    with open(summary_path) as f:
        s = json.load(f)
    row.update({k: s.get(k) for k in ("test_accuracy", "test_roc_auc", "test_f1", "best_epoch", "epochs_trained")})
    return row


def _error_line(stderr: str, returncode: int) -> str:
    """The line of a failed run's stderr that names the problem: our one-line 'error: ...', else the
    exception line of a traceback, else the last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for pick in (lambda ln: ln.startswith("error:"),
                 lambda ln: re.match(r"^[\w.]+(Error|Exception)\b", ln) is not None):
        hits = [ln for ln in lines if pick(ln)]
        if hits:
            return hits[-1].removeprefix("error:").strip()
    return lines[-1] if lines else f"exit status {returncode}"


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _mean(values) -> tuple[float | None, int]:
    vals = [v for v in values if v is not None]
    return (sum(vals) / len(vals) if vals else None), len(vals)


def table(rows: list[dict], data_dir: str) -> str:
    """Markdown: one row per dataset, then the means (a column's mean over the sets that have a figure)."""
    head = ["dataset", "test accuracy", *PUBLISHED, "wall s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pub = r.get("baselines") or {}
        acc = f"error: {r['error']}" if "error" in r else _fmt(r["test_accuracy"])
        out.append("| " + " | ".join([r["dataset"], acc, *(_fmt(pub.get(k)) for k in PUBLISHED),
                                      f"{r['wall_seconds']:.0f}"]) + " |")
    n = len(rows)
    cells = []
    for values in ([r.get("test_accuracy") for r in rows],
                   *([(r.get("baselines") or {}).get(k) for r in rows] for k in PUBLISHED)):
        m, k = _mean(values)
        cells.append(_fmt(m) + ("" if k == n else f" ({k} sets)"))
    total = sum(r["wall_seconds"] for r in rows)
    out.append("| " + " | ".join([f"**mean** ({n} sets)", *cells, f"{total:.0f} total"]) + " |")
    return "\n".join(out) + "\n"


def main(argv):
    data_dir = os.path.abspath(FLAGS.data_dir)
    names = find_datasets(data_dir)
    if FLAGS.datasets:
        missing = sorted(set(FLAGS.datasets) - set(names))
        if missing:
            raise DataError(f"not in {data_dir}: {', '.join(missing)} (found: {', '.join(names) or 'none'})")
        names = [n for n in names if n in FLAGS.datasets]
    if not names:
        raise DataError(f"no UCR dataset (NAME/NAME_TRAIN.tsv or .ts) in {data_dir}")
    root = os.path.abspath(FLAGS.workdir or common.default_workdir("ucr"))
    os.makedirs(root, exist_ok=True)
    extra = shlex.split(FLAGS.flags)
    command = f"python -m experiments.ucr --data_dir={FLAGS.data_dir}" + (f" --flags='{FLAGS.flags}'" if extra else "")
    print(f"{len(names)} datasets from {data_dir}; runs in {root}", flush=True)
    rows = []
    for name in names:
        row = run_one(name, data_dir, os.path.join(root, name), extra)
        row["baselines"] = datasets.read_baselines(data_dir, name)
        rows.append(row)
        shown = f"error: {row['error']}" if "error" in row else f"test accuracy {row['test_accuracy']:.4f}"
        print(f"{name:32s} {shown}  ({row['wall_seconds']:.0f}s)", flush=True)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    md = table(rows, data_dir)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(f"`{command}` ({stamp})\n\n{md}")
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({"command": command, "date": stamp, "data_dir": data_dir, "rows": rows}, f, indent=2)
    print()
    print(md, end="")
    print(f"\nwritten: {os.path.join(root, 'results.md')}")
    if any("error" in r for r in rows):
        raise DataError(f"{sum('error' in r for r in rows)} of {len(rows)} datasets failed; see the table")


def define_flags() -> None:
    flags.DEFINE_string("data_dir", str(REPO_ROOT.parent / "shared" / "data" / "ucr"),
                        "Folder of UCR datasets, one NAME/NAME_TRAIN.tsv (or .ts) each.")
    flags.DEFINE_list("datasets", [], "Only these datasets (default: every one found in --data_dir).")
    flags.DEFINE_string("workdir", None, "Where each run's workdir and the table go (default: runs/ucr-<time>).")
    flags.DEFINE_string("flags", "", "Extra flags for every experiments.binary run, e.g. '--seed=1'.")


if __name__ == "__main__":
    common.run(main, define=define_flags)
