"""Build ``gate.tflite``: the photo-quality gate as a TFLite graph of builtin ops only.

``build_gate_model(config)`` returns the file's bytes; ``write_gate_model(config, path)``
writes it with its metadata. The graph is ``features.measure`` + ``gate.verdict_from_measurements``
written again in TensorFlow ops, step for step, on the copies of the photo the OpenCV gate
makes itself (the input contract: ``mobile_derm_quality.gate_twin``), so that an app gets
the same verdict from its TFLite runtime. What makes it exact rather than close:

* integer arithmetic where OpenCV uses it (grey conversion, RGB->HSV with OpenCV's own
  division tables), all values kept below 2**24 so float32 holds them exactly;
* borders reflected at the photo's own (dynamic) size, as OpenCV's BORDER_REFLECT(_101);
* percentiles of integer-valued measurements from histograms (UNSORTED_SEGMENT_SUM and
  CUMSUM), including numpy's strided subsample of more than 8192 values; the blur radii's
  20th percentile by TOPK_V2;
* the ROI's morphological closing by iterated 3x3 max pools, its radius picked at run time;
* OpenCV's fast atan2 polynomial for the descriptor's edge orientations.

What the twin cannot express is refused at build time with a GateTwinError: the learned
not-skin check (a second .tflite with a network in it; a config that uses it gates with
the OpenCV engine), and ramps on measurements the gate does not make.

Metadata: ``gate.json`` (contract version, input contract, outputs, the GateConfig, reason
codes and guidance strings), packed as a tflite-support associated file, so an app (or
``gate_twin.read_twin_metadata``, zipfile only) reads it without TensorFlow.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from mobile_derm_quality import gate_twin
from mobile_derm_quality.config import CHECK_NAMES, GateConfig
from mobile_derm_quality.features import (BLOCKINESS_MIN_SIDE, CLIP_LEVEL, COLOURED_MIN_SAT, COLOURFUL_MIN_SAT, COOL_LIGHT_DIRECTION,
                                          GLARE_SPOT_CONTRAST, GLARE_SPOT_WINDOW,
                                          COLOURFUL_MIN_VAL, DETAIL_GRADIENT, DETAIL_GRID, EDGE_FLOOR, EDGE_FLOOR_FRACTION, EDGE_PERCENTILE,
                                          FAR_HUE_RANGE, GLARE_LEVEL, GREY_TOLERANCE, GRID_BELOW_GAP, GRID_HIGHPASS,
                                          GRID_LOW, GRID_MAX_PERIOD, GRID_MEAN_FLOOR, GRID_MIN_PERIOD, GRID_MIN_SIDE,
                                          GRID_SMOOTH, HUE_BIN_WIDTH, HUE_ENTROPY_BINS,
                                          HUE_ENTROPY_MIN_PIXELS, JPEG_BLOCK, LUMA_PERCENTILES, MAX_BLUR, MIN_ANALYSIS_SIDE, MIN_EDGES,
                                          NATIVE_CROP_SIZE, NOISE_MAX_GREY, NOISE_MIN_GREY, NOISE_MIN_PIXELS,
                                          QUANTILE_MAX_N, REBLUR_SIGMA, REFERENCE_SIZE, ROI_CLOSE_DIVISOR, ROI_CLOSE_MIN,
                                          SHAKE_GRID_STEP, SHAKE_MIN_ANISOTROPY, SHARP_EDGE_PERCENTILE,
                                          SKIN_B_OVER_G, SKIN_G_OVER_R, SKIN_G_RANGE, SKIN_MAX_DARKEST, SKIN_MIN_PIXELS,
                                          SKIN_MIN_SUM, SKIN_MIN_SUM_FRACTION, SKIN_R_MINUS_B, SKIN_R_RANGE, TINY_SIZE,
                                          WHITE_MIN_PIXELS, WHITE_PERCENTILE, roi_close_kernel)
from mobile_derm_quality.gate import _DEPENDENT, _REASONS, DESCRIPTOR_TERMS, GUIDANCE, MOTION_BLUR_RATIO, ramp
from mobile_derm_quality.gate_twin import (DECISIONS, INPUT_NAMES, MEASUREMENT_NAMES, OUTPUT_NAMES, REASON_CODES,
                                           SIZE_FIELDS, THUMBNAIL_SIZE, GateTwinError)
from mobile_derm_quality.not_skin import CHROMA_BINS, GRID, HUE_BINS, ORIENTATION_BINS
from mobile_derm_quality.quiet import native_output_silenced

SIGNATURE = gate_twin.SIGNATURE
# the ROI closing's largest radius: its kernel on the tiny copy at its largest
MAX_CLOSE_RADIUS = roi_close_kernel(TINY_SIZE) // 2

# raw values each check's ramps may name (gate.raw_values)
_RAW_KEYS = {
    "exposure": ("luma_p95", "luma_median", "bright_clip"),
    "sharpness": ("blur", "blur_h", "blur_v", "shake_blur"),
    "glare": ("glare_fraction", "glare_spots"),
    "colour_cast": ("cast_distance", "grey", "white_distance", "white_cool"),
    "noise": ("noise_sigma", "blockiness", "jpeg_grid"),
    "framing": ("skin_fraction", "roi_offset", "detail_offset"),
    "not_skin": ("typicality", "nonskin_logit", "skin_fraction", "hue_entropy", "colourful_fraction"),
}


def check_expressible(config: GateConfig, source=None) -> None:
    """Refuse a config the twin cannot compute exactly as the OpenCV gate does."""
    if config.skin_check_model is not None or "skin_check_distance" in config.ramps.get("not_skin", {}):
        raise GateTwinError(source, "the learned not-skin check (skin_check_model) is a network of its own and is not "
                                    "part of gate.tflite; gate with --engine opencv, or use a config without it")
    for check, table in config.ramps.items():
        if check not in _RAW_KEYS:
            continue
        unknown = sorted(set(table) - set(_RAW_KEYS[check]))
        if unknown:
            raise GateTwinError(source, f"ramp {check}.{unknown[0]} names a measurement the gate does not make")
    for check in CHECK_NAMES:
        if check != "resolution" and not config.ramps.get(check):
            raise GateTwinError(source, f"check {check} has no ramp")
    if not 32 <= config.analysis_size <= 1024:
        raise GateTwinError(source, f"analysis_size {config.analysis_size} is outside what the twin supports (32..1024)")


# ------------------------------------------------------------------ graph helpers

def _ops():
    from mobile_derm.tf_setup import tf

    return tf


def _reflect_index(tf, n, size: int, pad: int, mode: str):
    """Source index of each position -pad..size+pad-1 with OpenCV's border at valid length ``n``."""
    i = tf.range(-pad, size + pad)
    if mode == "reflect101":
        lo, hi = -i, 2 * (n - 1) - i
    else:  # BORDER_REFLECT
        lo, hi = -i - 1, 2 * n - 1 - i
    j = tf.where(i < 0, lo, tf.where(i >= n, hi, i))
    return tf.clip_by_value(j, 0, size - 1)


def _gather_2d(tf, img, rows, cols):
    """img[rows][:, cols]. Columns are gathered as the rows of the transpose: LiteRT gathers
    whole rows several times faster than single columns."""
    x = tf.gather(img, rows, axis=0)
    return tf.transpose(tf.gather(tf.transpose(x), cols, axis=0))


def _padded(tf, img, h, w, pad: int, mode: str):
    """[H, W] -> [H + 2 pad, W + 2 pad], borders reflected at the valid size (h, w)."""
    return _gather_2d(tf, img, _reflect_index(tf, h, img.shape[0], pad, mode),
                      _reflect_index(tf, w, img.shape[1], pad, mode))


def _correlate(tf, img, kernel: np.ndarray, h, w, mode: str):
    """OpenCV's filter2D (a correlation) of a 2-D float image with a small kernel."""
    p = kernel.shape[0] // 2
    x = _image(tf, _padded(tf, img, h, w, p, mode))
    y = tf.nn.conv2d(x, tf.constant(kernel.astype(np.float32)[:, :, None, None]), 1, "VALID")
    return tf.reshape(y, img.shape)


