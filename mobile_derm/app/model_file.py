"""Reading a ``.tflite`` model file with the standard library alone (no TensorFlow,
no tflite-support): the app-side ``predict`` runs on ai_edge_litert and this.

  ``read_model_info(path_or_bytes)``  the ModelInfo packed in the file, checked
  ``read_labels(path_or_bytes)``      the label file, in output order
  ``read_io_spec(path_or_bytes)``     input/output shapes and types from the flatbuffer
  ``read_integrity(path_or_bytes)``   "verified" or "unchecked" (see below)

The file is what ``mobile_derm_export.metadata.write_metadata`` writes (tflite-support's
layout): the TFLite flatbuffer, whose ``Model.metadata`` entry named
``TFLITE_METADATA`` points at a buffer holding the standard metadata, followed by a
ZIP archive of associated files (``labels.txt``, ``mobile_derm.json``, ...). The file
names both sides agree on live here.

Integrity. Every byte before the ZIP archive (the flatbuffer as tflite-support wrote
it: weights, graph and the TFLITE_METADATA buffer) is covered by a SHA-256 digest
written at export into the packed file ``model_sha256.txt``; the ZIP's members are
covered by their own CRC-32, which ``zipfile`` checks on every read. So a flipped
byte anywhere in the file is refused with a ModelFileError. The digest cannot sit
inside the flatbuffer it covers, hence the separate packed file; it is not a
ModelInfo field because one ModelInfo describes every quantization variant of a
training run, while the digest belongs to one file. Files exported before the digest
existed load as before; ``read_integrity`` calls them "unchecked".
"""
from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
from pathlib import Path
from typing import Union

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.errors import MobileDermError, ModelFileError

# Names inside the model file (tensor names and packed files), shared with the writer.
MODEL_INFO_FILENAME = "mobile_derm.json"
LABELS_FILENAME = "labels.txt"
DISPLAY_NAMES_FILENAME = "display_names.en.txt"
DISPLAY_NAMES_LOCALE = "en"
UNFAMILIARITY_LABELS_FILENAME = "unfamiliarity_labels.txt"
MODEL_DIGEST_FILENAME = "model_sha256.txt"
MODEL_CARD_FILENAME = "model_card.md"  # mobile_derm.evaluation.model_card; also written beside the .tflite files
INPUT_NAME = "image"
OUTPUT_NAME = "probability"

TFLITE_IDENTIFIER = b"TFL3"
_METADATA_NAME = b"TFLITE_METADATA"
# tflite schema TensorType values the reader cares about
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 9: "int8", 7: "int16"}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

PathOrBytes = Union[str, Path, bytes, bytearray, memoryview]


class _Truncated(Exception):
    pass


