"""The class-balanced decision step: the arithmetic, the choice of tau, and the record predict applies."""
import numpy as np
import pytest

from mobile_derm.app.model_info import decision_scores
from mobile_derm.training.logit_adjustment import TAU_GRID, choose_tau, decision_step, prior_shift
from mobile_derm.evaluation.metrics import balanced_accuracy


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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
    after = balanced_accuracy(y, decision_scores(probs, prior_shift(prior, tau)).argmax(axis=1), 2)
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


def test_decision_step_records_the_rule_that_predict_applies():
    from mobile_derm.app.model_info import DECISION_RULE, decision_scores

    probs, y, prior = _prior_biased_validation()
    record = decision_step(probs, y, prior, "validation")
    assert record["rule"] == DECISION_RULE and record["chosen_on"] == "validation"
    np.testing.assert_allclose(record["offsets"], prior_shift(prior, record["tau"]))
    best = max(point["balanced_accuracy"] for point in record["validation_curve"])
    pred = decision_scores(probs, record["offsets"]).argmax(axis=1)
    assert balanced_accuracy(y, pred, 2) == pytest.approx(best)
    fixed = decision_step(probs, y, prior, 0.5)
    assert fixed["tau"] == 0.5 and fixed["chosen_on"] == "config" and "validation_curve" not in fixed


def test_the_decision_leaves_the_probabilities_alone_and_only_reorders_classes():
    from mobile_derm.app.model_info import decision_scores

    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    offsets = prior_shift(np.array([0.8, 0.15, 0.05]), 1.0)
    scores = decision_scores(probs, offsets)
    np.testing.assert_allclose(scores, np.log(probs) + offsets)
    assert list(scores.argmax(axis=1)) == [2, 2]  # the rare class wins both, though never the most probable
    assert list(decision_scores(probs).argmax(axis=1)) == [0, 1]
