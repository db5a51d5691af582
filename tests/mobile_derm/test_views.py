"""Test-time views: the symmetries themselves, the Keras wrapper, and a trained run whose
evaluation, saved record and exported .tflite all average over the same views."""
import json

import numpy as np
import pytest

from mobile_derm.model import views
from mobile_derm.errors import ConfigError


def _key(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("name, n", [("none", 1), ("hflip", 2), ("flips", 4), ("dihedral", 8)])
def test_each_view_set_is_a_group_of_distinct_exact_symmetries(name, n):
    x = np.random.default_rng(0).integers(0, 255, (2, 5, 5, 3), dtype=np.uint8)
    copies = [views.view_of(x, v) for v in views.check(name)]
    assert len(copies) == n and len({_key(c) for c in copies}) == n
    assert _key(copies[0]) == _key(x)  # the photo as given comes first
    for c in copies:  # pixels move, none is resampled
        assert sorted(c.ravel().tolist()) == sorted(x.ravel().tolist())
    # closed: a view of a view is again one of the views, so the average does not
    # depend on how the phone was held
    members = {_key(c) for c in copies}
    for c in copies:
        for v in views.check(name):
            assert _key(views.view_of(c, v)) in members


def test_named_views_are_checked():
    with pytest.raises(ConfigError, match="test_time_views must be one of"):
        views.check("rotate45")
    from mobile_derm.training.config import TrainConfig

    with pytest.raises(ConfigError, match="test_time_views"):
        TrainConfig(test_time_views="mirror")


def test_view_probs_stacks_one_prediction_per_view():
    x = np.random.default_rng(1).random((3, 4, 4, 3)).astype(np.float32)
    # a "model" that looks at the top-left pixel only, so every view answers differently
    stacked = views.view_probs(lambda batch: batch[:, 0, 0, :], x, "flips")
    assert stacked.shape == (4, 3, 3)
    np.testing.assert_array_equal(stacked[0], x[:, 0, 0])
    np.testing.assert_array_equal(stacked[1], x[:, 0, -1])  # mirrored left-right
    np.testing.assert_array_equal(stacked[2], x[:, -1, 0])  # upside down
    np.testing.assert_array_equal(stacked[3], x[:, -1, -1])
    # probabilities of the photos as given, already computed, are used as they are
    given = np.full((3, 3), 0.5, np.float32)
    reused = views.view_probs(lambda batch: batch[:, 0, 0, :], x, "flips", as_given=given)
    np.testing.assert_array_equal(reused[0], given)
    np.testing.assert_array_equal(reused[1:], stacked[1:])


def _tiny_model(size=(6, 6), two_outputs=False):
    from mobile_derm.tf_setup import keras

    inputs = keras.Input((*size, 3), name="image")
    flat = keras.layers.Flatten()(inputs)
    probs = keras.layers.Dense(4, activation="softmax", name="head")(flat)
    if not two_outputs:
        return keras.Model(inputs, probs)
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(flat)
    return keras.Model(inputs, [probs, score])


@pytest.mark.parametrize("two_outputs", [False, True])
def test_wrapped_model_averages_the_probabilities_over_views(two_outputs):
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(0)
    model = _tiny_model(two_outputs=two_outputs)
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 3)).astype(np.float32)
    wrapped = views.with_view_averaging(model, "dihedral")
    got = wrapped.predict(x, verbose=0)
    per_view = [model.predict(views.view_of(x, v), verbose=0) for v in views.check("dihedral")]
    if two_outputs:
        np.testing.assert_allclose(got[0], np.mean([p[0] for p in per_view], axis=0), atol=1e-6)
        # a second output (the unfamiliarity score) stays that of the photo as given
        np.testing.assert_allclose(got[1], per_view[0][1], atol=1e-6)
        assert np.abs(got[1] - np.mean([p[1] for p in per_view], axis=0)).max() > 1e-5
    else:
        np.testing.assert_allclose(got, np.mean(per_view, axis=0), atol=1e-6)
        # and the average is not just one of the views: the model is not symmetric
        assert np.abs(got - per_view[0]).max() > 1e-4
    assert views.with_view_averaging(model, "none") is model


def test_turning_views_need_a_square_input():
    model = _tiny_model(size=(6, 4))
    assert views.with_view_averaging(model, "flips") is not model  # mirrors are fine
    with pytest.raises(ConfigError, match="square input"):
        views.with_view_averaging(model, "dihedral")


def test_views_travel_from_training_to_the_exported_model(tmp_path):
    """The run evaluates with the views (after calibration), records them,
    and the .tflite returns the same view-averaged probabilities for one image."""
    from ai_edge_litert.interpreter import Interpreter

    from mobile_derm_export.exporter import export_variants
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.evaluation.report import evaluate_probs
    from mobile_derm.model.familiarity import load_for_run
    from mobile_derm.datasets.synthetic import generate_demo_dataset
    from mobile_derm.training.runs import load_run, run_arrays
    from mobile_derm.model.classifier import predict_probs, view_averaged_probs
    from mobile_derm.training.fit import train

    data = generate_demo_dataset(tmp_path / "data", lesions_per_class=4, views_per_lesion=2, size=48)
    config = TrainConfig(input_size=32, head_epochs=2, finetune_epochs=0, batch_size=8, allow_random_weights=True,
                         logit_adjustment=0.5, test_time_views="flips")
    result = train(data, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    assert result.info.test_time_views == "flips"

    model, _, info = load_run(tmp_path / "run")
    assert info.test_time_views == "flips"
    pixels, y, split = run_arrays(data, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    test = np.asarray(split.test)
    averaged = view_averaged_probs(model, pixels[test], info.mean, info.std, info.test_time_views)
    single = predict_probs(model, pixels[test], info.mean, info.std)
    assert np.abs(averaged - single).max() > 1e-4  # the views do change the answer
    # the saved test report is the view-averaged one, with the single view kept for the record
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    expected = evaluate_probs(averaged, y[test], info)
    assert report["top1"] == pytest.approx(expected["top1"]) and report["ece"] == pytest.approx(expected["ece"], abs=1e-6)
    assert report["single_view"]["ece"] == pytest.approx(evaluate_probs(single, y[test], info)["ece"], abs=1e-6)

    written = export_variants(model, info, tmp_path / "models", ["float32"], pixels[np.asarray(split.train)],
                              familiarity=load_for_run(tmp_path / "run", info))
    interpreter = Interpreter(model_path=str(written["float32"]))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    assert tuple(inp["shape"]) == (1, 32, 32, 3)  # the app still feeds one image
    x = ((pixels[test[:1]].astype(np.float32) - np.asarray(info.mean)) / np.asarray(info.std)).astype(np.float32)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    out = interpreter.get_output_details()
    np.testing.assert_allclose(interpreter.get_tensor(out[0]["index"])[0], averaged[0], atol=1e-4)
    assert len(out) == 2  # the unfamiliarity score is still the second output
    from mobile_derm.model.familiarity import load_for_run as familiarity_of, with_unfamiliarity

    as_given = with_unfamiliarity(model, familiarity_of(tmp_path / "run", info)).predict(x, verbose=0)[1]
    np.testing.assert_allclose(interpreter.get_tensor(out[1]["index"]).reshape(-1), as_given.reshape(-1), atol=1e-4)
