"""Scores from predictions, in numpy: one definition of every metric, for every trainer.

The sequential and the fused trainer both score a candidate's validation
predictions here after each epoch, so a value means the same whichever trained it
(and a held-out test split is scored by the same code). Inputs are model outputs
as the *saved* model gives them: probabilities for classification (sigmoid or
softmax), original units for regression. Everything returned is a plain float.
"""

from __future__ import annotations

import numpy as np

from ..settings import Task

EPSILON = 1e-7  # probability clip, as Keras' cross-entropies use


def score(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metric name (without "val_") -> value for one candidate's predictions.

    ``y_true``: class index (classification) or target (regression), shape (n,) or (n, 1).
    ``y_pred``: (n, 1) probabilities or values, or (n, k) class probabilities.
    A prediction that is not finite gives non-finite scores (the caller fails the trial).
    """
    return {name: float(values[0]) for name, values in
            score_population(task, y_true, np.asarray(y_pred)[:, None, :]).items()}


def score_population(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorized ``score`` for K candidates at once: ``y_pred`` is (n, K, out); values are (K,).

    A candidate with any non-finite prediction gets NaN for every score.
    """
    y_pred = np.asarray(y_pred, dtype=np.float64)
    finite = np.isfinite(y_pred).all(axis=(0, 2))
    with np.errstate(all="ignore"):
        scores = _scores(task, np.asarray(y_true).reshape(-1), y_pred)
    return {name: np.where(finite, values, np.nan) for name, values in scores.items()}


def _scores(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    if task == "regression":
        error = y_pred[..., 0] - y_true.astype(np.float64)[:, None]
        mse = np.mean(error**2, axis=0)
        return {"loss": mse, "rmse": np.sqrt(mse), "mae": np.mean(np.abs(error), axis=0)}
    labels = y_true.astype(np.int64)
    if task == "binary":
        p = np.clip(y_pred[..., 0], EPSILON, 1 - EPSILON)
        positive = (labels == 1)[:, None]
        loss = -np.mean(np.where(positive, np.log(p), np.log1p(-p)), axis=0)
        hits = (y_pred[..., 0] > 0.5) == positive
        return {"loss": loss, "accuracy": np.mean(hits, axis=0), "auc": _auc(labels, y_pred[..., 0])}
    p_true = np.take_along_axis(y_pred, labels[:, None, None], axis=2)[..., 0]
    loss = -np.mean(np.log(np.clip(p_true, EPSILON, 1.0)), axis=0)
    hits = np.argmax(y_pred, axis=2) == labels[:, None]
    return {"loss": loss, "accuracy": np.mean(hits, axis=0)}


def _auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC per column of ``scores`` (n, K) by the rank-sum formula (ties get mid-ranks)."""
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    out = np.full(scores.shape[1], np.nan)
    if n_pos == 0 or n_neg == 0:
        return out
    for k in range(scores.shape[1]):
        column = scores[:, k]
        if not np.isfinite(column).all():
            continue
        ranks = _mid_ranks(column)
        out[k] = (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def class_report(y_true: np.ndarray, probabilities: np.ndarray, n_classes: int) -> dict:
    """Per-class view of a classifier: balanced accuracy, macro F1, per-class recall/precision.

    ``probabilities``: (n, 1) for binary (probability of class 1) or (n, n_classes).
    """
    labels = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    predicted = (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else np.argmax(p, axis=1)
    recalls, precisions, f1s = [], [], []
    for c in range(n_classes):
        true_c, pred_c = labels == c, predicted == c
        tp = float(np.sum(true_c & pred_c))
        recall = tp / true_c.sum() if true_c.any() else None
        precision = tp / pred_c.sum() if pred_c.any() else 0.0
        f1 = (2 * precision * recall / (precision + recall)
              if recall is not None and precision + recall > 0 else 0.0)
        recalls.append(recall)
        precisions.append(precision)
        f1s.append(f1)
    present = [r for r in recalls if r is not None]
    report = {
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "macro_f1": float(np.mean(f1s)),
        "per_class": [{"class": c, "recall": recalls[c], "precision": precisions[c], "f1": f1s[c],
                       "support": int(np.sum(labels == c))} for c in range(n_classes)],
    }
    if p.shape[1] == 1:
        report["auc"] = float(_auc(labels, p)[0])
    return report


def evaluation_report(task: Task, y_true: np.ndarray, predictions: np.ndarray, n_classes: int | None) -> dict:
    """Everything a user judges one model by on one split: every metric (``score``'s names,
    non-finite ones as None) and, for a classifier, ``class_report``'s per-class view."""
    predictions = np.asarray(predictions)
    report: dict = {"rows": int(len(predictions))}
    report.update({name: (value if np.isfinite(value) else None)
                   for name, value in score(task, y_true, predictions).items()})
    if task != "regression" and n_classes:
        report.update(class_report(y_true, predictions, n_classes))
    return report
