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

A data set written as TFRecord shards (``mobile_derm.datasets.shards``) is not cached:
``ShardImages`` stands in for the pixel array, and ``make_dataset`` / ``training_dataset``
stream its images from the shard files (decoded and resized in the pipeline).
"""
from __future__ import annotations

import functools
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
    but unaugmented images). Fine-tuning uses ``training_dataset`` instead. ``pixels``
    may be a ``ShardImages``: streamed in order from the shards (read into memory first
    if asked to augment or shuffle)."""
    size = int(pixels.shape[1])
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    if isinstance(pixels, ShardImages):
        if training or shuffle:  # no caller streams these (fine-tuning streams through training_dataset)
            pixels = np.asarray(pixels)
        else:
            rest = [tf.data.Dataset.from_tensor_slices(a) for a in (labels, sample_weights) if a is not None]
            ds = tf.data.Dataset.zip((pixels.in_order(), *rest)).map(
                lambda image, *r: ((tf.cast(image, tf.float32) - mean) / std, *r), num_parallel_calls=tf.data.AUTOTUNE)
            return _input_options(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))
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


def _epoch_plan(n: int, global_batch: int, input_context):
    """(workers, this worker, per-replica batch, several replicas?, images per worker per epoch)."""
    workers = input_context.num_input_pipelines if input_context else 1
    worker = input_context.input_pipeline_id if input_context else 0
    replica_batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    several = input_context is not None and input_context.num_replicas_in_sync > 1
    steps = steps_per_epoch(n, global_batch, workers, drop_remainder=several)
    keep = steps * (global_batch // workers) if several else n // workers
    if keep < 1:
        raise ValueError(f"{n} training images cannot fill one global batch of {global_batch}")
    return workers, worker, replica_batch, several, keep


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
    first_epoch: int = 0,
):
    """Every fine-tuning epoch as one stream of augmented, normalized batches
    (image, label, weight); ``steps_per_epoch`` batches (per replica) make an epoch.

    Epoch e's order is a permutation seeded by (seed, e) and image i's augmentation is
    seeded by (seed, e, i) (``element_seed``): the same on every run and worker. Under a
    tf.distribute strategy (``input_context``: from ``distribute_datasets_from_function``)
    global step k takes the k-th global batch of each epoch's permutation, as one process
    does, and worker w the w-th of ``workers`` equal slices of it (in batches of the
    per-replica size), so the batches do not depend on the number of workers; an epoch keeps
    only whole global batches when there are several replicas (the few images left over
    differ from epoch to epoch).
    The stream holds epochs ``first_epoch`` .. ``epochs - 1``: a resumed run starts where its
    backup ended (``mobile_derm.training.resume``) and meets the batches an uninterrupted run
    would."""
    if isinstance(pixels, ShardImages):
        return _streamed_training_dataset(pixels, labels, sample_weights, mean, std, global_batch, seed, epochs,
                                          input_context, first_epoch)
    n, size = len(pixels), int(pixels.shape[1])
    workers, worker, replica_batch, several, keep = _epoch_plan(n, global_batch, input_context)
    worker_batch = global_batch // workers
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    pixels, labels, sample_weights = (tf.constant(a) for a in (pixels, labels, sample_weights))

    def prepare(epoch, index):
        image = augment(tf.gather(pixels, index), size, element_seed(seed, epoch, index))
        return (image - mean) / std, tf.gather(labels, index), tf.gather(sample_weights, index)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch]))
        if several:
            # global step k takes the k-th global batch of the order, as one process does, each
            # worker its own slice of it: the same batches whatever the number of workers
            mine = tf.reshape(tf.reshape(order[:keep * workers], [-1, workers, worker_batch])[:, worker], [-1])
        else:
            mine = order[:keep]
        return (tf.data.Dataset.from_tensor_slices(mine)
                .map(lambda index: prepare(epoch, index), num_parallel_calls=tf.data.AUTOTUNE)
                .batch(replica_batch, drop_remainder=several))

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    return _input_options(ds.prefetch(tf.data.AUTOTUNE))


# ---------------------------------------------------------------- streaming from TFRecord shards

# Encoded images the training stream's shuffle buffer holds (tens of MB for HAM10000's
# 200 px JPEGs, a few hundred MB for phone photos). The shards are written in random order,
# so the buffer only has to mix the files being read at once.
SHUFFLE_BUFFER = 2048
# Shard files the training stream reads at once (interleaved record by record).
READ_CYCLE = 8


