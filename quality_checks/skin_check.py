"""The learned not-skin check: does a small CNN see this photo as one of the skin photos?

The hand-made descriptor of ``typicality.py`` sees a brick wall, a cat or a cup of
coffee as skin-like and lets about a quarter of everyday non-skin photos through.
Features of a network trained on ImageNet's million everyday photos tell those apart:
EfficientNet-Lite0 at 64x64 pixels, its pooled features scaled to unit length, with the
same one-class model (whitened principal directions of skin photos, plus the distance
from their subspace) fitted on skin photos only. No non-skin photo is needed to fit it.

The model file is made by ``mobile-derm fit-skin-check``, which needs TensorFlow and the
ImageNet weights extra, so it is not shipped: the weights package carries no licence
that allows redistribution. The one-class model is folded into the graph, so the file
takes a 64x64 RGB thumbnail (pixel values 0-255, float32) and returns one number: the
distance, about 1 for a typical skin photo. An app runs the same file with its TFLite
runtime.

Here it runs on LiteRT (about 0.8 ms on one core with the int8 backbone that
fit-skin-check writes; no TensorFlow import), the TFLite runtime an app has anyway.
OpenCV's dnn module was tried so that the gate would need nothing else: its TFLite
importer (OpenCV 5.0) runs the backbone in 5-6 ms, too slow for the gate's 10 ms, and
mis-shapes the one-class head's matrix products (README).
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from mobile_derm_quality.errors import GateConfigError

INPUT_SIZE = 64  # below this the ImageNet features stop separating skin from scenes (README)


def thumbnail(small_rgb: np.ndarray) -> np.ndarray:
    """The check's input from the gate's analysis copy: 64x64, area-averaged, uint8 RGB."""
    return cv2.resize(small_rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


class SkinCheck:
    """One skin-check .tflite on LiteRT, loaded once; ``distance(thumbnail)`` runs it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise GateConfigError(self.path, "skin-check model file not found (make it with mobile-derm fit-skin-check)")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise GateConfigError(self.path, "the learned skin check runs on LiteRT: pip install ai-edge-litert") from None
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=1)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise GateConfigError(self.path, f"not a TFLite model LiteRT can load ({str(exc).splitlines()[0]})") from None
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()
        if tuple(inp["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or inp["dtype"] != np.float32 or len(out) != 1:
            raise GateConfigError(self.path, f"not a skin-check model (input {tuple(inp['shape'])} {np.dtype(inp['dtype']).name}, "
                                             f"{len(out)} outputs; expected (1, {INPUT_SIZE}, {INPUT_SIZE}, 3) float32, one output)")
        self._input, self._output = inp["index"], out[0]["index"]

    def distance(self, thumb: np.ndarray) -> float:
        """Distance of a 64x64 RGB uint8 thumbnail from the skin photos (about 1: typical)."""
        self._interpreter.set_tensor(self._input, np.asarray(thumb, np.float32)[None])
        self._interpreter.invoke()
        return float(self._interpreter.get_tensor(self._output).reshape(-1)[0])


@functools.lru_cache(maxsize=4)
def load(path: str) -> SkinCheck:
    """The SkinCheck of a file, loaded once per process."""
    return SkinCheck(path)
