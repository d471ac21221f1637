"""Binary classification of time series with an LSTM or LSTM-FCN: the seed programs' front-end.

    python -m experiments.binary                    # LSTM(50) -> Dense(1) on the synthetic task
    python -m experiments.binary --stacked          # LSTM(100) -> Dropout(0.2) -> LSTM(50) -> Dense(1)
    python -m experiments.binary --bidirectional    # Bidirectional(LSTM(50)) -> Dense(1)
    python -m experiments.binary --dataset=ucr:ECG200 --data_dir=../shared/data/ucr   # the UCR recipe
    python -m experiments.binary --dataset=npz:my_data.npz                            # X [N,T,F], y [N]
    python -m experiments.binary --config=experiments/configs/bidirectional.py --config.epochs=2

Each run is a config file (experiments/configs/: basic.py by default, ucr.py for a file dataset)
with overrides; the short flags (--epochs, --hidden_size, ...; --helpfull lists them) are shortcuts
onto its fields. Datasets: ``synthetic`` (the order-of-two-pulses task), ``ucr:NAME`` with
``--data_dir``, ``npz:PATH`` (see ``lstm_jax.data.archives``). One sigmoid unit: exactly two classes.

Writes config.json, metrics.jsonl, TensorBoard events, checkpoints/, summary.json (test accuracy,
ROC AUC, F1, precision, recall, the confusion matrix, the label mapping, and the published baselines
when a BASELINES.md sits next to --data_dir), learning_curves.png and confusion_matrix.png.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from experiments import common
from experiments.train import Experiment, Job, model_config, train_config
from lstm_jax import metrics as metrics_lib
from lstm_jax import plots
from lstm_jax.data import archives
from lstm_jax.errors import ConfigError, MissingValuesWarning
from lstm_jax.inference.run import SeriesInputs
from lstm_jax.nn.models import ModelSpec, make_classifier
from lstm_jax.train import budget
from lstm_jax.train.loop import Trainer
from lstm_jax.train.steps import rng_streams
from lstm_jax.train.tasks import BinaryTask

FLAGS = flags.FLAGS
SHORTCUTS = (*common.TRAINING, *common.MODEL, "pooling", "model", "conv_filters", "conv_norm",
             "dataset", "data_dir", "znorm", "val_fraction", "min_epoch_rows", "missing")


def default_config(dataset: str | None) -> str:
    """The config file a run starts from without --config: the UCR recipe for data from files."""
    return "ucr" if dataset not in (None, "synthetic") else "basic"


def stacked(config: ml_collections.ConfigDict, given: set[str]) -> None:
    """--stacked: the seed's LSTM(2h) -> Dropout(0.2, unless given) -> LSTM(h)."""
    if not FLAGS.stacked:
        return
    m = config.model
    if "model.num_layers" in given and m.num_layers != 2:
        raise ConfigError("--stacked is two layers; drop --num_layers or use it without --stacked")
    if len(m.hidden_size) == 1:
        m.hidden_size = (2 * m.hidden_size[0], m.hidden_size[0])
    m.num_layers = 2
    if "model.dropout" not in given:
        m.dropout = 0.2


# -- the job --------------------------------------------------------------------------------------

def class_names(info: dict) -> list[str]:
    """The original label of class 0 and of class 1, for plots ('0', '1' when not recorded)."""
    by_index = {v: k for k, v in info.get("labels", {}).items()}
    return [str(by_index.get(k, k)) for k in (0, 1)]


def build(config: ml_collections.ConfigDict) -> Job:
    model_cfg = model_config(config.model)
    with common.data_warnings(MissingValuesWarning):
        data = archives.load_binary(config.dataset, config.data_dir, seed=config.seed, znorm=config.data.znorm,
                                    val_fraction=config.data.val_fraction, missing=config.data.missing)
    data, epochs, eval_batch = budget.epoch_plan(
        data, epochs=config.epochs, budget=budget.WorkBudget(**config.budget),
        min_epoch_rows=config.data.min_epoch_rows, eval_batch_size=config.eval_batch_size)
    model = make_classifier(data.num_features, model_cfg, nnx.Rngs(rng_streams(config.seed)["params"]),
                            length=data.train.x.shape[1])
    spec = ModelSpec("classifier", model_cfg, data.num_features, num_classes=2, length=data.train.x.shape[1])
    inputs = SeriesInputs.from_info(data.info, features=data.num_features, length=data.train.x.shape[1],
                                    missing=config.data.missing)

    def evaluate(trainer: Trainer) -> dict:
        out = {}
        if data.test is not None:
            test = metrics_lib.classification_metrics(trainer.predict(data.test), data.test.y)
            out.update({f"test_{k}": v for k, v in test.items() if k not in ("accuracy", "count")})
            out["labels"] = data.info.get("labels", {"0": 0, "1": 1})
        baselines = archives.read_baselines(config.data_dir, data.info.get("name", "")) if config.data_dir else None
        if baselines:
            out["baselines"] = baselines
        return out

    def finish(trainer: Trainer, summary: dict) -> None:
        if data.test is not None:
            plots.confusion_matrix(np.array(summary["test_confusion_matrix"]),
                                   os.path.join(trainer.workdir, "confusion_matrix.png"), labels=class_names(data.info),
                                   title=f"{data.info.get('name', config.dataset)} (test)")

    return Job(data, model, BinaryTask(), train_config(config, epochs=epochs, eval_batch_size=eval_batch),
               evaluate=evaluate, finish=finish, spec=spec, inputs=inputs)


EXPERIMENT = Experiment(build=build)  # what train_and_evaluate calls


# -- the command line -----------------------------------------------------------------------------

def report(summary: dict) -> None:
    print(f"test accuracy: {summary['test_accuracy']:.4f}  (test loss {summary['test_loss']:.4f}, "
          f"best epoch {summary['best_epoch']}, {summary['wall_seconds']:.1f}s)")
    if "test_roc_auc" in summary:
        auc = summary["test_roc_auc"]
        print(f"test ROC AUC {float('nan') if auc is None else auc:.4f}  F1 {summary['test_f1']:.4f}  "
              f"precision {summary['test_precision']:.4f}  recall {summary['test_recall']:.4f}")
    if summary.get("baselines"):
        print("published: " + "  ".join(f"{k} {v:.3f}" for k, v in summary["baselines"].items() if v is not None))


def main(argv):
    common.train_from_flags("binary", SHORTCUTS, default_config, report, stacked)


def define_flags() -> None:
    common.define_flags("binary", "basic", SHORTCUTS)
    flags.DEFINE_bool("stacked", False, "The seed's stacked model: LSTM(2h) -> Dropout(0.2 unless --dropout) -> LSTM(h).")


if __name__ == "__main__":
    common.run(main, define=define_flags)
