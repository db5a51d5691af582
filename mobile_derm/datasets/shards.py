"""TFRecord shards: a data set that need not fit on one disk or in one worker's memory.

``mobile-derm write-shards --data SOURCE --out FOLDER`` turns any source ``--data``
accepts (a preset, a labels CSV, class folders) into a shard folder; ``--data FOLDER``
(a local path, or any file system TensorFlow opens: ``gs://``, ``hdfs://``, ...) then
trains from it, streaming the images through tf.data (``mobile_derm.training.pipeline``)
instead of the in-memory pixel cache. docs/distributed.md#tfrecord-shards.

A shard folder holds:

- ``shard-00000-of-00011.tfrecord``, ...: one ``tf.train.Example`` per image, with
  ``index`` (the image's place in the shard folder's order), ``image`` (the file's own
  encoded bytes, unchanged: training decodes them as the pixel cache does, so the pixels
  are the same), ``label``, ``group`` (the lesion/patient id a split never cuts) and
  ``path`` (the image's path relative to its source: split.json and the data listing's
  hash name images by it).
- ``manifest.json``, written last (a folder without one is unfinished): counts, the class
  list and its SHA-256, the split rule, the listing hash, and each shard's file, first
  index and record count.

The images are written in a seeded random order (``order_seed``), so every shard is a
random sample of the data: a worker that reads some of the files sees every class,
and a shuffle buffer mixes well. Reading a folder back gives a :class:`ShardedDataset`
(a :class:`~mobile_derm.datasets.sources.Dataset` in that order) with the source's
paths, labels and groups; splits are made per group from those, so the same seed gives
the same train/validation/test images as the source (the indices in split.json differ:
they follow the shard order). Every problem with a folder is a :class:`ShardError`
naming the file. TensorFlow is imported only when shards are written or read.
"""
from __future__ import annotations

import hashlib
import json
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_derm.datasets.sources import Dataset, Sample
from mobile_derm.errors import ConfigError, DataError

FORMAT = "mobile_derm.shards/1"
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".tfrecord"
DEFAULT_IMAGES_PER_SHARD = 1024
SPLIT_RULE = ("mobile_derm.datasets.splits: disjoint by group, stratified by label; "
              "train/validation/test fractions and seed from the TrainConfig (split_fractions, seed)")
# records parsed per step when a folder is read back (metadata only; the image bytes are skipped)
_READ_BATCH = 1024


class ShardError(DataError):
    """A shard folder that cannot be used: missing manifest, corrupt record, mismatched classes..."""


def shard_name(k: int, n: int) -> str:
    return f"shard-{k:05d}-of-{n:05d}{SHARD_SUFFIX}"


def classes_sha256(classes) -> str:
    return hashlib.sha256("\n".join(classes).encode("utf-8")).hexdigest()


def _join(location: str, name: str) -> str:
    return posixpath.join(location, name)  # also right for gs://bucket/folder


def is_shard_location(spec) -> bool:
    """Whether ``--data spec`` names a shard folder: a URL (gs://, hdfs://, ...) or a
    local folder holding a manifest or shard files (finished or ``.partial``)."""
    text = str(spec)
    if "://" in text:
        return True
    path = Path(text)
    return path.is_dir() and ((path / MANIFEST).exists() or any(path.glob(f"*{SHARD_SUFFIX}*")))


@dataclass
class ShardedDataset(Dataset):
    """A Dataset read back from a shard folder (samples in shard order; ``Sample.path`` is
    the folder joined with the source's relative path, which names the image, not a file).
    ``location`` is the folder as given (a URL keeps its ``//``); ``shard_files`` and
    ``shard_first`` are each shard's full name and first index."""

    location: str = ""
    shard_files: list[str] = field(default_factory=list)
    shard_first: list[int] = field(default_factory=list)


# ------------------------------------------------------------------ the record

def _features():
    from mobile_derm.tf_setup import tf

    return {"index": tf.io.FixedLenFeature([], tf.int64), "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.string), "group": tf.io.FixedLenFeature([], tf.string),
            "path": tf.io.FixedLenFeature([], tf.string)}


def parse_records(serialized, keys=("index", "image")):
    """The named features of serialized records (one, or a batch); tf.data's map uses this."""
    from mobile_derm.tf_setup import tf

    wanted = {k: v for k, v in _features().items() if k in keys}
    parse = tf.io.parse_example if serialized.shape.rank == 1 else tf.io.parse_single_example
    return parse(serialized, wanted)


