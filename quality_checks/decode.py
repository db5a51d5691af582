"""Reading phone photos: any common format -> RGB uint8, upright, at a sensible size.

* JPEG, PNG, WebP, TIFF, BMP, GIF: decoded by OpenCV, which applies the EXIF orientation.
* HEIC/HEIF (the iPhone default, through ``pillow-heif``), AVIF and every other format
  Pillow opens (ICO, PSD, PPM, ...): decoded by Pillow, orientation applied by Pillow.
* Large JPEGs are decoded at 1/2, 1/4 or 1/8 size (``cv2.IMREAD_REDUCED_COLOR_*``, done by
  libjpeg's DCT scaling, so a 12 MP photo costs a fraction of a full decode) as long as the
  result keeps ``min_long_side`` pixels on its longer side.
* Decompression bombs: the dimensions and sample size are read from the header of every
  format *before* any pixel is decoded (JPEG, PNG and WebP by the small parsers below, every
  other format by Pillow's lazy ``Image.open``, which reads the header only). A file whose
  header cannot be read is refused; so is one that announces more than ``max_pixels``
  pixels or whose decoding would need more than ``MAX_DECODE_BYTES`` of memory.
* Animated and multi-page files (GIF, WebP, TIFF, HEIF sequences): the first frame only.
* Transparent pixels are composited on neutral grey (``TRANSPARENCY_BACKGROUND``): their
  hidden colour values are arbitrary (often black or left-over paint), and the gate and the
  classifier must not judge them. ``DecodedPhoto.had_transparency`` says it happened.

Anything that cannot be decoded raises :class:`~mobile_derm_quality.errors.ImageReadError`
with a one-line message; no OpenCV or Pillow exception escapes.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mobile_derm_quality.errors import ImageReadError

DEFAULT_MAX_PIXELS = 100_000_000  # a 108 MP phone photo is 12000x9000
DEFAULT_MIN_LONG_SIDE = 800  # reduced JPEG decode keeps at least this many pixels on the longer side
MAX_FILE_BYTES = 256 * 1024 * 1024
# Memory a decode may need: the decoder's own buffer (the source's samples) plus the RGB
# result and one working copy. 768 MiB keeps a 100 MP 8-bit photo and bounds a whole
# decode -> gate -> predict pass under 1 GiB.
MAX_DECODE_BYTES = 768 * 1024 * 1024
_OUTPUT_BYTES_PER_PIXEL = 6  # RGB uint8 result + one copy of it
TRANSPARENCY_BACKGROUND = 128  # neutral grey under transparent pixels

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}
_OPENCV_FORMATS = ("jpeg", "png", "webp", "gif", "bmp", "tiff")
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


@dataclass(frozen=True)
class Header:
    """What a file's header announces, read without decoding any pixel."""

    format: str
    width: int
    height: int
    bytes_per_pixel: float  # of the decoder's own buffer
    has_alpha: bool


@dataclass(frozen=True)
class DecodedPhoto:
    """A decoded photo: ``rgb`` (upright, possibly a reduced-size decode) and the size of the
    photo itself as the file holds it (upright), which ``rgb`` may be smaller than."""

    rgb: np.ndarray
    width: int
    height: int
    format: str
    had_transparency: bool


def sniff_format(data: bytes) -> str:
    """'jpeg', 'png', 'webp', 'heif', 'avif', 'gif', 'bmp', 'tiff' or 'other' from magic bytes."""
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
    return "other"


def _jpeg_header(data: bytes) -> Header | None:
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
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 10 > n:
                return None
            h, w, components = struct.unpack(">HHB", data[i + 5 : i + 10])
            return Header("jpeg", w, h, max(components, 1), False)
        if marker == 0xDA or length < 2:
            return None
        i += 2 + length
    return None


def _png_header(data: bytes) -> Header | None:
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    w, h, depth, colour = struct.unpack(">IIBB", data[16:26])
    channels = _PNG_CHANNELS.get(colour, 4)
    idat = data.find(b"IDAT")
    has_alpha = colour in (4, 6) or b"tRNS" in data[: idat if idat > 0 else len(data)]
    return Header("png", w, h, channels * max(depth, 8) / 8, has_alpha)


