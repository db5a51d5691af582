"""Every quantization mode converts and runs; integer I/O maps raw pixels."""
import numpy as np
import pytest

from mobile_derm_export.convert import ALL_VARIANTS, check_variants, convert
from mobile_derm_export.exporter import representative_sample
from mobile_derm.errors import ConfigError
from mobile_derm.app.preprocess import normalize


@pytest.fixture(scope="module")
def tiny_model():
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras.layers.ReLU(6.0)(x)  # a separate layer, as in the backbone: tfmot rejects activation="relu6"
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def calibration():
    pixels = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    return normalize(representative_sample(pixels, 16), (127.0,) * 3, (128.0,) * 3)


def run(model_bytes, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
    interp.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
    interp.invoke()
    y = interp.get_tensor(out["index"])[0]
    if np.issubdtype(y.dtype, np.integer):
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y, inp


@pytest.mark.parametrize("variant", ["float32", "float16", "int8"])
def test_each_ptq_variant_matches_keras(tiny_model, calibration, variant):
    model_bytes = convert(tiny_model, variant, calibration)
    x = calibration[3]
    y, inp = run(model_bytes, x)
    expected = tiny_model.predict(x[None], verbose=0)[0]
    tolerance = {"float32": 1e-5, "float16": 5e-3, "int8": 3e-2}[variant]
    np.testing.assert_allclose(y, expected, atol=tolerance)
    if variant == "int8":
        assert inp["dtype"] == np.uint8
        scale, zero = inp["quantization"]
        assert scale == pytest.approx(1 / 128, rel=0.01) and zero in (127, 128)


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_an_ensemble_converts_to_one_model_file_that_averages_its_members(tiny_model, calibration, variant):
    from mobile_derm.tf_setup import keras
    from mobile_derm.model.classifier import ensemble_classifier

    other = keras.models.clone_model(tiny_model)  # same layers, fresh random weights
    ensemble = ensemble_classifier([tiny_model, other])
    assert len({layer.name for layer in ensemble.layers}) == len(ensemble.layers)  # flat: one name per layer
    x = calibration[3]
    members = [m.predict(x[None], verbose=0)[0] for m in (tiny_model, other)]
    assert np.abs(members[0] - members[1]).max() > 0.01  # two different members
    y, _ = run(convert(ensemble, variant, calibration), x)
    np.testing.assert_allclose(y, np.mean(members, axis=0), atol={"float32": 1e-5, "int8": 3e-2}[variant])


def test_qat_model_converts_to_integer_io(tiny_model, calibration):
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(tiny_model)
    y, inp = run(convert(qat, "qat_int8", calibration), calibration[0])
    assert inp["dtype"] == np.uint8 and y.sum() == pytest.approx(1.0, abs=0.05)


def test_variant_checks():
    assert check_variants(["int8", "float16"]) == ["int8", "float16"]
    assert "qat_int8" in ALL_VARIANTS
    with pytest.raises(ConfigError, match="int4"):
        check_variants(["int4"])
    with pytest.raises(ConfigError, match="representative"):
        convert(None, "int8", None)


@pytest.mark.parametrize("retired", ["dynamic", "int16x8"])
def test_retired_variants_are_refused_with_the_reason(retired):
    with pytest.raises(ConfigError, match=f"'{retired}' \\(retired: see docs/options.md\\)"):
        check_variants(["float32", retired])


def test_representative_sample_pins_the_pixel_range():
    pixels = np.full((10, 4, 4, 3), 100, np.uint8)
    sample = representative_sample(pixels, 5)
    assert len(sample) == 7 and sample.min() == 0 and sample.max() == 255


@pytest.mark.parametrize("quantization_aware", [False, True])
def test_unfamiliarity_output_survives_integer_conversion(calibration, quantization_aware):
    """The familiarity head converts after a plain or a quantization-aware model
    (tfmot renames the head "quant_head") and the integer score tracks the float one."""
    from mobile_derm.model import familiarity
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras.layers.ReLU(6.0)(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(features))
    f = keras.Model(inputs, features).predict(calibration, verbose=0)
    fam = familiarity.fit(f, np.arange(len(f)) % 3, 4).calibrate(f, 0.5)
    if quantization_aware:
        import tensorflow_model_optimization as tfmot

        from mobile_derm_export.qat import initialise_activation_ranges

        qat = tfmot.quantization.keras.quantize_model(model)
        pixels = np.round(calibration * 128 + 127).clip(0, 255).astype(np.uint8)
        initialise_activation_ranges(model, qat, pixels, (127.0,) * 3, (128.0,) * 3)  # as export does
        model = qat
    wrapped = familiarity.with_unfamiliarity(model, fam)
    expected = familiarity.unfamiliarity_score(fam.distance(f), fam.threshold)

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=convert(wrapped, "qat_int8" if quantization_aware else "int8", calibration))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    probs_out, score_out = interp.get_output_details()
    assert list(probs_out["shape"]) == [1, 3] and list(score_out["shape"]) == [1, 1]
    scale, zero = inp["quantization"]
    got = []
    for image in calibration:
        interp.set_tensor(inp["index"], np.clip(np.round(image / scale + zero), 0, 255)[None].astype(np.uint8))
        interp.invoke()
        s, z = score_out["quantization"]
        got.append((float(interp.get_tensor(score_out["index"])[0, 0]) - z) * s)
    if not quantization_aware:  # QAT's fake-quant features differ from the float ones by design
        error = np.abs(np.array(got) - expected)  # int8 features and distances on a random tiny network
        assert error.mean() < 0.05 and error.max() < 0.15
    # the decision (above / below 0.5) agrees for most images
    assert np.mean((np.array(got) > 0.5) == (expected > 0.5)) >= 0.8


