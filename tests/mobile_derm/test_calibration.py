"""Temperature scaling: the arithmetic, the fit, and the fold into the model's head."""
import numpy as np
import pytest

from mobile_derm.evaluation.metrics import expected_calibration_error
from mobile_derm.training.calibration import calibrate, fit_temperature, log_loss, temper, untemper


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _overconfident_balanced_model(n=4000, seed=0, sharpness=3.0):
    """Labels drawn with a 70/20/10 prior; a model whose logits are an honest signal with the
    prior taken out (as class-balanced training learns), made `sharpness` times too sharp."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.7, 0.2, 0.1])
    y = rng.choice(3, size=n, p=prior)
    signal = np.where(y[:, None] == np.arange(3), 1.5, 0.0) + rng.normal(size=(n, 3))
    return _softmax(sharpness * signal), y, prior


def test_temper_is_softmax_of_scaled_logits_plus_shift_and_untemper_inverts_it():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 20, 4)) * 2
    shift = np.array([0.3, -0.1, 0.0, -0.2])
    tempered = temper(_softmax(z), 2.5, shift)
    np.testing.assert_allclose(tempered, np.mean(_softmax(z / 2.5 + shift), axis=0), atol=1e-6)  # views averaged after
    np.testing.assert_allclose(untemper(temper(_softmax(z[0]), 2.5, shift), 2.5, shift), _softmax(z[0]), atol=1e-5)
    np.testing.assert_allclose(temper(_softmax(z[0]), 1.0), _softmax(z[0]), atol=1e-6)


def test_fit_temperature_finds_the_sharpening_it_must_undo():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5000, 4)) * 1.5
    y = np.array([rng.choice(4, p=p) for p in _softmax(z)])  # labels drawn from softmax(z): calibrated at T = 1
    assert fit_temperature(_softmax(3.0 * z), y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(_softmax(0.5 * z), y) == pytest.approx(0.5, rel=0.1)


def test_calibrate_restores_the_prior_and_brings_ece_down():
    view_probs, y, prior = _overconfident_balanced_model()
    record, calibrated = calibrate(np.stack([view_probs, view_probs]), y, prior)
    assert record["chosen_on"] == "validation" and record["method"] == "temperature"
    assert record["prior_restored"] == pytest.approx(1.0, abs=0.15)  # the prior this model left out
    assert record["temperature"] > 1.5  # too sharp: spread out
    ece_before, ece_after = record["validation"]["ece"]
    assert ece_before > 0.08 and ece_after < 0.03
    assert ece_after == pytest.approx(expected_calibration_error(calibrated, y))
    assert log_loss(calibrated, y) < log_loss(view_probs, y)
    # held-out photos of the same model: the calibration generalises
    test_probs, y_test, _ = _overconfident_balanced_model(seed=7)
    tested = temper(test_probs, record["temperature"], np.array(record["shift"]))
    assert expected_calibration_error(tested, y_test) < 0.03 < expected_calibration_error(test_probs, y_test)


def test_fold_into_heads_makes_the_keras_model_output_tempered_probabilities():
    from mobile_derm.model.classifier import fold_into_heads
    from mobile_derm.tf_setup import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(inputs))
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    before = model.predict(x, verbose=0)
    shift = np.array([-1.0, 0.5, 0.5])
    fold_into_heads(model, shift, 2.0)
    np.testing.assert_allclose(model.predict(x, verbose=0), temper(before, 2.0, shift), atol=1e-5)
