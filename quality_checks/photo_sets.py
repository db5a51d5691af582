"""The photo sets the gate is fitted and evaluated on (``../shared/data``, research-licensed).

Each set is a folder with a ``labels.csv`` (column ``image``: the photo's path in the
folder). Clean photos: the skin sets whose shorter side is >= ``CLEAN_MIN_SIDE``
(PAD-UFES-20 phone photos, SD-198, Derm7pt). HAM10000 copies (200x150) are below the
model input and test the resolution check instead; ``ood`` holds everyday non-skin photos
(kept for the final figure), ``nonskin_free`` a second, freely licensed non-skin set (its
SOURCE.md), the one to build and tune a not-skin check on, and ``nonskin_report`` a third one, never
fitted on, reported beside ``ood``.

Each skin set is cut into two halves by group (``fit_half``): a hash of the photo's patient,
case or lesion (``groups.set_groups``; SD-198: blocks of nearby ids), so that no patient is on
both sides. The shipped hand-made not-skin model (``not_skin.SkinPhotoModel``,
data/skin_model.json), and any threshold, is fitted on the fit half; gate-eval reports on the
other, the report half. Refit it with ``python -m mobile_derm_quality.photo_sets [--data-root DIR]``; the not-skin
contrast (``not_skin.NonSkinContrast``, data/nonskin_contrast.json: the fit halves against the second non-skin set)
with ``--contrast``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from mobile_derm_quality import not_skin
from mobile_derm_quality.config import NONSKIN_CONTRAST_FILE, SKIN_MODEL_FILE, GateConfig
from mobile_derm_quality.decode import read_image
from mobile_derm_quality.errors import QualityCheckError
from mobile_derm_quality.features import shrink
from mobile_derm_quality.files import atomic_write_text
from mobile_derm_quality.groups import set_groups

CLEAN_SETS = ("pad_ufes20_subset", "sd198_subset", "derm7pt_dermoscopic")
LOWRES_SET = "ham10000_200px"
OOD_SET = "ood"
NONSKIN_SET = "nonskin_free"  # freely licensed non-skin photos (not skin close-ups), a folder under the data root
# A third non-skin set, freely licensed like the second but never fitted on: with ``ood``, what the not-skin check
# does on photos it has not seen (docs/data/nonskin_report/SOURCE.md)
NONSKIN_REPORT_SET = "nonskin_report"
# the freely licensed non-skin sets gate-eval reports beside ``ood``, and what each is for
NONSKIN_SETS = {NONSKIN_SET: "the second non-skin set, the not-skin check is built on it",
                NONSKIN_REPORT_SET: "the third non-skin set, never fitted on"}
CLEAN_MIN_SIDE = 300
# How a term fitted on the clean fit-half photos is cut (fit_checks' terms, the not-skin contrast): it warns beyond
# this quantile of its values on the source where they are largest, so no source newly warns on more than 3% ...
WARN_QUANTILE = 0.97
FAIL_QUANTILE = 0.995  # ... and fails beyond this one: at most 0.5% newly failed
# Sets the default skin-photo model is fitted on, half of each.
SKIN_MODEL_SETS = CLEAN_SETS + (LOWRES_SET,)
MAX_PHOTOS_PER_SET = 1000  # so HAM10000's thousands of dermoscopy images do not outvote the phone photos


def fit_half(folder: str, rows: list[dict]) -> list[bool]:
    """For each labels.csv row of the set in ``folder``: True for the fit half (the shipped skin-photo
    model and any threshold are fitted on it), False for the report half (figures are reported on it).
    By a hash of the row's group (``groups.set_groups``: patient, case, lesion, SD-198 id block; the
    file name where a set has none), so one patient's photos are all on one side and the halves do
    not depend on row order. Pass all of a set's rows: an SD-198 block depends on its neighbours."""
    # SHA-256, not CRC-32: a CRC's parity is a linear function of the bits, so names that differ in one
    # digit (images/0.jpg ... images/5.jpg, PAT_1006 ...) can all land on one side.
    return [hashlib.sha256(group.encode()).digest()[0] % 2 == 0 for group in set_groups(folder, rows)]


