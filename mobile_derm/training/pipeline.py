"""tf.data input pipeline and phone-capture augmentation.

Images arrive as a cached uint8 array (decoded and resized once by
``mobile_derm.app.preprocess``), so each epoch costs no JPEG decoding: both cores
go to augmentation and the network. Each augmentation is a small function of
one float image in 0..255 pixel units and a stateless seed, testable on its own;
``augment`` chains them with the probabilities below.

Fine-tuning reads ``training_dataset``: one stream over all epochs, each epoch's order
and each image's augmentation a function of (TrainConfig.seed, epoch, image index), so
a rerun gives the same batches and pictures, and the workers of a distributed run
each take their own share of every epoch (docs/distributed.md).
"""
from __future__ import annotations

import math

import numpy as np

from mobile_derm.tf_setup import tf


def _uniform(seed, minval=0.0, maxval=1.0, shape=(), dtype=None):
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype or tf.float32)


def _seeds(seed, n: int):
    """``n`` independent stateless seeds from one ([2] int tensor)."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def random_resized_crop(image, seed, size: int, min_area: float = 0.6):
    """Zoom in on a random region (distance to the lesion varies on a phone)."""
    s = _seeds(seed, 4)
    area = _uniform(s[0], min_area, 1.0)
    aspect = tf.exp(_uniform(s[1], math.log(3 / 4), math.log(4 / 3)))
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0 = _uniform(s[2], 0.0, 1.0 - h)
    x0 = _uniform(s[3], 0.0, 1.0 - w)
    box = tf.stack([y0, x0, y0 + h, x0 + w])[None]
    return tf.image.crop_and_resize(image[None], box, [0], [size, size])[0]


def random_rotation(image, seed, max_degrees: float = 20.0):
    """Dihedral flips/rot90 plus a small tilt, reflecting at the borders."""
    seeds = _seeds(seed, 4)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    image = tf.image.rot90(image, _uniform(seeds[2], 0, 4, dtype=tf.int32))
    angle = _uniform(seeds[3], -max_degrees, max_degrees) * math.pi / 180.0
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


def random_lighting(image, seed, brightness: float = 0.25, contrast: float = 0.25, white_balance: float = 0.12):
    """Exposure, contrast and white-balance shifts of indoor/outdoor phone light."""
    s = _seeds(seed, 3)
    gain = _uniform(s[0], 1.0 - brightness, 1.0 + brightness)
    mean = tf.reduce_mean(image)
    factor = _uniform(s[1], 1.0 - contrast, 1.0 + contrast)
    image = (image - mean) * factor + mean
    channel_gain = _uniform(s[2], 1.0 - white_balance, 1.0 + white_balance, shape=(3,))
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


def jpeg_artefacts(image, seed, min_quality: int = 40, max_quality: int = 95):
    """Re-encode as JPEG: messaging apps and uploads recompress photos."""
    quality = _uniform(seed, min_quality, max_quality + 1, dtype=tf.int32)
    return tf.image.adjust_jpeg_quality(image / 255.0, quality) * 255.0


def augment(image, size: int, seed):
    """The training-time chain (phone capture): geometry, light, then blur/JPEG sometimes.

    Stateless: every random choice is a function of ``seed`` (a [2] int tensor; in
    training, derived from (TrainConfig.seed, epoch, image index) by ``element_seed``),
    so the same seed gives the same picture in any thread, process or worker."""
    s = _seeds(seed, 7)
    image = tf.cast(image, tf.float32)
    image = random_resized_crop(image, s[0], size)
    image = random_rotation(image, s[1])
    image = random_lighting(image, s[2])
    image = tf.cond(
        _uniform(s[3]) < 0.2,
        lambda: gaussian_blur(image, _uniform(s[4], 0.3, 1.2)),
        lambda: image,
    )
    image = tf.cond(_uniform(s[5]) < 0.3, lambda: jpeg_artefacts(image, s[6]), lambda: image)
    image = tf.ensure_shape(image, [size, size, 3])
    return image


def element_seed(seed: int, epoch, index):
    """The augmentation seed of training image ``index`` in ``epoch`` (int64 tensors)."""
    base = tf.constant([seed, 0], tf.int64)
    return tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(base, epoch), index)


def _input_options(dataset):
    # A private, single-op-threaded pool for the input pipeline: on 2 cores the
    # default lets augmentation fight the training step for threads. Measured
    # here (Lite0, 160 px, batch 32): 15 img/s by default, 38-40 img/s with this.
    options = tf.data.Options()
    options.threading.private_threadpool_size = 2
    options.threading.max_intra_op_parallelism = 1
    # under a tf.distribute strategy, Keras splits a plain data set by element
    # (it has no files to split by); training_dataset shards itself
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def make_dataset(
    pixels: np.ndarray,
    labels: np.ndarray | None,
    mean,
    std,
    batch_size: int,
    training: bool = False,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
    shuffle: bool | None = None,
):
    """Batches of normalized images ((pixel - mean) / std) and labels, one pass.

    ``training`` augments (``augment``: phone capture, seeded by (seed, epoch 0, index))
    and shuffles; ``shuffle`` overrides the shuffling alone (distillation wants shuffled
    but unaugmented images). Fine-tuning uses ``training_dataset`` instead."""
    size = int(pixels.shape[1])
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    parts = [pixels] + ([labels] if labels is not None else []) + ([sample_weights] if sample_weights is not None else [])
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(pixels), dtype=np.int64), *parts))
    if training if shuffle is None else shuffle:
        ds = ds.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)

    def prepare(index, image, *rest):
        image = augment(image, size, element_seed(seed, 0, index)) if training else tf.cast(image, tf.float32)
        return ((image - mean) / std, *rest)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return _input_options(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def steps_per_epoch(n_images: int, global_batch: int, workers: int = 1, drop_remainder: bool = False) -> int:
    """Training steps in one epoch; every worker takes the same number (they step together).
    ``drop_remainder``: only whole global batches (several replicas)."""
    per_worker_images, per_worker_batch = n_images // workers, global_batch // workers
    if drop_remainder:
        return per_worker_images // per_worker_batch
    return max(1, math.ceil(per_worker_images / per_worker_batch))


def training_dataset(
    pixels: np.ndarray,
    labels: np.ndarray,
    sample_weights: np.ndarray,
    mean,
    std,
    global_batch: int,
    seed: int,
    epochs: int,
    input_context=None,
):
    """Every fine-tuning epoch as one stream of augmented, normalized batches
    (image, label, weight); ``steps_per_epoch`` batches (per replica) make an epoch.

    Epoch e's order is a permutation seeded by (seed, e) and image i's augmentation is
    seeded by (seed, e, i) (``element_seed``): the same on every run and worker. Under a
    tf.distribute strategy (``input_context``: from ``distribute_datasets_from_function``)
    worker w takes the w-th of ``workers`` equal slices of each epoch's permutation, in
    batches of the per-replica size, and an epoch keeps only whole global batches when
    there are several replicas (the few images left over differ from epoch to epoch).
    A resumed run restarts the stream at epoch 0's order (BackupAndRestore restores the
    weights and the epoch count, not the input position)."""
    n, size = len(pixels), int(pixels.shape[1])
    workers = input_context.num_input_pipelines if input_context else 1
    worker = input_context.input_pipeline_id if input_context else 0
    replica_batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    several = input_context is not None and input_context.num_replicas_in_sync > 1
    steps = steps_per_epoch(n, global_batch, workers, drop_remainder=several)
    keep = steps * (global_batch // workers) if several else n // workers
    if keep < 1:
        raise ValueError(f"{n} training images cannot fill one global batch of {global_batch}")
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    pixels, labels, sample_weights = (tf.constant(a) for a in (pixels, labels, sample_weights))

    def prepare(epoch, index):
        image = augment(tf.gather(pixels, index), size, element_seed(seed, epoch, index))
        return (image - mean) / std, tf.gather(labels, index), tf.gather(sample_weights, index)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch]))
        mine = order[worker * (n // workers):][:keep]
        return (tf.data.Dataset.from_tensor_slices(mine)
                .map(lambda index: prepare(epoch, index), num_parallel_calls=tf.data.AUTOTUNE)
                .batch(replica_batch, drop_remainder=several))

    ds = tf.data.Dataset.range(epochs).flat_map(one_epoch)
    return _input_options(ds.prefetch(tf.data.AUTOTUNE))
