"""Evaluation metrics in numpy, shared by Keras and .tflite evaluation.

Balanced accuracy is reported beside top-1 because HAM10000 is 67% nevi: a
model that always says "nevus" has top-1 0.67 and balanced accuracy 1/7.
"""
from __future__ import annotations

import numpy as np

from mobile_derm_quality.roc import roc_auc as separation_auc


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
    y_true, scores = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    auc = separation_auc(scores[y_true], scores[~y_true])  # the project's one ROC-AUC (mobile_derm_quality.roc)
    return float("nan") if auc is None else auc


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


def bootstrap_intervals(probs: np.ndarray, y: np.ndarray, malignant: np.ndarray, n_boot: int = 1000,
                        level: float = 0.95, seed: int = 0, groups: np.ndarray | None = None,
                        pred: np.ndarray | None = None, thresholds: dict[str, float] | None = None) -> dict:
    """Percentile bootstrap intervals of balanced accuracy and malignancy AUC.

    What is resampled is the data set's grouping unit (``groups``: one id per image, the
    lesion or patient the splits keep together; without it every image is its own group).
    Images of one lesion are not independent evidence: five photos of one lesion that the
    model gets wrong are one mistake seen five times, and resampling them one by one would
    give an interval as narrow as if five lesions had been seen.

    Groups are resampled within each class (a group counts for the class of its first
    image; each class keeps its number of groups), so every replicate has every class and
    the interval shows how much the rare classes' few lesions move the figure: in
    HAM10000's test split dermatofibroma has 18 images, and one of them is worth 0.8
    points of balanced accuracy.

    ``thresholds`` (operating points on the malignancy score, name -> threshold) add
    ``malignancy_<name>``: {"sensitivity": [lo, hi], "specificity": [lo, hi]}.
    """
    y = np.asarray(y)
    n_classes = probs.shape[1]
    rng = np.random.default_rng(seed)
    correct = (probs.argmax(axis=1) if pred is None else np.asarray(pred)) == y  # pred: a decision rule's classes
    mal_scores = probs @ np.asarray(malignant, np.float64)
    y_mal = np.asarray(malignant, bool)[y]
    members = _group_members(np.arange(len(y)) if groups is None else np.asarray(groups))
    group_class = np.array([y[m[0]] for m in members])
    strata = [np.flatnonzero(group_class == c) for c in range(n_classes) if np.any(group_class == c)]
    present = [c for c in range(n_classes) if np.any(y == c)]
    recalls = np.empty((n_boot, len(present)))
    aucs = np.empty(n_boot)
    points = {name: np.full((n_boot, 2), np.nan) for name in (thresholds or {})}
    for b in range(n_boot):
        picked = np.concatenate([rng.choice(stratum, size=len(stratum)) for stratum in strata])
        sample = np.concatenate([members[g] for g in picked])
        recalls[b] = [correct[sample][y[sample] == c].mean() if np.any(y[sample] == c) else np.nan for c in present]
        aucs[b] = roc_auc(y_mal[sample], mal_scores[sample])
        for name, t in (thresholds or {}).items():
            points[name][b] = sensitivity_specificity(y_mal[sample], mal_scores[sample], t)
    lo, hi = (1.0 - level) / 2 * 100, (1.0 + level) / 2 * 100
    out = {"balanced_accuracy": [float(v) for v in np.percentile(np.nanmean(recalls, axis=1), [lo, hi])]}
    if np.all(np.isfinite(aucs)):
        out["malignancy_auc"] = [float(v) for v in np.percentile(aucs, [lo, hi])]
    for name, values in points.items():
        if np.all(np.isfinite(values)):
            out[f"malignancy_{name}"] = {measure: [float(v) for v in np.percentile(values[:, k], [lo, hi])]
                                         for k, measure in enumerate(("sensitivity", "specificity"))}
    return out


def _group_members(groups: np.ndarray) -> list[np.ndarray]:
    """Image indices of each distinct group, in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)  # groups in the order the images list them
    return [np.flatnonzero(inverse == g) for g in order]
