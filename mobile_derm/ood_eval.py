"""How often does a trained run abstain, and on what? (``mobile-derm ood-eval``)

For the run's own test split (photos like its training photos) and for other image
sets (everyday photos that are not skin; skin photos of another kind), the share the
classifier declines to interpret, by each rule it has:

- ``softmax``: top probability below ``model_info.ood_threshold``;
- ``familiarity``: feature-space distance beyond ``familiarity.npz``'s threshold
  (``mobile_derm.familiarity``);
- ``either``.

Both thresholds keep the same fraction of validation photos, so the test split's
rates show what each costs on real input and the other sets what each catches.
Writes ``ood_eval.json``, ``ood_eval.md`` and ``ood_eval.png``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_path, atomic_write_text

DEFAULT_SETS = ("ood", "pad_ufes20", "sd198", "derm7pt")


def abstention_rates(top_prob: np.ndarray, distance: np.ndarray, ood_threshold: float, familiarity_threshold: float) -> dict:
    softmax = top_prob < ood_threshold
    familiar = distance > familiarity_threshold
    return {
        "n": int(len(top_prob)),
        "softmax": float(np.mean(softmax)) if len(top_prob) else None,
        "familiarity": float(np.mean(familiar)) if len(top_prob) else None,
        "either": float(np.mean(softmax | familiar)) if len(top_prob) else None,
    }


def run_ood_eval(run_dir, test_dataset, other_sets: dict, out_dir, progress: bool = True) -> dict:
    """``test_dataset``: the run's dataset (its saved test split is used); ``other_sets``:
    name -> Dataset, every image of which is scored."""
    from mobile_derm import familiarity
    from mobile_derm.tf_setup import keras
    from mobile_derm.train import dataset_pixels, feature_extractor, load_run, predict_probs, run_arrays

    run_dir = Path(run_dir)
    fam_file = run_dir / familiarity.FILENAME
    if not fam_file.is_file():
        raise ConfigError(fam_file, "not found: run `mobile-derm train` again on this run (it only redoes the final steps)")
    familiar = familiarity.FamiliarityModel.load(fam_file)
    model, config, info = load_run(run_dir)
    if info.ood_threshold is None:
        raise ConfigError(run_dir / "model_info.json", "has no ood_threshold")
    both = keras.Model(model.input, [feature_extractor(model).output, model.output])

    def score(pixels):
        feats, probs = predict_probs(both, pixels, info.mean, info.std)  # a two-output model: both arrays
        return probs.max(axis=1), familiar.distance(feats)

    pixels, _, split = run_arrays(test_dataset, run_dir, progress=progress)
    scores = {f"{test_dataset.name} test split": score(pixels[np.asarray(split.test)])}
    for name, dataset in other_sets.items():
        scores[name] = score(dataset_pixels(dataset, config.image_size, progress=progress))
    document = {
        "run": str(run_dir),
        "ood_threshold": info.ood_threshold,
        "familiarity_threshold": familiar.threshold,
        "keep_fraction_on_validation": familiar.keep_fraction,
        "sets": {name: abstention_rates(top, dist, info.ood_threshold, familiar.threshold) for name, (top, dist) in scores.items()},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ood_eval.json", json.dumps(document, indent=2))
    atomic_write_text(out_dir / "ood_eval.md", table(document) + "\n")
    _plot(scores, info.ood_threshold, familiar.threshold, out_dir / "ood_eval.png")
    return document


def table(document: dict) -> str:
    lines = ["| images | n | abstains by softmax | by familiarity | by either |", "|---|---|---|---|---|"]
    for name, r in document["sets"].items():
        lines.append(f"| {name} | {r['n']} | {r['softmax']:.3f} | {r['familiarity']:.3f} | {r['either']:.3f} |")
    return "\n".join(lines)


def _plot(scores: dict, ood_threshold: float, familiarity_threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
