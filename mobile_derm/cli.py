"""``mobile-derm``: one command line for training, export, benchmark, predict
and the photo-quality gate.

Every failure a user can cause ends as one line ``error: <file>: <problem>``
with exit status 2: no traceback from deep inside OpenCV or TensorFlow. The exit
codes and option types are shared with the gate's commands
(``mobile_derm_quality.cli``); the native libraries stay quiet unless ``--verbose``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobile_derm.errors import ConfigError, DataError, MobileDermError
from mobile_derm.model.views import VIEW_SETS
from mobile_derm_quality.cli import (EXIT_CODES, EXIT_ERROR, EXIT_OK, EXIT_REJECTED, number_type, positive_float,
                                     positive_int, run, verbose_option, whole_number)


# ------------------------------------------------------------------ helpers
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
    """--logit-adjustment: "validation" or a number (tau)."""
    from mobile_derm.training.config import LOGIT_ADJUSTMENT_CHOICES

    if value is None or value in LOGIT_ADJUSTMENT_CHOICES:
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(None, f"--logit-adjustment takes a number or 'validation', not {value!r}") from None


def _distribution(args):
    """--distribute / --batch-rule / --mixed-precision / --xla, with the strategy made
    before TensorFlow runs anything (TensorFlow's rule for multi_worker)."""
    from mobile_derm.training.distribute import Distribution, strategy_for

    distribution = Distribution(args.distribute, args.batch_rule, args.mixed_precision, args.xla)
    strategy_for(distribution.strategy)
    return distribution


def cmd_train(args) -> int:
    from mobile_derm.api import Classifier, load_dataset
    from mobile_derm.training.config import TrainConfig

    distribution = _distribution(args)

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in {
        "backbone": args.backbone, "input_size": args.input_size, "finetune_epochs": args.finetune_epochs,
        "seed": args.seed, "batch_size": args.batch_size, "logit_adjustment": _logit_adjustment_arg(args.logit_adjustment),
        "test_time_views": args.test_time_views,
    }.items() if v is not None}
    if args.random_weights:
        overrides["allow_random_weights"] = True
    config = TrainConfig.from_dict({**config.to_dict(), **overrides}, args.config)
    from mobile_derm.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy)  # the shipped one unless given
    dataset = load_dataset(args.data, args.data_root)
    clf = Classifier.train(dataset, config, args.out, taxonomy=taxonomy, distribution=distribution)
    if clf.info is None:
        print("fine-tuning done on this worker; the chief writes the run folder")
        return 0
    print(json.dumps({k: clf.test_report[k] for k in ("n", "top1", "top3", "balanced_accuracy", "malignancy_auc", "ece")}, indent=2))
    print(f"run saved in {args.out}")
    return 0


def cmd_crossval(args) -> int:
    from mobile_derm.api import load_dataset
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.training.crossval import cross_validate, markdown
    from mobile_derm.taxonomy import Taxonomy

    distribution = _distribution(args)
    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    if args.random_weights:
        config = TrainConfig.from_dict({**config.to_dict(), "allow_random_weights": True})
    # options that only matter after the folds are checked before hours of training
    if args.external and not args.export:
        raise ConfigError(None, "--external needs --export (the folds' files are what is scored)")
    if args.export:
        from mobile_derm_export.convert import check_variants

        variants = check_variants(args.export.split(","))
        if args.external and "int8" not in variants:
            raise ConfigError(None, "--external scores each fold's int8 file: add int8 to --export")
        for name in args.external or ():
            load_dataset(name, args.data_root)
    taxonomy = Taxonomy.load(args.taxonomy)
    dataset = load_dataset(args.data, args.data_root)
    summary = cross_validate(dataset, config, args.out, k=args.folds, taxonomy=taxonomy, distribution=distribution)
    if not summary:
        print("fine-tuning done on this worker; the chief writes the folds")
        return 0
    print(markdown(summary))
    if args.export:
        from mobile_derm.api import export_folds

        export_folds(args.out, dataset, args.export.split(","), external=args.external or ())
        print((Path(args.out) / "crossval_exported.md").read_text(encoding="utf-8"))
    return 0


