"""The measurement helpers that stand in for a whole-image numpy or OpenCV call (to save time): each gives
exactly what that call gives."""
import cv2
import numpy as np
import pytest

from mobile_derm_quality import features, not_skin


@pytest.mark.parametrize("n", [1, 2, 7, 100, 5000])
@pytest.mark.parametrize("q", [0, 10, 20, 50, 90, 99.5, 100])
def test_quantile_is_numpys_percentile_below_the_subsample_size(n, q):
    values = np.random.default_rng(n).normal(size=n).astype(np.float32)
    assert features._quantile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-6, abs=1e-7)


def test_quantile_with_ties_and_a_subsample():
    values = np.repeat(np.arange(20, dtype=np.float32), 1000)  # 20000 values: subsampled to ~8192
    assert features._quantile(values, 50) == pytest.approx(float(np.percentile(values[:: values.size // 8192], 50)))
    assert features._quantile(np.full(9, 3.0, np.float32), 90) == 3.0


def test_sobel_at_points_is_opencvs_sobel():
    img = np.random.default_rng(0).uniform(0, 255, (40, 57)).astype(np.float32)
    ys, xs = np.meshgrid(np.arange(1, 39), np.arange(1, 56), indexing="ij")
    i = (ys * img.shape[1] + xs).ravel()
    sx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)[1:-1, 1:-1].ravel()
    sy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)[1:-1, 1:-1].ravel()
    # float32 sums in another order than OpenCV's: equal within a few units in the last place
    np.testing.assert_allclose(features._sobel_at(img, i, 1), np.abs(sx), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(features._sobel_at(img, i, 0), np.abs(sy), rtol=1e-6, atol=1e-3)
    px, py = features._sobel_pair_at(img, i)
    np.testing.assert_allclose(px, sx, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(py, sy, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("n", [64, 255, 250])
def test_grid_profile_is_its_definition(n):
    p = np.random.default_rng(n).uniform(0, 20, n).astype(np.float32)
    # the definition, whole-array numpy: high-pass, minus the 8 px-periodic part, circular 3 px mean
    x = p.astype(np.float64)
    k = features.GRID_HIGHPASS // 2
    padded = np.concatenate((x[1 : k + 1][::-1], x, x[-k - 1 : -1][::-1]))  # BORDER_REFLECT_101
    h = x - np.convolve(padded, np.ones(features.GRID_HIGHPASS) / features.GRID_HIGHPASS, "valid")
    whole = n // 8 * 8
    h = h - np.resize(h[:whole].reshape(-1, 8).mean(axis=0), n)
    expected = (np.roll(h, -1) + h + np.roll(h, 1)) / 3
    np.testing.assert_allclose(features._grid_profile(p), expected, rtol=1e-9, atol=1e-9)


def test_descriptor_orientation_and_edge_shares():
    """The descriptor's orientation histogram puts a vertical edge's gradient (along x) in bin 0 and its edge
    shares count the pixels above each level."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 200
    d = not_skin.describe(img)
    start = 4 * not_skin.GRID * not_skin.GRID + not_skin.CHROMA_BINS ** 2
    orient = d[start : start + not_skin.ORIENTATION_BINS]
    edges = d[start + not_skin.ORIENTATION_BINS : start + not_skin.ORIENTATION_BINS + 3]
    assert orient[0] == pytest.approx(1.0, abs=1e-5)
    assert edges[0] == pytest.approx(2 * 64 / 64 ** 2) and edges[2] == pytest.approx(2 * 64 / 64 ** 2)
