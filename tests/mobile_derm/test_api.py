"""The Python API (mobile_derm.api): the package docstring's example runs, loading a run
gives back its numbers, and importing it costs no TensorFlow."""
import json
import re
import subprocess
import sys

import pytest

import mobile_derm
from mobile_derm.errors import ConfigError


@pytest.fixture(scope="module")
def photo(tiny_demo):
    return next((tiny_demo / "data" / "images").rglob("*.jpg"))


def test_importing_the_api_and_making_a_predictor_needs_no_tensorflow(tiny_demo, photo, block_tensorflow_prelude):
    script = block_tensorflow_prelude + (
        "from mobile_derm import Classifier, Predictor, Prediction, TrainConfig, load_dataset, ModelFileError\n"
        f"result = Predictor(r'{tiny_demo / 'int8.tflite'}').predict(r'{photo}', force=True)\n"
        "assert isinstance(result, Prediction) and result.classified and result.top_k\n"
        "assert len(load_dataset(r'" + str(tiny_demo / "data") + "')) > 0\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def gate_passing_photo(tmp_path_factory):
    """A demo photo at the full demo size (the tiny demo's 96 px ones are too small for the gate)."""
    from mobile_derm.datasets.synthetic import generate_demo_dataset
    from mobile_derm_quality import assess, read_image

    data = generate_demo_dataset(tmp_path_factory.mktemp("photos"), lesions_per_class=1, views_per_lesion=1, size=320)
    accepted = [s.path for s in data.samples if assess(read_image(s.path)).decision != "reject"]
    assert accepted, "the gate rejects every full-size demo photo"
    return accepted[0]


def test_the_package_docstring_example_runs_on_the_tiny_demo_data(tiny_demo, gate_passing_photo, tmp_path,
                                                                  monkeypatch, capsys):
    """The example in ``mobile_derm.__doc__``, run as written with its paths pointed at
    the tiny demo's data, a temporary folder and a demo photo the gate accepts."""
    photo = gate_passing_photo
    block = mobile_derm.__doc__.split("::\n", 1)[1].split("\n\n", 2)
    code = "\n".join(line[4:] for line in (block[0] + "\n" + block[1]).splitlines())
    assert "Classifier.train(" in code and "Predictor(" in code
    code = code.replace('"runs/demo/data"', repr(str(tiny_demo / "data"))).replace('"photo.jpg"', repr(str(photo)))
    monkeypatch.chdir(tmp_path)  # "runs/quick" lands here
    namespace: dict = {}
    exec(compile(code, "mobile_derm.__doc__", "exec"), namespace)
    assert set(namespace["paths"]) == {"float32", "int8"}
    assert all(p.is_file() for p in namespace["paths"].values())
    assert set(namespace["rows"]) == {"keras_float", "float32", "int8"}
    assert (tmp_path / "runs" / "quick" / "models" / "benchmark.json").is_file()
    result = namespace["result"]
    assert result.classified
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == f"{result.top_k[0]} {result.abstained}"


def test_a_loaded_run_evaluates_to_the_numbers_training_reported(tiny_demo):
    clf = mobile_derm.Classifier.load(tiny_demo / "run", tiny_demo / "data")
    report = clf.evaluate()
    saved = json.loads((tiny_demo / "run" / "eval" / "report.json").read_text())
    for key in ("n", "top1", "top3", "balanced_accuracy", "malignancy_auc", "ece"):
        assert report[key] == pytest.approx(saved[key], abs=1e-6), key
    assert report["ci95_resamples"] == saved["ci95_resamples"] != "images"  # lesions, as the training report
    for key, interval in saved["ci95"].items():  # an interval, or {measure: interval} for an operating point
        for measure, values in (interval.items() if isinstance(interval, dict) else [(None, interval)]):
            got = report["ci95"][key] if measure is None else report["ci95"][key][measure]
            assert got == pytest.approx(values), (key, measure)
    # another data set (here the demo's own photos, whose labels map onto themselves): the external report
    external = clf.evaluate(data=tiny_demo / "data")
    assert external["n"] == external["n_mapped"] == len(clf.data)


def test_a_run_loaded_without_its_data_says_so_when_it_needs_them(tiny_demo, tmp_path):
    clf = mobile_derm.Classifier.load(tiny_demo / "run")
    with pytest.raises(ConfigError, match=re.escape(str(tiny_demo / "run")) + ".*Classifier.load"):
        clf.export(tmp_path / "models", variants=("float32",))
    assert not (tmp_path / "models").exists()


def test_predict_cli_prints_the_prediction_objects_dict(tiny_demo, photo, capsys):
    from mobile_derm.cli import main

    assert main(["predict", str(photo), "--model", str(tiny_demo / "int8.tflite"), "--force"]) == 0
    [printed] = json.loads(capsys.readouterr().out)  # a list, for one photo as for many
    expected = mobile_derm.Predictor(tiny_demo / "int8.tflite").predict(photo, force=True).to_dict()
    assert printed == json.loads(json.dumps(expected))
    assert list(printed)[:3] == ["image", "quality", "classified"] and printed["top_k"]
