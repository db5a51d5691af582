"""Model-input pixels: crop, resize and normalization, each on its own."""
import numpy as np
import pytest

from mobile_derm.app.preprocess import center_square, normalize, resize_square


def _ramp(h: int, w: int, step: int = 2) -> np.ndarray:
    """A horizontal grey ramp: column x has value step * x (so sampling positions are readable)."""
    row = (step * np.arange(w)).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], h, axis=0), 3, axis=2)


def test_center_square_takes_the_middle_of_the_long_side():
    rgb = _ramp(10, 16)
    sq = center_square(rgb)
    assert sq.shape == (10, 10, 3)
    assert sq[0, 0, 0] == 2 * 3  # columns 3..12 of 16


def test_enlarging_maps_corners_like_mediapipe():
    """Tensor column i samples source column left + i * side / size (MediaPipe's corner
    mapping), not cv2.resize's half-pixel-centre mapping (which samples 0.25 px earlier
    here: 2 grey levels lower on this ramp)."""
    h, w, size = 20, 28, 40  # side 20, left offset 4, scale 0.5
    out = resize_square(_ramp(h, w, step=8), size)
    assert out.shape == (size, size, 3)
    src_x = 4 + np.arange(size) * 0.5  # up to 23.5: the pixels right of the square are real pixels
    np.testing.assert_allclose(out[10, :, 0], 8 * src_x, atol=0.51)
    # Below the last row the border is replicated, not black.
    assert out[-1, :, 0].min() >= 32


def test_shrinking_averages_instead_of_sampling():
    """A 1-pixel checkerboard shrunk 4x must come out flat grey (area averaging),
    where point sampling would alias it to black or white."""
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    rgb = np.repeat(board[:, :, None], 3, axis=2)
    out = resize_square(rgb, 16)
    assert out.shape == (16, 16, 3)
    assert np.all(np.abs(out.astype(int) - 127) <= 1)


def test_same_size_is_a_crop_only():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_square(rgb, 32), rgb[:, 4:36])


@pytest.mark.parametrize("mean,std", [((127.0,) * 3, (128.0,) * 3), ((0.0,) * 3, (1.0,) * 3)])
def test_normalize_is_per_channel_affine(mean, std):
    px = np.array([[[0, 127, 255]]], dtype=np.uint8)
    out = normalize(px, mean, std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], (np.array([0, 127, 255]) - np.array(mean)) / np.array(std))
