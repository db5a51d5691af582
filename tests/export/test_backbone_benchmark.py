"""mobile_derm_export.backbone_benchmark: one tiny real run (Lite0 at 64 px, 2 latency runs,
a few synthetic calibration images) and the photo split, checked for structure
and for relations the numbers must obey."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mobile_derm_export.backbone_benchmark import VARIANTS, load_photos, main, run_backbone_benchmark
from mobile_derm.app.model_file import read_io_spec, read_model_info
from mobile_derm.errors import ConfigError

SIZE = 64
CLASSES = 7


def _has_lite0_weights() -> bool:
    from mobile_derm.model import weights as weights_lib
    from mobile_derm.model.specs import get_backbone_spec

    try:
        weights_lib.find_weights_file(get_backbone_spec("efficientnet_lite0"))
    except ConfigError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run: with the weights extra installed, Lite0's ImageNet weights (which
    also exercises the ImageNet-classifier check); without it, random weights."""
    out = tmp_path_factory.mktemp("backbones")
    real = _has_lite0_weights()
    document = run_backbone_benchmark(
        out, backbones=["efficientnet_lite0"], size=SIZE, n_classes=CLASSES, runs=2, image_dir=None,
        n_calibration=4, n_evaluation=4, random_weights=not real, progress=False, command="test",
    )
    return out, document, real


@pytest.mark.slow
def test_tiny_benchmark_structure_and_relations(tiny_run):
    from mobile_derm.model.backbones import count_params
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.model.classifier import build_classifier

    out, document, real = tiny_run
    on_disk = json.loads((out / "backbones.json").read_text())
    assert on_disk == json.loads(json.dumps(document))
    assert document["input_size"] == SIZE and document["n_classes"] == CLASSES and document["latency_runs"] == 2
    images = document["images"]
    assert images["source"] == "synthetic"
    assert images["n_calibration"] == 4 and images["n_evaluation"] == 4 and images["disjoint"]
    assert not set(images["calibration_images"]) & set(images["evaluation_images"])

    entry = document["backbones"]["efficientnet_lite0"]
    assert entry["weights"] == ("imagenet" if real else "random")
    model = build_classifier(TrainConfig(backbone="efficientnet_lite0", input_size=SIZE, weights=None),
                             CLASSES, weights=None)
    trainable, frozen = count_params(model)
    assert entry["params_total"] == trainable + frozen
    assert (entry["params_trainable"], entry["params_non_trainable"]) == (trainable, frozen)

    rows = entry["variants"]
    assert list(rows) == list(VARIANTS)
    for variant, row in rows.items():
        path = out / "efficientnet_lite0" / f"{variant}.tflite"
        assert row["file"] == str(path) and path.stat().st_size == row["size_bytes"]
        info = read_model_info(path)  # written with our metadata: Predictor can load it
        assert info.input_size == SIZE and len(info.labels) == CLASSES
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p95"]
        assert row["latency_ms_p50_2threads"] > 0
        assert 0.0 <= row["top1_agreement_with_float32"] <= 1.0
        assert 0.0 <= row["mean_abs_prob_diff_vs_float32"] < 0.5
        assert 1 <= row["float32_top1_distinct_classes"] <= min(CLASSES, images["n_evaluation"])
        assert 1.0 / CLASSES <= row["float32_mean_top1_prob"] <= 1.0
        assert 0.0 <= row["float32_mean_top1_margin"] <= row["float32_mean_top1_prob"]
        assert row["prob_error_vs_image_spread"] >= 0.0 and row["float32_prob_image_spread"] > 0.0
        assert row["size_vs_float32"] == pytest.approx(row["size_bytes"] / rows["float32"]["size_bytes"])
        assert row["latency_vs_float32"] == pytest.approx(row["latency_ms_p50"] / rows["float32"]["latency_ms_p50"])
    assert rows["float32"]["top1_agreement_with_float32"] == 1.0
    assert rows["float32"]["mean_abs_prob_diff_vs_float32"] == 0.0
    assert rows["float32"]["prob_error_vs_image_spread"] == 0.0
    assert rows["int8"]["size_bytes"] <= 0.31 * rows["float32"]["size_bytes"]
    int8_io = read_io_spec(out / "efficientnet_lite0" / "int8.tflite")
    assert int8_io["input_type"] == "uint8" and int8_io["output_type"] == "uint8"
    assert read_io_spec(out / "efficientnet_lite0" / "float32.tflite")["input_type"] == "float32"

    if real:
        imagenet = document["imagenet_head"]["efficientnet_lite0"]
        assert imagenet["n_outputs"] == 1000 and list(imagenet["variants"]) == ["float32", "int8"]
        assert imagenet["params_total"] > entry["params_total"]  # 1000-class head vs 7-class head
        assert 0.0 <= imagenet["variants"]["int8"]["top1_agreement_with_float32"] <= 1.0
    else:
        assert document["imagenet_head"] == {}

    table = (out / "backbones.md").read_text()
    for variant in VARIANTS:
        assert f"| efficientnet_lite0 | {entry['weights']} | " in table and f" | {variant} | " in table
    assert any("random (untrained)" in note for note in document["notes"])


def test_load_photos_splits_real_photos(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"photo_{i}.png"), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    photos = load_photos(tmp_path, 32, n_calibration=3, n_evaluation=None)
    meta = photos["meta"]
    assert meta["source"] == "ood_photos" and meta["disjoint"]
    assert photos["calibration"].shape == (3, 32, 32, 3) and photos["evaluation"].shape == (2, 32, 32, 3)
    assert photos["calibration"].dtype == np.uint8
    assert sorted(meta["calibration_images"] + meta["evaluation_images"]) == [f"photo_{i}.png" for i in range(5)]

    few = load_photos(tmp_path, 32, n_calibration=8, n_evaluation=None)
    assert not few["meta"]["disjoint"] and few["meta"]["n_calibration"] == few["meta"]["n_evaluation"] == 5


def test_cli_rejects_unknown_backbone(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--backbones", "efficientnet_lite0,resnet9000"]) == 2
    assert "resnet9000" in capsys.readouterr().err
    assert not (tmp_path / "backbones.json").exists()
