"""TFLite metadata writer (mobile_derm_export.metadata), reader and integrity digest
(mobile_derm.app.model_file), and the MediaPipe comparison logic.

One tiny tf_keras model is converted once per module (float32 and full-int8
with uint8 I/O); everything else works on those bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mobile_derm_export import mediapipe_check
from mobile_derm_export.metadata import MetadataWarning, write_metadata, write_model_file
from mobile_derm.app.model_file import (
    DISPLAY_NAMES_FILENAME,
    LABELS_FILENAME,
    MODEL_DIGEST_FILENAME,
    MODEL_INFO_FILENAME,
    read_integrity,
    read_io_spec,
    read_labels,
    read_model_info,
)
from mobile_derm.errors import ConfigError, ModelFileError
from mobile_derm.app.model_info import ModelInfo

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
LABELS = ["melanoma", "nevus", "seborrheic_keratosis"]


def _info(**changes) -> ModelInfo:
    info = ModelInfo(
        name="tiny_test",
        version="0.0.1",
        backbone="tiny_cnn",
        input_size=SIZE,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        labels=list(LABELS),
        taxonomy={
            "melanoma": {"display_name": "Melanoma", "malignant": True, "treatments": ["excision"]},
            "nevus": {"display_name": "Mole (nevus)", "malignant": False, "treatments": []},
            "seborrheic_keratosis": {"display_name": "Seborrheic keratosis", "malignant": False, "treatments": []},
        },
        malignancy_thresholds={"sensitive": 0.15, "specific": 0.55},
        ood_threshold=0.35,
        gate_config={"min_sharpness": 40.0, "max_overexposed": 0.2},
    )
    return dataclasses.replace(info, **changes)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    from mobile_derm.tf_setup import keras, tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(len(LABELS), activation="softmax")(x))

    float32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    rng = np.random.default_rng(0)
    rep = (rng.integers(0, 256, (8, SIZE, SIZE, 3)).astype(np.float32) - 127.0) / 128.0
    rep[0], rep[1] = -127.0 / 128.0, 128.0 / 128.0  # span raw pixels 0..255 exactly
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in rep)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Statistics for quantized inputs were expected"
        int8 = conv.convert()
    return {"float32": float32, "int8": int8}


@pytest.fixture(scope="module")
def written(models, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    paths = {}
    for variant, data in models.items():
        paths[variant] = write_model_file(out / f"tiny_{variant}.tflite", data, _info())
    return paths


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_round_trip(written, variant):
    path = written[variant]
    info = read_model_info(path)
    assert info == _info()
    assert read_model_info(path.read_bytes()) == _info()
    assert read_labels(path) == LABELS
    io = read_io_spec(path)
    assert io["input_shape"] == [1, SIZE, SIZE, 3]
    assert io["input_type"] == ("float32" if variant == "float32" else "uint8")
    assert io["output_type"] == ("float32" if variant == "float32" else "uint8")


def test_displayer_sees_labels_and_normalization(written):
    from mobile_derm_export.metadata import describe

    for variant, path in written.items():
        d = describe(path)
        assert {LABELS_FILENAME, MODEL_INFO_FILENAME, DISPLAY_NAMES_FILENAME} <= set(d["associated_files"])
        assert d["metadata"]["name"] == "tiny_test" and d["metadata"]["version"] == "0.0.1"
        sub = d["metadata"]["subgraph_metadata"][0]
        inp = sub["input_tensor_metadata"][0]
        norm = inp["process_units"][0]["options"]
        assert norm["mean"] == [127.0, 127.0, 127.0] and norm["std"] == [128.0, 128.0, 128.0]
        assert inp["content"]["content_properties"]["color_space"] == "RGB"
        files = {f["name"]: f for f in sub["output_tensor_metadata"][0]["associated_files"]}
        assert files[LABELS_FILENAME]["type"] == "TENSOR_AXIS_LABELS"
        assert files[DISPLAY_NAMES_FILENAME]["locale"] == "en"
        assert d["model_info"]["taxonomy"]["nevus"]["display_name"] == "Mole (nevus)"
        assert d["integrity"] == "verified" and MODEL_DIGEST_FILENAME in d["associated_files"]

    from tensorflow_lite_support.metadata.python import metadata

    displayer = metadata.MetadataDisplayer.with_model_file(str(written["int8"]))
    assert displayer.get_associated_file_buffer(LABELS_FILENAME).decode().split() == LABELS
    names = displayer.get_associated_file_buffer(DISPLAY_NAMES_FILENAME).decode().splitlines()
    assert names == ["Melanoma", "Mole (nevus)", "Seborrheic keratosis"]


def test_reader_runs_without_tensorflow(written):
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "tflite_support", "tensorflow_lite_support", "tf_keras", "keras"):
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        from mobile_derm.app.model_file import read_model_info, read_labels
        info = read_model_info({str(written['int8'])!r})
        print(info.name, ",".join(read_labels({str(written['float32'])!r})))
        assert not any(m.split(".")[0] in ("tensorflow", "tensorflow_lite_support") for m in sys.modules)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tiny_test", ",".join(LABELS)]


def _assert_one_line_error(path: Path, words: str):
    with pytest.raises(ModelFileError) as err:
        read_model_info(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert words in message
    return message


def test_missing_file(tmp_path):
    _assert_one_line_error(tmp_path / "absent.tflite", "not found")


def test_not_a_tflite(tmp_path):
    bad = tmp_path / "photo.tflite"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    _assert_one_line_error(bad, "not a TFLite model")
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    _assert_one_line_error(empty, "empty")


def test_truncated(written, tmp_path):
    data = written["float32"].read_bytes()
    half = tmp_path / "half.tflite"
    half.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(half, "truncated")
    tail_cut = tmp_path / "tail_cut.tflite"  # flatbuffer whole, packed files cut off
    tail_cut.write_bytes(data[:-40])
    _assert_one_line_error(tail_cut, "truncated")
    with pytest.raises(ModelFileError, match="truncated"):
        read_labels(half)


def test_tflite_without_our_metadata(models, tmp_path):
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(models["float32"])
    _assert_one_line_error(plain, "without mobile_derm metadata")
    with pytest.raises(ModelFileError, match="without mobile_derm metadata"):
        read_labels(plain)


def test_metadata_contradicting_the_model_is_refused(models, tmp_path):
    with pytest.raises(ConfigError, match="input"):
        write_metadata(models["float32"], _info(input_size=SIZE * 2))
    with pytest.raises(ConfigError, match="labels"):
        write_metadata(models["float32"], _info(labels=["a", "b"], taxonomy={}))
    with pytest.raises(ConfigError, match="one-label-per-line"):
        write_metadata(models["float32"], _info(labels=["a", "b\nc", "d"], taxonomy={}))


def test_atomic_write_leaves_nothing_on_failure(models, tmp_path, monkeypatch):
    target = tmp_path / "out" / "model.tflite"
    real_write = Path.write_bytes

    def failing_write(self, data):
        real_write(self, data[: len(data) // 3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError):
        write_model_file(target, models["int8"], _info())
    monkeypatch.undo()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []

    with pytest.raises(ModelFileError):  # already packed: refused before any file is made
        write_model_file(target, write_metadata(models["int8"], _info()), _info())
    assert list(target.parent.iterdir()) == []


def test_mediapipe_incompatibilities_warn(models):
    per_channel = _info(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    with pytest.warns(MetadataWarning, match="per-channel"):
        write_metadata(models["float32"], per_channel)
    with pytest.warns(MetadataWarning, match="raw pixels"):
        write_metadata(models["int8"], per_channel)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetadataWarning)
        write_metadata(models["int8"], _info())  # uniform 127/128 and a 0..255 calibration: raw pixels fit


# ---------------------------------------------------------------- integrity digest


def _zip_start(data: bytes) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return min(member.header_offset for member in zf.infolist())


def _flip(data: bytes, at: int, count: int = 1) -> bytes:
    out = bytearray(data)
    for i in range(at, at + count):
        out[i] ^= 0xFF
    return bytes(out)


def _largest_weights(data: bytes) -> bytes:
    """The largest weight buffer (the conv kernel), not a buffer that Model.metadata names."""
    from tensorflow_lite_support.metadata import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    metadata_buffers = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    weights = [model.Buffers(i).DataAsNumpy().tobytes() for i in range(model.BuffersLength())
               if i not in metadata_buffers and model.Buffers(i).DataLength() > 0]
    return max(weights, key=len)


def _repack(data: bytes, replace: dict[str, bytes | None]) -> bytes:
    """``data`` with its associated files rebuilt as tflite-support appends them, some
    replaced (None: left out); the bytes before the ZIP are kept as they are."""
    start = _zip_start(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(m, zf.read(m)) for m in zf.infolist()]
    out = io.BytesIO(data[:start])
    out.seek(start)
    with zipfile.ZipFile(out, "a") as zf:
        for member, content in members:
            content = replace.get(member.filename, content)
            if content is not None:
                zf.writestr(member, content)
    return out.getvalue()


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_digest_covers_every_byte_before_the_packed_files(written, variant):
    data = written[variant].read_bytes()
    start = _zip_start(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        recorded = zf.read(MODEL_DIGEST_FILENAME).decode("ascii").strip()
    assert recorded == hashlib.sha256(data[:start]).hexdigest()
    assert read_integrity(written[variant]) == "verified"
    assert data[start:start + 4] == b"PK\x03\x04"  # the digested part ends where the ZIP begins


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_flipped_weight_bytes_are_refused(written, tmp_path, variant):
    from mobile_derm.app.predict import Predictor

    data = written[variant].read_bytes()
    kernel = _largest_weights(data)
    assert data.count(kernel) == 1
    corrupt = tmp_path / f"corrupt_{variant}.tflite"
    corrupt.write_bytes(_flip(data, data.index(kernel) + len(kernel) // 2, count=4))
    assert read_io_spec(corrupt)["input_shape"] == [1, SIZE, SIZE, 3]  # the structure is intact
    message = _assert_one_line_error(corrupt, "do not match the digest written at export")
    assert "corrupted or modified" in message
    with pytest.raises(ModelFileError, match="digest"):
        read_labels(corrupt)
    with pytest.raises(ModelFileError, match="digest"):
        Predictor(corrupt)
    assert Predictor(written[variant]).info == _info()  # the intact file loads


def test_flipped_byte_in_the_tflite_metadata_description_is_caught(written, tmp_path):
    # The digest covers the TFLITE_METADATA buffer too: MediaPipe reads the normalization
    # and label files from it, so a change there changes what an app computes.
    data = written["float32"].read_bytes()
    at = data.index(b"Probabilities of the labels")
    assert at < _zip_start(data)
    changed = tmp_path / "description.tflite"
    changed.write_bytes(_flip(data, at))
    _assert_one_line_error(changed, "do not match the digest")


def test_flipped_byte_in_a_packed_file_is_caught_by_its_crc(written, tmp_path):
    data = written["float32"].read_bytes()
    at = data.index(b'"malignancy_thresholds"', _zip_start(data))  # inside the packed mobile_derm.json
    changed = tmp_path / "json.tflite"
    changed.write_bytes(_flip(data, at + 2))
    message = _assert_one_line_error(changed, "corrupt associated files")
    assert "CRC" in message


def test_file_without_digest_loads_unchecked(written, tmp_path):
    # A file exported before digests were written: no model_sha256.txt packed.
    old = tmp_path / "old.tflite"
    old.write_bytes(_repack(written["int8"].read_bytes(), {MODEL_DIGEST_FILENAME: None}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_model_info(old) == _info()
        assert read_integrity(old) == "unchecked"
    bad = tmp_path / "bad_digest.tflite"
    bad.write_bytes(_repack(written["int8"].read_bytes(), {MODEL_DIGEST_FILENAME: b"not a digest\n"}))
    _assert_one_line_error(bad, "does not hold a SHA-256 hex digest")


# ---------------------------------------------------------------- mediapipe_check


def _cats(scores, labels=LABELS):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [{"index": i, "score": scores[i], "category_name": labels[i], "display_name": ""} for i in order]


def test_compare_predictions_agreement_and_disagreement():
    ours = {"a.jpg": [0.7, 0.2, 0.1], "b.jpg": [0.1, 0.3, 0.6], "c.jpg": [0.2, 0.5, 0.3]}
    theirs = {"a.jpg": _cats([0.69, 0.21, 0.1]), "b.jpg": _cats([0.1, 0.6, 0.3]), "c.jpg": _cats([0.2, 0.5, 0.3])}
    res = mediapipe_check.compare_predictions(LABELS, ours, theirs)
    assert res["n_images"] == 3 and res["n_compared"] == 3 and res["agree"] == 2
    assert res["agree_fraction"] == pytest.approx(2 / 3)
    assert [d["image"] for d in res["disagreements"]] == ["b.jpg"]
    assert res["disagreements"][0]["ours"] == "seborrheic_keratosis" and res["disagreements"][0]["mediapipe"] == "nevus"
    assert res["label_names_ok"] is True
    assert res["max_abs_score_diff"] == pytest.approx(0.3)


def test_compare_unfamiliarity_counts_decisions_and_missing_heads():
    ours = {"a.jpg": 0.2, "b.jpg": 0.7, "c.jpg": 0.9}
    res = mediapipe_check.compare_unfamiliarity(ours, {"a.jpg": 0.25, "b.jpg": 0.45})
    assert res == {"n_compared": 2, "missing": 1, "max_abs_diff": pytest.approx(0.25), "decisions_agree": 1}


def test_compare_predictions_ties_errors_and_wrong_names():
    ours = {"tie.jpg": [0.5, 0.5, 0.0], "err.jpg": [1, 0, 0], "gone.jpg": [1, 0, 0]}
    theirs = {"tie.jpg": _cats([0.4, 0.5, 0.1]), "err.jpg": {"error": "RuntimeError: boom"}}
    res = mediapipe_check.compare_predictions(LABELS, ours, theirs)
    assert res["n_compared"] == 1 and res["agree"] == 1  # a tie in our probabilities counts as agreement
    assert {e["image"] for e in res["errors"]} == {"err.jpg", "gone.jpg"}

    shuffled = ["nevus", "melanoma", "seborrheic_keratosis"]  # label file out of order
    res = mediapipe_check.compare_predictions(LABELS, {"x.jpg": [0.8, 0.1, 0.1]}, {"x.jpg": _cats([0.8, 0.1, 0.1], shuffled)})
    assert res["label_names_ok"] is False and res["agree"] == 0
    assert res["label_name_mismatches"][0] == {"index": 0, "mediapipe": "nevus", "ours": "melanoma"}


def test_center_roi_and_collect_images(tmp_path):
    assert mediapipe_check._center_roi(100, 200) == [0.25, 0.0, 0.75, 1.0]
    assert mediapipe_check._center_roi(50, 50) == [0.0, 0.0, 1.0, 1.0]
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jpg", "d/sub/a.PNG", "d/notes.txt", "c.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    found = mediapipe_check.collect_images([str(tmp_path / "d"), str(tmp_path / "c.jpeg"), str(tmp_path / "d/b.jpg")])
    assert [p.name for p in found] == ["b.jpg", "a.PNG", "c.jpeg"]
    with pytest.raises(mediapipe_check.CheckError):
        mediapipe_check.collect_images([str(tmp_path / "nope")])


def test_a_model_card_given_to_the_writer_is_packed_and_read_back(models, written, tmp_path):
    from mobile_derm.app.model_file import MODEL_CARD_FILENAME, read_model_card

    card = "# Model card: tiny_test\n\nbalanced accuracy 0.421 — ünïcode kept\n"
    path = write_model_file(tmp_path / "carded.tflite", models["int8"], _info(), model_card=card)
    assert read_model_card(path) == card
    assert read_integrity(path) == "verified"  # the card is covered like every packed file
    with zipfile.ZipFile(path) as zf:
        assert MODEL_CARD_FILENAME in zf.namelist()
    with pytest.raises(ModelFileError, match=MODEL_CARD_FILENAME):
        read_model_card(written["int8"])  # written without one
