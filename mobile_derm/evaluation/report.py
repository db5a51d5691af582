"""Evaluate probabilities from any model (Keras or .tflite) on a labelled split.

Writes ``report.json`` plus PNG plots (confusion matrix, malignancy ROC,
reliability diagram) next to the numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.evaluation import metrics
from mobile_derm.io_utils import atomic_write_text
from mobile_derm_quality.files import pyplot, save_figure
from mobile_derm.app.model_info import ModelInfo
from mobile_derm.taxonomy import choose_thresholds


def operating_points(val_probs: np.ndarray, y_val: np.ndarray, malignant: np.ndarray, config) -> dict:
    """Malignancy thresholds (sensitive / specific) and the abstention threshold,
    all chosen on validation data so the test split stays untouched."""
    scores = val_probs @ malignant.astype(np.float64)
    y_mal = malignant[y_val]
    thresholds = {}
    if y_mal.any() and (~y_mal).any():  # e.g. the demo data may have no malignant class in val
        thresholds = choose_thresholds(y_mal, scores, config.min_sensitivity, config.min_specificity)
    top = val_probs.max(axis=1)
    ood = float(np.quantile(top, 1.0 - config.ood_keep_fraction)) if len(top) else None
    targets = {"sensitive": {"sensitivity": config.min_sensitivity},
               "specific": {"specificity": config.min_specificity}} if thresholds else {}
    return {"malignancy_thresholds": thresholds, "malignancy_targets": targets, "ood_threshold": ood}


def evaluate_probs(probs: np.ndarray, y: np.ndarray, info: ModelInfo, out_dir: str | Path | None = None, title: str = "",
                   extra: dict | None = None, groups: np.ndarray | None = None) -> dict:
    """Metrics of ``probs`` against labels ``y``, with 95% bootstrap intervals of balanced
    accuracy and malignancy AUC (``ci95``); ``extra`` entries are added to the report.
    ``groups`` (one id per image: the lesion or patient, as the splits use) makes the
    intervals resample those units instead of single images (``ci95_resamples`` says which)."""
    n = len(info.labels)
    # classes are named by the model's decision rule (the class-balanced step, when it has
    # one: ModelInfo.decision); calibration (ECE) is a property of the probabilities themselves
    ranking = info.decision_scores(probs)
    pred = ranking.argmax(axis=1)
    cm = metrics.confusion_matrix(y, pred, n)
    recall = metrics.per_class_recall(cm)
    malignant = info.malignant_mask()
    y_mal = malignant[y]
    mal_scores = probs @ malignant.astype(np.float64)
    report: dict = {
        "n": int(len(y)),
        "top1": metrics.topk_accuracy(ranking, y, 1),
        "top3": metrics.topk_accuracy(ranking, y, 3),
        "balanced_accuracy": metrics.balanced_accuracy(y, pred, n),
        "per_class_recall": {l: (None if np.isnan(r) else float(r)) for l, r in zip(info.labels, recall)},
        "confusion_matrix": cm.tolist(),
        "labels": list(info.labels),
        "ece": metrics.expected_calibration_error(probs, y),
        "malignancy_auc": metrics.roc_auc(y_mal, mal_scores),
    }
    for name, t in info.malignancy_thresholds.items():
        sens, spec = metrics.sensitivity_specificity(y_mal, mal_scores, t)
        report[f"malignancy_{name}"] = {"threshold": t, "sensitivity": sens, "specificity": spec}
        # did the point keep, on these photos, what it was chosen for on validation?
        for measure, target in info.malignancy_targets.get(name, {}).items():
            achieved = report[f"malignancy_{name}"][measure]
            report[f"malignancy_{name}"].update(target={measure: target},
                                                met_target=None if np.isnan(achieved) else bool(achieved >= target))
    treatments = {}
    for name, mask in info.treatment_masks().items():
        treatments[name] = metrics.roc_auc(mask[y], probs @ mask.astype(np.float64))
    report["treatment_auc"] = treatments
    if len(y):
        report["ci95"] = metrics.bootstrap_intervals(probs, y, malignant, groups=groups, pred=pred,
                                                     thresholds=info.malignancy_thresholds)
        report["ci95_resamples"] = "images" if groups is None else f"groups ({len(set(np.asarray(groups).tolist()))})"
    if info.ood_threshold is not None:
        report["abstain_rate"] = float(np.mean(probs.max(axis=1) < info.ood_threshold))
    report.update(extra or {})
    report = _jsonable(report)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
        plot_report(probs, y, info, report, out_dir, title)
    return report


def plot_calibration(probs_by_name: dict[str, np.ndarray], y: np.ndarray, out_dir: str | Path, title: str = "") -> None:
    """Reliability diagrams side by side (e.g. before and after calibration) into
    ``out_dir/calibration.png``: accuracy against confidence per bin, with each ECE."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(probs_by_name), figsize=(5.2 * len(probs_by_name), 5), squeeze=False)
    for ax, (name, probs) in zip(axes[0], probs_by_name.items()):
        bins = metrics.reliability_bins(probs, y)
        centres = (bins["edges"][:-1] + bins["edges"][1:]) / 2
        ax.bar(centres, np.nan_to_num(bins["accuracy"]), width=1 / len(centres), edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot(centres, np.nan_to_num(bins["confidence"]), "k.", label="mean confidence")
        # where the photos are: the ECE weighs each bin's gap by its share
        ax.bar(centres, bins["count"] / max(len(y), 1), width=1 / len(centres), color="grey", alpha=0.6,
               label="share of photos")
        ax.plot([0, 1], [0, 1], "r--", lw=1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {metrics.expected_calibration_error(probs, y):.3f}")
        ax.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(out_dir) / "calibration.png")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def plot_report(probs, y, info: ModelInfo, report: dict, out_dir: Path, title: str = "") -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax = axes[0]
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(info.labels)), info.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(info.labels)), info.labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion (row-normalised)\nbalanced acc {report['balanced_accuracy']:.3f}")
    malignant = info.malignant_mask()
    ax = axes[1]
    if report["malignancy_auc"] is not None:
        fpr, tpr, _ = metrics.roc_curve(malignant[y], probs @ malignant.astype(np.float64))
        ax.plot(fpr, tpr, label=f"AUC {report['malignancy_auc']:.3f}")
        for name in ("sensitive", "specific"):
            point = report.get(f"malignancy_{name}")
            if point:
                ax.plot(1 - point["specificity"], point["sensitivity"], "o", label=f"{name} point")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("malignancy ROC")
    ax.legend(loc="lower right")
    bins = metrics.reliability_bins(probs, y)
    ax = axes[2]
    centres = (bins["edges"][:-1] + bins["edges"][1:]) / 2
    ax.bar(centres, np.nan_to_num(bins["accuracy"]), width=1 / len(centres), edgecolor="k", alpha=0.7)
    ax.plot([0, 1], [0, 1], "r--", lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {report['ece']:.3f})")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out_dir / "evaluation.png")
