import numpy as np
import pytest

from mobile_derm.training.config import TrainConfig
from mobile_derm.evaluation.report import evaluate_probs, operating_points
from mobile_derm.app.model_info import ModelInfo


def info_for(labels, malignant, treatments=None):
    treatments = treatments or {}
    taxonomy = {l: {"display_name": l.upper(), "malignant": l in malignant, "treatments": treatments.get(l, [])} for l in labels}
    return ModelInfo(name="t", version="1", backbone="efficientnet_lite0", input_size=8,
                     mean=(127.0,) * 3, std=(128.0,) * 3, labels=list(labels), taxonomy=taxonomy)


def test_operating_points_meet_their_targets_on_validation():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)  # class 2 is malignant
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    malignant = np.array([False, False, True])
    points = operating_points(probs, y, malignant, TrainConfig())
    scores, y_mal = probs[:, 2], y == 2
    sens = np.mean(scores[y_mal] >= points["malignancy_thresholds"]["sensitive"])
    spec = np.mean(scores[~y_mal] < points["malignancy_thresholds"]["specific"])
    assert sens >= 0.90 and spec >= 0.90
    # abstention keeps 95% of validation images
    assert np.mean(probs.max(1) >= points["ood_threshold"]) == pytest.approx(0.95, abs=0.01)


def test_operating_points_without_malignant_cases_leave_thresholds_empty():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    points = operating_points(probs, np.array([0, 1]), np.array([False, False]), TrainConfig())
    assert points["malignancy_thresholds"] == {}


def test_evaluate_probs_reports_malignancy_and_treatments(tmp_path):
    info = info_for(["nv", "mel", "tinea"], malignant={"mel"}, treatments={"mel": ["surgery_biopsy"], "tinea": ["antifungal"]})
    info.malignancy_thresholds = {"sensitive": 0.3, "specific": 0.6}
    y = np.array([0, 1, 2, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    report = evaluate_probs(probs, y, info, out_dir=tmp_path, title="t")
    assert report["top1"] == 0.75
    assert report["per_class_recall"] == {"nv": 1.0, "mel": 0.5, "tinea": 1.0}
    assert report["malignancy_auc"] == 1.0  # mel probs 0.5, 0.4 above every other 0.1, 0.1
    assert report["malignancy_sensitive"] == {"threshold": 0.3, "sensitivity": 1.0, "specificity": 1.0}
    assert report["malignancy_specific"]["sensitivity"] == 0.0
    assert report["treatment_auc"]["antifungal"] == 1.0
    # mel has two images, one right: resampled, its recall is 0, 0.5 or 1, so balanced accuracy spans 2/3..1
    assert report["ci95"]["balanced_accuracy"] == [2 / 3, 1.0]
    assert report["ci95"]["malignancy_auc"] == [1.0, 1.0]
    assert (tmp_path / "report.json").is_file() and (tmp_path / "evaluation.png").stat().st_size > 0
    # without targets nothing is judged; with them, each point says whether it kept its target, with intervals
    assert "met_target" not in report["malignancy_specific"]
    info.malignancy_targets = {"sensitive": {"sensitivity": 0.9}, "specific": {"specificity": 0.9}}
    judged = evaluate_probs(probs, y, info)
    assert judged["malignancy_sensitive"]["met_target"] is True and judged["malignancy_sensitive"]["target"] == {"sensitivity": 0.9}
    assert judged["malignancy_specific"]["met_target"] is True  # specificity 1.0 (its sensitivity 0 is not its target)
    assert judged["ci95"]["malignancy_sensitive"]["sensitivity"] == [1.0, 1.0]
    assert judged["ci95"]["malignancy_specific"]["sensitivity"] == [0.0, 0.0]
    info.malignancy_targets["sensitive"]["sensitivity"] = 1.01
    assert evaluate_probs(probs, y, info)["malignancy_sensitive"]["met_target"] is False


def test_operating_points_record_what_they_were_chosen_for():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    probs = np.eye(3)[y] * 0.5 + 0.5 / 3
    config = TrainConfig(min_sensitivity=0.85, min_specificity=0.95)
    targets = operating_points(probs, y, np.array([False, False, True]), config)["malignancy_targets"]
    assert targets == {"sensitive": {"sensitivity": 0.85}, "specific": {"specificity": 0.95}}


def test_model_info_round_trips_and_masks():
    info = info_for(["a", "b", "c"], malignant={"b"}, treatments={"a": ["steroid"], "c": ["steroid", "antiviral"]})
    again = ModelInfo.from_json(info.to_json())
    assert again == info
    assert again.malignant_mask().tolist() == [False, True, False]
    masks = again.treatment_masks()
    assert masks["steroid"].tolist() == [True, False, True] and masks["antiviral"].tolist() == [False, False, True]


def test_evaluate_probs_intervals_resample_the_groups_it_is_given():
    info = info_for(["nv", "mel"], malignant={"mel"})
    y = np.repeat([0, 0, 1, 1], 30)
    right = np.repeat([True, False, True, False], 30)
    probs = np.eye(2)[np.where(right, y, 1 - y)] * 0.8 + 0.1
    by_image = evaluate_probs(probs, y, info)
    by_lesion = evaluate_probs(probs, y, info, groups=np.repeat(["l1", "l2", "l3", "l4"], 30))
    assert by_image["ci95_resamples"] == "images" and by_lesion["ci95_resamples"] == "groups (4)"
    assert np.diff(by_lesion["ci95"]["balanced_accuracy"])[0] > 3 * np.diff(by_image["ci95"]["balanced_accuracy"])[0]
