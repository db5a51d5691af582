"""``mobile-derm``: one command line for training, export, benchmark, predict
and the photo-quality gate.

Every failure a user can cause ends as one line ``error: <file>: <problem>``
with exit status 2: no traceback from deep inside OpenCV or TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobile_derm.errors import ConfigError, DataError, MobileDermError
from mobile_derm.model.views import VIEW_SETS


# ------------------------------------------------------------------ helpers
def _load_dataset(spec: str, data_root: str | None):
    from mobile_derm.datasets import sources as datasets

    return datasets.load(spec, data_root)


def _require_new_or_empty_dir(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(path, f"{what} exists and is not a folder")


# ------------------------------------------------------------------ commands
def cmd_demo(args) -> int:
    from mobile_derm_export.convert import check_variants
    from mobile_derm.demo import DEMO_VARIANTS, TINY, DemoSize, run_demo

    variants = check_variants(args.variants.split(",") if args.variants else DEMO_VARIANTS)
    _require_new_or_empty_dir(Path(args.out), "--out")
    run_demo(args.out, TINY if args.tiny else DemoSize(), variants, allow_random_weights=args.random_weights)
    return 0


def _logit_adjustment_arg(value: str | None):
    """--logit-adjustment: "validation", "per_class" or a number (tau)."""
    from mobile_derm.training.config import LOGIT_ADJUSTMENT_CHOICES

    if value is None or value in LOGIT_ADJUSTMENT_CHOICES:
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(None, f"--logit-adjustment takes a number, 'validation' or 'per_class', not {value!r}") from None


def cmd_train(args) -> int:
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.training.fit import train

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in {
        "backbone": args.backbone, "input_size": args.input_size, "finetune_epochs": args.epochs,
        "seed": args.seed, "batch_size": args.batch_size, "logit_adjustment": _logit_adjustment_arg(args.logit_adjustment),
        "test_time_views": args.test_time_views,
    }.items() if v is not None}
    if args.random_weights:
        overrides["allow_random_weights"] = True
    config = TrainConfig.from_dict({**config.to_dict(), **overrides}, args.config)
    from mobile_derm.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy)  # the shipped one unless given
    dataset = _load_dataset(args.data, args.data_root)
    result = train(dataset, config, args.out, taxonomy=taxonomy)
    print(json.dumps({k: result.test_report[k] for k in ("n", "top1", "top3", "balanced_accuracy", "malignancy_auc", "ece")}, indent=2))
    print(f"run saved in {args.out}")
    return 0


def cmd_crossval(args) -> int:
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.training.crossval import cross_validate, markdown
    from mobile_derm.taxonomy import Taxonomy

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    if args.random_weights:
        config = TrainConfig.from_dict({**config.to_dict(), "allow_random_weights": True})
    taxonomy = Taxonomy.load(args.taxonomy)
    dataset = _load_dataset(args.data, args.data_root)
    summary = cross_validate(dataset, config, args.out, k=args.folds, taxonomy=taxonomy)
    print(markdown(summary))
    return 0


def cmd_export(args) -> int:
    from mobile_derm_export.convert import check_variants
    from mobile_derm_export.exporter import export_variants, representative_sample
    from mobile_derm.training.runs import load_run, run_arrays

    variants = check_variants(args.variants.split(","))
    model, config, info = load_run(args.run)
    if args.gate_config:
        from mobile_derm_quality import GateConfig

        # The gate the app should apply, e.g. one from calibrate-gate on your own photos.
        info.gate_config = (GateConfig.default() if args.gate_config == "default" else GateConfig.load(args.gate_config)).to_dict()
    dataset = _load_dataset(args.data, args.data_root)
    pixels, y, split = run_arrays(dataset, args.run)
    train_idx = split.train
    calibration = representative_sample(pixels[train_idx], config.representative_size, config.seed)
    qat_model = None
    if "qat_int8" in variants:
        from mobile_derm_export.qat import quantization_aware_finetune

        qat_model = quantization_aware_finetune(model, config, pixels[train_idx], pixels[split.val],
                                                epochs=args.qat_epochs, learning_rate=args.qat_learning_rate)
    from mobile_derm.model.familiarity import load_for_run

    written = export_variants(model, info, args.out, variants, calibration, io_type=args.io_type, qat_model=qat_model,
                              familiarity=load_for_run(args.run, info))
    for variant, path in written.items():
        print(f"{variant:9s} {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_benchmark(args) -> int:
    import numpy as np

    from mobile_derm_export.benchmark import print_table, run_benchmark
    from mobile_derm_export.convert import ALL_VARIANTS
    from mobile_derm.training.runs import load_run, run_arrays
    from mobile_derm.model.classifier import view_averaged_probs

    model, config, info = load_run(args.run)
    dataset = _load_dataset(args.data, args.data_root)
    pixels, y, split = run_arrays(dataset, args.run)
    models_dir = Path(args.models)
    models = {v: models_dir / f"{v}.tflite" for v in ALL_VARIANTS if (models_dir / f"{v}.tflite").is_file()}
    if not models:
        raise DataError(models_dir, "no <variant>.tflite files found (run mobile-derm export first)")
    test = np.asarray(split.test)
    keras_probs = view_averaged_probs(model, pixels[test], info.mean, info.std, info.test_time_views)
    document = run_benchmark(info, pixels[test], y[test], models, args.out or models_dir, keras_probs=keras_probs)
    print_table(document)
    return 0


def cmd_ood_eval(args) -> int:
    from mobile_derm.evaluation.other_sets import run_ood_eval, table

    dataset = _load_dataset(args.data, args.data_root)
    others = {name: _load_dataset(name, args.data_root) for name in args.sets if name != args.data}
    models = {Path(m).stem: Path(m) for m in args.models or []}
    document = run_ood_eval(args.run, dataset, others, args.out or Path(args.run) / "ood_eval", models=models)
    print(table(document))
    return 0


def cmd_fit_skin_check(args) -> int:
    from mobile_derm_export.skin_check import fit_skin_check
    from mobile_derm_quality.typicality import fitting_photos

    if args.photos:
        from mobile_derm_quality.calibrate import list_images
        from mobile_derm_quality.decode import read_image
        from mobile_derm_quality.features import shrink
        from mobile_derm_quality import GateConfig

        analysis_size = GateConfig.default().analysis_size
        paths = list_images(args.photos)
        photos = [shrink(read_image(p), analysis_size) for p in paths]
        source = f"{len(photos)} photos under {args.photos}"
    else:
        from mobile_derm.datasets.sources import data_root

        root = Path(args.data_root) if args.data_root else data_root()
        photos, source = fitting_photos(root)
    result = fit_skin_check(photos, args.out, source=source, integer_backbone=not args.float_backbone)
    print(json.dumps(result, indent=2))
    print(f"use it with --config {result['config']} (check-photo, gate-eval) or --gate-config (export)")
    return 0


def cmd_predict(args) -> int:
    from mobile_derm.app.predict import Predictor

    predictor = Predictor(args.model, num_threads=args.threads)
    results = []
    for image in args.images:
        try:
            results.append(predictor.predict_file(image, top_k=args.top_k, gate=not args.no_gate, force=args.force))
        except MobileDermError as exc:
            results.append({"image": image, "error": exc.problem})
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0 if all("error" not in r for r in results) else 2


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from mobile_derm import __version__

    parser = argparse.ArgumentParser(prog="mobile-derm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mobile-derm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="whole pipeline on generated demo data")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--variants", help="comma-separated: float32,dynamic,float16,int8,int16x8")
    p.add_argument("--tiny", action="store_true", help="a seconds-long version (used by the tests)")
    p.add_argument("--random-weights", action="store_true", help="allow random init if the ImageNet weights extra is missing")
    p.set_defaults(func=cmd_demo)

    def data_args(p):
        p.add_argument("--data", required=True, help="preset (ham10000, pad_ufes20, derm7pt, sd198), labels CSV, or class folders")
        p.add_argument("--data-root", help="folder holding the presets (default $MOBILE_DERM_DATA or ../shared/data)")

    p = sub.add_parser("train", help="train a classifier (head first, then fine-tune; resumes if killed)")
    data_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="TrainConfig JSON file")
    p.add_argument("--backbone")
    p.add_argument("--input-size", type=int)
    p.add_argument("--epochs", type=int, help="fine-tuning epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--logit-adjustment", metavar="TAU|validation|per_class",
                   help="after training, shift the logits by -tau*log(prior) ('validation': tau chosen there; "
                        "'per_class': then one offset per class, kept where it holds on held-out validation); "
                        "re-running on a finished run only redoes this step")
    p.add_argument("--test-time-views", choices=list(VIEW_SETS),
                   help="average predictions over flipped/turned copies of the photo, in evaluation and in the "
                        "exported models (default none; re-running on a finished run only redoes the evaluation)")
    p.add_argument("--taxonomy", help="taxonomy JSON for your labels (default: the shipped one)")
    p.add_argument("--random-weights", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="grouped k-fold cross-validation (mean and spread over folds)")
    data_args(p)
    p.add_argument("--out", required=True, help="folder for the fold runs and crossval.json/.md")
    p.add_argument("--config", help="TrainConfig JSON file")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--taxonomy", help="taxonomy JSON for your labels (default: the shipped one)")
    p.add_argument("--random-weights", action="store_true")
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("export", help="convert a run to .tflite variants with metadata")
    p.add_argument("run", help="training run folder")
    data_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--variants", default="float32,dynamic,float16,int8,int16x8")
    p.add_argument("--io-type", default="uint8", choices=["uint8", "int8"])
    p.add_argument("--qat-epochs", type=int, default=2, help="epochs of quantization-aware distillation (default 2: one left balanced accuracy 1.9 points below float, two 0.6)")
    p.add_argument("--qat-learning-rate", type=float, default=1e-5, help="Adam learning rate for it (default 1e-5)")
    p.add_argument("--gate-config", metavar="CONFIG.json",
                   help="quality-gate config to pack into the models instead of the run's ('default': this version's built-in)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help="accuracy / size / latency of every exported variant")
    p.add_argument("run", help="training run folder")
    data_args(p)
    p.add_argument("--models", required=True, help="folder with <variant>.tflite files")
    p.add_argument("--out", help="where benchmark.json/.md/.png go (default: --models)")
    p.set_defaults(func=cmd_benchmark)

    from mobile_derm.evaluation.other_sets import DEFAULT_SETS

    p = sub.add_parser("ood-eval", help="how often a run abstains (softmax, feature familiarity) on its test split and other image sets")
    p.add_argument("run", help="training run folder")
    data_args(p)
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help=f"presets or folders to score (default: {' '.join(DEFAULT_SETS)})")
    p.add_argument("--models", nargs="*", help="exported .tflite files to score the same way (their own outputs, LiteRT)")
    p.add_argument("--out", help="where ood_eval.json/.md/.png go (default: RUN/ood_eval)")
    p.set_defaults(func=cmd_ood_eval)

    p = sub.add_parser("fit-skin-check", help="fit the learned not-skin check (ImageNet Lite0 + one-class model) on good skin photos")
    p.add_argument("--out", required=True, help="folder for skin_check.tflite and its gate_config.json")
    p.add_argument("--photos", help="folder of good skin photos (default: the fit half of the skin sets under --data-root)")
    p.add_argument("--data-root", help="folder holding the data sets (default $MOBILE_DERM_DATA or ../shared/data)")
    p.add_argument("--float-backbone", action="store_true",
                   help="keep the backbone in float32 (default: int8 convolutions, float head; about 1 ms faster)")
    p.set_defaults(func=cmd_fit_skin_check)

    p = sub.add_parser("predict", help="classify photos with a .tflite (LiteRT only), JSON out")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true", help="classify even when the quality gate rejects")
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate")
    p.set_defaults(func=cmd_predict)

    from mobile_derm_quality import cli as quality_cli

    quality_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mobile_derm_quality.errors import QualityCheckError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MobileDermError, QualityCheckError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
