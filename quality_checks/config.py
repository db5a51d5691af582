"""GateConfig: every number the quality gate uses, in one versioned JSON-able object.

Each check turns a raw measurement into a score in [0, 1] with a linear ramp between a
``bad`` value (score 0) and a ``good`` value (score 1), then compares the score with its
``threshold``: below it the check fails; within ``warn_margin`` above it the check warns.
Calibration (``calibrate-gate``) moves thresholds only; the ramps stay fixed, so scores mean
the same thing in every config. The export packs ``to_dict()`` into the model file, so a
phone app applies exactly these numbers.

The defaults are built here in code (the only source); ``GateConfig.default().save(path)``
writes them out as JSON.
"""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from mobile_derm_quality.errors import GateConfigError
from mobile_derm_quality.files import atomic_write_text, read_json_object
from mobile_derm_quality.not_skin import NonSkinContrast, SkinCheck, SkinPhotoModel, default_ramp, load_skin_check

SCHEMA_VERSION = 1
CHECK_NAMES = ("resolution", "exposure", "sharpness", "glare", "colour_cast", "noise", "framing", "not_skin")

# Fitted by `python -m mobile_derm_quality.fit_checks` on the fit half's clean photos and the phone-capture
# fit split (docs/gate.md, "Detectors for the capture failures (issue 21)"). The white-distance ramp warns
# from 4.17 and fails only from 6.14 (every clean fit photo below: white balance needs a warning) at the
# colour_cast threshold and warn margin below; its "good" end lies below 0 because the warn band is a
# tenth of the ramp (a white point at the locus's mean scores 0.61).
WHITE_DISTANCE_RAMP = {"good": -7.605, "bad": 12.0245}
# The cool-white-point ramp warns from a shift of 0.1388 towards bluer light (log chromaticity along
# features.COOL_LIGHT_DIRECTION; the worst source's 99th percentile) and fails only from 0.2401 (every clean fit
# photo below).
WHITE_COOL_RAMP = {"good": -0.4691, "bad": 0.5441}
# The glare-spots ramp warns from a share of 0.00167 and fails only from 0.0162 (every clean fit photo below).
GLARE_SPOTS_RAMP = {"good": -0.0854, "bad": 0.0597}
# The shake-blur ramp warns from 0.290 px (at 600 px) and fails from 0.442.
SHAKE_BLUR_RAMP = {"good": -0.6188, "bad": 0.896}
# The detail-offset ramp warns from an offset of 0.212 (of the half-diagonal) and never fails: its fail boundary
# is the largest offset a frame can give (features.MAX_DETAIL_OFFSET, 0.875).
DETAIL_OFFSET_RAMP = {"good": -5.0909, "bad": 1.5379}
# The JPEG-grid ramp warns from a coarse grid's strength of 0.00116 (features._jpeg_grid; the worst source's 99th
# percentile, not the 97th: mildly resampled photos the issue accepts show a faint grid) and fails only from 0.002203
# (every clean fit photo below).
JPEG_GRID_RAMP = {"good": -0.003012, "bad": 0.007418}
# The clean photos' white points: mean (u = log R/G, v = log B/G) and inverse covariance [[a, b], [b, c]].
_DEFAULT_WHITE_LOCUS = {"u": 0.08665, "v": -0.04223, "a": 153.8403, "b": 66.0572, "c": 212.8332}

