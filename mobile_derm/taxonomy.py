"""Class taxonomy: which classes are malignant and which treatments they call for.

Following Han et al. 2020 ("Model Dermatology"), the classifier outputs
disorder probabilities and two derived outputs are computed from them:

- a **malignancy score**: the summed probability of the malignant classes;
- **treatment-option scores**: for each treatment family, the summed
  probability of the classes that carry it.

File format (``mobile_derm/data/taxonomy.json``)::

    {
      "format": "mobile_derm.taxonomy/1",
      "treatment_vocabulary": {"steroid": "<meaning>", ...},   # optional; must equal TREATMENTS
      "classes": {
        "<label>": {
          "display_name": "Basal cell carcinoma",
          "malignant": true,
          "treatments": ["surgery_biopsy", "destructive"],    # subset of TREATMENTS
          "notes": "...",                                     # optional
          "datasets": ["ham10000"],                           # optional, documentation
          "demo": false,                                      # optional: synthetic demo class
          "ood": false                                        # optional: not a skin disorder
        }, ...
      }
    }

Labels are exact strings as the data sets spell them (HAM ``akiec``, PAD
``ACK``, Derm7pt ``clark nevus``, SD-198 ``Psoriasis``, demo ``demo_*``).
The shipped file covers every class of every data set in ``shared/data``.

Nothing here imports TensorFlow; everything is numpy and vectorised over a
batch of probability rows.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_derm.errors import DataError
from mobile_derm.io_utils import atomic_write_text, read_json_object

FORMAT = "mobile_derm.taxonomy/1"

#: The fixed treatment vocabulary, in output order.
TREATMENTS = ("steroid", "antibiotic", "antiviral", "antifungal", "surgery_biopsy",
              "destructive", "observation", "other")

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "taxonomy.json"

_REQUIRED = ("display_name", "malignant", "treatments")
_OPTIONAL = ("notes", "datasets", "demo", "ood", "counts_as")


@dataclass(frozen=True)
class TaxonomyEntry:
    label: str
    display_name: str
    malignant: bool
    treatments: tuple[str, ...]
    notes: str = ""
    datasets: tuple[str, ...] = ()
    demo: bool = False
    ood: bool = False
    # labels of other data sets' classes that a photo with this label is a case of (external
    # validation scores a model on another data set through them; see model_label_for)
    counts_as: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = {"display_name": self.display_name, "malignant": self.malignant,
             "treatments": list(self.treatments)}
        if self.notes:
            d["notes"] = self.notes
        if self.datasets:
            d["datasets"] = list(self.datasets)
        if self.demo:
            d["demo"] = True
        if self.ood:
            d["ood"] = True
        if self.counts_as:
            d["counts_as"] = list(self.counts_as)
        return d


def _parse_entry(label: str, raw, source) -> TaxonomyEntry:
    where = f"class {label!r}"
    if not isinstance(raw, Mapping):
        raise DataError(source, f"{where}: entry must be an object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise DataError(source, f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise DataError(source, f"{where}: unknown field(s) {', '.join(unknown)} "
                                f"(allowed: {', '.join(_REQUIRED + _OPTIONAL)})")
    if not isinstance(raw["display_name"], str) or not raw["display_name"].strip():
        raise DataError(source, f"{where}: display_name must be a non-empty string")
    if not isinstance(raw["malignant"], bool):
        raise DataError(source, f"{where}: malignant must be true or false, not {raw['malignant']!r}")
    tr = raw["treatments"]
    if not isinstance(tr, list) or not all(isinstance(t, str) for t in tr):
        raise DataError(source, f"{where}: treatments must be a list of strings")
    bad = [t for t in tr if t not in TREATMENTS]
    if bad:
        raise DataError(source, f"{where}: unknown treatment(s) {', '.join(map(repr, bad))} "
                                f"(vocabulary: {', '.join(TREATMENTS)})")
    if len(set(tr)) != len(tr):
        raise DataError(source, f"{where}: a treatment is listed twice")
    for flag in ("demo", "ood"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise DataError(source, f"{where}: {flag} must be true or false")
    notes = raw.get("notes", "")
    if not isinstance(notes, str):
        raise DataError(source, f"{where}: notes must be a string")
    datasets = raw.get("datasets", [])
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise DataError(source, f"{where}: datasets must be a list of strings")
    counts_as = raw.get("counts_as", [])
    if not isinstance(counts_as, list) or not all(isinstance(c, str) for c in counts_as):
        raise DataError(source, f"{where}: counts_as must be a list of labels")
    return TaxonomyEntry(label, raw["display_name"], raw["malignant"], tuple(tr), notes,
                         tuple(datasets), bool(raw.get("demo", False)), bool(raw.get("ood", False)), tuple(counts_as))


@dataclass
class Taxonomy:
    entries: dict[str, TaxonomyEntry]
    source: Path | None = field(default=None)

    # -- construction --------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> "Taxonomy":
        """Read a taxonomy JSON file (default: the one shipped in the package)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        return cls.from_dict(read_json_object(path, DataError, "taxonomy"), source=path)

    @classmethod
    def from_dict(cls, raw, source: str | Path | None = None) -> "Taxonomy":
        src = Path(source) if source is not None else None
        if not isinstance(raw, Mapping) or not isinstance(raw.get("classes"), Mapping):
            raise DataError(src, "taxonomy must be an object with a 'classes' object")
        fmt = raw.get("format", FORMAT)
        if fmt != FORMAT:
            raise DataError(src, f"unsupported taxonomy format {fmt!r} (expected {FORMAT!r})")
        vocab = raw.get("treatment_vocabulary")
        if vocab is not None and list(vocab) != list(TREATMENTS):
            raise DataError(src, f"treatment_vocabulary must be exactly {', '.join(TREATMENTS)}")
        if not raw["classes"]:
            raise DataError(src, "taxonomy has no classes")
        entries = {str(k): _parse_entry(str(k), v, src) for k, v in raw["classes"].items()}
        for entry in entries.values():
            unknown = [c for c in entry.counts_as if c not in entries or c == entry.label]
            if unknown:
                raise DataError(src, f"class {entry.label!r}: counts_as names {', '.join(map(repr, unknown))}, "
                                     "not another class of the taxonomy")
        return cls(entries, src)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "classes": {k: e.to_dict() for k, e in self.entries.items()}}

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    # -- lookup --------------------------------------------------------------
    def labels(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, label: object) -> bool:
        return label in self.entries

    def __getitem__(self, label: str) -> TaxonomyEntry:
        return self.for_labels([label])[label]

    def __len__(self) -> int:
        return len(self.entries)

    def for_labels(self, labels: Iterable[str]) -> dict[str, TaxonomyEntry]:
        """label -> entry for every label, in the given order.

        Raises DataError naming every label the taxonomy lacks.
        """
        labels = list(labels)
        unknown = [l for l in labels if l not in self.entries]
        if unknown:
            raise DataError(self.source, f"{len(unknown)} label(s) not in the taxonomy: "
                                         f"{', '.join(map(repr, unknown))}")
        return {l: self.entries[l] for l in labels}

    def subset(self, labels: Iterable[str]) -> "Taxonomy":
        """A taxonomy with only ``labels`` (in that order): what a model ships. ``counts_as``
        keeps only the labels that are in the subset too."""
        entries = self.for_labels(labels)
        return Taxonomy({l: dataclasses.replace(e, counts_as=tuple(c for c in e.counts_as if c in entries))
                         for l, e in entries.items()}, self.source)

    def model_label_for(self, data_label: str, model_labels: Sequence[str]) -> str | None:
        """The model class a photo labelled ``data_label`` (in another data set) is a case of:
        the same label, else the one model label its ``counts_as`` names; None when there
        is none (or more than one: the mapping must not guess)."""
        if data_label in model_labels:
            return data_label
        entry = self.entries.get(data_label)
        targets = [c for c in (entry.counts_as if entry else ()) if c in model_labels]
        return targets[0] if len(targets) == 1 else None

    def demo_labels(self) -> list[str]:
        return [l for l, e in self.entries.items() if e.demo]

    # -- vectors over a label order -----------------------------------------
    def malignant_mask(self, labels: Sequence[str]) -> np.ndarray:
        """Boolean vector: is class i (in ``labels`` order) malignant."""
        ents = self.for_labels(labels)
        return np.array([ents[l].malignant for l in labels], dtype=bool)

    def treatment_matrix(self, labels: Sequence[str]) -> np.ndarray:
        """(n_classes, len(TREATMENTS)) 0/1 float matrix: class carries treatment."""
        ents = self.for_labels(labels)
        m = np.zeros((len(labels), len(TREATMENTS)), dtype=np.float64)
        col = {t: j for j, t in enumerate(TREATMENTS)}
        for i, l in enumerate(labels):
            for t in ents[l].treatments:
                m[i, col[t]] = 1.0
        return m

    # -- scores --------------------------------------------------------------
    def malignancy_score(self, probs, labels: Sequence[str]) -> np.ndarray | float:
        """Sum of the malignant classes' probabilities.

        ``probs``: (n_classes,) or (batch, n_classes) in ``labels`` order.
        Returns a float for one row, else a (batch,) array.
        """
        p = _probs(probs, labels)
        out = p @ self.malignant_mask(labels).astype(np.float64)
        return float(out) if np.ndim(out) == 0 else out

    def treatment_scores(self, probs, labels: Sequence[str]) -> dict[str, np.ndarray | float]:
        """treatment -> summed probability of the classes carrying it.

        Every treatment in :data:`TREATMENTS` is a key (0 when no class in
        ``labels`` carries it). Values are floats for one row, else (batch,).
        """
        p = _probs(probs, labels)
        s = p @ self.treatment_matrix(labels)
        if s.ndim == 1:
            return {t: float(s[j]) for j, t in enumerate(TREATMENTS)}
        return {t: s[:, j] for j, t in enumerate(TREATMENTS)}


