"""A finished run as programs that run without this package: ``jax.export`` artifacts or ONNX graphs.

    python -m experiments.export --workdir=runs/classify-X --format=jax --output=model_jax
    python -m experiments.export --workdir=runs/classify-X --format=onnx --output=model_onnx

Writes a folder (``lstm_jax.inference.export``; docs/export.md shows a consumer with only jax and
numpy, and one with ONNX Runtime): ``sequence.<jax|onnx>`` (x [B, T, D] float32, lengths [B] int32
-> what the model returns), ``step.<jax|onnx>`` for a model that streams, and ``manifest.json``,
which also holds the run's ``inference.json`` (the label map and the normalisation its inputs need).
A forecasting ensemble writes one such folder per member under ``--output``. ``--format=onnx``
needs the ``export`` extra.
"""

from __future__ import annotations

import json
import os

from absl import flags

from experiments import common
from lstm_jax.errors import UserError
from lstm_jax.inference import export as export_lib
from lstm_jax.inference import onnx as onnx_lib
from lstm_jax.inference.run import ClassifierRun, load_run

FLAGS = flags.FLAGS
FORMATS = ("jax", "onnx")


def main(argv):
    if not FLAGS.workdir or not FLAGS.output:
        raise UserError("give --workdir (a finished run) and --output (the folder to write)")
    if FLAGS.format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {FLAGS.format!r}")
    write = export_lib.export_jax if FLAGS.format == "jax" else onnx_lib.export_onnx
    if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
        raise UserError(f"--output {FLAGS.output} exists; pass --overwrite to replace it, or choose another --output")
    run = load_run(FLAGS.workdir)
    length = FLAGS.length or None
    if isinstance(run, ClassifierRun):
        write(run.model, FLAGS.output, length=length, metadata={"run": run.record}, overwrite=FLAGS.overwrite)
        print(f"{FLAGS.format} export of {run.workdir} -> {FLAGS.output}")
        return
    # A forecasting ensemble: each member's network in a folder of its own, and the record that
    # says how their forecasts combine (level, chains, median) beside them.
    os.makedirs(FLAGS.output, exist_ok=True)
    for k, (_, predictor) in enumerate(run.members):
        member = run.ensemble["members"][k]
        write(predictor.model, os.path.join(FLAGS.output, f"member-{k}"), length=length,
              metadata={"member": member}, overwrite=FLAGS.overwrite)
    with open(os.path.join(FLAGS.output, "ensemble.json"), "w") as f:
        json.dump(run.record, f, indent=2)
    print(f"{FLAGS.format} export of {len(run.members)} ensemble members of {run.workdir} -> {FLAGS.output}")


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The finished run to export (its folder).")
    flags.DEFINE_string("format", "jax", f"One of {', '.join(FORMATS)}.")
    flags.DEFINE_string("output", None, "The folder to write.")
    flags.DEFINE_integer("length", 0, "Fix the series length T of the whole-sequence program (0: symbolic "
                         "where the model allows; ONNX needs a fixed T).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


if __name__ == "__main__":
    common.run(main, define=define_flags)
