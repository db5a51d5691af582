"""Raw measurements on one photo, made on a small "analysis" copy of it.

Everything here is a handful of OpenCV calls on an image whose longer side is at most
``analysis_size`` (320 px by default), so a 4000x3000 photo costs a few milliseconds on
one core. The shrink uses exact 2x halvings (nearest, then bilinear, which at exactly 1/2 is
a 2x2 box filter) followed by one INTER_AREA step from at most twice the target size:
INTER_AREA on a full 12 MP frame costs ~25 ms, this chain ~3 ms.

The measurements are raw numbers (pixels, fractions, grey levels); ``gate.py`` turns them
into scores in [0, 1] with the parameters of the GateConfig.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from mobile_derm_quality.not_skin import describe, thumbnail

SKIN_MIN_PIXELS = 64
QUANTILE_MAX_N = 8192  # _quantile sorts a strided subsample of at most about this many values
MIN_ANALYSIS_SIDE = 16  # a thumbnail's analysis copy is grown to this: measure something (resolution rejects it anyway)
TINY_SIZE = 96  # the colour decisions' copy: 4x4 averaging removes sensor noise from chromaticity
NATIVE_CROP_SIZE = 256  # the centre crop JPEG blockiness is measured on, at native resolution

# skin_mask: normalised rg chromaticity of skin (every Fitzpatrick type, daylight to indoor light)
SKIN_MIN_SUM = 45.0  # R+G+B below this (or below SKIN_MIN_SUM_FRACTION of the brightest): chromaticity is noise
SKIN_MIN_SUM_FRACTION = 0.08  # ... relative to the frame's brightest pixel, so underexposed skin still counts
SKIN_MAX_DARKEST = 248  # every channel at or above this: clipped near-white, no colour left
SKIN_R_RANGE = (0.345, 0.66)  # r = R/(R+G+B), exclusive bounds: reddish to neutral-warm
SKIN_G_RANGE = (0.22, 0.38)  # g = G/(R+G+B), exclusive bounds
SKIN_G_OVER_R = 0.005  # r >= g - this: red at least about as strong as green
# b and r - b bound how cool a white balance the skin may be under: skin of Fitzpatrick types 3-4 under a cool
# near-neutral white balance (central chromaticity r 0.33-0.36, b 0.33-0.34) fell outside the old bounds (0.012,
# 0.025), and the gate read "too far" + "not skin". Chosen on the fit half and fit split only (docs/gate.md, "The
# skin mask under a cool white balance"): the narrowest widening tried that passes every fit-half Fitzpatrick type.
SKIN_B_OVER_G = 0.025  # b <= g + this: blue at most a little stronger than green
SKIN_R_MINUS_B = 0.005  # r - b above this: red at least as strong as blue, not a bluish grey
GREY_TOLERANCE = 3  # a photo whose channels differ by at most this everywhere (tiny copy) has no colour
ROI_CLOSE_DIVISOR = 8  # the ROI's closing kernel: the tiny copy's short side // this, made odd ...
ROI_CLOSE_MIN = 3  # ... and at least this: lesions, hairs and pen marks inside the skin count as ROI

# colourful_fraction and hue_entropy, on the tiny copy's OpenCV HSV (hue 0..179)
FAR_HUE_RANGE = (30, 160)  # exclusive: greens, blues, purples: not skin, not lesion
COLOURFUL_MIN_SAT = 70  # saturation above this ...
COLOURFUL_MIN_VAL = 40  # ... and value above this: a real colour, not a tinted shadow
COLOURED_MIN_SAT = 40  # pixels the hue histogram counts (below: hue is noise)
HUE_BIN_WIDTH = 10  # hue histogram bin width: 18 bins over 0..179
HUE_ENTROPY_BINS = 180 // HUE_BIN_WIDTH  # OpenCV hue runs 0..179
HUE_ENTROPY_MIN_PIXELS = 16  # fewer coloured pixels: entropy 0 (too few to estimate it)

# _edge_blur
REBLUR_SIGMA = 1.0  # the re-blur whose effect on edge gradients gives the blur radius
EDGE_FLOOR = 6.0  # an edge's gradient is at least this (grey levels) ...
EDGE_FLOOR_FRACTION = 0.12  # ... and this times the mean grey level: a ~3%/px step, whatever the exposure
EDGE_PERCENTILE = 90  # edges: the ROI's strongest 10% of gradients
MIN_EDGES = 8  # fewer edge pixels than this: no edges at all (MAX_BLUR)
SHARP_EDGE_PERCENTILE = 20  # the sharpest edges tell where the focus is
SHAKE_MIN_ANISOTROPY = 1e-6  # _shake_blur: edge orientations more even than this have no dominant direction
SHAKE_GRID_STEP = 4  # _shake_blur: every 4th pixel of every 4th row (every other point of _edge_blur's grid): 3x cheaper, as good

# _noise_sigma
NOISE_MIN_GREY = 6  # exclusive bounds on the grey level: clipped pixels hide noise
NOISE_MAX_GREY = 249
NOISE_MIN_PIXELS = 16  # fewer usable pixels: noise 0 (too few to estimate it)
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)  # Immerkaer's: the difference of two Laplacians

# _blockiness
JPEG_BLOCK = 8  # JPEG's block size: block edges every 8 px
BLOCKINESS_MIN_SIDE = 32  # a native crop smaller than this: blockiness 0 (too few blocks)

# _jpeg_grid: a photo shrunk, compressed hard and grown back shows its 8 px JPEG blocks every
# 8 / scale native px, a grid _blockiness (native 8 px) cannot see; clean photos are JPEGs too, with
# their own 8 px grid, which is taken out before the coarse one is looked for.
GRID_MIN_PERIOD = 20  # block period in native px, from: 8 px blocks of a copy at 0.4 of the size, grown back ...
GRID_MAX_PERIOD = 48  # ... to: a copy at 1/6 of the size
GRID_LOW = 6  # lags below this are not looked at: the interpolation's own ripple, one period per small-copy px (2.5-6 px)
# a lag counts by what it exceeds every finer lag by, up to this many px short of it: a multiple of a finer
# period is as strong as that period
GRID_BELOW_GAP = 5
GRID_HIGHPASS = 9  # the profiles minus their running mean over this many px: shading and the lesion's outline out
GRID_SMOOTH = 3  # then averaged over this many px (circular): a period that is no whole number of px lines up with itself
GRID_MEAN_FLOOR = 0.5  # grey levels added to the mean step it is relative to: finite for a flat crop (mean step 0)
GRID_MIN_SIDE = 64  # a smaller crop: 0 (the profile must hold GRID_MIN_PERIOD at least 3 times: lags up to a third of it)

# exposure and glare
LUMA_PERCENTILES = (50, 95)  # luma_median and luma_p95
CLIP_LEVEL = 250  # luma at or above this counts as clipped (bright_clip)
GLARE_LEVEL = 245  # every channel at or above this: a specular hot spot (white, not just bright skin)
GLARE_SPOT_WINDOW = 11  # glare_spots: a lobe stands out from the mean grey of this many tiny-copy px square around it ...
GLARE_SPOT_CONTRAST = 25  # ... by more than this many grey levels (a pale patch or a white background does not)

# detail layout (_detail_offset): where the frame shows fine detail. A close-up puts the skin it is about
# at the focus distance, where the analysis copy resolves its texture, hairs and lesion; the frame's other
# parts (more of the body, clothes, a room: farther away, out of the depth of field) show little detail at
# this scale, so the detailed part of the frame is where the photo's subject is.
DETAIL_GRID = 8  # the frame in DETAIL_GRID x DETAIL_GRID cells, over grid B (every 2nd pixel, as _noise_sigma's)
DETAIL_GRADIENT = 12.0  # |Sobel x| + |Sobel y| above this: 1.5 grey levels per pixel or more (a ramp's Sobel is 8x its slope)
# the largest detail_offset a frame can give: all its detail in a corner cell
MAX_DETAIL_OFFSET = float(np.hypot(0.5 - 0.5 / DETAIL_GRID, 0.5 - 0.5 / DETAIL_GRID) / np.hypot(0.5, 0.5))

# white point (_white_point, on the tiny copy): the light's colour, from the brightest unclipped pixels.
# Specular reflection off skin has the colour of the light whatever the skin's own colour (the
# dichromatic model), so the brightest pixels tell a tungsten-orange light from dark skin in daylight.
WHITE_PERCENTILE = 99  # per channel, over the pixels whose brightest channel is below CLIP_LEVEL
WHITE_MIN_PIXELS = 16  # fewer unclipped pixels: the percentile is taken over every pixel
# Where light bluer than the phone's assumed daylight (shade, overcast sky) moves the white point: the CIE
# Planckian locus from 6500 K to 15000 K through linear sRGB, as a unit vector in (log R/G, log B/G). The locus
# is nearly straight there: 3000 -> 6500 K and 6500 -> 20000 K point within 1 degree of it; a power-law encoding
# scales the shift and keeps its direction. (gate.white_cool_shift; docs/gate.md gives the computation.)
COOL_LIGHT_DIRECTION = (-0.5115, 0.8593)


def _quantile(values: np.ndarray, q: float, max_n: int = QUANTILE_MAX_N) -> float:
    """Percentile ``q`` (0-100) of a strided subsample: exact enough, much faster than a full sort."""
    v = values.ravel()
    if v.size > max_n:
        v = v[:: v.size // max_n]
    if v.size == 0:
        return float("nan")
    # np.percentile's linear interpolation from one partition (a third of its cost): after it, the next order
    # statistic is the smallest value above position lo
    pos = q / 100.0 * (v.size - 1)
    lo = int(pos)
    part = np.partition(v, lo)
    upper = part[lo + 1 :].min() if lo + 1 < v.size else part[lo]
    return float(part[lo] + (pos - lo) * (upper - part[lo]))


MAX_BLUR = 12.0  # px at the analysis scale; reported when there are no edges at all
REFERENCE_SIZE = 600  # blur is reported in px of a photo whose longer side is 600 px


def shrink(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the longer side is at most ``size``; never enlarges."""
    h, w = rgb.shape[:2]
    long_side = max(h, w)
    if long_side <= size:
        return rgb
    if long_side >= 4 * size:
        # A large photo (a phone camera's 12 MP frame): point samples straight to twice the final
        # size (~0.75 ms on 12 MP), then one exact bilinear halving (= 2x2 box average, anti-aliased).
        # No resampling step after it: the final size is reached exactly (an INTER_AREA step to
        # it cost 0.7 ms). Smaller photos, every photo the gate's numbers were fitted on among
        # them, take the path below.
        fw, fh = max(1, round(w * size / long_side)), max(1, round(h * size / long_side))
        x = cv2.resize(rgb, (2 * fw, 2 * fh), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(x, (fw, fh), interpolation=cv2.INTER_LINEAR)
    x = rgb
    # exact bilinear halvings (= 2x2 box average) while at least twice the target, then one area step
    while max(x.shape[:2]) >= 2 * size:
        x = cv2.resize(x, (max(1, x.shape[1] // 2), max(1, x.shape[0] // 2)), interpolation=cv2.INTER_LINEAR)
    h, w = x.shape[:2]
    s = size / max(h, w)
    if s < 1.0:
        x = cv2.resize(x, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return x


def analysis_copy(rgb: np.ndarray, analysis_size: int) -> np.ndarray:
    """The copy every measurement but blockiness is made on: ``shrink(rgb, analysis_size)``,
    grown by nearest neighbour to at least MIN_ANALYSIS_SIDE px per side."""
    small = shrink(rgb, analysis_size)
    if min(small.shape[:2]) < MIN_ANALYSIS_SIDE:
        small = cv2.resize(small, (max(MIN_ANALYSIS_SIDE, small.shape[1]), max(MIN_ANALYSIS_SIDE, small.shape[0])),
                           interpolation=cv2.INTER_NEAREST)
    return small


def native_crop_origin(size: int) -> int:
    """Where the native crop starts along an axis of ``size`` px: centred, on the 8 px JPEG block grid."""
    return max(0, (size - NATIVE_CROP_SIZE) // 2) // JPEG_BLOCK * JPEG_BLOCK


def native_crop(image: np.ndarray) -> np.ndarray:
    """The centre crop blockiness is measured on: NATIVE_CROP_SIZE px per side, or to the edge."""
    y0, x0 = native_crop_origin(image.shape[0]), native_crop_origin(image.shape[1])
    return image[y0 : y0 + NATIVE_CROP_SIZE, x0 : x0 + NATIVE_CROP_SIZE]


@dataclass
class Measurements:
    width: int  # of the photo given to assess()
    height: int
    analysis_long_side: int
    skin_fraction: float  # of the frame, skin-coloured pixels (gain-invariant chromaticity)
    roi_offset: float  # distance of the skin region's centroid from the frame centre / half-diagonal
    colourful_fraction: float  # saturated pixels whose hue is far from skin (greens, blues, purples)
    hue_entropy: float  # entropy (bits) of the hue histogram of coloured pixels, 18 bins
    blur: float  # Gaussian blur radius of the ROI's strongest edges, worst axis, in px of the photo shrunk/grown to 600 px
    blur_h: float
    blur_v: float
    shake_blur: float  # blur along the edges' least-gradient direction minus across it, px at 600 px (_shake_blur)
    luma_median: float  # luminance median over the ROI + central window, 0..255
    luma_p95: float
    bright_clip: float  # fraction of ROI pixels with luma >= 250
    glare_fraction: float  # near-white, low-saturation pixels in the ROI (specular hot spots)
    cast_r: float  # mean chromaticity r = R/(R+G+B) over the frame
    cast_g: float
    cast_b: float
    noise_sigma: float  # estimated Gaussian noise sigma (grey levels) at the analysis scale
    blockiness: float  # JPEG 8x8 block-edge strength at native resolution (centre crop)
    jpeg_grid: float  # strength of a coarser block grid (the JPEG blocks of a smaller copy, grown back) in the crop (_jpeg_grid)
    grey: bool  # the photo has no colour at all
    glare_spots: float  # share of the frame in small specular lobes: white and brighter than their surroundings (_glare_spots)
    white_u: float  # white point: log((R99 + 1) / (G99 + 1)) of the tiny copy's unclipped pixels (_white_point)
    white_v: float  # log((B99 + 1) / (G99 + 1))
    detail_offset: float  # distance of the centre of the frame's fine detail from the frame centre / half-diagonal (_detail_offset)
    descriptor: np.ndarray | None = None  # not_skin.describe() of the analysis copy (not in to_dict)
    skin_check_distance: float = 0.0  # not_skin.SkinCheck's distance, when the config has one (0: none)


def roi_close_kernel(short_side: int) -> int:
    """Side of the square kernel that closes the skin mask into the ROI, for a tiny copy whose
    shorter side is ``short_side`` px (odd, so the kernel has a centre)."""
    return max(ROI_CLOSE_MIN, (short_side // ROI_CLOSE_DIVISOR) | 1)


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels (uint8 0/255) in normalised rg chromaticity.

    Chromaticity (r = R/S, g = G/S, b = B/S) ignores exposure gain, so a dark or bright photo
    of skin still gives a skin mask. Skin of every Fitzpatrick type under daylight, flash or
    indoor light is reddish to neutral-warm: r >= g >= b (loosely), r above b even under a cool
    white balance. Very dark pixels (chromaticity is noise there) and clipped near-white pixels
    are not counted.
    Call it on a smoothed/shrunken image so sensor noise does not break the mask.
    """
    f = rgb.astype(np.float32)
    s = (f[:, :, 0] + f[:, :, 1] + f[:, :, 2]) + 1e-3  # f.sum(axis=2) bit for bit (same order), 9x cheaper
    r = f[:, :, 0] / s
    g = f[:, :, 1] / s
    b = 1.0 - r - g
    bright = float(s.max()) if s.size else 0.0
    darkest = np.minimum(np.minimum(rgb[:, :, 0], rgb[:, :, 1]), rgb[:, :, 2])  # uint8: cheaper than on floats
    valid = (s > max(SKIN_MIN_SUM, SKIN_MIN_SUM_FRACTION * bright)) & (darkest < SKIN_MAX_DARKEST)
    m = (valid & (r > SKIN_R_RANGE[0]) & (r < SKIN_R_RANGE[1]) & (g > SKIN_G_RANGE[0]) & (g < SKIN_G_RANGE[1])
         & (r >= g - SKIN_G_OVER_R) & (b <= g + SKIN_B_OVER_G) & (r - b > SKIN_R_MINUS_B))
    return m.astype(np.uint8) * 255


def _grid_points(sel: np.ndarray, offset: int, step: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The True points of ``sel`` (a grid ``img[offset::step, offset::step]``, C-contiguous) as flat indices
    into the grid and into ``img`` (``width`` columns): one flatnonzero, one gather from ``_grid_index``."""
    k = np.flatnonzero(sel)
    return k, _grid_index(sel.shape[0], sel.shape[1], offset, step, width).take(k)


@functools.lru_cache(maxsize=16)
def _grid_index(ny: int, nx: int, offset: int, step: int, width: int) -> np.ndarray:
    """Each point of an ``ny`` x ``nx`` grid ``img[offset::step, offset::step]``'s flat index into ``img``
    (``width`` columns), per grid (a camera gives a handful of shapes); read-only, as every call shares it."""
    index = ((offset + step * np.arange(ny))[:, None] * width + (offset + step * np.arange(nx))[None, :]).ravel()
    index.flags.writeable = False
    return index


def _neighbours(img: np.ndarray, i: np.ndarray, offsets: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``img``'s values at flat pixel indices ``i`` moved by each (dy, dx) of ``offsets``: one row per offset,
    from one gather (several times cheaper than a gather per neighbour)."""
    w = img.shape[1]
    return img.ravel().take(i[None, :] + np.array([dy * w + dx for dy, dx in offsets])[:, None])


# the 3x3 Sobel's neighbours, as (dy, dx): the right column (up, middle, down), then the left; for y the bottom
# row (left, middle, right), then the top
_SOBEL_X_NEIGHBOURS = ((-1, 1), (0, 1), (1, 1), (-1, -1), (0, -1), (1, -1))
_SOBEL_Y_NEIGHBOURS = ((1, -1), (1, 0), (1, 1), (-1, -1), (-1, 0), (-1, 1))


def _sobel_at(img: np.ndarray, i: np.ndarray, along_x: int) -> np.ndarray:
    """|3x3 Sobel| of ``img`` at flat pixel indices ``i``, none on the border: cv2.Sobel's value there."""
    n = _neighbours(img, i, _SOBEL_X_NEIGHBOURS if along_x else _SOBEL_Y_NEIGHBOURS)
    return np.abs((n[0] + 2 * n[1] + n[2]) - (n[3] + 2 * n[4] + n[5]))


def _edge_blur(g: np.ndarray, sx: np.ndarray, sy: np.ndarray, mask: np.ndarray, reblur_sigma: float = REBLUR_SIGMA,
               gr: np.ndarray | None = None) -> tuple[float, float]:
    """Blur radius (Gaussian sigma, px at this scale) of the strongest edges, per direction.

    A step edge blurred by sigma has a peak gradient proportional to 1/sigma; re-blurring by
    s_r lowers it to 1/sqrt(sigma^2 + s_r^2). The ratio rho of the two gradients at the
    strongest edges therefore gives sigma = s_r / sqrt(rho^2 - 1), independent of contrast.
    Horizontal and vertical gradients are measured apart, so motion blur along one axis shows.
    ``g`` is the float32 grey image, ``sx``/``sy`` its Sobel gradients, ``gr`` (optional) ``g``
    re-blurred by ``reblur_sigma`` (BORDER_REFLECT).
    """
    if gr is None:
        gr = reblurred(g, reblur_sigma)
    # Edges: at least a step of ~3% of the mean brightness per pixel (relative, so exposure
    # does not matter), and among the strongest 10% of the ROI's gradients.
    floor = max(EDGE_FLOOR, EDGE_FLOOR_FRACTION * float(cv2.mean(g)[0]))
    # Evaluate on every 2nd pixel of every 2nd row: thousands of edge pixels remain.
    m = np.ascontiguousarray(mask[2:-2:2, 2:-2:2])  # contiguous: two boolean selections below
    use_mask = cv2.countNonZero(m.view(np.uint8)) >= SKIN_MIN_PIXELS // 4
    out = []
    for d1_full, (dx, dy) in ((sx, (1, 0)), (sy, (0, 1))):
        d1 = np.abs(d1_full[2:-2:2, 2:-2:2])  # on the grid only: a quarter of the pixels
        v = d1[m] if use_mask else d1
        thr = max(_quantile(v, EDGE_PERCENTILE), floor)
        sel = d1 >= thr
        if use_mask:
            sel &= m
        k, i = _grid_points(sel, 2, 2, g.shape[1])
        if k.size < MIN_EDGES:
            out.append(MAX_BLUR)  # no edges at all: nothing is in focus
            continue
        d2 = _sobel_at(gr, i, dx)  # only where it is needed: ~10x fewer pixels
        rho = d1.ravel()[k] / np.maximum(d2, 1e-3)
        sigma = reblur_sigma / np.sqrt(np.maximum(rho * rho - 1.0, 1e-4))
        # The sharpest edges (20th percentile) tell where the focus is; depth of field and
        # soft lesion borders make the rest blurrier on perfectly good photos.
        out.append(float(min(MAX_BLUR, _quantile(sigma, SHARP_EDGE_PERCENTILE))))
    return out[0], out[1]


def _white_point(tiny: np.ndarray) -> tuple[float, float]:
    """The light's colour as log chromaticity (log R/G, log B/G) of each channel's
    WHITE_PERCENTILE-th percentile over the tiny copy's unclipped pixels (a clipped channel has
    lost the light's colour); whole-number percentiles from histograms (``_hist_percentile``), as the twin
    takes them."""
    unclipped = cv2.inRange(tiny, (0, 0, 0), (CLIP_LEVEL - 1,) * 3)  # every channel below CLIP_LEVEL
    mask = unclipped if cv2.countNonZero(unclipped) >= WHITE_MIN_PIXELS else None
    r, g, b = (_hist_percentile(cv2.calcHist([tiny], [c], mask, [256], [0, 256]).ravel(), WHITE_PERCENTILE) + 1.0
               for c in range(3))
    return float(np.log(r / g)), float(np.log(b / g))


def _glare_spots(white: np.ndarray, gray: np.ndarray, tiny: np.ndarray) -> float:
    """Share of the analysis copy's pixels that are white (``white``: uint8, 255 where every channel >=
    GLARE_LEVEL) and more than GLARE_SPOT_CONTRAST grey levels above the mean grey of the
    GLARE_SPOT_WINDOW-px square of the tiny copy around them: a few small flash reflections, which
    glare_fraction (white share of the ROI) misses. Whole-number sums, exact in float32 (below 2**24),
    so the comparison is exact, as in the twin; OpenCV calls only, about 0.1 ms whatever the photo."""
    if cv2.countNonZero(white) == 0:
        return 0.0
    k = GLARE_SPOT_WINDOW
    sums = cv2.boxFilter(cv2.cvtColor(tiny, cv2.COLOR_RGB2GRAY), cv2.CV_32F, (k, k), normalize=False,
                         borderType=cv2.BORDER_REFLECT_101)
    h, w = gray.shape
    if sums.shape != (h, w):
        sums = cv2.resize(sums, (w, h), interpolation=cv2.INTER_NEAREST)
    excess = cv2.addWeighted(gray, float(k * k), sums, -1.0, 0.0, dtype=cv2.CV_32F)
    above = cv2.compare(excess, float(GLARE_SPOT_CONTRAST * k * k), cv2.CMP_GT)
    return float(cv2.countNonZero(cv2.bitwise_and(above, white))) / float(h * w)


def _hist_percentile(hist: np.ndarray, q: float) -> float:
    """Percentile ``q`` of uint8 values from their 256-bin histogram: the lower value at rank ceil(q n / 100)."""
    cdf = np.cumsum(hist)
    return float(np.searchsorted(cdf, max(1, int(np.ceil(q / 100.0 * cdf[-1])))))


def reblurred(g: np.ndarray, reblur_sigma: float = REBLUR_SIGMA) -> np.ndarray:
    """The grey image re-blurred for the blur estimates (_edge_blur, _shake_blur)."""
    return cv2.GaussianBlur(g, (0, 0), reblur_sigma, borderType=cv2.BORDER_REFLECT)


def _sobel_pair_at(img: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed 3x3 Sobel x and y of ``img`` at flat pixel indices ``i``, none on the border."""
    # the eight neighbours: x's six (up-right, right, down-right, up-left, left, down-left), then down and up
    ur, r, dr, ul, le, dl, d, u = _neighbours(img, i, _SOBEL_X_NEIGHBOURS + ((1, 0), (-1, 0)))
    return (ur + 2 * r + dr) - (ul + 2 * le + dl), (dl + 2 * d + dr) - (ul + 2 * u + ur)


def shake_direction(gx: np.ndarray, gy: np.ndarray) -> tuple[float, float] | None:
    """The unit vector (cos, sin) of the edges' dominant normal: the main axis of the structure tensor
    of the edge gradients scaled to unit length (each edge counts once, however strong), or None
    when their orientations are even. A shake blurs the edges across its path; the edges along it
    stay sharp, so the gradients point across the shake's path."""
    gxx = gx * gx
    w = 1.0 / (gxx + gy * gy)
    jxx = float(np.mean(gxx * w))
    jxy = float(np.mean(gx * gy * w))
    c2, s2 = 2.0 * jxx - 1.0, 2.0 * jxy  # (jxx - jyy, 2 jxy) with jyy = 1 - jxx
    r = float(np.hypot(c2, s2))
    if r < SHAKE_MIN_ANISOTROPY:
        return None
    return float(np.sqrt(max(0.0, (1.0 + c2 / r) / 2.0))), float(np.copysign(np.sqrt(max(0.0, (1.0 - c2 / r) / 2.0)), s2))


def _shake_blur(g: np.ndarray, gr: np.ndarray, sx: np.ndarray, sy: np.ndarray, mask: np.ndarray,
                reblur_sigma: float = REBLUR_SIGMA) -> float:
    """Blur along a hand shake minus blur across it (Gaussian sigma, px at this scale, >= 0 mostly).

    A shake at any angle blurs edges across its path and leaves the edges along it sharp, so the
    edges' gradients point mostly one way (``shake_direction``). The blur radius is measured as in
    _edge_blur (re-blur ratio at the strongest 10% of gradients, sharpest 20%) with the gradient
    taken along that dominant normal and along the path; defocus blurs both alike, a shake only the
    second. ``sx``/``sy`` are the signed Sobel gradients of ``g``, ``gr`` its re-blurred copy."""
    floor = max(EDGE_FLOOR, EDGE_FLOOR_FRACTION * float(cv2.mean(g)[0]))
    step = SHAKE_GRID_STEP
    gx, gy = (np.ascontiguousarray(a[2:-2:step, 2:-2:step]) for a in (sx, sy))
    m = np.ascontiguousarray(mask[2:-2:step, 2:-2:step])
    use_mask = cv2.countNonZero(m.view(np.uint8)) >= SKIN_MIN_PIXELS // 4
    edges = np.abs(gx) + np.abs(gy) > floor
    if use_mask:
        edges &= m
    if np.count_nonzero(edges) < MIN_EDGES:
        return 0.0  # no edges: nothing to tell a shake by (the sharpness check already fails)
    direction = shake_direction(gx[edges], gy[edges])
    if direction is None:
        return 0.0
    c, s = direction
    out = []
    for a, b in ((c, s), (-s, c)):  # across the path (the dominant normal), then along it
        d1 = np.abs(a * gx + b * gy)
        thr = max(_quantile(d1[m] if use_mask else d1, EDGE_PERCENTILE), floor)
        sel = d1 >= thr
        if use_mask:
            sel &= m
        k, i = _grid_points(sel, 2, step, g.shape[1])
        if k.size < MIN_EDGES:
            out.append(MAX_BLUR)
            continue
        rx, ry = _sobel_pair_at(gr, i)
        rho = d1.ravel()[k] / np.maximum(np.abs(a * rx + b * ry), 1e-3)
        sigma = reblur_sigma / np.sqrt(np.maximum(rho * rho - 1.0, 1e-4))
        out.append(float(min(MAX_BLUR, _quantile(sigma, SHARP_EDGE_PERCENTILE))))
    return out[1] - out[0]


def detail_shares(grad_b: np.ndarray) -> np.ndarray:
    """DETAIL_GRID x DETAIL_GRID shares: per cell (rows and columns of ``grad_b`` split as
    ``index * DETAIL_GRID // length``), the share of its points whose gradient is above
    DETAIL_GRADIENT (0 for a cell without points). Whole-number counts, as the twin takes them."""
    cells, total = _detail_cells(*grad_b.shape)
    above = np.bincount(cells[(grad_b > DETAIL_GRADIENT).ravel()], minlength=DETAIL_GRID * DETAIL_GRID)
    return (above / np.maximum(total, 1)).reshape(DETAIL_GRID, DETAIL_GRID)


@functools.lru_cache(maxsize=16)
def _detail_cells(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Each grid point's cell index (``detail_shares``) and each cell's number of points, per grid shape
    (a camera gives a handful of shapes)."""
    cells = ((np.arange(ny) * DETAIL_GRID // ny)[:, None] * DETAIL_GRID + (np.arange(nx) * DETAIL_GRID // nx)[None, :]).ravel()
    return cells, np.bincount(cells, minlength=DETAIL_GRID * DETAIL_GRID)


def _detail_offset(grad_b: np.ndarray) -> float:
    """How far from the frame centre the fine detail lies: the centroid of the cell centres weighted by
    the square of their detailed share (``detail_shares``), from the centre, over the half-diagonal (as
    roi_offset); 0 when no point is detailed (nothing to locate; the sharpness check judges such a photo).
    Squared so that densely detailed cells (the subject in focus) outweigh cells with scattered detail
    (smooth skin's few strong pores, a furniture edge, a tile joint). Off-centre framing puts the close-up
    skin toward an edge and the less detailed rest of the scene in the frame's other part."""
    if min(grad_b.shape) < 1:
        return 0.0
    weight = detail_shares(grad_b) ** 2
    total = float(weight.sum())
    if total <= 0.0:
        return 0.0
    centres = (np.arange(DETAIL_GRID) + 0.5) / DETAIL_GRID - 0.5
    dx = float((weight.sum(axis=0) * centres).sum()) / total
    dy = float((weight.sum(axis=1) * centres).sum()) / total
    return float(np.hypot(dx, dy) / np.hypot(0.5, 0.5))


def _noise_sigma(g: np.ndarray, grad_b: np.ndarray, mask: np.ndarray) -> float:
    """Immerkaer (1996) fast noise estimate, on the flattest half of the ROI (every 2nd pixel: grid B,
    ``[1:-1:2, 1:-1:2]``; ``grad_b`` is |Sobel x| + |Sobel y| there). ``g``: a uint8 grey image as float32
    (whole numbers); ``mask``: the ROI, boolean."""
    r = np.abs(cv2.filter2D(g, -1, NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1:2, 1:-1:2])
    # grey levels strictly between the bounds: clipped pixels hide noise (``g`` holds whole numbers, so
    # inRange's inclusive bounds one step inside are the same test, several times cheaper on a contiguous copy)
    sel = cv2.inRange(np.ascontiguousarray(g[1:-1:2, 1:-1:2]), NOISE_MIN_GREY + 1, NOISE_MAX_GREY - 1) > 0
    roi = np.ascontiguousarray(mask[1:-1:2, 1:-1:2])
    if cv2.countNonZero(roi.view(np.uint8)) >= SKIN_MIN_PIXELS:
        sel &= roi
    if cv2.countNonZero(sel.view(np.uint8)) < NOISE_MIN_PIXELS:
        return 0.0
    # the flattest half: r where the gradient is at most its median
    flat = sel & (grad_b <= _quantile(grad_b[sel], 50))
    if not flat.any():
        return 0.0
    # |conv| of Gaussian noise sigma has std 6*sigma; mean |N(0, s)| = s*sqrt(2/pi).
    return float(cv2.mean(r, flat.view(np.uint8))[0] * np.sqrt(np.pi / 2.0) / 6.0)


def native_steps(gray_native: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """|horizontal| and |vertical| grey steps of the native crop (uint8), which _blockiness and _jpeg_grid both
    read, as the twin's graph shares them; None for a crop under BLOCKINESS_MIN_SIDE px (both measure 0)."""
    crop = native_crop(gray_native)
    if crop.shape[0] < BLOCKINESS_MIN_SIDE or crop.shape[1] < BLOCKINESS_MIN_SIDE:
        return None
    return cv2.absdiff(crop[:, 1:], crop[:, :-1]), cv2.absdiff(crop[1:, :], crop[:-1, :])


def _blockiness(steps: tuple[np.ndarray, np.ndarray] | None) -> float:
    """Strength of 8x8 JPEG block edges in the native crop's ``steps`` (``native_steps``): mean step across
    block borders minus the mean step elsewhere, relative to the mean step (0 for an unblocked image)."""
    if steps is None:
        return 0.0
    dx, dy = steps
    # float32 means of whole-number steps: their sums (OpenCV's, exact in float64) are exact in float32 (< 2**24),
    # so these are bit for bit numpy's float32 means, from exact integer sums
    on_x, on_y, all_x, all_y = (np.float32(cv2.sumElems(np.ascontiguousarray(a))[0]) / np.float32(a.size)
                                for a in (dx[:, JPEG_BLOCK - 1 :: JPEG_BLOCK], dy[JPEG_BLOCK - 1 :: JPEG_BLOCK, :], dx, dy))
    denom = all_x + all_y + 1.0
    return float(max(0.0, (on_x - all_x) + (on_y - all_y)) / denom)


def _grid_profile(p: np.ndarray) -> np.ndarray:
    """A column or row profile of mean |difference| for _jpeg_grid: minus its GRID_HIGHPASS px running
    mean (borders reflected, as BORDER_REFLECT_101), minus its 8 px-periodic part (the photo's own JPEG
    grid, whatever its phase: the mean of each phase over the whole blocks), then its GRID_SMOOTH px mean
    (circular)."""
    p = p.ravel().astype(np.float64)
    n = len(p)
    h = p - cv2.blur(p[None, :], (GRID_HIGHPASS, 1), borderType=cv2.BORDER_REFLECT_101).ravel()
    whole = n // JPEG_BLOCK * JPEG_BLOCK
    blocks = h[:whole].reshape(-1, JPEG_BLOCK)  # a view: the subtractions below change h in place
    periodic = blocks.sum(axis=0) / blocks.shape[0]  # each phase's mean (np.mean bit for bit, without its overhead)
    blocks -= periodic
    h[whole:] -= periodic[: n - whole]
    half = GRID_SMOOTH // 2
    wrapped = np.concatenate((h[-half:], h, h[:half]))  # circular: the profile continues at its other end
    total = wrapped[2 * half :]  # the sum of wrapped[i + j] over j = 2 * half .. 0, in that order
    for j in range(2 * half - 1, -1, -1):
        total = total + wrapped[j : j + n]
    return total / GRID_SMOOTH


def _autocovariance(h: np.ndarray, max_lag: int) -> np.ndarray:
    """sum(h[i] * h[i + lag]) / (n - lag) for lag 0..max_lag (no wrap-around): one correlation of ``h`` with
    itself zero-padded (a few times cheaper than an FFT at these lengths, equal to rounding)."""
    n = len(h)
    return np.correlate(np.concatenate((h, np.zeros(max_lag))), h, "valid") / (n - np.arange(max_lag + 1))


def _jpeg_grid(steps: tuple[np.ndarray, np.ndarray] | None) -> float:
    """Strength of a coarse block grid in the native crop (its ``native_steps``): the 8x8 JPEG blocks of a much smaller copy,
    grown back (period 8 / scale = GRID_MIN_PERIOD..GRID_MAX_PERIOD px). The crop's column and row profiles
    of mean |horizontal| and |vertical difference| (``_grid_profile``); their autocovariance relative to the
    squared mean step, averaged over x and y; the largest excess at a lag >= GRID_MIN_PERIOD over the
    largest (positive) value at every finer lag from GRID_LOW to lag - GRID_BELOW_GAP: a grid's multiples
    are as strong as its period, and texture's short correlations fall off. 0: no coarse grid."""
    if steps is None or min(steps[0].shape[0], steps[1].shape[1]) < GRID_MIN_SIDE:  # the crop's height, width
        return 0.0
    dx, dy = steps
    px = cv2.reduce(dx, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F)
    py = cv2.reduce(dy, 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F)
    max_lag = min(GRID_MAX_PERIOD, px.size // 3, py.size // 3)
    if max_lag < GRID_MIN_PERIOD:
        return 0.0
    r = (_autocovariance(_grid_profile(px), max_lag) / (float(px.mean()) + GRID_MEAN_FLOOR) ** 2
         + _autocovariance(_grid_profile(py), max_lag) / (float(py.mean()) + GRID_MEAN_FLOOR) ** 2) / 2.0
    below = np.maximum.accumulate(np.maximum(r[GRID_LOW:], 0.0))  # below[k]: the largest at lags GRID_LOW..GRID_LOW + k
    lags = np.arange(GRID_MIN_PERIOD, max_lag + 1)
    return float(max(0.0, np.max(r[lags] - below[lags - GRID_BELOW_GAP - GRID_LOW])))


def measure(rgb: np.ndarray, analysis_size: int = 320, skin_check=None, descriptor: bool = True) -> Measurements:
    """All raw measurements for one RGB uint8 image (any size >= 1x1). ``skin_check``
    (a not_skin.SkinCheck) adds its distance; ``descriptor=False`` skips the hand-made
    not-skin descriptor when the config does not use it (``gate.measure_for`` decides)."""
    h0, w0 = rgb.shape[:2]
    small = analysis_copy(rgb, analysis_size)
    h, w = small.shape[:2]
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    tiny = shrink(small, TINY_SIZE)  # for the colour decisions (shrink never enlarges)
    grey_photo = bool(
        cv2.absdiff(tiny[:, :, 0], tiny[:, :, 1]).max() <= GREY_TOLERANCE
        and cv2.absdiff(tiny[:, :, 2], tiny[:, :, 1]).max() <= GREY_TOLERANCE
    )
    skin_t = skin_mask(tiny)
    skin = cv2.resize(skin_t, (w, h), interpolation=cv2.INTER_NEAREST) if skin_t.shape[:2] != (h, w) else skin_t
    n_skin = cv2.countNonZero(skin)
    skin_fraction = n_skin / float(h * w)
    cy0, cy1, cx0, cx1 = h // 4, h - h // 4, w // 4, w - w // 4
    if n_skin >= SKIN_MIN_PIXELS:
        th, tw = skin_t.shape[:2]
        mo = cv2.moments(skin_t, binaryImage=True)  # exact whole-number sums: the mask pixels' mean row and column
        dy = (mo["m01"] / mo["m00"] + 0.5) / th - 0.5
        dx = (mo["m10"] / mo["m00"] + 0.5) / tw - 0.5
        roi_offset = float(np.hypot(dx, dy) / np.hypot(0.5, 0.5))
        # ROI: the skin region, closed so lesions, hairs and pen marks inside it count too.
        k = roi_close_kernel(min(th, tw))
        roi_t = cv2.morphologyEx(skin_t, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
        roi = (cv2.resize(roi_t, (w, h), interpolation=cv2.INTER_NEAREST) if roi_t.shape[:2] != (h, w) else roi_t) > 0
    else:
        roi_offset = 1.0
        roi = np.zeros((h, w), bool)
        roi[cy0:cy1, cx0:cx1] = True
        if not roi.any():
            roi[:] = True

    hsv = cv2.cvtColor(tiny, cv2.COLOR_RGB2HSV)
    hue = hsv[:, :, 0].astype(np.int16)  # 0..179
    sat = hsv[:, :, 1]
    val = hsv[:, :, 2]
    far_hue = (hue > FAR_HUE_RANGE[0]) & (hue < FAR_HUE_RANGE[1])  # greens, blues, purples: not skin, not lesion, not pen-free
    colourful_fraction = np.count_nonzero((sat > COLOURFUL_MIN_SAT) & (val > COLOURFUL_MIN_VAL) & far_hue) / far_hue.size

    g32 = gray.astype(np.float32)
    sx = cv2.Sobel(g32, cv2.CV_32F, 1, 0, ksize=3)
    sy = cv2.Sobel(g32, cv2.CV_32F, 0, 1, ksize=3)
    grad_b = np.abs(sx[1:-1:2, 1:-1:2]) + np.abs(sy[1:-1:2, 1:-1:2])  # grid B: the noise and detail checks'
    coloured = sat > COLOURED_MIN_SAT
    if np.count_nonzero(coloured) >= HUE_ENTROPY_MIN_PIXELS:
        hist = np.bincount((hue[coloured] // HUE_BIN_WIDTH).ravel(), minlength=HUE_ENTROPY_BINS)[:HUE_ENTROPY_BINS].astype(np.float64)
        p = hist / hist.sum()
        hue_entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    else:
        hue_entropy = 0.0
    g_reblurred = reblurred(g32)
    blur_h, blur_v = _edge_blur(g32, sx, sy, roi, gr=g_reblurred)
    shake = _shake_blur(g32, g_reblurred, sx, sy, roi)
    to_ref = REFERENCE_SIZE / float(max(h, w))  # resolution-independent: px at 600 px

    # Exposure and glare are judged on the ROI plus the central window: clipped highlights
    # drop out of the skin mask (no colour left), so the mask alone would hide them.
    judge = roi.copy()
    judge[cy0:cy1, cx0:cx1] = True
    judge_u8 = judge.view(np.uint8)
    luma_hist = cv2.calcHist([gray], [0], judge_u8, [256], [0, 256]).ravel().astype(np.int64)  # exact counts
    n_judged = int(luma_hist.sum())
    med, p95 = (_hist_percentile(luma_hist, q) for q in LUMA_PERCENTILES)
    bright_clip = float(luma_hist[CLIP_LEVEL:].sum()) / n_judged
    # Specular hot spots: every channel near saturation (white, not just bright skin).
    white_u8 = cv2.inRange(small, (GLARE_LEVEL,) * 3, (255, 255, 255))
    glare_fraction = float(cv2.countNonZero(cv2.bitwise_and(white_u8, judge_u8))) / n_judged
    glare_spots = _glare_spots(white_u8, gray, tiny)

    # the channels' float32 means: their whole-number sums are exact in float32 (< 2**24), so this is
    # bit for bit numpy's float32 mean, from OpenCV's sums (30x cheaper)
    means = np.array(cv2.sumElems(tiny)[:3], np.float32) / np.float32(tiny.shape[0] * tiny.shape[1])
    tot = float(means.sum()) + 1e-6
    cast_r, cast_g, cast_b = (float(means[i] / tot) for i in range(3))
    white_u, white_v = _white_point(tiny)

    noise = _noise_sigma(g32, grad_b, roi)
    detail_offset = _detail_offset(grad_b)
    if (h0, w0) == (h, w):
        gray_native = gray
    else:
        gray_native = cv2.cvtColor(np.ascontiguousarray(native_crop(rgb)), cv2.COLOR_RGB2GRAY)
    steps = native_steps(gray_native)
    blockiness = _blockiness(steps)
    jpeg_grid = _jpeg_grid(steps)

    return Measurements(
        width=int(w0),
        height=int(h0),
        analysis_long_side=int(max(h, w)),
        skin_fraction=float(skin_fraction),
        roi_offset=roi_offset,
        colourful_fraction=colourful_fraction,
        hue_entropy=hue_entropy,
        blur=float(max(blur_h, blur_v)) * to_ref,
        blur_h=float(blur_h) * to_ref,
        blur_v=float(blur_v) * to_ref,
        shake_blur=float(shake) * to_ref,
        luma_median=med,
        luma_p95=p95,
        bright_clip=bright_clip,
        glare_fraction=glare_fraction,
        glare_spots=glare_spots,
        cast_r=cast_r,
        cast_g=cast_g,
        cast_b=cast_b,
        noise_sigma=noise,
        blockiness=blockiness,
        jpeg_grid=jpeg_grid,
        grey=grey_photo,
        white_u=white_u,
        white_v=white_v,
        detail_offset=detail_offset,
        descriptor=describe(small) if descriptor else None,
        skin_check_distance=skin_check.distance(thumbnail(small)) if skin_check is not None else 0.0,
    )
