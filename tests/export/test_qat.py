"""Quantization-aware distillation: learns the float model, leaves BatchNorm alone."""
import numpy as np
import pytest

from mobile_derm.training.config import TrainConfig

pytest.importorskip("tensorflow_model_optimization")


@pytest.fixture(scope="module")
def float_model_and_pixels():
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(0)
    # Three colour classes, so the float model is decisive and agreement is meaningful.
    y = rng.integers(0, 3, 96)
    pixels = rng.integers(0, 60, (96, 16, 16, 3)).astype(np.uint8)
    pixels[np.arange(96), :, :, y] += 150
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit((pixels.astype(np.float32) - 127) / 128, y, epochs=15, verbose=0)
    return model, pixels


def test_qat_distils_the_float_model_with_batchnorm_frozen(float_model_and_pixels):
    from mobile_derm_export.qat import agreement, quantization_aware_finetune
    from mobile_derm.tf_setup import keras

    model, pixels = float_model_and_pixels
    config = TrainConfig(batch_size=16)
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    moving_mean = bn.moving_mean.numpy().copy()

    qat = quantization_aware_finetune(model, config, pixels[:64], pixels[64:], epochs=2, learning_rate=1e-4)

    qat_bn = [w for w in qat.weights if "moving_mean" in w.name]
    assert qat_bn, "the QAT copy should keep a BatchNorm (moving_mean) variable"
    np.testing.assert_allclose(qat_bn[0].numpy(), moving_mean, atol=1e-6)  # not updated by batch statistics
    assert bn.trainable  # the float model's own flag is restored
    np.testing.assert_allclose(bn.moving_mean.numpy(), moving_mean)
    assert agreement(model, qat, pixels, config.spec.mean, config.spec.std) >= 0.95


def test_activation_ranges_start_at_the_float_models_ranges(float_model_and_pixels):
    """tfmot would start every range at [-6, 6]; ours start where the float activations are."""
    import tensorflow_model_optimization as tfmot

    from mobile_derm_export.qat import initialise_activation_ranges
    from mobile_derm.app.preprocess import normalize
    from mobile_derm.tf_setup import keras

    model, pixels = float_model_and_pixels
    qat = tfmot.quantization.keras.quantize_model(model)
    assert initialise_activation_ranges(model, qat, pixels, (127.0,) * 3, (128.0,) * 3, batch_size=96) >= 2
    weights = {w.name.split(":")[0]: float(w.numpy()) for w in qat.weights if w.shape == ()}
    relu = next(layer for layer in model.layers if isinstance(layer, keras.layers.ReLU))
    act = keras.Model(model.input, relu.output)(normalize(pixels, (127.0,) * 3, (128.0,) * 3)).numpy()
    assert weights[f"quant_{relu.name}/output_max"] == pytest.approx(act.max(), rel=1e-5)
    assert weights[f"quant_{relu.name}/output_min"] == 0.0
    input_range = sorted(v for k, v in weights.items() if k.startswith("quantize_layer") and k.endswith(("_min", "_max")))
    assert input_range == pytest.approx([-127 / 128, 128 / 128])


def test_an_ensemble_is_refused_with_a_clear_error(float_model_and_pixels):
    # tfmot cannot quantize the layer that averages the members: say so before it fails deep inside
    from mobile_derm_export.qat import quantization_aware_finetune
    from mobile_derm.errors import ConfigError
    from mobile_derm.model.classifier import ensemble_classifier

    model, pixels = float_model_and_pixels
    ensemble = ensemble_classifier([model, model])
    with pytest.raises(ConfigError, match="ensemble_members 2.*int8"):
        quantization_aware_finetune(ensemble, TrainConfig(ensemble_members=2), pixels[:16], pixels[16:32])
