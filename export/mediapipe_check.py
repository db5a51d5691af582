"""App-runtime compatibility check: does MediaPipe Tasks read our .tflite as we do?

    python -m mobile_derm_export.mediapipe_check --models A.tflite B.tflite \\
        --images DIR_OR_FILES... --out report.json [--venv runs/mediapipe-venv]

MediaPipe cannot share the main environment (its absl/opencv/protobuf/numpy
pins clash with tflite-support's), so this builds its own virtualenv
(``python3.11 -m venv`` + ``pip install mediapipe==1.2.*``; reused when it
already works) and runs a small worker there that loads each model with
``vision.ImageClassifier`` (all results) and classifies each image.

Both sides see the same pixels: images are decoded once here (``load_rgb``,
EXIF orientation applied) and handed to the worker as .npy arrays. Two variants
per model:
  * ``app_path``: the full photo with a centred-square region of interest,
    MediaPipe doing its own resize (bilinear, corner-aligned) and normalization,
    which is what an app does; our side crops the same square and resizes with
    ``preprocess.resize_square`` (the same mapping when enlarging; area averaging
    when shrinking, where MediaPipe point-samples, so apps should shrink large
    photos themselves first).
  * ``presized``: the photo already cropped and resized by our preprocessing,
    so only normalization/quantization, label order and the runtime differ.
    Anything below 100% here is a metadata or conversion bug.

The report gives, per model and variant: n_images, agree fraction, the
disagreeing files, whether MediaPipe's category names match our labels, and
the largest score difference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mobile_derm.errors import MobileDermError

DEFAULT_VENV = Path("runs/mediapipe-venv")
DEFAULT_SPEC = "mediapipe==1.2.*"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic"}
VARIANTS = ("app_path", "presized")

# Runs inside the MediaPipe venv: numpy + mediapipe only, JSON in, JSON out.
WORKER_SOURCE = r'''
import json, sys
import numpy as np
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision
from mediapipe.tasks.python.components.containers.rect import RectF

spec = json.load(open(sys.argv[1]))
report = {"mediapipe_version": mp.__version__, "models": {}}
for job in spec["jobs"]:
    entry = {"error": None, "results": {}, "second_head": {}}
    report["models"][job["model"]] = entry
    try:
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=job["model"]),
            max_results=-1,
            display_names_locale=spec.get("locale") or None,
        )
        classifier = vision.ImageClassifier.create_from_options(options)
    except Exception as exc:
        entry["error"] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:500]
        continue
    with classifier:
        for item in job["items"]:
            try:
                pixels = np.ascontiguousarray(np.load(item["npy"]))
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)
                roi = item.get("roi")
                ipo = None
                if roi:
                    ipo = vision.ImageProcessingOptions(
                        region_of_interest=RectF(left=roi[0], top=roi[1], right=roi[2], bottom=roi[3]))
                result = classifier.classify(image, ipo)
                cats = result.classifications[0].categories
                if len(result.classifications) > 1 and result.classifications[1].categories:
                    entry["second_head"][item["key"]] = float(result.classifications[1].categories[0].score)
                entry["results"][item["key"]] = [
                    {"index": int(c.index), "score": float(c.score),
                     "category_name": c.category_name, "display_name": c.display_name}
                    for c in cats
                ]
            except Exception as exc:
                entry["results"][item["key"]] = {"error": (type(exc).__name__ + ": " + str(exc))[:300]}
with open(sys.argv[2], "w") as f:
    json.dump(report, f)
'''


class CheckError(MobileDermError):
    """The check itself could not run (venv, worker)."""


# --------------------------------------------------------------------------
# Comparison: pure, unit-testable without MediaPipe
# --------------------------------------------------------------------------


def compare_predictions(
    labels: list[str],
    ours: dict[str, "np.ndarray | list[float]"],
    theirs: dict[str, "list[dict] | dict"],
    tie_tol: float = 1e-6,
) -> dict:
    """Compare our probabilities with MediaPipe's categories, image by image.

    ``ours[key]`` is our probability vector (labels order); ``theirs[key]`` is
    MediaPipe's list of {"index", "score", "category_name", ...} or {"error": ...}.
    MediaPipe's top-1 agrees when it names our top-1 label, or a label our
    probabilities tie with it (within ``tie_tol``; uint8 outputs tie often).
    """
    agree = 0
    compared = 0
    disagreements, errors, name_mismatches = [], [], []
    max_diff = 0.0
    for key in sorted(ours):
        probs = np.asarray(ours[key], dtype=np.float64)
        cats = theirs.get(key)
        if cats is None:
            errors.append({"image": key, "error": "no MediaPipe result"})
            continue
        if isinstance(cats, dict) or not cats:
            problem = cats.get("error", "empty result") if isinstance(cats, dict) else "empty result"
            errors.append({"image": key, "error": problem})
            continue
        compared += 1
        for c in cats:
            idx = int(c["index"])
            expected = labels[idx] if 0 <= idx < len(labels) else None
            if c.get("category_name") != expected and len(name_mismatches) < 20:
                name_mismatches.append({"index": idx, "mediapipe": c.get("category_name"), "ours": expected})
            if 0 <= idx < len(probs):
                max_diff = max(max_diff, abs(float(c["score"]) - float(probs[idx])))
        top = max(cats, key=lambda c: (float(c["score"]), -int(c["index"])))
        ours_top = int(np.argmax(probs))
        their_idx = int(top["index"])
        their_name = top.get("category_name")
        same = their_name == labels[ours_top] or (
            0 <= their_idx < len(probs) and probs[their_idx] >= probs[ours_top] - tie_tol and their_name == labels[their_idx]
        )
        if same:
            agree += 1
        else:
            disagreements.append(
                {
                    "image": key,
                    "ours": labels[ours_top],
                    "ours_prob": round(float(probs[ours_top]), 6),
                    "mediapipe": their_name,
                    "mediapipe_score": round(float(top["score"]), 6),
                }
            )
    return {
        "n_images": len(ours),
        "n_compared": compared,
        "agree": agree,
        "agree_fraction": (agree / compared) if compared else None,
        "disagreements": disagreements,
        "errors": errors,
        "label_names_ok": compared > 0 and not name_mismatches,
        "label_name_mismatches": name_mismatches,
        "max_abs_score_diff": round(max_diff, 6),
    }


# --------------------------------------------------------------------------
# Our side
# --------------------------------------------------------------------------


def _of_variant(results: dict, variant: str) -> dict:
    """The worker's results for one variant, keyed by image path ("<variant>:<path>" -> "<path>")."""
    return {k.split(":", 1)[1]: v for k, v in results.items() if k.startswith(variant + ":")}


