"""Does this look like a photo of skin at all? A one-class model of skin photos.

Colour rules alone cannot tell a close-up of skin from a brick wall, a cat or a cup
of coffee: all of them are skin-coloured. And there is no set of "every photo that
is not skin" to learn from. So this check learns from skin photos only (one-class):
a small descriptor of colour layout, colour spread and texture, standardised and
whitened along its main directions of variation over skin photos. The squared
distance from the skin-photo mean in that space (divided by the number of
directions, so a typical skin photo scores about 1) says how unlike a skin photo a
picture is. The parameters are plain numbers in the GateConfig, so the exported
model file carries them and an app computes the same score.

Refit it from your own good photos with ``mobile-derm calibrate-gate --fit-skin-model``.
The shipped default is fitted on half of each skin set in ``../shared/data``
(``python -m mobile_derm_quality.typicality``); gate-eval reports the pass rate on the
other half separately.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mobile_derm_quality.errors import GateConfigError

GRID = 4  # colour-layout grid (GRID x GRID cells)
CHROMA_BINS = 6  # rg-chromaticity histogram bins per axis
ORIENTATION_BINS = 8
HUE_BINS = 12
DESCRIPTOR_SIZE = 4 * GRID * GRID + CHROMA_BINS**2 + ORIENTATION_BINS + 3 + HUE_BINS
MIN_PHOTOS_TO_FIT = 50
N_COMPONENTS = 24  # principal directions kept (of DESCRIPTOR_SIZE)
MAX_PHOTOS_PER_SET = 1000  # so HAM10000's thousands of dermoscopy images do not outvote the phone photos


def describe(rgb: np.ndarray) -> np.ndarray:
    """The descriptor of an RGB uint8 photo (any size; the gate passes its <= 320 px copy)."""
    t = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    s = t.sum(axis=2) + 1.0
    r, g = t[..., 0] / s, t[..., 1] / s
    lum = t.mean(axis=2) / 255.0
    local_contrast = np.sqrt(cv2.blur((lum - cv2.blur(lum, (5, 5))) ** 2, (3, 3)))
    # Where the colours and the detail are: skin photos are a smooth skin-coloured field,
    # everyday scenes have sky above, ground below and structure everywhere.
    layout = [cv2.resize(a, (GRID, GRID), interpolation=cv2.INTER_AREA).ravel() for a in (r, g, lum, local_contrast)]
    # rg-chromaticity histogram over the range where photos of skin and their surroundings lie
    ri = np.floor((r.ravel() - 0.2) / 0.5 * CHROMA_BINS).astype(np.int64)
    gi = np.floor((g.ravel() - 0.2) / 0.25 * CHROMA_BINS).astype(np.int64)
    inside = (ri >= 0) & (ri < CHROMA_BINS) & (gi >= 0) & (gi < CHROMA_BINS)
    chroma = np.bincount(ri[inside] * CHROMA_BINS + gi[inside], minlength=CHROMA_BINS**2).astype(np.float64)
    chroma = np.sqrt(chroma / max(chroma.sum(), 1.0))
    grey = cv2.cvtColor(t.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    mag, ang = cv2.cartToPolar(gx, gy)
    # Orientation histogram: man-made scenes are full of horizontal and vertical edges.
    bins = np.minimum(((ang % np.pi) / np.pi * ORIENTATION_BINS).astype(np.int64), ORIENTATION_BINS - 1)
    orient = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=ORIENTATION_BINS)
    orient = orient / (orient.sum() + 1e-6)
    edges = [(mag > 20).mean(), (mag > 60).mean(), (mag > 150).mean()]
    hsv = cv2.cvtColor(t.astype(np.uint8), cv2.COLOR_RGB2HSV)
    saturated = hsv[..., 1] > 60
    hue = np.bincount((hsv[..., 0][saturated] // (180 // HUE_BINS)).astype(np.int64), minlength=HUE_BINS)[:HUE_BINS]
    hue = hue / float(t.shape[0] * t.shape[1])
    parts = layout + [chroma, orient, np.asarray(edges), hue]
    return np.concatenate([np.asarray(p, np.float32).ravel() for p in parts])


@dataclass
class SkinPhotoModel:
    mean: np.ndarray  # (D,) descriptor mean over the fitting photos
    scale: np.ndarray  # (D,) descriptor standard deviation
    components: np.ndarray  # (D, k) principal directions, each divided by its spread (whitening)
    residual_scale: float = 1.0  # mean squared distance of the fitting photos from that k-dim subspace
    n_photos: int = 0
    source: str = ""
    distance_quantiles: dict[str, float] = field(default_factory=dict)  # of the fitting photos

    def __post_init__(self):
        # Unit-length principal directions for the residual term: computed once, not per photo.
        self._directions = self.components / np.linalg.norm(self.components, axis=0)

    def distance(self, descriptor: np.ndarray) -> float:
        """Whitened squared distance inside the skin-photo subspace plus the squared distance
        from it (in units of its typical value), per dimension: about 1 for a skin photo.
        The second term catches pictures that differ in ways skin photos never vary."""
        z = (np.asarray(descriptor, np.float64) - self.mean) / self.scale
        w = z @ self.components
        residual = z - (z @ self._directions) @ self._directions.T
        k = self.components.shape[1]
        return float((w @ w + residual @ residual / self.residual_scale) / (k + 1))

    def to_dict(self) -> dict:
        return {
            "descriptor_size": int(self.mean.shape[0]),
            "mean": [round(float(x), 6) for x in self.mean],
            "scale": [round(float(x), 6) for x in self.scale],
            "components": [[round(float(x), 6) for x in row] for row in self.components],
            "residual_scale": round(float(self.residual_scale), 6),
            "n_photos": int(self.n_photos),
            "source": self.source,
            "distance_quantiles": {k: round(float(v), 4) for k, v in self.distance_quantiles.items()},
        }

    @classmethod
    def from_dict(cls, d: dict, source=None) -> "SkinPhotoModel":
        try:
            mean = np.asarray(d["mean"], np.float64)
            scale = np.asarray(d["scale"], np.float64)
            components = np.asarray(d["components"], np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise GateConfigError(source, f"bad skin_model ({exc})") from None
        if mean.shape != (DESCRIPTOR_SIZE,) or scale.shape != mean.shape or components.ndim != 2 or components.shape[0] != DESCRIPTOR_SIZE:
            raise GateConfigError(source, f"skin_model does not fit this descriptor ({DESCRIPTOR_SIZE} values)")
        if not (np.all(np.isfinite(mean)) and np.all(scale > 0) and np.all(np.isfinite(components))):
            raise GateConfigError(source, "skin_model has non-finite values or non-positive scales")
        residual_scale = float(d.get("residual_scale", 1.0))
        if not residual_scale > 0:
            raise GateConfigError(source, "skin_model residual_scale must be > 0")
        return cls(mean, scale, components, residual_scale, int(d.get("n_photos", 0)), str(d.get("source", "")),
                   {str(k): float(v) for k, v in (d.get("distance_quantiles") or {}).items()})


def fit_parameters(x: np.ndarray, n_components: int) -> SkinPhotoModel:
    """The model's numbers alone (no input checks, no distance quantiles); any descriptor
    length, so the learned skin check (skin_check.py) fits its features with it too."""
    k = int(min(n_components, len(x) - 1, x.shape[1]))
    mean = x.mean(axis=0)
    # A floor on the spread keeps descriptor entries that are constant on skin photos
    # (e.g. no green hue at all) from dividing by ~0 and dominating the distance.
    scale = np.maximum(x.std(axis=0), 1e-3)
    z = (x - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    components = vt[:k].T / np.maximum(s[:k] / np.sqrt(len(x)), 1e-6)
    residual = z - (z @ vt[:k].T) @ vt[:k]
    residual_scale = max(float(np.mean(np.sum(residual**2, axis=1))), 1e-6)
    return SkinPhotoModel(mean, scale, components, residual_scale, len(x))


def fold_of(n: int) -> np.ndarray:
    """The 2-fold split used for cross-fitting: photo i is in fold i % 2."""
    return np.arange(n) % 2


def half_models(descriptors: np.ndarray, n_components: int = N_COMPONENTS) -> list[SkinPhotoModel]:
    """For each fold f, the model fitted on the photos outside it."""
    x = np.asarray(descriptors, np.float64)
    fold = fold_of(len(x))
    return [fit_parameters(x[fold != f], n_components) for f in (0, 1)]


def cross_fit_distances(descriptors: np.ndarray, n_components: int = N_COMPONENTS,
                        models: list[SkinPhotoModel] | None = None) -> np.ndarray:
    """Each photo's distance under a model fitted on the other half (2-fold), i.e. how
    the model will score new photos of the same kind, not the in-sample value.
    ``models``: the half_models of these descriptors, when already fitted."""
    x = np.asarray(descriptors, np.float64)
    fold = fold_of(len(x))
    out = np.empty(len(x))
    for f, model in enumerate(models or half_models(x, n_components)):
        out[fold == f] = [model.distance(row) for row in x[fold == f]]
    return out


def distance_quantiles(distances: np.ndarray) -> dict[str, float]:
    """The quantiles of (cross-fitted) distances that ramps and reports use, keyed "q95" etc."""
    return {f"q{q}": float(np.percentile(distances, q)) for q in (50, 90, 95, 97.5, 99, 99.5)}


def fit(descriptors: np.ndarray, n_components: int = N_COMPONENTS, source: str = "") -> SkinPhotoModel:
    """Fit the one-class model to descriptors of good skin photos (rows)."""
    x = np.asarray(descriptors, np.float64)
    if x.ndim != 2 or x.shape[1] != DESCRIPTOR_SIZE:
        raise GateConfigError(None, f"descriptors must be (n, {DESCRIPTOR_SIZE})")
    if len(x) < MIN_PHOTOS_TO_FIT:
        raise GateConfigError(None, f"need at least {MIN_PHOTOS_TO_FIT} good photos to fit the skin-photo model, got {len(x)}")
    model = fit_parameters(x, n_components)
    model.source = source
    d = cross_fit_distances(x, n_components)
    model.distance_quantiles = distance_quantiles(d)
    return model


def default_ramp(model: SkinPhotoModel) -> dict[str, float]:
    """Score 1 up to the distance 95% of the fitting photos stay under, 0 at 1.2x the 99.5% one
    (with the default not_skin threshold 0.3, photos beyond about the 99.5% distance fail)."""
    return ramp_from_quantiles(model.distance_quantiles)


def ramp_from_quantiles(q: dict[str, float]) -> dict[str, float]:
    """default_ramp from the quantiles alone ("q95", "q99.5" of cross-fitted distances)."""
    good = q.get("q95", 2.0)
    bad = max(1.2 * q.get("q99.5", 4.0), good * 1.5)
    return {"good": round(good, 4), "bad": round(bad, 4)}


def fitting_photos(root, analysis_size: int | None = None) -> tuple[list[np.ndarray], str]:
    """The analysis copies (longer side <= ``analysis_size``, default the GateConfig's) of the photos the shipped skin
    models are fitted on: the fit half of each skin set under ``root`` (by a hash of the
    file name), at most MAX_PHOTOS_PER_SET per set, clean-sized except the HAM10000 copies.
    Returns them and a line saying where they came from."""
    from mobile_derm_quality.decode import read_image
    from mobile_derm_quality.gate_eval import CLEAN_MIN_SIDE, LOWRES_SET, SKIN_MODEL_SETS, fit_half, read_rows
    from mobile_derm_quality.features import shrink

    if analysis_size is None:
        from mobile_derm_quality.config import GateConfig

        analysis_size = GateConfig.default().analysis_size
    photos, used = [], {}
    for ds in SKIN_MODEL_SETS:
        rows = [r for r in read_rows(root / ds) if fit_half(r["image"])][:MAX_PHOTOS_PER_SET]
        n = 0
        for r in rows:
            rgb = read_image(root / ds / r["image"])
            if ds != LOWRES_SET and min(rgb.shape[:2]) < CLEAN_MIN_SIDE:
                continue
            photos.append(shrink(rgb, analysis_size))
            n += 1
        used[ds] = n
    return photos, "fit half of " + ", ".join(f"{k} ({v})" for k, v in used.items())


def main(argv=None) -> int:
    """Refit the shipped default from half of each skin set under the data root."""
    import argparse
    import json
    from pathlib import Path

    from mobile_derm_quality._atomic import atomic_write_text
    from mobile_derm_quality.gate_eval import default_data_root

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "data" / "skin_model.json"))
    args = parser.parse_args(argv)
    root = Path(args.data_root) if args.data_root else default_data_root()
    photos, source = fitting_photos(root)
    model = fit(np.stack([describe(small) for small in photos]), source=source)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(model.to_dict()) + "\n")
    print(f"{args.out}: {len(photos)} photos, distance quantiles {model.distance_quantiles}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
