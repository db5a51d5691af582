"""Phone-capture failures, written from the physics of taking a photo with a phone.

These generators make the failures real phone photos have, to measure the photo-quality
gate on: they are written from optics, sensor and processing models, not from the gate's
detectors (and were written without reading them), so a detector cannot pass them by
construction. numpy + OpenCV only.

Every generator is ``(rgb uint8 HxWx3, params dict, rng) -> rgb uint8`` of the same shape,
deterministic for a given ``rng`` seed. Sizes are fractions of the photo's short side, so
a parameter means the same on a 300 px copy as on a 4000 px original. Light is mixed in
linear light (sRGB decoded), as the sensor sees it.

``CATEGORIES`` gives, per category, parameter ranges for "acceptable" photos and for
"retake" photos on the ``fit`` split, and other ranges (``held_out``) of one parameter
(``held_out_param``) that gate calibration must never use; ``sample(rgb, category, split,
rng)`` draws from them. The boundary between acceptable and retake is a judgement; the
common yardstick is the classifier's view: the model input is ~224 px across the photo, so
a change that is below one model-input pixel is acceptable and one that removes or hides
detail over several model-input pixels, or over much of the lesion (assumed near the
centre, about a third of the frame across), asks for a retake. Each category's
``boundary`` says what its line is based on; between the two ranges is a gap where no
sample is drawn, because there the right answer is not clear.

Every sample ends as the phone saves it: ``sample`` encodes the generator's output as a JPEG at a
quality drawn from ``SAVE_QUALITY`` (unless the generator ends with the phone's own processing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

MODEL_INPUT_PX = 224  # the classifier's input, across the photo: the scale the boundaries are judged at
SPLITS = ("fit", "held_out")
LABELS = ("acceptable", "retake")


# ------------------------------------------------------------------ light
def to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> linear light in [0, 1] (IEC 61966-2-1)."""
    c = rgb.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB uint8, clipping at the sensor's white (1.0)."""
    c = np.clip(linear, 0.0, 1.0)
    c = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)