def _probs(probs, labels: Sequence[str]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (1, 2) or p.shape[-1] != len(labels):
        raise ValueError(f"probs must have shape (n_classes,) or (batch, n_classes) with "
                         f"n_classes={len(labels)}; got {p.shape}")
    return p


_DEFAULT: Taxonomy | None = None


def default_taxonomy() -> Taxonomy:
    """The shipped taxonomy (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Taxonomy.load()
    return _DEFAULT


def malignancy_score(probs, labels: Sequence[str], taxonomy: Taxonomy | None = None):
    """Module-level shortcut for :meth:`Taxonomy.malignancy_score` (default taxonomy)."""
    return (taxonomy or default_taxonomy()).malignancy_score(probs, labels)


def treatment_scores(probs, labels: Sequence[str], taxonomy: Taxonomy | None = None):
    """Module-level shortcut for :meth:`Taxonomy.treatment_scores` (default taxonomy)."""
    return (taxonomy or default_taxonomy()).treatment_scores(probs, labels)


def choose_thresholds(y_malignant, scores, min_sensitivity: float = 0.90,
                      min_specificity: float = 0.90) -> dict[str, float]:
    """Two operating points for the malignancy score, chosen on validation data.

    A case is called malignant when ``score >= threshold``. Candidate
    thresholds are the observed score values (plus one just above the
    maximum, which calls nothing malignant).

    - ``"sensitive"``: the highest threshold whose sensitivity is at least
      ``min_sensitivity`` (as few false alarms as that sensitivity allows);
    - ``"specific"``: the lowest threshold whose specificity is at least
      ``min_specificity`` (as many cancers caught as that specificity allows).

    Raises DataError if either class is absent from ``y_malignant``.
    """
    y = np.asarray(y_malignant).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_malignant and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(None, f"choosing thresholds needs malignant and benign validation cases "
                              f"(got {n_pos} malignant, {n_neg} benign)")
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    cand = np.unique(s)
    cand = np.append(cand, np.nextafter(cand[-1], np.inf))
    sens = (n_pos - np.searchsorted(pos, cand, side="left")) / n_pos  # share of pos with s >= t
    spec = np.searchsorted(neg, cand, side="left") / n_neg  # share of neg with s < t
    eps = 1e-12
    t_sens = cand[sens >= min_sensitivity - eps].max()
    t_spec = cand[spec >= min_specificity - eps].min()
    return {"sensitive": float(t_sens), "specific": float(t_spec)}
