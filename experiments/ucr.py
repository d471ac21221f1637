"""A recipe on every dataset in a folder, and a results table against the published baselines.

    python -m experiments.ucr                                  # experiments.binary on ../shared/data/ucr
    python -m experiments.ucr --data_dir=DIR --datasets=ECG200,Earthquakes
    python -m experiments.ucr --experiment=classify --data_dir=../shared/data/multiclass
    python -m experiments.ucr --experiment=classify --data_dir=DIR --compare=lstm,bilstm,fcn,lstm_fcn,lstm_fcn_time

Each dataset is one run of exactly the command a user would type,
``python -m experiments.EXPERIMENT --dataset=ucr:NAME --data_dir=DIR`` (plus ``--compare`` and
``--flags``), in its own process and workdir ``<workdir>/NAME``; the wall time is that whole command,
start-up included. With ``--compare`` the table has one column per model (its test accuracy, from
``<workdir>/NAME/candidates/MODEL``), the recipe's column (the model chosen on validation data) and
which one that was. Every numeric column of the BASELINES.md beside --data_dir is a published column.
Below the rows: each column's mean accuracy and its mean rank (1 = best; ranked per dataset among the
columns with a figure there, ties sharing their mean rank).

Tables: ``<workdir>/results.md`` and ``results.csv``, the numbers in ``results.json``.

Over several machines: ``--shard=k/n`` (0 <= k < n) runs every n-th dataset from the k-th (sorted by
name) and writes ``results-shard-k-of-n.{md,csv,json}``; one process a shard, all with the same
--workdir, e.g. a SLURM job array ``--array=0-3`` with ``--shard=$SLURM_ARRAY_TASK_ID/4``. Then
``--merge`` (same --workdir) joins the partial tables into results.{md,csv,json}.
"""

from __future__ import annotations

import csv
import datetime
import glob
import io
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
from lstm_jax.data import archives
from lstm_jax.errors import ConfigError, DataError

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = ("binary", "classify")
RECIPE = "recipe"

FLAGS = flags.FLAGS


