"""TFRecord shards (mobile_derm.datasets.shards) and training that streams from them
(mobile_derm.training.pipeline.ShardImages). The two-worker run from shards is in
test_distribute.py (``-k multi_worker``)."""
import json
from pathlib import Path

import numpy as np
import pytest

from mobile_derm.datasets.shards import MANIFEST, ShardError, read_shards, write_shards
from mobile_derm.training.config import TrainConfig

# tiny demo data (6 classes x 4 lesions x 3 views at 64 px, model input 32 px), as test_distribute.py
TINY_RUN = {"input_size": 32, "head_epochs": 2, "finetune_epochs": 2, "batch_size": 8, "allow_random_weights": True,
            "finetune_learning_rate": 1e-3}
# From shards and from the source the run has the same split, the same pixels and the same
# head (stage 1 reads the same images in the same order); fine-tuning reads the training
# images in another order (a shuffle buffer over interleaved files, not one permutation of the
# whole set), so the same images come in other batches and augmentations, as between one
# process and two workers (test_distribute.py): each epoch's validation loss agrees within a
# few hundredths (0.014 measured). Test figures of this near-chance tiny model are not
# compared: another batch order moves its balanced accuracy on 18 photos by 4 photos (0.22).
VAL_LOSS_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from mobile_derm.datasets.synthetic import generate_demo_dataset

    root = tmp_path_factory.mktemp("shards")
    dataset = generate_demo_dataset(root / "data", lesions_per_class=4, views_per_lesion=3, size=64)
    write_shards(dataset, root / "shards", images_per_shard=10, progress=False)  # 8 files, the last short
    return dataset, root


def _parts_by_path(split, dataset) -> dict:
    return {part: sorted(dataset.relative_path(i) for i in indices) for part, indices in split.parts().items()}


def test_shards_hold_the_source_with_its_splits_and_pixels(demo):
    from mobile_derm.datasets.splits import split_grouped
    from mobile_derm.training.runs import dataset_pixels, training_images

    dataset, root = demo
    manifest = json.loads((root / "shards" / MANIFEST).read_text())
    assert manifest["n_images"] == len(dataset) and manifest["classes"] == dataset.classes
    assert manifest["class_counts"] == dataset.class_counts() and manifest["n_groups"] == dataset.n_groups()
    assert [s["count"] for s in manifest["shards"]] == [10] * 7 + [2]
    sharded = read_shards(root / "shards")
    assert sharded.name == dataset.name and sharded.listing_hash() == dataset.listing_hash()
    # written in a random order, not the source's
    assert sharded.relative_paths() != dataset.relative_paths()
    assert sorted(sharded.relative_paths()) == sorted(dataset.relative_paths())
    for seed in (0, 1):  # the same images in every part, whatever the order
        assert _parts_by_path(split_grouped(sharded, (0.5, 0.25, 0.25), seed), sharded) == \
            _parts_by_path(split_grouped(dataset, (0.5, 0.25, 0.25), seed), dataset)

    # decoded in the pipeline exactly as the pixel cache decodes the files
    cached = dataset_pixels(dataset, 32, root / "cache", progress=False)
    row_of = {path: i for i, path in enumerate(dataset.relative_paths())}
    in_shard_order = cached[[row_of[path] for path in sharded.relative_paths()]]
    streamed = training_images(sharded, 32)
    np.testing.assert_array_equal(np.asarray(streamed), in_shard_order)
    some = np.array([3, 11, 12, 40, 71])
    np.testing.assert_array_equal(np.asarray(streamed[some]), in_shard_order[some])
    np.testing.assert_array_equal(streamed[some[::-1]], in_shard_order[some[::-1]])  # unsorted: read into memory


def test_shards_on_a_file_system_tensorflow_opens_by_url(demo):
    """TensorFlow's in-memory file system (ram://) stands in for gs:// or hdfs://: the same
    tf.io.gfile and TFRecordDataset calls write, check and stream the folder."""
    from mobile_derm.api import load_dataset
    from mobile_derm.training.runs import dataset_pixels, training_images

    dataset, root = demo
    write_shards(dataset, "ram://bucket/demo_shards", images_per_shard=30, progress=False)
    sharded = load_dataset("ram://bucket/demo_shards")  # as --data gives it
    assert sharded.location == "ram://bucket/demo_shards" and len(sharded.shard_files) == 3
    assert sharded.listing_hash() == dataset.listing_hash()
    cached = dataset_pixels(dataset, 32, root / "cache", progress=False)
    row_of = {path: i for i, path in enumerate(dataset.relative_paths())}
    np.testing.assert_array_equal(np.asarray(training_images(sharded, 32)),
                                  cached[[row_of[path] for path in sharded.relative_paths()]])
    with pytest.raises(ShardError, match="missing") as error:
        read_shards("ram://bucket/elsewhere")
    assert error.value.path == "ram://bucket/elsewhere/manifest.json"


