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
    labels = str(tmp_path / "data" / "labels.csv")
    assert main(["crossval", "--data", labels, "--out", str(tmp_path / "cv"), "--config", str(config), "--folds", "3",
                 "--export", "float32,int8", "--external", labels]) == 0
    summary = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert len(summary["folds"]) == 3
    assert sum(f["n"] for f in summary["folds"]) == 12  # every image tested exactly once
    assert summary["pooled"]["n"] == 12 and summary["pooled"]["n_groups"] == 6  # intervals resample the 6 lesions
    assert "Pooled out of fold" in (tmp_path / "cv" / "crossval.md").read_text()
    exported = json.loads((tmp_path / "cv" / "crossval_exported.json").read_text())
    assert set(exported["pooled"]) == {"Keras float", "float32", "int8"}
    assert all(exported["pooled"][v]["n"] == 12 for v in exported["pooled"])
    assert 0.0 <= exported["pooled"]["int8"]["abstention_agreement_with_float"] <= 1.0
    for k in range(3):  # each fold's files and card; its int8 file scored on the external set
        fold = tmp_path / "cv" / f"fold{k}"
        assert (fold / "models" / "model_card.md").is_file()
        assert json.loads((fold / "models" / "external_labels" / "external.json").read_text())["n"] == 12
    assert set(exported["external"]["labels"]) == {"int8"}
    # a crossval made before runs kept their test outputs: they are computed again, the same
    pooled = exported["pooled"]["Keras float"]
    for k in range(3):
        (tmp_path / "cv" / f"fold{k}" / "eval" / "test_outputs.npz").unlink()
    from mobile_derm.api import export_folds

    again = export_folds(tmp_path / "cv", labels, ("float32",), progress=False)["pooled"]["Keras float"]
    assert again["balanced_accuracy"] == pytest.approx(pooled["balanced_accuracy"])
    assert again["ece"] == pytest.approx(pooled["ece"], abs=1e-5)


def test_crossval_options_after_the_folds_are_checked_before_training(tmp_path, capsys):
    """Checked before the data are read, so before hours of training."""
    for options, message in ((["--external", "sd198"], "--external needs --export"),
                             (["--export", "int9"], "unknown variant 'int9'"),
                             (["--export", "float32", "--external", "sd198"], "add int8 to --export")):
        assert main(["crossval", "--data", str(tmp_path), "--out", str(tmp_path / "cv"), *options]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()


def test_pooled_figures_judge_each_photo_by_its_own_folds_rules():
    """Two folds whose decision steps and thresholds differ: each photo is named and alarmed
    by its own fold's, and the interval resamples groups."""
    import numpy as np

    from mobile_derm.app.model_info import ModelInfo
    from mobile_derm.training.crossval import pooled_report

    def info(offsets, threshold):
        return ModelInfo(name="m", version="1", backbone="b", input_size=8, mean=(0, 0, 0), std=(1, 1, 1),
                         labels=["benign", "melanoma"],
                         taxonomy={"benign": {"malignant": False}, "melanoma": {"malignant": True}},
                         decision={"offsets": offsets}, malignancy_thresholds={"sensitive": threshold})

    probs = np.array([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.9, 0.1]])
    y = np.array([1, 0, 1, 0])
    # fold A: a step that favours melanoma by log(2) (0.4 -> named melanoma), alarm at 0.35
    a = {"probs": probs[:2], "y": y[:2], "groups": np.array(["p1", "p2"]), "info": info([0.0, np.log(2.0)], 0.35)}
    # fold B: no step, alarm at 0.9 (0.8 misses)
    b = {"probs": probs[2:], "y": y[2:], "groups": np.array(["p3", "p3"]), "info": info([0.0, 0.0], 0.9)}
    report = pooled_report([a, b])
    assert report["n"] == 4 and report["n_groups"] == 3
    assert report["top1"] == 1.0  # A's step names photo 0 melanoma (right), photo 1 benign; B's as given
    assert report["malignancy_sensitive"]["sensitivity"] == 0.5  # 0.4 >= 0.35 alarms; 0.8 < 0.9 does not
    assert report["malignancy_sensitive"]["specificity"] == 1.0  # 0.3 < 0.35 and 0.1 < 0.9: both quiet

