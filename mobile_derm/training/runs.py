"""Run folders: the pixel cache, the files a run writes, and reading a finished run back.

Run folder layout (everything a later export/benchmark needs):
  train_config.json  the TrainConfig            split.json      the grouped split
  head_weights.h5    stage-1 result (marker)    backup/         BackupAndRestore and early-stopping state
  weights.h5         final weights              model_info.json ModelInfo (labels, norm, thresholds...)
  history.json       Keras histories            eval/           test-split report + plots, and
                                                                test_outputs.npz (probabilities, labels, groups)
  member0/, member1/ an ensemble's members (``ensemble_members``), each a run of its own
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.app.preprocess import RESIZE_VERSION, load_rgb, resize_square
from mobile_derm.errors import DataError
from mobile_derm.io_utils import atomic_path, read_json_object, user_cache_dir
from mobile_derm.model.classifier import build_classifier, fold_into_heads
from mobile_derm.training.config import TrainConfig

# SD-198 photos carry a grey "DermQuest" banner along the bottom edge; cropping
# it away before the square crop means the model can never see (or learn) it.
BOTTOM_CROP_BY_DATASET = {"sd198": 0.12}
TEST_OUTPUTS_FILE = "test_outputs.npz"  # in RUN/eval: the test split's probabilities, labels and groups (no pixels)


def save_test_outputs(run_dir: str | Path, probs: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
    """RUN/eval/TEST_OUTPUTS_FILE: the test split's probabilities, labels and groups (numbers
    only, no pixels), which ``crossval.pooled_report`` pools over folds."""
    with atomic_path(Path(run_dir) / "eval" / TEST_OUTPUTS_FILE) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, probs=np.asarray(probs, np.float32), y=np.asarray(y, np.int64),
                     groups=np.asarray(groups).astype(str))


def _cache_key(paths: list[str], size: int, crop_bottom: float) -> str:
    digest = hashlib.sha256()
    for p in paths:
        stat = Path(p).stat()
        digest.update(f"{p}|{stat.st_size}|{int(stat.st_mtime)}\n".encode())
    digest.update(f"{size}|{crop_bottom}|resize-v{RESIZE_VERSION}".encode())
    return digest.hexdigest()[:16]


def without_bottom(rgb: np.ndarray, crop_bottom: float) -> np.ndarray:
    """The photo without its bottom ``crop_bottom`` fraction (a data set's banner)."""
    return rgb[: max(1, int(round(rgb.shape[0] * (1.0 - crop_bottom))))] if crop_bottom else rgb


def input_pixels(rgb: np.ndarray, size: int, crop_bottom: float = 0.0) -> np.ndarray:
    """A decoded photo as model-input pixels: the bottom crop, then the centred square at ``size``."""
    return resize_square(without_bottom(rgb, crop_bottom), size)


def photo_pixels(dataset, index: int) -> np.ndarray:
    """Image ``index`` of ``dataset`` at its own size, as the file holds it, less the data set's
    bottom crop: the photo the model input is made from (the pixel cache holds it resized)."""
    from mobile_derm.datasets.shards import ShardedDataset

    if isinstance(dataset, ShardedDataset):
        raise DataError(dataset.root, "needs the image files at their own size; a shard folder holds them re-encoded")
    return without_bottom(load_rgb(dataset.samples[index].path), BOTTOM_CROP_BY_DATASET.get(dataset.name, 0.0))


def _decode_one(path: str, size: int, crop_bottom: float) -> np.ndarray:
    return input_pixels(load_rgb(path), size, crop_bottom)


def cached_pixels(paths: list[str], size: int, cache_dir: Path, crop_bottom: float = 0.0, progress: bool = True) -> np.ndarray:
    """Decode + resize every image once; later runs load the .npy in a second."""
    cache_dir = Path(cache_dir)
    cache_file = cache_dir / f"pixels-{size}-{_cache_key(paths, size, crop_bottom)}.npy"
    if cache_file.is_file():
        return np.load(cache_file)
    from tqdm import tqdm

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    # cv2 releases the GIL while decoding, so two threads use both cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda p: _decode_one(p, size, crop_bottom), paths)
        for i, image in enumerate(tqdm(results, total=len(paths), desc=f"decode {size}px", disable=not progress)):
            out[i] = image
    with atomic_path(cache_file) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, out)
    return out


