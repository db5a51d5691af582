"""The gate's TFLite twin (``gate.tflite``) on LiteRT: the same verdict as ``gate.assess``,
from a model file an app runs with its own TFLite runtime.

``mobile_derm_export.gate_model`` builds the file from a GateConfig (TensorFlow, at export
time); this module runs it with numpy, OpenCV and ``ai_edge_litert`` alone, so ``check-photo
--engine tflite`` and ``predict`` can gate with it without TensorFlow.

The input contract (also written into the file's metadata, ``gate.json``). The twin takes
the copies of the photo that the OpenCV gate itself makes before it measures anything, each
top-left in a zero-padded fixed-size uint8 RGB tensor, and their sizes:

* ``analysis`` (A x A, A = the config's analysis_size): ``features.shrink(photo, A)`` (a photo
  of at least 4A px: nearest neighbour to twice the final size, then one exact bilinear halving;
  a smaller one: exact 2x bilinear halvings, then one INTER_AREA step), grown by nearest
  neighbour to at least 16 px on the shorter side;
* ``tiny`` (96 x 96): ``shrink(analysis, 96)``, the copy the colour decisions use;
* ``thumbnail`` (64 x 64): ``cv2.resize(analysis, (64, 64), INTER_AREA)``, the not-skin
  descriptor's copy;
* ``native_crop`` (256 x 256): the photo itself (as decoded, before any shrink) cropped at
  ``y0 = max(0, (height - 256) // 2) // 8 * 8`` (x0 alike), 256 px or to the edge: the JPEG
  blockiness is measured at native resolution;
* ``sizes`` (int32, SIZE_FIELDS): the photo's height and width, each copy's valid height and
  width, and the classifier's input size (the resolution check's ``min_model_input``).

``twin_inputs`` makes them (it is the reference an app's port checks itself against:
``mobile-derm gate-vectors``). Everything else, from the grey conversion to the verdict, is
inside the file.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from mobile_derm_quality.config import CHECK_NAMES, GateConfig
from mobile_derm_quality.decode import DecodedPhoto
from mobile_derm_quality.errors import QualityCheckError
# the contract's sizes, named here too for the modules that speak the contract (web_app)
from mobile_derm_quality.features import (MIN_ANALYSIS_SIDE, NATIVE_CROP_SIZE, TINY_SIZE, Measurements, analysis_copy,
                                          native_crop, shrink)
from mobile_derm_quality.gate import (DESCRIPTOR_TERMS, GUIDANCE, CheckResult, Verdict, _as_rgb, raw_values,
                                      read_photo_for, reasons_and_guidance, with_photo_facts)
from mobile_derm_quality.not_skin import INPUT_SIZE as THUMBNAIL_SIZE

CONTRACT_VERSION = 2
METADATA_FILENAME = "gate.json"  # packed in gate.tflite: contract, config, reason codes, guidance
MODEL_FILENAME = "gate.tflite"
SIGNATURE = "gate"  # the file's one signature
# the key in a classifier's packed gate config (ModelInfo.gate_config) naming the twin beside it
CONFIG_POINTER_KEY = "tflite_model"
SIZE_FIELDS = ("photo_height", "photo_width", "analysis_height", "analysis_width", "tiny_height", "tiny_width",
               "crop_height", "crop_width", "min_model_input")
INPUT_NAMES = ("analysis", "tiny", "thumbnail", "native_crop", "sizes")
# measurements output, in this order (features.Measurements' numbers, plus the derived raw values)
MEASUREMENT_NAMES = ("width", "height", "analysis_long_side", "skin_fraction", "roi_offset", "colourful_fraction",
                     "hue_entropy", "blur", "blur_h", "blur_v", "shake_blur", "luma_median", "luma_p95", "bright_clip",
                     "glare_fraction", "glare_spots", "cast_r", "cast_g", "cast_b", "noise_sigma", "blockiness", "grey",
                     "white_u", "white_v", "detail_offset", "jpeg_grid", "typicality", "cast_distance", "white_distance",
                     "white_cool", "nonskin_logit")
# the names above that are gate.raw_values' values derived from the measurements, not Measurements fields
DERIVED_NAMES = ("typicality", "cast_distance", "white_distance", "white_cool", "nonskin_logit")
OUTPUT_NAMES = ("measurements", "scores", "passed", "warn", "applicable", "reason", "reason_flags", "decision")
DECISIONS = ("accept", "warn", "reject")
# every reason a check can give ("transparent" is the decoder's, not a check's)
REASON_CODES = tuple(code for code in GUIDANCE if code != "transparent")


class GateTwinError(QualityCheckError):
    """A gate.tflite that cannot be used (missing, not a twin, wrong contract), or inputs that do not fit it."""


def _padded(image: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((1, size, size, 3), np.uint8)
    out[0, : image.shape[0], : image.shape[1]] = image
    return out


def twin_inputs(rgb: np.ndarray, analysis_size: int, min_model_input: int) -> dict[str, np.ndarray]:
    """The twin's input tensors for one decoded RGB uint8 photo (the contract above)."""
    rgb = np.ascontiguousarray(rgb)
    h0, w0 = rgb.shape[:2]
    small = analysis_copy(rgb, analysis_size)
    tiny = shrink(small, TINY_SIZE)
    thumb = cv2.resize(small, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)
    crop = native_crop(rgb)
    sizes = (h0, w0, *small.shape[:2], *tiny.shape[:2], *crop.shape[:2], min_model_input)
    return {"analysis": _padded(small, analysis_size), "tiny": _padded(tiny, TINY_SIZE),
            "thumbnail": thumb[None].astype(np.uint8), "native_crop": _padded(crop, NATIVE_CROP_SIZE),
            "sizes": np.asarray([sizes], np.int32)}