# Ramps: raw measurement -> score. "good"/"bad" are raw values (see features.Measurements).
_DEFAULT_RAMPS: dict[str, dict[str, dict[str, float]]] = {
    # sharpness: blur radius (Gaussian sigma, px of the photo at 600 px) of the ROI's sharpest edges
    # and the blur along a hand shake minus across it (fit_checks: warns beyond the worst source's 97th
    # percentile of the fit half, fails beyond its 99.5th)
    "sharpness": {"blur": {"good": 1.0, "bad": 3.0}, "shake_blur": SHAKE_BLUR_RAMP},
    # exposure: brightest 5% of the ROI too dark; median too bright; clipped highlights
    "exposure": {
        "luma_p95": {"good": 130.0, "bad": 70.0},
        "luma_median": {"good": 200.0, "bad": 250.0},
        "bright_clip": {"good": 0.02, "bad": 0.30},
    },
    # glare: share of the ROI where every channel is near saturation
    # and the share of the frame in small white lobes brighter than their surroundings (fit_checks: warns
    # beyond the worst source's 97th percentile of the fit half, fails beyond its 99.5th)
    "glare": {"glare_fraction": {"good": 0.005, "bad": 0.06}, "glare_spots": GLARE_SPOTS_RAMP},
    # colour_cast: how far the frame's mean chromaticity lies outside the skin-photo region
    # and how far the white point lies from clean skin photos' (fit_checks: warns beyond the worst
    # source's 97th percentile of the fit half, fails only beyond every clean fit photo), and how far
    # towards bluer light (warns beyond the 99th, fails only beyond every clean fit photo)
    "colour_cast": {"cast_distance": {"good": 0.0, "bad": 0.06}, "white_distance": WHITE_DISTANCE_RAMP,
                    "white_cool": WHITE_COOL_RAMP},
    # noise: Immerkaer noise sigma (grey levels, analysis scale); JPEG 8x8 blockiness; the block grid of a
    # smaller JPEG copy grown back (fit_checks: warns beyond the worst source's 99th percentile of the fit
    # half, fails only beyond every clean fit photo)
    "noise": {"noise_sigma": {"good": 3.0, "bad": 9.0}, "blockiness": {"good": 0.45, "bad": 1.0},
              "jpeg_grid": JPEG_GRID_RAMP},
    # framing: skin share of the frame; distance of the skin centroid from the centre; distance of the
    # centre of the frame's fine detail from the centre (fit_checks: warns beyond the worst source's 97th
    # percentile of the fit half, never fails)
    "framing": {"skin_fraction": {"good": 0.35, "bad": 0.05}, "roi_offset": {"good": 0.15, "bad": 0.5},
                "detail_offset": DETAIL_OFFSET_RAMP},
    # not_skin: skin-coloured share, hue entropy (many colours), vivid non-skin colours;
    # replaced by the one-class skin-photo model when one is shipped (see _default_ramps)
    "not_skin": {
        "skin_fraction": {"good": 0.2, "bad": 0.0},
        "hue_entropy": {"good": 2.0, "bad": 3.2},
        "colourful_fraction": {"good": 0.08, "bad": 0.3},
    },
}

# Chosen on the real skin sets (../shared/data: PAD-UFES-20, SD-198, Derm7pt) so that each
# check alone fails about 0.5-1% of clean photos (not_skin ~2.5%, framing ~1.2%); see
# runs/gate_eval for the numbers. Recalibrate with `mobile-derm calibrate-gate`.
_DEFAULT_THRESHOLDS = {
    "resolution": 0.5,  # score = min side / (2 * model input): passes at min side >= model input
    "exposure": 0.2,
    "sharpness": 0.3,
    "glare": 0.3,
    "colour_cast": 0.3,
    "noise": 0.5,
    "framing": 0.1,
    "not_skin": 0.3,
}

# Chromaticity box of photos of skin under plausible light (r, g, b = channel / sum).
_DEFAULT_CAST_BOX = {"r_minus_b_min": 0.01, "g_min": 0.27, "g_max": 0.35, "b_max": 0.345}


DEFAULT_WARN_MARGIN = 0.1  # every check's, unless a config says otherwise

SKIN_MODEL_FILE = Path(__file__).parent / "data" / "skin_model.json"
NONSKIN_CONTRAST_FILE = Path(__file__).parent / "data" / "nonskin_contrast.json"


def ramp_for(warn_at: float, fail_at: float, threshold: float, warn_margin: float, digits: int = 4) -> dict:
    """A distance ramp (score 1 at ``good``, 0 at ``bad``) whose score crosses threshold +
    warn_margin at ``warn_at`` and threshold at ``fail_at`` (fail_at > warn_at), its ends rounded
    to ``digits`` decimals (more for a measure whose values are small)."""
    width = (fail_at - warn_at) / warn_margin  # the score falls warn_margin over fail_at - warn_at
    bad = fail_at + threshold * width
    return {"good": round(bad - width, digits), "bad": round(bad, digits)}


@functools.lru_cache(maxsize=4)
def _read_shipped(path: Path, what: str) -> dict | None:
    """A model file shipped in data/ (``what``: its name in an error), read once per process; None if it is
    not shipped."""
    if not path.is_file():
        return None
    return read_json_object(path, GateConfigError, what)


def _shipped_skin_model() -> dict | None:
    """The default one-class skin-photo model (not_skin.SkinPhotoModel), or None if not
    shipped; every config gets its own copy."""
    return copy.deepcopy(_read_shipped(SKIN_MODEL_FILE, "skin model"))


def _shipped_contrast() -> dict | None:
    """The default not-skin contrast (not_skin.NonSkinContrast), or None; every config gets its own copy."""
    return copy.deepcopy(_read_shipped(NONSKIN_CONTRAST_FILE, "not-skin contrast"))


@functools.lru_cache(maxsize=1)
def _shipped_typicality_ramp() -> tuple[tuple[str, float], ...] | None:
    model = _read_shipped(SKIN_MODEL_FILE, "skin model")
    if model is None:
        return None
    return tuple(default_ramp(SkinPhotoModel.from_dict(model, SKIN_MODEL_FILE)).items())