def cmd_write_shards(args) -> int:
    from mobile_derm.api import load_dataset
    from mobile_derm.datasets.shards import write_shards

    dataset = load_dataset(args.data, args.data_root)
    manifest = write_shards(dataset, args.out, args.images_per_shard, args.seed)
    print(f"{manifest['n_images']} images of {len(manifest['classes'])} classes in {len(manifest['shards'])} "
          f"shards: {args.out} (train from it with --data {args.out})")
    return 0


def cmd_export(args) -> int:
    from mobile_derm.api import Classifier

    clf = Classifier.load(args.run, args.data, data_root=args.data_root)
    written = clf.export(args.out, args.variants.split(","), io_type=args.io_type, gate_config=args.gate_config,
                         qat_epochs=args.qat_epochs, qat_learning_rate=args.qat_learning_rate)
    for variant, path in written.items():
        print(f"{variant:9s} {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_benchmark(args) -> int:
    """A training run's exported variants (RUN and a --models folder), or any
    .tflite files brought along (--models files, no RUN) on a labelled --data."""
    if args.run:
        from mobile_derm.api import Classifier

        if len(args.models) != 1 or not Path(args.models[0]).is_dir():
            raise ConfigError(args.models[0], "with a training run, --models is the one folder its variants "
                                              "were exported to")
        out = Path(args.out or args.models[0])
        Classifier.load(args.run, args.data, data_root=args.data_root).benchmark(args.models[0], out)
    else:
        from mobile_derm.api import load_dataset
        from mobile_derm_export.benchmark import benchmark_files

        files = _tflite_files(args.models)
        labels = _read_labels_file(args.labels) if args.labels else None
        out = Path(args.out or files[0].parent)
        benchmark_files(files, load_dataset(args.data, args.data_root), out, labels=labels,
                        mean=_channels(args.mean, "--mean"), std=_channels(args.std, "--std"), reference=args.reference)
    print((out / "benchmark.md").read_text())
    return 0


def _tflite_files(models: list[str]) -> list[Path]:
    """--models: .tflite files, or folders whose .tflite files all count."""
    files = []
    for entry in map(Path, models):
        found = sorted(entry.glob("*.tflite")) if entry.is_dir() else [entry]
        if not found:
            raise DataError(entry, "no .tflite files in this folder")
        files += found
    for path in files:
        if not path.is_file():
            raise DataError(path, "model file not found")
    return files


def _read_labels_file(path: str) -> list[str]:
    try:
        labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read the labels file ({exc})") from None
    if not labels:
        raise DataError(path, "no labels in the file (one per line)")
    return labels


def _channels(values: list[float] | None, flag: str) -> tuple[float, float, float] | None:
    """--mean/--std: one number for all three channels, or three."""
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise ConfigError(None, f"{flag} takes one number or three (R G B), not {len(values)}")
    if flag == "--std" and min(values) <= 0:
        raise ConfigError(None, "--std must be positive")
    return tuple(float(v) for v in values) * (3 if len(values) == 1 else 1)


def cmd_evaluate(args) -> int:
    """A run or an exported .tflite on another data set (external validation)."""
    from mobile_derm.api import Classifier, evaluate_external
    from mobile_derm.evaluation.external import markdown
    from mobile_derm.taxonomy import Taxonomy

    target = Path(args.model)
    model = Classifier.load(target) if target.is_dir() else target
    out = Path(args.out) if args.out else (target if target.is_dir() else target.parent) / f"external_{Path(args.data).stem}"
    report = evaluate_external(model, args.data, out, taxonomy=Taxonomy.load(args.taxonomy), data_root=args.data_root)
    print(markdown(report))
    print(f"wrote {out / 'external.json'}")
    return EXIT_OK


def cmd_capture_robustness(args) -> int:
    from mobile_derm.api import load_dataset
    from mobile_derm.evaluation.capture_robustness import markdown, run_capture_robustness

    out = Path(args.out) if args.out else Path(args.model).parent / "capture_robustness"
    report = run_capture_robustness(args.run, load_dataset(args.data, args.data_root), args.model, out, n=args.n,
                                    seed=args.seed)
    print(markdown(report))
    print(f"wrote {out / 'capture_robustness.json'}")
    return EXIT_OK


def cmd_ood_eval(args) -> int:
    from mobile_derm.api import Classifier, load_dataset
    from mobile_derm.evaluation.other_sets import table

    clf = Classifier.load(args.run, args.data, data_root=args.data_root)
    others = {name: load_dataset(name, args.data_root) for name in args.sets if name != args.data}
    models = {Path(m).stem: Path(m) for m in args.models or []}
    print(table(clf.ood_eval(others, args.out, models=models)))
    return 0


def cmd_fit_skin_check(args) -> int:
    from mobile_derm_export.not_skin_model import fit_skin_check
    from mobile_derm_quality.photo_sets import fitting_photos

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


def _gate_twin_for(args, out_dir: Path):
    """--gate-model FILE, or gate.tflite built into ``out_dir`` from --gate-config (default: the built-in config)."""
    from mobile_derm_quality.gate_twin import MODEL_FILENAME, GateTwin

    if args.gate_model:
        if args.gate_config:
            raise MobileDermError(args.gate_config, "give --gate-model or --gate-config, not both")
        return GateTwin(args.gate_model)
    from mobile_derm_export.gate_model import write_gate_model
    from mobile_derm_quality import GateConfig

    config = GateConfig.load(args.gate_config) if args.gate_config else GateConfig.default()
    return GateTwin(write_gate_model(config, out_dir / MODEL_FILENAME, source=args.gate_config))


def cmd_export_gate(args) -> int:
    twin = _gate_twin_for(argparse.Namespace(gate_model=None, gate_config=args.gate_config), Path(args.out))
    print(f"wrote {twin.path} ({twin.path.stat().st_size / 1e3:.0f} kB; gate config {twin.config.version})")
    return EXIT_OK


def cmd_gate_parity(args) -> int:
    from mobile_derm_export.gate_parity import PARITY_MD, gate_parity

    twin = _gate_twin_for(args, Path(args.out))
    rep = gate_parity(twin, args.out, data_root=args.data_root, per_set=args.per_set, per_photo=args.variants,
                      synthetic=args.synthetic, seed=args.seed, progress=not args.quiet)
    print(f"{rep['n']} photos: verdict agreement {rep['verdict_agreement']}, per-reason agreement (lowest) "
          f"{rep['reason_agreement_min']}, {len(rep['disagreements'])} disagreements: {Path(args.out) / PARITY_MD}")
    return EXIT_OK


def cmd_gate_vectors(args) -> int:
    from mobile_derm_export.gate_vectors import write_reference_vectors

    twin = _gate_twin_for(args, Path(args.out))
    for case in write_reference_vectors(twin, args.out):
        print(case)
    return EXIT_OK


def cmd_predict(args) -> int:
    from mobile_derm.app.predict import Predictor

    predictor = Predictor(args.model, num_threads=args.threads)
    results, any_error, any_rejected = [], False, False
    for image in args.images:
        try:
            prediction = predictor.predict(image, top_k=args.top_k, gate=not args.no_gate, force=args.force,
                                           gate_engine=args.gate_engine)
        except MobileDermError as exc:
            any_error = True
            print(f"error: {exc}", file=sys.stderr)
            results.append({"image": image, "error": exc.problem})
            continue
        any_rejected |= not prediction.classified
        results.append(prediction.to_dict())
    print(json.dumps(results, indent=2))  # a list, for one photo as for many
    return EXIT_ERROR if any_error else EXIT_REJECTED if any_rejected else EXIT_OK


def cmd_web_app(args) -> int:
    from mobile_derm.web_app import write_site

    site = write_site(args.models, args.out, args.variant)
    print(f"wrote {site} (serve it with: mobile-derm serve {site})")
    return EXIT_OK


def cmd_serve(args) -> int:
    from mobile_derm.web_app import SiteServer

    server = SiteServer(args.site, port=args.port)
    print(f"serving {args.site} at {server.url} (Ctrl-C stops)")
    server.serve_forever()
    return EXIT_OK


def cmd_web_agreement(args) -> int:
    from mobile_derm.web_agreement import collect_photos, degraded_photos, generated_non_skin, markdown, web_agreement

    out = Path(args.out)
    photos = collect_photos(args.photos, args.per_folder)
    if args.degraded:
        photos += degraded_photos(photos[: args.degraded], out / "photos" / "degraded")
    if args.non_skin:
        photos += generated_non_skin(out / "photos" / "non_skin", args.non_skin)
    summary = web_agreement(args.models, photos, out, args.variant)
    print((out / "web_agreement.md").read_text())
    return EXIT_OK if summary["errors"]["page"] == summary["errors"]["predict"] else EXIT_ERROR


def cmd_web_screenshots(args) -> int:
    from mobile_derm.web_agreement import screenshots

    photos = {kind: photo for kind, photo in (("accepted", args.accepted), ("rejected", args.rejected),
                                              ("unknown", args.unknown)) if photo}
    for kind, path in screenshots(args.site, photos, args.out).items():
        print(f"{kind:9s} {path}")
    return EXIT_OK


def cmd_fuzz(args) -> int:
    from mobile_derm.evaluation.fuzz import markdown, run_fuzz, write_report

    if args.model and not Path(args.model).is_file():
        raise DataError(args.model, "model file not found")
    summary = run_fuzz(args.count, seed=args.seed, model=args.model, time_limit=args.time_limit,
                       memory_limit_mb=args.memory_limit_mb)
    write_report(summary, args.out)
    print(markdown(summary))
    return EXIT_OK if summary["passed"] else EXIT_ERROR


class _GateClassifier:
    """A Predictor as the gate evaluation (``mobile_derm_quality`` gate_eval's ``predictor``)
    asks for it: ``info.labels``, ``predict(rgb) -> (probabilities, unfamiliarity)`` and
    ``explain(probabilities, unfamiliarity=...)["abstained"]``. The gate package never
    imports mobile_derm; the composition happens here."""

    def __init__(self, predictor):
        self.info = predictor.info
        self.predict = predictor.scores
        self.explain = predictor.explain


def cmd_gate_eval(args) -> int:
    """``gate-eval`` with ``--model``: the gate's evaluation, plus the classifier's accuracy
    on accepted and rejected photos."""
    from mobile_derm_quality import cli as quality_cli

    predictor = None
    if args.model:
        from mobile_derm.app.predict import Predictor

        predictor = _GateClassifier(Predictor(args.model, num_threads=1))
    return quality_cli.cmd_gate_eval(args, predictor=predictor)


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from mobile_derm import __version__
    from mobile_derm_export.convert import DEFAULT_VARIANTS

    common = [verbose_option()]
    parser = argparse.ArgumentParser(prog="mobile-derm", description=__doc__.splitlines()[0], parents=common,
                                     epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"mobile-derm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", parents=common, epilog=EXIT_CODES, help="whole pipeline on generated demo data")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--variants", help=f"comma-separated (default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--tiny", action="store_true", help="a seconds-long version (used by the tests)")
    p.add_argument("--random-weights", action="store_true", help="allow random init if the ImageNet weights extra is missing")
    p.set_defaults(func=cmd_demo)

    def distribution_args(p):
        from mobile_derm.training.distribute import BATCH_RULES, STRATEGIES

        p.add_argument("--distribute", choices=STRATEGIES, default="none",
                       help="where fine-tuning runs: one device (none, the default), every local GPU (mirrored), or "
                            "the hosts in TF_CONFIG (multi_worker: the same command on each; the chief writes the "
                            "run); docs/distributed.md")
        p.add_argument("--batch-rule", choices=BATCH_RULES, default="global",
                       help="global (default): batch_size is the global batch, the learning rate as written; "
                            "per_replica: batch_size per replica, global batch and learning rate x replicas")
        p.add_argument("--mixed-precision", action="store_true",
                       help="fine-tune in float16 with float32 weights (pays on a GPU only; docs/distributed.md)")
        p.add_argument("--xla", action="store_true", help="compile the fine-tuning step with XLA (jit_compile)")

    def data_args(p):
        p.add_argument("--data", required=True, help="preset (ham10000, pad_ufes20, derm7pt, sd198), labels CSV, class "
                                                     "folders, or a folder of TFRecord shards (a path or gs://...)")
        p.add_argument("--data-root", help="folder holding the presets (default $MOBILE_DERM_DATA or ../shared/data)")

    p = sub.add_parser("train", parents=common, epilog=EXIT_CODES, help="train a classifier (head first, then fine-tune; resumes if killed)")
    data_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="TrainConfig JSON file")
    p.add_argument("--backbone")
    p.add_argument("--input-size", type=positive_int)
    p.add_argument("--finetune-epochs", type=whole_number, help="fine-tuning epochs (TrainConfig.finetune_epochs)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--seed", type=whole_number)
    p.add_argument("--logit-adjustment", metavar="TAU|validation",
                   help="after training, shift the logits by -tau*log(prior) ('validation': tau chosen there); "
                        "re-running on a finished run only redoes this step")
    p.add_argument("--test-time-views", choices=list(VIEW_SETS),
                   help="average predictions over flipped/turned copies of the photo, in evaluation and in the "
                        "exported models (default none; re-running on a finished run only redoes the evaluation)")
    p.add_argument("--taxonomy", help="taxonomy JSON for your labels (default: the shipped one)")
    p.add_argument("--random-weights", action="store_true")
    distribution_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", parents=common, epilog=EXIT_CODES, help="grouped k-fold cross-validation (mean and spread over folds)")
    data_args(p)
    p.add_argument("--out", required=True, help="folder for the fold runs and crossval.json/.md")
    p.add_argument("--config", help="TrainConfig JSON file")
    p.add_argument("--folds", type=number_type(int, 3, False, "a whole number >= 3"), default=5,
                   help="k: each fold tests on one part, validates on the next, trains on the rest (default %(default)s)")
    p.add_argument("--export", metavar="VARIANTS",
                   help="then export each fold (e.g. float32,int8) into fold<k>/models and pool the files' test "
                        "figures (crossval_exported.json/.md); re-running on a finished crossval only evaluates and exports")
    p.add_argument("--external", nargs="+", metavar="SET",
                   help="with --export: score each fold's int8 file (what an app ships) on these data sets too (e.g. sd198)")
    p.add_argument("--taxonomy", help="taxonomy JSON for your labels (default: the shipped one)")
    p.add_argument("--random-weights", action="store_true")
    distribution_args(p)
    p.set_defaults(func=cmd_crossval)

    from mobile_derm.datasets.shards import DEFAULT_IMAGES_PER_SHARD

    p = sub.add_parser("write-shards", parents=common, epilog=EXIT_CODES,
                       help="write a data set as TFRecord shards (train from them with --data FOLDER; docs/distributed.md)")
    data_args(p)
    p.add_argument("--out", required=True, help="new folder for the shards: a path, or a URL TensorFlow opens (gs://...)")
    p.add_argument("--images-per-shard", type=positive_int, default=DEFAULT_IMAGES_PER_SHARD,
                   help="images per shard file (default %(default)s; a cluster wants many more files than workers)")
    p.add_argument("--seed", type=whole_number, default=0, help="seed of the random order images are written in")
    p.set_defaults(func=cmd_write_shards)

    p = sub.add_parser("export", parents=common, epilog=EXIT_CODES, help="convert a run to .tflite variants with metadata")
    p.add_argument("run", help="training run folder")
    data_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated, qat_int8 too (default %(default)s)")
    p.add_argument("--io-type", default="uint8", choices=["uint8", "int8"])
    p.add_argument("--qat-epochs", type=positive_int, default=2, help="epochs of quantization-aware distillation (default 2: one left balanced accuracy 1.9 points below float, two 0.6)")
    p.add_argument("--qat-learning-rate", type=positive_float, default=1e-5, help="Adam learning rate for it (default 1e-5)")
    p.add_argument("--gate-config", metavar="CONFIG.json",
                   help="quality-gate config to pack into the models instead of the run's ('default': this version's built-in)")
    p.set_defaults(func=cmd_export)

    from mobile_derm_export.benchmark import BYO_MEAN, BYO_STD

    p = sub.add_parser("benchmark", parents=common, epilog=EXIT_CODES, help="accuracy / size / latency of every exported variant, or of any .tflite files",
                       description="With RUN: every <variant>.tflite in the --models folder on the run's test split, "
                                   "against the Keras model. Without RUN: any .tflite files (--models A.tflite "
                                   "B.tflite ...) on every image of a labelled --data folder or CSV, against a "
                                   "float reference among them.")
    p.add_argument("run", nargs="?", help="training run folder (leave out for models brought from elsewhere)")
    data_args(p)
    p.add_argument("--models", required=True, nargs="+",
                   help="with RUN: the folder with <variant>.tflite files; without: .tflite files (or folders of them)")
    p.add_argument("--out", help="where benchmark.json/.md/.png go (default: the (first) models folder)")
    p.add_argument("--reference", metavar="FILE.tflite",
                   help="without RUN: the float model the others are compared with (default: the first with a "
                        "float32 input)")
    p.add_argument("--labels", metavar="labels.txt",
                   help="without RUN: class names in output order, one per line, for models whose metadata has none")
    p.add_argument("--mean", type=float, nargs="+",
                   help=f"without RUN: input normalization (pixel - mean) / std for models whose metadata gives "
                        f"none; one number or three (default {BYO_MEAN[0]}, with --std {BYO_STD[0]}: inputs in [-1, 1])")
    p.add_argument("--std", type=positive_float, nargs="+", help=f"see --mean (default {BYO_STD[0]})")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("evaluate", parents=common, epilog=EXIT_CODES,
                       help="external validation: a run or an exported .tflite on another data set, its labels "
                            "mapped through the taxonomy (reporting only)")
    p.add_argument("model", metavar="RUN|MODEL.tflite", help="a training run folder (Keras) or an exported file (LiteRT)")
    data_args(p)
    p.add_argument("--out", help="where external.json/.md go (default: external_<data> beside the model)")
    p.add_argument("--taxonomy", help="taxonomy JSON with the label mapping (counts_as; default: the shipped one)")
    p.set_defaults(func=cmd_evaluate)

    from mobile_derm.evaluation.other_sets import DEFAULT_SETS

    p = sub.add_parser("ood-eval", parents=common, epilog=EXIT_CODES, help="how often a run abstains (softmax, feature familiarity) on its test split and other image sets")
    p.add_argument("run", help="training run folder")
    data_args(p)
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help=f"presets or folders to score (default: {' '.join(DEFAULT_SETS)})")
    p.add_argument("--models", nargs="*", help="exported .tflite files to score the same way (their own outputs, LiteRT)")
    p.add_argument("--out", help="where ood_eval.json/.md/.png go (default: RUN/ood_eval)")
    p.set_defaults(func=cmd_ood_eval)

    p = sub.add_parser("capture-robustness", parents=common, epilog=EXIT_CODES,
                       help="what each phone-capture failure costs an exported model, on its run's validation photos")
    p.add_argument("run", help="the training run folder the model was exported from (its split.json)")
    data_args(p)
    p.add_argument("--model", required=True, help="the exported .tflite to score (LiteRT, its own decision rule)")
    p.add_argument("--n", type=positive_int, help="validation photos to use (default: all), drawn with --seed")
    p.add_argument("--seed", type=whole_number, default=0, help="photo draw and phone-capture parameters (default 0)")
    p.add_argument("--out", help="where capture_robustness.json/.md go (default: capture_robustness beside the model)")
    p.set_defaults(func=cmd_capture_robustness)

    p = sub.add_parser("fit-skin-check", parents=common, epilog=EXIT_CODES, help="fit the learned not-skin check (ImageNet Lite0 + one-class model) on good skin photos")
    p.add_argument("--out", required=True, help="folder for skin_check.tflite and its gate_config.json")
    p.add_argument("--photos", help="folder of good skin photos (default: the fit half of the skin sets under --data-root)")
    p.add_argument("--data-root", help="folder holding the data sets (default $MOBILE_DERM_DATA or ../shared/data)")
    p.add_argument("--float-backbone", action="store_true",
                   help="keep the backbone in float32 (default: int8 convolutions, float head; about 1 ms faster)")
    p.set_defaults(func=cmd_fit_skin_check)

    from mobile_derm_quality.cli import GATE_ENGINES

    def gate_model_args(p):
        p.add_argument("--gate-model", metavar="gate.tflite", help="an existing gate.tflite (default: build one)")
        p.add_argument("--gate-config", metavar="CONFIG.json", help="build gate.tflite from this gate config "
                                                                    "(default: the built-in one)")

    p = sub.add_parser("export-gate", parents=common, epilog=EXIT_CODES,
                       help="build gate.tflite, the quality gate as a TFLite model (builtin ops; docs/gate.md)")
    p.add_argument("--gate-config", metavar="CONFIG.json", help="gate config (default: the built-in one)")
    p.add_argument("--out", required=True, help="folder for gate.tflite")
    p.set_defaults(func=cmd_export_gate)

    p = sub.add_parser("gate-parity", parents=common, epilog=EXIT_CODES,
                       help="the OpenCV gate vs gate.tflite on clean and degraded photos (gate_parity.json/.md)")
    gate_model_args(p)
    p.add_argument("--data-root", help="folder holding the photo sets (default $MOBILE_DERM_DATA or ../shared/data)")
    p.add_argument("--per-set", type=positive_int, default=60, help="photos per set (default %(default)s)")
    p.add_argument("--variants", type=whole_number, default=8,
                   help="degraded copies per photo, taken in turn from every degradation and severity (default %(default)s)")
    p.add_argument("--synthetic", type=whole_number, default=0, metavar="N",
                   help="N generated photos instead of the data sets (no data needed)")
    p.add_argument("--seed", type=whole_number, default=0)
    p.add_argument("--out", default="runs/gate_parity", help="report folder (default %(default)s)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_gate_parity)

    p = sub.add_parser("gate-vectors", parents=common, epilog=EXIT_CODES,
                       help="reference inputs and outputs of gate.tflite on generated photos, for app ports")
    gate_model_args(p)
    p.add_argument("--out", required=True, help="folder for the vectors")
    p.set_defaults(func=cmd_gate_vectors)

    p = sub.add_parser("predict", parents=common, epilog=EXIT_CODES, help="classify photos with a .tflite (LiteRT only), JSON out")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--top-k", type=positive_int, default=3, help="how many labels to list (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1, help="LiteRT threads (default %(default)s)")
    p.add_argument("--force", action="store_true", help="classify even when the quality gate rejects")
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate")
    p.add_argument("--gate-engine", choices=GATE_ENGINES, default="opencv",
                   help="opencv (default, the reference) or tflite: gate.tflite beside the model, on LiteRT")
    p.set_defaults(func=cmd_predict)

    from mobile_derm.web_app import DEFAULT_VARIANT

    p = sub.add_parser("web-app", parents=common, epilog=EXIT_CODES,
                       help="write the reference on-device web app (static site, LiteRT.js) for an exported model")
    p.add_argument("--models", required=True, help="folder of exported models (export --out)")
    p.add_argument("--out", required=True, help="site folder to write (replaced if it holds an earlier site)")
    p.add_argument("--variant", default=DEFAULT_VARIANT, help="which <variant>.tflite the page runs (default %(default)s)")
    p.set_defaults(func=cmd_web_app)

    p = sub.add_parser("serve", parents=common, epilog=EXIT_CODES, help="serve a web-app site on localhost")
    p.add_argument("site", help="folder written by web-app")
    p.add_argument("--port", type=whole_number, default=8000, help="port on 127.0.0.1 (default %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("web-agreement", parents=common, epilog=EXIT_CODES,
                       help="the web app in headless Chromium vs predict on the same photos, and its timings "
                            "(web_agreement.json/.md)")
    p.add_argument("--models", required=True, help="folder of exported models")
    p.add_argument("--photos", required=True, nargs="+", help="photo files or folders (searched recursively)")
    p.add_argument("--per-folder", type=positive_int, default=60, help="photos taken from each folder, evenly spaced (default %(default)s)")
    p.add_argument("--degraded", type=whole_number, default=0, help="also a degraded copy of the first N photos (default %(default)s)")
    p.add_argument("--non-skin", type=whole_number, default=0, help="also N generated non-skin images (default %(default)s)")
    p.add_argument("--variant", default=DEFAULT_VARIANT, help="which <variant>.tflite (default %(default)s)")
    p.add_argument("--out", required=True, help="folder for the site, the generated photos and the report")
    p.set_defaults(func=cmd_web_agreement)

    p = sub.add_parser("web-screenshots", parents=common, epilog=EXIT_CODES,
                       help="phone-viewport (360 px) screenshots of a web-app site's results")
    p.add_argument("site", help="folder written by web-app")
    p.add_argument("--accepted", help="a photo the page classifies")
    p.add_argument("--rejected", help="a photo the page refuses or its gate rejects")
    p.add_argument("--unknown", help="a photo the page answers 'unknown' for")
    p.add_argument("--out", required=True, help="folder for web_app_<kind>.png")
    p.set_defaults(func=cmd_web_screenshots)

    from mobile_derm.evaluation.fuzz import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIME_LIMIT_S

    p = sub.add_parser("fuzz", parents=common, epilog=EXIT_CODES,
                       help="malformed and adversarial files through decode -> gate -> predict: crashes, hangs, "
                            "tracebacks, time and memory (fuzz.json / fuzz.md)")
    p.add_argument("--out", required=True, help="folder for fuzz.json and fuzz.md")
    p.add_argument("--model", metavar="FILE.tflite", help="classifier behind the gate (default: decode and gate only)")
    p.add_argument("--count", type=positive_int, default=10_000, help="inputs to generate (default %(default)s)")
    p.add_argument("--seed", type=whole_number, default=0)
    p.add_argument("--time-limit", type=positive_float, default=DEFAULT_TIME_LIMIT_S,
                   help="seconds per input before it counts as a hang (default %(default)s)")
    p.add_argument("--memory-limit-mb", type=positive_float, default=DEFAULT_MEMORY_LIMIT_MB,
                   help="peak resident memory per input, also the worker's allocation cap (default %(default)s)")
    p.set_defaults(func=cmd_fuzz)

    from mobile_derm_quality import cli as quality_cli

    gate_parsers = quality_cli.register(sub, parents=common)
    # the gate CLI runs standalone without the classifier; here gate-eval can also score one
    gate_parsers["gate-eval"].add_argument("--model", metavar="FILE.tflite",
                                           help="also report the classifier's accuracy on accepted/rejected photos")
    gate_parsers["gate-eval"].set_defaults(func=cmd_gate_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
