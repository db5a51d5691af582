"""TFLite metadata: what a ``.tflite`` carries so an app needs nothing else.

Writer (imports tflite-support, hence TensorFlow):
  ``write_metadata(tflite_bytes, info)`` adds standard TFLite metadata (name,
  version, author, licence; input normalization mean/std and RGB colour space;
  the output's label file) and packs associated files:

  * ``labels.txt``          one label per line, in ``info.labels`` order
                            (TENSOR_AXIS_LABELS on the output tensor: MediaPipe
                            Tasks and the TFLite Task Library name categories with it)
  * ``display_names.en.txt`` the taxonomy's display names, same order, locale "en"
                            (MediaPipe's ``display_names_locale="en"`` shows them)
  * ``mobile_derm.json``    ``info.to_json()``: taxonomy, malignancy thresholds,
                            OOD threshold, quality-gate config, everything else

  Associated files live in a ZIP archive appended to the flatbuffer, so each
  one must also be recorded in the metadata (model-level ``associatedFiles``
  for ``mobile_derm.json``) or the populator complains.

Reader (standard library only, no TensorFlow, no tflite-support: the app-side
``predict`` runs on ai_edge_litert alone):
  ``read_model_info(path_or_bytes)``, ``read_labels(path_or_bytes)``.

Inspection (may import TensorFlow): ``describe(path)``.

What MediaPipe Tasks (1.2.x) does with these fields, read from its source
(``image_tensor_specs.cc``, ``image_preprocessing_graph.cc``):
  * input tensor must be float32 or uint8 (int8 input is refused);
  * float32 input needs NormalizationOptions, and all channels must share one
    mean and one std ("Per-channel image normalization is not available");
  * uint8 input gets raw 0..255 pixels: normalization metadata is ignored, so a
    uint8 model is right in MediaPipe only if its input quantization maps a raw
    pixel to (pixel - mean) / std (scale = 1/std, zero point = mean).
``write_metadata`` warns about each of these instead of failing: LiteRT and our
own ``predict`` still handle such files.
"""
from __future__ import annotations

import io
import json
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Union

from mobile_derm.errors import ConfigError, MobileDermError, ModelFileError
from mobile_derm.app.model_info import MODEL_INFO_FILENAME, ModelInfo

LABELS_FILENAME = "labels.txt"
DISPLAY_NAMES_FILENAME = "display_names.en.txt"
DISPLAY_NAMES_LOCALE = "en"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
UNFAMILIARITY_LABELS_FILENAME = "unfamiliarity_labels.txt"

_TFLITE_IDENTIFIER = b"TFL3"
_METADATA_NAME = b"TFLITE_METADATA"
# tflite schema TensorType values the reader cares about
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 9: "int8", 7: "int16"}

PathOrBytes = Union[str, Path, bytes, bytearray, memoryview]


class MetadataWarning(UserWarning):
    """The file is valid but some app runtime (MediaPipe) will not read it as we do."""


# --------------------------------------------------------------------------
# Reader: standard library only
# --------------------------------------------------------------------------


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


class _ModelLayout:
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


def _parse_layout(data: bytes) -> _ModelLayout:
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
    return _ModelLayout(input_shape, input_type, output_shape, output_type, metadata, fb.end)


def _load(path_or_bytes: PathOrBytes) -> tuple[bytes, str]:
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


def _checked_layout(data: bytes, name: str) -> _ModelLayout:
    """The flatbuffer's layout, or a one-line ModelFileError saying what is wrong."""
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        if len(data) == 0:
            raise ModelFileError(name, "empty file, not a TFLite model")
        raise ModelFileError(name, "not a TFLite model (no 'TFL3' flatbuffer identifier)")
    try:
        return _parse_layout(data)
    except _Truncated:
        raise ModelFileError(name, f"truncated TFLite model ({len(data)} bytes; the file was cut off)") from None
    except (ValueError, struct.error) as exc:
        raise ModelFileError(name, f"corrupt TFLite model ({exc})") from None


