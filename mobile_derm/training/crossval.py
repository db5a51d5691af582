"""Grouped k-fold cross-validation: the honest number for small data sets
(PAD-UFES-20's 745 phone photos, SD-198's 800 atlas photos).

Each fold trains with ``mobile_derm.training.fit.train`` on k-2 parts, picks its
thresholds on the next part (validation) and reports on its own test part; the summary
gives each metric's mean and standard deviation over folds, and the pooled out-of-fold
figures: every photo scored once, by the fold model that never saw its patient, judged by
that fold's own decision step and thresholds, with 95% intervals that resample the data
set's groups (patients), not photos (``pooled_report``). ``mobile-derm crossval --export``
measures the same for each fold's exported files (``mobile_derm.api.export_folds``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.training.config import TrainConfig
from mobile_derm.training.runs import TEST_OUTPUTS_FILE
from mobile_derm.io_utils import atomic_write_text

SUMMARY_METRICS = ("top1", "top3", "balanced_accuracy", "malignancy_auc", "ece")


def cross_validate(dataset, config: TrainConfig, out_dir: str | Path, k: int = 5, taxonomy=None, progress: bool = True,
                   distribution=None) -> dict:
    """``distribution``: where each fold fine-tunes (``mobile_derm.training.distribute``);
    a worker that is not the chief returns an empty summary."""
    from mobile_derm.datasets.splits import grouped_kfold
    from mobile_derm.training.distribute import Distribution, is_chief, strategy_for
    from mobile_derm.training.fit import train

    distribution = distribution or Distribution()
    strategy = strategy_for(distribution.strategy)

    out_dir = Path(out_dir)
    folds = grouped_kfold(dataset, k=k, seed=config.seed, with_val=True)
    reports = []
    for fold in folds:
        print(f"\n== fold {fold.fold + 1}/{k}: {len(fold.train)} train / {len(fold.val)} val / {len(fold.test)} test")
        result = train(dataset, config, out_dir / f"fold{fold.fold}", taxonomy=taxonomy, split=fold, progress=progress,
                       distribution=distribution)
        reports.append(result.test_report)
    if not is_chief(strategy):
        return {}
    summary = summarize(reports)
    summary["pooled"] = pooled_report([fold_outputs(out_dir / f"fold{fold.fold}") for fold in folds])
    summary.update({"dataset": dataset.name, "k": k, "n_images": len(dataset.samples), "config": config.to_dict()})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "crossval.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / "crossval.md", markdown(summary))
    return summary


def summarize(reports: list[dict]) -> dict:
    """Mean and standard deviation over folds of each metric, plus the
    treatment-option AUCs (classes span steroid, antifungal, ... in SD-198)."""
    out = {"folds": reports, "mean": {}, "std": {}}
    names = list(SUMMARY_METRICS) + [f"treatment_auc.{t}" for t in sorted({t for r in reports for t in r.get("treatment_auc", {})})]
    for name in names:
        if name.startswith("treatment_auc."):
            values = [r["treatment_auc"].get(name.split(".", 1)[1]) for r in reports]
        else:
            values = [r.get(name) for r in reports]
        values = np.array([v for v in values if v is not None], dtype=np.float64)
        out["mean"][name] = float(values.mean()) if len(values) else None
        out["std"][name] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def fold_outputs(run_dir: str | Path) -> dict:
    """A fold's test-split outputs as ``fit.train`` saved them (``eval/test_outputs.npz``:
    probabilities, labels, groups) with the fold's ModelInfo (its decision step and thresholds)."""
    from mobile_derm.app.model_info import ModelInfo

    run_dir = Path(run_dir)
    with np.load(run_dir / "eval" / TEST_OUTPUTS_FILE, allow_pickle=False) as saved:
        outputs = {name: saved[name] for name in ("probs", "y", "groups")}
    return {**outputs, "info": ModelInfo.load(run_dir / "model_info.json")}


