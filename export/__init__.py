"""mobile_derm_export (the export/ folder): Keras model -> quantized ``.tflite`` files with
metadata, the benchmark of those files, and checks that phone-app runtimes read them as we do.

Submodules (import them directly; this package imports nothing heavy):
  convert             Keras -> .tflite in each quantization variant (float32, float16, int8)
  qat                 quantization-aware fine-tuning for the qat_int8 variant (tfmot)
  metadata            the tflite-support metadata writer (the reader is mobile_derm.app.model_file)
  exporter            a trained run -> every variant's file with metadata, the not-skin model beside them
  benchmark           accuracy, agreement with float, size and latency of a set of .tflite files
  not_skin_model      fits the learned not-skin check into skin_check.tflite (TensorFlow)
  backbone_benchmark  Lite0 vs B0: size, latency and int8 accuracy (why Lite0 is the default)
  mediapipe_check     runs MediaPipe Tasks' ImageClassifier (in its own venv) against our predictions
"""

# This folder installs as mobile_derm_export (setup.cfg: package_dir); imported under its folder
# name (for example from the repository root, where the folder is on sys.path) it
# would be a second copy of every module, with its own classes and errors.
if __name__ != "mobile_derm_export":
    raise ImportError(f"the export/ folder is the package mobile_derm_export; import mobile_derm_export, not {__name__}")

