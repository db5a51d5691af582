"""The app's view: predict reads everything from the .tflite, on LiteRT alone."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mobile_derm.cli import main
from mobile_derm.errors import ModelFileError
from mobile_derm.app.predict import Predictor


@pytest.fixture(scope="module")
def photo(tiny_demo):
    return next((tiny_demo / "data" / "images").rglob("*.jpg"))


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_predict_output_is_decision_support(tiny_demo, photo, variant):
    predictor = Predictor(tiny_demo / f"{variant}.tflite")
    result = predictor.predict(photo, top_k=3, gate=False)
    probs = predictor.predict_probs(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB))
    assert probs.sum() == pytest.approx(1.0, abs=0.02)
    assert [t["label"] for t in result.top_k] == [predictor.info.labels[i] for i in np.argsort(-probs)[:3]]
    # malignancy = sum of the malignant classes' probabilities
    expected = sum(p for p, label in zip(probs, predictor.info.labels) if predictor.info.taxonomy[label]["malignant"])
    assert result.malignancy["score"] == pytest.approx(expected, abs=1e-3)
    assert set(result.treatment_scores) == {t for l in predictor.info.labels for t in predictor.info.taxonomy[l]["treatments"]}
    assert result.prediction in predictor.info.labels + ["unknown"]


def test_predict_cli_runs_without_tensorflow(tiny_demo, photo, block_tensorflow_prelude):
    script = block_tensorflow_prelude + (
        "from mobile_derm.cli import main\n"
        f"code = main(['predict', r'{photo}', '--model', r'{tiny_demo / 'int8.tflite'}', '--force'])\n"
        "assert 'tensorflow' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    [output] = json.loads(result.stdout)  # a list, for one photo as for many
    assert output["classified"] is True
    assert "quality" in output and output["quality"]["decision"] in ("accept", "warn", "reject")


def test_gate_rejection_stops_classification_unless_forced(tiny_demo, photo, tmp_path):
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (cv2.imread(str(photo)) * 0.1).astype(np.uint8))
    predictor = Predictor(tiny_demo / "int8.tflite")
    rejected = predictor.predict(dark).to_dict()
    assert rejected["classified"] is False
    assert rejected["quality"]["decision"] == "reject"
    assert "top_k" not in rejected
    forced = predictor.predict(dark, force=True)
    assert forced.classified is True and forced.top_k


def test_predict_on_a_non_image_reports_the_file(tiny_demo, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    code = main(["predict", str(text), "--model", str(tiny_demo / "int8.tflite")])
    captured = capsys.readouterr()
    [out] = json.loads(captured.out)
    assert code == 2
    assert out["image"] == str(text) and out["error"]
    assert captured.err.startswith(f"error: {text}: ")


def test_model_without_our_metadata_is_refused(tiny_demo, tmp_path):
    from mobile_derm_export.convert import convert
    from mobile_derm.tf_setup import keras

    bare = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    path = tmp_path / "bare.tflite"
    path.write_bytes(convert(bare, "float32"))
    with pytest.raises(ModelFileError, match="bare.tflite"):
        Predictor(path)


def test_truncated_model_is_refused(tiny_demo, tmp_path, capsys):
    data = (tiny_demo / "int8.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 2])
    code = main(["predict", str(tiny_demo / "gate_examples" / "blurred.jpg"), "--model", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cut.tflite" in err[0]


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_exported_unfamiliarity_matches_the_run_and_drives_abstention(tiny_demo, photo, variant):
    """The second output is the run's feature-space distance, squashed so 0.5 is its
    threshold; integer models keep it close enough to decide the same way."""
    from mobile_derm.model import familiarity
    from mobile_derm.app.preprocess import resize_square
    from mobile_derm.model.classifier import feature_extractor, predict_probs
    from mobile_derm.training.runs import load_run

    predictor = Predictor(tiny_demo / f"{variant}.tflite")
    assert predictor.info.familiarity["output"] == "unfamiliarity"
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    probs, unfamiliarity = predictor.scores(rgb)
    model, _, info = load_run(tiny_demo / "run")
    fam = familiarity.load_for_run(tiny_demo / "run", info)

    features = predict_probs(feature_extractor(model), resize_square(rgb, info.input_size)[None], info.mean, info.std)
    expected = float(familiarity.unfamiliarity_score(fam.distance(features), fam.threshold)[0])
    assert unfamiliarity == pytest.approx(expected, abs=1e-4 if variant == "float32" else 0.08)
    # the same probabilities, read as an unfamiliar photo, abstain with that reason
    odd = predictor.explain(probs, unfamiliarity=0.9)
    assert odd["abstained"] and "unfamiliar" in odd["abstain_reasons"] and odd["prediction"] == "unknown"
    usual = predictor.explain(probs, unfamiliarity=0.1)
    assert "unfamiliar" not in usual["abstain_reasons"]


def test_the_decision_step_in_the_metadata_names_the_class_and_leaves_probabilities_alone():
    from mobile_derm.app.model_info import ModelInfo

    predictor = Predictor.__new__(Predictor)  # explain() reads only the metadata
    predictor.info = ModelInfo(name="m", version="1", backbone="b", input_size=8, mean=(0, 0, 0), std=(1, 1, 1),
                               labels=["nevus", "melanoma"], decision={"offsets": [-1.0, 1.0]})
    result = predictor.explain(np.array([0.7, 0.3], np.float32), top_k=2)
    assert result["prediction"] == "melanoma"  # log 0.3 + 1 > log 0.7 - 1
    assert [(e["label"], e["probability"]) for e in result["top_k"]] == [("melanoma", 0.3), ("nevus", 0.7)]
    predictor.info.decision = None  # no step: the most probable class
    assert predictor.explain(np.array([0.7, 0.3], np.float32), top_k=2)["prediction"] == "nevus"