def find_datasets(data_dir: str) -> list[str]:
    """Sub-folders NAME of ``data_dir`` that hold NAME_TRAIN.tsv or NAME_TRAIN.ts, sorted."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} is not a folder")
    return sorted(n for n in os.listdir(data_dir)
                  if any(os.path.isfile(os.path.join(data_dir, n, f"{n}_TRAIN.{e}")) for e in ("tsv", "ts")))


def run_one(name: str, data_dir: str, workdir: str, extra: list[str], *, experiment: str = "binary",
            compare: str = "") -> dict:
    """One experiments.EXPERIMENT run; returns its row: accuracies, wall seconds, or the error line."""
    cmd = [sys.executable, "-m", f"experiments.{experiment}", f"--dataset=ucr:{name}", f"--data_dir={data_dir}",
           f"--workdir={workdir}", "--quiet", *([f"--compare={compare}"] if compare else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    row = {"dataset": name, "wall_seconds": time.perf_counter() - t0, "workdir": workdir, "acc": {}, "errors": {}}
    summary_path = os.path.join(workdir, "summary.json")
    if proc.returncode != 0 or not os.path.isfile(summary_path):
        row["errors"][RECIPE] = _error_line(proc.stderr, proc.returncode)
        return row
    with open(summary_path) as f:
        s = json.load(f)
    row["acc"][RECIPE] = s.get("test_accuracy")
    row.update({k: s.get(k) for k in ("test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_roc_auc_ovr",
                                      "test_roc_auc", "num_classes", "best_epoch", "epochs_trained")})
    if "chosen" in s:
        row["chosen"] = s["chosen"]
        row["candidates"] = {}
        for model, c in s["candidates"].items():
            with open(os.path.join(c["workdir"], "summary.json")) as f:
                cs = json.load(f)
            row["acc"][model] = cs.get("test_accuracy")
            row["candidates"][model] = {"val_accuracy": cs.get("val_accuracy"), "test_accuracy": cs.get("test_accuracy"),
                                        "wall_seconds": cs.get("wall_seconds")}
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


def parse_shard(spec: str) -> tuple[int, int]:
    """'k/n' -> (k, n) with 0 <= k < n (a SLURM job array --array=0-(n-1) passes k as its task id)."""
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must be k/n with integers 0 <= k < n, got {spec!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard must be k/n with 0 <= k < n, got {spec!r}")
    return k, n


def shard(names: list[str], k: int, n: int) -> list[str]:
    """Shard k of n: every n-th of the sorted names from the k-th, so shards are disjoint, cover every
    name, and differ in size by at most one."""
    return sorted(names)[k::n]


def ranks(values: list[float | None]) -> list[float | None]:
    """Rank 1 for the highest value; tied values share the mean of their ranks; None stays None."""
    present = sorted((v for v in values if v is not None), reverse=True)
    out = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        first = present.index(v) + 1
        last = len(present) - present[::-1].index(v)
        out.append((first + last) / 2)
    return out


def mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summary_rows(rows: list[dict], columns: list[str]) -> dict[str, dict[str, float | None]]:
    """Per column: the mean accuracy over the datasets that have a figure, the number of them, and
    the mean rank (ranked per dataset among the columns that have a figure there)."""
    per_set = [ranks([r["acc"].get(c) for c in columns]) for r in rows]
    out = {}
    for j, c in enumerate(columns):
        out[c] = {"mean": mean(r["acc"].get(c) for r in rows),
                  "sets": sum(r["acc"].get(c) is not None for r in rows),
                  "mean_rank": mean(rk[j] for rk in per_set)}
    return out


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict], columns: list[str], *, extra: list[str] = ()) -> str:
    """One line per dataset (accuracies in ``columns``, then the ``extra`` fields as they are), then
    the mean accuracy and the mean rank of each column."""
    head = ["dataset", *columns, *extra]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        accs = [f"error: {r['errors'][c]}" if c in r.get("errors", {}) else _fmt(r["acc"].get(c)) for c in columns]
        out.append("| " + " | ".join([r["dataset"], *accs, *(str(r.get(e, "")) for e in extra)]) + " |")
    s = summary_rows(rows, columns)
    n = len(rows)
    out.append("| " + " | ".join([f"**mean accuracy** ({n} sets)",
                                  *(_fmt(s[c]["mean"]) + ("" if s[c]["sets"] == n else f" ({s[c]['sets']} sets)")
                                    for c in columns), *([""] * len(extra))]) + " |")
    out.append("| " + " | ".join(["**mean rank**", *(_fmt(s[c]["mean_rank"], 2) for c in columns),
                                  *([""] * len(extra))]) + " |")
    return "\n".join(out) + "\n"


def to_csv(rows: list[dict], columns: list[str], *, extra: list[str] = ()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", *columns, *extra])
    for r in rows:
        w.writerow([r["dataset"], *("" if r["acc"].get(c) is None else f"{r['acc'][c]:.6f}" for c in columns),
                    *(r.get(e, "") for e in extra)])
    s = summary_rows(rows, columns)
    w.writerow(["mean accuracy", *("" if s[c]["mean"] is None else f"{s[c]['mean']:.6f}" for c in columns)])
    w.writerow(["mean rank", *("" if s[c]["mean_rank"] is None else f"{s[c]['mean_rank']:.4f}" for c in columns)])
    return buf.getvalue()


def merge(paths: list[str]) -> dict:
    """Partial results (each shard's json) -> one: rows sorted by dataset; a dataset in two shards or
    shards from different commands are DataErrors."""
    parts = []
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"no such file: {p}")
        with open(p) as f:
            try:
                parts.append(json.load(f))
            except json.JSONDecodeError as e:
                raise DataError(f"{p} is not a results file ({e})") from None
    commands = {p.get("command") for p in parts}
    if len(commands) > 1:
        raise DataError(f"the partial tables come from different commands ({' / '.join(sorted(map(str, commands)))}); "
                        f"merge the shards of one run only")
    rows, seen = [], {}
    for p, part in zip(paths, parts):
        for r in part["rows"]:
            if r["dataset"] in seen:
                raise DataError(f"{r['dataset']} is in both {seen[r['dataset']]} and {p}")
            seen[r["dataset"]] = p
            rows.append(r)
    return {**parts[0], "rows": sorted(rows, key=lambda r: r["dataset"]), "shard": None,
            "merged_from": [os.path.abspath(p) for p in paths]}


def columns_of(rows: list[dict], compare: str) -> list[str]:
    """The accuracy columns: each compared model, the recipe, then every published column."""
    models = [m.strip() for m in compare.split(",") if m.strip()]
    published = []
    for r in rows:
        for k in (r.get("baselines") or {}).keys():
            if k.lower() != "classes" and k not in published:
                published.append(k)
    return [*models, RECIPE, *published]


def with_baselines(row: dict) -> dict:
    """The row's published accuracies as columns (the 'classes' count is not an accuracy)."""
    row["acc"].update({k: v for k, v in (row.get("baselines") or {}).items() if k.lower() != "classes"})
    return row


def write_tables(root: str, stem: str, result: dict) -> str:
    """``<root>/<stem>.{md,csv,json}`` from ``result`` (command, date, columns, rows); returns the markdown."""
    columns, extra = result["columns"], result["extra"]
    md = table(result["rows"], columns, extra=extra)
    with open(os.path.join(root, f"{stem}.md"), "w") as f:
        f.write(f"`{result['command']}` ({result['date']})\n\n{md}")
    with open(os.path.join(root, f"{stem}.csv"), "w") as f:
        f.write(to_csv(result["rows"], columns, extra=extra))
    with open(os.path.join(root, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return md


def merge_shards(root: str) -> None:
    paths = sorted(glob.glob(os.path.join(root, "results-shard-*-of-*.json")))
    if not paths:
        raise DataError(f"--merge: no results-shard-*-of-*.json in {root}")
    counts = {re.search(r"-of-(\d+)\.json$", p).group(1) for p in paths}
    if len(counts) > 1:
        raise DataError(f"--merge: {root} holds shards of different splits (of {', '.join(sorted(counts))})")
    n = int(counts.pop())
    found = sorted(int(re.search(r"shard-(\d+)-of-", p).group(1)) for p in paths)
    if found != list(range(n)):
        missing = sorted(set(range(n)) - set(found))
        raise DataError(f"--merge: shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {n} "
                        f"missing in {root}")
    merged = merge(paths)
    merged["columns"] = columns_of(merged["rows"], merged.get("compare", ""))
    md = write_tables(root, "results", merged)
    print(md, end="")
    print(f"\nmerged {len(paths)} shards: {os.path.join(root, 'results.md')}")


def main(argv):
    if FLAGS.experiment not in EXPERIMENTS:
        raise ConfigError(f"--experiment must be one of {', '.join(EXPERIMENTS)}, got {FLAGS.experiment!r}")
    if FLAGS.compare and FLAGS.experiment != "classify":
        raise ConfigError("--compare needs --experiment=classify")
    root = os.path.abspath(FLAGS.workdir or common.default_workdir("ucr"))
    if FLAGS.merge:
        if not os.path.isdir(root):
            raise DataError(f"--merge: {root} is not a folder")
        return merge_shards(root)
    data_dir = os.path.abspath(FLAGS.data_dir)
    names = find_datasets(data_dir)
    if FLAGS.datasets:
        missing = sorted(set(FLAGS.datasets) - set(names))
        if missing:
            raise DataError(f"not in {data_dir}: {', '.join(missing)} (found: {', '.join(names) or 'none'})")
        names = [n for n in names if n in FLAGS.datasets]
    if not names:
        raise DataError(f"no UCR dataset (NAME/NAME_TRAIN.tsv or .ts) in {data_dir}")
    k, n = parse_shard(FLAGS.shard) if FLAGS.shard else (0, 1)
    names = shard(names, k, n)
    os.makedirs(root, exist_ok=True)
    extra = shlex.split(FLAGS.flags)
    command = (f"python -m experiments.ucr --experiment={FLAGS.experiment} --data_dir={FLAGS.data_dir}"
               + (f" --datasets={','.join(FLAGS.datasets)}" if FLAGS.datasets else "")
               + (f" --compare={FLAGS.compare}" if FLAGS.compare else "") + (f" --flags='{FLAGS.flags}'" if extra else ""))
    print(f"{len(names)} datasets from {data_dir}" + (f" (shard {k} of {n})" if n > 1 else "") + f"; runs in {root}",
          flush=True)
    rows = []
    for name in names:
        row = run_one(name, data_dir, os.path.join(root, name), extra, experiment=FLAGS.experiment,
                      compare=FLAGS.compare)
        row["baselines"] = archives.read_baselines(data_dir, name)
        rows.append(with_baselines(row))
        shown = (f"error: {row['errors'][RECIPE]}" if RECIPE in row["errors"]
                 else f"test accuracy {row['acc'][RECIPE]:.4f}" + (f" (chose {row['chosen']})" if "chosen" in row else ""))
        print(f"{name:32s} {shown}  ({row['wall_seconds']:.0f}s)", flush=True)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    extra_cols = (["chosen"] if FLAGS.compare else []) + ["wall_seconds"]
    for r in rows:
        r["wall_seconds"] = round(r["wall_seconds"])
    result = {"command": command, "date": stamp, "data_dir": data_dir, "experiment": FLAGS.experiment,
              "compare": FLAGS.compare, "shard": [k, n], "columns": columns_of(rows, FLAGS.compare),
              "extra": extra_cols, "rows": rows}
    stem = f"results-shard-{k}-of-{n}" if n > 1 else "results"
    md = write_tables(root, stem, result)
    print()
    print(md, end="")
    print(f"\nwritten: {os.path.join(root, stem + '.md')} (and .csv, .json)")
    if any(r["errors"] for r in rows):
        raise DataError(f"{sum(bool(r['errors']) for r in rows)} of {len(rows)} datasets failed; see the table")


def define_flags() -> None:
    flags.DEFINE_string("data_dir", str(REPO_ROOT.parent / "shared" / "data" / "ucr"),
                        "Folder of UCR datasets, one NAME/NAME_TRAIN.tsv (or .ts) each.")
    flags.DEFINE_list("datasets", [], "Only these datasets (default: every one found in --data_dir).")
    flags.DEFINE_string("workdir", None, "Where each run's workdir and the table go (default: runs/ucr-<time>).")
    flags.DEFINE_string("flags", "", "Extra flags for every run, e.g. '--seed=1'.")
    flags.DEFINE_string("experiment", "binary", "The front-end each dataset runs: binary or classify.")
    flags.DEFINE_string("compare", "", "classify: models each run trains and chooses among on validation, "
                                       "e.g. lstm,bilstm,fcn,lstm_fcn,lstm_fcn_time (one column each).")
    flags.DEFINE_string("shard", "", "k/n: only every n-th dataset from the k-th (0 <= k < n); partial tables.")
    flags.DEFINE_bool("merge", False, "Join the shards' partial tables in --workdir into one.")


if __name__ == "__main__":
    common.run(main, define=define_flags)
