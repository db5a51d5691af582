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


@pytest.mark.parametrize("offset, step", [(2, 2), (2, 4), (1, 2)])
def test_grid_points_are_the_selected_points_flat_indices(offset, step):
    img = np.zeros((37, 53))
    grid = np.ascontiguousarray(np.random.default_rng(step).random(img[offset::step, offset::step].shape) > 0.7)
    k, i = features._grid_points(grid, offset, step, img.shape[1])
    gy, gx = np.nonzero(grid)
    np.testing.assert_array_equal(k, gy * grid.shape[1] + gx)
    np.testing.assert_array_equal(i, (offset + step * gy) * img.shape[1] + (offset + step * gx))


@pytest.mark.parametrize("with_roi", [True, False])
def test_noise_sigma_is_its_definition(with_roi):
    rng = np.random.default_rng(1)
    g = np.clip(np.round(rng.normal(128, 60, (120, 160))), 0, 255).astype(np.float32)  # whole numbers, some clipped
    roi = np.zeros(g.shape, bool)
    roi[10:100, 20:150] = with_roi
    sx, sy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    grad_b = np.abs(sx[1:-1:2, 1:-1:2]) + np.abs(sy[1:-1:2, 1:-1:2])
    # the definition: Immerkaer's residual at grid B, unclipped pixels of the ROI (all pixels without one),
    # the half with the smaller gradient, mean |residual| * sqrt(pi / 2) / 6
    r = np.abs(cv2.filter2D(g, -1, features.NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1:2, 1:-1:2])
    inner = g[1:-1:2, 1:-1:2]
    sel = (inner > features.NOISE_MIN_GREY) & (inner < features.NOISE_MAX_GREY)
    if with_roi:
        sel &= roi[1:-1:2, 1:-1:2]
    flat = sel & (grad_b <= features._quantile(grad_b[sel], 50))
    expected = np.mean(r[flat].astype(np.float64)) * np.sqrt(np.pi / 2.0) / 6.0
    assert features._noise_sigma(g, grad_b, roi) == pytest.approx(expected, rel=1e-6)


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


@pytest.mark.parametrize("n, max_lag", [(64, 21), (255, 48), (256, 48)])
def test_autocovariance_is_its_definition(n, max_lag):
    h = np.random.default_rng(n).normal(0, 3, n)
    expected = [np.dot(h[: n - lag], h[lag:]) / (n - lag) for lag in range(max_lag + 1)]
    np.testing.assert_allclose(features._autocovariance(h, max_lag), expected, rtol=1e-12, atol=1e-12)


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