class ShardImages:
    """Model-input pixels (uint8 squares of ``size`` px) of images of a shard folder
    (``mobile_derm.datasets.shards.ShardedDataset``), read from the files only when a
    pipeline runs: what ``fit.train`` gets instead of the pixel cache's array.

    Indexing with an increasing index array gives another ShardImages (nothing is read);
    ``np.asarray`` decodes the images into memory, for code that wants an array (and an
    unsorted selection is read that way, since a stream gives shard order). ``decode``
    turns a record's encoded bytes into pixels the way the pixel cache decodes a file
    (``mobile_derm.training.runs.input_pixels``), so both give the same pixels."""

    def __init__(self, dataset, size: int, decode, indices=None):
        self.dataset, self.size, self.decode = dataset, int(size), decode
        self.indices = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.size, self.size, 3)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # pixel-level indexing (a test-time view's flip): in memory
            return np.asarray(self)[key]
        indices = self.indices[key]
        if indices.ndim == 0:
            return np.asarray(ShardImages(self.dataset, self.size, self.decode, [indices]))[0]
        if np.any(np.diff(indices) <= 0):
            unique, inverse = np.unique(indices, return_inverse=True)
            return np.asarray(ShardImages(self.dataset, self.size, self.decode, unique))[inverse]
        return ShardImages(self.dataset, self.size, self.decode, indices)

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.uint8)
        row = 0
        for batch in self.in_order().batch(256).as_numpy_iterator():
            out[row:row + len(batch)] = batch
            row += len(batch)
        return out if dtype is None else out.astype(dtype)

    def transpose(self, *axes) -> np.ndarray:
        return np.asarray(self).transpose(*axes)

    def positions(self) -> np.ndarray:
        """For every image of the shard folder: its row here, or -1."""
        table = np.full(len(self.dataset), -1, np.int64)
        table[self.indices] = np.arange(len(self.indices))
        return table

    def files_holding(self) -> list[tuple[str, int]]:
        """(shard file, how many of these images it holds) for the files holding any."""
        shard_of = np.searchsorted(np.asarray(self.dataset.shard_first), self.indices, side="right") - 1
        counts = np.bincount(shard_of, minlength=len(self.dataset.shard_files))
        return [(name, int(count)) for name, count in zip(self.dataset.shard_files, counts) if count]

    def decoded(self, encoded):
        """Pixels of one record's encoded image (in the pipeline: OpenCV releases the GIL)."""
        image = tf.numpy_function(lambda data: self.decode(bytes(data)), [encoded], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [self.size, self.size, 3])

    def records(self, files):
        """(row here, encoded image) of the records of ``files`` that are among these images."""
        from mobile_derm.datasets.shards import parse_records

        table = tf.constant(self.positions())
        return (files.map(parse_records)
                .map(lambda record: (tf.gather(table, record["index"]), record["image"]))
                .filter(lambda row, _: row >= 0))

    def in_order(self):
        """These images in order (uint8): the shards that hold any are read one after the other
        (a shard's records are in index order), the rest skipped; decoding runs in parallel."""
        files = tf.data.TFRecordDataset([name for name, _ in self.files_holding()])
        return self.records(files).map(lambda _, encoded: self.decoded(encoded), num_parallel_calls=tf.data.AUTOTUNE)


def _streamed_training_dataset(images: ShardImages, labels, sample_weights, mean, std, global_batch: int, seed: int,
                               epochs: int, input_context=None, first_epoch: int = 0):
    """``training_dataset`` for images in TFRecord shards: each epoch reads the shard files
    holding training images in an order seeded by (seed, epoch), ``READ_CYCLE`` at a time,
    record by record, through a shuffle buffer (``SHUFFLE_BUFFER``, seeded by (seed, epoch)),
    then decodes, resizes and augments in the pipeline (seeded by (seed, epoch, image), as the
    cached path). Under several workers each takes every N-th file (what tf.data's
    AutoShardPolicy.FILE does; ``distribute_datasets_from_function`` leaves sharding to this
    function), or every N-th training record when there are fewer files than workers
    (AutoShardPolicy.DATA); a worker whose files hold fewer images than its share of an
    epoch reads them again, one holding more leaves the rest (others each epoch), so every
    worker takes the same number of steps. The order differs from the cached path's (a
    permutation of the whole set), so the figures agree within noise, not exactly."""
    workers, worker, replica_batch, several, keep = _epoch_plan(len(images), global_batch, input_context)
    files = [name for name, _ in images.files_holding()]
    by_file = workers > 1 and len(files) >= workers
    if by_file:
        files = files[worker::workers]
    names = tf.constant(files)
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    labels, sample_weights = tf.constant(labels), tf.constant(sample_weights)

    def prepare(epoch, row, encoded):
        image = augment(images.decoded(encoded), images.size, element_seed(seed, epoch, row))
        return (image - mean) / std, tf.gather(labels, row), tf.gather(sample_weights, row)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(len(files)), seed=tf.stack([seed, epoch]))
        shards = tf.data.Dataset.from_tensor_slices(tf.gather(names, order)).interleave(
            tf.data.TFRecordDataset, cycle_length=min(READ_CYCLE, len(files)), num_parallel_calls=tf.data.AUTOTUNE)
        records = images.records(shards)
        if workers > 1 and not by_file:
            records = records.shard(workers, worker)
        records = records.shuffle(SHUFFLE_BUFFER, seed=seed * 1_000_003 + epoch).repeat().take(keep)
        return (records.map(lambda row, encoded: prepare(epoch, row, encoded), num_parallel_calls=tf.data.AUTOTUNE)
                .batch(replica_batch, drop_remainder=several))

    # epochs joined in Python: the shuffle seed must be a number (a tensor seed fails in
    # graph mode once a global seed is set, as training sets one)
    ds = functools.reduce(tf.data.Dataset.concatenate, (one_epoch(epoch) for epoch in range(first_epoch, epochs)))
    return _input_options(ds.prefetch(tf.data.AUTOTUNE))
