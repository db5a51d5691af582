"""``mobile-derm demo``: the whole pipeline, thinly, on data it makes itself.

synthetic lesions -> EfficientNet-Lite0 (small input) -> head + short fine-tune
-> float32 / dynamic / float16 / int8 .tflite with metadata -> LiteRT benchmark
-> quality-gate verdicts. The demo data are procedural drawings, not dermatology.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.training.config import TrainConfig

DEMO_VARIANTS = ("float32", "dynamic", "float16", "int8")


@dataclass
class DemoSize:
    lesions_per_class: int = 14
    views_per_lesion: int = 4
    image_size: int = 320  # generated photos; smaller ones look soft to the gate (it judges sharpness at 600 px)
    input_size: int = 128  # model input (Lite0's native 224 costs 3x more on 2 cores)
    head_epochs: int = 40
    finetune_epochs: int = 3
    latency_runs: int = 50


TINY = DemoSize(lesions_per_class=4, views_per_lesion=3, image_size=96, input_size=64, head_epochs=5, finetune_epochs=1, latency_runs=5)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_demo(out_dir: str | Path, size: DemoSize = DemoSize(), variants=DEMO_VARIANTS, allow_random_weights: bool = False, progress: bool = True) -> dict:
    from mobile_derm_export.benchmark import print_table, run_benchmark
    from mobile_derm_export.exporter import export_variants, representative_sample
    from mobile_derm.datasets.synthetic import generate_demo_dataset
    from mobile_derm.training.runs import run_arrays
    from mobile_derm.training.fit import train
    from mobile_derm.model.classifier import view_averaged_probs

    out_dir = Path(out_dir)
    _step(f"1/5 generating demo data (synthetic lesions, not dermatology) in {out_dir / 'data'}")
    dataset = generate_demo_dataset(out_dir / "data", lesions_per_class=size.lesions_per_class,
                                    views_per_lesion=size.views_per_lesion, size=size.image_size, seed=0)
    print(f"{len(dataset.samples)} images, classes: {', '.join(dataset.classes)}")

    _step("2/5 training EfficientNet-Lite0 (head on cached features, then fine-tuning)")
    config = TrainConfig(input_size=size.input_size, head_epochs=size.head_epochs, finetune_epochs=size.finetune_epochs,
                         batch_size=16, allow_random_weights=allow_random_weights, representative_size=64)
    result = train(dataset, config, out_dir / "run", progress=progress)
    pixels, y, split = run_arrays(dataset, out_dir / "run", progress=progress)

    _step(f"3/5 exporting {', '.join(variants)} .tflite files with metadata")
    calibration = representative_sample(pixels[np.asarray(split.train)], config.representative_size, config.seed)
    from mobile_derm.model.familiarity import load_for_run

    models = export_variants(result.model, result.info, out_dir, variants, calibration,
                             familiarity=load_for_run(out_dir / "run", result.info))

    _step("4/5 benchmarking every variant on the held-out test split (LiteRT)")
    test = np.asarray(split.test)
    keras_probs = view_averaged_probs(result.model, pixels[test], result.info.mean, result.info.std,
                                      result.info.test_time_views)
    document = run_benchmark(result.info, pixels[test], y[test], models, out_dir, keras_probs=keras_probs,
                             latency_runs=size.latency_runs, progress=progress)
    print_table(document)

    _step("5/5 quality gate on demo photos (two degraded on purpose)")
    verdicts = gate_examples(dataset, out_dir / "gate_examples", result.info.input_size)
    for name, verdict in verdicts.items():
        reasons = ", ".join(verdict["reasons"]) or "-"
        print(f"{name:28s} {verdict['decision']:7s} reasons: {reasons}")
    print(f"\nDone. Models, benchmark.json and benchmark.md are in {out_dir}")
    return document


def gate_examples(dataset, out_dir: Path, model_input: int) -> dict:
    """Run the gate on two clean demo photos and on blurred / darkened copies."""
    import cv2

    from mobile_derm_quality import assess, read_image

    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = {}
    for sample in dataset.samples[:2]:
        rgb = read_image(sample.path)
        verdicts[Path(sample.path).name] = assess(rgb, min_model_input=model_input).to_dict()
    rgb = read_image(dataset.samples[0].path)
    degraded = {
        "blurred.jpg": cv2.GaussianBlur(rgb, (0, 0), 4),
        "too_dark.jpg": (rgb * 0.2).astype(np.uint8),
    }
    for name, image in degraded.items():
        cv2.imwrite(str(out_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        verdicts[name] = assess(image, min_model_input=model_input).to_dict()
    (out_dir / "verdicts.json").write_text(json.dumps(verdicts, indent=2))
    return verdicts
