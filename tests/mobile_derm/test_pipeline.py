import numpy as np
import pytest

from mobile_derm.tf_setup import tf
from mobile_derm.training import pipeline


@pytest.fixture(scope="module")
def textured():
    rng = np.random.default_rng(0)
    return tf.constant(rng.integers(0, 256, (32, 32, 3)).astype(np.float32))


def test_gaussian_blur_smooths_and_keeps_the_mean(textured):
    out = pipeline.gaussian_blur(textured, tf.constant(1.0)).numpy()
    assert out.shape == (32, 32, 3)
    assert out.std() < 0.6 * textured.numpy().std()
    # interior mean is preserved (zero padding only darkens the border)
    assert abs(out[4:-4, 4:-4].mean() - textured.numpy()[4:-4, 4:-4].mean()) < 3


def test_random_lighting_stays_in_pixel_range(textured):
    tf.random.set_seed(1)
    for _ in range(5):
        out = pipeline.random_lighting(textured).numpy()
        assert out.min() >= 0 and out.max() <= 255


def test_random_rotation_keeps_shape_and_content(textured):
    out = pipeline.random_rotation(textured).numpy()
    assert out.shape == (32, 32, 3)
    # a rotation with reflection padding keeps the colour distribution close
    assert abs(out.mean() - textured.numpy().mean()) < 10


def test_jpeg_artefacts_change_pixels_but_not_the_picture(textured):
    out = pipeline.jpeg_artefacts(textured, 40, 40).numpy()
    diff = np.abs(out - textured.numpy())
    assert diff.mean() > 1
    assert abs(out.mean() - textured.numpy().mean()) < 5


def test_augment_returns_requested_size(textured):
    out = pipeline.augment(tf.cast(textured, tf.uint8), 24)
    assert out.shape == (24, 24, 3)


def test_eval_dataset_normalizes_exactly_and_keeps_order():
    pixels = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 127, 255)])
    ds = pipeline.make_dataset(pixels, np.array([0, 1, 2]), (127.0,) * 3, (128.0,) * 3, batch_size=3, training=False)
    x, y = next(iter(ds))
    np.testing.assert_allclose(x.numpy()[:, 0, 0, 0], [-127 / 128, 0.0, 1.0])
    assert y.numpy().tolist() == [0, 1, 2]


def test_light_augment_only_flips_turns_and_relights():
    # a 4-colour quadrant image: flips and quarter turns permute the quadrants,
    # lighting scales colours; nothing is zoomed, tilted or blurred
    img = np.zeros((16, 16, 3), np.uint8)
    img[:8, :8], img[:8, 8:], img[8:, :8], img[8:, 8:] = (200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 200)
    tf.random.set_seed(3)
    for _ in range(5):
        out = pipeline.light_augment(tf.constant(img), 16).numpy()
        assert out.shape == (16, 16, 3)
        quadrants = [out[:8, :8], out[:8, 8:], out[8:, :8], out[8:, 8:]]
        for q in quadrants:  # each quadrant stays one flat colour: no blur or tilt mixes them
            assert np.ptp(q.reshape(-1, 3), axis=0).max() < 1e-3
        whitest = max(range(4), key=lambda i: quadrants[i].min())
        assert quadrants[whitest].min() > 100  # the grey quadrant is still the brightest on every channel


def test_oversampling_draws_classes_at_the_requested_rates():
    # 900 images of class 0, 100 of class 1; square-root rates 1/sqrt(n) give a 30:10 mix
    labels = np.array([0] * 900 + [1] * 100)
    pixels = np.zeros((1000, 2, 2, 3), np.uint8)
    pixels[:, 0, 0, 1] = labels * 100  # each image carries its label in one pixel
    rates = 1 / np.sqrt(np.bincount(labels))
    ds = pipeline.make_dataset(pixels, labels, (0.0,) * 3, (1.0,) * 3, batch_size=100, training=True,
                               augmentation="none", class_rates=rates)
    drawn = np.concatenate([y.numpy() for _, y in ds.take(40)])
    assert len(drawn) == 4000  # endless: the caller decides the epoch length
    assert 0.22 < np.mean(drawn == 1) < 0.28
    # the pixels travel with their own label
    x, y = next(iter(ds))
    assert x.shape == (100, 2, 2, 3)
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 1], y.numpy() * 100)


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augmentation"):
        pipeline.make_dataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), (0.0,) * 3, (1.0,) * 3, 2, True, augmentation="heavy")
