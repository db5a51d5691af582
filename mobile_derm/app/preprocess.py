"""Image -> model input, identical for training, evaluation and the app.

numpy + OpenCV only: ``predict`` uses this without TensorFlow. Training decodes
every image through ``load_rgb_square`` once and caches the result, so the
pixels the model learns from are made exactly like the pixels it sees later.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mobile_derm.errors import DataError


def square_box(h: int, w: int) -> tuple[int, int, int]:
    """(top, left, side) of the largest centred square in an h x w image."""
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side


def center_square(rgb: np.ndarray) -> np.ndarray:
    """Crop the largest centred square: phone photos centre the lesion, and a
    square crop keeps its shape instead of stretching it."""
    top, left, side = square_box(*rgb.shape[:2])
    return rgb[top : top + side, left : left + side]


# Part of the pixel-cache key: a change to how model-input pixels are made must
# never silently reuse pixels made the old way. Bump it with any change below.
RESIZE_VERSION = 2


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size``.

    Shrinking uses INTER_AREA (averaging, no aliasing). Enlarging (HAM10000's
    200x150 copies are below most model inputs) samples the way MediaPipe Tasks'
    CPU ImageToTensor does: the square's corners map onto the tensor's corners,
    bilinear, border replicated. An app that hands ImageClassifier the photo with
    the centred-square region of interest then feeds the model the same pixels as
    ``predict`` (cv2.resize's half-pixel-centre mapping differed by a fraction of a
    pixel, which flipped the top-1 of near-tie photos).
    """
    top, left, side = square_box(*rgb.shape[:2])
    if side > size:
        return cv2.resize(center_square(rgb), (size, size), interpolation=cv2.INTER_AREA)
    if side == size:
        return np.ascontiguousarray(center_square(rgb))
    scale = side / size
    to_source = np.float32([[scale, 0, left], [0, scale, top]])
    return cv2.warpAffine(
        rgb, to_source, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )


def load_photo(path: str | Path):
    """Decode a photo file the way the quality gate does (EXIF orientation applied,
    header-checked pixel and memory limits, transparency on grey), raising DataError on
    failure; a ``mobile_derm_quality.DecodedPhoto`` (pixels, the photo's own size)."""
    from mobile_derm_quality import read_photo
    from mobile_derm_quality.errors import ImageReadError

    try:
        return read_photo(path)
    except ImageReadError as exc:
        raise DataError(path, exc.problem) from None


def load_rgb(path: str | Path) -> np.ndarray:
    """``load_photo(path)``'s pixels: RGB uint8, upright."""
    return load_photo(path).rgb


def load_rgb_square(path: str | Path, size: int) -> np.ndarray:
    return resize_square(load_rgb(path), size)


def normalize(pixels: np.ndarray, mean, std) -> np.ndarray:
    """(pixel - mean) / std in float32, per channel; the backbone spec owns the numbers."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return (pixels.astype(np.float32) - mean) / std
