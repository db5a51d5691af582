"""What each variant costs on your data: accuracy, agreement, size, latency.

Every number is measured in the run that prints it: the Keras float model and
each .tflite on the same test images, latency on LiteRT with batch 1
(``run_benchmark``, for a training run's exported variants). ``benchmark_files``
does the same for .tflite files brought from anywhere, on a labelled folder or CSV,
with one of them as the float reference. Both write benchmark.json, benchmark.md
(the table) and benchmark.png through ``write_benchmark``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mobile_derm.errors import ConfigError, DataError, ModelFileError
from mobile_derm.evaluation.report import evaluate_probs
from mobile_derm.io_utils import atomic_write_text
from mobile_derm_quality.files import pyplot, save_figure
from mobile_derm.app.model_info import ModelInfo

TABLE_COLUMNS = ("top1", "top3", "balanced_accuracy", "malignancy_auc", "ece", "agreement_with_float",
                 "abstention_agreement_with_float", "unfamiliar_agreement_with_float", "unfamiliarity_mae_vs_float",
                 "size_bytes", "latency_ms_p50", "latency_ms_p95", "latency_ms_p50_2threads", "latency_vs_float32")


LATENCY_RUNS = 200  # rounds per thread setting; cut into LATENCY_BLOCKS for the ratio's spread
LATENCY_BLOCKS = 5
KERAS_FLOAT = "keras_float"  # a training run's own float model: the row the exported variants agree with
# Normalization for brought models whose metadata gives none: (pixel - 127.5) / 127.5,
# i.e. inputs in [-1, 1], the TensorFlow Lite / Model Maker convention for image classifiers.
BYO_MEAN = (127.5, 127.5, 127.5)
BYO_STD = (127.5, 127.5, 127.5)


def _latency_runner(path: str | Path, num_threads: int):
    from mobile_derm.app.predict import LiteRTModel

    # the input's normalization does not change the work done: any will do for timing
    return LiteRTModel(path, BYO_MEAN, BYO_STD, num_threads=num_threads)


def interleaved_times_ms(model_paths: dict[str, str | Path], num_threads: int, runs: int = LATENCY_RUNS,
                         warmup: int = 5) -> dict[str, np.ndarray]:
    """Single-image invoke times on LiteRT for each model, timed in rounds (one
    invoke of every model per round) so that a slow spell of the machine --
    frequency scaling, another process -- lands on every variant alike and the
    ratios between them stay fair. Timing the variants one after another let such a
    spell alone move the int8/float32 ratio by 0.1. Row i of every model is round i.
    Needs no metadata: any .tflite taking one square RGB image will do."""
    timed = []
    for name, path in model_paths.items():
        runner = _latency_runner(path, num_threads)
        x = runner.input_tensor(np.full((runner.input_size,) * 2 + (3,), 128, np.uint8))
        timed.append((name, runner.interpreter, runner.input_detail["index"], x, []))
    for i in range(warmup + runs):
        for _, interp, index, x, times in timed:
            interp.set_tensor(index, x)
            start = time.perf_counter()
            interp.invoke()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return {name: np.asarray(times) for name, _, _, _, times in timed}


def ratio_by_block(times: np.ndarray, reference: np.ndarray, blocks: int = LATENCY_BLOCKS) -> list[float]:
    """p50(times) / p50(reference) within each of `blocks` consecutive stretches of
    rounds: the same ratio measured several times over, so one figure shows
    whether it holds across the machine's spells or only on average."""
    return [float(np.median(a) / np.median(b))
            for a, b in zip(np.array_split(times, blocks), np.array_split(reference, blocks))]


def latency_columns(model_paths: dict[str, str | Path], runs: int = LATENCY_RUNS,
                    reference: str | None = "float32") -> dict[str, dict]:
    """The benchmark tables' latency columns for each model: p50 and p95 on one
    thread, p50 on two, each set timed interleaved across all the models; with the
    ``reference`` model among them (our float32 variant, or the float model brought
    with others), every model's one-thread p50 as a fraction of its p50, overall and
    per block of rounds (column ``latency_vs_float32``)."""
    one_thread = interleaved_times_ms(model_paths, 1, runs)
    two_threads = interleaved_times_ms(model_paths, 2, runs)
    columns = {name: {"latency_ms_p50": float(np.percentile(one_thread[name], 50)),
                      "latency_ms_p95": float(np.percentile(one_thread[name], 95)),
                      "latency_ms_p50_2threads": float(np.percentile(two_threads[name], 50))}
               for name in model_paths}
    if reference in model_paths:
        for name in model_paths:
            by_block = ratio_by_block(one_thread[name], one_thread[reference])
            columns[name]["latency_vs_float32"] = columns[name]["latency_ms_p50"] / columns[reference]["latency_ms_p50"]
            columns[name]["latency_vs_float32_by_block"] = by_block
    return columns


