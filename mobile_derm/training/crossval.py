"""Grouped k-fold cross-validation: the honest number for small data sets
(PAD-UFES-20's 745 phone photos, SD-198's 800 atlas photos).

Each fold trains with ``mobile_derm.training.fit.train`` on k-2 parts, picks its
thresholds on the next part (validation) and reports on its own test part (an
ensemble's members also train on shares of the validation part, each scoring the
share it never saw: ``TrainConfig.ensemble_members``);
the summary gives each metric's mean and standard deviation over folds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.training.config import TrainConfig
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


def markdown(summary: dict) -> str:
    lines = [f"Grouped {summary['k']}-fold cross-validation on {summary['dataset']} ({summary['n_images']} images)", "",
             "| metric | mean | std over folds |", "|---|---|---|"]
    for name, mean in summary["mean"].items():
        std = summary["std"][name]
        lines.append(f"| {name} | {'-' if mean is None else f'{mean:.3f}'} | {'-' if std is None else f'{std:.3f}'} |")
    return "\n".join(lines) + "\n"