def compare_unfamiliarity(ours: dict[str, float], theirs: dict[str, float]) -> dict:
    """MediaPipe's second classification head against our unfamiliarity output
    (presized images: the same input tensor on both sides)."""
    keys = sorted(k for k in ours if k in theirs)
    diffs = [abs(ours[k] - theirs[k]) for k in keys]
    return {
        "n_compared": len(keys),
        "missing": len(ours) - len(keys),
        "max_abs_diff": max(diffs) if diffs else None,
        "decisions_agree": sum((ours[k] > 0.5) == (theirs[k] > 0.5) for k in keys),
    }


def _our_predictor(model_path: Path):
    """Our app-side runner: the same preprocessing and quantization as ``predict``."""
    from mobile_derm.app.predict import Predictor

    return Predictor(model_path, num_threads=1)


def _load_rgb(path: Path) -> np.ndarray:
    """The quality gate's decoder (EXIF orientation applied), as ``predict`` uses."""
    from mobile_derm.app.preprocess import load_rgb

    return load_rgb(path)


def _center_roi(h: int, w: int) -> list[float]:
    """Normalized [left, top, right, bottom] of the centred square (preprocess.center_square)."""
    from mobile_derm.app.preprocess import square_box

    top, left, side = square_box(h, w)
    return [left / w, top / h, (left + side) / w, (top + side) / h]


def collect_images(specs: list[str], limit: int | None = None) -> list[Path]:
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise CheckError(p, "image file or folder not found")
    seen, unique = set(), []
    for p in paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique[:limit] if limit else unique


