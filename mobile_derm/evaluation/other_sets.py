"""How often does a trained run abstain, and on what? (``mobile-derm ood-eval``)

For the run's own test split (photos like its training photos) and for other image
sets (everyday photos that are not skin; skin photos of another kind), the share the
classifier declines to interpret, by each rule it has:

- ``softmax``: top probability below ``model_info.ood_threshold``;
- ``familiarity``: feature-space distance beyond ``familiarity.npz``'s threshold
  (``mobile_derm.model.familiarity``);
- ``either``.

Both thresholds keep the same fraction of validation photos, so the test split's
rates show what each costs on real input and the other sets what each catches.
Given exported ``.tflite`` files, the same rates from what they output (LiteRT):
the app's view, quantization included.
Writes ``ood_eval.json``, ``ood_eval.md`` and ``ood_eval.png``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_write_text
from mobile_derm_quality.files import pyplot, save_figure

DEFAULT_SETS = ("ood", "pad_ufes20", "sd198", "derm7pt")


def abstention_rates(low_confidence: np.ndarray, unfamiliar: np.ndarray) -> dict:
    """Share of images each rule abstains on, and their union (boolean arrays, one entry per image)."""
    low_confidence, unfamiliar = np.asarray(low_confidence, bool), np.asarray(unfamiliar, bool)
    n = len(low_confidence)
    return {
        "n": int(n),
        "softmax": float(np.mean(low_confidence)) if n else None,
        "familiarity": float(np.mean(unfamiliar)) if n else None,
        "either": float(np.mean(low_confidence | unfamiliar)) if n else None,
    }


def run_ood_eval(run_dir, test_dataset, other_sets: dict, out_dir, models: dict | None = None, progress: bool = True,
                 loaded: tuple | None = None) -> dict:
    """``test_dataset``: the run's dataset (its saved test split is used); ``other_sets``:
    name -> Dataset, every image of which is scored; ``models``: variant -> .tflite path;
    ``loaded``: the run's (model, config, info) if already in memory (``Classifier.ood_eval``)."""
    from mobile_derm.model import familiarity
    from mobile_derm.training.runs import dataset_pixels, load_run, run_arrays
    from mobile_derm.model.classifier import features_and_probs, view_averaged_probs

    run_dir = Path(run_dir)
    model, config, info = loaded or load_run(run_dir)
    familiar = familiarity.load_for_run(run_dir, info)
    if familiar is None:
        raise ConfigError(run_dir / "model_info.json", "records no familiarity model: run `mobile-derm train` again "
                                                       "on this run (it only redoes the final steps)")
    if info.ood_threshold is None:
        raise ConfigError(run_dir / "model_info.json", "has no ood_threshold")
    def score(pixels):
        feats, probs = features_and_probs(model, pixels, info.mean, info.std)
        # the softmax rule sees what the exported model returns (the photo as given is already scored)
        probs = view_averaged_probs(model, pixels, info.mean, info.std, info.test_time_views, as_given=probs)
        return probs.max(axis=1), familiar.distance(feats)

    pixels, _, split = run_arrays(test_dataset, run_dir, progress=progress)
    images = {f"{test_dataset.name} test split": pixels[np.asarray(split.test)]}
    for name, dataset in other_sets.items():
        images[name] = dataset_pixels(dataset, config.input_size, progress=progress)
    scores = {name: score(x) for name, x in images.items()}
    exported = {variant: {name: _tflite_rates(path, x, progress) for name, x in images.items()}
                for variant, path in (models or {}).items()}
    document = {
        "run": str(run_dir),
        "ood_threshold": info.ood_threshold,
        "familiarity_threshold": familiar.threshold,
        "keep_fraction_on_validation": familiar.keep_fraction,
        "sets": {name: abstention_rates(top < info.ood_threshold, dist > familiar.threshold)
                 for name, (top, dist) in scores.items()},
        "exported": exported,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ood_eval.json", json.dumps(document, indent=2))
    atomic_write_text(out_dir / "ood_eval.md", table(document) + "\n")
    _plot(scores, info.ood_threshold, familiar.threshold, out_dir / "ood_eval.png")
    return document


def _tflite_rates(path, pixels: np.ndarray, progress: bool) -> dict:
    """Abstention rates from an exported model's own outputs, decided by ``predict``'s
    rule (``Predictor.explain``'s abstain reasons), as an app would see them."""
    from tqdm import tqdm

    from mobile_derm.app.predict import Predictor

    predictor = Predictor(path, num_threads=2)
    if predictor.info.familiarity is None:
        raise ConfigError(path, "carries no unfamiliarity output (exported from a run without a familiarity model)")
    reasons = []
    for p in tqdm(pixels, desc=f"ood-eval {Path(path).stem}", disable=not progress, leave=False):
        probs, unfamiliarity = predictor.scores(p)
        reasons.append(predictor.explain(probs, unfamiliarity=unfamiliarity)["abstain_reasons"])
    return abstention_rates([("low_confidence" in r) for r in reasons], [("unfamiliar" in r) for r in reasons])


def table(document: dict) -> str:
    lines = ["| model | images | n | abstains by softmax | by familiarity | by either |", "|---|---|---|---|---|---|"]
    rows = [("Keras float", document["sets"])] + list(document.get("exported", {}).items())
    for model, sets in rows:
        for name, r in sets.items():
            lines.append(f"| {model} | {name} | {r['n']} | {r['softmax']:.3f} | {r['familiarity']:.3f} | {r['either']:.3f} |")
    return "\n".join(lines)


def _plot(scores: dict, ood_threshold: float, familiarity_threshold: float, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, (top, dist) in scores.items():
        axes[0].hist(top, bins=np.linspace(0, 1, 41), histtype="step", density=True, label=name)
        axes[1].hist(np.log10(np.maximum(dist, 1e-3)), bins=50, histtype="step", density=True, label=name)
    axes[0].axvline(ood_threshold, color="k", ls="--")
    axes[0].set_xlabel("top probability (abstain left of the line)")
    axes[1].axvline(np.log10(familiarity_threshold), color="k", ls="--")
    axes[1].set_xlabel("log10 feature distance (abstain right of the line)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
