"""What each variant costs on your data: accuracy, agreement, size, latency.

Every number is measured in the run that prints it: the Keras float model and
each .tflite on the same test images, latency on LiteRT with batch 1.
Writes benchmark.json, benchmark.md (the table) and benchmark.png.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mobile_derm.evaluation.report import evaluate_probs
from mobile_derm.io_utils import atomic_path, atomic_write_text
from mobile_derm.app.model_info import ModelInfo

TABLE_COLUMNS = ("top1", "top3", "balanced_accuracy", "malignancy_auc", "ece", "agreement_with_float",
                 "size_bytes", "latency_ms_p50", "latency_ms_p95", "latency_ms_p50_2threads", "latency_vs_float32")


LATENCY_RUNS = 200  # rounds per thread setting; cut into LATENCY_BLOCKS for the ratio's spread
LATENCY_BLOCKS = 5


def interleaved_times_ms(model_paths: dict[str, str | Path], num_threads: int, runs: int = LATENCY_RUNS,
                         warmup: int = 5) -> dict[str, np.ndarray]:
    """Single-image invoke times on LiteRT for each model, timed in rounds (one
    invoke of every model per round) so that a slow spell of the machine --
    frequency scaling, another process -- lands on every variant alike and the
    ratios between them stay fair. Timing the variants one after another let such a
    spell alone move the int8/float32 ratio by 0.1. Row i of every model is round i."""
    from mobile_derm.app.predict import Predictor

    timed = []
    for name, path in model_paths.items():
        predictor = Predictor(path, num_threads=num_threads)
        x = predictor.input_tensor(np.full((predictor.info.input_size,) * 2 + (3,), 128, np.uint8))
        timed.append((name, predictor.interpreter, predictor._input["index"], x, []))
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


def latency_columns(model_paths: dict[str, str | Path], runs: int = LATENCY_RUNS) -> dict[str, dict]:
    """The benchmark tables' latency columns for each model: p50 and p95 on one
    thread, p50 on two, each set timed interleaved across all the models; with a
    float32 model among them, every model's one-thread p50 as a fraction of its
    p50, overall and per block of rounds."""
    one_thread = interleaved_times_ms(model_paths, 1, runs)
    two_threads = interleaved_times_ms(model_paths, 2, runs)
    columns = {name: {"latency_ms_p50": float(np.percentile(one_thread[name], 50)),
                      "latency_ms_p95": float(np.percentile(one_thread[name], 95)),
                      "latency_ms_p50_2threads": float(np.percentile(two_threads[name], 50))}
               for name in model_paths}
    if "float32" in model_paths:
        for name in model_paths:
            by_block = ratio_by_block(one_thread[name], one_thread["float32"])
            columns[name]["latency_vs_float32"] = columns[name]["latency_ms_p50"] / columns["float32"]["latency_ms_p50"]
            columns[name]["latency_vs_float32_by_block"] = by_block
    return columns


def tflite_probs(model_path: str | Path, pixels: np.ndarray, progress: bool = True) -> np.ndarray:
    from mobile_derm.app.predict import Predictor

    predictor = Predictor(model_path, num_threads=2)
    name = Path(model_path).stem
    return np.stack([predictor.predict_probs(p) for p in tqdm(pixels, desc=f"eval {name}", disable=not progress, leave=False)])


def run_benchmark(info: ModelInfo, test_pixels: np.ndarray, y_test: np.ndarray, models: dict[str, Path],
                  out_dir: str | Path, keras_probs: np.ndarray | None = None, latency_runs: int = LATENCY_RUNS,
                  progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    reference = keras_probs.argmax(axis=1) if keras_probs is not None else None

    def summarise(probs, extra):
        report = evaluate_probs(probs, y_test, info)
        row = {k: report[k] for k in ("top1", "top3", "balanced_accuracy", "malignancy_auc", "ece")}
        row["n_test"] = int(len(y_test))
        if reference is not None:
            row["agreement_with_float"] = float(np.mean(probs.argmax(axis=1) == reference))
        row.update(extra)
        return row

    if keras_probs is not None:
        results["keras_float"] = summarise(keras_probs, {})
    for variant, path in models.items():
        results[variant] = summarise(tflite_probs(path, test_pixels, progress), {"size_bytes": Path(path).stat().st_size})
    for variant, columns in latency_columns(models, latency_runs).items():
        results[variant].update(columns)
    if "float32" in results and "int8" in results:
        results["int8"]["size_vs_float32"] = results["int8"]["size_bytes"] / results["float32"]["size_bytes"]
    document = {"model": info.name, "backbone": info.backbone, "input_size": info.input_size,
                "n_test": int(len(y_test)), "variants": results}
    atomic_write_text(out_dir / "benchmark.json", json.dumps(document, indent=2))
    atomic_write_text(out_dir / "benchmark.md", markdown_table(document))
    plot_benchmark(document, out_dir / "benchmark.png")
    return document


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
    lines = [f"Benchmark of {document['model']} ({document['backbone']} at {document['input_size']} px), "
             f"n_test = {document['n_test']}; latency in ms on LiteRT, batch 1; latency_vs_float32 is the "
             f"one-thread p50 over float32's (in brackets: lowest and highest of {LATENCY_BLOCKS} blocks of rounds).",
             "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in document["variants"].items():
        lines.append("| " + " | ".join([name] + [_fmt(row.get(c), c, row) for c in TABLE_COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def plot_benchmark(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {k: v for k, v in document["variants"].items() if "size_bytes" in v}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, row in rows.items():
        axes[0].scatter(row["size_bytes"] / 1e6, row["balanced_accuracy"])
        axes[0].annotate(name, (row["size_bytes"] / 1e6, row["balanced_accuracy"]), fontsize=8)
        axes[1].scatter(row["latency_ms_p50"], row["balanced_accuracy"])
        axes[1].annotate(name, (row["latency_ms_p50"], row["balanced_accuracy"]), fontsize=8)
    if "keras_float" in document["variants"]:
        for ax in axes:
            ax.axhline(document["variants"]["keras_float"]["balanced_accuracy"], ls="--", c="grey", label="keras_float")
            ax.legend(loc="lower right")
    axes[0].set_xlabel("file size (MB)")
    axes[1].set_xlabel("LiteRT latency p50, 1 thread (ms)")
    for ax in axes:
        ax.set_ylabel("balanced accuracy")
    fig.suptitle(f"{document['model']}: accuracy vs size vs latency")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def print_table(document: dict) -> None:
    print(markdown_table(document))