# --------------------------------------------------------------------------
# MediaPipe side
# --------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, spec: str = DEFAULT_SPEC, python: str = "python3.11") -> str:
    """Create (or reuse) the MediaPipe virtualenv; returns the installed mediapipe version."""
    py = _venv_python(venv)
    probe = [str(py), "-c", "import mediapipe, numpy; from mediapipe.tasks.python import vision; print(mediapipe.__version__)"]
    if py.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0:
            version = done.stdout.strip().splitlines()[-1]
            want = spec.split("==", 1)[1].rstrip(".*") if "==" in spec else ""
            if version.startswith(want):
                return version
    print(f"building the MediaPipe venv at {venv} ({spec}); this takes a few minutes", file=sys.stderr)
    if not py.exists():
        done = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
        if done.returncode != 0:
            raise CheckError(venv, f"'{python} -m venv' failed: {done.stderr.strip()[-300:]}")
    done = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise CheckError(venv, f"pip install {spec} failed: {done.stderr.strip()[-500:]}")
    done = subprocess.run(probe, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckError(venv, f"mediapipe does not import: {done.stderr.strip()[-300:]}")
    return done.stdout.strip().splitlines()[-1]


def run_worker(venv: Path, jobs: list[dict], workdir: Path, locale: str = "en", timeout: int = 1800) -> dict:
    worker = workdir / "mp_worker.py"
    worker.write_text(WORKER_SOURCE)
    spec_path, out_path = workdir / "spec.json", workdir / "mp_results.json"
    spec_path.write_text(json.dumps({"jobs": jobs, "locale": locale}))
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [str(_venv_python(venv)), str(worker), str(spec_path), str(out_path)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if done.returncode != 0 or not out_path.exists():
        raise CheckError(venv, f"MediaPipe worker failed (rc {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(out_path.read_text())


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def check(models: list[Path], images: list[Path], venv: Path = DEFAULT_VENV, spec: str = DEFAULT_SPEC) -> dict:
    from mobile_derm.app.model_file import read_io_spec, read_model_info
    from mobile_derm.app.preprocess import resize_square

    version = ensure_venv(venv, spec)
    report: dict = {"mediapipe_version": version, "images": [str(p) for p in images], "models": {}}
    with tempfile.TemporaryDirectory(prefix="mp_check_") as tmp:
        tmp = Path(tmp)
        decoded: dict[str, np.ndarray] = {}
        skipped = []
        for i, p in enumerate(images):
            try:
                rgb = _load_rgb(p)
            except MobileDermError as exc:
                skipped.append({"image": str(p), "error": exc.problem})
                continue
            np.save(tmp / f"full_{i}.npy", rgb)
            decoded[str(p)] = rgb
        report["skipped_images"] = skipped
        index = {key: i for i, key in enumerate(report["images"])}

        jobs, ours, setups, unfamiliarity = [], {}, {}, {}
        for model in models:
            key = str(model)
            entry = report["models"][key] = {"load_error": None}
            try:
                info = read_model_info(model)
                entry["io"] = read_io_spec(model)
                predictor = _our_predictor(model)
            except MobileDermError as exc:
                entry["load_error"] = f"ours: {exc}"
                continue
            size = info.input_size
            probs, items_app, items_pre = {}, [], []
            unfamiliarity[key] = {}
            for path, rgb in decoded.items():
                probs[path], unfamiliarity[key][path] = predictor.scores(rgb)
                i = index[path]
                items_app.append({"key": f"app_path:{path}", "npy": str(tmp / f"full_{i}.npy"), "roi": _center_roi(*rgb.shape[:2])})
                pre = tmp / f"pre{size}_{i}.npy"
                if not pre.exists():
                    np.save(pre, resize_square(rgb, size))
                items_pre.append({"key": f"presized:{path}", "npy": str(pre), "roi": None})
            ours[key] = probs
            setups[key] = info
            jobs.append({"model": str(Path(model).resolve()), "items": items_app + items_pre})

        results = run_worker(venv, jobs, tmp) if jobs else {"models": {}}
        for model in models:
            key = str(model)
            if key not in setups:
                continue
            entry = report["models"][key]
            mp_entry = results["models"].get(str(Path(model).resolve()), {"error": "not run", "results": {}})
            if mp_entry["error"]:
                entry["load_error"] = f"mediapipe: {mp_entry['error']}"
                continue
            labels = setups[key].labels
            entry["variants"] = {}
            for variant in VARIANTS:
                entry["variants"][variant] = compare_predictions(labels, ours[key], _of_variant(mp_entry["results"], variant))
            if setups[key].familiarity:
                entry["unfamiliarity"] = compare_unfamiliarity(unfamiliarity[key], _of_variant(mp_entry["second_head"], "presized"))
            sample = next((v for v in mp_entry["results"].values() if isinstance(v, list) and v), None)
            if sample:
                entry["display_names_example"] = {c["category_name"]: c["display_name"] for c in sample}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobile_derm_export.mediapipe_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, type=Path)
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="report JSON")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"MediaPipe virtualenv (default {DEFAULT_VENV})")
    parser.add_argument("--mediapipe", default=DEFAULT_SPEC, help=f"pip requirement (default {DEFAULT_SPEC!r})")
    parser.add_argument("--max-images", type=int, default=200)
    parser.add_argument("--min-agree", type=float, default=0.95, help="presized agreement below this fails (exit 1)")
    args = parser.parse_args(argv)
    try:
        images = collect_images(args.images, args.max_images)
        if not images:
            raise CheckError(None, "no images found")
        report = check(args.models, images, args.venv, args.mediapipe)
    except MobileDermError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mobile_derm.io_utils import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=2))
    ok = True
    for model, entry in report["models"].items():
        if entry.get("load_error"):
            ok = False
            print(f"{model}: FAILED to load: {entry['load_error']}")
            continue
        parts = []
        for variant, res in entry["variants"].items():
            frac = res["agree_fraction"]
            parts.append(f"{variant} {res['agree']}/{res['n_compared']}" + ("" if frac is None else f" ({frac:.0%})"))
            if variant == "presized" and (frac is None or frac < args.min_agree or not res["label_names_ok"]):
                ok = False
        names = "label names ok" if entry["variants"]["presized"]["label_names_ok"] else "LABEL NAMES DIFFER"
        second = entry.get("unfamiliarity")
        if second is not None:
            names += (f"; unfamiliarity head: {second['decisions_agree']}/{second['n_compared']} decisions agree, "
                      f"max diff {second['max_abs_diff']}")
            if second["missing"] or second["decisions_agree"] < second["n_compared"]:
                ok = False
        print(f"{model}: {', '.join(parts)}; {names}")
    print(f"mediapipe {report['mediapipe_version']}; report: {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
