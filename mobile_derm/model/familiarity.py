"""Is this photo like the ones the classifier was trained on? Abstention in feature space.

Han et al. warn that a model cannot interpret images of things it was not trained on,
and the softmax does not know either: on the 50 everyday photos of ``../shared/data/ood``
the HAM10000 model's top probability clears its abstention threshold for 86% of them.
What does separate them is where the photo lands among the backbone's features
(Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
samples"): each class is a cloud around its mean with a shared covariance, and a photo
far from every class mean, in units of that covariance, is unfamiliar.

The model keeps the ``n_components`` main directions of the training features and
whitens them by the within-class covariance, so the distance is a plain Euclidean one
after one matrix product: ``min_c |(f - mean) @ projection - centres[c]|^2`` (the
project's one whitened-distance model, ``mobile_derm_quality.whitened_distance``, with
one centre per class and no distance-from-the-subspace term). That form is a Dense
layer and a nearest-mean search, which an exported graph can carry.
The threshold is the distance that ``keep_fraction`` of validation photos stay under.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_path
from mobile_derm_quality.whitened_distance import WhitenedDistance, principal_directions

FILENAME = "familiarity.npz"
N_COMPONENTS = 256  # of 1280 Lite0 features; measured on HAM10000: 128 -> 0.92, 256 -> 0.96 of OOD photos flagged


@dataclass
class FamiliarityModel(WhitenedDistance):
    """``mean``: (D,) training feature mean; ``projection``: (D, k) principal directions,
    whitened by the within-class covariance; ``centres``: (C, k) the class means there."""

    threshold: float = float("nan")  # distance kept by keep_fraction of validation photos
    keep_fraction: float = float("nan")

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Squared whitened distance to the nearest class mean, per row of ``features``."""
        return self.squared_distances(features)

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        if not np.isfinite(self.threshold):
            raise ConfigError(None, "familiarity model has no threshold yet (calibrate it on validation features)")
        return self.distance(features) > self.threshold

    def calibrate(self, val_features: np.ndarray, keep_fraction: float) -> "FamiliarityModel":
        if not 0.0 < keep_fraction <= 1.0:
            raise ConfigError(None, f"keep_fraction must lie in (0, 1], not {keep_fraction}")
        self.threshold = float(np.quantile(self.distance(val_features), keep_fraction))
        self.keep_fraction = float(keep_fraction)
        return self

    def summary(self) -> dict:
        """What ModelInfo records: how to read the exported second output."""
        return {"output": OUTPUT_NAME, "abstain_above": 0.5, "threshold": round(self.threshold, 4),
                "keep_fraction": self.keep_fraction, "n_components": int(self.projection.shape[1]),
                "slope": UNFAMILIARITY_SLOPE}

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to the temp name
                np.savez(fh, mean=self.mean, projection=self.projection, class_means=self.centres,
                         threshold=self.threshold, keep_fraction=self.keep_fraction)

    @classmethod
    def load(cls, path: str | Path) -> "FamiliarityModel":
        path = Path(path)
        try:
            with np.load(path) as d:
                return cls(d["mean"], d["projection"], centres=d["class_means"], threshold=float(d["threshold"]),
                           keep_fraction=float(d["keep_fraction"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(path, f"not a familiarity model ({exc})") from None


def load_for_run(run_dir: str | Path, info) -> FamiliarityModel | None:
    """The run's model, or None for a run whose ModelInfo records none (trained before it existed)."""
    if info.familiarity is None:
        return None
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise ConfigError(path, "not found, but model_info.json records a familiarity model")
    return FamiliarityModel.load(path)


def fit(features: np.ndarray, labels: np.ndarray, n_components: int = N_COMPONENTS) -> FamiliarityModel:
    """Class means and tied covariance of training features, in their main directions."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ConfigError(None, "familiarity needs a 2-D feature array with one label per row")
    mean = x.mean(axis=0)
    k = int(min(n_components, x.shape[1], len(x) - len(classes)))
    directions, _ = principal_directions(x - mean, k)
    z = (x - mean) @ directions
    means = np.stack([z[y == c].mean(axis=0) for c in classes])
    within = z - means[np.searchsorted(classes, y)]
    cov = within.T @ within / len(z)
    # a small ridge keeps directions with almost no within-class spread from exploding
    cov += 1e-6 * np.trace(cov) / k * np.eye(k)
    whiten = np.linalg.inv(np.linalg.cholesky(cov)).T  # (z @ whiten) has identity within-class covariance
    return FamiliarityModel(mean, directions @ whiten, centres=means @ whiten)


# The exported models' second output: sigmoid(SLOPE * (distance / threshold - 1)), so 0.5
# is the abstention threshold, 0.98 twice its distance, 0.02 a photo at a class mean.
# A sigmoid has a fixed [0, 1] output range, but the tensors before it (the distance,
# distance / threshold) get their int8 ranges from the calibration images, and any value
# above the largest one seen is clipped to it. Calibrated on skin photos alone, that
# largest ratio was below 1 (0.09 on the tiny demo), so every photo, however unlike the
# training photos, scored as a familiar one and the int8 model never abstained. So the
# graph itself sets those ranges (``with_unfamiliarity``: RANGE_BOUND below), whatever the
# calibration images are; generated non-skin images (``non_skin_images``) only check it.
UNFAMILIARITY_SLOPE = 4.0
# The integer models' unfamiliarity ranges reach at least this many thresholds: a photo
# farther away is clipped to it and scores sigmoid(4 * 2) = 0.9997, still an abstention.
RANGE_BOUND = 3.0
OUTPUT_NAME = "unfamiliarity"


def unfamiliarity_score(distance: np.ndarray, threshold: float) -> np.ndarray:
    """The exported output's value for a distance (numpy, for checks and the Keras path)."""
    return 1.0 / (1.0 + np.exp(-UNFAMILIARITY_SLOPE * (np.asarray(distance, np.float64) / threshold - 1.0)))


def non_skin_images(size: int, n: int = 48, seed: int = 0) -> np.ndarray:
    """``n`` generated RGB uint8 images of ``size`` px that are nothing like skin, in four
    kinds taken in turn: uniform noise, flat colours, stripes, and dark text on a light
    page. Made by code (no data needed), they calibrate the unfamiliarity score's integer
    ranges and let the benchmark and tests check that integer models still abstain."""
    import cv2

    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 1:
            image = np.empty((size, size, 3), np.uint8)
            image[:] = rng.integers(0, 256, 3)
        elif kind == 2:
            width = int(rng.integers(1, max(2, size // 8)))
            on = (np.arange(size) // width) % 2 == 0
            image = np.empty((size, size, 3), np.uint8)
            image[:] = rng.integers(0, 256, 3)
            image[on if rng.random() < 0.5 else (slice(None), on)] = rng.integers(0, 256, 3)
        else:
            image = np.full((size, size, 3), int(rng.integers(200, 256)), np.uint8)
            line = max(6, size // 10)
            for y in range(line, size, line):
                text = "".join(chr(int(c)) for c in rng.integers(97, 123, 12))
                cv2.putText(image, text, (1, y), cv2.FONT_HERSHEY_SIMPLEX, line / 30, (0, 0, 0), 1)
        images[i] = image
    return images


def with_unfamiliarity(classifier, model: FamiliarityModel):
    """``classifier`` (float or quantization-aware Keras) with a second output, the
    unfamiliarity score, computed in the graph from the head's input features."""
    from mobile_derm.tf_setup import keras, tf

    head = next(l for l in classifier.layers if l.name in ("head", "quant_head"))  # tfmot renames wrapped layers
    features = head.input
    k = model.projection.shape[1]
    project = keras.layers.Dense(k, name="familiarity_projection")
    z = project(features)
    project.set_weights([model.projection.astype(np.float32), (-model.mean @ model.projection).astype(np.float32)])
    means = tf.constant(model.centres[None].astype(np.float32))  # (1, C, k)
    # per-class differences, squared and summed: exact in integer models too, unlike
    # |z|^2 - 2 z.m + |m|^2, whose large terms cancel
    diff = keras.layers.Lambda(lambda t: t[:, None, :] - means, name="familiarity_offsets")(z)
    distance = keras.layers.Lambda(lambda t: tf.reduce_min(tf.reduce_sum(t * t, axis=-1), axis=-1, keepdims=True),
                                   name="familiarity_distance")(diff)
    slope, threshold = UNFAMILIARITY_SLOPE, float(model.threshold)
    # The distance travels beside a constant column holding RANGE_BOUND thresholds, so every
    # integer tensor from here to the sigmoid is calibrated on a value past the abstention
    # threshold, whatever the calibration images were (see RANGE_BOUND); the column is dropped at the end.
    bound = tf.constant([[RANGE_BOUND * threshold]], tf.float32)
    with_bound = keras.layers.Lambda(lambda d: tf.concat([d, tf.zeros_like(d) + bound], axis=-1),
                                     name="familiarity_range_bound")(distance)
    scores = keras.layers.Lambda(lambda d: tf.sigmoid(slope * (d / threshold - 1.0)),
                                 name="familiarity_scores")(with_bound)
    score = keras.layers.Lambda(lambda s: s[:, :1], name=OUTPUT_NAME)(scores)
    return keras.Model(classifier.input, [classifier.output, score], name=f"{classifier.name}_with_{OUTPUT_NAME}")