def _webp_header(data: bytes) -> Header | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return Header("webp", w, h, 4, bool(data[20] & 0x10))
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return Header("webp", w & 0x3FFF, h & 0x3FFF, 4, False)
    if chunk == b"VP8L" and len(data) >= 25:
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return Header("webp", w, h, 4, bool(b[3] & 0x10))
    return None


def _sample_bytes(mode: str) -> int:
    return 2 if "16" in mode else 4 if mode in ("I", "F", "RGBa;16") or mode.startswith(("I;32", "F;")) else 1


def _pillow_header(data: bytes, fmt: str, path: str, max_pixels: int) -> Header:
    """The header of any format Pillow opens; ``Image.open`` is lazy and decodes no pixel."""
    if fmt == "heif":
        _register_heif(path)
    try:
        with warnings.catch_warnings():
            # the limits are ours, from these same numbers; a damaged EXIF block is no reason to
            # print anything: the photo either decodes or raises ImageReadError
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                mode = im.mode
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                name = (im.format or fmt).lower()
                bands = Image.getmodebands(mode) if mode in Image.MODES else 4  # an exotic mode: assume the widest
    except Image.DecompressionBombError:  # Pillow's own guard, at twice Image.MAX_IMAGE_PIXELS
        raise ImageReadError(path, f"image has more than {2 * Image.MAX_IMAGE_PIXELS} pixels, more than the limit of "
                                   f"{max_pixels}") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image in a format this package reads (JPEG, PNG, WebP, HEIC, AVIF, TIFF, "
                                   "BMP, GIF, ...)") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error...)
        raise ImageReadError(path, f"cannot read the image header ({_short(exc)})") from None
    return Header(name, w, h, bands * _sample_bytes(mode), has_alpha)


