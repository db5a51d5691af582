"""Controlled degradations for the gate evaluation (numpy + OpenCV, deterministic per seed).

Strengths are given "at 600 px": a blur sigma of 2 means 2 px on a photo whose longer side is
600 px, scaled in proportion for other sizes, so every photo gets the same *relative* damage.
Exposure gains multiply the 8-bit code values (then clip), like a brightness slider.
"""
from __future__ import annotations

import cv2
import numpy as np

REFERENCE_SIZE = 600

# name -> (list of severities, the gate check that should catch it, severities that the
# acceptance criterion counts as "clearly bad" for the AUC)
DEGRADATIONS: dict[str, dict] = {
    "gaussian_blur": {"levels": [1.0, 2.0, 3.0, 5.0], "check": "sharpness", "auc_levels": [2.0, 3.0, 5.0]},
    "motion_blur": {"levels": [5, 9, 15, 25], "check": "sharpness", "auc_levels": [9, 15, 25]},
    "underexpose": {"levels": [0.6, 0.4, 0.25], "check": "exposure", "auc_levels": [0.4, 0.25]},
    "overexpose": {"levels": [1.6, 2.2, 3.0], "check": "exposure", "auc_levels": [2.2, 3.0]},
    "glare": {"levels": [0.005, 0.02, 0.05], "check": "glare", "auc_levels": [0.02, 0.05]},
    "colour_cast": {"levels": [0.1, 0.2, 0.35], "check": "colour_cast", "auc_levels": [0.2, 0.35]},
    "noise": {"levels": [5.0, 10.0, 20.0, 35.0], "check": "noise", "auc_levels": [20.0, 35.0]},
    "jpeg": {"levels": [30, 15, 8], "check": "noise", "auc_levels": [15, 8]},
    "downscale": {"levels": [256, 192, 128, 96], "check": "resolution", "auc_levels": [192, 128, 96]},
    "off_centre": {"levels": [0.25, 0.35, 0.45], "check": "framing", "auc_levels": [0.35, 0.45]},
    "zoom_out": {"levels": [0.6, 0.4, 0.25], "check": "framing", "auc_levels": [0.4, 0.25]},
}


def _scale(img: np.ndarray) -> float:
    return max(img.shape[:2]) / float(REFERENCE_SIZE)


def gaussian_blur(img: np.ndarray, sigma: float, rng=None) -> np.ndarray:
    s = sigma * _scale(img)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)


def motion_blur(img: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    n = max(3, int(round(length * _scale(img))) | 1)
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    angle = float(rng.uniform(0, 180))
    m = cv2.getRotationMatrix2D(((n - 1) / 2.0, (n - 1) / 2.0), angle, 1.0)
    k = cv2.warpAffine(k, m, (n, n))
    k /= max(k.sum(), 1e-6)
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)


def gain(img: np.ndarray, g: float, rng=None) -> np.ndarray:
    return np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)


underexpose = gain
overexpose = gain


def glare(img: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    """White specular hot spots (a flash on moist skin), covering ``area`` of the central region."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    n_spots = int(rng.integers(1, 4))
    total = area * h * w
    for _ in range(n_spots):
        r = np.sqrt(total / n_spots / np.pi)
        cy = rng.uniform(0.3, 0.7) * h
        cx = rng.uniform(0.3, 0.7) * w
        yy, xx = np.ogrid[:h, :w]
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / max(r, 1.0) ** 2
        a = np.clip(1.6 * np.exp(-0.5 * d2**2), 0, 1)[:, :, None]  # flat core, soft edge
        out = out * (1 - a) + 255.0 * a
    return np.clip(out, 0, 255).astype(np.uint8)


_CASTS = {
    "blue": (-1.0, 0.0, 1.0),
    "green": (-0.5, 1.0, -0.5),
    "magenta": (0.5, -1.0, 0.5),
    "yellow": (0.5, 0.5, -1.0),
    "cyan": (-1.0, 0.5, 0.5),
}


def colour_cast(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Channel gains of a wrong white balance, in a random direction (blue, green, magenta, yellow, cyan)."""
    name = list(_CASTS)[int(rng.integers(len(_CASTS)))]
    gains = np.exp(np.array(_CASTS[name], np.float32) * strength)
    gains /= gains.mean()
    return np.clip(img.astype(np.float32) * gains[None, None, :], 0, 255).astype(np.uint8)


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int, rng=None) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def downscale(img: np.ndarray, long_side: int, rng=None) -> np.ndarray:
    h, w = img.shape[:2]
    s = long_side / float(max(h, w))
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


_BACKGROUNDS = [(128, 128, 132), (225, 228, 232), (40, 60, 110), (30, 30, 34), (70, 110, 80), (150, 160, 175)]


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A plain surface (sheet, wall, clothing, table) with a light gradient and grain."""
    base = np.array(_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))], np.float32)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
    gy, gx = rng.uniform(-18, 18, 2)
    bg = base + gy * yy + gx * xx + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def off_centre(img: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Move the picture by ``shift`` of the frame size towards a random corner; background fills the rest."""
    h, w = img.shape[:2]
    ang = rng.uniform(0, 2 * np.pi)
    dx, dy = int(round(np.cos(ang) * shift * w)), int(round(np.sin(ang) * shift * h))
    out = _background(h, w, rng)
    src = img[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def zoom_out(img: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """The same scene from further away: the picture shrinks to ``scale`` inside a plain background."""
    h, w = img.shape[:2]
    sh, sw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    out = _background(h, w, rng)
    y0 = int(rng.integers(0, h - sh + 1)) if h > sh else 0
    x0 = int(rng.integers(0, w - sw + 1)) if w > sw else 0
    # mostly near the centre: a photo from further away, not a badly framed one
    y0 = (y0 + (h - sh) // 2) // 2
    x0 = (x0 + (w - sw) // 2) // 2
    out[y0 : y0 + sh, x0 : x0 + sw] = small
    return out


FUNCTIONS = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "underexpose": underexpose,
    "overexpose": overexpose,
    "glare": glare,
    "colour_cast": colour_cast,
    "noise": noise,
    "jpeg": jpeg,
    "downscale": downscale,
    "off_centre": off_centre,
    "zoom_out": zoom_out,
}


def apply(img: np.ndarray, name: str, level, seed: int = 0) -> np.ndarray:
    """Apply degradation ``name`` at severity ``level`` to an RGB uint8 image."""
    rng = np.random.default_rng(seed)
    return FUNCTIONS[name](img, level, rng)
