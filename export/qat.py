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

tfmot starts every activation quantizer at [-6, 6] and moves it towards the batch
ranges by an exponential moving average of decay 0.999: after one epoch of 220
steps a range has covered only 20% of the way (measured: agreement with float 0.89
on HAM10000). So before training, each quantizer's range is set to the float
model's own activation range on the training images (mean over batches of the
batch minimum and maximum: what the moving average would converge to).
"""
from __future__ import annotations

import numpy as np


def quantization_aware_finetune(model, config, x_train, x_val, epochs: int = 1, learning_rate: float = 1e-5, batch_size: int | None = None):
    """A QAT copy of ``model`` distilled from it on uint8 pixels ``x_train``
    (``x_val`` reports how often the two agree). Returns the QAT model."""
    import tensorflow_model_optimization as tfmot

    from mobile_derm.errors import ConfigError
    from mobile_derm.training.pipeline import make_dataset
    from mobile_derm.tf_setup import keras
    from mobile_derm.model.classifier import freeze_batchnorm, predict_probs

    if config.ensemble_members > 1:
        # tfmot's 8-bit registry has no quantized Average layer to join the members with
        raise ConfigError(None, f"qat_int8 cannot quantize an ensemble (ensemble_members {config.ensemble_members}): "
                                "tfmot has no quantized Average layer; export the int8 variant (post-training) instead")
    spec = config.spec
    teacher_train = predict_probs(model, x_train, spec.mean, spec.std)
    teacher_val = predict_probs(model, x_val, spec.mean, spec.std)

    # tf-keras runs a non-trainable BatchNormalization in inference mode; the
    # flag is copied into the clone that quantize_model makes, then restored here.
    frozen = freeze_batchnorm(model)
    try:
        qat_model = tfmot.quantization.keras.quantize_model(model)
    finally:
        for layer in frozen:
            layer.trainable = True
    initialise_activation_ranges(model, qat_model, x_train[: 8 * config.batch_size], spec.mean, spec.std, config.batch_size)
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


def initialise_activation_ranges(float_model, qat_model, pixels: np.ndarray, mean, std, batch_size: int = 32) -> int:
    """Set each activation quantizer of ``qat_model`` to the float model's range on ``pixels``
    (uint8 images); returns how many ranges were set."""
    from mobile_derm.app.preprocess import normalize
    from mobile_derm.tf_setup import keras

    variables = {w.name.split(":")[0]: w for w in qat_model.weights}
    # Which float tensor each quantizer sees: a wrapped layer's output, a Dense
    # layer's pre-activation (its logits), and the model input.
    targets: dict[str, tuple] = {}
    for layer in float_model.layers:
        prefix = f"quant_{layer.name}"
        if f"{prefix}/output_min" in variables:
            targets[prefix + "/output"] = (layer.output, None)
        if f"{prefix}/pre_activation_min" in variables:
            targets[prefix + "/pre_activation"] = (layer.input, layer)
    probe = keras.Model(float_model.input, [t for t, _ in targets.values()])
    lows = {k: [] for k in targets}
    highs = {k: [] for k in targets}
    for start in range(0, len(pixels), batch_size):
        batch = normalize(pixels[start : start + batch_size], mean, std)
        outs = probe(batch, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for (key, (_, dense)), out in zip(targets.items(), outs):
            out = out.numpy()
            if dense is not None:  # logits = input @ kernel + bias
                out = out @ dense.kernel.numpy() + (dense.bias.numpy() if dense.use_bias else 0.0)
            lows[key].append(min(float(out.min()), 0.0))  # tfmot keeps 0 inside every range
            highs[key].append(max(float(out.max()), 0.0))
    for key in targets:
        variables[key + "_min"].assign(float(np.mean(lows[key])))
        variables[key + "_max"].assign(float(np.mean(highs[key])))
    # The input quantizer covers the whole uint8 range, as for post-training int8.
    ends = normalize(np.array([[[[0, 0, 0]], [[255, 255, 255]]]], np.uint8), mean, std)
    for layer in qat_model.layers:
        if type(layer).__name__ == "QuantizeLayer":
            for w in layer.weights:
                if w.name.split(":")[0].endswith("_min"):
                    w.assign(min(float(ends.min()), 0.0))
                elif w.name.split(":")[0].endswith("_max"):
                    w.assign(max(float(ends.max()), 0.0))
    return len(targets)


def agreement(model_a, model_b, pixels: np.ndarray, mean, std) -> float:
    """Fraction of images on which two Keras models give the same top-1."""
    from mobile_derm.model.classifier import predict_probs

    a = predict_probs(model_a, pixels, mean, std).argmax(axis=1)
    b = predict_probs(model_b, pixels, mean, std).argmax(axis=1)
    return float(np.mean(a == b))