def pooled_report(folds: list[dict]) -> dict:
    """Out-of-fold figures over all folds together. ``folds``: one dict per fold with
    ``probs`` (its test photos, in the model's label order), ``y``, ``groups`` and ``info``
    (that fold's ModelInfo: each photo is named by its own fold's decision step and judged
    at its own fold's operating points). Intervals resample groups (patients) within class."""
    from mobile_derm.evaluation import metrics

    info = folds[0]["info"]
    probs = np.concatenate([f["probs"] for f in folds]).astype(np.float64)
    y = np.concatenate([f["y"] for f in folds]).astype(np.int64)
    groups = np.concatenate([np.asarray(f["groups"]).astype(str) for f in folds])
    pred = np.concatenate([f["info"].decide(f["probs"]) for f in folds])
    malignant = info.malignant_mask()
    mal_score = probs @ malignant.astype(np.float64)
    n_classes = probs.shape[1]
    report = {"n": int(len(y)), "n_groups": int(len(set(groups.tolist()))),
              "top1": float(np.mean(pred == y)),
              "balanced_accuracy": metrics.balanced_accuracy(y, pred, n_classes),
              "malignancy_auc": metrics.roc_auc(malignant[y], mal_score),
              "ece": metrics.expected_calibration_error(probs, y),
              "ci95": metrics.bootstrap_intervals(probs, y, malignant, groups=groups, pred=pred),
              "ci95_resamples": "groups"}
    truth = malignant[y]
    for name in info.malignancy_thresholds:
        # each photo against its own fold's threshold: the alarm an app would have raised
        threshold = np.concatenate([np.full(len(f["y"]), f["info"].malignancy_thresholds[name]) for f in folds])
        alarm = mal_score >= threshold
        report[f"malignancy_{name}"] = {"sensitivity": float(alarm[truth].mean()) if truth.any() else None,
                                        "specificity": float((~alarm[~truth]).mean()) if (~truth).any() else None}
    low = np.concatenate([f["probs"].max(axis=1) < f["info"].ood_threshold for f in folds
                          if f["info"].ood_threshold is not None] or [np.zeros(0, bool)])
    report["abstain_rate"] = float(low.mean()) if len(low) else None
    return json.loads(json.dumps(report, default=float))


def markdown(summary: dict) -> str:
    lines = [f"Grouped {summary['k']}-fold cross-validation on {summary['dataset']} ({summary['n_images']} images)", "",
             "| metric | mean | std over folds |", "|---|---|---|"]
    for name, mean in summary["mean"].items():
        std = summary["std"][name]
        lines.append(f"| {name} | {'-' if mean is None else f'{mean:.3f}'} | {'-' if std is None else f'{std:.3f}'} |")
    if summary.get("pooled"):
        lines += ["", pooled_markdown({"Keras float": summary["pooled"]})]
    return "\n".join(lines) + "\n"


def pooled_markdown(pooled: dict[str, dict]) -> str:
    """One row per model kind (Keras float, or an exported variant) of ``pooled_report``s."""
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    def ci(interval):
        return f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else ""

    lines = ["Pooled out of fold (each photo scored by the fold that never saw its patient; 95% intervals resample "
             "patients):", "",
             "| model | n (patients) | top-1 | balanced accuracy | malignancy AUC | ECE | sensitive point: sens / spec "
             "| specific point: sens / spec |", "|---|---|---|---|---|---|---|---|"]
    for name, r in pooled.items():
        points = [r.get(f"malignancy_{p}", {}) for p in ("sensitive", "specific")]
        lines.append(f"| {name} | {r['n']} ({r['n_groups']}) | {f(r['top1'])} | {f(r['balanced_accuracy'])}"
                     f"{ci(r['ci95'].get('balanced_accuracy'))} | {f(r['malignancy_auc'])}"
                     f"{ci(r['ci95'].get('malignancy_auc'))} | {f(r['ece'])} | "
                     + " | ".join(f"{f(p.get('sensitivity'))} / {f(p.get('specificity'))}" for p in points) + " |")
    return "\n".join(lines) + "\n"