def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def test_training_from_shards_matches_training_from_the_source(demo):
    """Same split and head; the fine-tuned validation losses within the tolerance above; under
    mirrored (one CPU replica) the stream gives the same batches as without it."""
    from mobile_derm.training.distribute import Distribution
    from mobile_derm.training.fit import train

    dataset, root = demo
    sharded = read_shards(root / "shards")
    config = TrainConfig(**TINY_RUN)
    source = train(dataset, config, root / "source", cache_dir=root / "cache", progress=False)
    shards = train(sharded, config, root / "from_shards", progress=False)
    mirrored = train(sharded, config, root / "from_shards_mirrored", progress=False,
                     distribution=Distribution("mirrored"))

    from mobile_derm.datasets.splits import Split

    assert _parts_by_path(Split.load(root / "from_shards" / "split.json", sharded), sharded) == \
        _parts_by_path(Split.load(root / "source" / "split.json", dataset), dataset)
    alone, streamed = _history(root / "source"), _history(root / "from_shards")
    assert streamed["head_val_loss"] == pytest.approx(alone["head_val_loss"], abs=1e-4)  # same pixels, same head
    assert len(streamed["finetune"]["val_loss"]) == TINY_RUN["finetune_epochs"]
    np.testing.assert_allclose(streamed["finetune"]["val_loss"], alone["finetune"]["val_loss"], atol=VAL_LOSS_TOLERANCE)
    assert shards.test_report["n"] == source.test_report["n"]
    from mobile_derm.training.runs import run_arrays

    for data in (sharded, dataset):  # export and benchmark read a run from shards with either
        pixels, _, split = run_arrays(data, root / "from_shards", cache_dir=root / "cache", progress=False)
        assert pixels.shape == (72, 32, 32, 3) and _parts_by_path(split, data) == _parts_by_path(
            Split.load(root / "source" / "split.json", dataset), dataset)
    np.testing.assert_allclose(_history(root / "from_shards_mirrored")["finetune"]["val_loss"],
                               streamed["finetune"]["val_loss"], atol=1e-4)
    assert mirrored.test_report["balanced_accuracy"] == pytest.approx(shards.test_report["balanced_accuracy"], abs=1e-6)


def test_the_training_stream_repeats_with_the_seed_and_shards_by_file_across_workers(demo):
    from mobile_derm.tf_setup import tf
    from mobile_derm.training.pipeline import training_dataset
    from mobile_derm.training.runs import training_images

    _, root = demo
    images = training_images(read_shards(root / "shards"), 32)[np.arange(0, 72, 2)]  # 36 "training" images
    labels = np.arange(36) % 6
    rows = np.arange(36, dtype=np.float32)  # as the per-image weights: which image each element is

    def epochs_of(seed, context=None, per_epoch=36):
        stream = list(training_dataset(images, labels, rows, [0.0] * 3, [1.0] * 3, 8, seed, 2, context)
                      .as_numpy_iterator())
        read = np.concatenate([w for _, _, w in stream]).astype(int)
        assert np.array_equal(np.concatenate([y for _, y, _ in stream]), labels[read])  # each image with its label
        assert len(read) == 2 * per_epoch
        return read[:per_epoch], read[per_epoch:]

    first, second = epochs_of(0)
    assert sorted(first) == sorted(second) == list(range(36))  # an epoch is every training image once
    assert list(first) != list(second)  # in another order
    assert np.array_equal(np.concatenate(epochs_of(0)), np.concatenate([first, second]))  # the seed repeats it
    assert not np.array_equal(np.concatenate(epochs_of(1)), np.concatenate([first, second]))
    # two workers, one replica each: each reads its own shard files (no image on both), and both
    # take 4 steps of 4 images per epoch (whole global batches of 8 from 36 images)
    shares = [epochs_of(0, tf.distribute.InputContext(2, worker, 2), per_epoch=16)[0] for worker in (0, 1)]
    assert not set(shares[0]) & set(shares[1])


