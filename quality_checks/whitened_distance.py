"""How far is a point from the points a model was fitted on, in units of their own spread?

The project asks "is this like what we have seen?" in two places, and both measure it
the same way: centre the features (and, optionally, divide each by its spread), project
them on the main directions of the fitting data and whiten there, so that every kept
direction has unit spread; the distance is then a plain squared Euclidean one to the
nearest centre. Optionally the squared distance *from* the kept subspace is added, in
units of its typical value, so a point that differs in ways the fitting data never
varies counts as far too.

- the quality gate's not-skin check (``mobile_derm_quality.not_skin``): one centre (the
  mean), each feature standardised, whitened by the spread along each direction, with
  the distance from the subspace (``fit_one_class``);
- the classifier's familiarity model (``mobile_derm.model.familiarity``): one centre per
  class, whitened by the within-class covariance, without the subspace term.

numpy only: this is the lowest layer, shared by the gate and the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Floor on a feature's standard deviation: features (nearly) constant on the fitting
# data (e.g. no green hue in any skin photo) would otherwise divide by ~0 and dominate.
MIN_SCALE = 1e-3


@dataclass
class WhitenedDistance:
    mean: np.ndarray  # (D,) feature mean of the fitting data
    projection: np.ndarray  # (D, k) (standardised) features -> whitened coordinates along the main directions
    centres: np.ndarray | None = None  # (C, k) in whitened coordinates; None: the mean alone
    scale: np.ndarray | None = None  # (D,) per-feature spread divided out first; None: features used as they are
    # typical squared distance of the fitting data from the k-dim subspace; None: that distance is not counted.
    # It needs orthogonal projection columns (principal directions scaled by their spreads, as fit_one_class makes).
    residual_scale: float | None = None

    def __post_init__(self):
        if self.residual_scale is not None:
            # unit-length directions of the subspace, for the residual: computed once, not per point
            self._directions = self.projection / np.linalg.norm(self.projection, axis=0)

    @property
    def n_directions(self) -> int:
        return int(self.projection.shape[1])

    def standardised(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, np.float64) - self.mean
        return z if self.scale is None else z / self.scale

    def squared_distances(self, features: np.ndarray) -> np.ndarray:
        """Per row of ``features`` (n, D): the squared whitened distance to the nearest
        centre, plus the squared distance from the subspace / residual_scale if counted."""
        z = self.standardised(np.atleast_2d(features))
        w = z @ self.projection
        if self.centres is None:
            d = (w * w).sum(axis=1)
        else:
            # |w - c|^2 = |w|^2 - 2 w.c + |c|^2, for all centres at once
            d = (w * w).sum(axis=1, keepdims=True) - 2.0 * w @ self.centres.T + (self.centres**2).sum(axis=1)
            d = np.maximum(d.min(axis=1), 0.0)
        if self.residual_scale is not None:
            residual = z - (z @ self._directions) @ self._directions.T
            d = d + (residual * residual).sum(axis=1) / self.residual_scale
        return d


def principal_directions(centred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` main directions of centred data (rows), as unit columns (D, k), and the
    data's spread (standard deviation) along each."""
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k].T, s[:k] / np.sqrt(len(centred))


def fit_one_class(x: np.ndarray, n_components: int) -> WhitenedDistance:
    """The one-class model of the rows of ``x``: standardised features, whitened along
    their ``n_components`` main directions (fewer if the data has fewer), plus the distance
    from that subspace. Its squared distance is about k + 1 for a typical row."""
    x = np.asarray(x, np.float64)
    k = int(min(n_components, len(x) - 1, x.shape[1]))
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), MIN_SCALE)
    z = (x - mean) / scale
    directions, spread = principal_directions(z, k)
    residual = z - (z @ directions) @ directions.T
    residual_scale = max(float(np.mean(np.sum(residual**2, axis=1))), 1e-6)
    return WhitenedDistance(mean, directions / np.maximum(spread, 1e-6), scale=scale, residual_scale=residual_scale)
