"""The photo sets the gate is fitted and evaluated on (``../shared/data``, research-licensed).

Each set is a folder with a ``labels.csv`` (column ``image``: the photo's path in the
folder). Clean photos: the skin sets whose shorter side is >= ``CLEAN_MIN_SIDE``
(PAD-UFES-20 phone photos, SD-198, Derm7pt). HAM10000 copies (200x150) are below the
model input and test the resolution check instead; ``ood`` holds everyday non-skin photos.

The shipped hand-made not-skin model (``not_skin.SkinPhotoModel``, data/skin_model.json)
is fitted on one half of each skin set (``fit_half``, by a hash of the file name), so
gate-eval can report the pass rate on the other half separately. Refit it with
``python -m mobile_derm_quality.photo_sets [--data-root DIR]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import zlib
from pathlib import Path

import numpy as np

from mobile_derm_quality import not_skin
from mobile_derm_quality.config import SKIN_MODEL_FILE, GateConfig
from mobile_derm_quality.decode import read_image
from mobile_derm_quality.errors import QualityCheckError
from mobile_derm_quality.features import shrink
from mobile_derm_quality.files import atomic_write_text

CLEAN_SETS = ("pad_ufes20_subset", "sd198_subset", "derm7pt_dermoscopic")
LOWRES_SET = "ham10000_200px"
OOD_SET = "ood"
CLEAN_MIN_SIDE = 300
# Sets the default skin-photo model is fitted on, half of each.
SKIN_MODEL_SETS = CLEAN_SETS + (LOWRES_SET,)
MAX_PHOTOS_PER_SET = 1000  # so HAM10000's thousands of dermoscopy images do not outvote the phone photos


def fit_half(image_name: str) -> bool:
    """True for the half of the photos the shipped skin-photo model was fitted on
    (by a hash of the file name, so the halves do not depend on row order)."""
    return zlib.crc32(image_name.encode()) % 2 == 0


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


def fitting_photos(root, analysis_size: int | None = None) -> tuple[list[np.ndarray], str]:
    """The analysis copies (longer side <= ``analysis_size``, default the GateConfig's) of the photos the shipped skin
    models are fitted on: the fit half of each skin set under ``root`` (by a hash of the
    file name), at most MAX_PHOTOS_PER_SET per set, clean-sized except the HAM10000 copies.
    Returns them and a line saying where they came from."""
    root = Path(root)
    if analysis_size is None:
        analysis_size = GateConfig.default().analysis_size
    photos, used = [], {}
    for ds in SKIN_MODEL_SETS:
        rows = [r for r in read_rows(root / ds) if fit_half(r["image"])][:MAX_PHOTOS_PER_SET]
        n = 0
        for r in rows:
            rgb = read_image(root / ds / r["image"])
            if ds != LOWRES_SET and min(rgb.shape[:2]) < CLEAN_MIN_SIDE:
                continue
            photos.append(shrink(rgb, analysis_size))
            n += 1
        used[ds] = n
    return photos, "fit half of " + ", ".join(f"{k} ({v})" for k, v in used.items())


def main(argv=None) -> int:
    """Refit the shipped hand-made not-skin model from half of each skin set under the data root."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(SKIN_MODEL_FILE))
    args = parser.parse_args(argv)
    root = Path(args.data_root) if args.data_root else default_data_root()
    photos, source = fitting_photos(root)
    model = not_skin.fit(np.stack([not_skin.describe(small) for small in photos]), source=source)
    atomic_write_text(args.out, json.dumps(model.to_dict()) + "\n")
    print(f"{args.out}: {len(photos)} photos, distance quantiles {model.distance_quantiles}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
