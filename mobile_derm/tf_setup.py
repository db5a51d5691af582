"""The one place TensorFlow and Keras are imported.

tensorflow-model-optimization (quantization-aware training) only accepts
tf-keras (Keras 2) models, so the whole package builds its models with
``tf_keras``; setting TF_USE_LEGACY_KERAS before TensorFlow loads makes
``tf.keras`` that same Keras, so TF's converter and tfmot see one Keras.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide oneDNN/CUDA banners

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
