"""Probability calibration: temperature scaling fitted on the validation split.

The probabilities are what an app shows, so they should mean what they say: of the
photos shown "70%", about 70% should be right. A network fine-tuned with label smoothing,
class weights or the logit-adjusted loss is not: HAM10000's balanced recipes came out with
an expected calibration error of 0.25-0.30. Temperature scaling (Guo et al. 2017, "On
calibration of modern neural networks") divides the logits by one number T chosen for the
lowest validation log-loss; it changes no ranking, so accuracy, AUC and the operating
points' order stay as trained.

A model trained to be class-balanced -- with class weights or the logit-adjusted loss
(``TrainConfig.class_weighting``, ``loss_logit_adjustment``) -- has learned scores with part
of the training prior taken out. So the calibration has a second number, ``beta``: it puts
``beta * log(prior)`` back after tempering, and both are chosen together for the lowest
validation log-loss; the calibrated probabilities then estimate the real posterior. The
decision towards rare classes is a separate step (``mobile_derm.training.logit_adjustment``),
which the metadata carries and ``predict`` applies, instead of a distortion of the
probabilities.

``T`` and the restored prior are folded into the head (kernel and bias divided by T, then the shift added, see
``mobile_derm.model.classifier.fold_into_heads``), so every copy of the model -- Keras, every
``.tflite`` -- outputs calibrated probabilities with no code at prediction time. With
test-time views, each view is tempered before the views are averaged, as the exported
model does; an ensemble is tempered member by member, before its average.
"""
from __future__ import annotations

import numpy as np

from mobile_derm.evaluation.metrics import expected_calibration_error

# T is searched on a log grid: 0.25 to 8 covers over- and under-confident networks alike
# (label smoothing makes them under-confident: T < 1), then refined around the best.
TEMPERATURE_RANGE = (0.25, 8.0)
# beta, the share of log(prior) put back: 0 for a model trained on the plain prior, about
# 1 for one trained class-balanced; a little beyond both ends lets validation say otherwise.
BETA_GRID = tuple(round(0.1 * i, 1) for i in range(-2, 16))


def temper(probs: np.ndarray, temperature: float, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """softmax(z / T + shift) from softmax(z), classes on the last axis; a
    (views, N, classes) stack gives the mean over views of each tempered view."""
    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, 1.0)) / float(temperature) + np.asarray(shift)
    log_p -= log_p.max(axis=-1, keepdims=True)
    p = np.exp(log_p)
    p /= p.sum(axis=-1, keepdims=True)
    return (p.mean(axis=0) if p.ndim == 3 else p).astype(np.float32)


def untemper(probs: np.ndarray, temperature: float, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """The inverse of ``temper`` for one view: the probabilities as trained, for the record."""
    return temper(probs, 1.0 / float(temperature), -np.asarray(shift, dtype=np.float64) * float(temperature))


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(view_probs: np.ndarray, y: np.ndarray, shift: np.ndarray | float = 0.0) -> float:
    """The T of lowest log-loss of ``temper(view_probs, T, shift)`` on (validation) labels
    ``y``: a coarse log grid, then a finer one around its best point (log-loss in T is smooth
    and has one minimum for a single view; the grid also copes with averaged views)."""
    low, high = np.log(TEMPERATURE_RANGE)
    grid = np.exp(np.linspace(low, high, 41))
    for _ in range(3):
        losses = [log_loss(temper(view_probs, t, shift), y) for t in grid]
        best = int(np.argmin(losses))
        step = np.log(grid[1] / grid[0])
        grid = np.exp(np.linspace(np.log(grid[best]) - step, np.log(grid[best]) + step, 21))
    return float(grid[int(np.argmin([log_loss(temper(view_probs, t, shift), y) for t in grid]))])


def calibrate(view_probs: np.ndarray, y: np.ndarray, prior: np.ndarray) -> tuple[dict, np.ndarray]:
    """Fit beta and the temperature on validation ``view_probs`` ((N, classes) or a (views,
    N, classes) stack) and labels ``y``; ``prior``: the training images' class shares.
    Returns the record ``ModelInfo.calibration`` keeps and the calibrated validation
    probabilities ((N, classes), views averaged)."""
    log_prior = np.log(np.asarray(prior, dtype=np.float64))
    log_prior -= log_prior.mean()
    before = temper(view_probs, 1.0)
    fits = []
    for beta in BETA_GRID:
        temperature = fit_temperature(view_probs, y, beta * log_prior)
        fits.append((log_loss(temper(view_probs, temperature, beta * log_prior), y), abs(beta), beta, temperature))
    _, _, beta, temperature = min(fits)  # ties: the smaller correction
    shift = beta * log_prior
    after = temper(view_probs, temperature, shift)
    record = {
        "method": "temperature", "temperature": round(temperature, 6), "prior_restored": beta,
        "shift": [float(s) for s in shift], "chosen_on": "validation",
        "validation": {"log_loss": [log_loss(before, y), log_loss(after, y)],
                       "ece": [expected_calibration_error(before, y), expected_calibration_error(after, y)]},
    }
    print(f"calibration: temperature {temperature:.3f}, prior restored x{beta:.1f}, chosen on validation "
          f"(ECE {record['validation']['ece'][0]:.3f} -> {record['validation']['ece'][1]:.3f}, log-loss "
          f"{record['validation']['log_loss'][0]:.3f} -> {record['validation']['log_loss'][1]:.3f})")
    return record, after