class _FlatBuffer:
    """Bounds-checked access to the few tflite flatbuffer fields we need.

    Any offset outside the data raises ``_Truncated``: a cut-off download is
    reported as such instead of as an IndexError or a garbage answer.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.n = len(data)
        self.end = 0  # furthest byte reached by any object we walked

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > self.n:
            raise _Truncated()
        self.end = max(self.end, pos + size)

    def u8(self, pos: int) -> int:
        self._need(pos, 1)
        return self.data[pos]

    def _unpack(self, fmt: str, pos: int) -> int:
        self._need(pos, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u16(self, pos: int) -> int:
        return self._unpack("<H", pos)

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def i32(self, pos: int) -> int:
        return self._unpack("<i", pos)

    def u64(self, pos: int) -> int:
        return self._unpack("<Q", pos)

    def root(self) -> int:
        return self.u32(0)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None if absent."""
        vtable = table - self.i32(table)
        vt_len = self.u16(vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_len:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def table(self, table: int, index: int) -> int | None:
        pos = self.field(table, index)
        return None if pos is None else self.indirect(pos)

    def vector(self, table: int, index: int, elem_size: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.indirect(pos)
        length = self.u32(vec)
        self._need(vec + 4, length * elem_size)
        return vec + 4, length

    def string(self, table: int, index: int) -> bytes | None:
        start, length = self.vector(table, index, 1)
        return None if start == 0 else self.data[start : start + length]

    def tables(self, table: int, index: int) -> list[int]:
        start, length = self.vector(table, index, 4)
        return [self.indirect(start + 4 * i) for i in range(length)]


class ModelLayout:
    """What the reader learns from the flatbuffer: tensor specs, metadata presence, extent."""

    def __init__(self, input_shape, input_type, output_shape, output_type, tflite_metadata, flatbuffer_end):
        self.input_shape = input_shape
        self.input_type = input_type
        self.output_shape = output_shape
        self.output_type = output_type
        self.tflite_metadata = tflite_metadata  # the TFLITE_METADATA buffer (bytes), b"" if none
        self.has_tflite_metadata = bool(tflite_metadata)
        self.flatbuffer_end = flatbuffer_end


def _tensor_spec(fb: _FlatBuffer, subgraph: int, io_field: int) -> tuple[list[int], str]:
    tensors = fb.tables(subgraph, 0)
    start, count = fb.vector(subgraph, io_field, 4)
    if count < 1:
        raise ValueError("model has no input or output tensor")
    index = fb.i32(start)
    if not 0 <= index < len(tensors):
        raise ValueError("tensor index out of range")
    tensor = tensors[index]
    shape_start, rank = fb.vector(tensor, 0, 4)
    shape = [fb.i32(shape_start + 4 * i) for i in range(rank)]
    type_pos = fb.field(tensor, 1)
    type_code = 0 if type_pos is None else fb.u8(type_pos)  # flatbuffer default: FLOAT32
    return shape, _TENSOR_TYPES.get(type_code, f"type{type_code}")


def _parse_layout(data: bytes) -> ModelLayout:
    """Walk Model -> subgraphs/buffers/metadata; raises _Truncated or ValueError."""
    fb = _FlatBuffer(data)
    model = fb.root()
    subgraphs = fb.tables(model, 2)
    if not subgraphs:
        raise ValueError("model has no subgraph")
    input_shape, input_type = _tensor_spec(fb, subgraphs[0], 1)
    output_shape, output_type = _tensor_spec(fb, subgraphs[0], 2)
    buffers = fb.tables(model, 4)
    for buf in buffers:  # touching every weight buffer is what detects a cut-off file
        fb.vector(buf, 0, 1)
        offset_pos, size_pos = fb.field(buf, 1), fb.field(buf, 2)
        if offset_pos is not None and size_pos is not None:
            offset, size = fb.u64(offset_pos), fb.u64(size_pos)
            if offset > 1:  # >2 GB models keep buffer data after the flatbuffer
                fb._need(offset, size)
    metadata = b""
    for entry in fb.tables(model, 6):
        if fb.string(entry, 0) == _METADATA_NAME:
            buf_pos = fb.field(entry, 1)
            buf_index = 0 if buf_pos is None else fb.u32(buf_pos)
            if buf_index < len(buffers):
                start, length = fb.vector(buffers[buf_index], 0, 1)
                metadata = data[start : start + length]
    return ModelLayout(input_shape, input_type, output_shape, output_type, metadata, fb.end)


def load_model_bytes(path_or_bytes: PathOrBytes) -> tuple[bytes, str]:
    """(the file's bytes, a name for messages); a one-line ModelFileError if it cannot be read."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "<model bytes>"
    path = Path(path_or_bytes)
    if not path.exists():
        raise ModelFileError(path, "model file not found")
    if not path.is_file():
        raise ModelFileError(path, "not a file")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelFileError(path, f"cannot read ({exc.strerror or exc})") from None


def checked_layout(data: bytes, name: str | None) -> ModelLayout:
    """The flatbuffer's layout, or a one-line ModelFileError saying what is wrong."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        if len(data) == 0:
            raise ModelFileError(name, "empty file, not a TFLite model")
        raise ModelFileError(name, "not a TFLite model (no 'TFL3' flatbuffer identifier)")
    try:
        return _parse_layout(data)
    except _Truncated:
        raise ModelFileError(name, f"truncated TFLite model ({len(data)} bytes; the file was cut off)") from None
    except (ValueError, struct.error) as exc:
        raise ModelFileError(name, f"corrupt TFLite model ({exc})") from None


def packed_files_start(zf: zipfile.ZipFile, data: bytes) -> int:
    """Offset in the file where the associated-files ZIP begins: its first member's
    local header (``zipfile`` reports header offsets from the file's start even when
    the archive was appended to other bytes, as tflite-support does)."""
    return min((member.header_offset for member in zf.infolist()), default=len(data))


def model_digest(data: bytes, zip_start: int) -> str:
    """SHA-256 (hex) of ``data[:zip_start]``: the flatbuffer with its TFLITE_METADATA,
    without the associated files packed after it."""
    return hashlib.sha256(memoryview(data)[:zip_start]).hexdigest()


class _OpenedModel:
    """A validated model file: its name, layout, packed files, and digest check result."""

    def __init__(self, name: str, layout: ModelLayout, files: dict[str, bytes], integrity: str):
        self.name = name
        self.layout = layout
        self.files = files
        self.integrity = integrity  # "verified" or "unchecked" (no digest packed: exported before digests)


def _open(path_or_bytes: PathOrBytes) -> _OpenedModel:
    """Validate the file (structure, packed files' CRCs, digest) and return what it holds."""
    data, name = load_model_bytes(path_or_bytes)
    layout = checked_layout(data, name)

    zip_errors = (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zip_errors as exc:
        # Our metadata names mobile_derm.json: if it is there, the packed files were cut off.
        if data.find(b"PK\x03\x04", layout.flatbuffer_end) >= 0 or MODEL_INFO_FILENAME.encode() in layout.tflite_metadata:
            raise ModelFileError(
                name, f"truncated or corrupt associated files ({exc}); the file was probably cut off"
            ) from None
        has = "TFLite metadata but no associated files" if layout.has_tflite_metadata else "no metadata at all"
        raise ModelFileError(
            name, f"a .tflite without mobile_derm metadata ({has}; no {MODEL_INFO_FILENAME})"
        ) from None
    with archive:
        zip_start = packed_files_start(archive, data)
        try:  # the archive's directory at the end is whole, so this is damage inside, not a cut
            files = {n: archive.read(n) for n in archive.namelist()}
        except zip_errors as exc:
            raise ModelFileError(name, f"corrupt associated files ({exc}; file corrupted or modified)") from None
    return _OpenedModel(name, layout, files, _check_digest(name, data, zip_start, files))


def _check_digest(name: str, data: bytes, zip_start: int, files: dict[str, bytes]) -> str:
    if MODEL_DIGEST_FILENAME not in files:
        return "unchecked"
    written = files[MODEL_DIGEST_FILENAME].decode("ascii", errors="replace").strip()
    if not _SHA256_HEX.fullmatch(written):
        raise ModelFileError(name, f"{MODEL_DIGEST_FILENAME} does not hold a SHA-256 hex digest")
    if model_digest(data, zip_start) != written:
        raise ModelFileError(
            name, "model bytes (weights, graph or TFLite metadata) do not match the digest written at export "
            "(file corrupted or modified)"
        )
    return "verified"


def read_model_info(path_or_bytes: PathOrBytes) -> ModelInfo:
    """The ModelInfo packed in a ``.tflite`` (path or bytes), read with zipfile only.

    Raises ModelFileError (one line, naming the file) for a missing file, a file
    that is not a TFLite flatbuffer, a truncated file, a model without our
    ``mobile_derm.json``, bytes that do not match the digest written at export, or
    metadata that contradicts the model's tensors.
    """
    model = _open(path_or_bytes)
    name, files = model.name, model.files
    if MODEL_INFO_FILENAME not in files:
        raise ModelFileError(name, f"a .tflite without mobile_derm metadata (no {MODEL_INFO_FILENAME} inside)")
    try:
        info = ModelInfo.from_json(files[MODEL_INFO_FILENAME].decode("utf-8"), f"{name}:{MODEL_INFO_FILENAME}")
    except (MobileDermError, UnicodeDecodeError, TypeError, ValueError) as exc:
        problem = exc.problem if isinstance(exc, MobileDermError) else str(exc)
        raise ModelFileError(name, f"invalid {MODEL_INFO_FILENAME}: {problem}") from None
    _check_consistent(name, info, model.layout, files)
    return info


def _check_consistent(name: str, info: ModelInfo, layout: ModelLayout, files: dict[str, bytes]) -> None:
    shape = layout.input_shape
    if len(shape) != 4 or shape[1] != info.input_size or shape[2] != info.input_size or shape[3] != 3:
        raise ModelFileError(
            name, f"{MODEL_INFO_FILENAME} says input {info.input_size}x{info.input_size}x3 but the model takes {shape}"
        )
    if not layout.output_shape or layout.output_shape[-1] != len(info.labels):
        raise ModelFileError(
            name, f"{MODEL_INFO_FILENAME} lists {len(info.labels)} labels but the model outputs {layout.output_shape}"
        )
    if LABELS_FILENAME in files and _parse_labels(files[LABELS_FILENAME]) != list(info.labels):
        raise ModelFileError(name, f"{LABELS_FILENAME} and {MODEL_INFO_FILENAME} disagree on the labels")


def _parse_labels(raw: bytes) -> list[str]:
    return [line for line in raw.decode("utf-8").splitlines() if line.strip()]


def read_labels(path_or_bytes: PathOrBytes) -> list[str]:
    """The label file (``labels.txt``) packed in the model, in output order (zipfile only)."""
    model = _open(path_or_bytes)
    if LABELS_FILENAME not in model.files:
        raise ModelFileError(model.name, f"a .tflite without mobile_derm metadata (no {LABELS_FILENAME} inside)")
    try:
        return _parse_labels(model.files[LABELS_FILENAME])
    except UnicodeDecodeError:
        raise ModelFileError(model.name, f"{LABELS_FILENAME} is not UTF-8 text") from None


def read_model_card(path_or_bytes: PathOrBytes) -> str:
    """The model card (``model_card.md``, Markdown) packed in the model at export (zipfile only)."""
    model = _open(path_or_bytes)
    if MODEL_CARD_FILENAME not in model.files:
        raise ModelFileError(model.name, f"no {MODEL_CARD_FILENAME} inside (exported before model cards were packed)")
    try:
        return model.files[MODEL_CARD_FILENAME].decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(model.name, f"{MODEL_CARD_FILENAME} is not UTF-8 text") from None


def read_integrity(path_or_bytes: PathOrBytes) -> str:
    """"verified" (the digest written at export matches) or "unchecked" (a file
    exported before digests were written); a mismatch is a ModelFileError."""
    return _open(path_or_bytes).integrity


def read_io_spec(path_or_bytes: PathOrBytes) -> dict:
    """Input/output shapes and types from the flatbuffer (no runtime needed)."""
    data, name = load_model_bytes(path_or_bytes)
    layout = checked_layout(data, name)
    return {
        "input_shape": layout.input_shape,
        "input_type": layout.input_type,
        "output_shape": layout.output_shape,
        "output_type": layout.output_type,
        "has_tflite_metadata": layout.has_tflite_metadata,
    }
