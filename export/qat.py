"""Quantization-aware training with tensorflow-model-optimization.

tfmot wraps every layer of a tf-keras model with fake-quantization so that
fine-tuning learns weights that survive int8.

What the quantized model should learn is *the float model*: that is the model
that was validated, whose thresholds are saved, and whose behaviour the
benchmark's ``agreement_with_float`` measures. So QAT here is distillation: the
targets are the float model's own probabilities on the training images (not the
labels, which would re-open training and let the quantized copy drift away),
inputs are not augmented (the targets were computed on the plain images),
BatchNorm stays in inference mode (its statistics are the float model's; batch
statistics of 32 photos would move them), and the learning rate is small.
"""
from __future__ import annotations

import numpy as np


def _set_batchnorm_trainable(model, trainable: bool) -> list:
    from mobile_derm.tf_setup import keras

    changed = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable != trainable:
            layer.trainable = trainable
            changed.append(layer)
    return changed


def quantization_aware_finetune(model, config, x_train, x_val, epochs: int = 1, learning_rate: float = 1e-5, batch_size: int | None = None):
    """A QAT copy of ``model`` distilled from it on uint8 pixels ``x_train``
    (``x_val`` reports how often the two agree). Returns the QAT model."""
    import tensorflow_model_optimization as tfmot

    from mobile_derm.pipeline import make_dataset
    from mobile_derm.tf_setup import keras
    from mobile_derm.train import predict_probs

    spec = config.spec
    teacher_train = predict_probs(model, x_train, spec.mean, spec.std)
    teacher_val = predict_probs(model, x_val, spec.mean, spec.std)

    # tf-keras runs a non-trainable BatchNormalization in inference mode; the
    # flag is copied into the clone that quantize_model makes, then restored here.
    frozen = _set_batchnorm_trainable(model, False)
    try:
        qat_model = tfmot.quantization.keras.quantize_model(model)
    finally:
        for layer in frozen:
            layer.trainable = True
    qat_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.KLDivergence(),
        metrics=[keras.metrics.CategoricalAccuracy(name="agreement")],
    )
    batch = batch_size or config.batch_size
    train_ds = make_dataset(x_train, teacher_train, spec.mean, spec.std, batch, training=False, shuffle=True, seed=config.seed)
    val_ds = make_dataset(x_val, teacher_val, spec.mean, spec.std, 64, training=False)
    if epochs > 0:
        qat_model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2)
    return qat_model


def agreement(model_a, model_b, pixels: np.ndarray, mean, std) -> float:
    """Fraction of images on which two Keras models give the same top-1."""
    from mobile_derm.train import predict_probs

    a = predict_probs(model_a, pixels, mean, std).argmax(axis=1)
    b = predict_probs(model_b, pixels, mean, std).argmax(axis=1)
    return float(np.mean(a == b))
