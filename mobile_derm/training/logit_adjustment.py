"""Post-hoc logit adjustment: trade a little top-1 for balanced accuracy.

A classifier trained on imbalanced data (HAM10000 is 67% nevi) learns the
training prior into its logits. Subtracting ``tau * log(prior)`` from the logits
(Menon et al. 2021, "Long-tail learning via logit adjustment") moves the decision
towards the rare classes; tau = 1 is the Bayes-optimal correction for balanced
error when the probabilities are calibrated, smaller values are a compromise.
``tau`` is chosen on the validation split, never on test.

The shift is added to the bias of the final ``head`` layer (the softmax input),
so every copy of the model -- Keras, ``.tflite``, QAT -- carries it without any
code at prediction time. ``ModelInfo.logit_adjustment`` records it for people
and for ``mobile_derm.training.runs.load_run``, which re-applies it to the saved trained weights.
"""
from __future__ import annotations

import numpy as np

from mobile_derm.evaluation.metrics import balanced_accuracy

# Candidate tau values; 0 (no adjustment) is always one of them.
TAU_STEP = 0.05
TAU_GRID = tuple(round(TAU_STEP * i, 2) for i in range(0, 31))


def tau_grid(trained_tau: float = 0.0) -> tuple[float, ...]:
    """TAU_GRID, extended below 0 down to ``-trained_tau`` for a model trained with the
    logit-adjusted loss (``TrainConfig.loss_logit_adjustment``): its outputs already
    carry that much correction, and validation may want part of it taken back."""
    lowest = int(round(float(trained_tau) / TAU_STEP))
    return tuple(round(TAU_STEP * i, 2) for i in range(-lowest, 0)) + TAU_GRID


def prior_shift(prior: np.ndarray, tau: float) -> np.ndarray:
    """The logit shift ``-tau * log(prior)``, centred (softmax ignores a constant)."""
    prior = np.asarray(prior, dtype=np.float64)
    if np.any(prior <= 0):
        raise ValueError("every class needs a positive training prior for logit adjustment")
    shift = -float(tau) * np.log(prior)
    return shift - shift.mean()


def adjust_probs(probs: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """softmax(z + shift) from softmax(z): multiply by exp(shift) and renormalise
    (classes on the last axis, so a (views, N, classes) stack works too)."""
    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, 1.0)) + np.asarray(shift)
    log_p -= log_p.max(axis=-1, keepdims=True)
    p = np.exp(log_p)
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def adjusted_mean(probs: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The adjusted probabilities of (N, classes) ``probs``, or, for a (views, N, classes)
    stack, the mean over views of each view's adjusted probabilities: the shift sits in
    the head, before the exported model averages its views (mobile_derm.model.views)."""
    adjusted = adjust_probs(probs, shift)
    return adjusted.mean(axis=0) if adjusted.ndim == 3 else adjusted


def choose_tau(probs: np.ndarray, y: np.ndarray, prior: np.ndarray, grid=TAU_GRID) -> tuple[float, list[dict]]:
    """The tau of ``grid`` with the highest balanced accuracy on (validation) ``probs``
    ((N, classes), or a (views, N, classes) stack: see ``adjusted_mean``); ties go to
    the tau nearest 0 (less change). Returns tau and the whole curve."""
    curve = []
    for tau in grid:
        pred = adjusted_mean(probs, prior_shift(prior, tau)).argmax(axis=1)
        curve.append({"tau": float(tau), "balanced_accuracy": float(balanced_accuracy(y, pred, probs.shape[-1])),
                      "top1": float(np.mean(pred == y))})
    best = max(curve, key=lambda point: (round(point["balanced_accuracy"], 6), -abs(point["tau"])))
    return best["tau"], curve


def apply_to_model(model, shift: np.ndarray, layer_name: str = "head") -> None:
    """Add ``shift`` to the bias of the model's final Dense layer, in place."""
    layer = model.get_layer(layer_name)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, (bias + np.asarray(shift, dtype=bias.dtype)).astype(bias.dtype)])
