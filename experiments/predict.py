"""Predictions from a finished run on new data.

    python -m experiments.predict --workdir=runs/classify-X --input=NEW.ts [--output=predictions.csv]
    python -m experiments.predict --workdir=runs/forecast-X --input=SERIES.csv [--output=forecast.csv]

Loads the run's best checkpoint and the preprocessing it fitted on its training data
(``lstm_jax.inference.load_run``) and writes:

* classification (``experiments.classify`` or ``binary``; input ``.ts``, ``.tsv`` or ``.npz``, labels
  optional): one row per series, ``predicted`` (the original label) and one ``p_<label>`` column
  per class; with labels in the input, its accuracy is printed.
* forecasting (the ensemble recipe of ``experiments.forecast``; input the run's CSV or ``.tsf``
  format, the same series, possibly with newer values): the next ``horizon`` steps after the end of
  each series, long format ``id,step,forecast`` plus one ``q<level>`` column per quantile the run
  was trained for, and the picture beside the CSV.

An existing ``--output`` is not replaced unless ``--overwrite``.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import common
from lstm_jax.errors import UserError
from lstm_jax.inference.run import ClassifierRun, load_run
from lstm_jax.train.workdir import atomic_write

FLAGS = flags.FLAGS


def default_output(input_path: str) -> str:
    stem = os.path.splitext(os.path.basename(input_path.rstrip("/")))[0]
    return f"{stem}.predictions.csv"


def main(argv):
    if not FLAGS.workdir or not FLAGS.input:
        raise UserError("give --workdir (a finished run) and --input (the data to predict)")
    output = FLAGS.output or default_output(FLAGS.input)
    if os.path.isdir(output):
        raise UserError(f"--output {output} is a folder; give a file name")
    if os.path.exists(output) and not FLAGS.overwrite:
        raise UserError(f"--output {output} exists; pass --overwrite to replace it, or choose another --output")
    run = load_run(FLAGS.workdir)
    if isinstance(run, ClassifierRun):
        predictions = run.predict_file(FLAGS.input)
        atomic_write(output, predictions.to_csv())
        accuracy = "" if predictions.accuracy is None else f"; accuracy {predictions.accuracy:.4f} against the input's labels"
        print(f"{len(predictions.labels)} series, {len(predictions.classes)} classes -> {output}{accuracy}")
        return
    forecasts = run.forecast_file(FLAGS.input)
    atomic_write(output, forecasts.to_csv())
    picture = os.path.splitext(output)[0] + ".png"
    forecasts.picture(picture)
    print(f"{len(forecasts.ids)} series, the next {forecasts.horizon} steps -> {output} (picture: {picture})")


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The finished run to load (its folder).")
    flags.DEFINE_string("input", None, "The data to predict, in a format the run's experiment reads.")
    flags.DEFINE_string("output", None, "Where the CSV goes (default: <input name>.predictions.csv here).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


if __name__ == "__main__":
    common.run(main, define=define_flags)
