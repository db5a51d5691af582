"""Reading phone photos: any common format -> RGB uint8, upright, at a sensible size.

* JPEG, PNG, WebP, TIFF, BMP, GIF, AVIF: decoded by OpenCV, which applies the EXIF orientation.
* HEIC/HEIF (the iPhone default): decoded by the optional ``pillow-heif`` extra
  (``pip install mobile_derm[heic]``), orientation applied by Pillow.
* Large JPEGs are decoded at 1/2, 1/4 or 1/8 size (``cv2.IMREAD_REDUCED_COLOR_*``, done by
  libjpeg's DCT scaling, so a 12 MP photo costs a fraction of a full decode) as long as the
  result keeps ``min_long_side`` pixels on its longer side.
* The pixel count announced in the header is checked against ``max_pixels`` *before*
  decoding, against decompression bombs.

Anything that cannot be decoded raises :class:`~mobile_derm_quality.errors.ImageReadError`;
no OpenCV or Pillow exception escapes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from mobile_derm_quality.errors import ImageReadError

DEFAULT_MAX_PIXELS = 100_000_000  # a 108 MP phone photo is 12000x9000
DEFAULT_MIN_LONG_SIDE = 800  # reduced JPEG decode keeps at least this many pixels on the longer side
MAX_FILE_BYTES = 256 * 1024 * 1024

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}


def sniff_format(data: bytes) -> str:
    """Return 'jpeg', 'png', 'webp', 'heif', 'gif', 'bmp', 'tiff' or 'unknown' from magic bytes."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "avif" if data[8:12] == b"avif" else "heif"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if i + 4 > n:
            return None
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xDA or length < 2:
            return None
        i += 2 + length
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) announced by the header, without decoding; None when unknown."""
    fmt = sniff_format(data)
    try:
        if fmt == "jpeg":
            return _jpeg_size(data)
        if fmt == "png":
            return _png_size(data)
        if fmt == "webp":
            return _webp_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _reduction(width: int, height: int, min_long_side: int) -> int:
    long_side = max(width, height)
    for factor in (8, 4, 2):
        if long_side // factor >= min_long_side:
            return factor
    return 1


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    """Any decoded array (grey, grey+alpha, RGB, RGBA; 8/16-bit/float) -> contiguous RGB uint8."""
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        a = np.nan_to_num(arr.astype(np.float32))
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        arr = np.clip(a, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(f"unexpected array shape {arr.shape}")
    channels = arr.shape[2]
    if channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels >= 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _decode_pillow(data: bytes, path: str, max_pixels: int, min_long_side: int) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImageReadError(path, "format not supported without Pillow") from None
    import io
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageReadError(path, f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
            if w <= 0 or h <= 0:
                raise ImageReadError(path, "image has no pixels")
            factor = _reduction(w, h, min_long_side)
            if factor > 1 and hasattr(im, "draft"):
                im.draft("RGB", (w // factor, h // factor))
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.float32)
                arr = np.clip(arr / (257.0 if arr.max() > 255 else 1.0), 0, 255).astype(np.uint8)
                return _to_rgb_uint8(arr)
            if im.mode != "RGB":
                im = im.convert("RGB")
            return _to_rgb_uint8(np.asarray(im))
    except ImageReadError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, bomb errors...)
        raise ImageReadError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from None


def _decode_heif(data: bytes, path: str, max_pixels: int, min_long_side: int) -> np.ndarray:
    try:
        import pillow_heif  # noqa: F401

        pillow_heif.register_heif_opener()
    except ImportError:
        raise ImageReadError(
            path, "HEIC/HEIF photos need the optional extra 'pillow-heif' (pip install 'mobile_derm[heic]')"
        ) from None
    except Exception as exc:
        raise ImageReadError(path, f"cannot load the HEIC decoder ({exc})") from None
    return _decode_pillow(data, path, max_pixels, min_long_side)


def decode_image_bytes(
    data: bytes,
    path: str | Path = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_long_side: int = DEFAULT_MIN_LONG_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes to an upright RGB uint8 array (see the module docstring)."""
    path = str(path)
    if not data:
        raise ImageReadError(path, "file is empty")
    fmt = sniff_format(data)
    if fmt == "heif":
        return _decode_heif(data, path, max_pixels, min_long_side)
    size = header_size(data)
    if fmt in ("jpeg", "png", "webp") and size is None:
        raise ImageReadError(path, f"{fmt.upper()} header is truncated or corrupt")
    factor = 1
    if size is not None:
        w, h = size
        if w <= 0 or h <= 0:
            raise ImageReadError(path, f"header says the image is {w}x{h}")
        if w * h > max_pixels:
            raise ImageReadError(path, f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
        if fmt == "jpeg":
            factor = _reduction(w, h, min_long_side)
    if fmt == "unknown":
        # Let Pillow try (it knows more formats and raises cleanly); cv2 is not asked to guess.
        return _decode_pillow(data, path, max_pixels, min_long_side)
    buf = np.frombuffer(data, dtype=np.uint8)
    arr = None
    try:
        # IMREAD_COLOR (and its reduced variants) gives 8-bit BGR for grey, 16-bit and alpha
        # inputs alike, and applies the EXIF orientation.
        arr = cv2.imdecode(buf, _REDUCED_FLAGS[factor])
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0:
        if fmt in ("gif", "bmp", "tiff"):
            return _decode_pillow(data, path, max_pixels, min_long_side)
        raise ImageReadError(path, f"cannot decode {fmt.upper()} data (truncated or corrupt)")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageReadError(path, f"decoded image has {arr.shape[0] * arr.shape[1]} pixels, more than {max_pixels}")
    try:
        if arr.ndim == 3 and arr.shape[2] >= 3:
            arr = np.ascontiguousarray(arr[:, :, 2::-1])  # BGR(A) -> RGB
        return _to_rgb_uint8(arr)
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from None


def read_image(
    path: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_long_side: int = DEFAULT_MIN_LONG_SIDE,
) -> np.ndarray:
    """Read a photo as an upright RGB uint8 array; raises ImageReadError for anything unusable."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ImageReadError(p, "file not found" if not p.exists() else "not a file")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ImageReadError(p, f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        data = p.read_bytes()
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image_bytes(data, p, max_pixels=max_pixels, min_long_side=min_long_side)