def short_side(rgb: np.ndarray) -> int:
    return int(min(rgb.shape[:2]))


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality`` (OpenCV's libjpeg, 4:2:0 chroma)."""
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def _convolve_linear(rgb: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return to_srgb(cv2.filter2D(to_linear(rgb), -1, kernel, borderType=cv2.BORDER_REFLECT))


# ------------------------------------------------------------------ defocus
def disk_kernel(radius_px: float) -> np.ndarray:
    """The point-spread function of a defocused lens: a uniform disk (circle of confusion)
    of ``radius_px`` pixels, anti-aliased at its edge by 8x8 supersampling; sums to 1."""
    r = max(float(radius_px), 0.5)
    half = int(np.ceil(r)) + 1
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    c = np.arange(-half, half + 1, dtype=np.float64)
    ys = (c[:, None] + sub[None, :]).ravel()
    inside = (ys[:, None] ** 2 + ys[None, :] ** 2) <= r * r
    k = inside.reshape(2 * half + 1, 8, 2 * half + 1, 8).mean(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


def defocus(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: the phone focused in front of or behind the skin. Each scene point
    spreads into a disk (geometric optics: the circle of confusion).
    params: ``radius``, the disk's radius as a fraction of the photo's short side."""
    return _convolve_linear(rgb, disk_kernel(params["radius"] * short_side(rgb)))


# ------------------------------------------------------------------ motion
def motion_path(length_px: float, angle_deg: float, turn_deg: float = 0.0, samples: int = 400) -> np.ndarray:
    """Points (x, y) of a camera-shake path of arc length ``length_px``: it starts heading at
    ``angle_deg - turn_deg / 2`` and turns steadily to ``angle_deg + turn_deg / 2``
    (``turn_deg`` 0: a straight line). Centred on its midpoint."""
    s = np.linspace(0.0, 1.0, samples)
    heading = np.deg2rad(angle_deg - turn_deg / 2 + turn_deg * s)
    ds = length_px / (samples - 1)
    x = np.concatenate([[0.0], np.cumsum(np.cos(heading[1:]) * ds)])
    y = np.concatenate([[0.0], np.cumsum(-np.sin(heading[1:]) * ds)])  # image y points down; angle counter-clockwise
    return np.stack([x - (x.min() + x.max()) / 2, y - (y.min() + y.max()) / 2], axis=1)


def motion_kernel(length_px: float, angle_deg: float, turn_deg: float = 0.0) -> np.ndarray:
    """The blur kernel of a shake along ``motion_path``: the time the image spends at each
    offset during the exposure, at constant speed (bilinear splatting of the path); sums to 1."""
    pts = motion_path(max(length_px, 1e-3), angle_deg, turn_deg, samples=max(64, int(8 * length_px)))
    half = int(np.ceil(np.abs(pts).max())) + 1
    k = np.zeros((2 * half + 1, 2 * half + 1), np.float64)
    x, y = pts[:, 0] + half, pts[:, 1] + half
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    return (k / k.sum()).astype(np.float32)


def motion_blur(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Hand shake during the exposure: the image moves along a path (straight, or curved
    when the wrist turns) and the sensor integrates it.
    params: ``length`` (path length, fraction of the short side), ``angle`` (degrees,
    counter-clockwise from the x axis), ``turn`` (degrees the heading turns along the path; 0 straight)."""
    n = short_side(rgb)
    return _convolve_linear(rgb, motion_kernel(params["length"] * n, params["angle"], params.get("turn", 0.0)))


# ------------------------------------------------------------------ low light
FULL_WELL_E = 6000.0  # electrons a small phone pixel holds at the brightest white (base ISO)
READ_NOISE_E = 3.0  # electrons rms of the readout at high gain


def low_light(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """A dim room: the sensor collects ``2**-stops`` of the light of a good exposure, the
    phone raises the gain by ``2**stops`` to restore brightness, and with it the noise:
    photon shot noise (Poisson in electrons, ``FULL_WELL_E`` at white) and read noise
    (``READ_NOISE_E`` rms). Then the phone's processing: a denoiser whose strength follows
    the noise (non-local means), an unsharp-mask sharpening, and JPEG at ``jpeg_quality``.
    params: ``stops`` (under-exposure in stops, EV), ``jpeg_quality`` (0-100)."""
    gain = 2.0 ** params["stops"]
    electrons_at_white = FULL_WELL_E / gain
    lin = to_linear(rgb).astype(np.float64)
    e = rng.poisson(lin * electrons_at_white).astype(np.float64) + rng.normal(0.0, READ_NOISE_E, lin.shape)
    noisy = to_srgb((e / electrons_at_white).astype(np.float32))
    # noise of mid-grey in 8-bit sRGB after gain: what the phone's denoiser is tuned to remove
    mid_e = 0.18 * electrons_at_white
    sigma_lin = np.sqrt(mid_e + READ_NOISE_E**2) / electrons_at_white
    sigma_8bit = float(sigma_lin * 255.0 * 2.2 * 0.18 ** (1 / 2.2 - 1) / 2.2)  # slope of the sRGB curve at mid-grey
    h = float(np.clip(0.8 * sigma_8bit, 3.0, 40.0))
    den = cv2.fastNlMeansDenoisingColored(noisy[:, :, ::-1].copy(), None, h, h, 5, 11)[:, :, ::-1]
    blur = cv2.GaussianBlur(den.astype(np.float32), (0, 0), 1.2)
    sharp = np.clip(den + 0.6 * (den - blur), 0, 255).astype(np.uint8)
    return jpeg(sharp, params["jpeg_quality"])


# ------------------------------------------------------------------ over-exposure
def over_exposure(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Too much light (a metering error on pale skin, a bright window, the flash close up):
    linear light multiplied by ``2**stops``; everything brighter than the sensor's white
    clips to it, losing the detail there.
    params: ``stops`` (over-exposure, EV)."""
    return to_srgb(to_linear(rgb) * np.float32(2.0 ** params["stops"]))


# ------------------------------------------------------------------ white balance
def planck_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 chromaticity of a black body at ``kelvin`` (Kang et al. 2002 cubic fit of
    the Planckian locus, 1667-25000 K)."""
    t = float(np.clip(kelvin, 1667.0, 25000.0))
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return x, y


_XYZ_TO_LINEAR_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def illuminant_rgb(kelvin: float) -> np.ndarray:
    """Linear-sRGB colour of a black-body illuminant at ``kelvin``, green = 1."""
    x, y = planck_xy(kelvin)
    rgb = _XYZ_TO_LINEAR_SRGB @ np.array([x / y, 1.0, (1 - x - y) / y])
    return rgb / rgb[1]


def white_balance(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """The phone's auto white balance assumed the wrong light. The scene is lit by a black
    body at ``kelvin`` (tungsten ~2700 K, fluorescent ~4000 K, daylight ~5500 K, shade
    ~8000+ K); the phone divides by its assumed illuminant ``assumed_kelvin`` (von Kries, per
    channel in linear sRGB). The photo is taken as correctly balanced, so the cast is the
    ratio of the two illuminants. ``tint`` adds a green (+) / magenta (-) error off the
    black-body locus (fluorescent and LED light): the green gain is ``1 + tint``.
    params: ``kelvin``, ``assumed_kelvin``, ``tint``."""
    gains = illuminant_rgb(params["kelvin"]) / illuminant_rgb(params.get("assumed_kelvin", ASSUMED_KELVIN))
    gains = gains * np.array([1.0, 1.0 + params.get("tint", 0.0), 1.0])
    gains = gains / (gains @ np.array([0.2126, 0.7152, 0.0722]))  # the phone's exposure keeps the brightness
    return to_srgb(to_linear(rgb) * gains.astype(np.float32))


ASSUMED_KELVIN = 5500.0  # the phone's white balance when it leans to daylight


def mired_error(kelvin: float, assumed_kelvin: float = ASSUMED_KELVIN) -> float:
    """The white-balance error in mireds (1e6 / K): the perceptually even colour-temperature scale."""
    return 1e6 / kelvin - 1e6 / assumed_kelvin


# ------------------------------------------------------------------ flash glare
def flash_glare(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """The flash reflected off moist or oily skin: ``count`` specular lobes (the mirror-like
    reflection of a small light source, Gaussian in angle, so Gaussian on the image) of
    radius ``radius`` (fraction of the short side, the lobe's 1/e^2 radius), each peaking
    at ``strength`` times the sensor's white, added in linear light in the light's colour
    (white) and clipped: saturated near-white blobs. Placed in the middle half of the photo
    (the lesion, facing the phone), apart from each other.
    params: ``count`` (int), ``radius``, ``strength``."""
    h, w = rgb.shape[:2]
    r = max(params["radius"] * short_side(rgb), 1.0)
    lin = to_linear(rgb)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    centres: list[tuple[float, float]] = []
    for _ in range(int(params["count"])):
        for _attempt in range(200):  # apart: each lobe stays its own blob
            cx, cy = rng.uniform(w * 0.25, w * 0.75), rng.uniform(h * 0.25, h * 0.75)
            if all(np.hypot(cx - x, cy - y) > 3.2 * r for x, y in centres):
                break
        centres.append((cx, cy))
        lobe = np.exp(-2.0 * ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)) * params["strength"]
        lin = lin + lobe[:, :, None]
    return to_srgb(lin)


# ------------------------------------------------------------------ a wider scene
def _skin_colour(rgb: np.ndarray) -> np.ndarray:
    """The skin around the lesion: the median of the photo's outer border."""
    b = max(2, short_side(rgb) // 20)
    ring = np.concatenate([rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3), rgb[:, :b].reshape(-1, 3), rgb[:, -b:].reshape(-1, 3)])
    return np.median(ring, axis=0).astype(np.float32)


def _noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.normal(0.0, 1.0, shape).astype(np.float32)
    return cv2.GaussianBlur(n, (0, 0), sigma) * sigma if sigma > 0 else n


def wider_scene(h: int, w: int, skin_rgb: np.ndarray, rng: np.random.Generator, limb_box=None) -> np.ndarray:
    """A synthetic room around a patient, ``h`` x ``w`` uint8 RGB: a wooden or tiled floor
    at the bottom, a piece of furniture (sofa, bed, chair: a textured block with seams), a
    piece of clothing (woven fabric with folds) and a bare limb in ``skin_rgb`` (pores and
    shading) crossing the frame; ``limb_box`` (x0, y0, x1, y1) is an area the limb must cover."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    # wall
    img[:] = rng.uniform(150, 235, 3)
    img += _noise((h, w), 6.0, rng)[:, :, None] * 2
    # floor: planks (wood grain) or tiles (grout lines)
    horizon = rng.uniform(0.55, 0.8) * h
    floor = yy > horizon
    base = rng.uniform([90, 55, 25], [190, 130, 80]) if rng.random() < 0.6 else rng.uniform(120, 220, 3)
    if rng.random() < 0.5:
        plank = max(4.0, w / rng.uniform(6, 14))
        grain = np.sin(xx / plank * np.pi) ** 8 * -40 + _noise((h, w), 1.5, rng) * 6
        f = base + grain[:, :, None] * np.array([1.0, 0.8, 0.6])
    else:
        tile = max(4.0, w / rng.uniform(5, 10))
        grout = ((xx % tile) < 2) | ((yy % tile) < 2)
        f = base + _noise((h, w), 1.0, rng)[:, :, None] * 4
        f[grout] = base * 0.6
    img[floor] = f[floor]
    # furniture: a block from the floor up, textured, with a seam
    fx0, fx1 = sorted(rng.uniform(0, w, 2))
    fy0 = rng.uniform(0.2, 0.5) * h
    furn = (xx >= fx0) & (xx <= fx1 + w * 0.2) & (yy >= fy0) & (yy <= horizon + 0.1 * h)
    fc = rng.uniform(30, 200, 3)
    tex = fc + _noise((h, w), 2.0, rng)[:, :, None] * 8
    tex[(np.abs(yy - (fy0 + horizon) / 2) < 1.5)] *= 0.6  # a seam
    img[furn] = tex[furn]
    # clothing: woven fabric with soft folds, a wide band the limb comes out of
    cc = rng.uniform(20, 230, 3)
    period = rng.uniform(3, 6)
    weave = (np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)) * 10
    folds = np.sin((xx * 0.7 + yy) / max(8.0, w / rng.uniform(4, 9)) + rng.uniform(0, 6.3)) * 25
    cloth = cc + (weave + folds + _noise((h, w), 1.0, rng) * 4)[:, :, None]
    cy0 = rng.uniform(0.1, 0.35) * h
    cloth_mask = (yy > cy0) & (yy < cy0 + rng.uniform(0.35, 0.6) * h) & (xx < rng.uniform(0.3, 0.6) * w)
    img[cloth_mask] = cloth[cloth_mask]
    # the limb: a rounded band of skin through limb_box (or the centre), shaded across its width
    x0, y0, x1, y1 = limb_box if limb_box is not None else (w * 0.35, h * 0.35, w * 0.65, h * 0.65)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_width = 0.5 * np.hypot(x1 - x0, y1 - y0) * rng.uniform(1.05, 1.3) + 2
    angle = rng.uniform(-0.6, 0.6)  # radians from horizontal
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    limb = (np.abs(across) < half_width) & (along > -rng.uniform(0.6, 1.2) * w) & (along < rng.uniform(0.6, 1.2) * w)
    shade = 1.0 - 0.35 * (across / half_width) ** 2
    pores = _noise((h, w), 0.8, rng) * 3
    skin = skin_rgb * np.clip(shade, 0.5, 1.0)[:, :, None] + pores[:, :, None]
    img[limb] = skin[limb]
    return np.clip(img, 0, 255).astype(np.uint8)


def _paste(scene: np.ndarray, photo: np.ndarray, x: int, y: int, feather_px: float) -> np.ndarray:
    """``photo`` onto ``scene`` with its top-left at (x, y) (may hang over the edges), the
    seam blended over ``feather_px`` so the patch continues the limb's skin."""
    H, W = scene.shape[:2]
    h, w = photo.shape[:2]
    sx0, sy0, sx1, sy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if sx0 >= sx1 or sy0 >= sy1:
        return scene
    px0, py0 = sx0 - x, sy0 - y
    part = photo[py0 : py0 + sy1 - sy0, px0 : px0 + sx1 - sx0].astype(np.float32)
    mask = np.ones((h, w), np.float32)
    if feather_px > 0:
        ramp_y = np.clip((np.minimum(np.arange(h), h - 1 - np.arange(h)) + 0.5) / feather_px, 0, 1)
        ramp_x = np.clip((np.minimum(np.arange(w), w - 1 - np.arange(w)) + 0.5) / feather_px, 0, 1)
        mask = np.minimum(ramp_y[:, None], ramp_x[None, :])
    m = mask[py0 : py0 + sy1 - sy0, px0 : px0 + sx1 - sx0, None]
    out = scene.astype(np.float32)
    out[sy0:sy1, sx0:sx1] = m * part + (1 - m) * out[sy0:sy1, sx0:sx1]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def distance(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Taken from too far away: the photo's content (the lesion and its skin) becomes
    ``fraction`` of the frame's width and height (the camera ~1/fraction times farther back,
    pinhole projection), inside a generated wider scene of skin, clothes, furniture and floor.
    The frame keeps the input's size; the patch's centre is moved off the frame centre by up
    to ``jitter`` of the frame (people do not aim exactly).
    params: ``fraction`` (0-1], ``jitter``."""
    H, W = rgb.shape[:2]
    w, h = max(1, int(round(W * params["fraction"]))), max(1, int(round(H * params["fraction"])))
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    j = params.get("jitter", 0.0)
    cx = W / 2 + rng.uniform(-j, j) * W
    cy = H / 2 + rng.uniform(-j, j) * H
    x, y = int(round(np.clip(cx - w / 2, 0, W - w))), int(round(np.clip(cy - h / 2, 0, H - h)))
    scene = wider_scene(H, W, _skin_colour(rgb), rng, limb_box=(x, y, x + w, y + h))
    return _paste(scene, small, x, y, feather_px=max(1.0, 0.04 * min(w, h)))


def off_centre(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """The lesion aimed at off the centre: the frame moves by ``shift`` of its size in the
    direction ``direction`` (degrees, counter-clockwise from +x), so the lesion moves the
    other way, toward and past the edge; the uncovered side shows more of the body and room
    (the generated wider scene, its limb continuing the photo's skin).
    params: ``shift`` (fraction of the frame), ``direction`` (degrees)."""
    H, W = rgb.shape[:2]
    a = np.deg2rad(params["direction"])
    dx, dy = -params["shift"] * W * np.cos(a), params["shift"] * H * np.sin(a)
    x, y = int(round(dx)), int(round(dy))
    scene = wider_scene(H, W, _skin_colour(rgb), rng, limb_box=(max(x, 0), max(y, 0), min(x + W, W), min(y + H, H)))
    return _paste(scene, rgb, x, y, feather_px=max(1.0, 0.03 * short_side(rgb)))


# ------------------------------------------------------------------ occlusion
def _finger(mask_img: np.ndarray, colour_img: np.ndarray, H: int, W: int, width: float, reach: float,
            skin: np.ndarray, rng: np.random.Generator) -> None:
    """A finger (or thumb, when wide) coming in from an edge toward the centre: a capsule
    of ``width`` px, its tip ``reach`` of the way to the centre, shaded as a cylinder, with a nail."""
    side = int(rng.integers(4))
    edge = np.array({0: (rng.uniform(0.2, 0.8) * W, 0.0), 1: (W, rng.uniform(0.2, 0.8) * H),
                     2: (rng.uniform(0.2, 0.8) * W, H), 3: (0.0, rng.uniform(0.2, 0.8) * H)}[side])
    centre = np.array([W / 2, H / 2])
    inward = (centre - edge) / np.linalg.norm(centre - edge)
    start = edge - inward * 2 * width  # the hand is outside the frame
    tip = edge + (centre - edge) * reach + rng.normal(0, 0.02, 2) * [W, H]
    # the finger's own skin: a little redder and darker or lighter than the patient's (another person, or the patient's hand)
    tone = np.clip(skin * rng.uniform(0.85, 1.1) * np.array([1.05, 0.97, 0.95]), 0, 255)
    for k in range(7, 0, -1):  # concentric capsules, darker toward the edge: cylinder shading
        t = k / 7.0
        c = tuple(float(v) for v in tone * (0.7 + 0.3 * t))
        cv2.line(colour_img, tuple(int(v) for v in start), tuple(int(v) for v in tip), c, max(1, int(width * t)), cv2.LINE_AA)
    cv2.line(mask_img, tuple(int(v) for v in start), tuple(int(v) for v in tip), 1.0, max(1, int(width)), cv2.LINE_AA)
    cv2.circle(mask_img, tuple(int(v) for v in tip), max(1, int(width / 2)), 1.0, -1, cv2.LINE_AA)
    cv2.circle(colour_img, tuple(int(v) for v in tip), max(1, int(width / 2)), tuple(float(v) for v in tone * 0.9), -1, cv2.LINE_AA)
    d = (tip - start) / (np.linalg.norm(tip - start) + 1e-6)
    nail = tip - d * width * 0.35
    cv2.ellipse(colour_img, (tuple(float(v) for v in nail), (width * 0.55, width * 0.7), float(np.degrees(np.arctan2(d[1], d[0]))) + 90),
                tuple(float(v) for v in np.clip(tone * 1.15 + 10, 0, 255)), -1, cv2.LINE_AA)


def occlusion(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Something between the phone and the lesion: ``kind`` "finger" (holding the skin
    taut, ~``size`` of the short side wide), "thumb" (wider, shorter), "cloth" (a sleeve or
    hem: woven fabric with a soft folded edge), or "hair" (``size`` * 100 dark strands,
    curved). Fingers, thumbs and cloth come in from an edge and reach ``reach`` of the way
    to the centre (1: over the centre, where the lesion is); hair strands cross the frame
    within ``reach`` of the edge (1: anywhere, over the lesion too).
    params: ``kind``, ``size``, ``reach``."""
    H, W = rgb.shape[:2]
    n = short_side(rgb)
    kind, reach = params["kind"], params["reach"]
    skin = _skin_colour(rgb)
    out = rgb.astype(np.float32)
    mask = np.zeros((H, W), np.float32)
    layer = np.zeros((H, W, 3), np.float32)
    if kind in ("finger", "thumb"):
        width = params["size"] * n * (1.6 if kind == "thumb" else 1.0)
        _finger(mask, layer, H, W, width, reach * (0.8 if kind == "thumb" else 1.0), skin, rng)
        mask = cv2.GaussianBlur(mask, (0, 0), max(0.6, width * 0.04))  # out of focus: close to the lens
    elif kind == "cloth":
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[:H, :W].astype(np.float32)
        ux, uy = np.cos(a), np.sin(a)
        # distance into the frame from the edge the cloth enters at, in units of half the frame
        proj = ((xx - W / 2) * ux + (yy - H / 2) * uy) / (0.5 * (abs(ux) * W + abs(uy) * H))
        wave = 0.06 * np.sin(((xx * -uy + yy * ux) / n) * rng.uniform(6, 14) + rng.uniform(0, 6.3))
        mask = ((proj + wave) > (1.0 - reach)).astype(np.float32)
        mask = cv2.GaussianBlur(mask, (0, 0), max(0.8, 0.01 * n))
        cc = rng.uniform(20, 230, 3)
        period = max(2.0, n / rng.uniform(60, 120))
        weave = np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period) * 12
        folds = np.sin(proj * rng.uniform(8, 16)) * 20
        layer = cc + (weave + folds)[:, :, None]
    elif kind == "hair":
        strands = max(1, int(round(params["size"] * 100)))
        for _ in range(strands):
            # a strand within `reach` of an edge: its middle between the edge and that depth
            horizontal = rng.random() < 0.5
            depth = rng.uniform(0, reach) * 0.5
            pos = depth if rng.random() < 0.5 else 1 - depth
            t = np.linspace(0, 1, 40)
            bend = rng.uniform(-0.15, 0.15) * np.sin(np.pi * t)
            along = t * rng.uniform(0.5, 1.0) + rng.uniform(0, 0.3)
            across = pos + bend + rng.normal(0, 0.01)
            x, y = (along * W, across * H) if horizontal else (across * W, along * H)
            pts = np.stack([x, y], 1).astype(np.int32)
            thick = max(1, int(round(0.006 * n * rng.uniform(0.7, 1.4))))
            cv2.polylines(mask, [pts], False, 1.0, thick, cv2.LINE_AA)
        layer[:] = rng.uniform(15, 70) * np.array([1.0, 0.85, 0.75])
    else:
        raise ValueError(f"unknown occluder kind {kind!r}")
    m = np.clip(mask, 0, 1)[:, :, None]
    return np.clip(np.round(m * layer + (1 - m) * out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ heavy JPEG and resampling
def jpeg_resample(rgb: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """A photo passed through a messaging app or a web form: downsampled to ``scale`` of its
    size (area averaging, discarding detail above the new Nyquist limit), re-encoded as
    JPEG at ``quality`` (8x8 block quantisation, 4:2:0 chroma), and scaled back up by the
    viewer (bilinear).
    params: ``scale`` (0-1], ``quality`` (JPEG quality 1-100)."""
    H, W = rgb.shape[:2]
    w, h = max(8, int(round(W * params["scale"]))), max(8, int(round(H * params["scale"])))
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != (W, H) else rgb
    small = jpeg(small, int(params["quality"]))
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR) if (w, h) != (W, H) else small


# ------------------------------------------------------------------ the phone saves a JPEG
# the quality a phone camera saves at (the low-light pipeline draws its own, from this range on the fit
# split): every capture of a failure is a JPEG, as the photos the failures are made from are; optics applied
# to those (a blur, a shift, a wider view scaled down) smooth their 8x8 blocks away, which left the failures
# the only photos without any
SAVE_QUALITY = (85, 95)


# ------------------------------------------------------------------ the table
Intervals = list  # [(lo, hi), ...] numbers (ints: inclusive whole numbers) or [str, ...] choices


@dataclass(frozen=True)
class Category:
    """One kind of capture failure: its generator, the parameter ranges per split and label,
    the parameter whose held-out ranges are apart from the fit ones, and what the line
    between acceptable and retake is based on."""

    generate: Callable[[np.ndarray, dict, np.random.Generator], np.ndarray]
    fit: dict[str, dict[str, Intervals]]  # label -> param -> intervals
    held_out: dict[str, dict[str, Intervals]]
    held_out_param: str
    boundary: str
    flagged_is_enough: bool = False  # the target is "flagged" (warn or reject), not "rejected"
    saves_jpeg: bool = False  # the generator ends with the phone's own processing and JPEG (else sample saves one)


def _px(frac: float) -> str:
    return f"{frac * MODEL_INPUT_PX:.1f}"


CATEGORIES: dict[str, Category] = {
    "defocus": Category(
        defocus,
        fit={"acceptable": {"radius": [(0.0005, 0.002)]}, "retake": {"radius": [(0.012, 0.035)]}},
        held_out={"acceptable": {"radius": [(0.002, 0.003)]}, "retake": {"radius": [(0.035, 0.06)]}},
        held_out_param="radius",
        boundary=f"disk radius at the model input: acceptable <= {_px(0.003)} px (under one pixel), "
                 f"retake >= {_px(0.012)} px (detail of a few model pixels gone)",
    ),
    "motion_blur": Category(
        motion_blur,
        fit={"acceptable": {"length": [(0.001, 0.004)], "angle": [(-45.0, 45.0)], "turn": [(0.0, 0.0), (20.0, 120.0)]},
             "retake": {"length": [(0.02, 0.07)], "angle": [(-45.0, 45.0)], "turn": [(0.0, 0.0), (20.0, 120.0)]}},
        held_out={"acceptable": {"length": [(0.001, 0.004)], "angle": [(45.0, 135.0)], "turn": [(0.0, 0.0), (20.0, 120.0)]},
                  "retake": {"length": [(0.02, 0.07)], "angle": [(45.0, 135.0)], "turn": [(0.0, 0.0), (20.0, 120.0)]}},
        held_out_param="angle",
        boundary=f"shake path length at the model input: acceptable <= {_px(0.004)} px, retake >= {_px(0.02)} px; "
                 "held out: near-vertical shakes (45-135 degrees) where fit has near-horizontal ones",
    ),
    "low_light": Category(
        low_light,
        fit={"acceptable": {"stops": [(0.5, 1.8)], "jpeg_quality": [SAVE_QUALITY]},
             "retake": {"stops": [(5.2, 6.5)], "jpeg_quality": [SAVE_QUALITY]}},
        held_out={"acceptable": {"stops": [(1.8, 2.2)], "jpeg_quality": [(80, 85)]},
                  "retake": {"stops": [(6.5, 7.5)], "jpeg_quality": [(80, 85)]}},
        held_out_param="stops",
        boundary=f"signal-to-noise ratio of mid-grey before the phone's denoiser ({FULL_WELL_E:.0f} e- at white, "
                 f"{READ_NOISE_E:.0f} e- read noise): acceptable >= ~15 (<= 2.2 stops under), retake <= ~5 "
                 "(>= 5.2 stops), where the denoiser wipes out skin texture",
        saves_jpeg=True,
    ),
    "over_exposure": Category(
        over_exposure,
        fit={"acceptable": {"stops": [(0.0, 0.4)]}, "retake": {"stops": [(1.6, 3.0)]}},
        held_out={"acceptable": {"stops": [(0.4, 0.6)]}, "retake": {"stops": [(3.0, 4.0)]}},
        held_out_param="stops",
        boundary="exposure error: acceptable <= 0.6 stop (skin, linear ~0.2-0.5, stays below white); retake >= 1.6 "
                 "stops (the lighter half of typical skin clips: lesion borders and pigment lost)",
    ),
    "white_balance": Category(
        white_balance,
        fit={"acceptable": {"kelvin": [(4900.0, 6400.0)], "tint": [(-0.02, 0.02)]},
             "retake": {"kelvin": [(2500.0, 3300.0), (13000.0, 20000.0)], "tint": [(-0.02, 0.02)]}},
        held_out={"acceptable": {"kelvin": [(4600.0, 4900.0), (6400.0, 7000.0)], "tint": [(0.02, 0.04)]},
                  "retake": {"kelvin": [(2000.0, 2500.0), (3300.0, 3500.0), (20000.0, 25000.0)], "tint": [(0.04, 0.10)]}},
        held_out_param="kelvin",
        boundary=f"error from the phone's assumed {ASSUMED_KELVIN:.0f} K in mireds: acceptable within ~+-30 "
                 "(a cast people do not notice), retake beyond ~+-100 (tungsten below 3500 K, deep shade above "
                 "13000 K: redness and pigment change hue)",
        flagged_is_enough=True,
    ),
    "flash_glare": Category(
        flash_glare,
        fit={"acceptable": {"count": [(0, 1)], "radius": [(0.002, 0.005)], "strength": [(0.2, 0.45)]},
             "retake": {"count": [(1, 4)], "radius": [(0.03, 0.07)], "strength": [(1.5, 4.0)]}},
        held_out={"acceptable": {"count": [(2, 3)], "radius": [(0.001, 0.002)], "strength": [(0.2, 0.45)]},
                  "retake": {"count": [(5, 8)], "radius": [(0.07, 0.1)], "strength": [(1.5, 4.0)]}},
        held_out_param="radius",
        boundary=f"glare lobe radius at the model input: acceptable <= {_px(0.005)} px and not saturating (skin sheen), "
                 f"retake >= {_px(0.03)} px saturated blobs (lesion surface hidden under white)",
        flagged_is_enough=True,
    ),
    "distance": Category(
        distance,
        fit={"acceptable": {"fraction": [(0.85, 0.97)], "jitter": [(0.0, 0.03)]},
             "retake": {"fraction": [(0.25, 0.4)], "jitter": [(0.0, 0.15)]}},
        held_out={"acceptable": {"fraction": [(0.8, 0.85)], "jitter": [(0.0, 0.03)]},
                  "retake": {"fraction": [(0.12, 0.25)], "jitter": [(0.0, 0.15)]}},
        held_out_param="fraction",
        boundary=f"the lesion (about a third of the original photo) at the model input: acceptable >= "
                 f"{MODEL_INPUT_PX * 0.8 / 3:.0f} px across, retake <= {MODEL_INPUT_PX * 0.4 / 3:.0f} px",
    ),
    "off_centre": Category(
        off_centre,
        fit={"acceptable": {"shift": [(0.0, 0.08)], "direction": [(-30.0, 30.0), (60.0, 120.0), (150.0, 210.0), (240.0, 300.0)]},
             "retake": {"shift": [(0.35, 0.5)], "direction": [(-30.0, 30.0), (60.0, 120.0), (150.0, 210.0), (240.0, 300.0)]}},
        held_out={"acceptable": {"shift": [(0.0, 0.08)], "direction": [(30.0, 60.0), (120.0, 150.0), (210.0, 240.0), (300.0, 330.0)]},
                  "retake": {"shift": [(0.35, 0.5)], "direction": [(30.0, 60.0), (120.0, 150.0), (210.0, 240.0), (300.0, 330.0)]}},
        held_out_param="direction",
        boundary="shift of the framing: acceptable <= 0.08 of the frame (the lesion stays whole near the centre), retake "
                 ">= 0.35 (a centred lesion a third of the frame across is at or over the edge); held out: diagonal shifts",
    ),
    "occlusion": Category(
        occlusion,
        fit={"acceptable": {"kind": ["finger", "cloth"], "size": [(0.08, 0.14)], "reach": [(0.05, 0.2)]},
             "retake": {"kind": ["finger", "cloth"], "size": [(0.12, 0.2)], "reach": [(0.85, 1.1)]}},
        held_out={"acceptable": {"kind": ["thumb", "hair"], "size": [(0.08, 0.14)], "reach": [(0.05, 0.2)]},
                  "retake": {"kind": ["thumb", "hair"], "size": [(0.2, 0.35)], "reach": [(0.85, 1.1)]}},
        held_out_param="kind",
        boundary="how far the occluder reaches toward the centre (the lesion): acceptable <= 0.2 of the way (the outer "
                 "tenth of the frame), retake >= 0.85 (over the lesion); held out: thumbs and hair where fit has fingers and cloth",
    ),
    "jpeg_resample": Category(
        jpeg_resample,
        fit={"acceptable": {"scale": [(0.8, 1.0)], "quality": [(80, 95)]},
             "retake": {"scale": [(0.2, 0.35)], "quality": [(12, 25)]}},
        held_out={"acceptable": {"scale": [(0.8, 1.0)], "quality": [(70, 79)]},
                  "retake": {"scale": [(0.2, 0.35)], "quality": [(3, 11)]}},
        held_out_param="quality",
        boundary=f"detail kept at the model input: acceptable scale >= 0.8 (>= {MODEL_INPUT_PX * 0.8:.0f} px of real "
                 f"detail) at quality >= 70, retake scale <= 0.35 (<= {MODEL_INPUT_PX * 0.35:.0f} px) at quality <= 25 (blocking)",
    ),
}


def ranges(category: str, split: str, label: str) -> dict[str, Intervals]:
    """The parameter ranges of ``category`` for ``split`` ("fit" / "held_out") and ``label``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown capture category {category!r}; known: {', '.join(CATEGORIES)}")
    if split not in SPLITS or label not in LABELS:
        raise ValueError(f"split must be one of {SPLITS} and label one of {LABELS}, not {split!r}, {label!r}")
    c = CATEGORIES[category]
    return (c.fit if split == "fit" else c.held_out)[label]


def draw(intervals: Intervals, rng: np.random.Generator):
    """One value: a choice among strings, or uniform over the union of the intervals (each
    interval weighted by its length; whole numbers when both ends are ints, ends included)."""
    if all(isinstance(v, str) for v in intervals):
        return intervals[int(rng.integers(len(intervals)))]
    ints = all(isinstance(lo, int) and isinstance(hi, int) for lo, hi in intervals)
    widths = np.array([(hi - lo + 1) if ints else (hi - lo) for lo, hi in intervals], np.float64)
    if widths.sum() <= 0:  # only single points: pick one
        lo, _ = intervals[int(rng.integers(len(intervals)))]
        return lo
    # a zero-width interval (a single value, e.g. "straight") gets the weight of the mean width
    widths = np.where(widths <= 0, widths[widths > 0].mean(), widths)
    i = int(rng.choice(len(intervals), p=widths / widths.sum()))
    lo, hi = intervals[i]
    if ints:
        return int(rng.integers(lo, hi + 1))
    return float(rng.uniform(lo, hi))


def sample(rgb: np.ndarray, category: str, split: str, rng: np.random.Generator,
           label: str | None = None) -> tuple[np.ndarray, str, dict]:
    """Apply ``category`` to ``rgb`` with parameters drawn from ``split``'s ranges; the label
    ("retake" / "acceptable") is drawn evenly unless given. Returns (image, label, params)."""
    if label is None:
        label = LABELS[int(rng.integers(2))]
    params = {name: draw(iv, rng) for name, iv in ranges(category, split, label).items()}
    c = CATEGORIES[category]
    img = c.generate(rgb, params, rng)
    if c.saves_jpeg:
        return img, label, params
    quality = int(rng.integers(SAVE_QUALITY[0], SAVE_QUALITY[1] + 1))
    return jpeg(img, quality), label, {**params, "save_quality": quality}
