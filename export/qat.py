"""Quantization-aware training with tensorflow-model-optimization.

tfmot wraps every layer of a tf-keras model with fake-quantization so the
fine-tuning learns weights that survive int8; this is the fallback when
post-training int8 costs too much accuracy.
"""
from __future__ import annotations

import numpy as np


def quantization_aware_finetune(model, config, x_train, y_train, x_val, y_val, epochs: int = 1, learning_rate: float | None = None, class_weight_per_sample=None):
    """Fine-tune a QAT copy of ``model`` (float weights as the start)."""
    import tensorflow_model_optimization as tfmot

    from mobile_derm.pipeline import make_dataset
    from mobile_derm.tf_setup import keras
    from mobile_derm.train import _smoothed_loss

    spec = config.spec
    n_classes = model.output_shape[-1]
    qat_model = tfmot.quantization.keras.quantize_model(model)
    lr = learning_rate if learning_rate is not None else config.finetune_learning_rate / 10
    qat_model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=_smoothed_loss(config.label_smoothing, n_classes),
        metrics=["accuracy"],
    )
    train_ds = make_dataset(x_train, y_train, spec.mean, spec.std, config.batch_size, training=config.augment,
                            seed=config.seed, sample_weights=class_weight_per_sample)
    val_ds = make_dataset(x_val, y_val, spec.mean, spec.std, 64, training=False)
    if epochs > 0:
        qat_model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2)
    return qat_model
