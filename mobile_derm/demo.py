"""``mobile-derm demo``: the whole pipeline, thinly, on data it makes itself.

synthetic lesions -> EfficientNet-Lite0 (small input) -> head + short fine-tune
-> float32 / float16 / int8 .tflite with metadata -> LiteRT benchmark
-> quality-gate verdicts. The demo data are procedural drawings, not dermatology.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.training.config import TrainConfig
from mobile_derm_export.convert import DEFAULT_VARIANTS

DEMO_VARIANTS = DEFAULT_VARIANTS


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
    """Every step on generated data, through the Python API (``mobile_derm.api``);
    returns the benchmark rows."""
    from mobile_derm.api import Classifier
    from mobile_derm.datasets.synthetic import generate_demo_dataset

    out_dir = Path(out_dir)
    _step(f"1/5 generating demo data (synthetic lesions, not dermatology) in {out_dir / 'data'}")
    dataset = generate_demo_dataset(out_dir / "data", lesions_per_class=size.lesions_per_class,
                                    views_per_lesion=size.views_per_lesion, size=size.image_size, seed=0)
    print(f"{len(dataset.samples)} images, classes: {', '.join(dataset.classes)}")

    _step("2/5 training EfficientNet-Lite0 (head on cached features, then fine-tuning)")
    # A few hundred generated photos: BatchNorm stays frozen (its batch statistics would be noise)
    # and fine-tuning runs gently, unlike the HAM10000 recipe that TrainConfig's defaults are.
    config = TrainConfig(input_size=size.input_size, head_epochs=size.head_epochs, finetune_epochs=size.finetune_epochs,
                         finetune_learning_rate=5e-4, train_batchnorm=False, early_stopping_patience=3,
                         batch_size=16, allow_random_weights=allow_random_weights, representative_size=64)
    clf = Classifier.train(dataset, config, out_dir / "run", progress=progress)

    _step(f"3/5 exporting {', '.join(variants)} .tflite files with metadata")
    clf.export(out_dir, variants)

    _step("4/5 benchmarking every variant on the held-out test split (LiteRT)")
    rows = clf.benchmark(out_dir, latency_runs=size.latency_runs, progress=progress)
    print((out_dir / "benchmark.md").read_text())

    _step("5/5 quality gate on demo photos (two degraded on purpose)")
    verdicts = gate_examples(dataset, out_dir / "gate_examples", clf.info.input_size)
    for name, verdict in verdicts.items():
        reasons = ", ".join(verdict["reasons"]) or "-"
        print(f"{name:28s} {verdict['decision']:7s} reasons: {reasons}")
    print(f"\nDone. Models, benchmark.json and benchmark.md are in {out_dir}")
    return rows


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