def test_integer_unfamiliarity_still_abstains_on_photos_unlike_every_calibration_image():
    """Calibration images are the training photos, all familiar; a photo far from all of
    them must still score above 0.5 in the int8 model, as in the float one. (Before the
    score's ranges were bounded in the graph, int8 ranges set by familiar photos alone
    capped distance / threshold at what the calibration photos reached: below 1 in the
    demo, so its int8 model never abstained.)"""
    from mobile_derm.model import familiarity
    from mobile_derm.tf_setup import keras

    rng = np.random.default_rng(0)
    # two classes of photos, dark grey and light grey: the integer ranges of the features and
    # of the offsets to both class means span the whole 0..255, only the distance to the
    # nearest class mean stays small on every calibration photo
    label = np.arange(40) % 2
    level = np.where(label == 1, 215.0, 40.0)[:, None, None, None]
    greyish = np.clip(level + rng.normal(0, 8, (40, 1, 1, 3)) + rng.normal(0, 3, (40, 8, 8, 3)), 0, 255).astype(np.uint8)
    mean, std = (127.0,) * 3, (128.0,) * 3
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.GlobalAveragePooling2D()(inputs)  # the mean colour
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(features))
    f = keras.Model(inputs, features).predict(normalize(greyish, mean, std), verbose=0)
    fam = familiarity.fit(f, label, 3).calibrate(f, 0.95)
    wrapped = familiarity.with_unfamiliarity(model, fam)
    int8 = convert(wrapped, "int8", normalize(greyish, mean, std))
    far = familiarity.non_skin_images(8, n=24)  # noise, flat colours, stripes, text: mean colours off the grey line
    expected = familiarity.unfamiliarity_score(fam.distance(keras.Model(inputs, features).predict(
        normalize(far, mean, std), verbose=0)), fam.threshold)
    assert np.mean(expected > 0.5) > 0.5  # the float model flags most of them

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=int8)
    interp.allocate_tensors()
    inp, score_out = interp.get_input_details()[0], interp.get_output_details()[1]
    scale, zero = inp["quantization"]
    s, z = score_out["quantization"]
    got = []
    for image in normalize(far, mean, std):
        interp.set_tensor(inp["index"], np.clip(np.round(image / scale + zero), 0, 255)[None].astype(np.uint8))
        interp.invoke()
        got.append((float(interp.get_tensor(score_out["index"])[0, 0]) - z) * s)
    got = np.array(got)
    # int8 ranges set by familiar photos alone clipped every far photo to one score (0.71 here)
    assert np.abs(got - expected).mean() < 0.05
    assert np.mean((got > 0.5) == (expected > 0.5)) >= 0.95


