"""Synthetic demo data set: procedural lesion-like photos the package draws itself.

**This is demo data, not dermatology.** The pictures are drawn from simple
shape, colour and texture rules so that the whole pipeline (splits, training,
export, the quality gate, ``predict``) can run on a fresh machine without any
real data. A model trained on them learns nothing about real skin disease.

Each class differs in shape, colour and texture:

================== =============================================================
``demo_nevus_like``    small round, uniform brown, sharp border
``demo_melanoma_like`` large, irregular border, several colours (black, browns,
                       blue-grey, red) in blotches, partly blurred edge
``demo_bcc_like``      pearly pink nodule, bright rolled rim, shiny highlight,
                       thin red branching vessels
``demo_ak_like``       ill-defined rough red patch with white scale flecks
``demo_sk_like``       sharply bordered oval, tan to dark brown, ridged "warty"
                       texture with light and dark dots
``demo_vascular_like`` small lobulated saturated red-purple blob, glossy
================== =============================================================

Background: one of six Fitzpatrick-like skin tones with low-frequency tone
variation and fine texture. Each *lesion* (the group id) is drawn once as a
larger scene and photographed several times (the views): rotation, scale,
shift, brightness, colour cast, lighting gradient and sensor noise differ per
view, so grouped splits matter. Output is deterministic from the seed
(identical JPEG bytes), and lesion ``i`` of a class does not depend on the
other classes or on ``lesions_per_class``.
"""
from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mobile_derm.datasets.sources import Dataset, read_csv
from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_write_text

DEMO_CLASSES = ("demo_ak_like", "demo_bcc_like", "demo_melanoma_like", "demo_nevus_like",
                "demo_sk_like", "demo_vascular_like")

# Fitzpatrick-like skin tones I..VI, RGB.
SKIN_TONES_RGB = ((247, 224, 208), (236, 200, 172), (214, 172, 136),
                  (180, 134, 98), (130, 90, 62), (88, 60, 44))

DEMO_NOTE = ("Synthetic demo images drawn by mobile_derm.datasets.synthetic: procedural shapes on "
             "skin-coloured backgrounds. NOT dermatology; for exercising the pipeline only.\n")


def demo_taxonomy():
    """The shipped taxonomy restricted to the demo classes (entries marked demo)."""
    from mobile_derm.taxonomy import default_taxonomy

    return default_taxonomy().subset(DEMO_CLASSES)


# --------------------------------------------------------------------------
# Drawing helpers (all float32 RGB in 0..255 on an (h, w) grid)
# --------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-std smooth noise with about ``cells`` blobs across."""
    small = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    big = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    big -= big.mean()
    return big / (big.std() + 1e-6)


def _rgb(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float32)


def _jitter(rng, c, amount=12.0) -> np.ndarray:
    return np.clip(_rgb(c) + rng.uniform(-amount, amount, 3), 0, 255)


def _radial_alpha(rng, shape, cx, cy, radius, *, aspect=1.0, harmonics=(), edge=1.5,
                  wobble=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft mask of a star-shaped blob: r(theta) = R (1 + sum a_k cos(k theta + phi)).

    Returns (alpha in 0..1, normalised radius r / r_boundary, theta).
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(ang) + dy * np.sin(ang)
    v = (-dx * np.sin(ang) + dy * np.cos(ang)) / aspect
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    rb = np.ones_like(r)
    for k, a in harmonics:
        rb += a * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if wobble:
        rb += wobble * _smooth_noise(rng, shape, 6)
    rb = radius * np.maximum(rb, 0.3)
    alpha = np.clip((rb - r) / max(edge, 1e-3) + 0.5, 0.0, 1.0)
    return alpha, r / rb, theta


def _skin(rng, shape) -> tuple[np.ndarray, np.ndarray]:
    tone = _jitter(rng, SKIN_TONES_RGB[rng.integers(len(SKIN_TONES_RGB))], 8.0)
    img = np.empty(shape + (3,), np.float32)
    img[:] = tone
    low = _smooth_noise(rng, shape, 4)
    img *= (1.0 + 0.035 * low)[..., None]
    # a slight reddish mottling
    red = _smooth_noise(rng, shape, 8)
    img[..., 0] += 5.0 * red
    img[..., 2] -= 3.0 * red
    # fine texture (pores / skin lines)
    fine = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 0.8)
    img += (3.0 * fine)[..., None]
    return img, tone


