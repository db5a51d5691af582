"""Rebuild the `nonskin_free` photo set (or another set with a manifest like it) from its sources, as SOURCE.md describes.

    python docs/data/nonskin_free/build.py --mirrors MIRRORS --out ../shared/data/nonskin_free
    python docs/data/nonskin_free/build.py --manifest docs/data/nonskin_report/labels.csv --mirrors MIRRORS \
        --out ../shared/data/nonskin_report

MIRRORS holds one git directory per source repository, at ``MIRRORS/<owner>+<name>/repo`` (a bare clone or a
clone's ``.git``; each must hold the commit that the manifest names). For every row of the manifest (the labels.csv
beside this script unless ``--manifest`` names another) the file is read at that commit (``git show``), decoded with
OpenCV (IMREAD_COLOR), shrunk with INTER_AREA so that its longer side is at most 600 px (never enlarged) and written as
JPEG quality 90; its size must be the one the manifest records. The photos stay under ``shared/``: they are never
committed here. Nothing is written unless every row builds (the set is assembled in a temporary folder beside OUT,
then renamed).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

MAX_SIDE = 600  # the shared/data convention for copies
JPEG_QUALITY = 90
MANIFEST = Path(__file__).resolve().parent / "labels.csv"


def git_dir(mirrors: Path, repository: str) -> Path:
    base = mirrors / repository.replace("/", "+") / "repo"
    return base / ".git" if (base / ".git").is_dir() else base


def build_one(row: dict, mirrors: Path) -> np.ndarray:
    repo = git_dir(mirrors, row["source_repository"])
    if not repo.is_dir():
        raise SystemExit(f"error: {repo}: no git mirror of {row['source_repository']}")
    blob = subprocess.run(["git", "--git-dir", str(repo), "show", f"{row['commit']}:{row['original_path']}"],
                          capture_output=True, check=False)
    if blob.returncode != 0:
        raise SystemExit(f"error: {repo}: cannot read {row['original_path']} at {row['commit'][:12]}")
    img = cv2.imdecode(np.frombuffer(blob.stdout, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"error: {row['original_path']}: OpenCV cannot decode it")
    h, w = img.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) != (int(row["width"]), int(row["height"])):
        raise SystemExit(f"error: {row['image']}: built {img.shape[1]}x{img.shape[0]}, labels.csv says "
                         f"{row['width']}x{row['height']}")
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirrors", type=Path, required=True, help="folder of <owner>+<name>/repo git directories")
    ap.add_argument("--out", type=Path, required=True, help="the set's folder (e.g. ../shared/data/nonskin_free)")
    ap.add_argument("--manifest", type=Path, default=MANIFEST,
                    help="the set's labels.csv, its SOURCE.md beside it (default: nonskin_free's)")
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out}: already exists (remove it to rebuild)", file=sys.stderr)
        return 2
    with args.manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        (tmp / "images").mkdir()
        for i, row in enumerate(rows, 1):
            img = build_one(row, args.mirrors)
            if not cv2.imwrite(str(tmp / row["image"]), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise SystemExit(f"error: {tmp / row['image']}: cannot write it")
            print(f"\r{i}/{len(rows)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        shutil.copyfile(args.manifest, tmp / "labels.csv")
        shutil.copyfile(args.manifest.parent / "SOURCE.md", tmp / "SOURCE.md")
        tmp.rename(args.out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"{len(rows)} photos -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
