"""Export: Keras model -> quantized ``.tflite`` files with metadata, and checks
that phone-app runtimes read them as we do.

Submodules (import them directly; this package imports nothing heavy):
  convert           Keras -> .tflite in each quantization variant
  metadata          tflite-support metadata writer; zipfile-only reader (no TensorFlow)
  mediapipe_check   runs MediaPipe Tasks' ImageClassifier (in its own venv) against our predictions
"""
