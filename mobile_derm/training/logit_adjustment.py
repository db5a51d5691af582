"""The class-balanced decision step: trade a little top-1 for balanced accuracy.

A classifier trained on imbalanced data (HAM10000 is 67% nevi) gives calibrated
probabilities that carry the training prior, as they should: a nevus really is the likely
answer. Naming the class of highest ``log p - tau * log(prior)`` instead (Menon et al. 2021,
"Long-tail learning via logit adjustment") moves the decision towards the rare classes;
tau = 1 is the Bayes-optimal decision for balanced error when the probabilities are
calibrated, smaller values are a compromise. ``tau`` is chosen on the validation split,
never on test.

The step does not touch the probabilities (they stay calibrated: see
``mobile_derm.training.calibration``). It is a decision rule that ``ModelInfo.decision``
records -- ``label = argmax(log(probability) + offsets)`` -- and that ``predict``, the
benchmark and every report apply (``mobile_derm.app.model_info.decision_scores``).
"""
from __future__ import annotations

import numpy as np

from mobile_derm.app.model_info import DECISION_RULE, decision_scores
from mobile_derm.evaluation.metrics import balanced_accuracy

# Candidate tau values; 0 (the plain most-probable class) is always one of them.
TAU_STEP = 0.05
TAU_GRID = tuple(round(TAU_STEP * i, 2) for i in range(0, 31))


def prior_shift(prior: np.ndarray, tau: float) -> np.ndarray:
    """The logit shift ``-tau * log(prior)``, centred (softmax and argmax ignore a constant)."""
    prior = np.asarray(prior, dtype=np.float64)
    if np.any(prior <= 0):
        raise ValueError("every class needs a positive training prior for logit adjustment")
    shift = -float(tau) * np.log(prior)
    return shift - shift.mean()


def choose_tau(probs: np.ndarray, y: np.ndarray, prior: np.ndarray, grid=TAU_GRID) -> tuple[float, list[dict]]:
    """The tau of ``grid`` with the highest balanced accuracy on (validation) ``probs``
    (N, classes); ties go to the tau nearest 0 (less change). Returns tau and the whole curve."""
    curve = []
    for tau in grid:
        pred = decision_scores(probs, prior_shift(prior, tau)).argmax(axis=1)
        curve.append({"tau": float(tau), "balanced_accuracy": float(balanced_accuracy(y, pred, probs.shape[-1])),
                      "top1": float(np.mean(pred == y))})
    best = max(curve, key=lambda point: (round(point["balanced_accuracy"], 6), -abs(point["tau"])))
    return best["tau"], curve


def decision_step(probs: np.ndarray, y: np.ndarray, prior: np.ndarray, setting) -> dict:
    """The record ``ModelInfo.decision`` keeps, for ``setting``: a tau, or "validation"
    (tau chosen on the calibrated validation ``probs`` and labels ``y``)."""
    chosen: dict = {}
    if setting == "validation":
        tau, curve = choose_tau(probs, y, prior)
        chosen = {"validation_curve": curve}
        before = curve[0]
        after = next(point for point in curve if point["tau"] == tau)
        print(f"decision step: tau {tau:.2f}, chosen on validation (balanced accuracy {before['balanced_accuracy']:.3f} -> "
              f"{after['balanced_accuracy']:.3f}, top-1 {before['top1']:.3f} -> {after['top1']:.3f})")
    else:
        tau = float(setting)
    return {"rule": DECISION_RULE, "tau": tau, "chosen_on": "validation" if chosen else "config",
            "train_prior": [round(float(p), 6) for p in prior],
            "offsets": [float(x) for x in prior_shift(prior, tau)], **chosen}