def test_a_resumed_stream_from_shards_starts_at_the_first_epoch_not_done(demo):
    from mobile_derm.training.pipeline import training_dataset
    from mobile_derm.training.runs import training_images

    _, root = demo
    images = training_images(read_shards(root / "shards"), 32)[np.arange(0, 72, 2)]
    labels, rows = np.arange(36) % 6, np.arange(36, dtype=np.float32)

    def batches(first_epoch):
        return list(training_dataset(images, labels, rows, [0.0] * 3, [1.0] * 3, 8, 0, 2,
                                     first_epoch=first_epoch).as_numpy_iterator())

    whole, resumed = batches(0), batches(1)
    assert len(whole) == 2 * len(resumed) == 10  # 5 batches an epoch: 4 of 8 images and one of 4
    for (image, _, row), (image_whole, _, row_whole) in zip(resumed, whole[5:]):
        np.testing.assert_array_equal(row, row_whole)
        np.testing.assert_array_equal(image, image_whole)


# ---------------------------------------------------------------- bad input: one line naming the file

def _train_cli(data, out: Path, capsys) -> tuple[int, str]:
    from mobile_derm.cli import main

    code = main(["train", "--data", str(data), "--out", str(out), "--input-size", "32", "--random-weights"])
    return code, capsys.readouterr().err.strip()


def _copy_shards(root: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(root / "shards", tmp_path / "shards"))


def test_a_folder_without_manifest_is_refused_naming_it(demo, tmp_path, capsys):
    _, root = demo
    folder = _copy_shards(root, tmp_path)
    (folder / MANIFEST).unlink()
    code, err = _train_cli(folder, tmp_path / "run", capsys)
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert f"{folder / MANIFEST}" in err and "missing" in err
    assert not (tmp_path / "run").exists()


def test_a_corrupt_record_is_refused_naming_its_shard(demo, tmp_path, capsys):
    _, root = demo
    folder = _copy_shards(root, tmp_path)
    shard = sorted(folder.glob("*.tfrecord"))[3]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a record
    shard.write_bytes(bytes(data))
    code, err = _train_cli(folder, tmp_path / "run", capsys)
    assert code == 2 and err.count("\n") == 0 and str(shard) in err and "corrupt record" in err
    with pytest.raises(ShardError, match="corrupt record"):
        read_shards(folder)


def test_mismatched_classes_are_refused_naming_the_file(demo, tmp_path):
    _, root = demo
    folder = _copy_shards(root, tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    edited = {**manifest, "classes": manifest["classes"][:-1]}
    (folder / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(ShardError, match="does not match its classes_sha256") as error:
        read_shards(folder)
    assert error.value.path == str(folder / MANIFEST)
    # a consistent manifest whose records hold a class it does not list: the shard is named
    from mobile_derm.datasets.shards import classes_sha256

    edited["classes_sha256"] = classes_sha256(edited["classes"])
    (folder / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(ShardError, match="is not one of the manifest's classes") as error:
        read_shards(folder)
    assert error.value.path.endswith(".tfrecord")
    # a shard the manifest lists is gone
    (folder / MANIFEST).write_text(json.dumps(manifest))
    shard = folder / manifest["shards"][0]["file"]
    shard.unlink()
    with pytest.raises(ShardError, match="missing") as error:
        read_shards(folder)
    assert error.value.path == str(shard)


def test_writing_refuses_a_used_folder_and_leaves_nothing_after_a_bad_image(demo, tmp_path, capsys):
    import shutil

    from mobile_derm.api import load_dataset
    from mobile_derm.cli import main
    from mobile_derm.errors import ConfigError, DataError

    dataset, root = demo
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_shards(dataset, root / "shards", progress=False)
    data = Path(shutil.copytree(root / "data", tmp_path / "data"))
    copy = load_dataset(data)
    broken = Path(copy.samples[40].path)  # in the fifth shard of the random order, or wherever it falls
    broken.write_bytes(b"not a photo")
    with pytest.raises(DataError) as error:
        write_shards(copy, tmp_path / "out", images_per_shard=10, progress=False)
    assert error.value.path == str(broken)
    assert not (tmp_path / "out").exists()
    # the command: a one-line summary, and the folder reads back
    assert main(["write-shards", "--data", str(root / "data"), "--out", str(tmp_path / "cli"),
                 "--images-per-shard", "30"]) == 0
    assert "72 images of 6 classes in 3 shards" in capsys.readouterr().out
    assert len(read_shards(tmp_path / "cli")) == 72