def default_data_root() -> Path:
    env = os.environ.get("MOBILE_DERM_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def read_rows(folder: Path) -> list[dict]:
    f = folder / "labels.csv"
    if not f.is_file():
        raise QualityCheckError(f, "labels.csv not found (is the data root right?)")
    with f.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fitting_photos(root, analysis_size: int | None = None, with_groups: bool = False):
    """The analysis copies (longer side <= ``analysis_size``, default the GateConfig's) of the photos the shipped skin
    models are fitted on: the fit half of each skin set under ``root`` (``fit_half``, by group),
    at most MAX_PHOTOS_PER_SET per set, clean-sized except the HAM10000 copies.
    Returns them and a line saying where they came from; ``with_groups``: also each photo's group
    (``set`` + ":" + its patient, case or lesion) and its clean set (None for the HAM10000 copies)."""
    root = Path(root)
    if analysis_size is None:
        analysis_size = GateConfig.default().analysis_size
    photos, groups, clean, used = [], [], [], {}
    for ds in SKIN_MODEL_SETS:
        rows = read_rows(root / ds)
        picked = [(r, g) for r, g, fit in zip(rows, set_groups(ds, rows), fit_half(ds, rows)) if fit][:MAX_PHOTOS_PER_SET]
        n = 0
        for r, g in picked:
            rgb = read_image(root / ds / r["image"])
            if ds != LOWRES_SET and min(rgb.shape[:2]) < CLEAN_MIN_SIDE:
                continue
            photos.append(shrink(rgb, analysis_size))
            groups.append(f"{ds}:{g}")
            clean.append(ds if ds in CLEAN_SETS else None)
            n += 1
        used[ds] = n
    source = fit_half_line(used)
    return (photos, groups, clean, source) if with_groups else (photos, source)


def fit_half_line(used: dict[str, int]) -> str:
    """Where fitting photos came from, for a model's ``source``: "fit half of <set> (<n>), ..."."""
    return "fit half of " + ", ".join(f"{k} ({v})" for k, v in used.items())


def nonskin_photos(root, analysis_size: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The analysis copies of the second non-skin set (NONSKIN_SET) under ``root`` and each one's source
    repository (its group: photos from one repository are alike)."""
    folder = Path(root) / NONSKIN_SET
    if analysis_size is None:
        analysis_size = GateConfig.default().analysis_size
    rows = read_rows(folder)
    return ([shrink(read_image(folder / r["image"]), analysis_size) for r in rows],
            [f"{NONSKIN_SET}:{r.get('source_repository') or r['image']}" for r in rows])


def worst_source_quantile(values: np.ndarray, sources: np.ndarray, q: float) -> float:
    """Quantile ``q`` of ``values`` within each source, on the source where it is largest (the cut rule above)."""
    return float(max(np.quantile(values[sources == s], q) for s in np.unique(sources)))


def contrast_from_descriptors(skin: np.ndarray, nonskin: np.ndarray, skin_groups: list[str], nonskin_groups: list[str],
                              skin_sources: list[str], source: str = "") -> not_skin.NonSkinContrast:
    """The not-skin contrast (not_skin.fit_contrast) on descriptors of clean skin photos (each with its set,
    ``skin_sources``) and of photos that are not skin, cut by the rule above on the skin photos' cross-fitted
    scores: it warns beyond WARN_QUANTILE and fails beyond FAIL_QUANTILE of the worst source."""
    weights, bias, scores = not_skin.fit_contrast(skin, nonskin, skin_groups, nonskin_groups)
    n_skin, sources = len(skin), np.asarray(skin_sources)
    skin_scores = scores[:n_skin]
    warn_at, fail_at = (worst_source_quantile(skin_scores, sources, q) for q in (WARN_QUANTILE, FAIL_QUANTILE))
    failed = scores > fail_at
    return not_skin.NonSkinContrast(
        weights, bias, warn_at, fail_at, n_skin=n_skin, n_nonskin=len(nonskin), source=source,
        cross_fitted={"l2": not_skin.CONTRAST_L2, "folds": not_skin.CONTRAST_FOLDS,
                      "nonskin_failed": round(float(failed[n_skin:].mean()), 4),
                      "clean_failed": {str(s): round(float(failed[:n_skin][sources == s].mean()), 4) for s in np.unique(sources)}})


def fit_contrast_model(root) -> not_skin.NonSkinContrast:
    """The not-skin contrast: the clean photos of the fitting photos (not the HAM10000 thumbnails: with them,
    cross-fitted, it failed 0.63 of the non-skin set instead of 0.76; docs/gate.md) against the second non-skin set."""
    photos, groups, clean, _ = fitting_photos(root, with_groups=True)
    keep = [i for i, ds in enumerate(clean) if ds is not None]
    others, other_groups = nonskin_photos(root)
    used = {ds: sum(clean[i] == ds for i in keep) for ds in CLEAN_SETS}
    return contrast_from_descriptors(np.stack([not_skin.describe(photos[i]) for i in keep]),
                                     np.stack([not_skin.describe(p) for p in others]), [groups[i] for i in keep],
                                     other_groups, [clean[i] for i in keep],
                                     source=f"{fit_half_line(used)} against {NONSKIN_SET} ({len(others)})")


def main(argv=None) -> int:
    """Refit the shipped hand-made not-skin model from the fit half of each skin set under the data root
    (--contrast: the not-skin contrast, from those and the second non-skin set)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--contrast", action="store_true", help=f"fit the not-skin contrast into {NONSKIN_CONTRAST_FILE.name}")
    parser.add_argument("--out", default=None, help=f"default: the shipped {SKIN_MODEL_FILE.name} (or {NONSKIN_CONTRAST_FILE.name})")
    args = parser.parse_args(argv)
    root = Path(args.data_root) if args.data_root else default_data_root()
    if args.contrast:
        out = args.out or str(NONSKIN_CONTRAST_FILE)
        contrast = fit_contrast_model(root)
        atomic_write_text(out, json.dumps(contrast.to_dict()) + "\n")
        print(f"{out}: warns from {contrast.warn_at:.4f}, fails from {contrast.fail_at:.4f}; cross-fitted {contrast.cross_fitted}")
        return 0
    args.out = args.out or str(SKIN_MODEL_FILE)
    photos, source = fitting_photos(root)
    model = not_skin.fit(np.stack([not_skin.describe(small) for small in photos]), source=source)
    atomic_write_text(args.out, json.dumps(model.to_dict()) + "\n")
    print(f"{args.out}: {len(photos)} photos, distance quantiles {model.distance_quantiles}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
