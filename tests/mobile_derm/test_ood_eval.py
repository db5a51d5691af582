"""ood-eval on a tiny trained run: rates come from the run's own thresholds."""
import json

import numpy as np
import pytest

from mobile_derm.model import familiarity
from mobile_derm.errors import ConfigError
from mobile_derm.evaluation.other_sets import abstention_rates


def test_abstention_rates_count_each_rule_and_their_union():
    top = np.array([0.9, 0.3, 0.8, 0.2])
    dist = np.array([1.0, 1.0, 50.0, 50.0])
    r = abstention_rates(top < 0.5, dist > 10.0)
    assert r == {"n": 4, "softmax": 0.5, "familiarity": 0.5, "either": 0.75}


def test_ood_eval_on_the_tiny_demo_run(tiny_demo, tmp_path):
    import cv2

    from mobile_derm import load_dataset
    from mobile_derm.datasets.sources import read_folder
    from mobile_derm.evaluation.other_sets import run_ood_eval

    data = load_dataset(str(tiny_demo / "data" / "labels.csv"), None)
    # "other" photos: demo images with their colours inverted
    for sample in data.samples[:6]:
        out = tmp_path / "inverted" / sample.label / f"inv_{sample.path.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), 255 - cv2.imread(str(sample.path)))
    inverted = read_folder(tmp_path / "inverted")
    doc = run_ood_eval(tiny_demo / "run", data, {"inverted": inverted}, tmp_path / "out",
                       models={"float32": tiny_demo / "float32.tflite"}, progress=False)
    test_set = f"{data.name} test split"
    assert set(doc["sets"]) == {test_set, "inverted"}
    assert doc["sets"]["inverted"]["n"] == 6
    # the float32 .tflite's own outputs abstain like the Keras model (same features, same thresholds)
    for name, keras_rates in doc["sets"].items():
        tflite_rates = doc["exported"]["float32"][name]
        for rule in ("softmax", "familiarity"):
            assert abs(tflite_rates[rule] - keras_rates[rule]) <= 1.0 / keras_rates["n"] + 1e-9, (name, rule)
    saved = json.loads((tmp_path / "out" / "ood_eval.json").read_text())
    assert saved["familiarity_threshold"] == pytest.approx(
        familiarity.FamiliarityModel.load(tiny_demo / "run" / familiarity.FILENAME).threshold)
    assert (tmp_path / "out" / "ood_eval.png").stat().st_size > 1000


def test_ood_eval_names_a_missing_familiarity_file(tiny_demo, tmp_path):
    import shutil

    from mobile_derm import load_dataset
    from mobile_derm.evaluation.other_sets import run_ood_eval

    run = tmp_path / "run"
    shutil.copytree(tiny_demo / "run", run)
    (run / familiarity.FILENAME).unlink()  # recorded in model_info.json but gone
    with pytest.raises(ConfigError, match="familiarity.npz"):
        run_ood_eval(run, load_dataset(str(tiny_demo / "data" / "labels.csv"), None), {}, tmp_path / "out", progress=False)