def dataset_pixels(dataset, size: int, cache_dir=None, progress: bool = True) -> np.ndarray:
    """Every image of ``dataset`` as model-input pixels, through the cache
    (``$MOBILE_DERM_CACHE/pixels`` unless given), with the dataset's bottom crop."""
    from mobile_derm.datasets.shards import ShardedDataset

    if isinstance(dataset, ShardedDataset):  # decoded from the shards into memory (no file cache)
        return np.asarray(training_images(dataset, size))
    cache = Path(cache_dir) if cache_dir else user_cache_dir("pixels")
    paths = [str(s.path) for s in dataset.samples]
    return cached_pixels(paths, size, cache, BOTTOM_CROP_BY_DATASET.get(dataset.name, 0.0), progress)


def training_images(dataset, size: int, cache_dir=None, progress: bool = True):
    """What training reads pixels from: ``dataset_pixels``' array, or for a data set in
    TFRecord shards (``mobile_derm.datasets.shards``) a ``pipeline.ShardImages`` that
    streams them (nothing held in memory; decoded as the cache decodes)."""
    from mobile_derm.datasets.shards import ShardedDataset

    if not isinstance(dataset, ShardedDataset):
        return dataset_pixels(dataset, size, cache_dir, progress)
    from functools import partial

    from mobile_derm.training.pipeline import ShardImages

    return ShardImages(dataset, size, partial(_decode_bytes, size=size,
                                              crop_bottom=BOTTOM_CROP_BY_DATASET.get(dataset.name, 0.0)))


def _decode_bytes(data: bytes, size: int, crop_bottom: float) -> np.ndarray:
    from mobile_derm_quality import decode_image_bytes

    return input_pixels(decode_image_bytes(data), size, crop_bottom)


def save_final_weights(model, final_file: Path) -> None:
    """weights.h5, written once (atomically): its presence marks the training as done."""
    if not final_file.is_file():
        with atomic_path(final_file) as tmp:
            model.save_weights(str(tmp))


def start_run(run_dir: Path, split, config: TrainConfig) -> None:
    """Write the run folder's split and config: a resumed run, export and the
    benchmark read them back, so all use exactly these test images."""
    run_dir.mkdir(parents=True, exist_ok=True)
    split.save(run_dir / "split.json")
    config.save(run_dir / "train_config.json")


def load_run(run_dir: str | Path):
    """Rebuild the trained Keras model of a run from its own config and weights."""
    run_dir = Path(run_dir)
    for name in ("train_config.json", "model_info.json", "weights.h5"):
        if not (run_dir / name).is_file():
            raise DataError(run_dir, f"not a finished training run (no {name})")
    config = TrainConfig.load(run_dir / "train_config.json")
    if read_json_object(run_dir / "model_info.json", DataError, "model info").get("logit_adjustment"):
        # schema 1 kept its prior correction only in model_info.json; this code would drop it
        raise DataError(run_dir, "trained by mobile_derm before calibration (model info schema 1); train it again")
    info = ModelInfo.load(run_dir / "model_info.json")
    model = build_classifier(config, len(info.labels), weights=None)
    model.load_weights(run_dir / "weights.h5")
    if info.calibration:
        # weights.h5 holds the trained model; the calibration chosen on validation lives
        # in model_info.json and is folded into the head here, as in train().
        fold_into_heads(model, np.asarray(info.calibration["shift"]), info.calibration["temperature"])
    return model, config, info


def run_labels(dataset, run_dir: str | Path):
    """Label indices (in the run's label order) and the saved split of a run trained on ``dataset``."""
    from mobile_derm.datasets.splits import Split

    run_dir = Path(run_dir)
    info = ModelInfo.load(run_dir / "model_info.json")
    split = Split.load(run_dir / "split.json", dataset)
    if list(dataset.classes) != list(info.labels):
        raise DataError(run_dir, f"dataset classes {dataset.classes} differ from the run's labels {info.labels}")
    return np.array([info.labels.index(s.label) for s in dataset.samples], dtype=np.int64), split


def run_arrays(dataset, run_dir: str | Path, cache_dir=None, progress: bool = True):
    """Pixels, label indices and the saved split of a run, for export and the
    benchmark (the pixel cache makes this a file load, not a re-decode)."""
    y, split = run_labels(dataset, run_dir)
    config = TrainConfig.load(Path(run_dir) / "train_config.json")
    pixels = dataset_pixels(dataset, config.input_size, cache_dir, progress)
    return pixels, y, split