@functools.lru_cache(maxsize=1)
def _shipped_contrast_ramp() -> tuple[tuple[str, float], ...] | None:
    """The nonskin_logit ramp of the shipped contrast: fails beyond the clean photos' cross-fitted 99.5th
    percentile (worst source), warns beyond the 97th, at the default not_skin threshold and warn margin."""
    contrast = _read_shipped(NONSKIN_CONTRAST_FILE, "not-skin contrast")
    if contrast is None:
        return None
    c = NonSkinContrast.from_dict(contrast, NONSKIN_CONTRAST_FILE)
    return tuple(ramp_for(c.warn_at, c.fail_at, _DEFAULT_THRESHOLDS["not_skin"], DEFAULT_WARN_MARGIN).items())


def _default_ramps() -> dict:
    ramps = copy.deepcopy(_DEFAULT_RAMPS)
    typicality_ramp = _shipped_typicality_ramp()
    if typicality_ramp is not None:
        # The one-class model replaces the hue-entropy and vivid-colour rules: on the skin
        # sets and the non-skin photos of ../shared/data it rejects 0.76 of non-skin photos
        # where the rules rejected 0.42, at the same clean pass rate (the rules also failed
        # SD-198 atlas photos that show clothes and backgrounds). The skin-colour share stays:
        # it costs no clean photo and names a plain wall or sheet as "not skin".
        ramps["not_skin"] = {
            "typicality": dict(typicality_ramp),
            "skin_fraction": dict(ramps["not_skin"]["skin_fraction"]),
        }
    contrast_ramp = _shipped_contrast_ramp()
    if contrast_ramp is not None:
        ramps["not_skin"]["nonskin_logit"] = dict(contrast_ramp)
    return ramps


