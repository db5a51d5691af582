"""The gate: measurements -> per-check scores -> one verdict with reasons and guidance."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_derm_quality.config import CHECK_NAMES, GateConfig
from mobile_derm_quality.decode import DecodedPhoto, read_photo
from mobile_derm_quality.errors import ImageReadError
from mobile_derm_quality.features import COOL_LIGHT_DIRECTION, Measurements, measure

# reason code -> what the person should do
GUIDANCE = {
    "too_small": "Use the phone's normal camera at full resolution (no screenshot or thumbnail)",
    "too_dark": "Move to better light",
    "too_bright": "Avoid direct sunlight or bright lamps; tap the skin on the screen to set exposure",
    "clipped_highlights": "Avoid direct sunlight or bright lamps; tap the skin on the screen to set exposure",
    "blurred": "Hold the phone still and tap the spot on the screen to focus",
    "motion_blur": "Hold the phone still",
    "glare": "Turn off the flash and avoid reflections on the skin",
    "colour_cast": "Move to daylight or white light (no coloured lamps or filters)",
    "noisy": "Move to better light",
    "compressed": "Send the original photo, not a compressed copy",
    "too_far": "Move closer",
    "off_centre": "Centre the spot in the frame",
    "not_skin": "Point the camera at the skin spot so skin fills the frame",
    # not a check of its own: the file had transparent pixels, judged on neutral grey (decode)
    "transparent": "Send the photo as the camera took it, not a cut-out with transparent parts",
}

# not_skin ramp terms computed from the hand-made descriptor (not_skin.describe)
DESCRIPTOR_TERMS = frozenset({"typicality", "nonskin_logit"})
# Checks whose verdict depends on brightness being sane; when exposure fails, their failure is
# reported as inconclusive (applicable=False) instead of adding a misleading reason.
_DEPENDENT = ("framing", "not_skin")
MOTION_BLUR_RATIO = 1.6  # blur along one axis over blur along the other beyond this: motion blur


@dataclass
class CheckResult:
    name: str
    score: float  # 0 (bad) .. 1 (good)
    passed: bool
    reason: str | None  # reason code when failed or warned, else None
    guidance: str | None
    threshold: float
    warn: bool = False  # passed, but within the warn margin
    applicable: bool = True  # False: not judged (another failure makes it unreliable)
    raw: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "score": round(float(self.score), 4),
            "passed": bool(self.passed),
            "warn": bool(self.warn),
            "applicable": bool(self.applicable),
            "reason": self.reason,
            "guidance": self.guidance,
            "threshold": round(float(self.threshold), 4),
            "raw": {k: round(float(v), 5) for k, v in self.raw.items()},
        }


@dataclass
class Verdict:
    decision: str  # "accept" | "warn" | "reject"
    checks: list[CheckResult]
    reasons: list[str]
    guidance: list[str]
    width: int
    height: int
    config_version: str
    path: str | None = None

    @property
    def accepted(self) -> bool:
        return self.decision != "reject"

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def scores(self) -> dict[str, float]:
        return {c.name: float(c.score) for c in self.checks}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "guidance": list(self.guidance),
            "width": self.width,
            "height": self.height,
            "config_version": self.config_version,
            "checks": [c.to_dict() for c in self.checks],
        }


def ramp(value: float, good: float, bad: float) -> float:
    """Linear score: 1 at ``good``, 0 at ``bad``, clipped to [0, 1] (either direction)."""
    if not np.isfinite(value):
        return 0.0
    t = (value - bad) / (good - bad)
    return float(min(1.0, max(0.0, t)))


def cast_distance(m: Measurements, box: dict) -> float:
    """How far the frame's mean chromaticity lies outside the box of skin photos (0 inside)."""
    return float(
        max(
            0.0,
            box["r_minus_b_min"] - (m.cast_r - m.cast_b),
            box["g_min"] - m.cast_g,
            m.cast_g - box["g_max"],
            m.cast_b - box["b_max"],
        )
    )


def white_distance(m: Measurements, locus: dict) -> float:
    """How far the photo's white point (features._white_point) lies from those of clean skin
    photos: the Mahalanobis distance from the locus's mean (u, v) with its inverse covariance
    [[a, b], [b, c]] (fit_checks.fit_white_locus). A wrong white balance moves every pixel's log
    chromaticity by the same amount, the white point with them."""
    du, dv = m.white_u - locus["u"], m.white_v - locus["v"]
    return float(np.sqrt(max(0.0, locus["a"] * du * du + 2.0 * locus["b"] * du * dv + locus["c"] * dv * dv)))


def white_cool_shift(m: Measurements, locus: dict) -> float:
    """How far the photo's white point lies towards bluer light (shade, an overcast sky) than clean skin photos':
    its offset from the locus's mean along features.COOL_LIGHT_DIRECTION. white_distance is symmetric, yet clean
    photos spread much further towards warm light (indoor lamps) than towards cool, so a shade cast as far off as
    a tolerated warm one stays inside it; one-sided, this term can stop at the clean photos' cool edge."""
    cu, cv = COOL_LIGHT_DIRECTION
    return float((m.white_u - locus["u"]) * cu + (m.white_v - locus["v"]) * cv)


