"""Calibrate the gate's thresholds from photos a user considers good.

For every check except ``resolution`` (a physical limit, not a taste), the threshold becomes
the ``alpha`` quantile of that check's scores on the good photos, with one ``alpha`` shared by
all checks and found by bisection so that the share of good photos passing *every* check is
``target_pass_rate``. Thresholds are kept in [``MIN_THRESHOLD``, ``MAX_THRESHOLD``] so a folder
of poor photos cannot switch a check off and a folder of perfect ones cannot make it absurdly
strict. The ramps (raw value -> score) are untouched.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from mobile_derm_quality import not_skin
from mobile_derm_quality.config import CHECK_NAMES, GateConfig
from mobile_derm_quality.errors import GateConfigError, ImageReadError
from mobile_derm_quality.features import measure
from mobile_derm_quality.gate import read_photo_for, scores_from_measurements

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff"}
CALIBRATED = tuple(n for n in CHECK_NAMES if n != "resolution")
MIN_THRESHOLD = 0.05
MAX_THRESHOLD = 0.9


def list_images(folder_or_paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(folder_or_paths, (str, Path)):
        p = Path(folder_or_paths)
        if p.is_dir():
            return sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        if p.is_file():
            return [p]
        raise GateConfigError(p, "calibration folder not found")
    return [Path(x) for x in folder_or_paths]


def thresholds_for(scores: Sequence[dict[str, float]], target_pass_rate: float, base: GateConfig) -> tuple[dict, float, float]:
    """(thresholds, alpha, achieved pass rate) for per-image score dicts."""
    if not scores:
        raise GateConfigError(None, "no readable photos to calibrate from")
    names = [n for n in CALIBRATED]
    table = np.array([[s[n] for n in names] for s in scores], dtype=np.float64)
    fixed = {n: base.thresholds[n] for n in CHECK_NAMES if n not in names}
    fixed_ok = np.ones(len(scores), bool)
    for n, t in fixed.items():
        fixed_ok &= np.array([s[n] >= t for s in scores])

    def thr_at(alpha: float) -> np.ndarray:
        q = np.quantile(table, alpha, axis=0, method="lower")
        return np.clip(q, MIN_THRESHOLD, MAX_THRESHOLD)

    def pass_rate(thr: np.ndarray) -> float:
        return float(((table >= thr[None, :]).all(axis=1) & fixed_ok).mean())

    lo, hi = 0.0, 1.0 - target_pass_rate  # alpha in [0, 1 - target]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if pass_rate(thr_at(mid)) >= target_pass_rate:
            lo = mid
        else:
            hi = mid
    thr = thr_at(lo)
    out = dict(fixed)
    out.update({n: float(round(t, 4)) for n, t in zip(names, thr)})
    return out, lo, pass_rate(thr)


def calibrate(
    folder_or_paths: str | Path | Iterable[str | Path],
    target_pass_rate: float = 0.95,
    base: GateConfig | None = None,
    min_model_input: int | None = None,
    progress: bool = False,
    fit_skin_model: bool = False,
) -> GateConfig:
    """A new GateConfig whose thresholds pass ``target_pass_rate`` of the given good photos.

    With ``fit_skin_model`` the not-skin check's hand-made one-class model (not_skin.py) is
    refitted on these photos first (at least not_skin.MIN_PHOTOS_TO_FIT of them): do
    that when your photos differ from the atlas, dermoscopy and phone photos the
    default was fitted on."""
    if not 0.0 < target_pass_rate < 1.0:
        raise GateConfigError(None, f"target pass rate must be between 0 and 1, got {target_pass_rate}")
    base = base or GateConfig.default()
    paths = list_images(folder_or_paths)
    it = paths
    if progress:
        it = tqdm(paths, desc="calibrate", unit="img")
    measurements, unreadable = [], []
    for p in it:
        try:
            rgb = read_photo_for(p, base).rgb
        except ImageReadError as exc:
            unreadable.append(str(exc))
            continue
        # the descriptor always (--fit-skin-model refits on it), the learned skin check if the base has one
        measurements.append(measure(rgb, base.analysis_size, skin_check=base.skin_check()))
    cfg = GateConfig.from_dict(base.to_dict())
    scores = None
    if fit_skin_model:
        descriptors = np.stack([m.descriptor for m in measurements]) if measurements else np.zeros((0, not_skin.DESCRIPTOR_SIZE))
        model = not_skin.fit(descriptors, source=f"calibrate-gate on {len(measurements)} photos")
        cfg.skin_model = model.to_dict()
        cfg.ramps["not_skin"]["typicality"] = not_skin.default_ramp(model)
        # Thresholds from how the model scores photos it was NOT fitted on (2-fold): scored
        # in-sample, every calibration photo looks perfectly typical and the not_skin
        # threshold would come out too strict for the next real photo.
        fold = not_skin.fold_of(len(measurements))
        fold_cfgs = [GateConfig.from_dict({**cfg.to_dict(), "skin_model": half.to_dict()})
                     for half in not_skin.half_models(descriptors)]
        scores = [scores_from_measurements(m, fold_cfgs[f], min_model_input) for m, f in zip(measurements, fold)]
    if scores is None:
        scores = [scores_from_measurements(m, cfg, min_model_input) for m in measurements]
    thresholds, alpha, achieved = thresholds_for(scores, target_pass_rate, cfg)
    cfg.thresholds = thresholds
    major, minor, *_ = (base.version.split(".") + ["0", "0"])[:3]
    cfg.version = f"{major}.{int(minor) + 1 if minor.isdigit() else 1}.0-cal"
    cfg.calibration = {
        "n_images": len(scores),
        "n_unreadable": len(unreadable),
        "target_pass_rate": target_pass_rate,
        "achieved_pass_rate": round(achieved, 4),
        "alpha": round(alpha, 5),
        "base_version": base.version,
        "skin_model_refitted": bool(fit_skin_model),
        "date": _dt.date.today().isoformat(),
    }
    return cfg
