"""TFLite metadata: what a ``.tflite`` carries so an app needs nothing else.

The writer lives here, the reader with the app (``mobile_derm.app.model_file``:
standard library only, no TensorFlow), together with the names both agree on.

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
  * ``model_card.md``       the model card (``mobile_derm.evaluation.model_card``), when
                            the exporter gives one: intended use, data, results, limits
  * ``model_sha256.txt``    SHA-256 of every byte before the associated-files ZIP
                            (the flatbuffer with its TFLITE_METADATA); the reader
                            refuses a file that no longer matches it

  Associated files live in a ZIP archive appended to the flatbuffer, so each
  one must also be recorded in the metadata (model-level ``associatedFiles``
  for ``mobile_derm.json``, ``model_card.md`` and ``model_sha256.txt``) or the populator complains.

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
import tempfile
import warnings
import zipfile
from pathlib import Path

from mobile_derm.app.model_file import (
    DISPLAY_NAMES_FILENAME,
    DISPLAY_NAMES_LOCALE,
    INPUT_NAME,
    LABELS_FILENAME,
    MODEL_CARD_FILENAME,
    MODEL_DIGEST_FILENAME,
    MODEL_INFO_FILENAME,
    OUTPUT_NAME,
    UNFAMILIARITY_LABELS_FILENAME,
    checked_layout,
    load_model_bytes,
    model_digest,
    packed_files_start,
    read_integrity,
    read_io_spec,
    read_model_info,
)
from mobile_derm.app.model_info import ModelInfo
from mobile_derm.errors import ConfigError, ModelFileError


class MetadataWarning(UserWarning):
    """The file is valid but some app runtime (MediaPipe) will not read it as we do."""


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


def write_metadata(tflite_bytes: bytes, info: ModelInfo, model_card: str | None = None) -> bytes:
    """Return ``tflite_bytes`` with TFLite metadata, label files, ``mobile_derm.json``,
    the model card (``model_card``: Markdown text, when given) and the integrity digest
    (``model_sha256.txt``) packed in.

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
    try:
        layout = checked_layout(data, None)
    except ModelFileError as exc:
        raise ModelFileError(None, f"cannot write metadata: {exc.problem}") from None
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
        # A placeholder of the digest's length: the digest covers the flatbuffer that
        # populate() writes, so it is known only afterwards (_with_digest fills it in).
        digest_path = tmp / MODEL_DIGEST_FILENAME
        digest_path.write_text("0" * 64 + "\n", encoding="ascii")

        output_md = metadata_info.ClassificationTensorMd(
            name=OUTPUT_NAME,
            description="Probabilities of the labels, in labels.txt order.",
            label_files=label_files,
            tensor_type=out_tensor.Type(),
        )
        outputs = [output_md.create_metadata()]
        associated = [f.file_path for f in label_files] + [str(info_path), str(digest_path)]
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
        digest_md = metadata_info.AssociatedFileMd(
            str(digest_path),
            description=("SHA-256 (hex) of every byte of this file before the associated-files ZIP "
                         "(the flatbuffer with its TFLITE_METADATA); mobile_derm refuses a file that does not match."),
        )
        model_md.associatedFiles = [info_md.create_metadata(), digest_md.create_metadata()]
        if model_card is not None:
            card_path = tmp / MODEL_CARD_FILENAME
            card_path.write_text(model_card, encoding="utf-8")
            model_md.associatedFiles.append(metadata_info.AssociatedFileMd(
                str(card_path), description="Model card (Markdown): intended use, data and licences, results, "
                                            "subgroups, quantization, known limits.").create_metadata())
            associated.append(str(card_path))
        writer = metadata_writer.MetadataWriter.create_from_metadata(
            bytearray(data),
            model_metadata=model_md,
            input_metadata=[input_md.create_metadata()],
            output_metadata=outputs,
            associated_files=associated,
        )
        try:
            populated = bytes(writer.populate())
        except ValueError as exc:
            raise ModelFileError(None, f"tflite-support refused the metadata: {exc}") from None
    return _with_digest(populated)


def _with_digest(populated: bytes) -> bytes:
    """``populated`` with the placeholder digest file replaced by the SHA-256 of the
    bytes before the associated-files ZIP.

    The ZIP is rebuilt as tflite-support appends it (``zipfile`` in append mode after
    the flatbuffer; same members, order and ZipInfo), so the digested bytes stay
    exactly as tflite-support wrote them (a second populate() would repack them).
    """
    with zipfile.ZipFile(io.BytesIO(populated)) as zf:
        zip_start = packed_files_start(zf, populated)
        members = [(member, zf.read(member)) for member in zf.infolist()]
    digest_line = (model_digest(populated, zip_start) + "\n").encode("ascii")
    out = io.BytesIO()
    out.write(populated[:zip_start])
    with zipfile.ZipFile(out, "a") as zf:
        for member, content in members:
            zf.writestr(member, digest_line if member.filename == MODEL_DIGEST_FILENAME else content)
    return out.getvalue()


def write_model_file(path: str | Path, tflite_bytes: bytes, info: ModelInfo, model_card: str | None = None) -> Path:
    """write_metadata, read it back, and put it at ``path`` atomically.

    The file appears only complete and verified: on any error (including a
    read-back that does not give ``info``) nothing is left at ``path``.
    """
    from mobile_derm.io_utils import atomic_path

    path = Path(path)
    data = write_metadata(tflite_bytes, info, model_card)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        back = read_model_info(tmp)
        if json.loads(back.to_json()) != json.loads(info.to_json()):
            raise ModelFileError(path, "metadata read back differs from what was written")
    return path


def describe(path: str | Path) -> dict:
    """Human inspection via tflite-support's MetadataDisplayer (imports TensorFlow).

    Returns {"path", "metadata" (the metadata as JSON object), "associated_files"
    (names), "io" (tensor shapes/types), "model_info" (our JSON, or None),
    "integrity" ("verified", "unchecked" for a file without digest, or "failed: <why>")}.
    """
    data, name = load_model_bytes(path)
    checked_layout(data, name)
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
    try:
        integrity = read_integrity(data)
    except ModelFileError as exc:  # describe is for looking at broken files too
        integrity = f"failed: {exc.problem}"
    return {
        "path": name,
        "metadata": metadata,
        "associated_files": sorted(files),
        "io": read_io_spec(data),
        "model_info": info,
        "integrity": integrity,
    }
