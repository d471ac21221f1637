"""Every classification metric against scikit-learn's (a test dependency only), to 1e-9, for K = 2 and K > 2."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_jax import metrics as M

sk = pytest.importorskip("sklearn.metrics")

TOL = 1e-9


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(K: int, N: int, seed: int, *, ties: bool = False):
    """Logits [N, K] that predict right a bit more often than chance, labels covering every class."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(K), rng.integers(0, K, N - K)])
    logits = rng.normal(size=(N, K))
    logits[np.arange(N), y] += 1.0
    if ties:
        logits = np.round(logits)  # many tied scores: exercises the averaged ranks
    return logits, y


def _check_against_sklearn(m: dict, probs: np.ndarray, pred: np.ndarray, y: np.ndarray, K: int, auc_score=None):
    labels = list(range(K))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=TOL)
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=TOL)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, labels=labels, average="macro", zero_division=0), abs=TOL)
    np.testing.assert_allclose(m["per_class"]["precision"],
                               sk.precision_score(y, pred, labels=labels, average=None, zero_division=0), atol=TOL, rtol=0)
    np.testing.assert_allclose(m["per_class"]["recall"],
                               sk.recall_score(y, pred, labels=labels, average=None, zero_division=0), atol=TOL, rtol=0)
    np.testing.assert_allclose(m["per_class"]["f1"],
                               sk.f1_score(y, pred, labels=labels, average=None, zero_division=0), atol=TOL, rtol=0)
    np.testing.assert_array_equal(m["confusion_matrix"], sk.confusion_matrix(y, pred, labels=labels))
    if K == 2:
        want = sk.roc_auc_score(y, probs[:, 1] if auc_score is None else auc_score)
    else:
        want = sk.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels)
    assert m["roc_auc_ovr"] == pytest.approx(want, abs=TOL)
    assert m["count"] == len(y) and m["num_classes"] == K


@pytest.mark.parametrize("K", [2, 3, 6, 9])
@pytest.mark.parametrize("ties", [False, True])
def test_multiclass_metrics_match_sklearn_from_logits(K, ties):
    logits, y = _case(K, 97, seed=K, ties=ties)
    probs = _softmax(logits)
    m = M.multiclass_metrics(logits, y)
    _check_against_sklearn(m, probs, np.argmax(logits, axis=1), y, K)


@pytest.mark.parametrize("K", [2, 4])
def test_multiclass_metrics_match_sklearn_from_probabilities(K):
    logits, y = _case(K, 60, seed=10 + K)
    probs = _softmax(logits)
    m = M.multiclass_metrics(probs, y, from_logits=False)
    _check_against_sklearn(m, probs, np.argmax(probs, axis=1), y, K)


def test_one_sigmoid_unit_matches_sklearn_and_the_binary_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    logits = rng.normal(size=80) + (2 * y - 1) * 0.7
    logits[:10] = np.round(logits[:10])  # a few ties
    m = M.multiclass_metrics(logits, y)
    p1 = 1 / (1 + np.exp(-logits))
    _check_against_sklearn(m, np.stack([1 - p1, p1], 1), (logits > 0).astype(int), y, 2, auc_score=logits)
    b = M.classification_metrics(logits, y)
    assert m["confusion_matrix"] == b["confusion_matrix"] and m["accuracy"] == b["accuracy"]
    assert m["roc_auc_ovr"] == b["roc_auc"]
    assert m["per_class"]["f1"][1] == b["f1"] and m["per_class"]["precision"][1] == b["precision"]
    # The binary functions themselves, against scikit-learn too.
    assert b["roc_auc"] == pytest.approx(sk.roc_auc_score(y, logits), abs=TOL)
    assert b["f1"] == pytest.approx(sk.f1_score(y, logits > 0, zero_division=0), abs=TOL)
    assert b["precision"] == pytest.approx(sk.precision_score(y, logits > 0, zero_division=0), abs=TOL)
    assert b["recall"] == pytest.approx(sk.recall_score(y, logits > 0, zero_division=0), abs=TOL)


def test_class_never_predicted_and_class_absent_from_labels():
    # Class 2 is never predicted (precision 0 by zero_division) and class 3 never occurs in y:
    # balanced accuracy averages the recall of the classes present, as scikit-learn does.
    K = 4
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    logits = np.full((8, K), -5.0)
    pred = np.array([0, 1, 1, 1, 0, 3, 0, 0])
    logits[np.arange(8), pred] = 5.0
    logits += np.random.default_rng(0).normal(scale=0.5, size=logits.shape)
    m = M.multiclass_metrics(logits, y, num_classes=K)
    probs = _softmax(logits)
    labels = list(range(K))
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=TOL)
    assert m["per_class"]["precision"][2] == 0.0 and m["per_class"]["recall"][3] == 0.0
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, labels=labels, average="macro", zero_division=0), abs=TOL)
    # scikit-learn refuses a one-vs-rest AUC with an absent class; ours averages the classes present.
    assert np.isnan(m["per_class"]["roc_auc"][3])
    want = np.mean([sk.roc_auc_score(y == k, probs[:, k]) for k in range(3)])
    assert m["roc_auc_ovr"] == pytest.approx(want, abs=TOL)


def test_shapes_and_ranges_are_checked():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        M.multiclass_metrics(np.zeros((3, 3)), [0, 1])
    with pytest.raises(ValueError, match="labels and predictions must be in 0..2"):
        M.multiclass_metrics(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="scores have 3 classes, num_classes is 4"):
        M.multiclass_metrics(np.zeros((2, 3)), [0, 1], num_classes=4)
