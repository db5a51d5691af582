"""Does this look like a photo of skin at all? The gate's not-skin check, every way it is made.

Colour rules alone cannot tell a close-up of skin from a brick wall, a cat or a cup
of coffee: all of them are skin-coloured. And there is no set of "every photo that
is not skin" to learn from. So the check learns from skin photos only (one-class):
features of a photo, standardised and whitened along their main directions of
variation over skin photos (``whitened_distance.fit_one_class``). The squared distance
from the skin-photo mean in that space, plus the distance from the subspace of those
directions, divided by the number of directions plus one (so a typical skin photo
scores about 1), says how unlike a skin photo a picture is. Three models:

* The hand-made model (the gate's default; ramp ``typicality``): ``describe`` makes a
  small descriptor of colour layout, colour spread and texture, and ``SkinPhotoModel``
  holds the one-class model of it as plain numbers in the GateConfig, so the exported
  model file carries them and an app computes the same score. Refit it from your own
  good photos with ``mobile-derm calibrate-gate --fit-skin-model``. The shipped default
  (data/skin_model.json) is fitted on the fit half of each skin set in ``../shared/data``
  (``photo_sets.fit_half``: by patient, case or lesion; ``python -m mobile_derm_quality.photo_sets``);
  gate-eval reports the pass rate on the other, the report half.

* The contrast with non-skin photos (the default too; ramp ``nonskin_logit``): the same
  descriptor, with a second set of everyday photos that are not skin (``photo_sets.NONSKIN_SET``,
  built for this and never reported as the final figure), gives a linear log-odds that a
  photo is not skin (``NonSkinContrast``, data/nonskin_contrast.json; ``python -m
  mobile_derm_quality.photo_sets --contrast``). The one-class distance says "unlike skin
  photos"; this says "like the others", which catches skin-coloured walls and portraits.

* The learned check (ramp ``skin_check_distance``): the hand-made descriptor sees a
  brick wall, a cat or a cup of coffee as skin-like and lets about a quarter of everyday
  non-skin photos through. Features of a network trained on ImageNet's million everyday
  photos tell those apart: EfficientNet-Lite0 at 64x64 pixels, its pooled features
  scaled to unit length, with the same one-class model fitted on skin photos only. The
  model file is made by ``mobile-derm fit-skin-check`` (``mobile_derm_export.not_skin_model``),
  which needs TensorFlow and the ImageNet weights extra, so it is not shipped: the weights
  package carries no licence that allows redistribution. The one-class model is folded
  into the graph, so the file takes a 64x64 RGB thumbnail (pixel values 0-255, float32)
  and returns one number: the distance, about 1 for a typical skin photo. An app runs the
  same file with its TFLite runtime. Here ``SkinCheck`` runs it on LiteRT (about 0.8 ms on
  one core with the int8 backbone that fit-skin-check writes; no TensorFlow import), the
  TFLite runtime an app has anyway. OpenCV's dnn module was tried so that the gate would
  need nothing else: its TFLite importer (OpenCV 5.0) runs the backbone in 5-6 ms, too
  slow for the gate's 10 ms, and mis-shapes the one-class head's matrix products (README).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mobile_derm_quality.errors import GateConfigError
from mobile_derm_quality.whitened_distance import MIN_SCALE, WhitenedDistance, fit_one_class

# ---------------------------------------------------------------- the hand-made descriptor

GRID = 4  # colour-layout grid (GRID x GRID cells)
CHROMA_BINS = 6  # rg-chromaticity histogram bins per axis
ORIENTATION_BINS = 8
HUE_BINS = 12
DESCRIPTOR_SIZE = 4 * GRID * GRID + CHROMA_BINS**2 + ORIENTATION_BINS + 3 + HUE_BINS
MIN_PHOTOS_TO_FIT = 50
N_COMPONENTS = 24  # principal directions kept (of DESCRIPTOR_SIZE)


def describe(rgb: np.ndarray) -> np.ndarray:
    """The descriptor of an RGB uint8 photo (any size; the gate passes its <= 320 px copy)."""
    t = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    total = t[..., 0] + t[..., 1] + t[..., 2]  # t.sum(axis=2) bit for bit (same order), several times cheaper
    s = total + 1.0
    r, g = t[..., 0] / s, t[..., 1] / s
    lum = total / np.float32(3) / 255.0  # t.mean(axis=2) / 255.0 bit for bit
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
    bins = np.minimum((np.fmod(ang, np.pi) / np.pi * ORIENTATION_BINS).astype(np.int64), ORIENTATION_BINS - 1)  # ang >= 0
    orient = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=ORIENTATION_BINS)
    orient = orient / (orient.sum() + 1e-6)
    edges = [np.count_nonzero(mag > level) / mag.size for level in (20, 60, 150)]
    hsv = cv2.cvtColor(t.astype(np.uint8), cv2.COLOR_RGB2HSV)
    saturated = hsv[..., 1] > 60
    hue = np.bincount((hsv[..., 0][saturated] // (180 // HUE_BINS)).astype(np.int64), minlength=HUE_BINS)[:HUE_BINS]
    hue = hue / float(t.shape[0] * t.shape[1])
    parts = layout + [chroma, orient, np.asarray(edges), hue]
    return np.concatenate([np.asarray(p, np.float32).ravel() for p in parts])


# ---------------------------------------------------------------- the one-class model (either kind of features)

@dataclass
class SkinPhotoModel(WhitenedDistance):
    """The one-class model of skin photos (either kind of features): one centre, the
    features standardised, with the distance from the subspace (fit_parameters)."""

    n_photos: int = 0
    source: str = ""
    distance_quantiles: dict[str, float] = field(default_factory=dict)  # of the fitting photos, cross-fitted

    def distances(self, rows: np.ndarray) -> np.ndarray:
        """Whitened squared distance inside the skin-photo subspace plus the squared distance
        from it (in units of its typical value), per dimension: about 1 for a skin photo.
        The second term catches pictures that differ in ways skin photos never vary."""
        return self.squared_distances(rows) / (self.n_directions + 1)

    def distance(self, features: np.ndarray) -> float:
        """``distances`` of one photo's features."""
        return float(self.distances(np.asarray(features)[None])[0])

    def to_dict(self) -> dict:
        return {
            "descriptor_size": int(self.mean.shape[0]),
            "mean": [round(float(x), 6) for x in self.mean],
            "scale": [round(float(x), 6) for x in self.scale],
            "components": [[round(float(x), 6) for x in row] for row in self.projection],
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
        return cls(mean, components, scale=scale, residual_scale=residual_scale, n_photos=int(d.get("n_photos", 0)),
                   source=str(d.get("source", "")),
                   distance_quantiles={str(k): float(v) for k, v in (d.get("distance_quantiles") or {}).items()})


def fit_parameters(x: np.ndarray, n_components: int) -> SkinPhotoModel:
    """The model's numbers alone (no input checks, no distance quantiles); any feature
    length, so the learned check's fitting (mobile_derm_export.not_skin_model) uses it too."""
    x = np.asarray(x, np.float64)
    space = fit_one_class(x, n_components)
    return SkinPhotoModel(space.mean, space.projection, scale=space.scale, residual_scale=space.residual_scale,
                          n_photos=len(x))


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
        out[fold == f] = model.distances(x[fold == f])
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


# ---------------------------------------------------------------- the contrast with non-skin photos

# The one-class model above learns what skin photos look like and nothing of what else there is; with a set of
# everyday photos that are not skin (photo_sets.NONSKIN_SET) the same descriptor can also learn which way the
# others lie. A logistic regression, each class weighted to half, L2 penalty CONTRAST_L2 on the standardised
# descriptor: its log-odds that a photo is not skin is the ramp term ``nonskin_logit``. The penalty was chosen
# by cross-validation on those building photos (docs/gate.md, "The not-skin contrast").
CONTRAST_L2 = 100.0
CONTRAST_FOLDS = 5  # cross-fitting folds: skin photos by their group, non-skin photos by source repository
_NEWTON_STEPS = 100


@dataclass
class NonSkinContrast:
    """The log-odds that a photo is not skin, linear in the hand-made descriptor (standardisation folded
    into ``weights``), and where it warns and fails (``warn_at``, ``fail_at``: quantiles of the clean
    photos' cross-fitted scores)."""

    weights: np.ndarray  # (DESCRIPTOR_SIZE,)
    bias: float
    warn_at: float
    fail_at: float
    n_skin: int = 0
    n_nonskin: int = 0
    source: str = ""
    cross_fitted: dict = field(default_factory=dict)  # what the out-of-fold scores gave on the fitting photos

    def logits(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, np.float64) @ self.weights + self.bias

    def logit(self, features: np.ndarray) -> float:
        return float(self.logits(np.asarray(features)[None])[0])

    def to_dict(self) -> dict:
        return {"weights": [round(float(x), 6) for x in self.weights], "bias": round(float(self.bias), 6),
                "warn_at": round(float(self.warn_at), 4), "fail_at": round(float(self.fail_at), 4),
                "n_skin": int(self.n_skin), "n_nonskin": int(self.n_nonskin), "source": self.source,
                "cross_fitted": self.cross_fitted}

    @classmethod
    def from_dict(cls, d: dict, source=None) -> "NonSkinContrast":
        try:
            weights = np.asarray(d["weights"], np.float64)
            bias, warn_at, fail_at = float(d["bias"]), float(d["warn_at"]), float(d["fail_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise GateConfigError(source, f"bad nonskin_contrast ({exc})") from None
        if weights.shape != (DESCRIPTOR_SIZE,) or not (np.all(np.isfinite(weights)) and np.isfinite(bias)):
            raise GateConfigError(source, f"nonskin_contrast needs {DESCRIPTOR_SIZE} finite weights and a finite bias")
        if not (np.isfinite(warn_at) and np.isfinite(fail_at) and fail_at > warn_at):
            raise GateConfigError(source, "nonskin_contrast needs finite warn_at < fail_at")
        return cls(weights, bias, warn_at, fail_at, n_skin=int(d.get("n_skin", 0)), n_nonskin=int(d.get("n_nonskin", 0)),
                   source=str(d.get("source", "")), cross_fitted=dict(d.get("cross_fitted") or {}))


def _logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weights (raw features) and bias of a logistic regression of ``y`` (1: not skin) on ``x``, each class
    weighted to half, L2 penalty ``l2`` on the standardised weights; Newton's method (the loss is convex)."""
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), MIN_SCALE)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    sample_weight = np.where(y == 1, 0.5 / max(y.mean(), 1e-12), 0.5 / max(1.0 - y.mean(), 1e-12))
    penalty = np.r_[np.full(z.shape[1] - 1, l2), 0.0]
    w = np.zeros(z.shape[1])
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (sample_weight * (p - y)) + penalty * w
        hess = (z * (sample_weight * p * (1.0 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    weights = w[:-1] / scale
    return weights, float(w[-1] - weights @ mean)


def contrast_folds(groups: list[str], n_folds: int = CONTRAST_FOLDS) -> np.ndarray:
    """Each photo's cross-fitting fold: its group (a patient, case or lesion; a non-skin photo's source
    repository) dealt round-robin into the folds in sorted order, so no group is on both sides and a handful of
    groups (five repositories) still spreads over every fold."""
    order = {g: i for i, g in enumerate(sorted(set(groups)))}
    return np.array([order[g] % n_folds for g in groups])


def fit_contrast(skin: np.ndarray, nonskin: np.ndarray, skin_groups: list[str], nonskin_groups: list[str],
                 l2: float = CONTRAST_L2) -> tuple[np.ndarray, float, np.ndarray]:
    """The contrast's weights and bias fitted on descriptors of skin photos (rows of ``skin``) and of photos that
    are not skin, and every photo's cross-fitted log-odds (skin rows first; each fold scored by a model fitted on
    the others), from which the caller sets where it warns and fails (photo_sets.contrast_from_descriptors)."""
    skin, nonskin = np.asarray(skin, np.float64), np.asarray(nonskin, np.float64)
    if skin.ndim != 2 or nonskin.ndim != 2 or skin.shape[1:] != (DESCRIPTOR_SIZE,) or nonskin.shape[1:] != (DESCRIPTOR_SIZE,):
        raise GateConfigError(None, f"descriptors must be (n, {DESCRIPTOR_SIZE})")
    if len(skin) < MIN_PHOTOS_TO_FIT or len(nonskin) < MIN_PHOTOS_TO_FIT:
        raise GateConfigError(None, f"need at least {MIN_PHOTOS_TO_FIT} skin and {MIN_PHOTOS_TO_FIT} non-skin photos, "
                                    f"got {len(skin)} and {len(nonskin)}")
    x = np.vstack([skin, nonskin])
    y = np.r_[np.zeros(len(skin)), np.ones(len(nonskin))]
    fold = np.r_[contrast_folds(list(skin_groups)), contrast_folds(list(nonskin_groups))]  # each class dealt apart
    scores = np.empty(len(x))
    for f in range(CONTRAST_FOLDS):
        held = fold == f
        if held.any():
            w, b = _logistic(x[~held], y[~held], l2)
            scores[held] = x[held] @ w + b
    weights, bias = _logistic(x, y, l2)
    return weights, bias, scores


# ---------------------------------------------------------------- the learned check

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
            # imported here: LiteRT is needed only by a config that uses the learned check
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
def load_skin_check(path: str) -> SkinCheck:
    """The SkinCheck of a file, loaded once per process."""
    return SkinCheck(path)
