import json

import pytest

from mobile_derm.cli import main
from mobile_derm.training.crossval import summarize


def test_summarize_gives_mean_and_spread():
    reports = [{"top1": 0.5, "top3": 1.0, "balanced_accuracy": 0.4, "malignancy_auc": None, "ece": 0.1, "treatment_auc": {"steroid": 0.8}},
               {"top1": 0.7, "top3": 1.0, "balanced_accuracy": 0.6, "malignancy_auc": 0.9, "ece": 0.3, "treatment_auc": {"steroid": 0.6}}]
    summary = summarize(reports)
    assert summary["mean"]["top1"] == pytest.approx(0.6)
    assert summary["std"]["top1"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["mean"]["malignancy_auc"] == 0.9 and summary["std"]["malignancy_auc"] is None
    assert summary["mean"]["treatment_auc.steroid"] == pytest.approx(0.7)


def test_crossval_command_runs_every_fold(tmp_path, monkeypatch):
    from mobile_derm.datasets.synthetic import generate_demo_dataset

    monkeypatch.setenv("MOBILE_DERM_CACHE", str(tmp_path / "cache"))
    generate_demo_dataset(tmp_path / "data", classes=["demo_nevus_like", "demo_melanoma_like"],
                          lesions_per_class=3, views_per_lesion=2, size=48)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"input_size": 32, "head_epochs": 2, "finetune_epochs": 0, "allow_random_weights": True}))
    assert main(["crossval", "--data", str(tmp_path / "data" / "labels.csv"), "--out", str(tmp_path / "cv"),
                 "--config", str(config), "--folds", "3"]) == 0
    summary = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert len(summary["folds"]) == 3
    assert sum(f["n"] for f in summary["folds"]) == 12  # every image tested exactly once
    assert (tmp_path / "cv" / "crossval.md").read_text().count("|") > 10