def _typicality(m: Measurements, config: GateConfig) -> float:
    """Distance from the skin-photo model (about 1 for a typical skin photo; 0 without a model)."""
    model = config.skin_photo_model()
    if model is None or m.descriptor is None:
        return 0.0
    return model.distance(m.descriptor)


def _nonskin_logit(m: Measurements, config: GateConfig) -> float:
    """The not-skin contrast's log-odds that the photo is not skin (0 without a contrast model)."""
    model = config.nonskin_contrast_model()
    if model is None or m.descriptor is None:
        return 0.0
    return model.logit(m.descriptor)


def raw_values(m: Measurements, config: GateConfig, min_model_input: int) -> dict[str, dict[str, float]]:
    return {
        "resolution": {"min_side": float(min(m.width, m.height)), "min_model_input": float(min_model_input)},
        "exposure": {"luma_p95": m.luma_p95, "luma_median": m.luma_median, "bright_clip": m.bright_clip},
        "sharpness": {"blur": m.blur, "blur_h": m.blur_h, "blur_v": m.blur_v, "shake_blur": m.shake_blur},
        "glare": {"glare_fraction": m.glare_fraction, "glare_spots": m.glare_spots},
        "colour_cast": {"cast_distance": cast_distance(m, config.cast_box), "grey": float(m.grey),
                        "white_distance": white_distance(m, config.white_locus),
                        "white_cool": white_cool_shift(m, config.white_locus)},
        "noise": {"noise_sigma": m.noise_sigma, "blockiness": m.blockiness, "jpeg_grid": m.jpeg_grid},
        "framing": {"skin_fraction": m.skin_fraction, "roi_offset": m.roi_offset, "detail_offset": m.detail_offset},
        "not_skin": {
            "typicality": _typicality(m, config),
            "nonskin_logit": _nonskin_logit(m, config),
            "skin_check_distance": m.skin_check_distance,
            "skin_fraction": m.skin_fraction,
            "hue_entropy": m.hue_entropy,
            "colourful_fraction": m.colourful_fraction,
        },
    }


# which ramp term, when it is the lowest, gives which reason code
_REASONS = {
    ("exposure", "luma_p95"): "too_dark",
    ("exposure", "luma_median"): "too_bright",
    ("exposure", "bright_clip"): "clipped_highlights",
    ("sharpness", "blur"): "blurred",
    ("sharpness", "shake_blur"): "motion_blur",
    ("glare", "glare_fraction"): "glare",
    ("glare", "glare_spots"): "glare",
    ("colour_cast", "cast_distance"): "colour_cast",
    ("colour_cast", "white_distance"): "colour_cast",
    ("colour_cast", "white_cool"): "colour_cast",
    ("noise", "noise_sigma"): "noisy",
    ("noise", "blockiness"): "compressed",
    ("noise", "jpeg_grid"): "compressed",
    ("framing", "skin_fraction"): "too_far",
    ("framing", "roi_offset"): "off_centre",
    ("framing", "detail_offset"): "off_centre",
    ("not_skin", "typicality"): "not_skin",
    ("not_skin", "nonskin_logit"): "not_skin",
    ("not_skin", "skin_check_distance"): "not_skin",
    ("not_skin", "skin_fraction"): "not_skin",
    ("not_skin", "hue_entropy"): "not_skin",
    ("not_skin", "colourful_fraction"): "not_skin",
}


def _score_check(name: str, raw: dict, config: GateConfig) -> tuple[float, str]:
    if name == "resolution":
        return min(1.0, raw["min_side"] / (2.0 * raw["min_model_input"])), "too_small"
    terms = config.ramps[name]
    best_key, best = None, 2.0
    for key, gb in terms.items():
        s = ramp(raw[key], gb["good"], gb["bad"])
        if s < best:
            best_key, best = key, s
    reason = _REASONS.get((name, best_key), name)
    if name == "sharpness" and raw["blur_h"] > 0 and raw["blur_v"] > 0:
        ratio = max(raw["blur_h"], raw["blur_v"]) / min(raw["blur_h"], raw["blur_v"])
        if ratio > MOTION_BLUR_RATIO:
            reason = "motion_blur"
    return best, reason


def scores_from_measurements(m: Measurements, config: GateConfig, min_model_input: int | None = None) -> dict[str, float]:
    mmi = int(min_model_input or config.min_model_input)
    raws = raw_values(m, config, mmi)
    return {name: _score_check(name, raws[name], config)[0] for name in CHECK_NAMES}


