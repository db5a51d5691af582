"""Export: Keras model -> quantized ``.tflite`` files with metadata, and checks
that phone-app runtimes read them as we do.

Submodules (import them directly; this package imports nothing heavy):
  convert           Keras -> .tflite in each quantization variant
  metadata          tflite-support metadata writer; zipfile-only reader (no TensorFlow)
  mediapipe_check   runs MediaPipe Tasks' ImageClassifier (in its own venv) against our predictions
"""

# This folder installs as mobile_derm_export (setup.cfg: package_dir); imported under its folder
# name (for example from the repository root, where the folder is on sys.path) it
# would be a second copy of every module, with its own classes and errors.
if __name__ != "mobile_derm_export":
    raise ImportError(f"the export/ folder is the package mobile_derm_export; import mobile_derm_export, not {__name__}")

