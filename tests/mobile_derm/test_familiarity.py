import numpy as np
import pytest

from mobile_derm.model import familiarity
from mobile_derm.errors import ConfigError


def _two_classes(rng, n=400, d=20):
    """Two elongated class clouds sharing one covariance."""
    mix = rng.normal(size=(d, d))
    y = np.tile([0, 1], n // 2)
    x = rng.normal(size=(n, d)) @ mix
    x[y == 1] += 6.0
    return x, y, mix


def test_distance_is_the_mahalanobis_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    x, y, _ = _two_classes(rng)
    model = familiarity.fit(x, y, n_components=20)  # all directions kept: exact Mahalanobis
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])
    within = x - means[y]
    inv = np.linalg.inv(within.T @ within / len(x))
    probe = rng.normal(size=(5, 20)) * 3
    expected = np.min([np.einsum("ij,jk,ik->i", probe - m, inv, probe - m) for m in means], axis=0)
    np.testing.assert_allclose(model.distance(probe), expected, rtol=5e-3)  # the fit adds a tiny ridge


def test_threshold_keeps_the_requested_fraction_and_flags_far_points():
    rng = np.random.default_rng(1)
    x, y, mix = _two_classes(rng, n=2000)
    model = familiarity.fit(x[:1000], y[:1000], n_components=20)
    model.calibrate(x[1000:1500], keep_fraction=0.95)
    kept = ~model.unfamiliar(x[1500:])
    assert 0.9 < kept.mean() < 0.99  # new photos of the same kind: about 95% kept
    # a point along a direction the classes never vary in is far, even if its plain
    # Euclidean distance is small compared with the classes' own spread
    quiet = np.linalg.svd(mix)[2][-1]  # the direction of least spread
    near_but_odd = x[:1000][y[:1000] == 0].mean(0) + 3.0 * quiet
    assert model.unfamiliar(near_but_odd[None])[0]
    assert np.linalg.norm(3.0 * quiet) < np.linalg.norm(x[:1000].std(0))


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    x, y, _ = _two_classes(rng)
    model = familiarity.fit(x, y, 8).calibrate(x, 0.9)
    model.save(tmp_path / familiarity.FILENAME)
    again = familiarity.FamiliarityModel.load(tmp_path / familiarity.FILENAME)
    np.testing.assert_allclose(again.distance(x[:7]), model.distance(x[:7]))
    assert again.threshold == model.threshold and again.keep_fraction == 0.9
    assert [p.name for p in tmp_path.iterdir()] == [familiarity.FILENAME]  # no temp file left behind


def test_bad_inputs_are_typed_errors(tmp_path):
    rng = np.random.default_rng(3)
    x, y, _ = _two_classes(rng)
    with pytest.raises(ConfigError, match="threshold"):
        familiarity.fit(x, y, 4).unfamiliar(x)
    with pytest.raises(ConfigError, match="keep_fraction"):
        familiarity.fit(x, y, 4).calibrate(x, 1.5)
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="f.npz"):
        familiarity.FamiliarityModel.load(tmp_path / "f.npz")


def test_non_skin_images_are_made_by_code_in_four_kinds_and_repeat_with_the_seed():
    images = familiarity.non_skin_images(32, n=8, seed=3)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, familiarity.non_skin_images(32, n=8, seed=3))
    assert images[0].std() > 50  # noise
    assert images[1].reshape(-1, 3).std(axis=0).max() == 0  # one flat colour
    assert len(np.unique(images[2].reshape(-1, 3), axis=0)) == 2  # stripes of two colours
    assert images[3].min() < 100 < images[3].mean()  # dark text on a light page
