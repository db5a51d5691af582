"""Evaluation metrics in numpy, shared by Keras and .tflite evaluation.

Balanced accuracy is reported beside top-1 because HAM10000 is 67% nevi: a
model that always says "nevus" has top-1 0.67 and balanced accuracy 1/7.
"""
from __future__ import annotations

import numpy as np


def topk_accuracy(probs: np.ndarray, y: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in ``y``."""
    recall = per_class_recall(confusion_matrix(y, pred, n_classes))
    return float(np.nanmean(recall))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending), one
    point per distinct score so ties are handled like scikit-learn."""
    y_true = np.asarray(y_true).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y_true[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(t)[distinct]
    fps = (distinct + 1) - tps
    p, n = max(t.sum(), 1), max((~t).sum(), 1)
    tpr = np.r_[0.0, tps / p]
    fpr = np.r_[0.0, fps / n]
    thresholds = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thresholds


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y_true = np.asarray(y_true).astype(bool)
    if y_true.all() or (~y_true).all():
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, np.asarray(scores, dtype=np.float64))
    return float(np.trapezoid(tpr, fpr))


def sensitivity_specificity(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    y_true = np.asarray(y_true).astype(bool)
    positive = scores >= threshold
    sens = float(np.mean(positive[y_true])) if y_true.any() else float("nan")
    spec = float(np.mean(~positive[~y_true])) if (~y_true).any() else float("nan")
    return sens, spec


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict:
    """Confidence/accuracy per equal-width confidence bin (for the ECE and its plot)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": edges,
            "count": count,
            "confidence": np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan),
            "accuracy": np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan),
        }


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    bins = reliability_bins(probs, y, n_bins)
    weight = bins["count"] / max(len(y), 1)
    gap = np.abs(np.nan_to_num(bins["accuracy"]) - np.nan_to_num(bins["confidence"]))
    return float(np.sum(weight * gap))