def read_twin_metadata(path_or_bytes) -> dict:
    """``gate.json`` packed in a gate.tflite (path or bytes), read with zipfile only."""
    name = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        if not Path(name).is_file():
            raise GateTwinError(name, "gate model file not found (make it with mobile-derm export-gate)")
        data = Path(name).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            meta = json.loads(zf.read(METADATA_FILENAME).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, UnicodeDecodeError):
        raise GateTwinError(name, f"not a gate model: no readable {METADATA_FILENAME} packed in it") from None
    if not isinstance(meta, dict) or meta.get("contract_version") != CONTRACT_VERSION:
        raise GateTwinError(name, f"gate model contract {meta.get('contract_version') if isinstance(meta, dict) else '?'} "
                                  f"is not this code's ({CONTRACT_VERSION}): its inputs are made another way; export the "
                                  f"model again, or rebuild the twin with mobile-derm export-gate from the same gate config")
    return meta


def input_shapes(analysis_size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each input's shape and dtype for a config's analysis_size."""
    return {"analysis": ((1, analysis_size, analysis_size, 3), "uint8"), "tiny": ((1, TINY_SIZE, TINY_SIZE, 3), "uint8"),
            "thumbnail": ((1, THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3), "uint8"),
            "native_crop": ((1, NATIVE_CROP_SIZE, NATIVE_CROP_SIZE, 3), "uint8"), "sizes": ((1, len(SIZE_FIELDS)), "int32")}


class GateTwin:
    """One gate.tflite on LiteRT (one thread), loaded once: ``assess``/``check_photo`` as
    the OpenCV gate's, same Verdict type."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        self.path = Path(path)
        data = self.path.read_bytes() if self.path.is_file() else None
        if data is None:
            raise GateTwinError(self.path, "gate model file not found (make it with mobile-derm export-gate)")
        self.metadata = read_twin_metadata(data)
        self.config = GateConfig.from_dict(self.metadata["config"], self.path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise GateTwinError(self.path, "the gate twin runs on LiteRT: pip install ai-edge-litert") from None
        from mobile_derm_quality.quiet import native_output_silenced

        try:
            with native_output_silenced():
                self._interpreter = Interpreter(model_content=data, num_threads=num_threads)
                self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as exc:
            raise GateTwinError(self.path, f"LiteRT cannot load it ({str(exc).splitlines()[0]})") from None
        details = self._runner.get_input_details()
        expected = input_shapes(self.config.analysis_size)
        got = {k: (tuple(int(n) for n in v["shape"]), np.dtype(v["dtype"]).name) for k, v in details.items()}
        if got != expected:
            raise GateTwinError(self.path, f"inputs {got} are not the gate contract's {expected}")
        if set(self._runner.get_output_details()) != set(OUTPUT_NAMES):
            raise GateTwinError(self.path, f"outputs {sorted(self._runner.get_output_details())} are not {list(OUTPUT_NAMES)}")
        self._expected = expected

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw outputs for prepared inputs; inputs of the wrong name, shape or type are refused."""
        if set(inputs) != set(self._expected):
            raise GateTwinError(self.path, f"inputs {sorted(inputs)} are not {sorted(self._expected)}")
        for name, (shape, dtype) in self._expected.items():
            a = np.asarray(inputs[name])
            if a.shape != shape or a.dtype.name != dtype:
                raise GateTwinError(self.path, f"input {name} is {a.dtype.name}{list(a.shape)}, the model takes {dtype}{list(shape)}")
        return {k: np.asarray(v)[0] for k, v in self._runner(**inputs).items()}

    def assess(self, rgb: np.ndarray, min_model_input: int | None = None, path: str | None = None) -> Verdict:
        """Judge one decoded photo (RGB uint8, HxWx3), as ``gate.assess`` does."""
        a = _as_rgb(rgb)
        mmi = int(min_model_input or self.config.min_model_input)
        out = self.run(twin_inputs(a, self.config.analysis_size, mmi))
        return self.verdict(out, mmi, path)

    def assess_photo(self, photo: DecodedPhoto, min_model_input: int | None = None, path: str | None = None) -> Verdict:
        """As ``gate.assess_photo``: the photo's own size, and a warning for transparent pixels."""
        return with_photo_facts(self.assess(photo.rgb, min_model_input, path), photo)

    def check_photo(self, path: str | Path, min_model_input: int | None = None) -> Verdict:
        return self.assess_photo(read_photo_for(path, self.config), min_model_input, path=str(path))

    def verdict(self, out: dict[str, np.ndarray], min_model_input: int, path: str | None = None) -> Verdict:
        """The Verdict from the twin's outputs: decision, per-check results and reasons all come
        from the graph; only the reasons' order (failing checks first, then warnings) is laid out here."""
        # by the names the file lists (gate.json): a file made before a measurement was added lacks it
        values = dict(zip(self.metadata["outputs"]["measurements"], (float(v) for v in out["measurements"])))
        m = measurements_from(values)
        raws = raw_values(m, self.config, min_model_input)
        # only the graph can give the descriptor's terms: it does not output the descriptor
        for key in sorted(DESCRIPTOR_TERMS):
            if key in values:
                raws["not_skin"][key] = values[key]
            else:
                raws["not_skin"].pop(key, None)
        results = []
        for i, name in enumerate(CHECK_NAMES):
            reason = REASON_CODES[int(out["reason"][i])] if int(out["reason"][i]) >= 0 else None
            results.append(CheckResult(name=name, score=float(out["scores"][i]), passed=bool(out["passed"][i]),
                                       reason=reason, guidance=GUIDANCE.get(reason) if reason else None,
                                       threshold=float(self.config.thresholds.get(name, 0.5)), warn=bool(out["warn"][i]),
                                       applicable=bool(out["applicable"][i]), raw=dict(raws[name])))
        reasons, guidance = reasons_and_guidance(results, self.config.warn_only)
        flagged = {REASON_CODES[i] for i, f in enumerate(out["reason_flags"]) if f}
        if flagged != set(reasons):  # the graph's flags and its per-check reasons are one computation
            raise GateTwinError(self.path, f"reason flags {sorted(flagged)} disagree with the checks' reasons {reasons}")
        return Verdict(decision=DECISIONS[int(np.ravel(out["decision"])[0])], checks=results, reasons=reasons, guidance=guidance,
                       width=m.width, height=m.height, config_version=self.config.version, path=path)


def measurements_from(v: dict[str, float]) -> Measurements:
    """features.Measurements from the twin's measurements output, by name (no descriptor)."""
    ints = ("width", "height", "analysis_long_side")
    fields = {k: (int(round(v[k])) if k in ints else v[k]) for k in MEASUREMENT_NAMES if k not in DERIVED_NAMES}
    fields["grey"] = bool(fields["grey"])
    return Measurements(**fields, descriptor=None)