def verdict_from_measurements(
    m: Measurements, config: GateConfig, min_model_input: int | None = None, path: str | None = None
) -> Verdict:
    mmi = int(min_model_input or config.min_model_input)
    raws = raw_values(m, config, mmi)
    results: list[CheckResult] = []
    for name in CHECK_NAMES:
        score, reason = _score_check(name, raws[name], config)
        if name == "colour_cast" and m.grey:
            score, reason = 0.0, "colour_cast"  # a black-and-white photo has no usable colour
        thr = float(config.thresholds.get(name, 0.5))
        passed = score >= thr
        warn = passed and score < thr + float(config.warn_margin.get(name, 0.0))
        results.append(
            CheckResult(
                name=name,
                score=float(score),
                passed=bool(passed),
                reason=None if (passed and not warn) else reason,
                guidance=None if (passed and not warn) else GUIDANCE.get(reason),
                threshold=thr,
                warn=bool(warn),
                raw={k: v for k, v in raws[name].items()},
            )
        )
    by = {c.name: c for c in results}
    if not by["exposure"].passed:
        for n in _DEPENDENT:
            if not by[n].passed:
                by[n].applicable = False
    failing, warned = failing_and_warned(results, config.warn_only)
    rejecting = [c for c in failing if c.name not in config.warn_only]
    decision = "reject" if rejecting else ("warn" if warned or failing else "accept")
    reasons, guidance = reasons_and_guidance(results, config.warn_only)
    return Verdict(
        decision=decision,
        checks=results,
        reasons=reasons,
        guidance=guidance,
        width=m.width,
        height=m.height,
        config_version=config.version,
        path=path,
    )


def failing_and_warned(checks: list[CheckResult], warn_only) -> tuple[list[CheckResult], list[CheckResult]]:
    """The judged checks that failed, and those that warn (within their warn margin, or
    failed but ``warn_only``)."""
    failing = [c for c in checks if c.applicable and not c.passed]
    warned = [c for c in checks if c.applicable and (c.warn or (not c.passed and c.name in warn_only))]
    return failing, warned


def reasons_and_guidance(checks: list[CheckResult], warn_only) -> tuple[list[str], list[str]]:
    """The verdict's reason codes (failing checks first, then warnings) and their guidance, each once."""
    failing, warned = failing_and_warned(checks, warn_only)
    reasons: list[str] = []
    guidance: list[str] = []
    for c in failing + [c for c in warned if c not in failing]:
        if c.reason and c.reason not in reasons:
            reasons.append(c.reason)
            g = GUIDANCE.get(c.reason)
            if g and g not in guidance:
                guidance.append(g)
    return reasons, guidance


def with_photo_facts(verdict: Verdict, photo: DecodedPhoto) -> Verdict:
    """``verdict`` on the decoded ``photo``'s pixels, completed with what only the file tells: the
    photo's own size (the decode may be reduced) and a ``transparent`` warning when it had
    transparent pixels (judged on neutral grey)."""
    verdict.width, verdict.height = photo.width, photo.height
    if photo.had_transparency:
        verdict.reasons.append("transparent")
        verdict.guidance.append(GUIDANCE["transparent"])
        if verdict.decision == "accept":
            verdict.decision = "warn"
    return verdict


def _as_rgb(rgb) -> np.ndarray:
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise ValueError(f"assess() needs an RGB uint8 image, got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"assess() needs an HxWx3 RGB image, got shape {a.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def read_photo_for(path: str | Path, config: GateConfig) -> DecodedPhoto:
    """Read and decode a photo file as ``config`` says (EXIF-upright, reduced decode, pixel limit);
    raises ImageReadError for anything that cannot be decoded."""
    return read_photo(path, max_pixels=config.max_pixels, min_long_side=config.decode_min_long_side)


def measure_for(rgb: np.ndarray, config: GateConfig) -> Measurements:
    """The measurements ``config`` needs: with its learned skin check if it has one, and
    the hand-made descriptor only if a ramp still uses it."""
    return measure(rgb, config.analysis_size, skin_check=config.skin_check(),
                   descriptor=bool(DESCRIPTOR_TERMS & set(config.ramps.get("not_skin", {}))))


def assess(rgb: np.ndarray, config: GateConfig | None = None, min_model_input: int | None = None, path: str | None = None) -> Verdict:
    """Judge one decoded photo (RGB uint8, HxWx3) and return the gate's verdict."""
    config = config or GateConfig.default()
    a = _as_rgb(rgb)
    m = measure_for(a, config)
    return verdict_from_measurements(m, config, min_model_input, path=path)


def assess_photo(photo: DecodedPhoto, config: GateConfig | None = None, min_model_input: int | None = None,
                 path: str | None = None) -> Verdict:
    """Judge a decoded photo file: ``assess`` on its pixels, with the photo's own size reported
    (the decode may be reduced) and a ``transparent`` warning when it had transparent pixels."""
    return with_photo_facts(assess(photo.rgb, config, min_model_input, path=path), photo)


def check_photo(
    path: str | Path, config: GateConfig | None = None, min_model_input: int | None = None
) -> Verdict:
    """Read a photo file (EXIF-upright, reduced decode, pixel limit) and judge it.

    Raises ImageReadError for anything that cannot be decoded.
    """
    config = config or GateConfig.default()
    return assess_photo(read_photo_for(path, config), config, min_model_input, path=str(path))


__all__ = ["CheckResult", "Verdict", "assess", "assess_photo", "check_photo", "GUIDANCE", "ImageReadError"]
