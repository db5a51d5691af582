"""Keras -> .tflite in every quantization mode a phone app may want.

Variants (names used everywhere: CLI, benchmark.json, file names):
  float32   plain conversion, the reference for on-device accuracy
  float16   float16 weights (halves size; GPU delegates like it)
  int8      integer: int8 weights and activations, uint8 (or int8) I/O,
            calibrated on a representative sample of training images; the few
            layers int8 cannot represent stay float32 (``float_layers``)
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
# A convolution whose int8 output is off from its float output by more than this many steps
# of its int8 grid (RMSE, each layer fed the same inputs) stays float32. Uniform rounding
# alone gives 0.29 steps; ImageNet-pretrained EfficientNet-Lite's first convolutions have
# channels whose batch-norm-folded weights span 1e-9 to 90 and reach 1.3-5.9 steps
# (runs/ham_sealed). The limit was chosen on the validation split among 0.5, 1 and none
# (fully integer) for the abstention agreement with float32 (docs/experiments.md, "int8:
# the convolutions int8 cannot hold stay float").
MAX_INT8_ERROR_STEPS = 0.5
# Only convolutions may stay float: their batch-norm-folded weights are what int8 cannot hold.
# A head layer kept float gains nothing: its output is requantized for the integer op after it,
# and on a small test network the familiarity projection kept float doubled the largest
# unfamiliarity error (0.09 -> 0.20; tests/export/test_convert.py).
FLOAT_CANDIDATE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
ERROR_PROBE_IMAGES = 16  # calibration images each layer's int8 error is measured on
# ... worst first, while the float layers hold at most this share of the convolutions' weights: a float
# layer keeps 4 bytes per weight, and a large one would give back what int8 is for. On the HAM10000 and
# PAD-UFES-20 models the rule's layers hold 0.25-0.51% (never capped); on the tiny demo model it would
# also have taken the last two 1x1 convolutions (23% of the weights, the file 0.47x float32's size).
MAX_FLOAT_WEIGHT_SHARE = 0.01


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


def quantization_debugger(converter, images: np.ndarray, options=None):
    """TFLite's QuantizationDebugger for ``converter`` (its construction calibrates on the
    converter's representative set and quantizes with ``options``), measuring on ``images``.
    TFLite's documented route to selective quantization; the warnings its construction raises
    are silenced: the deprecated tf.lite.Interpreter it runs on (the pinned TF 2.19 still has
    it: revisit on upgrade) and the calibration's unused input statistics."""
    import warnings

    from mobile_derm.tf_setup import tf

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected.*")
        return tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=_representative(images),
                                                         debug_options=options)


def float_layers(debugger, max_error_steps: float, max_weight_share: float) -> list[str]:
    """Names of the convolutions (their output tensors) whose int8 error, measured by the
    ``QuantizationDebugger`` that ran on the probe images, exceeds ``max_error_steps`` steps
    of their output's int8 grid: the worst first, as long as the chosen ones hold at most
    ``max_weight_share`` of all the convolutions' weights."""
    import csv
    import io

    from tensorflow.lite.tools import flatbuffer_utils

    text = io.StringIO()
    debugger.layer_statistics_dump(text)
    rows = [row for row in csv.DictReader(io.StringIO(text.getvalue())) if row["op_name"] in FLOAT_CANDIDATE_OPS]
    # the instrumented model the statistics index (read from its flatbuffer: an interpreter
    # would show XNNPACK's delegate nodes in place of the convolutions)
    graph = flatbuffer_utils.convert_bytearray_to_object(debugger.quant_model).subgraphs[0]
    kernel_of = {int(out): int(op.inputs[1]) for op in graph.operators for out in op.outputs if len(op.inputs) > 1}

    def n_weights(row) -> int:
        return int(np.prod(graph.tensors[kernel_of[int(row["tensor_idx"])]].shape))

    def error_steps(row) -> float:
        scale = float(row["scale"])
        return float(row["mean_squared_error"]) ** 0.5 / scale if scale > 0 else 0.0

    budget = max_weight_share * sum(n_weights(row) for row in rows)
    names, used = [], 0
    for row in sorted((r for r in rows if error_steps(r) > max_error_steps), key=error_steps, reverse=True):
        if used + n_weights(row) <= budget:
            names.append(row["tensor_name"])
            used += n_weights(row)
    return names


def _integer_model(converter, representative: np.ndarray, io_type: str) -> bytes:
    """Calibrate, measure each layer's int8 error on the first ERROR_PROBE_IMAGES
    calibration images, and quantize every layer but the ``float_layers``, which run in
    float32 between a dequantize and a quantize; ``io_type`` input and output as usual.

    Why: on the HAM10000 model the fully integer file agreed with float32 on the abstention
    decision for 0.968 of validation photos and lost 2.0 points of balanced accuracy; with
    its convolutions above MAX_INT8_ERROR_STEPS in float32 (the stem and the depthwise
    convolutions of blocks 0, 1, 2 and 4) 0.983 and 1.6 points, at 0.49x float32's latency
    instead of 0.43x.

    The ``quantization_debugger`` measures the errors; the model is then quantized from its
    calibrated model by the same MLIR call TFLiteConverter makes, with the float layers
    deny-listed (the debugger's own ``get_nondebug_quantized_model`` would leave float32
    inputs and outputs)."""
    from tensorflow.lite.python.convert import mlir_quantize

    from mobile_derm.tf_setup import tf

    debugger = quantization_debugger(converter, representative[:ERROR_PROBE_IMAGES])
    debugger.run()
    io = getattr(tf, io_type)
    names = float_layers(debugger, MAX_INT8_ERROR_STEPS, MAX_FLOAT_WEIGHT_SHARE)
    return mlir_quantize(debugger.calibrated_model, disable_per_channel=False, input_data_type=io,
                         output_data_type=io, denylisted_nodes=names or None)


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
        with native_output_silenced():
            return _integer_model(converter, representative, io_type)
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
