"""Every registered cell, several seeds, one table: the ablation runner.

    python -m experiments.ablation                       # all cells x 3 seeds: synthetic + ECG200
    python -m experiments.ablation --cells=lstm,gru --seeds=2 --datasets=synthetic

For each dataset and cell: mean ± std of test accuracy over seeds, parameter count, and the median
time of one training step (after compilation). Runs train in this process, one workdir each under
--workdir; the tables land there as ablation.md and ablation.csv. Datasets that need files
(ucr:NAME) are skipped with a note when --data_dir does not hold them.
Expected on 2 CPU cores: about 10 minutes for the defaults.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import time

import jax
import numpy as np
from absl import flags
from flax import nnx

from experiments import common
from experiments.configs import base
from experiments.train import train_and_evaluate
from lstm_jax.errors import DataError
from lstm_jax.nn.cells import CELLS

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS


def param_count(model: nnx.Module) -> int:
    return sum(int(np.size(v)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def load(spec: str, seed: int):
    from lstm_jax.data.archives import load_binary

    return load_binary(spec, FLAGS.data_dir, seed=seed, znorm=spec.startswith("ucr:"))


def run_config(spec: str, cell: str, seed: int):
    """The binary experiment's config for one (dataset, cell, seed) of the ablation."""
    return base.binary(dataset=spec, data_dir=FLAGS.data_dir, seed=seed, epochs=FLAGS.epochs,
                       batch_size=FLAGS.batch_size, data={"znorm": spec.startswith("ucr:"), "val_fraction": 0.2,
                                                          "min_epoch_rows": 0},
                       model=base.model(cell=cell, hidden_size=(FLAGS.hidden_size,)))


def run_one(spec: str, cell: str, seed: int, workdir: str) -> dict:
    from experiments import binary

    config = run_config(spec, cell, seed)
    params = param_count(binary.build(config).model)
    summary = train_and_evaluate(config, workdir, log=lambda _: None)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        history = [json.loads(line) for line in f if line.strip()]
    steps = summary["steps"] // summary["epochs_trained"]
    # The first epoch includes compilation; later ones time the step itself.
    seconds = [r["train_seconds"] for r in history[1:]] or [history[0]["train_seconds"]]
    return {"test_accuracy": summary["test_accuracy"], "params": params, "ms_per_step": 1e3 * float(np.median(seconds)) / steps}


def table(rows: list[dict]) -> tuple[str, str]:
    """Per (dataset, cell): mean ± std accuracy over seeds. Returns (markdown, csv)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["cell"]), []).append(r)
    md = ["| dataset | cell | test accuracy (mean ± std) | seeds | params | ms / step |", "|---|---|---|---|---|---|"]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["dataset", "cell", "acc_mean", "acc_std", "seeds", "params", "ms_per_step"])
    for (ds, cell), rs in groups.items():
        acc = np.array([r["test_accuracy"] for r in rs])
        ms = float(np.median([r["ms_per_step"] for r in rs]))
        md.append(f"| {ds} | {cell} | {acc.mean():.3f} ± {acc.std():.3f} | {len(rs)} | {rs[0]['params']} | {ms:.2f} |")
        w.writerow([ds, cell, f"{acc.mean():.4f}", f"{acc.std():.4f}", len(rs), rs[0]["params"], f"{ms:.3f}"])
    return "\n".join(md) + "\n", out.getvalue()


def main(argv):
    unknown = [c for c in FLAGS.cells if c not in CELLS]
    if unknown:
        raise DataError(f"unknown cells {', '.join(unknown)}; registered: {', '.join(sorted(CELLS))}")
    if FLAGS.seeds < 1 or FLAGS.epochs < 1 or FLAGS.hidden_size < 1:
        raise DataError("--seeds, --epochs and --hidden_size must be >= 1")
    root = FLAGS.workdir or common.default_workdir("ablation")
    if os.path.exists(os.path.join(root, "ablation.md")):
        raise DataError(f"{root} already holds an ablation; choose another --workdir")
    rows, t0 = [], time.perf_counter()
    for spec in FLAGS.datasets:
        try:
            load(spec, 0)
        except DataError as e:
            print(f"skipping {spec}: {e}")
            continue
        for cell in FLAGS.cells:
            for seed in range(FLAGS.seeds):
                wd = os.path.join(root, spec.replace(":", "-").replace("/", "_"), f"{cell}-seed{seed}")
                r = run_one(spec, cell, seed, wd)
                rows.append({"dataset": spec, "cell": cell, "seed": seed, **r})
                print(f"{spec:>12}  {cell:>9}  seed {seed}  acc {r['test_accuracy']:.3f}  "
                      f"{r['ms_per_step']:.2f} ms/step  [{time.perf_counter() - t0:.0f}s]", flush=True)
    if not rows:
        raise DataError("no dataset could be loaded; nothing to compare")
    md, csv_text = table(rows)
    header = (f"Command: `python -m experiments.ablation` (cells {','.join(FLAGS.cells)}; {FLAGS.seeds} seeds; "
              f"{FLAGS.epochs} epochs; hidden {FLAGS.hidden_size}); {time.strftime('%Y-%m-%d')}; "
              f"{jax.devices()[0].platform} x{jax.device_count()}.\n\n")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "ablation.md"), "w") as f:
        f.write(header + md)
    with open(os.path.join(root, "ablation.csv"), "w") as f:
        f.write(csv_text)
    print()
    print(md)
    print(f"tables: {os.path.join(root, 'ablation.md')} and ablation.csv")


def define_flags() -> None:
    flags.DEFINE_list("cells", sorted(CELLS), "Registered cells to compare.")
    flags.DEFINE_integer("seeds", 3, "Seeds per cell (0 .. seeds-1).")
    flags.DEFINE_list("datasets", ["synthetic", "ucr:ECG200"], "Datasets: synthetic, ucr:NAME, npz:PATH.")
    flags.DEFINE_string("data_dir", str(ROOT.parent / "shared" / "data" / "ucr"), "UCR archive folder.")
    flags.DEFINE_integer("epochs", 10, "Epochs per run.")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")
    flags.DEFINE_integer("hidden_size", 50, "Units per cell.")
    flags.DEFINE_string("workdir", None, "Where runs and tables go (default runs/ablation-<time>).")


if __name__ == "__main__":
    common.run(main, define=define_flags)
