"""Binary classification of time series with an LSTM or LSTM-FCN.

    python -m experiments.binary                    # LSTM(50) -> Dense(1) on the synthetic task
    python -m experiments.binary --stacked          # LSTM(100) -> Dropout(0.2) -> LSTM(50) -> Dense(1)
    python -m experiments.binary --bidirectional    # Bidirectional(LSTM(50)) -> Dense(1)
    python -m experiments.binary --dataset=ucr:ECG200 --data_dir=../shared/data/ucr   # the UCR recipe
    python -m experiments.binary --dataset=npz:my_data.npz                            # X [N,T,F], y [N]

Synthetic task, expected on 2 CPU cores (seed 0, 10 epochs): test accuracy >= 0.90 for each of the
first three, in well under a minute.

Datasets from files (``ucr:NAME``, ``npz:PATH``; see ``lstm_jax.datasets``) are trained with the
project's recipe, ``RECIPE`` below, for every setting the command line does not give (a flag given
explicitly always wins; summary.json lists the recipe and which of its settings flags replaced):

    model     LSTM-FCN (Karim et al. 2017): LSTM(8) over the dimension-shuffled series with dropout
              0.8, beside Conv 64-8, 128-5, 64-3 (half the paper's widths), each followed by a
              stateless 'global' normalisation (per row over all steps and channels; the training
              loop carries no BatchNorm statistics) and ReLU, then global average pooling.
    data      each series z-normalised; 20% of the training set (stratified, --seed) held out for
              validation; the archive's test split is only ever scored.
    training  Adam, batch 16, learning rate 1e-3 with a cosine decay to 0; an epoch has at least
              256 rows (small training sets are repeated within it); the checkpoint with the best
              validation accuracy (ties: the later one) is scored on the test set.
    budget    each training row is seen ``work / (rows x length)`` times, clipped to [5, 300]
              (``Recipe.passes``): tiny sets train 300 passes, larger or longer ones as many as
              2e7 row-steps allow, so that up to ~1000 training series finish within 5 minutes
              on 2 CPU cores (Strawberry, 490 x 235, and Earthquakes, 257 x 512, take about 2).

The recipe was tuned on a few of the shared UCR sets for the general case (no per-dataset setting);
benchmarks/ucr_results.md has its results on all seven against the published baselines.

Writes metrics.jsonl, checkpoints/, summary.json (test accuracy, ROC AUC, F1, precision, recall,
the confusion matrix, the label mapping, and the published baselines when a BASELINES.md sits next
to --data_dir), learning_curves.png and confusion_matrix.png into --workdir.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from absl import flags
from flax import nnx

from experiments import common
from lstm_jax import datasets
from lstm_jax import metrics as metrics_lib
from lstm_jax.data import Dataset, Split
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.models import ModelConfig, make_classifier
from lstm_jax.training import BinaryTask, Trainer, rng_streams

common.define_training_flags(epochs=10, batch_size=32)
common.define_model_flags(hidden_size=50, activation="tanh")
flags.DEFINE_bool("bidirectional", False, "Bidirectional layers (the seed's third variant).")
flags.DEFINE_bool("stacked", False, "The seed's stacked model: LSTM(2h) -> Dropout(0.2 unless --dropout) -> LSTM(h).")
flags.DEFINE_string("pooling", "last", "How the sequence becomes features: last (valid step) or mean.")
flags.DEFINE_string("dataset", "synthetic",
                    "Dataset: 'synthetic' (the order-of-two-pulses task), 'ucr:NAME' (with --data_dir) or 'npz:PATH'.")
flags.DEFINE_string("data_dir", None, "For ucr:NAME, the folder holding NAME/NAME_TRAIN.tsv (or .ts) and NAME_TEST.")
flags.DEFINE_bool("znorm", False, "Z-normalise each series (per channel, over its valid steps). Recipe: on.")
flags.DEFINE_enum("model", "lstm", ["lstm", "lstm_fcn"], "The classifier: the recurrent stack, or LSTM-FCN.")
flags.DEFINE_list("conv_filters", ["128", "256", "128"], "LSTM-FCN: filters of each convolution (kernels 8, 5, 3).")
flags.DEFINE_enum("conv_norm", "global", ["global", "layer", "group", "instance"],
                  "LSTM-FCN: normalisation after each convolution (see lstm_jax.models.MaskedNorm).")
flags.DEFINE_float("val_fraction", 0.2, "Share of the training set held out (stratified) for validation.")
flags.DEFINE_enum("select", "val_accuracy", ["val_accuracy", "val_loss"],
                  "The checkpoint scored on the test set (and early stopping's metric): best validation accuracy or loss.")
flags.DEFINE_integer("min_epoch_rows", 0, "Repeat a small training set within an epoch until it has this many rows (0: never).")
FLAGS = flags.FLAGS


# -- the recipe for real data ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recipe:
    """The recommended settings for UCR-style data; flags given on the command line win.

    Epochs follow a compute budget: ``passes`` = how often each training row is seen, from
    ``work / (rows * length)`` clipped to [``min_passes``, ``max_passes``], so a small dataset trains
    up to ``max_passes`` times over and a large or long one as long as the budget allows.
    """

    model: str = "lstm_fcn"
    hidden_size: int = 8
    dropout: float = 0.8
    conv_filters: tuple[int, ...] = (64, 128, 64)
    conv_norm: str = "global"
    znorm: bool = True
    val_fraction: float = 0.2
    batch_size: int = 16
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    patience: int = 0
    select: str = "val_accuracy"
    min_epoch_rows: int = 256
    work: float = 2.0e7  # row-steps (rows x series length) of training in all
    min_passes: int = 5
    max_passes: int = 300

    def passes(self, rows: int, length: int) -> int:
        return int(min(self.max_passes, max(self.min_passes, self.work / (rows * length))))

    def eval_batch_size(self, val_rows: int) -> int:
        """The validation set in one batch, rounded up to a multiple of 16 rows (at most 512)."""
        return int(min(512, 16 * math.ceil(max(val_rows, 1) / 16)))

    def epochs(self, rows: int, length: int, epoch_rows: int) -> int:
        """Epochs of ``epoch_rows`` rows each that see every one of ``rows`` training rows ``passes`` times."""
        return max(1, round(self.passes(rows, length) * rows / epoch_rows))


RECIPE = Recipe()


class LossSelectedTask(BinaryTask):
    """``BinaryTask`` whose best checkpoint has the lowest validation loss: on a small validation set the
    loss moves smoothly where the accuracy ties or jumps by a whole row."""

    best_metric, best_mode = "val_loss", "min"


def uses_recipe() -> bool:
    return FLAGS.dataset != "synthetic"


def setting(name: str):
    """A flag's value: given on the command line, else the recipe's (for file datasets), else its default."""
    if uses_recipe() and not FLAGS[name].present:
        return getattr(RECIPE, name)
    return FLAGS[name].value


# -- model, data ----------------------------------------------------------------------------------

def model_config() -> ModelConfig:
    architecture = setting("model")
    # The recipe's widths and dropout are those of its model; another --model keeps the flag defaults.
    own = architecture == RECIPE.model
    h = setting("hidden_size") if own else FLAGS.hidden_size
    layers, dropout = FLAGS.num_layers, setting("dropout") if own else FLAGS.dropout
    try:
        filters = tuple(int(f) for f in setting("conv_filters"))
    except ValueError:
        raise ConfigError(f"--conv_filters must be integers, got {','.join(FLAGS.conv_filters)}") from None
    if FLAGS.stacked:
        if FLAGS["num_layers"].present and layers != 2:
            raise DataError("--stacked is two layers; drop --num_layers or use it without --stacked")
        h, layers = (2 * h, h), 2
        dropout = dropout if FLAGS["dropout"].present else 0.2
    kwargs = {**common.model_kwargs(), "num_layers": layers, "dropout": dropout}
    return ModelConfig(hidden_size=h, bidirectional=FLAGS.bidirectional, pooling=FLAGS.pooling, **kwargs,
                       architecture=architecture, conv_filters=filters, conv_kernels=(8, 5, 3)[: len(filters)],
                       conv_norm=setting("conv_norm"))


def repeat_rows(split: Split, min_rows: int) -> tuple[Split, int]:
    """``split`` repeated whole until it has at least ``min_rows`` rows; returns (split, repeats).

    The training loop shuffles the repeated rows together, so an epoch is ``repeats`` passes in one
    shuffled order: fewer, longer epochs (one validation and one checkpoint each) on tiny datasets.
    """
    r = max(1, math.ceil(min_rows / len(split))) if min_rows > 0 else 1
    if r == 1:
        return split, 1
    tile = lambda a: None if a is None else np.concatenate([a] * r)
    return Split(tile(split.x), tile(split.y), tile(split.lengths)), r


def class_names(info: dict) -> list[str]:
    """The original label of class 0 and of class 1, for plots ('0', '1' when not recorded)."""
    by_index = {v: k for k, v in info.get("labels", {}).items()}
    return [str(by_index.get(k, k)) for k in (0, 1)]


# -- main -----------------------------------------------------------------------------------------

def main(argv):
    seed = FLAGS.seed
    model_cfg = model_config()
    data = datasets.load_binary(FLAGS.dataset, FLAGS.data_dir, seed=seed, znorm=setting("znorm"),
                                val_fraction=setting("val_fraction"))
    rows, length = len(data.train), data.train.x.shape[1]
    train, repeats = repeat_rows(data.train, setting("min_epoch_rows"))
    if repeats > 1:
        data = Dataset(train, data.val, data.test, info={**data.info, "train_repeats_per_epoch": repeats})
    train_cfg = common.train_config()
    if uses_recipe():
        recipe = {k: getattr(RECIPE, k) for k in ("batch_size", "learning_rate", "schedule", "patience")}
        train_cfg = common.train_config(**recipe, epochs=RECIPE.epochs(rows, length, len(train)))
        # Evaluation pads its last batch to the full batch size: a 512-row batch for a 65-row
        # validation set would cost more than the epoch's training on long series.
        train_cfg = dataclasses.replace(train_cfg, eval_batch_size=RECIPE.eval_batch_size(len(data.val)))

    model = make_classifier(data.num_features, model_cfg, nnx.Rngs(rng_streams(seed)["params"]), length=length)
    workdir = FLAGS.workdir or common.default_workdir("binary")
    extra = {"model": model_cfg, "experiment": "binary",
             "data": {"dataset": FLAGS.dataset, "znorm": setting("znorm"), "val_fraction": setting("val_fraction"),
                      "min_epoch_rows": setting("min_epoch_rows")}}
    if uses_recipe():
        extra["recipe"] = {"applied": dataclasses.asdict(RECIPE),
                           "overridden_by_flags": sorted(n for n in list(dataclasses.asdict(RECIPE)) + ["epochs"]
                                                         if n in FLAGS and FLAGS[n].present)}
    task = LossSelectedTask() if setting("select") == "val_loss" else BinaryTask()
    trainer = Trainer(model, task, data, train_cfg, workdir, resume=FLAGS.resume, log=common.log_fn(),
                      extra_config=extra)
    print(f"workdir: {trainer.workdir}")
    summary = trainer.fit()  # ends with the best checkpoint restored

    if data.test is not None:
        test = metrics_lib.classification_metrics(trainer.predict(data.test), data.test.y)
        summary.update({f"test_{k}": v for k, v in test.items() if k not in ("accuracy", "count")})
        summary["labels"] = data.info.get("labels", {"0": 0, "1": 1})
    baselines = datasets.read_baselines(FLAGS.data_dir, data.info.get("name", "")) if FLAGS.data_dir else None
    if baselines:
        summary["baselines"] = baselines
    trainer.write_summary(summary)
    if data.test is not None and trainer.is_primary:
        from lstm_jax import plots

        plots.confusion_matrix(np.array(summary["test_confusion_matrix"]), os.path.join(trainer.workdir, "confusion_matrix.png"),
                               labels=class_names(data.info), title=f"{data.info.get('name', FLAGS.dataset)} (test)")
    trainer.close()
    print(f"test accuracy: {summary['test_accuracy']:.4f}  (test loss {summary['test_loss']:.4f}, "
          f"best epoch {summary['best_epoch']}, {summary['wall_seconds']:.1f}s)")
    if data.test is not None:
        print(f"test ROC AUC {summary['test_roc_auc']:.4f}  F1 {summary['test_f1']:.4f}  "
              f"precision {summary['test_precision']:.4f}  recall {summary['test_recall']:.4f}")
    if baselines:
        print("published: " + "  ".join(f"{k} {v:.3f}" for k, v in baselines.items() if v is not None))


if __name__ == "__main__":
    common.run(main)
