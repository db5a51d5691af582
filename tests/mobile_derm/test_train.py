"""Training: the real code path on tiny data, and resuming after a SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mobile_derm.errors import DataError
from mobile_derm.training.config import TrainConfig
from mobile_derm.training.runs import load_run
from mobile_derm.model.classifier import predict_probs
from mobile_derm.training.fit import train
from mobile_derm.training.resume import STATE_DIR, STATE_FILE, epochs_done


def test_train_on_a_tiny_real_ham10000_subset(ham10000_lesions, tmp_path):
    # four lesions per class: the smallest set a 70/15/15 grouped split accepts
    subset = ham10000_lesions(4)
    # the HAM10000 recipe (the defaults), tiny
    config = TrainConfig(input_size=64, head_epochs=3, finetune_epochs=1, batch_size=8, allow_random_weights=True)
    result = train(subset, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    assert result.info.labels == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert result.info.malignant_mask().tolist() == [True, True, False, False, True, False, False]
    assert {"top1", "balanced_accuracy", "malignancy_auc", "ece"} <= set(result.test_report)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["finetune"]["loss"]) == 1  # the one epoch asked for
    # feature-space abstention: fitted on train, calibrated on validation, reported on test
    assert 0.0 <= result.test_report["familiarity_abstain_rate"] <= 1.0
    for name in ("split.json", "train_config.json", "model_info.json", "weights.h5", "familiarity.npz",
                 "eval/report.json", "eval/evaluation.png"):
        assert (tmp_path / "run" / name).is_file(), name
    # the saved run rebuilds into the same model
    model, _, info = load_run(tmp_path / "run")
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(predict_probs(model, x, info.mean, info.std),
                               predict_probs(result.model, x, info.mean, info.std), atol=1e-5)


def _train_command(data: Path, out: Path, config: Path):
    return [sys.executable, "-m", "mobile_derm.cli", "train", "--data", str(data), "--out", str(out), "--config", str(config)]


def test_training_killed_mid_run_resumes_and_finishes(tmp_path):
    from mobile_derm.datasets.synthetic import generate_demo_dataset

    generate_demo_dataset(tmp_path / "data", lesions_per_class=4, views_per_lesion=3, size=64)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"input_size": 48, "head_epochs": 2, "finetune_epochs": 6, "batch_size": 8,
                                  "early_stopping_patience": 10, "allow_random_weights": True}))
    out = tmp_path / "run"
    env = {**os.environ, "MOBILE_DERM_CACHE": str(tmp_path / "cache")}
    command = _train_command(tmp_path / "data" / "labels.csv", out, config)
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    backup = out / "backup"
    deadline = time.time() + 300
    # wait until at least one fine-tuning epoch is backed up, then kill -9. The
    # "checkpoint" state file is what a restart restores from and is written after
    # the .index/.data files: waiting for *.index alone raced with that write.
    while time.time() < deadline and first.poll() is None:
        if backup.is_dir() and any(backup.rglob("checkpoint")):
            break
        time.sleep(0.5)
    assert first.poll() is None, "training ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "weights.h5").exists()
    done = epochs_done(backup)
    # the early-stopping state of the epoch the backup ends with is on disk, with its history
    before_kill = json.loads((backup / STATE_DIR / STATE_FILE).read_text())[str(done - 1)]["history"]
    assert 1 <= done < 6 and len(before_kill["val_loss"]) == done

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (out / "weights.h5").is_file() and (out / "model_info.json").is_file()
    # the second process ran only the epochs that were left ...
    assert f"Epoch {done + 1}/6" in second.stdout and f"Epoch {done}/6" not in second.stdout
    assert f"resuming after epoch {done} of 6" in second.stdout
    # ... and the run's history is every epoch's, the ones before the kill as they were
    history = json.loads((out / "history.json").read_text())
    assert len(history["finetune"]["val_loss"]) == 6
    assert history["finetune"]["val_loss"][:done] == before_kill["val_loss"]
    assert not backup.exists() or not any(backup.rglob("*.index"))  # cleaned up after success
    assert not (backup / STATE_DIR).exists()


def test_a_fine_tune_that_does_not_beat_the_head_is_discarded(tmp_path):
    from mobile_derm.datasets.synthetic import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "data", classes=["demo_nevus_like", "demo_melanoma_like", "demo_bcc_like"],
                                 lesions_per_class=4, views_per_lesion=2, size=48)
    # an absurd learning rate wrecks the network in the first step
    config = TrainConfig(input_size=32, head_epochs=5, finetune_epochs=2, finetune_learning_rate=50.0,
                         warmup_epochs=0.0, batch_size=8, allow_random_weights=True)
    result = train(data, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["kept"] == "head"
    assert min(history["finetune"]["val_loss"]) >= history["head_val_loss"]
    # the saved weights are the head's (weights.h5 holds the trained model; load_run folds the calibration in)
    from mobile_derm.training.calibration import temper

    head_model, _, info = load_run(tmp_path / "run")
    head_model.load_weights(tmp_path / "run" / "head_weights.h5")
    saved, _, _ = load_run(tmp_path / "run")
    saved.load_weights(tmp_path / "run" / "weights.h5")
    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    head_probs = predict_probs(head_model, x, info.mean, info.std)
    np.testing.assert_allclose(predict_probs(saved, x, info.mean, info.std), head_probs, atol=1e-6)
    calibration = info.calibration
    np.testing.assert_allclose(predict_probs(result.model, x, info.mean, info.std),
                               temper(head_probs, calibration["temperature"], np.asarray(calibration["shift"])), atol=1e-5)


def _imbalanced_demo(tmp_path):
    """Three synthetic classes, the first with twice the lesions of the others."""
    from mobile_derm.datasets.synthetic import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "data", classes=["demo_nevus_like", "demo_melanoma_like", "demo_bcc_like"],
                                 lesions_per_class=8, views_per_lesion=2, size=48)
    keep, lesions = [], {}
    for i, sample in enumerate(data.samples):
        groups = lesions.setdefault(sample.label, set())
        if sample.label == "demo_nevus_like" or sample.group in groups or len(groups) < 4:
            groups.add(sample.group)
            keep.append(i)
    return data.subset(keep, name=data.name)


def test_calibration_is_folded_into_the_head_and_the_decision_step_travels_with_the_run(tmp_path):
    from mobile_derm.training.calibration import temper
    from mobile_derm.training.logit_adjustment import TAU_GRID, prior_shift
    from mobile_derm.datasets.splits import Split

    data = _imbalanced_demo(tmp_path)
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)

    # a fixed tau: the saved decision record, the run's model and load_run all agree
    config = TrainConfig(input_size=32, head_epochs=3, finetune_epochs=0, batch_size=8, allow_random_weights=True,
                         logit_adjustment=1.0)
    result = train(data, config, tmp_path / "fixed", cache_dir=tmp_path / "cache", progress=False)
    decision, calibration = result.info.decision, result.info.calibration
    split = Split.load(tmp_path / "fixed" / "split.json", data)
    y = np.array([data.classes.index(data.samples[i].label) for i in split.train])
    prior = np.bincount(y, minlength=3) / len(y)
    frequent, rare = data.classes.index("demo_nevus_like"), data.classes.index("demo_bcc_like")
    assert prior[frequent] > prior[rare]  # the data really is imbalanced
    np.testing.assert_allclose(decision["offsets"], prior_shift(prior, 1.0), atol=1e-6)
    assert decision["offsets"][frequent] < 0 < decision["offsets"][rare]  # the frequent class is pushed down
    assert calibration["chosen_on"] == "validation" and calibration["temperature"] > 0
    loaded, _, info = load_run(tmp_path / "fixed")
    calibrated = predict_probs(loaded, x, info.mean, info.std)
    np.testing.assert_allclose(calibrated, predict_probs(result.model, x, info.mean, info.std), atol=1e-5)
    # weights.h5 holds the trained model; the calibration turns its output into the calibrated one
    raw, _, _ = load_run(tmp_path / "fixed")
    raw.load_weights(tmp_path / "fixed" / "weights.h5")
    raw_probs = predict_probs(raw, x, info.mean, info.std)
    np.testing.assert_allclose(temper(raw_probs, calibration["temperature"], np.array(calibration["shift"])), calibrated,
                               atol=1e-5)
    report = json.loads((tmp_path / "fixed" / "eval" / "report.json").read_text())
    assert "balanced_accuracy" in report["without_decision_step"] and "ece" in report["uncalibrated"]
    assert (tmp_path / "fixed" / "eval" / "calibration.png").is_file()

    # tau chosen on validation: the best point of the saved validation curve
    config = TrainConfig(input_size=32, head_epochs=3, finetune_epochs=0, batch_size=8, allow_random_weights=True,
                         logit_adjustment="validation")
    record = train(data, config, tmp_path / "chosen", cache_dir=tmp_path / "cache", progress=False).info.decision
    curve = record["validation_curve"]
    assert record["chosen_on"] == "validation" and record["tau"] in TAU_GRID
    assert [p["tau"] for p in curve] == list(TAU_GRID)
    best = max(p["balanced_accuracy"] for p in curve)
    assert next(p for p in curve if p["tau"] == record["tau"])["balanced_accuracy"] == best
    assert all(p["balanced_accuracy"] < best for p in curve if p["tau"] < record["tau"])


def test_a_run_made_before_calibration_is_refused_by_load_run(tmp_path):
    data = _imbalanced_demo(tmp_path)
    config = TrainConfig(input_size=32, head_epochs=1, finetune_epochs=0, batch_size=8, allow_random_weights=True)
    train(data, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    info = json.loads((tmp_path / "run" / "model_info.json").read_text())
    info.update(logit_adjustment={"tau": 1.0, "shift": [0.1, 0.0, -0.1]}, calibration=None)
    (tmp_path / "run" / "model_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="before calibration"):
        load_run(tmp_path / "run")


def test_logit_adjusted_loss_learns_balanced_scores_where_plain_loss_learns_the_prior():
    # Features that say nothing about the label, 90% class 0: plain cross-entropy learns the
    # prior (class 0 at ~0.9 for every input); the logit-adjusted loss (tau 1) learns scores
    # with the prior taken out, ~0.5 each, which is what balanced accuracy asks for.
    from mobile_derm.tf_setup import keras
    from mobile_derm.training.fit import _smoothed_loss, training_logit_shift

    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 4)).astype(np.float32)
    labels = (np.arange(600) % 10 == 0).astype(np.int64)
    assert training_logit_shift(labels, 2, 0.0) is None
    shift = training_logit_shift(labels, 2, 1.0)
    assert shift[0] - shift[1] == pytest.approx(np.log(9.0), rel=1e-5)  # log(0.9 / 0.1); softmax ignores a constant
    mean_probs = {}
    for name, logit_shift in (("plain", None), ("adjusted", shift)):
        keras.utils.set_random_seed(0)
        head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        head.compile(optimizer=keras.optimizers.Adam(0.05), loss=_smoothed_loss(0.0, 2, logit_shift))
        head.fit(features, labels, epochs=40, batch_size=100, verbose=0)
        mean_probs[name] = head.predict(features, verbose=0).mean(axis=0)
    assert mean_probs["plain"][0] == pytest.approx(0.9, abs=0.03)
    assert mean_probs["adjusted"][0] == pytest.approx(0.5, abs=0.05)


def test_logit_adjusted_loss_in_a_training_run(tmp_path):
    data = _imbalanced_demo(tmp_path)
    config = TrainConfig(input_size=32, head_epochs=2, finetune_epochs=1, batch_size=8, allow_random_weights=True,
                         class_weighting="none", loss_logit_adjustment=1.0)
    train(data, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    saved = TrainConfig.load(tmp_path / "run" / "train_config.json")
    assert saved.loss_logit_adjustment == 1.0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert np.isfinite(history["finetune"]["val_loss"]).all()


def test_an_ensemble_averages_seeded_members_and_chooses_on_the_shipped_average(tmp_path):
    from mobile_derm.evaluation.report import operating_points
    from mobile_derm.training.calibration import temper
    from mobile_derm.datasets.splits import Split
    from mobile_derm.datasets.synthetic import generate_demo_dataset
    from mobile_derm.taxonomy import Taxonomy
    from mobile_derm.training.runs import dataset_pixels
    from mobile_derm.model.classifier import view_averaged_probs

    data = generate_demo_dataset(tmp_path / "data", classes=["demo_nevus_like", "demo_melanoma_like", "demo_bcc_like"],
                                 lesions_per_class=16, views_per_lesion=1, size=48)
    # imbalanced (twice the nevus lesions), so the decision step's offsets are not zero
    data = data.subset([i for i, s in enumerate(data.samples) if s.label == "demo_nevus_like" or int(s.group[-2:]) % 2],
                       name=data.name)
    config = TrainConfig(input_size=32, head_epochs=3, finetune_epochs=1, batch_size=8, allow_random_weights=True,
                         ensemble_members=2, test_time_views="hflip", logit_adjustment=1.0, split_fractions=(0.5, 0.3, 0.2))
    result = train(data, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)

    split = Split.load(tmp_path / "run" / "split.json", data)
    members = [load_run(tmp_path / "run" / f"member{k}") for k in range(2)]
    # every member trains on the run's own split, none on its validation part; each has its own seed
    assert all(Split.load(tmp_path / "run" / f"member{k}" / "split.json", data).to_dict()["parts"] == split.to_dict()["parts"]
               for k in range(2))
    assert [member_config.seed for _, member_config, _ in members] == [0, 1]
    assert all(info.decision is None and info.calibration for _, _, info in members)  # members: calibrated, plain decision

    # the ensemble's output is the mean of its members' outputs, each tempered by the ensemble's calibration
    calibration = result.info.calibration
    temperature, shift = calibration["temperature"], np.asarray(calibration["shift"])
    assert result.info.decision["tau"] == 1.0
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    mean, std = result.info.mean, result.info.std
    member_probs = [predict_probs(model, x, mean, std) for model, _, _ in members]
    assert np.abs(member_probs[0] - member_probs[1]).max() > 1e-3  # two different models
    expected = np.mean([temper(p, temperature, shift) for p in member_probs], axis=0)
    np.testing.assert_allclose(predict_probs(result.model, x, mean, std), expected, atol=1e-5)
    loaded, loaded_config, _ = load_run(tmp_path / "run")
    assert loaded_config.ensemble_members == 2
    np.testing.assert_allclose(predict_probs(loaded, x, mean, std), expected, atol=1e-5)

    # thresholds were chosen on the validation photos scored by the shipped average (views included)
    pixels = dataset_pixels(data, 32, tmp_path / "cache", progress=False)
    shipped = view_averaged_probs(result.model, pixels[split.val], mean, std, "hflip")
    y_val = np.array([data.classes.index(data.samples[i].label) for i in split.val])
    points = operating_points(shipped, y_val, Taxonomy.load().malignant_mask(data.classes), config)
    assert result.info.ood_threshold == pytest.approx(points["ood_threshold"], abs=1e-5)
    assert result.info.malignancy_thresholds == pytest.approx(points["malignancy_thresholds"], abs=1e-5)
