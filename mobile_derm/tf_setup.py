"""The one place TensorFlow and Keras are imported.

tensorflow-model-optimization (quantization-aware training) only accepts
tf-keras (Keras 2) models, so the whole package builds its models with
``tf_keras``; setting TF_USE_LEGACY_KERAS before TensorFlow loads makes
``tf.keras`` that same Keras, so TF's converter and tfmot see one Keras.

Unless verbose output is asked for (``mobile_derm_quality.quiet``), TensorFlow's import-time
banners (CUDA probes, XLA registrations), its Python warnings (retracing, unweighted
metrics) and absl's log lines are kept off the terminal.
"""
import logging
import os
import warnings

from mobile_derm_quality.quiet import native_output_silenced, verbose

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

with native_output_silenced():  # the CUDA/XLA probes print from C++ while the modules load
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

if not verbose():
    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"tensorflow(\..*)?$")
    warnings.filterwarnings("ignore", module=r"tf_keras(\..*)?$")

__all__ = ["tf", "keras"]
