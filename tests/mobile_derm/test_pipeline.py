import numpy as np
import pytest

from mobile_derm.tf_setup import tf
from mobile_derm.training import pipeline

SEED = tf.constant([1, 2], tf.int64)  # a stateless seed


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
    for k in range(5):
        out = pipeline.random_lighting(textured, SEED + k).numpy()
        assert out.min() >= 0 and out.max() <= 255


def test_random_rotation_keeps_shape_and_content(textured):
    out = pipeline.random_rotation(textured, SEED).numpy()
    assert out.shape == (32, 32, 3)
    # a rotation with reflection padding keeps the colour distribution close
    assert abs(out.mean() - textured.numpy().mean()) < 10


def test_jpeg_artefacts_change_pixels_but_not_the_picture(textured):
    out = pipeline.jpeg_artefacts(textured, SEED, 40, 40).numpy()
    diff = np.abs(out - textured.numpy())
    assert diff.mean() > 1
    assert abs(out.mean() - textured.numpy().mean()) < 5


def test_augment_returns_requested_size(textured):
    out = pipeline.augment(tf.cast(textured, tf.uint8), 24, SEED)
    assert out.shape == (24, 24, 3)


def _noisy_step(noise: float = 12.0) -> np.ndarray:
    """A dark half and a light half (a lesion's border), with pixel noise."""
    step = np.full((40, 40, 3), 60.0, np.float32)
    step[:, 20:] = 200.0
    return step + np.random.default_rng(1).normal(0.0, noise, step.shape).astype(np.float32)


def test_edge_preserving_smooth_removes_noise_and_keeps_the_edge():
    noisy = _noisy_step()
    out = pipeline.edge_preserving_smooth(tf.constant(noisy), tf.constant(40.0)).numpy()
    flat = (slice(4, 36), slice(3, 15))
    assert out[flat].std() < 0.5 * noisy[flat].std()
    # across the border the step stays as steep as it was; a plain blur of the same reach spreads it
    blurred = pipeline.gaussian_blur(tf.constant(noisy), tf.constant(1.5)).numpy()
    rise = lambda img: float(np.median(img[4:36, 20] - img[4:36, 19]))  # noqa: E731
    assert rise(out) > 0.9 * 140 and rise(blurred) < 0.75 * 140


def test_edge_preserving_smooth_leaves_a_flat_picture_alone():
    flat = np.full((16, 16, 3), 123.0, np.float32)
    out = pipeline.edge_preserving_smooth(tf.constant(flat), tf.constant(10.0)).numpy()
    np.testing.assert_allclose(out, flat, atol=1e-3)


def test_low_light_loses_fine_texture_the_more_the_darker():
    """Skin-like texture (a few levels round mid-tone): at a low signal-to-noise ratio the
    denoiser wipes out more of it (the seeded noise is the same draw, only its scale differs)."""
    image = (140 + 10 * np.random.default_rng(0).standard_normal((32, 32, 3))).astype(np.float32)

    def detail_kept(snr):
        out = pipeline.low_light(tf.constant(image), SEED, snr, snr).numpy()
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 255
        assert abs(out.mean() - image.mean()) < 2  # the phone brings the brightness back, borders too
        return np.corrcoef(out.ravel(), image.ravel())[0, 1]

    bright, dim, dark = detail_kept(60.0), detail_kept(10.0), detail_kept(3.0)
    assert bright > dim > dark
    assert bright > 0.95 and dark < 0.6


def test_low_light_is_a_function_of_its_seed(textured):
    a, b = (pipeline.low_light(textured, SEED).numpy() for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, pipeline.low_light(textured, SEED + 1).numpy())


def test_augment_adds_low_light_only_when_asked(textured):
    image = tf.cast(textured, tf.uint8)
    plain = pipeline.augment(image, 24, SEED).numpy()
    np.testing.assert_array_equal(plain, pipeline.augment(image, 24, SEED, 0.0).numpy())
    always = pipeline.augment(image, 24, SEED, 1.0).numpy()
    assert always.shape == (24, 24, 3) and np.abs(always - plain).mean() > 1
    # the step's own seeds are apart from the chain's: with it, the rest of the chain draws as without
    seeds = [SEED + k for k in range(20)]
    changed = [not np.array_equal(pipeline.augment(image, 24, s, 0.3).numpy(), pipeline.augment(image, 24, s).numpy())
               for s in seeds]
    assert 0 < sum(changed) < len(seeds)


def test_eval_dataset_normalizes_exactly_and_keeps_order():
    pixels = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 127, 255)])
    ds = pipeline.make_dataset(pixels, np.array([0, 1, 2]), (127.0,) * 3, (128.0,) * 3, batch_size=3, training=False)
    x, y = next(iter(ds))
    np.testing.assert_allclose(x.numpy()[:, 0, 0, 0], [-127 / 128, 0.0, 1.0])
    assert y.numpy().tolist() == [0, 1, 2]


def test_workers_split_each_global_batch_of_the_one_process_order():
    """Under several workers, global step k is one process's k-th batch (the same images,
    the same augmentation), each worker taking its slice of it: the number of workers
    changes the summation order and BatchNorm's batches, not which images meet."""
    n, global_batch, epochs = 36, 8, 2
    pixels = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(n) % 6
    rows = np.arange(n, dtype=np.float32)  # as the per-image weights: which image each element is

    def batches(context=None):
        ds = pipeline.training_dataset(pixels, labels, rows, [0.0] * 3, [1.0] * 3, global_batch, 3, epochs, context)
        return [(image, weight.astype(int)) for image, _, weight in ds.as_numpy_iterator()]

    alone = batches()
    workers = [batches(tf.distribute.InputContext(2, worker, 2)) for worker in (0, 1)]
    steps = n // global_batch  # whole global batches only: 4 per epoch, 36 images leave 4 out
    assert len(alone) == epochs * (steps + 1) and [len(w) for w in workers] == [epochs * steps] * 2
    for epoch in range(epochs):
        for step in range(steps):
            image, rows_alone = alone[epoch * (steps + 1) + step]
            parts = [w[epoch * steps + step] for w in workers]
            assert [len(r) for _, r in parts] == [global_batch // 2] * 2
            np.testing.assert_array_equal(np.concatenate([r for _, r in parts]), rows_alone)
            np.testing.assert_array_equal(np.concatenate([i for i, _ in parts]), image)


def test_a_resumed_stream_starts_at_the_first_epoch_not_done():
    """A run resumed after epoch k meets the batches an uninterrupted run meets from epoch k on
    (the same images, the same augmentation), not epoch 0's again."""
    n, batch, epochs = 20, 8, 3
    pixels = np.random.default_rng(1).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    rows = np.arange(n, dtype=np.float32)

    def batches(first_epoch):
        ds = pipeline.training_dataset(pixels, np.arange(n) % 4, rows, [0.0] * 3, [1.0] * 3, batch, 5, epochs,
                                       first_epoch=first_epoch)
        return list(ds.as_numpy_iterator())

    whole, resumed = batches(0), batches(1)
    per_epoch = len(whole) // epochs  # 3 batches: 8, 8 and 4 images
    assert len(resumed) == (epochs - 1) * per_epoch
    for (image, _, row), (image_whole, _, row_whole) in zip(resumed, whole[per_epoch:]):
        np.testing.assert_array_equal(row, row_whole)
        np.testing.assert_array_equal(image, image_whole)
    assert not np.array_equal(resumed[0][2], whole[0][2])  # epoch 1's order is not epoch 0's
