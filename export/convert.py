"""Keras -> .tflite in every quantization mode a phone app may want.

Variants (names used everywhere: CLI, benchmark.json, file names):
  float32   plain conversion, the reference for on-device accuracy
  float16   float16 weights (halves size; GPU delegates like it)
  int8      full-integer: int8 weights and activations, uint8 (or int8) I/O,
            calibrated on a representative sample of training images
  qat_int8  full-integer export of a quantization-aware-trained model
            (mobile_derm_export.qat); only when asked: it trains again
Dynamic-range and int16x8 models were retired (docs/options.md): on the HAM10000
model, dynamic ran at 1.12x float32's latency for int8's size (int8: 0.51x), and
int16x8 at 21x on reference kernels, no more accurate than int8.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from mobile_derm_quality.quiet import native_output_silenced
from mobile_derm.errors import ConfigError

PTQ_VARIANTS = ("float32", "float16", "int8")
ALL_VARIANTS = PTQ_VARIANTS + ("qat_int8",)
# What `mobile-derm export`, the demo and the API write unless told otherwise: the
# reference, half the size at the same accuracy, and 0.3x the size at half the latency.
# qat_int8 only when asked (it trains again; post-training int8 met the accuracy bands).
DEFAULT_VARIANTS = PTQ_VARIANTS
NEEDS_CALIBRATION = ("int8",)
RETIRED_VARIANTS = ("dynamic", "int16x8")


def check_variants(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in ALL_VARIANTS]
    if unknown:
        why = " (retired: see docs/options.md)" if unknown[0] in RETIRED_VARIANTS else ""
        raise ConfigError(None, f"unknown variant {unknown[0]!r}{why}; choose from {', '.join(ALL_VARIANTS)}")
    return names


def _representative(images: np.ndarray):
    """Calibration generator: one normalized image per step, as the converter wants."""

    def generate():
        for image in images:
            yield [image[None].astype(np.float32)]

    return generate


def keras_converter(model, batch_size: int = 1):
    """A TFLiteConverter for ``model``'s inference function (batch 1, training=False).

    ``TFLiteConverter.from_keras_model`` first exports a Keras SavedModel, and
    with protobuf 3.20.3 (pinned by tflite-support; pure Python on CPython 3.11)
    that export took 60-85 s for Lite0 on a 2-core machine. Converting the
    concrete function directly, without lowering to a SavedModel, gives the
    same graph (Conv+BN+ReLU6 fused, outputs equal to 1e-6) in about 5 s.
    """
    from mobile_derm.tf_setup import tf

    spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], tf.float32, name=model.input_names[0])
    function = tf.function(lambda images: model(images, training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function(spec)], model)
    converter.experimental_lower_to_saved_model = False
    return converter


def convert(model, variant: str, representative: np.ndarray | None = None, io_type: str = "uint8") -> bytes:
    """Convert a (tf_keras) model; ``representative`` holds normalized float
    images from the training split, needed for int8 and qat_int8.

    ``io_type`` is the integer models' input/output type: "uint8" (what camera
    frames are, and what MediaPipe and most app code feed) or "int8".
    """
    from mobile_derm.tf_setup import tf

    check_variants([variant])
    if io_type not in ("uint8", "int8"):
        raise ConfigError(None, f"io_type must be uint8 or int8, not {io_type!r}")
    if variant in NEEDS_CALIBRATION and (representative is None or len(representative) == 0):
        raise ConfigError(None, f"variant {variant!r} needs representative images for calibration")

    converter = keras_converter(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
    elif variant == "qat_int8":
        # A QAT model carries its own fake-quant ranges; the representative set
        # only fixes the input/output quantization of the integer I/O.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if representative is not None and len(representative):
            converter.representative_dataset = _representative(representative)
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
    with native_output_silenced():  # the MLIR converter logs each pass from C++
        return converter.convert()
