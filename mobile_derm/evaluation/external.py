"""External validation: a model scored on another data set, as the Model Dermatology papers
validated on other hospitals' photos (reporting only: nothing is chosen on these figures).

The other set's labels are mapped onto the model's through the taxonomy
(``Taxonomy.model_label_for``: the same label, or the one model class its ``counts_as`` names);
the HAM10000 model on Derm7pt (whose preset labels are HAM codes), a phone-photo model on the
SD-198 photos of the classes it knows. Two kinds of figures:

* classification on the photos whose label maps to a model class (top-1, balanced accuracy over
  the classes present, per-class recall, ECE, intervals over the set's groups), through the same
  ``evaluate_probs`` as the test report;
* malignancy and abstention on every photo: the truth is the photo's own label's malignant flag
  in the taxonomy, so photos of classes the model does not know still count (a model that calls
  an unknown melanoma benign is wrong), scored at both shipped operating points.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.errors import DataError
from mobile_derm.evaluation import metrics
from mobile_derm.evaluation.report import evaluate_probs
from mobile_derm.io_utils import atomic_write_text


def label_mapping(data_labels, info: ModelInfo, taxonomy) -> dict[str, str | None]:
    """Each label of the other set -> the model class it counts as, or None."""
    return {label: taxonomy.model_label_for(label, info.labels) for label in sorted(set(data_labels))}


def evaluate_external(probs: np.ndarray, data_labels, info: ModelInfo, taxonomy, data_name: str,
                      groups=None, unfamiliarity: np.ndarray | None = None, out_dir: str | Path | None = None) -> dict:
    """The external report of ``probs`` (one row per photo of the other set, in the model's
    label order) against that set's own ``data_labels``."""
    data_labels = np.asarray(list(data_labels), dtype=object)
    mapping = label_mapping(data_labels, info, taxonomy)
    mapped = np.array([mapping[l] is not None for l in data_labels])
    if not mapped.any():
        raise DataError(None, f"no label of {data_name} maps to a class of the model ({', '.join(info.labels)}); "
                              "add counts_as entries to the taxonomy")
    y = np.array([info.labels.index(mapping[l]) for l in data_labels[mapped]], dtype=np.int64)
    report = evaluate_probs(probs[mapped], y, info, groups=None if groups is None else np.asarray(groups)[mapped])
    report = {"classification_on_mapped_photos": report}

    # malignancy on every photo, against the photo's own label
    truth = np.array([taxonomy[l].malignant for l in data_labels], dtype=bool)
    score = probs @ info.malignant_mask().astype(np.float64)
    malignancy = {"n": int(len(truth)), "n_malignant": int(truth.sum()), "auc": metrics.roc_auc(truth, score)}
    for name, threshold in info.malignancy_thresholds.items():
        sens, spec = metrics.sensitivity_specificity(truth, score, threshold)
        malignancy[name] = {"threshold": threshold, "sensitivity": sens, "specificity": spec}
    abstention = {"low_confidence": None if info.ood_threshold is None
                  else float(np.mean(probs.max(axis=1) < info.ood_threshold))}
    if unfamiliarity is not None and info.familiarity:
        abstention["unfamiliar"] = float(np.mean(np.asarray(unfamiliarity) > info.familiarity["abstain_above"]))
    counts = Counter(data_labels.tolist())
    report.update({
        "data": data_name,
        "model": info.name,
        "n": int(len(data_labels)),
        "n_mapped": int(mapped.sum()),
        "label_mapping": {label: {"model_class": target, "n": counts[label]} for label, target in mapping.items()},
        "malignancy_on_all_photos": malignancy,
        "abstain_rate": abstention,
    })
    report = json.loads(json.dumps(report, default=float))  # plain JSON types
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_text(out_dir / "external.json", json.dumps(report, indent=2))
        atomic_write_text(out_dir / "external.md", markdown(report))
    return report


def _f(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def markdown(report: dict) -> str:
    c = report["classification_on_mapped_photos"]
    m = report["malignancy_on_all_photos"]
    lines = [f"# {report['model']} on {report['data']} (external; reporting only)", "",
             f"{report['n']} photos, {report['n_mapped']} of classes the model knows.", "",
             "| measure | value |", "|---|---|",
             f"| top-1 (mapped photos) | {_f(c['top1'])} |",
             f"| balanced accuracy (classes present) | {_f(c['balanced_accuracy'])} |",
             f"| ECE (mapped photos) | {_f(c['ece'])} |",
             f"| malignancy AUC (all photos, {m['n_malignant']} malignant) | {_f(m['auc'])} |"]
    for name in ("sensitive", "specific"):
        if name in m:
            lines.append(f"| {name} point ({m[name]['threshold']:.3f}): sensitivity / specificity | "
                         f"{_f(m[name]['sensitivity'])} / {_f(m[name]['specificity'])} |")
    for rule, rate in report["abstain_rate"].items():
        lines.append(f"| abstains ({rule}) | {_f(rate)} |")
    lines += ["", "| label in the set | n | counts as | recall |", "|---|---|---|---|"]
    recall = c["per_class_recall"]
    for label, entry in report["label_mapping"].items():
        target = entry["model_class"]
        lines.append(f"| {label} | {entry['n']} | {target or '- (not scored)'} | "
                     f"{_f(recall.get(target)) if target else '-'} |")
    return "\n".join(lines) + "\n"
