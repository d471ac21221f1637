"""Classification metrics in NumPy: binary ones from logits [N], and K-class ones from scores [N, K].

Binary (``classification_metrics``): a logit > 0 predicts class 1. Precision, recall and F1 are those
of class 1; a ratio whose denominator is 0 is reported as 0.0 (no positive predictions: precision 0),
as scikit-learn does with ``zero_division=0``.

K classes (``multiclass_metrics``): the scores are logits [N, K] (softmax outputs), probabilities
[N, K], or the logits [N] of one sigmoid unit (a two-class model), which stand for the probabilities
[1 - p, p]. The predicted class is the arg-max (for one sigmoid unit: logit > 0). Each metric is the
one scikit-learn computes, with ``labels=range(K)`` and ``zero_division=0``:

* accuracy; balanced accuracy: the mean recall over the classes present in ``y``;
* per-class precision, recall, F1 and support; macro F1: the plain mean of the K F1s;
* macro one-vs-rest ROC AUC: for each class k, the AUC of its probability against "is k", averaged
  over the classes that occur in ``y`` (and not all of ``y``); NaN when none does. Ranking uses the
  probabilities, so saturated softmax outputs that tie in float64 tie here as in scikit-learn. For
  K = 2 it is the AUC of class 1's score (a sigmoid unit's logit), scikit-learn's binary AUC.
* the K x K confusion matrix: rows the true class, columns the predicted one.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(logits_N, y_N) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits_N, np.float64).reshape(-1)
    y = np.asarray(y_N).reshape(-1)
    if logits.shape != y.shape:
        raise ValueError(f"{logits.shape[0]} logits but {y.shape[0]} labels")
    return logits, (y > 0.5).astype(np.int64)


def confusion_matrix(logits_N, y_N) -> np.ndarray:
    """[[TN, FP], [FN, TP]]: rows the true class, columns the predicted one."""
    logits, y = _as_arrays(logits_N, y_N)
    pred = (logits > 0).astype(np.int64)
    return np.bincount(2 * y + pred, minlength=4).reshape(2, 2)


def roc_auc(scores_N, y_N) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties 1/2.

    Computed from average ranks (the Mann-Whitney U statistic). NaN when a class is absent.
    """
    s, y = _as_arrays(scores_N, y_N)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), np.float64)
    # Tied scores share the mean of the ranks they span (1-based).
    starts = np.r_[0, np.nonzero(np.diff(sorted_s))[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def classification_metrics(logits_N, y_N) -> dict:
    """accuracy, roc_auc, f1, precision, recall, the confusion matrix (nested lists) and the count."""
    cm = confusion_matrix(logits_N, y_N)
    (tn, fp), (fn, tp) = cm.tolist()
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, cm.sum()),
        "roc_auc": roc_auc(logits_N, y_N),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": precision,
        "recall": recall,
        "confusion_matrix": cm.tolist(),
        "count": int(cm.sum()),
    }


# -- K classes ------------------------------------------------------------------------------------

def class_probabilities(scores, *, from_logits: bool = True) -> np.ndarray:
    """Scores -> probabilities [N, K] in float64: softmax of logits [N, K]; for logits [N] of one
    sigmoid unit, [1 - sigmoid, sigmoid]; probabilities [N, K] pass through (``from_logits=False``)."""
    s = np.asarray(scores, np.float64)
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        z = s.reshape(-1)
        p1 = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
        return np.stack([1.0 - p1, p1], axis=1) if from_logits else np.stack([1.0 - z, z], axis=1)
    if s.ndim != 2:
        raise ValueError(f"scores must be [N] or [N, K], got shape {s.shape}")
    if not from_logits:
        return s
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predicted_class(scores) -> np.ndarray:
    """The arg-max class of scores [N, K] (logits or probabilities); logit > 0 for scores [N]."""
    s = np.asarray(scores, np.float64)
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        return (s.reshape(-1) > 0).astype(np.int64)
    return np.argmax(s, axis=1).astype(np.int64)


def multiclass_confusion_matrix(pred_N, y_N, num_classes: int) -> np.ndarray:
    """[K, K] counts: rows the true class, columns the predicted one."""
    pred, y = np.asarray(pred_N, np.int64).reshape(-1), np.asarray(y_N).reshape(-1).astype(np.int64)
    K = num_classes
    if pred.shape != y.shape:
        raise ValueError(f"{pred.shape[0]} predictions but {y.shape[0]} labels")
    if len(y) and (min(y.min(), pred.min()) < 0 or max(y.max(), pred.max()) >= K):
        raise ValueError(f"labels and predictions must be in 0..{K - 1}")
    return np.bincount(K * y + pred, minlength=K * K).reshape(K, K)


def multiclass_metrics(scores, y_N, num_classes: int | None = None, *, from_logits: bool = True) -> dict:
    """Every K-class metric (see the module docstring) as a JSON-able dict.

    ``scores``: logits [N, K] or [N] (one sigmoid unit), or probabilities [N, K] with
    ``from_logits=False``. ``y_N``: class indices 0..K-1. ``num_classes`` defaults to the scores' K.
    """
    probs = class_probabilities(scores, from_logits=from_logits)
    K = num_classes or probs.shape[1]
    if probs.shape[1] != K:
        raise ValueError(f"scores have {probs.shape[1]} classes, num_classes is {K}")
    y = np.asarray(y_N).reshape(-1).astype(np.int64)
    if len(y) != len(probs):
        raise ValueError(f"{len(probs)} scores but {len(y)} labels")
    pred = predicted_class(scores) if from_logits else np.argmax(probs, axis=1)
    cm = multiclass_confusion_matrix(pred, y, K)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = [_ratio(tp[k], predicted[k]) for k in range(K)]
    recall = [_ratio(tp[k], support[k]) for k in range(K)]
    f1 = [_ratio(2 * tp[k], support[k] + predicted[k]) for k in range(K)]
    present = support > 0
    aucs = [roc_auc(probs[:, k], (y == k).astype(np.int64)) for k in range(K)]
    if K == 2:
        # Two classes: the AUC of class 1's score (a sigmoid unit's logit ranks exactly where its
        # probability may saturate), as scikit-learn's binary roc_auc_score; class 0's is the same.
        one = np.asarray(scores, np.float64)
        one = one.reshape(-1) if one.ndim == 1 or one.shape[1] == 1 else probs[:, 1]
        aucs = [roc_auc(one, y)] * 2
    defined = [a for a in aucs if not np.isnan(a)]
    return {
        "accuracy": _ratio(tp.sum(), cm.sum()),
        "balanced_accuracy": float(np.mean(np.asarray(recall)[present])) if present.any() else 0.0,
        "macro_f1": float(np.mean(f1)),
        "roc_auc_ovr": float(np.mean(defined)) if defined else float("nan"),
        "per_class": {"precision": precision, "recall": recall, "f1": f1, "support": support.tolist(),
                      "roc_auc": aucs},
        "confusion_matrix": cm.tolist(),
        "count": int(cm.sum()),
        "num_classes": K,
    }