def _example(index: int, image: bytes, label: str, group: str, path: str) -> bytes:
    from mobile_derm.tf_setup import tf

    def text(value: str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    return tf.train.Example(features=tf.train.Features(feature={
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": text(label), "group": text(group), "path": text(path),
    })).SerializeToString()


# ------------------------------------------------------------------ writing

def _read_checked(sample: Sample) -> bytes:
    """The image file's bytes, after checking they decode as training will decode them."""
    from mobile_derm_quality import decode_image_bytes
    from mobile_derm_quality.errors import ImageReadError

    try:
        data = Path(sample.path).read_bytes()
        decode_image_bytes(data, sample.path)
    except OSError as exc:
        raise DataError(sample.path, f"cannot read: {exc.strerror or exc}") from None
    except ImageReadError as exc:
        raise DataError(sample.path, exc.problem) from None
    return data


def write_shards(dataset: Dataset, out, images_per_shard: int = DEFAULT_IMAGES_PER_SHARD, seed: int = 0,
                 progress: bool = True) -> dict:
    """Write ``dataset`` into the new (or empty) folder ``out`` (a local path or a URL
    TensorFlow opens) as TFRecord shards plus ``manifest.json``; returns the manifest.
    Each image is checked to decode first; on any error every file written so far is
    removed (and the folder, if this made it), so no half-written shard folder is left."""
    from tqdm import tqdm

    from mobile_derm.tf_setup import tf

    gfile = tf.io.gfile
    out = str(out).rstrip("/")
    if images_per_shard < 1:
        raise ConfigError(None, f"images per shard must be at least 1, not {images_per_shard}")
    if len(dataset) == 0:
        raise DataError(dataset.root, "no images to write")
    try:
        existed = gfile.exists(out)
        if existed and (not gfile.isdir(out) or gfile.listdir(out)):
            raise ConfigError(out, "exists and is not an empty folder (shards go into a new folder)")
        gfile.makedirs(out)
    except tf.errors.OpError as exc:
        raise ConfigError(out, f"cannot create the folder: {exc.message.splitlines()[0]}") from None

    order = np.random.default_rng(seed).permutation(len(dataset))
    relative = dataset.relative_paths()
    n_shards = math.ceil(len(dataset) / images_per_shard)
    shards, written = [], []
    try:
        with tqdm(total=len(dataset), desc="write shards", disable=None if progress else True) as bar:  # terminal only
            for k in range(n_shards):
                chunk = order[k * images_per_shard:(k + 1) * images_per_shard]
                final = _join(out, shard_name(k, n_shards))
                partial = final + ".partial"
                written.append(partial)
                with tf.io.TFRecordWriter(partial) as writer:
                    for j, i in enumerate(chunk):
                        sample = dataset.samples[int(i)]
                        writer.write(_example(k * images_per_shard + j, _read_checked(sample), sample.label,
                                              sample.group, relative[int(i)]))
                        bar.update()
                gfile.rename(partial, final, overwrite=True)
                written[-1] = final
                shards.append({"file": shard_name(k, n_shards), "first_index": k * images_per_shard,
                               "count": len(chunk)})
        manifest = {
            "format": FORMAT, "dataset": dataset.name, "n_images": len(dataset), "n_groups": dataset.n_groups(),
            "classes": list(dataset.classes), "classes_sha256": classes_sha256(dataset.classes),
            "class_counts": dataset.class_counts(), "listing_hash": dataset.listing_hash(),
            "split_rule": SPLIT_RULE, "order_seed": seed, "images_per_shard": images_per_shard, "shards": shards,
        }
        manifest_file = _join(out, MANIFEST)
        written.append(manifest_file + ".partial")
        with gfile.GFile(manifest_file + ".partial", "w") as handle:
            handle.write(json.dumps(manifest, indent=1) + "\n")
        gfile.rename(manifest_file + ".partial", manifest_file, overwrite=True)
    except BaseException:
        for name in written:
            if gfile.exists(name):
                gfile.remove(name)
        if not existed:
            gfile.rmtree(out)
        raise
    return manifest


# ------------------------------------------------------------------ reading

def _manifest(location: str) -> dict:
    from mobile_derm.tf_setup import tf

    path = _join(location, MANIFEST)
    try:
        if not tf.io.gfile.exists(path):
            raise ShardError(path, "missing: not a shard folder, or its writing never finished "
                                   "(mobile-derm write-shards writes the manifest last)")
        with tf.io.gfile.GFile(path, "r") as handle:
            manifest = json.loads(handle.read())
    except tf.errors.OpError as exc:
        raise ShardError(path, f"cannot read: {exc.message.splitlines()[0]}") from None
    except ValueError as exc:
        raise ShardError(path, f"not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(path, f"not a shard manifest (expected format {FORMAT!r})")
    try:
        classes = [str(c) for c in manifest["classes"]]
        shards = [(str(s["file"]), int(s["first_index"]), int(s["count"])) for s in manifest["shards"]]
        n_images, name = int(manifest["n_images"]), str(manifest["dataset"])
        sha, listing = str(manifest["classes_sha256"]), str(manifest["listing_hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ShardError(path, f"missing or bad field: {exc}") from None
    if sha != classes_sha256(classes):
        raise ShardError(path, "the class list does not match its classes_sha256 (edited after writing?)")
    if sum(count for _, _, count in shards) != n_images:
        raise ShardError(path, f"the shards' counts do not add up to n_images {n_images}")
    return {"path": path, "name": name, "classes": classes, "shards": shards, "n_images": n_images,
            "listing_hash": listing, "class_counts": manifest.get("class_counts")}


def _read_shard(location: str, file: str, first: int, count: int, classes: set[str]) -> list[Sample]:
    """The samples of one shard (its metadata; TFRecord checks every record's checksum)."""
    from mobile_derm.tf_setup import tf

    path = _join(location, file)
    samples: list[Sample] = []
    try:
        if not tf.io.gfile.exists(path):
            raise ShardError(path, "missing (the manifest lists it)")
        records = tf.data.TFRecordDataset(path).batch(_READ_BATCH).map(
            lambda batch: parse_records(batch, ("index", "label", "group", "path")))
        for batch in records:
            indices = batch["index"].numpy()
            for index, label, group, relative in zip(indices, *(batch[k].numpy() for k in ("label", "group", "path"))):
                k, label = len(samples), label.decode("utf-8")
                if index != first + k:
                    raise ShardError(path, f"record {k} holds index {index}, the manifest says {first + k}")
                if label not in classes:
                    raise ShardError(path, f"record {k}: label {label!r} is not one of the manifest's classes")
                samples.append(Sample(Path(location) / relative.decode("utf-8"), label, group.decode("utf-8")))
    except tf.errors.DataLossError:
        raise ShardError(path, f"corrupt record after {len(samples)} good ones (TFRecord checksum or length "
                               "does not match)") from None
    except tf.errors.InvalidArgumentError as exc:
        raise ShardError(path, f"record {len(samples)} is not a mobile-derm image record "
                               f"({exc.message.splitlines()[0]})") from None
    except tf.errors.OpError as exc:
        raise ShardError(path, f"cannot read: {exc.message.splitlines()[0]}") from None
    if len(samples) != count:
        raise ShardError(path, f"holds {len(samples)} records, the manifest says {count}")
    return samples


def read_shards(location, progress: bool = False) -> ShardedDataset:
    """The shard folder at ``location`` (a local path or a URL) as a ShardedDataset, after
    checking every record against the manifest (one pass over the files: TFRecord reads
    whole records, so this costs reading the data once; the images are not decoded).
    ``progress``: a bar per shard on a terminal (tqdm's own check)."""
    from tqdm import tqdm

    location = str(location).rstrip("/")
    manifest = _manifest(location)
    classes = set(manifest["classes"])
    samples: list[Sample] = []
    for file, first, count in tqdm(manifest["shards"], desc="check shards", disable=None if progress else True):
        if first != len(samples):
            raise ShardError(manifest["path"], f"shard {file} starts at index {first}, expected {len(samples)}")
        samples += _read_shard(location, file, first, count, classes)
    dataset = ShardedDataset(manifest["name"], Path(location), samples, manifest["classes"], location=location,
                             shard_files=[_join(location, f) for f, _, _ in manifest["shards"]],
                             shard_first=[first for _, first, _ in manifest["shards"]])
    if dataset.listing_hash() != manifest["listing_hash"] or (
            manifest["class_counts"] is not None and dataset.class_counts() != manifest["class_counts"]):
        raise ShardError(manifest["path"], "the records' paths, labels or groups do not match the manifest's "
                                           "listing hash or class counts")
    return dataset
