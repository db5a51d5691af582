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
after one matrix product: ``min_c |(f - mean) @ projection - class_means[c]|^2``. That
form is a Dense layer and a nearest-mean search, which an exported graph can carry.
The threshold is the distance that ``keep_fraction`` of validation photos stay under.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_path

FILENAME = "familiarity.npz"
N_COMPONENTS = 256  # of 1280 Lite0 features; measured on HAM10000: 128 -> 0.92, 256 -> 0.96 of OOD photos flagged


@dataclass
class FamiliarityModel:
    mean: np.ndarray  # (D,) training feature mean
    projection: np.ndarray  # (D, k) principal directions, whitened by the within-class covariance
    class_means: np.ndarray  # (C, k) class means in the whitened space
    threshold: float = float("nan")  # distance kept by keep_fraction of validation photos
    keep_fraction: float = float("nan")

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Squared whitened distance to the nearest class mean, per row of ``features``."""
        z = (np.asarray(features, np.float64) - self.mean) @ self.projection
        # |z - m|^2 = |z|^2 - 2 z.m + |m|^2, for all classes at once
        d = (z**2).sum(axis=1, keepdims=True) - 2.0 * z @ self.class_means.T + (self.class_means**2).sum(axis=1)
        return np.maximum(d.min(axis=1), 0.0)

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

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to the temp name
                np.savez(fh, mean=self.mean, projection=self.projection, class_means=self.class_means,
                         threshold=self.threshold, keep_fraction=self.keep_fraction)

    @classmethod
    def load(cls, path: str | Path) -> "FamiliarityModel":
        path = Path(path)
        try:
            with np.load(path) as d:
                return cls(d["mean"], d["projection"], d["class_means"], float(d["threshold"]), float(d["keep_fraction"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(path, f"not a familiarity model ({exc})") from None


def fit(features: np.ndarray, labels: np.ndarray, n_components: int = N_COMPONENTS) -> FamiliarityModel:
    """Class means and tied covariance of training features, in their main directions."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ConfigError(None, "familiarity needs a 2-D feature array with one label per row")
    mean = x.mean(axis=0)
    k = int(min(n_components, x.shape[1], len(x) - len(classes)))
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    z = (x - mean) @ vt[:k].T
    means = np.stack([z[y == c].mean(axis=0) for c in classes])
    within = z - means[np.searchsorted(classes, y)]
    cov = within.T @ within / len(z)
    # a small ridge keeps directions with almost no within-class spread from exploding
    cov += 1e-6 * np.trace(cov) / k * np.eye(k)
    whiten = np.linalg.inv(np.linalg.cholesky(cov)).T  # (z @ whiten) has identity within-class covariance
    return FamiliarityModel(mean, vt[:k].T @ whiten, means @ whiten)
