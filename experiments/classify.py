"""Classification of time series with any number of classes: the recipe, and five models side by side.

    python -m experiments.classify --dataset=ucr:ArrowHead --data_dir=../shared/data/multiclass
    python -m experiments.classify --dataset=ucr:JapaneseVowels --data_dir=../shared/data/multiclass \\
        --compare=lstm,bilstm,fcn,lstm_fcn,lstm_fcn_time      # five models, one chosen on validation
    python -m experiments.classify --dataset=npz:my_data.npz   # X [N,T,F], y [N] (any labels)

The number of classes K comes from the training labels (numbers or words; ``summary.json`` holds the
label map, original label -> index). K = 2 gives one sigmoid unit, as experiments.binary; K > 2 gives
K logits and softmax cross-entropy. The recipe is experiments/configs/classify.py (its docstring says
what it does and why); ``--config.FIELD=VALUE`` or the short flags change any of its fields.

``--compare`` trains each named model (``MODELS``) as a candidate of its own, then keeps the one with
the best validation accuracy (ties: lower validation loss); the test split never takes part in the
choice. ``summary.json`` says which was chosen and each candidate's validation figures; each
candidate's own summary (with its test figures) is in ``<workdir>/candidates/NAME``.

Writes config.json, metrics.jsonl, TensorBoard events (curves; the test metrics as hparams, the
confusion matrix as an image and a text table), checkpoints/, summary.json (test accuracy, balanced
accuracy, macro F1, macro one-vs-rest ROC AUC, per-class precision / recall / F1, the K x K confusion
matrix, the label map, the published baselines from a BASELINES.md beside --data_dir),
learning_curves.png and confusion_matrix.png.
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
from lstm_jax.data.dataset import Dataset
from lstm_jax.errors import ConfigError, MissingValuesWarning
from lstm_jax.inference.run import SeriesInputs
from lstm_jax.nn.models import ModelSpec, make_classifier
from lstm_jax.train import budget
from lstm_jax.train.loop import Trainer
from lstm_jax.train.steps import rng_streams
from lstm_jax.train.tasks import SoftmaxTask, balanced_class_weights

FLAGS = flags.FLAGS
SHORTCUTS = (*common.TRAINING, *common.MODEL, "pooling", "model", "conv_filters", "conv_norm",
             "dataset", "data_dir", "val_fraction", "min_epoch_rows", "missing", "norm", "label_smoothing",
             "class_weights", "compare")
NORMS = ("auto", "series", "channel", "none")
CLASS_WEIGHTS = ("none", "balanced")

# The five models of the comparison: config.model fields each one sets (the rest stay the recipe's).
MODELS: dict[str, dict] = {
    # The recurrent stack alone, its last valid output -> Dense.
    "lstm": {"architecture": "lstm", "hidden_size": (64,), "bidirectional": False, "dropout": 0.0},
    "bilstm": {"architecture": "lstm", "hidden_size": (64,), "bidirectional": True, "dropout": 0.0},
    # The convolutional branch alone (Wang et al. 2017), with the recipe's widths.
    "fcn": {"architecture": "fcn"},
    # As published (Karim et al. 2017): the LSTM reads the dimension-shuffled input (D steps of T
    # features: a univariate series is ONE step), LSTM(8) with dropout 0.8.
    "lstm_fcn": {"architecture": "lstm_fcn", "hidden_size": (8,), "bidirectional": False, "dropout": 0.8},
    # The LSTM over time, beside the same convolutions.
    "lstm_fcn_time": {"architecture": "lstm_fcn_time", "hidden_size": (32,), "bidirectional": False, "dropout": 0.2},
}


def default_config(dataset: str | None) -> str:
    return "classify"


# -- the job --------------------------------------------------------------------------------------

def load(config: ml_collections.ConfigDict) -> Dataset:
    """The dataset, normalised as ``config.data.norm`` says; missing-value warnings as one line each."""
    d = config.data
    if d.norm not in NORMS:
        raise ConfigError(f"data.norm must be one of {', '.join(NORMS)}, got {d.norm!r}")
    with common.data_warnings(MissingValuesWarning):
        data = archives.load_classification(config.dataset, config.data_dir, seed=config.seed, znorm=False,
                                            val_fraction=d.val_fraction, missing=d.missing)
    norm = d.norm if d.norm != "auto" else ("series" if data.num_features == 1 else "channel")
    if norm == "series":
        data = Dataset(*(archives.znormalise(s) for s in (data.train, data.val, data.test)), info=data.info)
    elif norm == "channel":
        data = archives.standardise_channels(data)
    return Dataset(data.train, data.val, data.test, info={**data.info, "norm": norm})


def make_task(config: ml_collections.ConfigDict, data: Dataset, K: int) -> SoftmaxTask:
    d = config.data
    if d.class_weights not in CLASS_WEIGHTS:
        raise ConfigError(f"data.class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {d.class_weights!r}")
    weights = balanced_class_weights(data.train.y, K) if d.class_weights == "balanced" else None
    return SoftmaxTask(K, label_smoothing=d.label_smoothing, class_weights=weights)


def class_names(info: dict, K: int) -> list[str]:
    by_index = {v: k for k, v in info.get("labels", {}).items()}
    return [str(by_index.get(k, k)) for k in range(K)]


def build(config: ml_collections.ConfigDict) -> Job:
    model_cfg = model_config(config.model)
    data = load(config)
    K = data.info["num_classes"]
    task = make_task(config, data, K)
    data, epochs, eval_batch = budget.epoch_plan(
        data, epochs=config.epochs, budget=budget.WorkBudget(**config.budget),
        min_epoch_rows=config.data.min_epoch_rows, eval_batch_size=config.eval_batch_size)
    model = make_classifier(data.num_features, model_cfg, nnx.Rngs(rng_streams(config.seed)["params"]),
                            length=data.train.x.shape[1], num_classes=K)
    spec = ModelSpec("classifier", model_cfg, data.num_features, num_classes=K, length=data.train.x.shape[1])
    inputs = SeriesInputs.from_info(data.info, features=data.num_features, length=data.train.x.shape[1],
                                    missing=config.data.missing)

    def evaluate(trainer: Trainer) -> dict:
        out = {"labels": data.info["labels"], "num_classes": K,
               "class_weights": None if task.class_weights is None else list(task.class_weights)}
        for name, split in (("val", data.val), ("test", data.test)):
            if split is None:
                continue
            m = metrics_lib.multiclass_metrics(np.asarray(trainer.predict(split)), split.y, K)
            keep = ("balanced_accuracy", "macro_f1", "roc_auc_ovr", "per_class", "confusion_matrix")
            out.update({f"{name}_{k}": m[k] for k in keep if name == "test" or k != "per_class"})
        baselines = archives.read_baselines(config.data_dir, data.info.get("name", "")) if config.data_dir else None
        if baselines:
            out["baselines"] = baselines
        return out

    def finish(trainer: Trainer, summary: dict) -> None:
        if data.test is None:
            return
        names = class_names(data.info, K)
        path = plots.confusion_matrix(np.array(summary["test_confusion_matrix"]),
                                      os.path.join(trainer.workdir, "confusion_matrix.png"), labels=names,
                                      title=f"{data.info.get('name', config.dataset)} (test)")
        if trainer.tb is not None:
            trainer.tb.image("test/confusion_matrix", path)
            trainer.tb.text("test/confusion_matrix", confusion_table(summary["test_confusion_matrix"], names))
            trainer.tb.text("test/per_class", per_class_table(summary["test_per_class"], names))
            trainer.tb.flush()

    return Job(data, model, task, train_config(config, epochs=epochs, eval_batch_size=eval_batch),
               evaluate=evaluate, finish=finish, spec=spec, inputs=inputs)


# -- several models, one chosen on validation -----------------------------------------------------

def candidates(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict] | None:
    """``config.compare`` (comma-separated MODELS names) -> one config per model; None when empty."""
    names = [n.strip() for n in config.compare.split(",") if n.strip()]
    if not names:
        return None
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ConfigError(f"compare: unknown model {', '.join(unknown)}; choose among {', '.join(MODELS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"compare names a model twice: {config.compare}")
    out = {}
    for n in names:
        c = ml_collections.ConfigDict(config.to_dict())
        c.compare = ""
        c.model.update(MODELS[n])
        out[n] = c
    return out


def choose(summaries: dict[str, dict]) -> tuple[str, str]:
    """The best validation accuracy; ties: the lower validation loss, then the earlier name."""
    order = list(summaries)
    best = min(order, key=lambda n: (-summaries[n]["val_accuracy"], summaries[n]["val_loss"], order.index(n)))
    return best, "val_accuracy"


EXPERIMENT = Experiment(build=build, candidates=candidates, choose=choose)  # what train_and_evaluate calls


# -- the command line -----------------------------------------------------------------------------

def confusion_table(cm: list[list[int]], names: list[str]) -> str:
    """Markdown: rows the true class, columns the predicted one."""
    head = "| true \\ predicted | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    lines += ["| " + " | ".join([names[i], *map(str, row)]) + " |" for i, row in enumerate(cm)]
    return "\n".join(lines)


def per_class_table(per_class: dict, names: list[str]) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for k, n in enumerate(names):
        lines.append(f"| {n} | {per_class['precision'][k]:.3f} | {per_class['recall'][k]:.3f} | "
                     f"{per_class['f1'][k]:.3f} | {per_class['support'][k]} |")
    return "\n".join(lines)


def report(summary: dict) -> None:
    K = summary["num_classes"]
    names = class_names({"labels": summary["labels"]}, K)
    if "chosen" in summary:
        cands = "  ".join(f"{n} {c['val_accuracy']:.4f}" for n, c in summary["candidates"].items())
        print(f"chosen on validation accuracy: {summary['chosen']}  ({cands})")
    auc = summary["test_roc_auc_ovr"]
    print(f"test accuracy: {summary['test_accuracy']:.4f}  balanced {summary['test_balanced_accuracy']:.4f}  "
          f"macro F1 {summary['test_macro_f1']:.4f}  macro ROC AUC (one-vs-rest) "
          f"{float('nan') if auc is None else auc:.4f}  ({K} classes, test loss {summary['test_loss']:.4f}, "
          f"best epoch {summary['best_epoch']}, {summary['wall_seconds']:.1f}s)")
    print(per_class_table(summary["test_per_class"], names))
    print("confusion matrix (rows: true, columns: predicted):")
    print(confusion_table(summary["test_confusion_matrix"], names))
    if summary.get("baselines"):
        print("published: " + "  ".join(f"{k} {v:.3f}" for k, v in summary["baselines"].items()
                                        if v is not None and 0.0 <= v <= 1.0))  # accuracies, not e.g. "classes"


def main(argv):
    common.train_from_flags("classify", SHORTCUTS, default_config, report)


def define_flags() -> None:
    common.define_flags("classify", "classify", SHORTCUTS)


if __name__ == "__main__":
    common.run(main, define=define_flags)
