"""capture-robustness: what each phone-capture failure costs a classifier, paired with the same photos clean."""
import json

import numpy as np
import pytest

from mobile_derm.evaluation.capture_robustness import capture_robustness, markdown
from mobile_derm_quality import phone_capture


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((120, 160, 3), (190, 140, 120), np.uint8)
    img[40:80, 60:100] = (90, 50, 40)  # a dark lesion
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def test_pairs_each_sample_with_its_own_photo_clean():
    images = [_photo(i) for i in range(4)]
    labels = ["dark", "dark", "light", "dark"]

    def classify(rgb):  # right on clean photos 0, 1, 3; says "light" whenever the frame is bright
        return "light" if rgb.mean() > 150 else "dark"

    r = capture_robustness(classify, images, labels, progress=False)
    assert r["n"] == 4 and r["clean_accuracy"] == 0.75
    assert set(r["by_category"]) == set(phone_capture.CATEGORIES)
    for category, by_label in r["by_category"].items():
        assert set(by_label) == set(phone_capture.LABELS)
        for cell in by_label.values():
            assert cell["n"] == 4
            # the gap is the paired counts over n, and accuracy = clean accuracy - gap
            assert cell["gap"] == pytest.approx((cell["lost"] - cell["gained"]) / 4)
            assert cell["accuracy"] == pytest.approx(0.75 - cell["gap"])
    # over-exposure brightens the frame: this classifier then says "light" and loses the dark photos
    over = r["by_category"]["over_exposure"]["retake"]
    assert over["lost"] == 3 and over["gained"] == 1 and over["p"] == pytest.approx(0.625)
    md = markdown({**r, "model": "m.tflite"})
    assert "| over_exposure | " in md and "3 / 1 | 0.625 |" in md


def test_same_seed_same_table_and_categories_draw_apart():
    images, labels = [_photo(i) for i in range(3)], ["dark"] * 3
    seen = []

    def classify(rgb):
        seen.append(float(rgb.mean()))
        return "dark"

    a = capture_robustness(classify, images, labels, seed=3, progress=False)
    first = list(seen)
    seen.clear()
    assert capture_robustness(classify, images, labels, seed=3, progress=False) == a and seen == first


def test_capture_robustness_command_on_the_tiny_demo_run(tiny_demo, tmp_path):
    from mobile_derm.cli import main

    out = tmp_path / "cr"
    assert main(["capture-robustness", str(tiny_demo / "run"), "--data", str(tiny_demo / "data" / "labels.csv"),
                 "--model", str(tiny_demo / "int8.tflite"), "--n", "3", "--out", str(out)]) == 0
    report = json.loads((out / "capture_robustness.json").read_text())
    assert report["n"] == 3 and report["split"] == "fit" and report["model"].endswith("int8.tflite")
    assert set(report["by_category"]) == set(phone_capture.CATEGORIES)
    assert (out / "capture_robustness.md").read_text().startswith("# Capture robustness: ")


def test_capture_robustness_names_a_missing_model_in_one_line(tiny_demo, tmp_path, capsys):
    from mobile_derm.cli import EXIT_ERROR, main

    missing = tmp_path / "none.tflite"
    code = main(["capture-robustness", str(tiny_demo / "run"), "--data", str(tiny_demo / "data" / "labels.csv"),
                 "--model", str(missing), "--out", str(tmp_path / "cr")])
    assert code == EXIT_ERROR
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {missing}: model file not found"]
    assert not (tmp_path / "cr").exists()


def test_photos_are_read_at_their_own_size_less_the_data_sets_banner(tmp_path):
    """The failures happen at capture, so each photo is degraded as the file holds it (not the model-size copy of the
    pixel cache); a data set whose photos carry a banner (SD-198's) loses it, as its model input does."""
    import cv2

    from mobile_derm.datasets.sources import Dataset, Sample
    from mobile_derm.training.runs import BOTTOM_CROP_BY_DATASET, input_pixels, photo_pixels

    rgb = _photo(0)
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1])
    sample = Sample(path=tmp_path / "a.png", label="dark", group="a")
    np.testing.assert_array_equal(photo_pixels(Dataset("plain", tmp_path, [sample]), 0), rgb)
    with_banner = photo_pixels(Dataset("sd198", tmp_path, [sample]), 0)
    kept = int(round(120 * (1 - BOTTOM_CROP_BY_DATASET["sd198"])))
    np.testing.assert_array_equal(with_banner, rgb[:kept])
    np.testing.assert_array_equal(input_pixels(with_banner, 32), input_pixels(rgb, 32, BOTTOM_CROP_BY_DATASET["sd198"]))
