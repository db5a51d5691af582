"""Groups of photos that must stay on one side of every split: a set's group column (patient, case,
lesion: ``GROUP_COLUMNS``) or, for SD-198, blocks of nearby DermQuest ids.

SD-198 records no patient or lesion, and one patient's photos carry nearby numbers, so its groups are
blocks of nearby ids. The rules live here, in the gate package, because both sides need them: the
classifier's splits (``mobile_derm.datasets.sources`` re-exports them) and the gate's fit/report halves
(``photo_sets.fit_half``, via ``set_groups``); the gate package may not import ``mobile_derm``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

#: Largest gap between consecutive DermQuest numbers (same class) that still
#: counts as the same block.
SD198_MAX_GAP = 3
#: Largest distance from a block's first number to its last. Without a cap,
#: chaining merges whole atlas runs: SD-198's 27 Pityriasis rosea photos are
#: DermQuest 040821..040860 with no gap over 4, which would be one "patient"
#: and leave the class 3 groups, too few for 5-fold cross-validation.
SD198_MAX_SPAN = 8

_DQ_ID = re.compile(r"^(\d{6})([A-Za-z]+\d*)$")  # 042601HB, 043855VB1
_UPLOAD_ID = re.compile(r"^(\d+)-")  # 10409-IMG_3817: user upload number, then camera name


def sd198_numeric_id(original_name: str) -> tuple[str, int | None]:
    """(namespace, number) of an SD-198 file name (with or without ``<class>__``).

    - ``042601HB`` (DermQuest atlas id: 6 digits + HB/VB (+ digit)) -> ("dq", 42601)
    - ``10409-IMG_3817`` (uploaded case: number, dash, camera file name) -> ("up", 10409)
    - anything else -> ("", None): its own group.
    """
    stem = Path(original_name).stem
    if "__" in stem:
        stem = stem.split("__", 1)[1]
    m = _DQ_ID.match(stem)
    if m:
        return "dq", int(m.group(1))
    m = _UPLOAD_ID.match(stem)
    if m:
        return "up", int(m.group(1))
    return "", None


def sd198_groups(labels: Sequence[str], names: Sequence[str], max_gap: int = SD198_MAX_GAP,
                 max_span: int = SD198_MAX_SPAN) -> list[str]:
    """Group ids for SD-198 images (SD-198 has no patient or lesion id).

    Rule: within one class and one id namespace (:func:`sd198_numeric_id`),
    sort the numbers; a new block starts wherever the gap to the previous
    number exceeds ``max_gap`` (so 042601, 042603, 042606 form one block,
    042611 starts another; equal numbers are always together), or where the
    number is more than ``max_span`` past the block's first number (so a long
    unbroken atlas run, e.g. 040821..040860, becomes blocks of at most
    ``max_span + 1`` consecutive numbers instead of one huge group). With the
    defaults (3, 8) the 800-image subset has 432 groups, at least 6 per class
    and at most 8 images per group. Files whose
    name carries no number are their own group. Group ids look like
    ``Psoriasis/dq042601`` (the block's first number). Blocks never span
    classes: the same patient photographed for two diagnoses stays splittable,
    which is the conservative choice for per-class stratification.
    """
    if len(labels) != len(names):
        raise ValueError("labels and names differ in length")
    keys = [sd198_numeric_id(n) for n in names]
    out: list[str | None] = [None] * len(names)
    by_bucket: dict[tuple[str, str], list[int]] = {}
    for i, (label, (ns, num)) in enumerate(zip(labels, keys)):
        if num is None:
            out[i] = f"{label}/file:{Path(names[i]).stem}"
        else:
            by_bucket.setdefault((label, ns), []).append(i)
    for (label, ns), idxs in by_bucket.items():
        idxs.sort(key=lambda i: (keys[i][1], names[i]))
        start = prev = keys[idxs[0]][1]
        for i in idxs:
            num = keys[i][1]
            if num - prev > max_gap or num - start > max_span:
                start = num
            prev = num
            out[i] = f"{label}/{ns}{start:06d}"
    return out  # type: ignore[return-value]


#: The labels.csv column that names each photo's group, per set folder under the data root: one lesion
#: (HAM10000), one patient (PAD-UFES-20, several photos each), one case (Derm7pt).
GROUP_COLUMNS = {"ham10000_200px": "lesion_id", "pad_ufes20_subset": "patient_id", "derm7pt_dermoscopic": "case_id"}
#: The set whose groups are blocks of nearby DermQuest ids (:func:`sd198_groups`).
SD198_FOLDER = "sd198_subset"


def set_groups(folder: str, rows: Sequence[dict]) -> list[str]:
    """The group of each labels.csv row of the set in folder ``folder`` (its name under the data root):
    the set's group column, SD-198's id blocks (from each row's ``label`` and file name), or else the
    image path, every photo its own group. An SD-198 row's block depends on the other rows given."""
    column = GROUP_COLUMNS.get(folder)
    if column is not None:
        return [r.get(column) or r["image"] for r in rows]
    if folder == SD198_FOLDER:
        return sd198_groups([r["label"] for r in rows], [Path(r["image"]).name for r in rows])
    return [r["image"] for r in rows]