def _ops(model_bytes) -> list[tuple[str, str]]:
    """(op name, output dtype) of every op of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return [(op["op_name"], tensors[op["outputs"][0]]["dtype"].__name__) for op in interp._get_ops_details()]


def _model_with_a_wide_stem():
    """A first convolution whose weights are large and wide-ranging (as batch-norm folding makes
    EfficientNet-Lite's stem) feeding a ReLU6, then two ordinary 1x1 convolutions; the stem holds
    0.6% of the weights (EfficientNet-Lite0's: 0.03%)."""
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="wide_stem")(inputs)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(64, 1, name="ordinary")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(512, 1, name="large")(x)
    x = keras.layers.ReLU(6.0)(x)
    model = keras.Model(inputs, x)  # the feature map: pooling and a softmax would average the error away
    stem = model.get_layer("wide_stem")
    kernel, bias = stem.get_weights()
    scale = np.geomspace(0.2, 2000.0, kernel.size).reshape(kernel.shape)  # rounding to 1/127 of the largest hurts
    stem.set_weights([kernel * np.random.default_rng(0).permutation(scale.ravel()).reshape(kernel.shape), bias + 3.0])
    return model


def _convs(model_bytes) -> tuple[int, int]:
    """(float32, int8) convolutions of a .tflite."""
    ops = _ops(model_bytes)
    return tuple(sum(1 for name, d in ops if name == "CONV_2D" and d == dtype) for dtype in ("float32", "int8"))


def test_int8_keeps_in_float_only_the_layer_int8_cannot_represent(calibration):
    """The wide stem loses several steps of its int8 output grid to weight rounding; it alone
    stays float32, the file keeps uint8 input and output, and its outputs (a feature map) are
    closer to Keras than a fully integer conversion's."""
    from mobile_derm.tf_setup import tf
    from mobile_derm_export.convert import _representative, keras_converter

    model = _model_with_a_wide_stem()
    ours_file = convert(model, "int8", calibration)
    ops = _ops(ours_file)
    assert _convs(ours_file) == (1, 2)  # the stem float, the ordinary ones integer
    assert ("DEQUANTIZE", "float32") in ops

    converter = keras_converter(model)  # the fully integer file, for comparison
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    fully_integer = converter.convert()
    expected = model.predict(calibration[:16], verbose=0)
    ours = np.stack([run(ours_file, x)[0] for x in calibration[:16]])
    theirs = np.stack([run(fully_integer, x)[0] for x in calibration[:16]])
    _, inp = run(ours_file, calibration[0])
    assert inp["dtype"] == np.uint8
    # rounding to the output's uint8 grid alone errs by a quarter step on average (0.19 measured);
    # the fully integer stem's error, diluted by two integer layers after it, still shows (0.37)
    from ai_edge_litert.interpreter import Interpreter

    step = Interpreter(model_content=ours_file).get_output_details()[0]["quantization"][0]
    ours_error, theirs_error = (float(np.abs(y - expected).mean()) / step for y in (ours, theirs))
    assert ours_error < 0.25 and theirs_error > 1.5 * ours_error


def test_int8_keeps_no_layer_float_beyond_the_weight_budget(calibration, monkeypatch):
    """A layer int8 cannot hold stays integer when keeping it float would keep more than
    MAX_FLOAT_WEIGHT_SHARE of the weights in float32 (the stem here holds 0.6%)."""
    import mobile_derm_export.convert as convert_module

    model = _model_with_a_wide_stem()
    monkeypatch.setattr(convert_module, "MAX_FLOAT_WEIGHT_SHARE", 0.005)
    assert _convs(convert(model, "int8", calibration)) == (0, 3)
    monkeypatch.setattr(convert_module, "MAX_FLOAT_WEIGHT_SHARE", 0.01)
    assert _convs(convert(model, "int8", calibration)) == (1, 2)