def _compose(img, alpha, colour_img):
    a = alpha[..., None]
    return img * (1.0 - a) + colour_img * a


# --------------------------------------------------------------------------
# One renderer per class: draw the lesion into the scene (in place)
# --------------------------------------------------------------------------
def _nevus(rng, img, cx, cy, unit):
    shape = img.shape[:2]
    alpha, rn, _ = _radial_alpha(rng, shape, cx, cy, unit * rng.uniform(0.15, 0.21),
                                 aspect=rng.uniform(0.85, 1.0),
                                 harmonics=[(2, rng.uniform(0, 0.04)), (3, rng.uniform(0, 0.03))],
                                 edge=rng.uniform(1.2, 2.5))
    col = _jitter(rng, (92, 56, 36), 10)
    layer = np.empty_like(img)
    layer[:] = col
    layer *= (0.92 + 0.08 * np.clip(rn, 0, 1))[..., None]  # slightly darker centre
    layer *= (1.0 + 0.03 * _smooth_noise(rng, shape, 10))[..., None]
    return _compose(img, alpha * 0.95, layer)


def _melanoma(rng, img, cx, cy, unit):
    shape = img.shape[:2]
    harm = [(k, rng.uniform(0.03, 0.09)) for k in range(2, 8)]
    alpha, rn, _ = _radial_alpha(rng, shape, cx, cy, unit * rng.uniform(0.22, 0.3),
                                 aspect=rng.uniform(0.7, 1.0), harmonics=harm,
                                 edge=rng.uniform(2.0, 5.0), wobble=0.05)
    palette = [(28, 22, 28), (80, 48, 32), (150, 100, 68), (92, 100, 122), (165, 70, 68)]
    pick = rng.choice(len(palette), size=rng.integers(3, 5), replace=False)
    field = _smooth_noise(rng, shape, 7)
    qs = np.quantile(field, np.linspace(0, 1, len(pick) + 1)[1:-1])
    zone = np.digitize(field, qs)
    layer = np.zeros_like(img)
    for z, p in enumerate(pick):
        layer[zone == z] = _jitter(rng, palette[p], 10)
    layer = cv2.GaussianBlur(layer, (0, 0), 1.5)
    layer *= (1.0 + 0.06 * _smooth_noise(rng, shape, 20))[..., None]
    return _compose(img, alpha, layer)


def _bcc(rng, img, cx, cy, unit):
    shape = img.shape[:2]
    radius = unit * rng.uniform(0.15, 0.22)
    alpha, rn, _ = _radial_alpha(rng, shape, cx, cy, radius, aspect=rng.uniform(0.8, 1.0),
                                 harmonics=[(2, rng.uniform(0, 0.05)), (3, rng.uniform(0, 0.04))],
                                 edge=rng.uniform(2.0, 3.5))
    pearl = _jitter(rng, (236, 188, 190), 8)
    layer = img * 0.25 + pearl * 0.75
    rim = np.exp(-((rn - 0.88) / 0.08) ** 2)  # rolled, brighter border
    layer += (28.0 * rim)[..., None]
    hx, hy = cx - 0.3 * radius, cy - 0.3 * radius  # shiny highlight
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    layer += (40.0 * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.25 * radius) ** 2)))[..., None]
    out = _compose(img, alpha, np.clip(layer, 0, 255))
    # arborising vessels: thin red branching lines, kept inside the nodule
    vessels = np.zeros(shape, np.float32)
    for _ in range(rng.integers(3, 7)):
        x, y = cx + rng.uniform(-0.6, 0.6) * radius, cy + rng.uniform(-0.6, 0.6) * radius
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(4, 9)):
            ang += rng.uniform(-0.7, 0.7)
            step = rng.uniform(0.1, 0.25) * radius
            nx, ny = x + step * np.cos(ang), y + step * np.sin(ang)
            cv2.line(vessels, (int(x * 16), int(y * 16)), (int(nx * 16), int(ny * 16)), 1.0, 1,
                     cv2.LINE_AA, shift=4)
            x, y = nx, ny
    va = (np.clip(vessels, 0, 1) * alpha * 0.85)[..., None]
    return out * (1 - va) + _jitter(rng, (150, 28, 40), 10) * va


