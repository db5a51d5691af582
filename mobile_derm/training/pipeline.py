"""tf.data input pipeline and phone-capture augmentation.

Images arrive as a cached uint8 array (decoded and resized once by
``mobile_derm.app.preprocess``), so each epoch costs no JPEG decoding: both cores
go to augmentation and the network. Each augmentation is a small function of
one float image in 0..255 pixel units, testable on its own; ``augment`` chains
them with the probabilities below.
"""
from __future__ import annotations

import math

import numpy as np

from mobile_derm.tf_setup import tf


def random_resized_crop(image, size: int, min_area: float = 0.6):
    """Zoom in on a random region (distance to the lesion varies on a phone)."""
    area = tf.random.uniform([], min_area, 1.0)
    aspect = tf.exp(tf.random.uniform([], math.log(3 / 4), math.log(4 / 3)))
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0 = tf.random.uniform([], 0.0, 1.0 - h)
    x0 = tf.random.uniform([], 0.0, 1.0 - w)
    box = tf.stack([y0, x0, y0 + h, x0 + w])[None]
    return tf.image.crop_and_resize(image[None], box, [0], [size, size])[0]


def random_rotation(image, max_degrees: float = 20.0):
    """Dihedral flips/rot90 plus a small tilt, reflecting at the borders."""
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_flip_up_down(image)
    image = tf.image.rot90(image, tf.random.uniform([], 0, 4, dtype=tf.int32))
    angle = tf.random.uniform([], -max_degrees, max_degrees) * math.pi / 180.0
    size = tf.cast(tf.shape(image)[0], tf.float32)
    c, s = tf.cos(angle), tf.sin(angle)
    centre = (size - 1.0) / 2.0
    # Output->input mapping of a rotation about the centre.
    transform = tf.stack([c, -s, centre - c * centre + s * centre, s, c, centre - s * centre - c * centre, 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]


def random_lighting(image, brightness: float = 0.25, contrast: float = 0.25, white_balance: float = 0.12):
    """Exposure, contrast and white-balance shifts of indoor/outdoor phone light."""
    gain = tf.random.uniform([], 1.0 - brightness, 1.0 + brightness)
    mean = tf.reduce_mean(image)
    factor = tf.random.uniform([], 1.0 - contrast, 1.0 + contrast)
    image = (image - mean) * factor + mean
    channel_gain = tf.random.uniform([3], 1.0 - white_balance, 1.0 + white_balance)
    return tf.clip_by_value(image * gain * channel_gain, 0.0, 255.0)


def gaussian_blur(image, sigma):
    """Separable Gaussian blur (mild defocus / hand shake)."""
    radius = 3
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    kernel = kernel / tf.reduce_sum(kernel)
    kx = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(image[None], kx, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "SAME")[0]


def jpeg_artefacts(image, min_quality: int = 40, max_quality: int = 95):
    """Re-encode as JPEG: messaging apps and uploads recompress photos."""
    quality = tf.random.uniform([], min_quality, max_quality + 1, dtype=tf.int32)
    return tf.image.adjust_jpeg_quality(image / 255.0, quality) * 255.0


def augment(image, size: int):
    """The training-time chain (phone capture): geometry, light, then blur/JPEG sometimes."""
    image = tf.cast(image, tf.float32)
    image = random_resized_crop(image, size)
    image = random_rotation(image)
    image = random_lighting(image)
    image = tf.cond(
        tf.random.uniform([]) < 0.2,
        lambda: gaussian_blur(image, tf.random.uniform([], 0.3, 1.2)),
        lambda: image,
    )
    image = tf.cond(tf.random.uniform([]) < 0.3, lambda: jpeg_artefacts(image), lambda: image)
    image = tf.ensure_shape(image, [size, size, 3])
    return image


def make_dataset(
    pixels: np.ndarray,
    labels: np.ndarray | None,
    mean,
    std,
    batch_size: int,
    training: bool,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
    shuffle: bool | None = None,
):
    """Batches of normalized images ((pixel - mean) / std) and labels.

    ``training`` augments (``augment``: phone capture) and shuffles; ``shuffle``
    overrides the shuffling alone (distillation wants shuffled but unaugmented images)."""
    size = int(pixels.shape[1])
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    parts = [pixels] + ([labels] if labels is not None else []) + ([sample_weights] if sample_weights is not None else [])
    ds = tf.data.Dataset.from_tensor_slices(tuple(parts))
    if training if shuffle is None else shuffle:
        ds = ds.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)

    def prepare(image, *rest):
        image = augment(image, size) if training else tf.cast(image, tf.float32)
        return ((image - mean) / std, *rest)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    # A private, single-op-threaded pool for the input pipeline: on 2 cores the
    # default lets augmentation fight the training step for threads. Measured
    # here (Lite0, 160 px, batch 32): 15 img/s by default, 38-40 img/s with this.
    options = tf.data.Options()
    options.threading.private_threadpool_size = 2
    options.threading.max_intra_op_parallelism = 1
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)

