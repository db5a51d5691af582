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