def tflite_outputs(model, pixels: np.ndarray, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Label probabilities (first output) and unfamiliarity scores (second output, None
    for a model without one) of a ``.tflite`` for each image: ``model`` is a LiteRTModel,
    or the path of one of our files (normalization from its metadata)."""
    from mobile_derm.app.predict import LiteRTModel

    if not isinstance(model, LiteRTModel):
        from mobile_derm.app.model_file import read_model_info

        info = read_model_info(model)
        model = LiteRTModel(model, info.mean, info.std, num_threads=2)
    name = model.model_path.stem
    outputs = [model.run(p) for p in tqdm(pixels, desc=f"eval {name}", disable=not progress, leave=False)]
    probs = np.stack([o[0] for o in outputs]) if outputs else np.zeros((0, model.output_details[0]["shape"][-1]))
    unfamiliarity = np.array([float(o[1][0]) for o in outputs]) if len(model.output_details) > 1 else None
    return probs, unfamiliarity


def tflite_probs(model, pixels: np.ndarray, progress: bool = True) -> np.ndarray:
    """Label probabilities (first output) of a ``.tflite`` for each image (``tflite_outputs``)."""
    return tflite_outputs(model, pixels, progress)[0]


NON_SKIN_SET = "non_skin_generated"  # mobile_derm.model.familiarity.non_skin_images: made by code, always there
OOD_PRESET = "ood"  # the 50 everyday photos of ../shared/data/ood, when present
FLOAT_VARIANT = "float32"  # the exported float model: the reference for the abstention columns


def other_image_sets(input_size: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Photos that are not skin, as model-input pixels: generated ones always, and the
    data folder's ``ood`` set where it is present."""
    from mobile_derm.datasets.sources import PRESET_FOLDERS, data_root, load
    from mobile_derm.model.familiarity import non_skin_images
    from mobile_derm.training.runs import dataset_pixels

    sets = {NON_SKIN_SET: non_skin_images(input_size)}
    if (data_root() / PRESET_FOLDERS[OOD_PRESET] / "labels.csv").is_file():
        sets[OOD_PRESET] = dataset_pixels(load(OOD_PRESET), input_size, progress=progress)
    return sets


def abstentions(info: ModelInfo, probs: np.ndarray, unfamiliarity: np.ndarray | None) -> dict[str, np.ndarray]:
    """Whether an app abstains on each photo, by each of the model file's rules (as
    ``Predictor.explain``) and by either: ``low_confidence`` (top probability under
    ``ood_threshold``), ``unfamiliar`` (unfamiliarity score above ``familiarity["abstain_above"]``)."""
    rules = {}
    if info.ood_threshold is not None:
        rules["low_confidence"] = probs.max(axis=1) < info.ood_threshold
    if unfamiliarity is not None and info.familiarity:
        rules["unfamiliar"] = unfamiliarity > info.familiarity["abstain_above"]
    rules["either"] = np.logical_or.reduce([np.zeros(len(probs), bool), *rules.values()])
    return rules


def abstention_columns(infos: dict[str, ModelInfo], outputs: dict[str, dict[str, tuple]]) -> dict[str, dict]:
    """Each variant's abstention (by the rules of its own ModelInfo, ``infos[variant]``:
    each file carries thresholds chosen on its own outputs) against ``FLOAT_VARIANT``'s, photo by photo, on every set
    together: ``abstention_agreement_with_float`` (the decision by either rule),
    ``unfamiliar_agreement_with_float`` (the unfamiliarity rule alone: the softmax rule
    abstains on most non-skin photos too and would hide a broken score),
    ``unfamiliarity_mae_vs_float``; and per set (``abstention_by_set``, with the variant's
    abstain rates). ``outputs``: variant -> set name -> (probs, unfamiliarity) from ``tflite_outputs``."""
    if FLOAT_VARIANT not in outputs:
        return {}
    reference = outputs[FLOAT_VARIANT]
    columns = {}
    for variant, by_set in outputs.items():
        same: dict[str, list] = {}
        errors, per_set = [], {}
        for set_name, (probs, unfamiliarity) in by_set.items():
            ours = abstentions(infos[variant], probs, unfamiliarity)
            theirs = abstentions(infos[FLOAT_VARIANT], *reference[set_name])
            row = {"n": int(len(probs)), "abstain_rate": float(np.mean(ours["either"]))}
            for rule in [r for r in ours if r in theirs]:
                agree = ours[rule] == theirs[rule]
                same.setdefault(rule, []).append(agree)
                row["abstention_agreement_with_float" if rule == "either" else f"{rule}_agreement_with_float"] = \
                    float(np.mean(agree))
            if unfamiliarity is not None and reference[set_name][1] is not None:
                error = np.abs(unfamiliarity - reference[set_name][1])
                row["unfamiliar_rate"] = float(np.mean(ours["unfamiliar"]))
                row["unfamiliarity_mae_vs_float"] = float(np.mean(error))
                errors.append(error)
            per_set[set_name] = row
        columns[variant] = {"abstention_agreement_with_float": float(np.mean(np.concatenate(same["either"])))}
        if "unfamiliar" in same:
            columns[variant]["unfamiliar_agreement_with_float"] = float(np.mean(np.concatenate(same["unfamiliar"])))
        if errors:
            columns[variant]["unfamiliarity_mae_vs_float"] = float(np.mean(np.concatenate(errors)))
        columns[variant]["abstention_by_set"] = per_set
    return columns


def run_benchmark(info: ModelInfo, test_pixels: np.ndarray, y_test: np.ndarray, models: dict[str, Path],
                  out_dir: str | Path, keras_probs: np.ndarray | None = None, latency_runs: int = LATENCY_RUNS,
                  progress: bool = True, other_sets: dict[str, np.ndarray] | None = None) -> dict:
    """A training run's benchmark: the Keras float model (``keras_probs``, the
    reference for agreement) and each exported variant on the run's test split.
    Abstention (both rules) is compared with the float32 variant's photo by photo, on the
    test split and on ``other_sets`` (name -> pixels; default ``other_image_sets``: photos
    that are not skin, where an integer model that lost its unfamiliarity score shows it)."""
    if other_sets is None:
        other_sets = other_image_sets(info.input_size, progress)
    sets = {"test": test_pixels, **other_sets}
    outputs = {variant: {name: tflite_outputs(path, pixels, progress) for name, pixels in sets.items()}
               for variant, path in models.items()}
    probs = {} if keras_probs is None else {KERAS_FLOAT: keras_probs}
    probs.update({variant: by_set["test"][0] for variant, by_set in outputs.items()})
    document = {"model": info.name, "backbone": info.backbone, "input_size": info.input_size,
                "abstention_sets": {name: int(len(pixels)) for name, pixels in sets.items()}}
    # each file is judged by its own metadata's thresholds (export chooses them on its outputs)
    from mobile_derm.app.model_file import read_model_info

    infos = {variant: read_model_info(path) for variant, path in models.items()}
    return write_benchmark(document, info, probs, y_test, models, out_dir,
                           reference=KERAS_FLOAT if keras_probs is not None else None,
                           latency_reference="float32", latency_runs=latency_runs,
                           extra_columns=abstention_columns(infos, outputs), infos=infos)


def write_benchmark(document: dict, info: ModelInfo, probs: dict[str, np.ndarray], y_test: np.ndarray,
                    models: dict[str, Path], out_dir: str | Path, reference: str | None, latency_reference: str | None,
                    latency_runs: int = LATENCY_RUNS, extra_columns: dict[str, dict] | None = None,
                    infos: dict[str, ModelInfo] | None = None) -> dict:
    """One row per entry of ``probs`` (accuracy columns against ``y_test``, by the row's own
    ModelInfo in ``infos`` where given, else ``info``; agreement with ``reference``'s
    top-1), file size and latency for those in ``models``, and the ``extra_columns`` given per row; writes
    benchmark.json, .md and .png into ``out_dir`` and returns the document
    (``document``'s header fields plus ``n_test`` and ``variants``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agree_with = info.decide(probs[reference]) if reference is not None else None
    results: dict[str, dict] = {}
    for name, p in probs.items():
        report = evaluate_probs(p, y_test, (infos or {}).get(name, info))
        row = {k: report[k] for k in ("top1", "top3", "balanced_accuracy", "malignancy_auc", "ece")}
        row["n_test"] = int(len(y_test))
        if agree_with is not None:
            row["agreement_with_float"] = float(np.mean(info.decide(p) == agree_with))
        if name in models:
            row["size_bytes"] = Path(models[name]).stat().st_size
        results[name] = row
    for name, columns in latency_columns(models, latency_runs, latency_reference).items():
        results[name].update(columns)
    for name, columns in (extra_columns or {}).items():
        results[name].update(columns)
    if "float32" in results and "int8" in results:
        results["int8"]["size_vs_float32"] = results["int8"]["size_bytes"] / results["float32"]["size_bytes"]
    document = {**document, "n_test": int(len(y_test)), "variants": results}
    atomic_write_text(out_dir / "benchmark.json", json.dumps(document, indent=2))
    atomic_write_text(out_dir / "benchmark.md", markdown_table(document))
    plot_benchmark(document, out_dir / "benchmark.png")
    return document


def _standard_normalization(path: Path) -> tuple[list[float], list[float]] | None:
    """Mean and std from a .tflite's standard TFLite metadata (NormalizationOptions on
    the input tensor, as Model Maker writes), or None if it has none."""
    from mobile_derm_export.metadata import describe

    try:
        metadata = describe(path)["metadata"]
        for unit in metadata["subgraph_metadata"][0]["input_tensor_metadata"][0].get("process_units", []):
            options = unit.get("options", {})
            if "mean" in options and "std" in options:
                return options["mean"], options["std"]
    except (ModelFileError, KeyError, IndexError, TypeError):
        pass
    return None


def open_brought_model(path: str | Path, labels: list[str] | None = None, mean=None, std=None):
    """(LiteRTModel, labels, ModelInfo or None) for a .tflite from anywhere. Labels and
    normalization come from the file's metadata where it has them (ours: mobile_derm.json;
    standard TFLite metadata: labels.txt and NormalizationOptions), else from ``labels``
    and ``mean``/``std`` (default BYO_MEAN/BYO_STD)."""
    from mobile_derm.app.predict import LiteRTModel
    from mobile_derm.app.model_file import read_labels, read_model_info

    path = Path(path)
    try:
        info = read_model_info(path)
        labels, normalization = info.labels, (info.mean, info.std)
    except ModelFileError:
        info, normalization = None, _standard_normalization(path) if path.is_file() else None
        try:
            labels = read_labels(path)
        except ModelFileError:
            pass  # no packed labels.txt: the given ones
    model = LiteRTModel(path, *(normalization or (mean or BYO_MEAN, std or BYO_STD)), num_threads=2)
    if not labels:
        raise ConfigError(path, "has no labels in its metadata: give them with --labels labels.txt (one per line)")
    n_outputs = int(model.output_details[0]["shape"][-1])
    if n_outputs != len(labels):
        raise ModelFileError(path, f"outputs {n_outputs} scores but {len(labels)} labels are given for it")
    return model, list(labels), info


def benchmark_files(model_paths: list[str | Path], dataset, out_dir: str | Path, labels: list[str] | None = None,
                    mean=None, std=None, reference: str | Path | None = None, latency_runs: int = LATENCY_RUNS,
                    progress: bool = True) -> dict:
    """Benchmark .tflite files brought from anywhere (no training run of this package
    behind them) on every image of ``dataset``: the same rows and files as
    ``run_benchmark``, with ``reference`` (a path among ``model_paths``; default the
    first with a float32 input) in the role of the float model for agreement and latency."""
    from mobile_derm.training.runs import dataset_pixels

    paths = [Path(p) for p in model_paths]
    names = [p.stem for p in paths]
    twice = [p for i, p in enumerate(paths) if p.stem in names[:i]]
    if twice:
        raise ConfigError(twice[0], f"another of the models is also named {twice[0].stem!r}: rows are named by "
                                    "file name, so give files with different names")
    opened = {name: open_brought_model(path, labels, mean, std) for name, path in zip(names, paths)}
    label_lists = {name: model_labels for name, (_, model_labels, _) in opened.items()}
    first = names[0]
    for name, model_labels in label_lists.items():
        if model_labels != label_lists[first]:
            raise ConfigError(paths[names.index(name)], f"labels {model_labels} differ from {first}'s {label_lists[first]}")
    model_labels = label_lists[first]
    unknown = sorted(set(dataset.classes) - set(model_labels))
    if unknown:
        raise DataError(dataset.root, f"label(s) {', '.join(unknown)} are not among the models' labels ({', '.join(model_labels)})")
    if reference is None:
        floats = [name for name, (model, _, _) in opened.items() if model.float_input]
        if not floats:
            raise ConfigError(None, "no model with a float32 input to compare with: name one with --reference")
        reference_name = floats[0]
    else:
        matches = [n for n, p in zip(names, paths) if p.resolve() == Path(reference).resolve() or n == str(reference)]
        if not matches:
            raise ConfigError(reference, "the reference must be one of the --models files")
        reference_name = matches[0]

    y = np.array([model_labels.index(s.label) for s in dataset.samples], dtype=np.int64)
    pixels_by_size: dict[int, np.ndarray] = {}
    probs = {}
    for name, (model, _, _) in opened.items():
        if model.input_size not in pixels_by_size:
            pixels_by_size[model.input_size] = dataset_pixels(dataset, model.input_size, progress=progress)
        probs[name] = tflite_probs(model, pixels_by_size[model.input_size], progress)
    reference_model, _, info = opened[reference_name]
    info = info or next((i for _, _, i in opened.values() if i is not None), None) or _bare_info(
        reference_name, reference_model, model_labels)
    document = {"model": reference_name, "backbone": info.backbone, "input_size": reference_model.input_size,
                "data": dataset.name, "reference": reference_name}
    return write_benchmark(document, info, probs, y, dict(zip(names, paths)), out_dir, reference=reference_name,
                           latency_reference=reference_name, latency_runs=latency_runs)


def _bare_info(name: str, model, labels: list[str]) -> ModelInfo:
    """A ModelInfo for models without ours: the shipped taxonomy's entries for the labels
    it knows (so malignancy and treatment columns exist where they can)."""
    from mobile_derm.taxonomy import Taxonomy

    taxonomy = Taxonomy.load()
    return ModelInfo(name=name, version="", backbone="unknown", input_size=model.input_size, mean=model.mean,
                     std=model.std, labels=labels,
                     taxonomy={l: taxonomy.entries[l].to_dict() for l in labels if l in taxonomy})


def _fmt(value, column, row=None):
    if value is None:
        return "-"
    if column == "latency_vs_float32":  # overall, then the lowest and highest block
        blocks = (row or {}).get("latency_vs_float32_by_block")
        return f"{value:.3f}" + (f" ({min(blocks):.3f}-{max(blocks):.3f})" if blocks else "")
    if column == "size_bytes":
        return f"{value / 1e6:.2f} MB"
    if column.startswith("latency"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(document: dict) -> str:
    header = ["variant", *TABLE_COLUMNS]
    # a training run's table compares with its Keras model and float32 variant; brought models with the reference
    reference = document.get("reference")
    lines = [f"Benchmark of {document['model']} ({document['backbone']} at {document['input_size']} px), "
             f"n_test = {document['n_test']}; latency in ms on LiteRT, batch 1; latency_vs_float32 is the "
             f"one-thread p50 over {reference or 'float32'}'s (in brackets: lowest and highest of {LATENCY_BLOCKS} "
             f"blocks of rounds)" + (f"; agreement_with_float: same top-1 as {reference}." if reference else ".")
             + (f" abstention_agreement_with_float: same abstain/answer decision as {FLOAT_VARIANT} (either rule) on "
                + ", ".join(f"{k} ({v})" for k, v in document["abstention_sets"].items())
                + "; unfamiliar_agreement_with_float: the same for the unfamiliarity rule alone; "
                  "unfamiliarity_mae_vs_float: mean |score - float32's| there."
                if "abstention_sets" in document else ""),
             "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in document["variants"].items():
        lines.append("| " + " | ".join([name] + [_fmt(row.get(c), c, row) for c in TABLE_COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def plot_benchmark(document: dict, path: Path) -> None:
    plt = pyplot()

    rows = {k: v for k, v in document["variants"].items() if "size_bytes" in v}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, row in rows.items():
        axes[0].scatter(row["size_bytes"] / 1e6, row["balanced_accuracy"])
        axes[0].annotate(name, (row["size_bytes"] / 1e6, row["balanced_accuracy"]), fontsize=8)
        axes[1].scatter(row["latency_ms_p50"], row["balanced_accuracy"])
        axes[1].annotate(name, (row["latency_ms_p50"], row["balanced_accuracy"]), fontsize=8)
    if KERAS_FLOAT in document["variants"]:
        for ax in axes:
            ax.axhline(document["variants"][KERAS_FLOAT]["balanced_accuracy"], ls="--", c="grey", label=KERAS_FLOAT)
            ax.legend(loc="lower right")
    axes[0].set_xlabel("file size (MB)")
    axes[1].set_xlabel("LiteRT latency p50, 1 thread (ms)")
    for ax in axes:
        ax.set_ylabel("balanced accuracy")
    fig.suptitle(f"{document['model']}: accuracy vs size vs latency")
    fig.tight_layout()
    save_figure(fig, path)


def print_table(document: dict) -> None:
    print(markdown_table(document))