def _ak(rng, img, cx, cy, unit):
    shape = img.shape[:2]
    alpha, rn, _ = _radial_alpha(rng, shape, cx, cy, unit * rng.uniform(0.18, 0.27),
                                 aspect=rng.uniform(0.65, 1.0),
                                 harmonics=[(k, rng.uniform(0.04, 0.1)) for k in range(2, 6)],
                                 edge=rng.uniform(6.0, 9.0), wobble=0.06)
    red = _jitter(rng, (205, 98, 92), 10)
    layer = img * 0.35 + red * 0.65
    rough = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 0.7)
    layer += (10.0 * rough)[..., None]
    scale = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 1.2)
    flake = np.clip((scale - 0.35) * 3.0, 0, 1) * (alpha > 0.5)
    flake_col = _jitter(rng, (232, 226, 212), 6)
    layer = layer * (1 - flake[..., None]) + flake_col * flake[..., None]
    return _compose(img, alpha * 0.95, np.clip(layer, 0, 255))


def _sk(rng, img, cx, cy, unit):
    shape = img.shape[:2]
    radius = unit * rng.uniform(0.17, 0.25)
    alpha, rn, _ = _radial_alpha(rng, shape, cx, cy, radius, aspect=rng.uniform(0.55, 0.8),
                                 harmonics=[(2, rng.uniform(0, 0.05)), (4, rng.uniform(0, 0.04))],
                                 edge=rng.uniform(0.8, 1.5))
    t = rng.uniform(0, 1)
    base = _rgb((150, 108, 66)) * (1 - t) + _rgb((78, 54, 34)) * t
    layer = np.empty_like(img)
    layer[:] = _jitter(rng, base, 8)
    ridges = np.sin(_smooth_noise(rng, shape, 14) * rng.uniform(5.0, 8.0))
    layer *= (1.0 + 0.16 * ridges)[..., None]
    inside = alpha > 0.8
    for colour, n in (((238, 232, 215), rng.integers(4, 9)), ((30, 24, 20), rng.integers(3, 7))):
        ys, xs = np.nonzero(inside)
        if len(xs) == 0:
            break
        for j in rng.integers(0, len(xs), n):
            cv2.circle(layer, (int(xs[j]), int(ys[j])), int(rng.integers(1, 3)), colour, -1, cv2.LINE_AA)
    return _compose(img, alpha, np.clip(layer, 0, 255))


def _vascular(rng, img, cx, cy, unit):
    shape = img.shape[:2]
    radius = unit * rng.uniform(0.1, 0.17)
    alpha, rn, _ = _radial_alpha(rng, shape, cx, cy, radius, aspect=rng.uniform(0.85, 1.0),
                                 harmonics=[(rng.integers(3, 6), rng.uniform(0.05, 0.1))],
                                 edge=rng.uniform(1.0, 1.8))
    t = rng.uniform(0, 1)
    base = _rgb((178, 22, 48)) * (1 - t) + _rgb((118, 28, 88)) * t
    layer = np.empty_like(img)
    layer[:] = base
    lobes = _smooth_noise(rng, shape, 10)
    layer *= (1.0 - 0.18 * np.clip(lobes, 0, 2))[..., None]  # darker lacunae
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    hx, hy = cx - 0.35 * radius, cy - 0.35 * radius
    layer += (55.0 * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.18 * radius) ** 2)))[..., None]
    return _compose(img, alpha, np.clip(layer, 0, 255))


_RENDERERS = {
    "demo_nevus_like": _nevus,
    "demo_melanoma_like": _melanoma,
    "demo_bcc_like": _bcc,
    "demo_ak_like": _ak,
    "demo_sk_like": _sk,
    "demo_vascular_like": _vascular,
}


