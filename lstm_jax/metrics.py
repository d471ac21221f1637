"""Binary classification metrics from logits and {0, 1} labels, in NumPy.

A logit > 0 predicts class 1. Precision, recall and F1 are those of class 1; a ratio whose
denominator is 0 is reported as 0.0 (no positive predictions: precision 0), as scikit-learn does
with ``zero_division=0``.
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
