"""The model card: what a model is for, what it was trained and tested on, how well it
does and where it fails, as one Markdown file written beside the exported ``.tflite``
files and packed into each (``mobile_derm.app.model_file.read_model_card`` reads it back).

Every number comes from the run or from measurements made at export: the run's test
report (``RUN/eval/report.json``), the per-subgroup figures computed here on the test
split where the data set's ``labels.csv`` records subgroups (PAD-UFES-20: age, sex, body
site, Fitzpatrick type), and the quantization deltas the exporter measures
(``mobile_derm_export.exporter``). What was not measured says so. The known limits are
one list kept in ``mobile_derm/data/known_limits.json``.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.evaluation import metrics

KNOWN_LIMITS_FILE = Path(__file__).resolve().parent.parent / "data" / "known_limits.json"
NOT_MEASURED = "not measured"
MIN_SUBGROUP_N = 20  # smaller subgroups are listed with their n only: an interval on fewer photos says little
# labels.csv columns that name subgroups, and their titles: PAD-UFES-20 (age, sex, region,
# fitzpatrick), HAM10000 (age, sex, localization), Derm7pt (sex, location)
SUBGROUP_COLUMNS = {"age": "age band", "sex": "sex", "region": "body site", "localization": "body site",
                    "location": "body site", "fitzpatrick": "Fitzpatrick type"}
AGE_BANDS = ((0, 40, "under 40"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, "80 and over"))
NOT_A_MEDICAL_DEVICE = ("**Not a medical device.** Decision support for research and development only: no clinical "
                        "validation, no prospective data. It does not diagnose; a clinician must.")


@dataclass
class ModelCardContext:
    """What the exporter needs from the run: the run folder (its eval/report.json and
    train_config.json), the data set it was trained on, its saved split, and the validation
    (each variant's thresholds are chosen there) and test split's pixels and labels."""

    run_dir: Path
    dataset: object  # mobile_derm.datasets.sources.Dataset
    split: object  # mobile_derm.datasets.splits.Split
    test_pixels: np.ndarray
    y_test: np.ndarray
    val_pixels: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @classmethod
    def for_run(cls, run_dir, dataset, split, pixels: np.ndarray, y: np.ndarray) -> "ModelCardContext":
        """From the whole data set's pixels and label indices, as ``run_arrays`` gives them."""
        test, val = (np.asarray(part, dtype=np.int64) for part in (split.test, split.val))
        return cls(Path(run_dir), dataset, split, pixels[test], np.asarray(y)[test], pixels[val], np.asarray(y)[val])

    def test_report(self) -> dict | None:
        path = Path(self.run_dir) / "eval" / "report.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def test_groups(self) -> np.ndarray:
        return np.asarray(self.dataset.groups())[np.asarray(self.split.test, dtype=np.int64)]

    def external_reports(self) -> dict[str, dict]:
        """data set name -> external.json that ``mobile-derm evaluate RUN --data SET`` wrote in
        the run folder (its default ``RUN/external_<SET>/``)."""
        reports = {}
        for path in sorted(Path(self.run_dir).glob("external_*/external.json")):
            report = json.loads(path.read_text())
            reports[report.get("data", path.parent.name.removeprefix("external_"))] = report
        return reports

    def gate_pass_rates(self, gate_config: dict | None) -> dict | None:
        """The packed gate's verdicts on the test split's original photo files: accept / warn /
        reject shares and the most frequent reject reasons (None when the files are gone)."""
        from collections import Counter

        from mobile_derm_quality import GateConfig, check_photo
        from mobile_derm_quality.errors import QualityCheckError

        paths = [self.dataset.paths()[int(i)] for i in self.split.test]
        decisions, reasons = Counter(), Counter()
        try:  # a learned not-skin check is found beside the exported files, not from here: no figure then
            config = GateConfig.from_dict(gate_config) if gate_config else GateConfig.default()
            for path in paths:
                verdict = check_photo(path, config)
                decisions[verdict.decision] += 1
                if verdict.decision == "reject":
                    reasons.update(verdict.reasons)
        except QualityCheckError:
            return None
        if not paths:
            return None
        n = len(paths)
        return {"n": n, **{d: decisions[d] / n for d in ("accept", "warn", "reject")},
                "reasons": reasons.most_common(3)}


def known_limits() -> list[str]:
    return list(json.loads(KNOWN_LIMITS_FILE.read_text(encoding="utf-8"))["limits"])


def data_licence(dataset_root: Path) -> str:
    """The licence paragraph of the data set's SOURCE.md (``**Licence.** ...``), or a pointer."""
    source = Path(dataset_root) / "SOURCE.md"
    if source.is_file():
        match = re.search(r"\*\*Licen[cs]e\.\*\*\s*(.+?)(?:\n\s*\n|$)", source.read_text(encoding="utf-8"), re.S)
        if match:
            return " ".join(match.group(1).split())
    return "see your data's licence (no SOURCE.md with a licence paragraph beside the data)"


def _calibration_note(info: ModelInfo, report: dict) -> str:
    """How the probabilities were calibrated, and the test ECE before it (when recorded)."""
    if not info.calibration:
        return " (not calibrated)"
    before = report.get("uncalibrated", {}).get("ece")
    return (f", after temperature scaling chosen on validation (T = {_f(info.calibration['temperature'])}, prior restored "
            f"x{info.calibration.get('prior_restored', 0):g}){'' if before is None else f'; {_f(before)} as trained'}")


def _decision_note(info: ModelInfo) -> str:
    if not info.decision:
        return "the most probable class"
    return (f"class-balanced, {info.decision['rule']} with offsets -{info.decision['tau']:g} * log(training prior) "
            f"(tau chosen on {info.decision['chosen_on']}); the probabilities shown are not changed by it")


def subgroup_table(dataset, test_indices, probs: np.ndarray, y: np.ndarray, groups: np.ndarray,
                   info: ModelInfo | None = None) -> dict[str, list[dict]]:
    """Classes named by ``info``'s decision rule (else the most probable class), per subgroup of each SUBGROUP_COLUMNS column found in the data set's labels.csv:
    {column: [{"subgroup", "n", "top1", "balanced_accuracy", "ci95"} ...]}; subgroups
    under MIN_SUBGROUP_N photos carry only n. Empty when labels.csv records none."""
    csv_path = Path(dataset.root) / "labels.csv"
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = {row.get("image", ""): row for row in csv.DictReader(fh)}
    test_rows = [rows.get(dataset.relative_path(int(i)), {}) for i in test_indices]
    n_classes = probs.shape[1]
    tables = {}
    for column, title in SUBGROUP_COLUMNS.items():
        values = [_subgroup_value(column, row.get(column, "")) for row in test_rows]
        if title in tables or all(v is None for v in values):
            continue
        table = []
        bands = [name for _, _, name in AGE_BANDS]
        order = (lambda v: bands.index(v)) if column == "age" else None  # age bands young to old, others by name
        for value in sorted({v for v in values if v is not None}, key=order) + ([None] if None in values else []):
            mask = np.array([v == value for v in values])
            entry = {"subgroup": value or "not recorded", "n": int(mask.sum())}
            if entry["n"] >= MIN_SUBGROUP_N:
                pred = probs[mask].argmax(axis=1) if info is None else info.decide(probs[mask])
                entry["top1"] = float(np.mean(pred == y[mask]))
                entry["balanced_accuracy"] = metrics.balanced_accuracy(y[mask], pred, n_classes)
                entry["ci95"] = metrics.bootstrap_intervals(probs[mask], y[mask], np.zeros(n_classes, bool),
                                                            n_boot=500, groups=groups[mask], pred=pred)["balanced_accuracy"]
            table.append(entry)
        tables[title] = table
    return tables


def _subgroup_value(column: str, raw: str) -> str | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if column == "age":
        try:
            age = float(raw)
        except ValueError:
            return None
        return next(name for low, high, name in AGE_BANDS if low <= age < high)
    if column == "fitzpatrick":
        return raw.split(".")[0]  # "2.0" and "2" are one type
    return raw.lower()


def _abstention_on_other_sets(quantization: dict[str, dict] | None) -> list[tuple[str, dict]]:
    """[(variant, {set name: (abstain rate, n)})] for the sets other than the test split."""
    rows = []
    for variant, row in (quantization or {}).items():
        by_set = {name: (entry["abstain_rate"], entry["n"]) for name, entry in row.get("abstention_by_set", {}).items()
                  if name != "test"}
        if by_set:
            rows.append((variant, by_set))
    return rows


def _f(value, digits: int = 3) -> str:
    return NOT_MEASURED if value is None else f"{value:.{digits}f}"


def _interval(ci) -> str:
    return f" (95% interval {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


def render(info, context: ModelCardContext | None, quantization: dict[str, dict] | None,
           subgroups: dict[str, list[dict]] | None) -> str:
    """The card as Markdown. ``quantization``: variant -> measured row (see the exporter);
    ``subgroups``: ``subgroup_table``'s result. Sections without numbers say NOT_MEASURED."""
    report = context.test_report() if context is not None else None
    lines = [f"# Model card: {info.name} (version {info.version})", "",
             f"{info.description}", "",
             "## Intended use", "",
             f"Ranks {len(info.labels)} skin-lesion classes ({', '.join(info.labels)}) in a photo that has passed "
             "the quality gate packed with the model, with a malignancy score at two operating points and an "
             "abstention (\"unknown\") when the photo is unlike the training photos or the model is unsure.", "",
             NOT_A_MEDICAL_DEVICE, ""]

    lines += ["## Data and licences", ""]
    if context is not None:
        dataset = context.dataset
        lines += [f"- Data set: **{dataset.name}**, {len(dataset.samples)} images, {dataset.n_groups()} groups "
                  f"(lesions / patients), {len(dataset.classes)} classes.",
                  f"- Licence: {data_licence(dataset.root)}", ""]
        split = context.split
        sizes = split.sizes()
        lines += ["## Split protocol", "",
                  f"Whole groups (the data set's lesion / patient ids), never single images, are assigned to train / "
                  f"validation / test (fractions {', '.join(f'{f:g}' for f in split.fractions)}, seed {split.seed}): "
                  f"{sizes['train']} / {sizes['val']} / {sizes['test']} images. Thresholds (operating points, "
                  f"abstention) are chosen on validation; the test split is used only for the figures below.", ""]
    else:
        lines += [f"- {NOT_MEASURED}: the exporter was given no data set; see your data's licence.", ""]

    lines += ["## Results on the test split", ""]
    if report:
        lines += [f"- n = {report['n']} images; top-1 {_f(report['top1'])}, top-3 {_f(report['top3'])}",
                  f"- balanced accuracy {_f(report['balanced_accuracy'])}"
                  f"{_interval(report.get('ci95', {}).get('balanced_accuracy'))}, resampling "
                  f"{report.get('ci95_resamples', 'images')}",
                  f"- malignancy AUC {_f(report.get('malignancy_auc'))}"
                  f"{_interval(report.get('ci95', {}).get('malignancy_auc'))}",
                  f"- calibration: expected calibration error (ECE, 15 bins) {_f(report['ece'])}"
                  f"{_calibration_note(info, report)}",
                  f"- decision: {_decision_note(info)}", "",
                  "| class | recall |", "|---|---|"]
        lines += [f"| {label} | {_f(r)} |" for label, r in report["per_class_recall"].items()]
        lines += ["", "### Operating points (malignancy score, thresholds chosen on validation)", ""]
        points = [(name, report.get(f"malignancy_{name}")) for name in ("sensitive", "specific")]
        if any(p for _, p in points):
            intervals = report.get("ci95", {})
            lines += ["| point | threshold | sensitivity | specificity | chosen on validation for | met on test |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {name} | {_f(p['threshold'])} "
                      f"| {_f(p['sensitivity'])}{_interval(intervals.get(f'malignancy_{name}', {}).get('sensitivity'))} "
                      f"| {_f(p['specificity'])}{_interval(intervals.get(f'malignancy_{name}', {}).get('specificity'))} "
                      f"| {', '.join(f'{m} >= {_f(v)}' for m, v in p.get('target', {}).items()) or NOT_MEASURED} "
                      f"| {'-' if p.get('met_target') is None else ('yes' if p['met_target'] else 'no')} |"
                      for name, p in points if p]
            per_file = [(v, row["malignancy_thresholds"]) for v, row in (quantization or {}).items()
                        if row.get("malignancy_thresholds")]
            if per_file:
                lines += ["", "Each file carries thresholds chosen again on its own validation outputs (an integer "
                          "model's scores sit on a coarser grid): " + "; ".join(
                              f"{variant} " + ", ".join(f"{name} {_f(t, 4)}" for name, t in points.items())
                              for variant, points in per_file) + "."]
        else:
            lines += [f"{NOT_MEASURED} (no malignant class in the validation split)"]
        lines += ["", "### Abstention on the test split", "",
                  f"- low confidence (top probability under {_f(info.ood_threshold)}): "
                  f"{_f(report.get('abstain_rate'))} of test photos",
                  f"- unfamiliar (feature-space distance above the threshold): "
                  f"{_f(report.get('familiarity_abstain_rate'))} of test photos", ""]
    else:
        lines += [f"{NOT_MEASURED}: no test report in the run folder.", ""]

    lines += ["## Results on other data sets", ""]
    external = context.external_reports() if context is not None else {}
    if external:
        lines += ["External validation of the trained (float) model, run before export with `mobile-derm evaluate "
                  "RUN --data SET` (labels mapped through the taxonomy; reporting only, nothing was chosen on "
                  "these):", "",
                  "| data set | photos (of classes the model knows) | balanced accuracy | malignancy AUC "
                  "| sensitive point: sensitivity / specificity | abstains |", "|---|---|---|---|---|---|"]
        for name, ext in external.items():
            c, m = ext["classification_on_mapped_photos"], ext["malignancy_on_all_photos"]
            sensitive = m.get("sensitive", {})
            abstains = ", ".join(f"{rule} {_f(rate)}" for rule, rate in ext.get("abstain_rate", {}).items())
            lines.append(f"| {name} | {ext['n']} ({ext['n_mapped']}) | {_f(c.get('balanced_accuracy'))} | "
                         f"{_f(m.get('auc'))} | {_f(sensitive.get('sensitivity'))} / {_f(sensitive.get('specificity'))} "
                         f"| {abstains or NOT_MEASURED} |")
        lines.append("")
    else:
        lines += [f"External data sets: **{NOT_MEASURED}** before this export. Run `mobile-derm evaluate RUN --data "
                  "SET` before exporting (the card then shows it) or on the exported file; until then, expect lower "
                  "figures on photos from other cameras, clinics and populations.", ""]
    other_sets = _abstention_on_other_sets(quantization)
    if other_sets:
        lines += ["Abstention (either rule) of each file on image sets that are not this data set's test photos "
                  "(measured at export):", "", "| variant | " + " | ".join(other_sets[0][1]) + " |",
                  "|---|" + "---|" * len(other_sets[0][1])]
        lines += [f"| {variant} | " + " | ".join(f"{_f(rate)} (n = {n})" for rate, n in row.values()) + " |"
                  for variant, row in other_sets]
        lines.append("")

    lines += ["## Subgroups (test split)", ""]
    if subgroups:
        lines += [f"Balanced accuracy with 95% intervals resampling groups; subgroups under {MIN_SUBGROUP_N} "
                  "photos are listed with their n only.", ""]
        for title, table in subgroups.items():
            lines += [f"**{title}**", "", "| subgroup | n | top-1 | balanced accuracy |", "|---|---|---|---|"]
            for entry in table:
                if "top1" in entry:
                    lines.append(f"| {entry['subgroup']} | {entry['n']} | {_f(entry['top1'])} | "
                                 f"{_f(entry['balanced_accuracy'])} ({entry['ci95'][0]:.3f}-{entry['ci95'][1]:.3f}) |")
                else:
                    lines.append(f"| {entry['subgroup']} | {entry['n']} | n < {MIN_SUBGROUP_N}: not reported | |")
            lines.append("")
    else:
        lines += [f"{NOT_MEASURED}: the data set records no subgroups (age, sex, body site, skin type).", ""]

    gate = info.gate_config or {}
    lines += ["## Quality gate", "",
              f"Photo-quality gate configuration version {gate.get('version', NOT_MEASURED)} "
              f"(schema {gate.get('schema_version', NOT_MEASURED)}), packed in the model's metadata.", ""]
    pass_rates = context.gate_pass_rates(gate) if context is not None else None
    if pass_rates:
        lines += [f"On the original files of the test split ({pass_rates['n']} photos) it accepts "
                  f"{_f(pass_rates['accept'])}, warns on {_f(pass_rates['warn'])} and rejects {_f(pass_rates['reject'])}"
                  + (f"; most frequent reasons: {', '.join(f'{r} {k}' for r, k in pass_rates['reasons'])}"
                     if pass_rates["reasons"] else "")
                  + ". Its pass rates on other photos and on capture failures: docs/gate.md of mobile_derm.", ""]

    lines += ["## Quantization", ""]
    if quantization:
        lines += ["Measured at export on the test split and on generated non-skin images, each variant against "
                  "float32 (the benchmark, `benchmark.json`, measures the same with latency).", "",
                  "| variant | size | top-1 | balanced accuracy | top-1 agreement | abstention agreement | "
                  "unfamiliarity agreement | unfamiliarity MAE |", "|---|---|---|---|---|---|---|---|"]
        for variant, row in quantization.items():
            lines.append(f"| {variant} | {row['size_bytes'] / 1e6:.2f} MB | {_f(row.get('top1'))} | "
                         f"{_f(row.get('balanced_accuracy'))} | {_f(row.get('agreement_with_float'))} | "
                         f"{_f(row.get('abstention_agreement_with_float'))} | "
                         f"{_f(row.get('unfamiliar_agreement_with_float'))} | "
                         f"{_f(row.get('unfamiliarity_mae_vs_float'), 4)} |")
        lines.append("")
    else:
        lines += [f"{NOT_MEASURED} (no test split given to the exporter).", ""]

    lines += ["## Known limits and failure modes", ""]
    lines += [f"- {limit}" for limit in known_limits()]
    return "\n".join(lines) + "\n"