def _open(path_or_bytes: PathOrBytes) -> tuple[str, _ModelLayout, dict[str, bytes]]:
    """Validate the file and return (name, layout, associated files by name)."""
    data, name = _load(path_or_bytes)
    layout = _checked_layout(data, name)

    zip_start = data.find(b"PK\x03\x04", layout.flatbuffer_end)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError) as exc:
        # Our metadata names mobile_derm.json: if it is there, the packed files were cut off.
        if zip_start >= 0 or MODEL_INFO_FILENAME.encode() in layout.tflite_metadata:
            raise ModelFileError(
                name, f"truncated or corrupt associated files ({exc}); the file was probably cut off"
            ) from None
        has = "TFLite metadata but no associated files" if layout.has_tflite_metadata else "no metadata at all"
        raise ModelFileError(
            name, f"a .tflite without mobile_derm metadata ({has}; no {MODEL_INFO_FILENAME})"
        ) from None
    return name, layout, files


def read_model_info(path_or_bytes: PathOrBytes) -> ModelInfo:
    """The ModelInfo packed in a ``.tflite`` (path or bytes), read with zipfile only.

    Raises ModelFileError (one line, naming the file) for a missing file, a file
    that is not a TFLite flatbuffer, a truncated file, a model without our
    ``mobile_derm.json``, or metadata that contradicts the model's tensors.
    """
    name, layout, files = _open(path_or_bytes)
    if MODEL_INFO_FILENAME not in files:
        raise ModelFileError(name, f"a .tflite without mobile_derm metadata (no {MODEL_INFO_FILENAME} inside)")
    try:
        info = ModelInfo.from_json(files[MODEL_INFO_FILENAME].decode("utf-8"), f"{name}:{MODEL_INFO_FILENAME}")
    except (MobileDermError, UnicodeDecodeError, TypeError, ValueError) as exc:
        problem = exc.problem if isinstance(exc, MobileDermError) else str(exc)
        raise ModelFileError(name, f"invalid {MODEL_INFO_FILENAME}: {problem}") from None
    _check_consistent(name, info, layout, files)
    return info


def _check_consistent(name: str, info: ModelInfo, layout: _ModelLayout, files: dict[str, bytes]) -> None:
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
    name, _layout, files = _open(path_or_bytes)
    if LABELS_FILENAME not in files:
        raise ModelFileError(name, f"a .tflite without mobile_derm metadata (no {LABELS_FILENAME} inside)")
    try:
        return _parse_labels(files[LABELS_FILENAME])
    except UnicodeDecodeError:
        raise ModelFileError(name, f"{LABELS_FILENAME} is not UTF-8 text") from None


def read_io_spec(path_or_bytes: PathOrBytes) -> dict:
    """Input/output shapes and types from the flatbuffer (no runtime needed)."""
    data, name = _load(path_or_bytes)
    layout = _checked_layout(data, name)
    return {
        "input_shape": layout.input_shape,
        "input_type": layout.input_type,
        "output_shape": layout.output_shape,
        "output_type": layout.output_type,
        "has_tflite_metadata": layout.has_tflite_metadata,
    }


# --------------------------------------------------------------------------
# Writer: tflite-support (imports TensorFlow)
# --------------------------------------------------------------------------


def _check_info(info: ModelInfo) -> None:
    labels = list(info.labels)
    if not labels:
        raise ConfigError(None, "model info has no labels")
    bad = [label for label in labels if not label.strip() or "\n" in label or "\r" in label or label != label.strip()]
    if bad:
        raise ConfigError(None, f"label {bad[0]!r} cannot go in a one-label-per-line file")
    if len(set(labels)) != len(labels):
        raise ConfigError(None, "model info has duplicate labels")
    if len(info.mean) != 3 or len(info.std) != 3:
        raise ConfigError(None, "model info mean and std need three values (R, G, B)")
    if any(float(s) == 0.0 for s in info.std):
        raise ConfigError(None, "model info std must not be zero")


def _display_names(info: ModelInfo) -> list[str] | None:
    names = []
    for label in info.labels:
        entry = info.taxonomy.get(label) if isinstance(info.taxonomy, dict) else None
        display = entry.get("display_name") if isinstance(entry, dict) else None
        names.append(str(display).replace("\n", " ").strip() if display else label)
    return names if names != list(info.labels) else None