# --------------------------------------------------------------------------
# Scenes and views
# --------------------------------------------------------------------------
def render_lesion_views(label: str, lesion: int, views: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``views`` BGR uint8 photos (size x size) of one synthetic lesion."""
    if label not in _RENDERERS:
        raise ConfigError(None, f"unknown demo class {label!r}; choose from {', '.join(DEMO_CLASSES)}")
    rng = np.random.default_rng([seed, zlib.crc32(label.encode()), lesion])
    scene_size = int(round(size * 1.5))
    shape = (scene_size, scene_size)
    img, _ = _skin(rng, shape)
    c = scene_size / 2
    cx, cy = c + rng.uniform(-0.05, 0.05) * size, c + rng.uniform(-0.05, 0.05) * size
    img = _RENDERERS[label](rng, img, cx, cy, float(size))
    img = np.clip(img, 0, 255).astype(np.float32)

    out = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(views):
        angle = rng.uniform(0, 360)
        scale = rng.uniform(0.85, 1.2)
        sx, sy = rng.uniform(-0.08, 0.08, 2) * size
        m = cv2.getRotationMatrix2D((c, c), angle, scale)
        m[:, 2] += (size / 2 - c + sx, size / 2 - c + sy)
        v = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        gdir = rng.uniform(0, 2 * np.pi)
        grad = ((xx - size / 2) * np.cos(gdir) + (yy - size / 2) * np.sin(gdir)) / size
        light = rng.uniform(0.88, 1.1) * (1.0 + rng.uniform(0.08, 0.22) * grad)
        cast = 1.0 + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
        v = v * light[..., None] * cast
        v += rng.normal(0.0, rng.uniform(1.5, 3.5), v.shape).astype(np.float32)
        if rng.random() < 0.25:  # slight defocus now and then
            v = cv2.GaussianBlur(v, (0, 0), rng.uniform(0.5, 1.0))
        rgb = np.clip(v + 0.5, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(rgb[..., ::-1]))  # RGB -> BGR for OpenCV
    return out


def generate_demo_dataset(out_dir: str | Path, classes: Sequence[str] = DEMO_CLASSES,
                          lesions_per_class: int = 12, views_per_lesion: int = 4, size: int = 128,
                          seed: int = 0, jpeg_quality: int = 90) -> Dataset:
    """Write the demo data set and return it as a :class:`Dataset` (name "demo").

    Layout: ``out_dir/images/<class>/<class>_<lesion>_v<view>.jpg``,
    ``out_dir/labels.csv`` (columns image, label, group; group =
    ``<class>_<lesion>``) and ``out_dir/DEMO_DATA.txt``. ``labels.csv`` is
    written last (atomically), so its presence means the set is complete.
    Default: 6 classes x 12 lesions x 4 views = 288 images of 128 px.
    """
    classes = list(classes)
    unknown = [c for c in classes if c not in _RENDERERS]
    if unknown:
        raise ConfigError(None, f"unknown demo class(es) {', '.join(map(repr, unknown))}; "
                                f"choose from {', '.join(DEMO_CLASSES)}")
    if len(set(classes)) != len(classes) or not classes:
        raise ConfigError(None, "demo classes must be a non-empty list without repeats")
    if lesions_per_class < 1 or views_per_lesion < 1:
        raise ConfigError(None, "lesions_per_class and views_per_lesion must be at least 1")
    if not 32 <= size <= 1024:
        raise ConfigError(None, f"demo image size must be 32..1024 px, got {size}")
    out_dir = Path(out_dir)
    rows = []
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
    for label in classes:
        (out_dir / "images" / label).mkdir(parents=True, exist_ok=True)
        for lesion in range(lesions_per_class):
            group = f"{label}_{lesion:03d}"
            for v, img in enumerate(render_lesion_views(label, lesion, views_per_lesion, size, seed)):
                rel = f"images/{label}/{group}_v{v}.jpg"
                ok, buf = cv2.imencode(".jpg", img, params)
                if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
                    raise RuntimeError("JPEG encoding failed")
                (out_dir / rel).write_bytes(buf.tobytes())
                rows.append((rel, label, group))
    (out_dir / "DEMO_DATA.txt").write_text(DEMO_NOTE, encoding="utf-8")
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["image", "label", "group"])
    w.writerows(rows)
    atomic_write_text(out_dir / "labels.csv", text.getvalue())
    return read_csv(out_dir / "labels.csv", group_col="group", name="demo")