def read_header(data: bytes, path: str | Path = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Dimensions, sample size and transparency from the header; raises ImageReadError when
    the header is missing, truncated or not of an image format."""
    path = str(path)
    fmt = sniff_format(data)
    parser = {"jpeg": _jpeg_header, "png": _png_header, "webp": _webp_header}.get(fmt)
    if parser is None:
        return _pillow_header(data, fmt, path, max_pixels)
    try:
        header = parser(data)
    except (struct.error, IndexError):
        header = None
    if header is None:
        raise ImageReadError(path, f"{fmt.upper()} header is truncated or corrupt")
    return header


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) announced by the header, without decoding; None when unreadable."""
    try:
        header = read_header(data)
    except ImageReadError:
        return None
    return header.width, header.height


def check_limits(header: Header, path: str, max_pixels: int = DEFAULT_MAX_PIXELS, reduction: int = 1) -> None:
    """Refuse, before decoding, an image that is empty, has too many pixels or would need too much memory."""
    w, h = header.width, header.height
    if w <= 0 or h <= 0:
        raise ImageReadError(path, f"header says the image is {w}x{h}")
    if w * h > max_pixels:
        raise ImageReadError(path, f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    pixels = -(-w // reduction) * -(-h // reduction)
    need = pixels * (header.bytes_per_pixel + _OUTPUT_BYTES_PER_PIXEL)
    if need > MAX_DECODE_BYTES:
        raise ImageReadError(path, f"decoding this {w}x{h} image would need {need / 2**20:.0f} MiB, more than the "
                                   f"limit of {MAX_DECODE_BYTES // 2**20} MiB")


def _reduction(width: int, height: int, min_long_side: int) -> int:
    long_side = max(width, height)
    for factor in (8, 4, 2):
        if long_side // factor >= min_long_side:
            return factor
    return 1


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _short(exc: Exception) -> str:
    """An exception as one line without object reprs (``<_io.BytesIO object at 0x...>``)."""
    text = " ".join(str(exc).split())
    if "object at 0x" in text or not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"


def _composite(arr: np.ndarray) -> np.ndarray:
    """RGBA / grey+alpha (uint8) -> RGB over ``TRANSPARENCY_BACKGROUND``."""
    alpha = arr[:, :, -1:].astype(np.float32) / 255.0
    colour = arr[:, :, :-1] if arr.shape[2] == 4 else np.repeat(arr[:, :, :1], 3, axis=2)
    out = colour.astype(np.float32) * alpha + TRANSPARENCY_BACKGROUND * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


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
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"unexpected array shape {arr.shape}")
    channels = arr.shape[2]
    if channels in (2, 4):
        arr = _composite(arr)
    elif channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels > 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _register_heif(path: str) -> None:
    try:
        import pillow_heif
    except ImportError:
        raise ImageReadError(path, "HEIC/HEIF photos need the package 'pillow-heif' (pip install pillow-heif)") from None
    try:
        pillow_heif.register_heif_opener()
    except Exception as exc:
        raise ImageReadError(path, f"cannot load the HEIC decoder ({_short(exc)})") from None


def _decode_pillow(data: bytes, path: str, factor: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # limits checked from the header; see _pillow_header
            with Image.open(io.BytesIO(data)) as im:
                im.seek(0)  # first frame of an animation or the first page
                w, h = im.size
                if factor > 1 and hasattr(im, "draft"):
                    im.draft("RGB", (w // factor, h // factor))
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    arr = np.asarray(im).astype(np.float32)
                    return _to_rgb_uint8(np.clip(arr / (257.0 if arr.max() > 255 else 1.0), 0, 255).astype(np.uint8))
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                return _to_rgb_uint8(np.asarray(im.convert("RGBA" if has_alpha else "RGB")))
    except ImageReadError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, bomb errors...)
        raise ImageReadError(path, f"cannot decode image ({_short(exc)})") from None


def _decode_opencv(data: bytes, factor: int) -> np.ndarray | None:
    """OpenCV's decode, RGB; None when it cannot decode the data."""
    try:
        # IMREAD_COLOR (and its reduced variants) gives 8-bit BGR for grey and 16-bit
        # inputs alike, and applies the EXIF orientation.
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[factor])
    except cv2.error:
        return None
    if arr is None or arr.size == 0:
        return None
    return arr[:, :, ::-1] if arr.ndim == 3 else arr


def decode_photo(
    data: bytes,
    path: str | Path = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_long_side: int = DEFAULT_MIN_LONG_SIDE,
) -> DecodedPhoto:
    """Decode encoded image bytes to an upright RGB uint8 photo (see the module docstring)."""
    path = str(path)
    if not data:
        raise ImageReadError(path, "file is empty")
    header = read_header(data, path, max_pixels)
    factor = _reduction(header.width, header.height, min_long_side) if header.format == "jpeg" else 1
    check_limits(header, path, max_pixels, factor)
    arr = None
    # OpenCV drops alpha, so photos with transparency go to Pillow, which keeps it for compositing
    if header.format in _OPENCV_FORMATS and not header.has_alpha:
        arr = _decode_opencv(data, factor)
        if arr is None and header.format in ("jpeg", "png", "webp"):
            raise ImageReadError(path, f"cannot decode {header.format.upper()} data (truncated or corrupt)")
    try:
        rgb = _to_rgb_uint8(arr) if arr is not None else _decode_pillow(data, path, factor)
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from None
    # the photo's own size, upright: the decode may be reduced, and the EXIF orientation may
    # have turned it a quarter (then the decoded and the announced aspect disagree)
    turned = (rgb.shape[0] > rgb.shape[1]) != (header.height > header.width) and header.width != header.height
    width, height = (header.height, header.width) if turned else (header.width, header.height)
    return DecodedPhoto(rgb, width, height, header.format, header.has_alpha)


def decode_image_bytes(
    data: bytes,
    path: str | Path = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_long_side: int = DEFAULT_MIN_LONG_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes to an upright RGB uint8 array (``decode_photo(...).rgb``)."""
    return decode_photo(data, path, max_pixels, min_long_side).rgb


def read_photo(
    path: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_long_side: int = DEFAULT_MIN_LONG_SIDE,
) -> DecodedPhoto:
    """Read and decode a photo file; raises ImageReadError for anything unusable."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ImageReadError(p, "file not found" if not p.exists() else "not a file")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ImageReadError(p, f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        data = p.read_bytes()
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from None
    return decode_photo(data, p, max_pixels=max_pixels, min_long_side=min_long_side)


def read_image(
    path: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_long_side: int = DEFAULT_MIN_LONG_SIDE,
) -> np.ndarray:
    """Read a photo as an upright RGB uint8 array; raises ImageReadError for anything unusable."""
    return read_photo(path, max_pixels, min_long_side).rgb