def _mediapipe_warnings(input_type: str, output_type: str, info: ModelInfo, input_quant) -> list[str]:
    notes = []
    if input_type not in ("float32", "uint8"):
        notes.append(f"input type {input_type}: MediaPipe Tasks accepts only float32 or uint8 image inputs")
    if output_type not in ("float32", "uint8"):
        notes.append(f"output type {output_type}: MediaPipe Tasks accepts only float32 or uint8 scores")
    if input_type == "float32" and (len(set(info.mean)) > 1 or len(set(info.std)) > 1):
        notes.append(
            f"per-channel normalization mean={list(info.mean)} std={list(info.std)}: MediaPipe Tasks "
            "refuses float models whose channels differ (one mean/std for all channels only)"
        )
    if input_type == "uint8" and input_quant is not None:
        scale, zero_point = input_quant
        # MediaPipe (and our predict) feed raw pixels p; the model then sees
        # (p - zero_point) * scale and should see (p - mean) / std.
        worst = 0.0
        for mean, std in zip(info.mean, info.std):
            for p in (0.0, 255.0):
                worst = max(worst, abs((p - zero_point) * scale - (p - mean) / std) * std)
        if worst > 2.0:
            notes.append(
                f"uint8 input quantization (scale={scale:.6g}, zero_point={zero_point}) does not map raw pixels "
                f"to (pixel - mean) / std (off by up to {worst:.1f} pixel levels); apps that feed raw pixels, "
                "MediaPipe included, will see shifted inputs"
            )
    return notes


def write_metadata(tflite_bytes: bytes, info: ModelInfo) -> bytes:
    """Return ``tflite_bytes`` with TFLite metadata, label files and ``mobile_derm.json`` packed in.

    The input type (float32, or uint8/int8 for full-integer models) comes from
    the model. Normalization metadata always describes the float input:
    ``(pixel - info.mean) / info.std`` (for uint8 inputs runtimes ignore it).
    Emits ``MetadataWarning`` when MediaPipe Tasks would refuse or misread the file.
    """
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as _metadata_fb
    from tensorflow_lite_support.metadata import schema_py_generated as _schema_fb
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info, metadata_writer

    _check_info(info)
    data = bytes(tflite_bytes)
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise ModelFileError(None, "cannot write metadata: the bytes are not a TFLite model")
    try:
        layout = _parse_layout(data)
    except (_Truncated, ValueError, struct.error):
        raise ModelFileError(None, "cannot write metadata: truncated or corrupt TFLite model") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFileError(None, "cannot write metadata: the model already carries associated files; pass the converter's output")

    shape = layout.input_shape
    if len(shape) != 4 or shape[1:] != [info.input_size, info.input_size, 3]:
        raise ConfigError(None, f"model info says input {info.input_size}x{info.input_size}x3 but the model takes {shape}")
    if layout.output_shape[-1:] != [len(info.labels)]:
        raise ConfigError(None, f"model info lists {len(info.labels)} labels but the model outputs {layout.output_shape}")

    model = _schema_fb.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    in_tensor = subgraph.Tensors(subgraph.Inputs(0))
    out_tensor = subgraph.Tensors(subgraph.Outputs(0))
    n_outputs = subgraph.OutputsLength()
    if n_outputs != (2 if info.familiarity else 1):
        raise ConfigError(None, f"the model has {n_outputs} outputs; model info expects "
                                f"{'probabilities and unfamiliarity' if info.familiarity else 'probabilities only'}")
    input_quant = None
    q = in_tensor.Quantization()
    if q is not None and q.ScaleLength() == 1 and q.ZeroPointLength() == 1:
        input_quant = (float(q.Scale(0)), int(q.ZeroPoint(0)))
    for note in _mediapipe_warnings(layout.input_type, layout.output_type, info, input_quant):
        warnings.warn(note, MetadataWarning, stacklevel=2)

    general = metadata_info.GeneralMd(
        name=info.name,
        version=info.version,
        description=info.description,
        author=info.author,
        licenses=info.licence,
    )
    input_md = metadata_info.InputImageTensorMd(
        name=INPUT_NAME,
        description=(
            f"RGB image, {info.input_size}x{info.input_size}; "
            + ("raw 0..255 pixels (uint8)" if layout.input_type == "uint8" else "model input = (pixel - mean) / std")
        ),
        norm_mean=[float(x) for x in info.mean],
        norm_std=[float(x) for x in info.std],
        color_space_type=_metadata_fb.ColorSpaceType.RGB,
        tensor_type=in_tensor.Type(),
    )

    with tempfile.TemporaryDirectory(prefix="mobile_derm_md_") as tmp:
        tmp = Path(tmp)
        labels_path = tmp / LABELS_FILENAME
        labels_path.write_text("\n".join(info.labels) + "\n", encoding="utf-8")
        label_files = [metadata_info.LabelFileMd(str(labels_path))]
        display = _display_names(info)
        if display is not None:
            display_path = tmp / DISPLAY_NAMES_FILENAME
            display_path.write_text("\n".join(display) + "\n", encoding="utf-8")
            label_files.append(metadata_info.LabelFileMd(str(display_path), locale=DISPLAY_NAMES_LOCALE))
        info_path = tmp / MODEL_INFO_FILENAME
        info_path.write_text(info.to_json(), encoding="utf-8")

        output_md = metadata_info.ClassificationTensorMd(
            name=OUTPUT_NAME,
            description="Probabilities of the labels, in labels.txt order.",
            label_files=label_files,
            tensor_type=out_tensor.Type(),
        )
        outputs = [output_md.create_metadata()]
        associated = [f.file_path for f in label_files] + [str(info_path)]
        if info.familiarity:
            # A one-label classification head, so MediaPipe Tasks reports it as the second
            # classification: category "unfamiliar", score above 0.5 = abstain.
            unfamiliar_path = tmp / UNFAMILIARITY_LABELS_FILENAME
            unfamiliar_path.write_text("unfamiliar\n", encoding="utf-8")
            outputs.append(metadata_info.ClassificationTensorMd(
                name=info.familiarity["output"],
                description=("How unlike the training photos this image is (feature-space distance to the nearest "
                             "class, squashed to 0..1); above 0.5 the model should not be trusted: abstain."),
                label_files=[metadata_info.LabelFileMd(str(unfamiliar_path))],
                tensor_type=subgraph.Tensors(subgraph.Outputs(1)).Type(),
            ).create_metadata())
            associated.append(str(unfamiliar_path))
        model_md = general.create_metadata()
        info_md = metadata_info.AssociatedFileMd(
            str(info_path),
            description="mobile_derm ModelInfo: labels, taxonomy, thresholds, quality-gate config (JSON).",
            file_type=_metadata_fb.AssociatedFileType.DESCRIPTIONS,
        )
        model_md.associatedFiles = [info_md.create_metadata()]
        writer = metadata_writer.MetadataWriter.create_from_metadata(
            bytearray(data),
            model_metadata=model_md,
            input_metadata=[input_md.create_metadata()],
            output_metadata=outputs,
            associated_files=associated,
        )
        try:
            return bytes(writer.populate())
        except ValueError as exc:
            raise ModelFileError(None, f"tflite-support refused the metadata: {exc}") from None


