"""Make the learned not-skin check: ImageNet EfficientNet-Lite0 features + a one-class
model of skin photos, folded into one small .tflite (run by mobile_derm_quality.not_skin.SkinCheck).

``fit_skin_check(photos, out_dir)`` writes two files into ``out_dir``:
- ``skin_check.tflite``: 64x64 RGB pixels (0-255, float32) in, one distance out
  (about 1 for a typical skin photo): the smaller of the distances under two one-class
  models, each fitted on one half of the photos;
- ``gate_config.json``: the default gate config with the learned check in place of the
  hand-made one (``not_skin`` ramp ``skin_check_distance``, from the fitting photos'
  cross-fitted distances, as the hand-made model's ramp is made).

Why two half models: with 256 whitened directions fitted on ~2000 photos of 1280 features,
a photo the model was fitted on scores *further* out than a new one (the fitted directions'
spreads are inflated by the photos themselves): with a single model fitted on all photos the
gate passed 0.896 of its fitting photos against 0.947 of new ones. Under the smaller of two
half-model distances every fitting photo is scored at most as by the model that never saw
it, i.e. like a new photo, and the threshold taken from those cross-fitted distances means
the same for both (README: clean pass rate 0.921 -> 0.961).

Why these choices (measured in the README): at 64 px, features scaled to unit length and
256 principal directions, the one-class model rejects the non-skin photos of
``../shared/data/ood`` at a 2% false-reject rate on held-out skin photos; smaller inputs
(32, 48 px) or fewer directions lose that, and unscaled features need twice the directions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobile_derm.errors import ConfigError
from mobile_derm_quality import not_skin
from mobile_derm_quality.not_skin import INPUT_SIZE, thumbnail

N_COMPONENTS = 256
BACKBONE = "efficientnet_lite0"
MODEL_FILENAME = "skin_check.tflite"
CONFIG_FILENAME = "gate_config.json"


def _backbone(weights):
    from mobile_derm.model.backbones import build_backbone

    return build_backbone(BACKBONE, INPUT_SIZE, weights=weights, allow_random=weights is None)


def unit_features(backbone, thumbs: np.ndarray) -> np.ndarray:
    """Pooled backbone features of 64x64 uint8 thumbnails, each scaled to unit length."""
    from mobile_derm.model.backbones import normalize_pixels
    from mobile_derm.model.specs import get_backbone_spec

    x = normalize_pixels(thumbs.astype(np.float32), get_backbone_spec(BACKBONE))
    f = backbone.predict(x, batch_size=64, verbose=0).astype(np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def distance_model(backbone, photo_models):
    """Keras model: raw pixels -> the smallest one-class distance (not_skin.SkinPhotoModel)
    over ``photo_models`` (one model or a list), computed in the graph on the unit-length
    features of one backbone pass."""
    from mobile_derm.model.specs import get_backbone_spec
    from mobile_derm.tf_setup import keras, tf

    spec = get_backbone_spec(BACKBONE)
    models = list(photo_models) if isinstance(photo_models, (list, tuple)) else [photo_models]
    heads = [_distance_head(m, tf) for m in models]

    def distance(f):
        f = f / tf.maximum(tf.norm(f, axis=1, keepdims=True), 1e-12)
        d = [head(f) for head in heads]
        return d[0] if len(d) == 1 else tf.reduce_min(tf.concat(d, axis=1), axis=1, keepdims=True)

    pixels = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="thumbnail")
    # the backbone spec's normalization, as normalize_pixels does it for the fitting photos
    pixel_mean, pixel_std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    normalized = keras.layers.Lambda(lambda x: (x - pixel_mean) / pixel_std, name="normalize")(pixels)
    out = keras.layers.Lambda(distance, name="skin_distance")(backbone(normalized))
    return keras.Model(pixels, out, name="skin_check")


def _distance_head(photo_model, tf):
    """unit-length features -> SkinPhotoModel.distance, as TF ops."""
    mean = tf.constant(photo_model.mean.astype(np.float32)[None])
    scale = tf.constant(photo_model.scale.astype(np.float32)[None])
    # components = unit directions / spread: one matrix product along the directions gives
    # both terms, half the head's weights (the two-model file: 16.1 MB instead of 18.7)
    spread_inv = np.linalg.norm(photo_model.projection, axis=0)
    directions = tf.constant((photo_model.projection / spread_inv).astype(np.float32))
    spread_inv = tf.constant(spread_inv.astype(np.float32)[None])
    k = photo_model.n_directions
    residual_scale = float(photo_model.residual_scale)

    def distance(f):
        z = (f - mean) / scale
        along = tf.matmul(z, directions)
        w = along * spread_inv
        # |z - projection|^2 = |z|^2 - |projection|^2 (orthonormal directions)
        residual = tf.maximum(tf.reduce_sum(z * z, axis=1, keepdims=True) - tf.reduce_sum(along * along, axis=1, keepdims=True), 0.0)
        d = tf.reduce_sum(w * w, axis=1, keepdims=True) + residual / residual_scale
        return d / float(k + 1)

    return distance


# Ops of the one-class head (and the global pooling before it): kept in float32 by
# _convert. Only the backbone's convolutions and residual sums are integer.
FLOAT_OPS = ("MEAN", "MUL", "SUM", "SUB", "ADD", "DIV", "SQRT", "MAXIMUM", "FULLY_CONNECTED", "CONCATENATION", "REDUCE_MIN")


def _convert(model, thumbs: np.ndarray, integer_backbone: bool) -> bytes:
    """The .tflite bytes: float32 throughout, or the backbone's convolutions in int8
    (calibrated on up to 200 of the fitting thumbnails) with everything else float32.

    Why: at 64 px the float backbone takes ~1.9 ms of the gate's 10 ms budget, the int8 one
    ~0.8 ms. Integer arithmetic through the head would ruin the distance (a sum of 256
    squares; measured: 57% median error), so the head and the residual sums stay float
    (measured: 4% median difference from float, the same accept/reject on every
    gate-eval photo; README)."""
    from mobile_derm_export.convert import _representative, keras_converter, quantization_debugger
    from mobile_derm.tf_setup import tf

    converter = keras_converter(model)
    if not integer_backbone:
        return converter.convert()
    sample = thumbs[:: max(1, len(thumbs) // 200)][:200].astype(np.float32)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(sample)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS))
    return quantization_debugger(converter, sample, options).get_nondebug_quantized_model()


def fit_skin_check(photos, out_dir: str | Path, source: str = "", weights="imagenet",
                   n_components: int = N_COMPONENTS, integer_backbone: bool = True) -> dict:
    """Fit on good skin photos (RGB uint8 analysis copies, longer side <= the gate's
    analysis_size) and write the model file and its gate config into ``out_dir``."""
    from mobile_derm.io_utils import atomic_write_bytes
    from mobile_derm_quality import GateConfig

    if len(photos) < not_skin.MIN_PHOTOS_TO_FIT:
        raise ConfigError(None, f"need at least {not_skin.MIN_PHOTOS_TO_FIT} good photos to fit the skin check, got {len(photos)}")
    thumbs = np.stack([thumbnail(p) for p in photos])
    backbone = _backbone(weights)
    features = unit_features(backbone, thumbs)
    half_models = not_skin.half_models(features, n_components)
    # each photo's distance under the half model not fitted on it: what the shipped minimum
    # gives a new photo at most, and a fitting photo exactly or less
    distances = not_skin.cross_fit_distances(features, models=half_models)
    quantiles = not_skin.distance_quantiles(distances)
    ramp = not_skin.ramp_from_quantiles(quantiles)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = distance_model(backbone, half_models)
    atomic_write_bytes(out_dir / MODEL_FILENAME, _convert(model, thumbs, integer_backbone))
    config = GateConfig.default()
    config.ramps["not_skin"] = {"skin_check_distance": ramp, **{k: v for k, v in config.ramps["not_skin"].items()
                                                                  if k != "typicality"}}
    config.skin_check_model = MODEL_FILENAME
    config.calibration = {"skin_check": {"photos": len(photos), "source": source, "n_components": half_models[0].n_directions,
                                         "models": "smallest distance of two half models",
                                         "backbone_arithmetic": "int8" if integer_backbone else "float32",
                                         "distance_quantiles": {k: round(v, 4) for k, v in quantiles.items()}}}
    config.validate(out_dir / CONFIG_FILENAME)
    config.save(out_dir / CONFIG_FILENAME)
    return {"model": str(out_dir / MODEL_FILENAME), "config": str(out_dir / CONFIG_FILENAME), "photos": len(photos),
            "ramp": ramp, "distance_quantiles": quantiles}
