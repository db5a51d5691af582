"""What does each phone-capture failure cost a classifier? (``mobile-derm capture-robustness``)

Each photo of a run's validation split (the model's own domain; the test split stays sealed), read from its file
at its own size, is made into one "acceptable" and one "retake" sample of every category of
``mobile_derm_quality.phone_capture`` (its fit parameter ranges: the held-out ones stay for the gate's report), and
an exported ``.tflite`` classifies the photo and its samples as the app does (LiteRT, the file's own decision rule).
Per category and label: accuracy on the samples beside the same photos clean, the gap in points, the paired counts
behind it (lost: right clean, wrong degraded; gained: the reverse) and McNemar's exact p.

Why: gate-eval's classifier link holds the shipped pair to "within 3 points on what the gate accepts", and the
gate is built to pass the suite's "acceptable" samples. Where the classifier already fails on those, no gate
closes the gap; the training recipe has to (and a recipe is chosen on validation, by this table).
Writes ``capture_robustness.json`` and ``capture_robustness.md``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.io_utils import atomic_write_text
from mobile_derm_quality import phone_capture
from mobile_derm_quality.gate_eval import paired_sign_test, wilson_interval

SPLIT = "fit"  # phone_capture's parameter ranges used here; "held_out" is kept for gate-eval's report


def _paired(right_clean: list[bool], right_degraded: list[bool]) -> dict:
    n = len(right_clean)
    lost = sum(c and not d for c, d in zip(right_clean, right_degraded))
    gained = sum(d and not c for c, d in zip(right_clean, right_degraded))
    k = sum(right_degraded)
    return {"n": n, "accuracy": round(k / n, 4) if n else None, "accuracy_ci95": wilson_interval(k, n),
            "gap": round((lost - gained) / n, 4) if n else None, "lost": lost, "gained": gained,
            "p": paired_sign_test(lost, gained)}


def capture_robustness(classify, images: list[np.ndarray], labels: list[str], *, seed: int = 0,
                       progress: bool = True) -> dict:
    """``classify(rgb) -> label`` on ``images`` (RGB uint8) and on one 'acceptable' and one 'retake' sample of
    each of them per phone-capture category; ``labels``: the right answers. Each category and label draws its
    parameters from its own generator (seeded by ``seed``, the category's and the label's index), so adding a
    category leaves the others' samples as they were."""
    from tqdm import tqdm

    right_clean = [classify(img) == y for img, y in zip(images, labels)]
    by_category = {}
    cells = [(c, label) for c in phone_capture.CATEGORIES for label in phone_capture.LABELS]
    for category, label in tqdm(cells, desc="capture-robustness", disable=not progress):
        rng = np.random.default_rng([seed, list(phone_capture.CATEGORIES).index(category),
                                     phone_capture.LABELS.index(label)])
        right = [classify(phone_capture.sample(img, category, SPLIT, rng, label=label)[0]) == y
                 for img, y in zip(images, labels)]
        by_category.setdefault(category, {})[label] = _paired(right_clean, right)
    k = sum(right_clean)
    return {"n": len(images), "seed": seed, "split": SPLIT,
            "clean_accuracy": round(k / len(images), 4) if images else None,
            "clean_accuracy_ci95": wilson_interval(k, len(images)), "by_category": by_category}


def markdown(report: dict) -> str:
    L = [f"# Capture robustness: {report.get('model', 'classifier')}", "",
         f"{report['n']} photos ({report.get('photos', 'given')}), clean top-1 {report['clean_accuracy']} "
         f"{report['clean_accuracy_ci95']}; phone-capture samples from the '{report['split']}' parameter ranges, seed "
         f"{report['seed']}. Gap = clean minus degraded accuracy on the same photos, in points; lost / gained: right "
         "clean and wrong degraded / the reverse; p: McNemar's exact test that lost and gained are equally likely.", "",
         "| category | 'acceptable': accuracy | gap | lost / gained | p | 'retake': accuracy | gap | lost / gained | p |",
         "|---|---|---|---|---|---|---|---|---|"]
    for category, by_label in report["by_category"].items():
        cells = []
        for label in phone_capture.LABELS:
            r = by_label[label]
            cells += [str(r["accuracy"]), f"{100 * r['gap']:.1f}", f"{r['lost']} / {r['gained']}", str(r["p"])]
        L.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def run_capture_robustness(run_dir: str | Path, data, model_file: str | Path, out: str | Path, *, n: int | None = None,
                           seed: int = 0, progress: bool = True) -> dict:
    """The table for ``model_file`` (an exported .tflite) on ``n`` photos (all when None) of the validation split
    of the run in ``run_dir``, trained on ``data`` (a Dataset). Writes the JSON and Markdown into ``out``."""
    from mobile_derm.app.predict import Predictor
    from mobile_derm.errors import DataError
    from mobile_derm.training.runs import photo_pixels, run_labels

    predictor = Predictor(model_file, num_threads=1)  # first: a wrong file fails before the photos are read
    y, split = run_labels(data, run_dir)
    val = np.asarray(split.val, dtype=np.int64)
    if val.size == 0:
        raise DataError(run_dir, "the run's split has no validation photos (a cross-validation fold?)")
    if n is not None and n < val.size:
        val = np.sort(np.random.default_rng(seed).permutation(val)[:n])
    names = list(data.classes)

    def classify(rgb: np.ndarray) -> str:  # the label the file's decision rule ranks first, as the app shows it
        return predictor.predict(rgb, top_k=1, gate=False).top_k[0]["label"]

    # each photo at its own size, as taken: the failures happen at capture, before the app shrinks the photo
    report = capture_robustness(classify, [photo_pixels(data, i) for i in val], [names[y[i]] for i in val],
                                seed=seed, progress=progress)
    report = {"model": str(model_file), "run": str(run_dir), "photos": f"validation split of {data.name}", **report}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "capture_robustness.json", json.dumps(report, indent=1))
    atomic_write_text(out / "capture_robustness.md", markdown(report))
    return report