def _separable(tf, img, k1d: np.ndarray, h, w, mode: str):
    """OpenCV's sepFilter2D with the same 1-D kernel along rows, then columns."""
    p = len(k1d) // 2
    x = _image(tf, _padded(tf, img, h, w, p, mode))
    k = k1d.astype(np.float32)
    x = tf.nn.conv2d(x, tf.constant(k[None, :, None, None]), 1, "VALID")
    x = tf.nn.conv2d(x, tf.constant(k[:, None, None, None]), 1, "VALID")
    return tf.reshape(x, img.shape)


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
_SOBEL_Y = _SOBEL_X.T.copy()
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel for a float32 image: size round(8 sigma + 1) | 1, computed in double."""
    n = int(round(sigma * 8 + 1)) | 1
    x = np.arange(n) - (n - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def _valid(tf, size_h: int, size_w: int, h, w):
    rows = tf.range(size_h)[:, None] < h
    cols = tf.range(size_w)[None, :] < w
    return tf.logical_and(rows, cols)


def _f(tf, x):
    return tf.cast(x, tf.float32)


# LiteRT's strided slices that drop an axis or pick a channel are slow (a 320x320x3 image's
# channel: about 1 ms); reshapes and a transpose to channels-first are not. Hence these.
def _image(tf, x):
    """[H, W] -> [1, H, W, 1] for a convolution."""
    return tf.reshape(x, [1, x.shape[0], x.shape[1], 1])


def _planes(tf, y):
    """[1, H, W, C] or [H, W, C] -> C planes [H, W]."""
    h, w, c = y.shape[-3:]
    return tf.unstack(tf.transpose(tf.reshape(y, [h, w, c]), [2, 0, 1]), axis=0)


def _grey(tf, rgb):
    """cv2.COLOR_RGB2GRAY of uint8 values (planes r, g, b): (9798 R + 19235 G + 3735 B + 2**14) >> 15
    (OpenCV 5's fixed point; the tests check it against cv2). The sums are whole numbers below
    2**24, so float32 holds them exactly."""
    r, g, b = rgb
    return tf.floor((r * 9798.0 + g * 19235.0 + b * 3735.0 + 16384.0) * (1.0 / 32768.0))


def _hsv_tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's RGB2HSV_b division tables (hsv_shift 12, hue range 180), rounded as cvRound does."""
    i = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        sdiv = np.where(i == 0, 0, np.rint((255 << 12) / i))
        hdiv = np.where(i == 0, 0, np.rint((180 << 12) / (6.0 * i)))
    return sdiv.astype(np.float32), hdiv.astype(np.float32)


def _hsv(tf, rgb):
    """cv2.COLOR_RGB2HSV of uint8 values (planes r, g, b of float32 integers): (hue 0..179, sat, val)."""
    sdiv, hdiv = _hsv_tables()
    r, g, b = rgb
    v = tf.maximum(tf.maximum(b, g), r)
    vmin = tf.minimum(tf.minimum(b, g), r)
    diff = v - vmin
    s = tf.floor((diff * tf.gather(tf.constant(sdiv), tf.cast(v, tf.int32)) + 2048.0) / 4096.0)
    h = tf.where(tf.equal(v, r), g - b, tf.where(tf.equal(v, g), b - r + 2.0 * diff, r - g + 4.0 * diff))
    h = tf.floor((h * tf.gather(tf.constant(hdiv), tf.cast(diff, tf.int32)) + 2048.0) / 4096.0)
    h = tf.where(h < 0, h + 180.0, h)
    return h, s, v


def _fast_atan_radians(tf, y, x):
    """cv2.cartToPolar's angle (OpenCV's fastAtan32f polynomial, degrees scaled to radians)."""
    deg = np.float32(180.0 / math.pi)
    p1, p3, p5, p7 = (np.float32(c) * deg for c in (0.9997878412794807, -0.3258083974640975, 0.1555786518463281,
                                                      -0.04432655554792128))
    eps = np.float32(np.finfo(np.float64).eps)
    ax, ay = tf.abs(x), tf.abs(y)
    wide = ax >= ay
    c = tf.where(wide, ay / (ax + eps), ax / (ay + eps))
    c2 = c * c
    poly = (((p7 * c2 + p5) * c2 + p3) * c2 + p1) * c
    a = tf.where(wide, poly, 90.0 - poly)
    a = tf.where(x < 0, 180.0 - a, a)
    a = tf.where(y < 0, 360.0 - a, a)
    return a * np.float32(math.pi / 180.0)


def _subsample(tf, mask):
    """features._quantile's ``v[:: v.size // 8192]`` of the masked values in row-major order,
    as a 0/1 weight per position of the flat ``mask``."""
    n = tf.reduce_sum(mask)
    stride = tf.where(n > QUANTILE_MAX_N, tf.floor(n / QUANTILE_MAX_N), 1.0)
    rank = tf.cast(tf.cumsum(mask) - 1.0, tf.int32)
    on_stride = tf.equal(tf.math.floormod(rank, tf.cast(stride, tf.int32)), 0)
    return mask * _f(tf, on_stride)


def _quantile_positions(tf, n, q: int):
    """numpy's linear-interpolation positions: lo, hi and the weight of hi, for percentile q of n values."""
    qn = q * (n - 1.0)
    lo = tf.floor(qn / 100.0)
    frac = (qn - 100.0 * lo) / 100.0
    hi = tf.minimum(lo + 1.0, n - 1.0)
    return lo, hi, frac


def _order_statistics(tf, cdf, ranks):
    """The value at each 0-based rank of integer-valued data from its histogram's CDF."""
    return tf.reduce_sum(_f(tf, cdf[None, :] < (ranks[:, None] + 1.0)), axis=1)


def _quantile_int(tf, values, mask, q: int, bins: int):
    """features._quantile (percentile q, strided subsample) of integer values 0..bins-1 where mask."""
    v, m = tf.reshape(values, [-1]), tf.reshape(mask, [-1])
    keep = _subsample(tf, m)
    n = tf.reduce_sum(keep)
    hist = tf.math.unsorted_segment_sum(keep, tf.clip_by_value(tf.cast(v, tf.int32), 0, bins - 1), bins)
    lo, hi, frac = _quantile_positions(tf, n, q)
    vals = _order_statistics(tf, tf.cumsum(hist), tf.stack([lo, hi]))
    return vals[0] + frac * (vals[1] - vals[0])


def _quantile_float(tf, values, mask, q: int):
    """features._quantile of float values where mask, by a partial sort (TOPK_V2) of the side the
    percentile lies on: the smallest values for q <= 50, the largest for a high q (fewer to sort)."""
    v, m = tf.reshape(values, [-1]), tf.reshape(mask, [-1])
    size = int(v.shape[0])
    keep = _subsample(tf, m)
    n = tf.reduce_sum(keep)
    most = min(size, 2 * QUANTILE_MAX_N - 1)  # at most this many values survive the subsample
    lo, hi, frac = _quantile_positions(tf, n, q)
    if q <= 50:
        k = min(size, int(q / 100.0 * (most - 1)) + 2)
        ordered = -tf.math.top_k(tf.where(keep > 0, -v, -3.0e38), k=k, sorted=True).values  # ascending
        ranks = tf.stack([lo, hi])
    else:
        k = min(size, int((1.0 - q / 100.0) * (most - 1)) + 3)
        ordered = tf.math.top_k(tf.where(keep > 0, v, -3.0e38), k=k, sorted=True).values  # descending
        ranks = tf.stack([n - 1.0 - lo, n - 1.0 - hi])
    at = tf.gather(ordered, tf.clip_by_value(tf.cast(ranks, tf.int32), 0, k - 1))  # n = 0: unused
    return at[0] + frac * (at[1] - at[0])


def _u8_percentile(tf, values, mask, q: int):
    """features._hist_percentile (the lower value at rank ceil(q n / 100)) of whole numbers 0..255 where mask."""
    hist = tf.math.unsorted_segment_sum(tf.reshape(mask, [-1]), tf.reshape(tf.cast(values, tf.int32), [-1]), 256)
    cdf = tf.cumsum(hist)
    target = tf.maximum(1.0, tf.math.ceil(float(q) * cdf[-1] / 100.0))
    return _order_statistics(tf, cdf, tf.reshape(target - 1.0, [1]))[0]


def _white_point(tf, tiny, tiny_valid_f):
    """features._white_point: log(R/G), log(B/G) of each channel's percentile over the unclipped pixels."""
    unclipped = _f(tf, tf.maximum(tf.maximum(tiny[0], tiny[1]), tiny[2]) < float(CLIP_LEVEL)) * tiny_valid_f
    mask = tf.where(tf.reduce_sum(unclipped) < float(WHITE_MIN_PIXELS), tiny_valid_f, unclipped)
    r, g, b = (_u8_percentile(tf, c, mask, WHITE_PERCENTILE) + 1.0 for c in tiny)
    return tf.math.log(r / g), tf.math.log(b / g)


def _white_distance(tf, u, v, locus: dict):
    """gate.white_distance: the Mahalanobis distance of the white point from the clean photos' locus."""
    du, dv = u - locus["u"], v - locus["v"]
    return tf.sqrt(tf.maximum(0.0, locus["a"] * du * du + 2.0 * locus["b"] * du * dv + locus["c"] * dv * dv))


def _white_cool(tf, u, v, locus: dict):
    """gate.white_cool_shift: the white point's offset from the locus's mean along features.COOL_LIGHT_DIRECTION."""
    cu, cv = COOL_LIGHT_DIRECTION
    return (u - locus["u"]) * cu + (v - locus["v"]) * cv


def _masked_mean(tf, x, mask):
    return tf.reduce_sum(x * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def nearest_rounding_table(max_src: int, max_dst: int) -> tuple[np.ndarray, np.ndarray]:
    """What cv2.INTER_NEAREST's double arithmetic does where the exact source position is a
    whole number k: OpenCV takes floor(x * (1 / (dst / src))), and that reciprocal, rounded,
    can sit a hair below src / dst, so the product rounds to just under k and the index drops
    to k - 1. With r the reciprocal's relative shortfall (0 when it is not short) and
    R = r * 2**53 per (src, dst), the drop happens where R * c(k) > 1, c(k) = k / 2**floor(log2 k)
    (2 for a power of two, whose spacing below is half as wide). Returns R [max_src + 1, max_dst + 1]
    and c [max_src + 1]."""
    from fractions import Fraction

    shortfall = np.zeros((max_src + 1, max_dst + 1), np.float64)
    for src in range(1, max_src + 1):
        for dst in range(1, max_dst + 1):
            exact = Fraction(src, dst)
            reciprocal = Fraction(1.0 / (dst / src))
            if reciprocal < exact:
                shortfall[src, dst] = float((exact - reciprocal) / exact) * 2.0**53
    k = np.arange(max_src + 1, dtype=np.float64)
    c = np.zeros(max_src + 1)
    c[1:] = k[1:] / 2.0 ** np.floor(np.log2(k[1:]))
    c[c == 1.0] = 2.0
    c[0] = 0.0
    return shortfall.astype(np.float32), c.astype(np.float32)


def _nearest_index(tf, src, dst, size: int, table):
    """cv2.INTER_NEAREST's source index of each of ``size`` destination positions (src -> dst
    px), exactly as OpenCV's double arithmetic gives it (nearest_rounding_table)."""
    shortfall, c = table
    x = tf.range(size)
    num = x * src
    dst = tf.maximum(dst, 1)
    k = tf.math.floordiv(num, dst)
    whole = tf.equal(tf.math.floormod(num, dst), 0)
    r = tf.gather(tf.reshape(tf.constant(shortfall), [-1]), src * shortfall.shape[1] + dst)
    drops = tf.logical_and(whole, r * tf.gather(tf.constant(c), tf.minimum(k, c.shape[0] - 1)) > 1.0)
    return tf.minimum(k - tf.cast(drops, tf.int32), src - 1)


# ------------------------------------------------------------------ measurements

def _skin(tf, tiny, tiny_valid):
    """features.skin_mask on the tiny copy (planes of float32 uint8 values) -> 0/1."""
    red, green, blue = tiny
    s = red + green + blue + 1e-3
    r = red / s
    g = green / s
    b = 1.0 - r - g
    bright = tf.reduce_max(tf.where(tiny_valid, s, 0.0))
    darkest = tf.minimum(tf.minimum(red, green), blue)
    ok = tf.logical_and(s > tf.maximum(SKIN_MIN_SUM, SKIN_MIN_SUM_FRACTION * bright), darkest < float(SKIN_MAX_DARKEST))
    for cond in (r > SKIN_R_RANGE[0], r < SKIN_R_RANGE[1], g > SKIN_G_RANGE[0], g < SKIN_G_RANGE[1], r >= g - SKIN_G_OVER_R,
                 b <= g + SKIN_B_OVER_G, r - b > SKIN_R_MINUS_B, tiny_valid):
        ok = tf.logical_and(ok, cond)
    return _f(tf, ok)


def _close(tf, mask, valid, k):
    """cv2.morphologyEx(MORPH_CLOSE) with a k x k square (k odd, 3..13), borders ignored."""
    radius = (k - 1) // 2
    valid_f = _f(tf, valid)

    def grow(x):
        return tf.reshape(tf.nn.max_pool2d(_image(tf, x), 3, 1, "SAME"), x.shape)

    # Growing past the photo's edge and back never reaches further than growing inside it (the
    # photo is a rectangle), so only the complement needs the mask: outside stays no hole.
    x = mask * valid_f
    dilated = 0.0
    for r in range(1, MAX_CLOSE_RADIUS + 1):
        x = grow(x)
        dilated = dilated + _f(tf, tf.equal(radius, r)) * x
    holes = (1.0 - dilated) * valid_f  # erosion = 1 - dilation of the complement (outside ignored)
    eroded = 0.0
    for r in range(1, MAX_CLOSE_RADIUS + 1):
        holes = grow(holes)
        eroded = eroded + _f(tf, tf.equal(radius, r)) * holes
    return (1.0 - eroded) * valid_f


def _grid_counts(a: int) -> tuple[int, int]:
    """Points of grid A ([2:-2:2, 2:-2:2]: the blur's) and grid B ([1:-1:2, 1:-1:2]: the noise's) per axis."""
    return len(range(2, a - 2, 2)), len(range(1, a - 1, 2))


def _gradients(tf, gray):
    """(|Sobel x| and |Sobel y| on grid A; on grid B their sum, |Immerkaer's Laplacian| and the grey
    value itself), and grid A's signed Sobel x and y. Each 3x3
    window around a point of either grid that lies in the photo stays inside it, so no border
    rule is needed, and a stride-2 convolution gives the grid points alone."""
    a = gray.shape[0]
    na, nb = _grid_counts(a)
    x = _image(tf, gray)
    centre = np.zeros((3, 3), np.float32)
    centre[1, 1] = 1.0  # the grey value itself
    kb = np.stack([_SOBEL_X, _SOBEL_Y, _IMMERKAER, centre], axis=-1)[:, :, None, :]
    b = tf.nn.conv2d(x, tf.constant(kb), 2, "VALID")
    bx, by, laplacian, inner = _planes(tf, tf.reshape(b, b.shape[1:])[:nb, :nb])
    ka = np.stack([_SOBEL_X, _SOBEL_Y], axis=-1)[:, :, None, :]
    ga = tf.nn.conv2d(x[:, 1:, 1:], tf.constant(ka), 2, "VALID")
    sx, sy = _planes(tf, tf.reshape(ga, ga.shape[1:])[:na, :na])
    return (tf.abs(sx), tf.abs(sy), tf.abs(bx) + tf.abs(by), tf.abs(laplacian), inner), (sx, sy)


def _reblurred_gradients(tf, gray, h, w):
    """Sobel x, Sobel y (signed) of the grey image Gaussian-blurred (REBLUR_SIGMA, BORDER_REFLECT) at grid A.
    Sobel after the Gaussian is one separable 11-tap filter per direction, applied at the grid
    points only (two strided passes) instead of blurring the whole image."""
    a = gray.shape[0]
    na, _ = _grid_counts(a)
    g = _gaussian_kernel(REBLUR_SIGMA).astype(np.float64)
    pad = len(g) // 2 + 1
    x = _image(tf, _padded(tf, gray, h, w, pad, "reflect"))[:, 2:, 2:]
    smooth, slope = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    vertical = np.stack([np.convolve(smooth, g), np.convolve(slope, g)], axis=-1)[:, None, None, :]
    y = tf.nn.conv2d(x, tf.constant(vertical.astype(np.float32)), [1, 2, 1, 1], "VALID")
    horizontal = np.zeros((1, 2 * pad + 1, 2, 2), np.float32)
    horizontal[0, :, 0, 0] = np.convolve(slope, g)  # x: smooth down, slope across
    horizontal[0, :, 1, 1] = np.convolve(smooth, g)  # y: slope down, smooth across
    y = tf.nn.conv2d(y, tf.constant(horizontal), [1, 1, 2, 1], "VALID")
    return _planes(tf, tf.reshape(y, y.shape[1:])[:na, :na])  # signed


def _grid_valid(tf, start: int, n: int, h, w):
    rows = tf.range(start, start + 2 * n, 2)
    return _f(tf, tf.logical_and(rows[:, None] < h - start, rows[None, :] < w - start))


def _edge_blur(tf, d1s, d2s, roi, grid_valid, floor):
    """features._edge_blur: blur radius of the strongest edges along x and y (px at this scale),
    from grid A's gradients before (d1s) and after (d2s) the re-blur."""
    m = roi * grid_valid
    use_mask = tf.reduce_sum(m) >= SKIN_MIN_PIXELS // 4
    base = tf.where(use_mask, m, grid_valid)
    out = []
    for d1, d2 in zip(d1s, d2s):
        thr = tf.maximum(_quantile_int(tf, d1, base, EDGE_PERCENTILE, 1024), floor)
        sel = _f(tf, d1 >= thr) * base
        rho = d1 / tf.maximum(d2, 1e-3)
        sigma = REBLUR_SIGMA / tf.sqrt(tf.maximum(rho * rho - 1.0, 1e-4))
        blur = tf.minimum(float(MAX_BLUR), _quantile_float(tf, sigma, sel, SHARP_EDGE_PERCENTILE))
        out.append(tf.where(tf.reduce_sum(sel) < float(MIN_EDGES), float(MAX_BLUR), blur))
    return out


def _shake_blur(tf, signed, reblurred, roi, grid_valid, floor):
    """features._shake_blur: blur along the edges' least-gradient direction minus across it (px at this
    scale), from grid A's signed gradients before (signed) and after (reblurred) the re-blur, at every
    other point of grid A (SHAKE_GRID_STEP)."""
    every = SHAKE_GRID_STEP // 2
    gx, gy = (g[::every, ::every] for g in signed)
    reblurred = [g[::every, ::every] for g in reblurred]
    roi, grid_valid = roi[::every, ::every], grid_valid[::every, ::every]
    m = roi * grid_valid
    use_mask = tf.reduce_sum(m) >= SKIN_MIN_PIXELS // 4
    base = tf.where(use_mask, m, grid_valid)
    edges = _f(tf, tf.abs(gx) + tf.abs(gy) > floor) * base
    n_edges = tf.reduce_sum(edges)
    w = edges / tf.maximum(gx * gx + gy * gy, 1e-12)  # 0 off the edges (their gradients may be 0)
    jxx = tf.reduce_sum(gx * gx * w) / tf.maximum(n_edges, 1.0)
    jxy = tf.reduce_sum(gx * gy * w) / tf.maximum(n_edges, 1.0)
    c2, s2 = 2.0 * jxx - 1.0, 2.0 * jxy  # features.shake_direction
    r = tf.sqrt(c2 * c2 + s2 * s2)
    rr = tf.maximum(r, SHAKE_MIN_ANISOTROPY)
    c = tf.sqrt(tf.maximum(0.0, (1.0 + c2 / rr) / 2.0))
    s = tf.where(s2 >= 0.0, 1.0, -1.0) * tf.sqrt(tf.maximum(0.0, (1.0 - c2 / rr) / 2.0))
    out = []
    for a, b in ((c, s), (-s, c)):  # across the path, then along it
        d1 = tf.abs(a * gx + b * gy)
        thr = tf.maximum(_quantile_float(tf, d1, base, EDGE_PERCENTILE), floor)
        sel = _f(tf, d1 >= thr) * base
        rho = d1 / tf.maximum(tf.abs(a * reblurred[0] + b * reblurred[1]), 1e-3)
        sigma = REBLUR_SIGMA / tf.sqrt(tf.maximum(rho * rho - 1.0, 1e-4))
        blur = tf.minimum(float(MAX_BLUR), _quantile_float(tf, sigma, sel, SHARP_EDGE_PERCENTILE))
        out.append(tf.where(tf.reduce_sum(sel) < float(MIN_EDGES), float(MAX_BLUR), blur))
    measurable = tf.logical_and(n_edges >= float(MIN_EDGES), r >= SHAKE_MIN_ANISOTROPY)
    return tf.where(measurable, out[1] - out[0], 0.0)


def _detail_offset(tf, grad, grid_b, h, w):
    """features._detail_offset from grid B's |Sobel x| + |Sobel y| (``grad``): per cell (row and column
    index * DETAIL_GRID // the photo's grid-B length), how many points are above DETAIL_GRADIENT against
    how many there are (segment sums, exact), then the centroid weighted by the squared shares."""
    n = DETAIL_GRID * DETAIL_GRID
    index = tf.range(grad.shape[0])
    cell_y = tf.math.floordiv(index * DETAIL_GRID, tf.maximum((h - 1) // 2, 1))
    cell_x = tf.math.floordiv(index * DETAIL_GRID, tf.maximum((w - 1) // 2, 1))
    cells = tf.reshape(tf.where(grid_b > 0, cell_y[:, None] * DETAIL_GRID + cell_x[None, :], n), [-1])  # outside: dropped
    above = tf.math.unsorted_segment_sum(tf.reshape(_f(tf, grad > DETAIL_GRADIENT) * grid_b, [-1]), cells, n + 1)[:n]
    total = tf.math.unsorted_segment_sum(tf.reshape(grid_b, [-1]), cells, n + 1)[:n]
    weight = tf.square(above / tf.maximum(total, 1.0))
    centres = (np.arange(DETAIL_GRID) + 0.5) / DETAIL_GRID - 0.5
    weights = tf.reduce_sum(weight)
    mean_y = tf.reduce_sum(weight * tf.constant(np.repeat(centres, DETAIL_GRID).astype(np.float32))) / tf.maximum(weights, 1e-12)
    mean_x = tf.reduce_sum(weight * tf.constant(np.tile(centres, DETAIL_GRID).astype(np.float32))) / tf.maximum(weights, 1e-12)
    return tf.where(weights > 0, tf.sqrt(mean_x * mean_x + mean_y * mean_y) / float(np.hypot(0.5, 0.5)), 0.0)


def _noise_sigma(tf, inner, grad, r, roi, grid_valid):
    """features._noise_sigma: Immerkaer's estimate on the flattest half of the ROI (grid B)."""
    sel = roi * grid_valid
    sel = tf.where(tf.reduce_sum(sel) < SKIN_MIN_PIXELS, grid_valid, sel)
    sel = sel * _f(tf, tf.logical_and(inner > float(NOISE_MIN_GREY), inner < float(NOISE_MAX_GREY)))
    median = _quantile_int(tf, grad, sel, 50, 2048)
    flat = sel * _f(tf, grad <= median)
    mean = tf.reduce_sum(r * flat) / tf.maximum(tf.reduce_sum(flat), 1.0)
    sigma = mean * float(np.sqrt(np.pi / 2.0) / 6.0)
    return tf.where(tf.logical_or(tf.reduce_sum(sel) < float(NOISE_MIN_PIXELS), tf.reduce_sum(flat) < 1.0), 0.0, sigma)


def _crop_steps(tf, crop_rgb):
    """The native crop's grey |horizontal| (c x c - 1) and |vertical| (c - 1 x c) steps, whole numbers;
    past the valid size they are garbage (steps into the zero padding), which the readers mask."""
    g = _image(tf, _grey(tf, crop_rgb))
    c = NATIVE_CROP_SIZE
    step = np.array([-1.0, 1.0], np.float32)
    dx = tf.abs(tf.reshape(tf.nn.conv2d(g, tf.constant(step.reshape(1, 2, 1, 1)), 1, "VALID"), [c, c - 1]))
    dy = tf.abs(tf.reshape(tf.nn.conv2d(g, tf.constant(step.reshape(2, 1, 1, 1)), 1, "VALID"), [c - 1, c]))
    return dx, dy


def _blockiness(tf, dx, dy, ch, cw):
    """features._blockiness on the native crop's steps (valid ch x cw): steps across 8x8 block borders
    against all steps; the masked means as matrix products."""
    c = NATIVE_CROP_SIZE
    rows, cols = tf.range(c), tf.range(c - 1)
    border = _f(tf, tf.equal(tf.math.floormod(cols, JPEG_BLOCK), JPEG_BLOCK - 1))
    x_rows, x_cols = _f(tf, rows < ch), _f(tf, cols < cw - 1)  # dx is ch x (cw - 1)
    y_rows, y_cols = _f(tf, cols < ch - 1), _f(tf, rows < cw)  # dy is (ch - 1) x cw
    col_sums = tf.linalg.matvec(tf.transpose(dx), x_rows)  # per column of dx, over the valid rows
    row_sums = tf.linalg.matvec(dy, y_cols)  # per row of dy, over the valid columns
    n_x, n_y = tf.reduce_sum(x_rows), tf.reduce_sum(y_cols)
    all_x = tf.reduce_sum(col_sums * x_cols) / tf.maximum(n_x * tf.reduce_sum(x_cols), 1.0)
    on_x = tf.reduce_sum(col_sums * x_cols * border) / tf.maximum(n_x * tf.reduce_sum(x_cols * border), 1.0)
    all_y = tf.reduce_sum(row_sums * y_rows) / tf.maximum(n_y * tf.reduce_sum(y_rows), 1.0)
    on_y = tf.reduce_sum(row_sums * y_rows * border) / tf.maximum(n_y * tf.reduce_sum(y_rows * border), 1.0)
    value = tf.maximum(0.0, (on_x - all_x) + (on_y - all_y)) / (all_x + all_y + 1.0)
    return tf.where(tf.logical_or(ch < BLOCKINESS_MIN_SIDE, cw < BLOCKINESS_MIN_SIDE), 0.0, value)


def _grid_profile(tf, p, n):
    """features._grid_profile of a profile ``p`` (static length, valid length n, n >= GRID_MIN_SIDE - 1):
    minus its running mean (borders reflected at n), minus the mean of each 8 px phase over the whole
    blocks (a matrix product with the phases' one-hot), then the circular mean over GRID_SMOOTH px at n.
    Zero from n on."""
    size = p.shape[0]
    pad = GRID_HIGHPASS // 2
    padded = tf.gather(p, _reflect_index(tf, n, size, pad, "reflect101"))
    running = padded[0:size]
    for k in range(1, GRID_HIGHPASS):
        running = running + padded[k : k + size]
    running = running * (1.0 / GRID_HIGHPASS)
    h = p - running
    i = tf.range(size)
    phase = tf.math.floormod(i, JPEG_BLOCK)
    whole = n // JPEG_BLOCK * JPEG_BLOCK
    phase_means = tf.math.unsorted_segment_sum(h * _f(tf, i < whole), phase, JPEG_BLOCK) / _f(tf, whole // JPEG_BLOCK)
    h = h - tf.gather(phase_means, phase)
    half = GRID_SMOOTH // 2
    smooth = h
    for k in (k for k in range(-half, half + 1) if k):
        smooth = smooth + tf.gather(h, tf.math.floormod(i + k, n))
    smooth = smooth * (1.0 / GRID_SMOOTH)
    return tf.where(i < n, smooth, 0.0)


def _grid_autocovariance(tf, h, n):
    """sum(h[i] * h[i + lag]) / (n - lag) at lags GRID_LOW..GRID_MAX_PERIOD, directly (h is 0 from n on):
    the zero-padded profile's shifted copies as slices (an index table would add 44 kB to the file)."""
    size = h.shape[0]
    lags = np.arange(GRID_LOW, GRID_MAX_PERIOD + 1)
    padded = tf.concat([h, tf.zeros([GRID_MAX_PERIOD], tf.float32)], 0)
    shifted = tf.stack([padded[lag : lag + size] for lag in lags])
    return tf.reduce_sum(shifted * h[None, :], axis=1) / (_f(tf, n) - tf.constant(lags.astype(np.float32)))


def _jpeg_grid(tf, dx, dy, ch, cw):
    """features._jpeg_grid on the native crop's steps (valid ch x cw): the column and row profiles of
    mean step (whole-number sums, exact, times the reciprocal of the count as cv2.reduce's average),
    their autocovariance by direct masked sums (as features._autocovariance), and the excess of each coarse lag
    over every finer one (a constant lower-triangular mask)."""
    c = NATIVE_CROP_SIZE
    rows = tf.range(c)
    nx, ny = cw - 1, ch - 1  # the profiles' valid lengths
    px = tf.linalg.matvec(tf.transpose(dx), _f(tf, rows < ch)) * (1.0 / _f(tf, ch))  # per column of dx
    py = tf.linalg.matvec(dy, _f(tf, rows < cw)) * (1.0 / _f(tf, cw))  # per row of dy
    valid = tf.range(c - 1)
    mean_x = tf.reduce_sum(tf.where(valid < nx, px, 0.0)) / _f(tf, nx)
    mean_y = tf.reduce_sum(tf.where(valid < ny, py, 0.0)) / _f(tf, ny)
    nx_safe, ny_safe = tf.maximum(nx, GRID_MIN_SIDE - 1), tf.maximum(ny, GRID_MIN_SIDE - 1)  # a too small crop gives 0 below
    r = (_grid_autocovariance(tf, _grid_profile(tf, px, nx_safe), nx_safe) / ((mean_x + GRID_MEAN_FLOOR) * (mean_x + GRID_MEAN_FLOOR))
         + _grid_autocovariance(tf, _grid_profile(tf, py, ny_safe), ny_safe) / ((mean_y + GRID_MEAN_FLOOR) * (mean_y + GRID_MEAN_FLOOR))) * 0.5
    lags = np.arange(GRID_LOW, GRID_MAX_PERIOD + 1)
    coarse = np.arange(GRID_MIN_PERIOD, GRID_MAX_PERIOD + 1)
    finer = tf.constant(lags[None, :] <= coarse[:, None] - GRID_BELOW_GAP)  # [coarse lag, lag]
    below = tf.reduce_max(tf.where(finer, tf.nn.relu(r)[None, :], 0.0), axis=1)
    max_lag = tf.minimum(tf.minimum(GRID_MAX_PERIOD, nx // 3), ny // 3)
    excess = tf.where(tf.constant(coarse.astype(np.int32)) <= max_lag, r[GRID_MIN_PERIOD - GRID_LOW :] - below, 0.0)
    small = tf.logical_or(tf.minimum(ch, cw) < GRID_MIN_SIDE, max_lag < GRID_MIN_PERIOD)
    return tf.where(small, 0.0, tf.maximum(0.0, tf.reduce_max(excess)))


def _describe(tf, t):
    """not_skin.describe of the 64x64 thumbnail (planes of float32 uint8 values): 123 numbers."""
    red, green, blue = t
    s = red + green + blue + 1.0
    r, g = red / s, green / s
    lum = (red + green + blue) / 3.0 / 255.0
    n = THUMBNAIL_SIZE
    box5, box3 = np.full(5, 0.2, np.float32), np.full(3, 1.0 / 3.0, np.float32)
    full = tf.constant(n)
    local = lum - _separable(tf, lum, box5, full, full, "reflect101")
    local_contrast = tf.sqrt(_separable(tf, local * local, box3, full, full, "reflect101"))
    cell = n // GRID

    def layout(a):
        return tf.reshape(tf.nn.avg_pool2d(_image(tf, a), cell, cell, "VALID"), [-1])

    parts = [layout(a) for a in (r, g, lum, local_contrast)]
    ri = tf.floor((tf.reshape(r, [-1]) - 0.2) / 0.5 * CHROMA_BINS)
    gi = tf.floor((tf.reshape(g, [-1]) - 0.2) / 0.25 * CHROMA_BINS)
    inside = _f(tf, tf.logical_and(tf.logical_and(ri >= 0, ri < CHROMA_BINS), tf.logical_and(gi >= 0, gi < CHROMA_BINS)))
    ids = tf.cast(tf.clip_by_value(ri, 0, CHROMA_BINS - 1) * CHROMA_BINS + tf.clip_by_value(gi, 0, CHROMA_BINS - 1), tf.int32)
    chroma = tf.math.unsorted_segment_sum(inside, ids, CHROMA_BINS**2)
    parts.append(tf.sqrt(chroma / tf.maximum(tf.reduce_sum(chroma), 1.0)))
    grey = _grey(tf, t)
    gx = _correlate(tf, grey, _SOBEL_X, full, full, "reflect101")
    gy = _correlate(tf, grey, _SOBEL_Y, full, full, "reflect101")
    mag = tf.sqrt(gx * gx + gy * gy)
    ang = _fast_atan_radians(tf, gy, gx)
    pi = np.float32(np.pi)
    folded = ang - pi * tf.floor(ang / pi)  # numpy's float32 ang % pi
    bins = tf.minimum(tf.floor(folded / pi * ORIENTATION_BINS), ORIENTATION_BINS - 1)
    orient = tf.math.unsorted_segment_sum(tf.reshape(mag, [-1]), tf.reshape(tf.cast(bins, tf.int32), [-1]), ORIENTATION_BINS)
    parts.append(orient / (tf.reduce_sum(orient) + 1e-6))
    parts.append(tf.stack([tf.reduce_mean(_f(tf, mag > level)) for level in (20.0, 60.0, 150.0)]))
    hue, sat, _ = _hsv(tf, t)
    saturated = tf.reshape(_f(tf, sat > 60.0), [-1])
    hue_bin = tf.reshape(tf.cast(tf.minimum(tf.floor(hue / (180 // HUE_BINS)), HUE_BINS), tf.int32), [-1])
    counts = tf.math.unsorted_segment_sum(saturated, hue_bin, HUE_BINS + 1)[:HUE_BINS]
    parts.append(counts / float(n * n))
    return tf.concat(parts, axis=0)


def _typicality(tf, descriptor, config: GateConfig):
    """SkinPhotoModel.distance of the descriptor (0 without a model, as gate._typicality)."""
    model = config.skin_photo_model()
    if model is None:
        return tf.constant(0.0)
    z = (descriptor - tf.constant(model.mean.astype(np.float32))) / tf.constant(model.scale.astype(np.float32))
    w = tf.linalg.matvec(tf.constant(model.projection.T.astype(np.float32)), z)
    d = tf.reduce_sum(w * w)
    directions = model.projection / np.linalg.norm(model.projection, axis=0)
    along = tf.linalg.matvec(tf.constant(directions.T.astype(np.float32)), z)
    residual = z - tf.linalg.matvec(tf.constant(directions.astype(np.float32)), along)
    d = d + tf.reduce_sum(residual * residual) / float(model.residual_scale)
    return d / float(model.n_directions + 1)


def _nonskin_logit(tf, descriptor, config: GateConfig):
    """NonSkinContrast.logit of the descriptor (0 without a contrast model, as gate._nonskin_logit)."""
    model = config.nonskin_contrast_model()
    if model is None:
        return tf.constant(0.0)
    return tf.reduce_sum(descriptor * tf.constant(model.weights.astype(np.float32))) + float(model.bias)


def _measure(tf, analysis_u8, tiny_u8, thumb_u8, crop_u8, sizes, config: GateConfig) -> dict:
    """features.measure on the contract's inputs: every measurement, as float32 scalars."""
    h0, w0, h, w, th, tw, ch, cw = (sizes[i] for i in range(8))
    small = _planes(tf, _f(tf, analysis_u8))
    tiny = _planes(tf, _f(tf, tiny_u8))
    a = analysis_u8.shape[1]
    valid_f = _f(tf, _valid(tf, a, a, h, w))
    tiny_valid = _valid(tf, TINY_SIZE, TINY_SIZE, th, tw)
    tiny_valid_f = _f(tf, tiny_valid)
    gray = _grey(tf, small)  # 0 outside the photo: the padding is zero
    na, nb = _grid_counts(a)
    hf, wf, thf, twf = _f(tf, h), _f(tf, w), _f(tf, th), _f(tf, tw)
    n_tiny = thf * twf

    grey_photo = tf.logical_and(
        tf.reduce_max(tf.abs(tiny[0] - tiny[1]) * tiny_valid_f) <= float(GREY_TOLERANCE),
        tf.reduce_max(tf.abs(tiny[2] - tiny[1]) * tiny_valid_f) <= float(GREY_TOLERANCE))
    skin_t = _skin(tf, tiny, tiny_valid)
    table = nearest_rounding_table(TINY_SIZE, a)
    iy, ix = _nearest_index(tf, th, h, a, table), _nearest_index(tf, tw, w, a, table)
    # the skin mask grown to (h, w) by nearest neighbour, counted without growing it: each tiny
    # pixel counts as often as rows and columns of the analysis copy map to it
    row_repeats = tf.math.unsorted_segment_sum(_f(tf, tf.range(a) < h), iy, TINY_SIZE)
    col_repeats = tf.math.unsorted_segment_sum(_f(tf, tf.range(a) < w), ix, TINY_SIZE)
    n_skin = tf.reduce_sum(skin_t * row_repeats[:, None] * col_repeats[None, :])
    skin_fraction = n_skin / (hf * wf)
    has_skin = n_skin >= SKIN_MIN_PIXELS
    n_skin_t = tf.maximum(tf.reduce_sum(skin_t), 1.0)
    ys = _f(tf, tf.range(TINY_SIZE))
    mean_y = tf.reduce_sum(skin_t * ys[:, None]) / n_skin_t
    mean_x = tf.reduce_sum(skin_t * ys[None, :]) / n_skin_t
    dy = (mean_y + 0.5) / thf - 0.5
    dx = (mean_x + 0.5) / twf - 0.5
    roi_offset = tf.where(has_skin, tf.sqrt(dx * dx + dy * dy) / float(np.hypot(0.5, 0.5)), 1.0)
    short = tf.minimum(th, tw) // ROI_CLOSE_DIVISOR  # features.roi_close_kernel
    k = tf.maximum(ROI_CLOSE_MIN, short + 1 - tf.math.floormod(short, 2))
    roi_t = _close(tf, skin_t, tiny_valid, k)
    rows = tf.range(a)
    centre_rows = _f(tf, tf.logical_and(rows >= h // 4, rows < h - h // 4))
    centre_cols = _f(tf, tf.logical_and(rows >= w // 4, rows < w - w // 4))

    def roi_at(start: int, n: int):  # the ROI at grid points start, start + 2, ... (n per axis)
        ry, rx = iy[start : start + 2 * n : 2], ix[start : start + 2 * n : 2]
        grown = _gather_2d(tf, roi_t, ry, rx)
        window = centre_rows[start : start + 2 * n : 2][:, None] * centre_cols[start : start + 2 * n : 2][None, :]
        return tf.where(has_skin, grown, window)

    centre_f = centre_rows[:, None] * centre_cols[None, :]
    roi = tf.where(has_skin, _gather_2d(tf, roi_t, iy, ix), centre_f)

    hue, sat, val = _hsv(tf, tiny)
    far_hue = tf.logical_and(hue > float(FAR_HUE_RANGE[0]), hue < float(FAR_HUE_RANGE[1]))
    colourful = _f(tf, tf.logical_and(tf.logical_and(sat > float(COLOURFUL_MIN_SAT), val > float(COLOURFUL_MIN_VAL)),
                                      far_hue)) * tiny_valid_f
    colourful_fraction = tf.reduce_sum(colourful) / n_tiny
    coloured = _f(tf, sat > float(COLOURED_MIN_SAT)) * tiny_valid_f
    hue_bin = tf.reshape(tf.cast(tf.floor(hue / float(HUE_BIN_WIDTH)), tf.int32), [-1])
    hue_hist = tf.math.unsorted_segment_sum(tf.reshape(coloured, [-1]), hue_bin, HUE_ENTROPY_BINS + 1)[:HUE_ENTROPY_BINS]
    p = hue_hist / tf.maximum(tf.reduce_sum(hue_hist), 1.0)
    entropy = -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-30)), 0.0)) / float(np.log(2.0))
    hue_entropy = tf.where(tf.reduce_sum(coloured) >= float(HUE_ENTROPY_MIN_PIXELS), entropy, 0.0)

    (ax, ay, grad, laplacian, inner), (sx, sy) = _gradients(tf, gray)
    grid_a, grid_b = _grid_valid(tf, 2, na, h, w), _grid_valid(tf, 1, nb, h, w)
    floor = tf.maximum(EDGE_FLOOR, EDGE_FLOOR_FRACTION * tf.reduce_sum(gray) / (hf * wf))
    rsx, rsy = _reblurred_gradients(tf, gray, h, w)
    roi_a = roi_at(2, na)
    blur_h, blur_v = _edge_blur(tf, (ax, ay), (tf.abs(rsx), tf.abs(rsy)), roi_a, grid_a, floor)
    shake_blur = _shake_blur(tf, (sx, sy), (rsx, rsy), roi_a, grid_a, floor)
    to_ref = REFERENCE_SIZE / tf.maximum(hf, wf)

    # exposure and glare over the ROI and the central window: one histogram of grey level
    # (0..255) plus 256 where every channel is >= GLARE_LEVEL (white: glare)
    judge = tf.maximum(roi, centre_f) * valid_f
    white = _f(tf, tf.minimum(tf.minimum(small[0], small[1]), small[2]) >= float(GLARE_LEVEL))
    levels = tf.cast(gray + 256.0 * white, tf.int32)
    joint = tf.math.unsorted_segment_sum(tf.reshape(judge, [-1]), tf.reshape(levels, [-1]), 512)
    hist = joint[:256] + joint[256:]
    n_judge = tf.reduce_sum(hist)
    targets = tf.stack([tf.maximum(1.0, tf.math.ceil(q * n_judge / 100.0)) for q in map(float, LUMA_PERCENTILES)])
    luma_median, luma_p95 = tf.unstack(_order_statistics(tf, tf.cumsum(hist), targets - 1.0))
    bright_clip = tf.reduce_sum(hist[CLIP_LEVEL:]) / n_judge
    glare_fraction = tf.reduce_sum(joint[256:]) / n_judge
    # features._glare_spots: white pixels above their surroundings' mean grey (whole-number box sums of
    # the tiny copy's grey, reflected at its size, taken to the analysis copy by nearest neighbour)
    k = GLARE_SPOT_WINDOW
    sums = _separable(tf, _grey(tf, tiny), np.ones(k, np.float32), th, tw, "reflect101")
    above = _f(tf, k * k * gray - _gather_2d(tf, sums, iy, ix) > float(GLARE_SPOT_CONTRAST * k * k))
    glare_spots = tf.reduce_sum(white * above * valid_f) / (hf * wf)

    means = [tf.reduce_sum(c * tiny_valid_f) / n_tiny for c in tiny]
    tot = means[0] + means[1] + means[2] + 1e-6
    cast_r, cast_g, cast_b = means[0] / tot, means[1] / tot, means[2] / tot
    white_u, white_v = _white_point(tf, tiny, tiny_valid_f)

    noise = _noise_sigma(tf, inner, grad, laplacian, roi_at(1, nb), grid_b)
    detail_offset = _detail_offset(tf, grad, grid_b, h, w)
    dx, dy = _crop_steps(tf, _planes(tf, _f(tf, crop_u8)))
    blockiness = _blockiness(tf, dx, dy, ch, cw)
    jpeg_grid = _jpeg_grid(tf, dx, dy, ch, cw)
    if DESCRIPTOR_TERMS & set(config.ramps.get("not_skin", {})):
        descriptor = _describe(tf, _planes(tf, _f(tf, thumb_u8)))
        typicality, nonskin_logit = _typicality(tf, descriptor, config), _nonskin_logit(tf, descriptor, config)
    else:
        typicality, nonskin_logit = tf.constant(0.0), tf.constant(0.0)
    box = config.cast_box
    cast_distance = tf.reduce_max(tf.stack([0.0, box["r_minus_b_min"] - (cast_r - cast_b), box["g_min"] - cast_g,
                                            cast_g - box["g_max"], cast_b - box["b_max"]]))
    return {
        "width": _f(tf, w0), "height": _f(tf, h0), "analysis_long_side": tf.maximum(hf, wf),
        "skin_fraction": skin_fraction, "roi_offset": roi_offset, "colourful_fraction": colourful_fraction,
        "hue_entropy": hue_entropy, "blur": tf.maximum(blur_h, blur_v) * to_ref, "blur_h": blur_h * to_ref,
        "blur_v": blur_v * to_ref, "shake_blur": shake_blur * to_ref, "luma_median": luma_median, "luma_p95": luma_p95, "bright_clip": bright_clip,
        "glare_fraction": glare_fraction, "glare_spots": glare_spots, "cast_r": cast_r, "cast_g": cast_g, "cast_b": cast_b,
        "noise_sigma": noise, "blockiness": blockiness, "grey": _f(tf, grey_photo), "typicality": typicality,
        "nonskin_logit": nonskin_logit,
        "cast_distance": cast_distance, "white_u": white_u, "white_v": white_v, "detail_offset": detail_offset,
        "jpeg_grid": jpeg_grid,
        "white_distance": _white_distance(tf, white_u, white_v, config.white_locus),
        "white_cool": _white_cool(tf, white_u, white_v, config.white_locus),
    }


# ------------------------------------------------------------------ the verdict

def _term_at_least(tf, value, good: float, bad: float, level: float):
    """Whether ramp(value, good, bad) >= level, decided on the measurement against the boundary
    worked out here in double precision, as gate.ramp decides it: a score computed in float32
    (where a division may become a multiplication by a reciprocal) can land a hair below a
    threshold that the reference meets exactly, e.g. a median luma of exactly 240 on the
    too-bright ramp 200..250 scores exactly 0.2, the default threshold."""
    if level <= 0.0:
        return tf.constant(True)
    if level > 1.0:
        return tf.constant(False)
    boundary = bad + level * (good - bad)
    inclusive = ramp(boundary, good, bad) >= level
    b = tf.constant(np.float32(boundary))
    if good > bad:
        return value >= b if inclusive else value > b
    return value <= b if inclusive else value < b


def _verdict(tf, m: dict, min_model_input, config: GateConfig) -> dict:
    """gate.verdict_from_measurements in graph ops: scores, pass/warn/applicable, reasons, decision."""
    reason_index = {code: i for i, code in enumerate(REASON_CODES)}
    scores, reasons, passes, clears = [], [], [], []
    for name in CHECK_NAMES:
        thr = float(config.thresholds.get(name, 0.5))
        levels = (thr, thr + float(config.warn_margin.get(name, 0.0)))  # pass, and pass without a warning
        if name == "resolution":
            min_side = tf.minimum(m["width"], m["height"])
            scores.append(tf.minimum(1.0, min_side / (2.0 * min_model_input)))
            reasons.append(tf.constant(reason_index["too_small"]))
            # min(1, side / (2 mmi)) >= level, as side >= 2 level mmi (exact for level 0.5 at side == mmi)
            ok = [tf.constant(level <= 0.0) if level <= 0.0 or level > 1.0 else
                  min_side >= np.float32(2.0 * level) * min_model_input for level in levels]
            passes.append(ok[0])
            clears.append(ok[1])
            continue
        terms = list(config.ramps[name].items())
        ramps = tf.stack([tf.clip_by_value((m[key] - gb["bad"]) / (gb["good"] - gb["bad"]), 0.0, 1.0) for key, gb in terms])
        lowest = tf.reduce_min(ramps)
        # the first term at the lowest score names the reason (gate._score_check's strict "<")
        first = tf.reduce_min(tf.where(tf.equal(ramps, lowest), tf.range(len(terms)), len(terms)))
        codes = [reason_index[_REASONS.get((name, key), name)] for key, _ in terms]
        reason = tf.gather(tf.constant(codes), tf.minimum(first, len(terms) - 1))
        if name == "sharpness":
            bh, bv = m["blur_h"], m["blur_v"]
            ratio = tf.maximum(bh, bv) / tf.maximum(tf.minimum(bh, bv), 1e-12)
            motion = tf.logical_and(tf.logical_and(bh > 0, bv > 0), ratio > MOTION_BLUR_RATIO)
            reason = tf.where(motion, reason_index["motion_blur"], reason)
        ok = []
        for level in levels:
            all_terms = tf.reduce_all(tf.stack([_term_at_least(tf, m[key], gb["good"], gb["bad"], level) for key, gb in terms]))
            if name == "colour_cast":  # grey: score 0, which passes only a level of 0
                all_terms = tf.logical_and(all_terms, tf.logical_or(m["grey"] <= 0, level <= 0.0))
            ok.append(all_terms)
        passes.append(ok[0])
        clears.append(ok[1])
        if name == "colour_cast":  # a black-and-white photo has no usable colour
            lowest = tf.where(m["grey"] > 0, 0.0, lowest)
            reason = tf.where(m["grey"] > 0, reason_index["colour_cast"], reason)
        scores.append(lowest)
        reasons.append(reason)
    score = tf.stack(scores)
    reason = tf.stack(reasons)
    passed = tf.stack(passes)
    warn = tf.logical_and(passed, tf.logical_not(tf.stack(clears)))
    exposure_failed = tf.logical_not(passed[CHECK_NAMES.index("exposure")])
    dependent = tf.constant([n in _DEPENDENT for n in CHECK_NAMES])
    applicable = tf.logical_not(tf.logical_and(tf.logical_and(dependent, exposure_failed), tf.logical_not(passed)))
    failing = tf.logical_and(applicable, tf.logical_not(passed))
    warn_only = tf.constant([n in config.warn_only for n in CHECK_NAMES])
    rejecting = tf.logical_and(failing, tf.logical_not(warn_only))
    warned = tf.logical_and(applicable, tf.logical_or(warn, tf.logical_and(tf.logical_not(passed), warn_only)))
    decision = tf.where(tf.reduce_any(rejecting), 2, tf.where(tf.reduce_any(tf.logical_or(warned, failing)), 1, 0))
    shown = tf.logical_or(tf.logical_not(passed), warn)
    reason_out = tf.where(shown, reason, -1)
    named = tf.logical_or(failing, warned)
    flags = tf.reduce_max(_f(tf, tf.logical_and(named[:, None], tf.equal(reason[:, None], tf.range(len(REASON_CODES))[None, :]))), axis=0)
    return {"scores": score, "passed": tf.cast(passed, tf.int32), "warn": tf.cast(warn, tf.int32),
            "applicable": tf.cast(applicable, tf.int32), "reason": tf.cast(reason_out, tf.int32),
            "reason_flags": tf.cast(flags, tf.int32), "decision": tf.reshape(tf.cast(decision, tf.int32), [1])}


def gate_function(config: GateConfig):
    """The twin as a tf.function with the contract's signature (inputs and outputs by name)."""
    tf = _ops()
    specs = gate_twin.input_shapes(config.analysis_size)
    signature = [tf.TensorSpec(shape, getattr(tf, dtype), name=name) for name, (shape, dtype) in
                 ((n, specs[n]) for n in INPUT_NAMES)]

    @tf.function(input_signature=signature)
    def gate(analysis, tiny, thumbnail, native_crop, sizes):
        s = tf.reshape(sizes, [len(SIZE_FIELDS)])
        m = _measure(tf, analysis, tiny, thumbnail, native_crop, s, config)
        out = _verdict(tf, m, _f(tf, s[SIZE_FIELDS.index("min_model_input")]), config)
        out["measurements"] = tf.stack([m[k] for k in MEASUREMENT_NAMES])
        return {k: out[k][None] for k in OUTPUT_NAMES}

    return gate


def as_loaded(config: GateConfig, source=None) -> GateConfig:
    """``config`` as every reader of the file gets it back: GateConfig.from_dict(to_dict()),
    which fills in the default ramp terms a config leaves out. The graph is built from this,
    so it computes what the packed config says (and what the OpenCV gate does with it)."""
    return GateConfig.from_dict(config.to_dict(), source)


def build_gate_model(config: GateConfig, source=None) -> bytes:
    """The gate's .tflite bytes (builtin ops only), without metadata."""
    config = as_loaded(config, source)
    check_expressible(config, source)
    tf = _ops()
    module = tf.Module()
    module.gate = gate_function(config)
    # through a SavedModel: the converter keeps its signature (named inputs and outputs) only then
    # the SavedModel loader and the MLIR converter log each step from C++
    with tempfile.TemporaryDirectory(prefix="mobile_derm_gate_") as tmp, native_output_silenced():
        tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.gate.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError and others
            raise GateTwinError(source, f"the gate does not convert to builtin TFLite ops ({str(exc).splitlines()[0]})") from None


def metadata(config: GateConfig) -> dict:
    """gate.json: everything an app needs besides the graph."""
    return {
        "contract_version": gate_twin.CONTRACT_VERSION,
        "inputs": {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in
                   gate_twin.input_shapes(config.analysis_size).items()},
        "size_fields": list(SIZE_FIELDS),
        "input_rule": {
            "analysis": f"features.shrink(photo, {config.analysis_size}): never enlarged; with a long side >= "
                        f"{4 * config.analysis_size}: INTER_NEAREST to (2 * fw, 2 * fh), fw = round(width * "
                        f"{config.analysis_size} / long side) (fh alike, half to even, at least 1), then INTER_LINEAR "
                        f"to (fw, fh); otherwise exact 2x INTER_LINEAR halvings while the long side >= "
                        f"{2 * config.analysis_size}, then one INTER_AREA resize to a long side of {config.analysis_size} "
                        f"(round(side * scale)); then INTER_NEAREST up to at least {MIN_ANALYSIS_SIDE} px per side",
            "tiny": f"the same shrink of the analysis copy to {TINY_SIZE}",
            "thumbnail": f"cv2.resize(analysis copy, ({THUMBNAIL_SIZE}, {THUMBNAIL_SIZE}), INTER_AREA)",
            "native_crop": f"the decoded photo at y0 = max(0, (height - {NATIVE_CROP_SIZE}) // 2) // {JPEG_BLOCK} * "
                           f"{JPEG_BLOCK} (x0 alike), "
                           f"up to {NATIVE_CROP_SIZE} px",
            "padding": "each copy top-left in its tensor, the rest zero; RGB, uint8",
        },
        "outputs": {"measurements": list(MEASUREMENT_NAMES), "scores": list(CHECK_NAMES), "passed": list(CHECK_NAMES),
                    "warn": list(CHECK_NAMES), "applicable": list(CHECK_NAMES),
                    "reason": "index into reason_codes per check, -1 when it passed without a warning",
                    "reason_flags": "1 per reason code the verdict lists", "decision": list(DECISIONS)},
        "reason_codes": list(REASON_CODES),
        "guidance": dict(GUIDANCE),
        "config": config.to_dict(),
    }


def write_gate_model(config: GateConfig, path: str | Path, source=None) -> Path:
    """Build gate.tflite with its metadata and write it atomically; the file is read back
    (metadata and input contract) before it appears."""
    config = as_loaded(config, source)
    data = build_gate_model(config, source)  # first: TensorFlow is imported quietly there (tflite-support imports it too)
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as _metadata_fb
    from tensorflow_lite_support.metadata.python import metadata as _metadata

    from mobile_derm.io_utils import atomic_path

    meta = metadata(config)
    model_md = _metadata_fb.ModelMetadataT()
    model_md.name = "mobile_derm photo-quality gate"
    model_md.version = config.version
    model_md.description = (f"The mobile_derm photo-quality gate (contract {gate_twin.CONTRACT_VERSION}): "
                            f"{gate_twin.METADATA_FILENAME} holds the input contract, the GateConfig, reason codes and guidance.")
    packed = _metadata_fb.AssociatedFileT()
    packed.name = gate_twin.METADATA_FILENAME
    packed.description = "Input contract, outputs, GateConfig, reason codes and guidance (JSON)."
    model_md.associatedFiles = [packed]
    subgraph = _metadata_fb.SubGraphMetadataT()
    details = _io_names(data)
    subgraph.inputTensorMetadata = [_tensor_md(_metadata_fb, n) for n in details[0]]
    subgraph.outputTensorMetadata = [_tensor_md(_metadata_fb, n) for n in details[1]]
    model_md.subgraphMetadata = [subgraph]
    builder = _flatbuffer_builder()
    builder.Finish(model_md.Pack(builder), _metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="mobile_derm_gate_") as tmp:
        meta_path = Path(tmp) / gate_twin.METADATA_FILENAME
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        populator = _metadata.MetadataPopulator.with_model_buffer(data)
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([str(meta_path)])
        populator.populate()
        populated = bytes(populator.get_model_buffer())
    with atomic_path(path) as tmp_path:
        tmp_path.write_bytes(populated)
        gate_twin.GateTwin(tmp_path)  # refuses a file that does not load or fit the contract
    return path


def _flatbuffer_builder():
    import flatbuffers

    return flatbuffers.Builder(0)


def _tensor_md(fb, name: str):
    md = fb.TensorMetadataT()
    md.name = name
    return md


def _io_names(data: bytes) -> tuple[list[str], list[str]]:
    """Signature names of the subgraph's inputs and outputs, in the subgraph's tensor order."""
    from ai_edge_litert.interpreter import Interpreter

    with native_output_silenced():  # LiteRT announces its XNNPACK delegate
        interpreter = Interpreter(model_content=data)
    runner = interpreter.get_signature_runner(SIGNATURE)
    by_index_in = {v["index"]: k for k, v in runner.get_input_details().items()}
    by_index_out = {v["index"]: k for k, v in runner.get_output_details().items()}
    ins = [by_index_in[d["index"]] for d in interpreter.get_input_details()]
    outs = [by_index_out[d["index"]] for d in interpreter.get_output_details()]
    return ins, outs