def write_model_file(path: str | Path, tflite_bytes: bytes, info: ModelInfo) -> Path:
    """write_metadata, read it back, and put it at ``path`` atomically.

    The file appears only complete and verified: on any error (including a
    read-back that does not give ``info``) nothing is left at ``path``.
    """
    from mobile_derm.io_utils import atomic_path

    path = Path(path)
    data = write_metadata(tflite_bytes, info)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        back = read_model_info(tmp)
        if json.loads(back.to_json()) != json.loads(info.to_json()):
            raise ModelFileError(path, "metadata read back differs from what was written")
    return path


def describe(path: str | Path) -> dict:
    """Human inspection via tflite-support's MetadataDisplayer (imports TensorFlow).

    Returns {"path", "metadata" (the metadata as JSON object), "associated_files"
    (names), "io" (tensor shapes/types), "model_info" (our JSON, or None)}.
    """
    data, name = _load(path)
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise ModelFileError(name, "not a TFLite model (no 'TFL3' flatbuffer identifier)")
    from tensorflow_lite_support.metadata.python import metadata as _metadata

    try:
        displayer = _metadata.MetadataDisplayer.with_model_buffer(data)
        metadata = json.loads(displayer.get_metadata_json())
        files = displayer.get_packed_associated_file_list()
    except ValueError as exc:
        raise ModelFileError(name, f"no readable TFLite metadata ({exc})") from None
    info = None
    if MODEL_INFO_FILENAME in files:
        info = json.loads(displayer.get_associated_file_buffer(MODEL_INFO_FILENAME).decode("utf-8"))
    return {
        "path": name,
        "metadata": metadata,
        "associated_files": sorted(files),
        "io": read_io_spec(data),
        "model_info": info,
    }
