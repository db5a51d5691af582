"""Post-hoc logit adjustment: the arithmetic, the choice of tau, and the model edit."""
import numpy as np
import pytest

from mobile_derm.training.logit_adjustment import TAU_GRID, adjust_probs, apply_to_model, choose_tau, prior_shift, tau_grid
from mobile_derm.evaluation.metrics import balanced_accuracy


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_adjusting_probabilities_equals_shifting_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 5)) * 3
    shift = rng.normal(size=5)
    np.testing.assert_allclose(adjust_probs(_softmax(logits), shift), _softmax(logits + shift), atol=1e-6)


def test_prior_shift_pushes_frequent_classes_down_and_vanishes_for_a_uniform_prior():
    prior = np.array([0.7, 0.2, 0.1])
    shift = prior_shift(prior, 1.0)
    assert shift[0] < shift[1] < shift[2]
    np.testing.assert_allclose(shift[1] - shift[0], np.log(0.7 / 0.2))
    np.testing.assert_allclose(prior_shift(prior, 0.0), 0.0)
    np.testing.assert_allclose(prior_shift(np.full(4, 0.25), 1.0), 0.0)
    with pytest.raises(ValueError):
        prior_shift(np.array([1.0, 0.0]), 1.0)


def _prior_biased_validation(n_per_class=200, seed=0):
    """A balanced validation set scored by a model that learned a 90/10 prior:
    its logits are an honest but noisy class signal plus log(prior)."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.9, 0.1])
    y = np.repeat([0, 1], n_per_class)
    signal = np.where(y[:, None] == np.arange(2), 1.0, 0.0) + rng.normal(scale=0.8, size=(len(y), 2))
    return _softmax(signal + np.log(prior)), y, prior


def test_choose_tau_undoes_a_learned_prior_and_improves_balanced_accuracy():
    probs, y, prior = _prior_biased_validation()
    tau, curve = choose_tau(probs, y, prior)
    before = balanced_accuracy(y, probs.argmax(axis=1), 2)
    after = balanced_accuracy(y, adjust_probs(probs, prior_shift(prior, tau)).argmax(axis=1), 2)
    assert 0.7 <= tau <= 1.3  # the true correction is tau = 1
    assert after > before + 0.1
    assert curve[0]["tau"] == 0.0 and curve[0]["balanced_accuracy"] == pytest.approx(before)
    assert len(curve) == len(TAU_GRID)


def test_choose_tau_keeps_a_model_that_needs_no_correction():
    y = np.repeat([0, 1, 2], 10)
    probs = np.full((30, 3), 0.1)
    probs[np.arange(30), y] = 0.8  # already perfect: every tau ties at 1.0, the smallest wins
    tau, _ = choose_tau(probs, y, np.array([0.6, 0.3, 0.1]))
    assert tau == 0.0


def test_tau_grid_reaches_below_zero_by_the_trained_correction():
    grid = tau_grid(1.0)
    assert grid[0] == -1.0 and grid[-1] == TAU_GRID[-1] and 0.0 in grid
    assert len(set(grid)) == len(grid) == 20 + len(TAU_GRID)
    assert tau_grid(0.0) == TAU_GRID and tau_grid(0.25)[0] == -0.25


def test_choose_tau_can_go_below_zero_when_the_grid_allows():
    # a model that over-corrects: logits carry log(prior) with the wrong sign (tau = 1 applied twice)
    probs, y, prior = _prior_biased_validation()
    over = adjust_probs(probs, prior_shift(prior, 2.0))  # net correction +1 past balanced
    tau, curve = choose_tau(over, y, prior, tau_grid(1.0))
    assert -1.3 <= tau <= -0.7
    plain_tau, _ = choose_tau(over, y, prior)
    assert plain_tau == 0.0
    before = balanced_accuracy(y, over.argmax(axis=1), 2)
    after = balanced_accuracy(y, adjust_probs(over, prior_shift(prior, tau)).argmax(axis=1), 2)
    assert after > before + 0.05


def test_apply_to_model_shifts_the_softmax_input():
    from mobile_derm.tf_setup import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(inputs))
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    before = model.predict(x, verbose=0)
    shift = np.array([-1.0, 0.5, 0.5])
    apply_to_model(model, shift)
    np.testing.assert_allclose(model.predict(x, verbose=0), adjust_probs(before, shift), atol=1e-5)


def test_views_are_adjusted_one_by_one_before_averaging():
    """With test-time views the shift sits in the head, before the model averages its
    views: the mean of adjusted views, which is not the adjusted mean."""
    from mobile_derm.training.logit_adjustment import adjusted_mean

    rng = np.random.default_rng(3)
    view_logits = rng.normal(size=(4, 30, 3)) * 3
    shift = np.array([-1.5, 0.5, 1.0])
    stacked = np.stack([_softmax(z) for z in view_logits])
    expected = np.mean([_softmax(z + shift) for z in view_logits], axis=0)
    np.testing.assert_allclose(adjusted_mean(stacked, shift), expected, atol=1e-6)
    assert np.abs(adjust_probs(stacked.mean(axis=0), shift) - expected).max() > 1e-3
    np.testing.assert_allclose(adjusted_mean(stacked[0], shift), _softmax(view_logits[0] + shift), atol=1e-6)
    # choose_tau scores a stack the same way
    y = rng.integers(0, 3, 30)
    prior = np.array([0.6, 0.3, 0.1])
    _, curve = choose_tau(stacked, y, prior, grid=(0.0, 1.0))
    pred = adjusted_mean(stacked, prior_shift(prior, 1.0)).argmax(axis=1)
    assert curve[1]["balanced_accuracy"] == pytest.approx(balanced_accuracy(y, pred, 3))