@dataclass
class GateConfig:
    version: str = "1.0.0"
    schema_version: int = SCHEMA_VERSION
    thresholds: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_THRESHOLDS))
    warn_margin: dict[str, float] = field(default_factory=lambda: {k: DEFAULT_WARN_MARGIN for k in CHECK_NAMES})
    ramps: dict[str, dict[str, dict[str, float]]] = field(default_factory=_default_ramps)
    cast_box: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_CAST_BOX))
    # where clean skin photos' white points lie (gate.white_distance)
    white_locus: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_WHITE_LOCUS))
    # checks whose failure only warns (never rejects)
    warn_only: list[str] = field(default_factory=list)
    min_model_input: int = 224
    max_pixels: int = 100_000_000
    analysis_size: int = 320
    decode_min_long_side: int = 800
    calibration: dict | None = None  # provenance written by calibrate()
    # one-class model of skin photos for the not_skin check (not_skin.SkinPhotoModel.to_dict())
    skin_model: dict | None = field(default_factory=_shipped_skin_model)
    # the not-skin contrast (not_skin.NonSkinContrast.to_dict()), scored by ramps["not_skin"]["nonskin_logit"]
    nonskin_contrast: dict | None = field(default_factory=_shipped_contrast)
    # the learned not-skin check (not_skin.SkinCheck): a .tflite from `mobile-derm fit-skin-check`,
    # scored by ramps["not_skin"]["skin_check_distance"]; a relative path is relative to the
    # config file (GateConfig.load) or to the model file whose metadata carries the config
    skin_check_model: str | None = None

    def _parsed(self, attr: str, data: dict | None, parse):
        """``parse(data)``, kept on the config under ``attr`` until ``data`` is replaced; None for no data."""
        if data is None:
            return None
        cached = getattr(self, attr, None)
        if cached is None or cached[0] is not data:
            cached = (data, parse(data))
            setattr(self, attr, cached)
        return cached[1]

    def skin_photo_model(self) -> SkinPhotoModel | None:
        """The parsed skin_model (cached), or None."""
        return self._parsed("_parsed_skin_model", self.skin_model, SkinPhotoModel.from_dict)

    def nonskin_contrast_model(self) -> NonSkinContrast | None:
        """The parsed nonskin_contrast (cached), or None."""
        return self._parsed("_parsed_contrast", self.nonskin_contrast, NonSkinContrast.from_dict)

    def skin_check(self) -> SkinCheck | None:
        """The loaded learned skin check (one per file and process), or None."""
        if self.skin_check_model is None:
            return None
        return load_skin_check(str(self.skin_check_model))

    def resolve_paths(self, base_dir: str | Path) -> "GateConfig":
        """Make a relative skin_check_model path relative to ``base_dir`` (in place)."""
        if self.skin_check_model is not None and not Path(self.skin_check_model).is_absolute():
            self.skin_check_model = str(Path(base_dir) / self.skin_check_model)
        return self

    @classmethod
    def default(cls) -> "GateConfig":
        return cls()

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "schema_version": self.schema_version,
            "thresholds": dict(self.thresholds),
            "warn_margin": dict(self.warn_margin),
            "ramps": copy.deepcopy(self.ramps),
            "cast_box": dict(self.cast_box),
            "white_locus": dict(self.white_locus),
            "warn_only": list(self.warn_only),
            "min_model_input": self.min_model_input,
            "max_pixels": self.max_pixels,
            "analysis_size": self.analysis_size,
            "decode_min_long_side": self.decode_min_long_side,
            "calibration": copy.deepcopy(self.calibration),
            "skin_model": copy.deepcopy(self.skin_model),
            "nonskin_contrast": copy.deepcopy(self.nonskin_contrast),
            "skin_check_model": self.skin_check_model,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> "GateConfig":
        if not isinstance(d, dict):
            raise GateConfigError(source, "gate config must be a JSON object")
        if int(d.get("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise GateConfigError(source, f"gate config schema {d.get('schema_version')} is newer than this code ({SCHEMA_VERSION})")
        base = cls()
        try:
            thresholds = dict(base.thresholds)
            thresholds.update({str(k): float(v) for k, v in (d.get("thresholds") or {}).items()})
            warn = dict(base.warn_margin)
            warn.update({str(k): float(v) for k, v in (d.get("warn_margin") or {}).items()})
            ramps = copy.deepcopy(base.ramps)
            for check, table in (d.get("ramps") or {}).items():
                ramps.setdefault(check, {})
                for key, gb in table.items():
                    ramps[check][key] = {"good": float(gb["good"]), "bad": float(gb["bad"])}
            if "skin_check_distance" in ramps.get("not_skin", {}) and "typicality" not in (d.get("ramps") or {}).get("not_skin", {}):
                # the learned check replaces the hand-made one unless the file asks for both
                ramps["not_skin"].pop("typicality", None)
            cast_box = dict(base.cast_box)
            cast_box.update({str(k): float(v) for k, v in (d.get("cast_box") or {}).items()})
            white_locus = dict(base.white_locus)
            white_locus.update({str(k): float(v) for k, v in (d.get("white_locus") or {}).items()})
            cfg = cls(
                version=str(d.get("version", base.version)),
                schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
                thresholds=thresholds,
                warn_margin=warn,
                ramps=ramps,
                cast_box=cast_box,
                white_locus=white_locus,
                warn_only=[str(x) for x in d.get("warn_only", [])],
                min_model_input=int(d.get("min_model_input", base.min_model_input)),
                max_pixels=int(d.get("max_pixels", base.max_pixels)),
                analysis_size=int(d.get("analysis_size", base.analysis_size)),
                decode_min_long_side=int(d.get("decode_min_long_side", base.decode_min_long_side)),
                calibration=d.get("calibration"),
                skin_model=d.get("skin_model", base.skin_model),
                nonskin_contrast=d.get("nonskin_contrast", base.nonskin_contrast),
                skin_check_model=None if d.get("skin_check_model") is None else str(d["skin_check_model"]),
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise GateConfigError(source, f"bad gate config value ({exc})") from None
        cfg.validate(source)
        return cfg

    def validate(self, source: str | Path | None = None) -> None:
        unknown = sorted(set(self.thresholds) - set(CHECK_NAMES))
        if unknown:
            raise GateConfigError(source, f"unknown checks in thresholds: {', '.join(unknown)}")
        for k, v in self.thresholds.items():
            if not 0.0 <= v <= 1.0:
                raise GateConfigError(source, f"threshold for {k} must be in [0, 1], got {v}")
        for check, table in self.ramps.items():
            for key, gb in table.items():
                if gb["good"] == gb["bad"]:
                    raise GateConfigError(source, f"ramp {check}.{key} has good == bad")
        missing = sorted(set(_DEFAULT_WHITE_LOCUS) - set(self.white_locus))
        if missing:
            raise GateConfigError(source, f"white_locus lacks {', '.join(missing)}")
        wl = self.white_locus
        if not (wl["a"] > 0 and wl["a"] * wl["c"] - wl["b"] ** 2 > 0):
            raise GateConfigError(source, "white_locus's inverse covariance [[a, b], [b, c]] must be positive definite")
        if self.skin_model is not None:
            SkinPhotoModel.from_dict(self.skin_model, source)
        if self.nonskin_contrast is not None:
            NonSkinContrast.from_dict(self.nonskin_contrast, source)
        if ("skin_check_distance" in self.ramps.get("not_skin", {})) != (self.skin_check_model is not None):
            raise GateConfigError(source, "skin_check_model and the not_skin ramp skin_check_distance come together (both or neither)")
        if self.min_model_input < 1 or self.max_pixels < 1 or self.analysis_size < 32:
            raise GateConfigError(source, "min_model_input, max_pixels must be >= 1 and analysis_size >= 32")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "GateConfig":
        p = Path(path)
        return cls.from_dict(read_json_object(p, GateConfigError, "gate config"), p).resolve_paths(p.parent)
