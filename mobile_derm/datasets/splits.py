"""Group-disjoint, class-stratified splits and k-fold cross-validation.

Whole groups (lesions, patients, id blocks) are assigned, never single
images, so no group appears in two parts. Within that constraint each class's
share of every part is kept close to the target fractions by a greedy
iterative stratification:

1. Build the class-count vector of every group (a group may hold several
   classes, e.g. a PAD patient with two lesions).
2. Order groups: rarest class first (fewest groups), then largest group
   first, ties broken by a seed-driven shuffle; big groups are placed while
   there is room and small ones fill the remainder.
3. Put each group in the part whose *relative unfilled demand* for the
   group's classes is largest: sum over classes c of
   count_g[c] * (target[part, c] - assigned[part, c]) / target[part, c].
   Relative (not absolute) demand makes the first groups of a rare class go
   to different parts, so every part gets every class when the class has at
   least as many groups as there are parts. Remaining ties go to the larger
   part, then to a seeded random choice.

The result depends only on the dataset listing, the fractions and the seed.
A :class:`Split` saves to JSON with relative image paths, labels, the seed,
fractions and :meth:`Dataset.listing_hash`, so loading it against different
data is detected.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_derm.datasets.sources import Dataset
from mobile_derm.errors import DataError
from mobile_derm.io_utils import atomic_write_text, read_json_object

PARTS = ("train", "val", "test")
FORMAT = "mobile_derm.split/1"


@dataclass
class Split:
    """Indices into a dataset for train / val / test (a k-fold fold has
    ``fold`` set and, unless asked for, an empty ``val``)."""

    train: list[int]
    val: list[int]
    test: list[int]
    seed: int = 0
    fractions: tuple[float, ...] = (0.70, 0.15, 0.15)
    dataset_name: str = ""
    listing_hash: str = ""
    fold: int | None = None
    k: int | None = None
    # Filled from a saved file: part -> [(relative image path, label)].
    entries: dict[str, list[tuple[str, str]]] = field(default_factory=dict, repr=False)

    def parts(self) -> dict[str, list[int]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.parts().items()}

    def class_counts(self, dataset: Dataset) -> dict[str, dict[str, int]]:
        """part -> class -> number of images."""
        labels = dataset.labels()
        out = {}
        for part, idx in self.parts().items():
            counts = {c: 0 for c in dataset.classes}
            for i in idx:
                counts[labels[i]] += 1
            out[part] = counts
        return out

    def subsets(self, dataset: Dataset) -> dict[str, Dataset]:
        return {part: dataset.subset(idx, name=f"{dataset.name}:{part}") for part, idx in self.parts().items()}

    def check(self, dataset: Dataset) -> None:
        """Raise DataError unless this split fits ``dataset``: same listing,
        indices in range, no index twice, no group in two parts."""
        if self.listing_hash and self.listing_hash != dataset.listing_hash():
            raise DataError(dataset.root, _mismatch(self.listing_hash, dataset))
        n = len(dataset)
        seen: dict[int, str] = {}
        group_part: dict[str, str] = {}
        for part, idx in self.parts().items():
            for i in idx:
                if not 0 <= i < n:
                    raise DataError(dataset.root, f"split index {i} out of range for {n} samples")
                if i in seen:
                    raise DataError(dataset.root, f"sample {dataset.relative_path(i)} is in both {seen[i]} and {part}")
                seen[i] = part
                g = dataset.samples[i].group
                if group_part.setdefault(g, part) != part:
                    raise DataError(dataset.root, f"group {g!r} is in both {group_part[g]} and {part}")

    # -- persistence ---------------------------------------------------------
    def attach(self, dataset: Dataset) -> "Split":
        """Record ``dataset``'s relative paths, labels and listing hash (what
        :meth:`save` writes). Splitting functions do this already."""
        h = dataset.listing_hash()
        if self.listing_hash and self.listing_hash != h:
            raise DataError(dataset.root, _mismatch(self.listing_hash, dataset))
        rel = dataset.relative_paths()
        labels = dataset.labels()
        self.entries = {p: [(rel[i], labels[i]) for i in idx] for p, idx in self.parts().items()}
        self.listing_hash = h
        self.dataset_name = self.dataset_name or dataset.name
        return self

    def to_dict(self, dataset: Dataset | None = None) -> dict:
        if dataset is not None:
            self.attach(dataset)
        if not self.entries:
            raise ValueError("this split has no image listing; pass the dataset to save()/to_dict()")
        return {
            "format": FORMAT,
            "dataset": self.dataset_name,
            "n_samples": sum(len(v) for v in self.parts().values()),
            "listing_hash": self.listing_hash,
            "seed": self.seed,
            "fractions": list(self.fractions),
            "fold": self.fold,
            "k": self.k,
            "parts": {part: [{"index": i, "image": img, "label": lab}
                             for i, (img, lab) in zip(idx, self.entries[part])]
                      for part, idx in self.parts().items()},
        }

    def save(self, path: str | Path, dataset: Dataset | None = None) -> None:
        """Write JSON (atomically): per part the dataset index, relative image
        path and label of every sample, plus seed, fractions and the dataset's
        listing hash."""
        atomic_write_text(path, json.dumps(self.to_dict(dataset), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> "Split":
        """Read a saved split. With ``dataset``, check its listing hash and map
        the stored image paths onto that dataset's indices (so its sample
        order may differ from the one the split was made on)."""
        path = Path(path)
        d = read_json_object(path, DataError, "split")
        if d.get("format") != FORMAT:
            raise DataError(path, f"not a split file (expected format {FORMAT!r})")
        try:
            entries = {p: [(e["image"], e["label"]) for e in d["parts"][p]] for p in PARTS}
            indices = {p: [int(e["index"]) for e in d["parts"][p]] for p in PARTS}
            split = cls(indices["train"], indices["val"], indices["test"], seed=int(d["seed"]),
                        fractions=tuple(float(f) for f in d["fractions"]), dataset_name=str(d["dataset"]),
                        listing_hash=str(d["listing_hash"]), fold=d.get("fold"), k=d.get("k"),
                        entries=entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(path, f"split file is missing or has a bad field: {exc}") from None
        if dataset is not None:
            if split.listing_hash != dataset.listing_hash():
                raise DataError(path, _mismatch(split.listing_hash, dataset))
            where = {r: i for i, r in enumerate(dataset.relative_paths())}
            labels = dataset.labels()
            for p in PARTS:
                idx = []
                for image, label in entries[p]:
                    i = where.get(image)
                    if i is None or labels[i] != label:
                        raise DataError(path, f"{image} ({label}) is not in data set {dataset.name!r}")
                    idx.append(i)
                setattr(split, p, idx)
        return split


def _mismatch(saved_hash: str, dataset: Dataset) -> str:
    return (f"split was made for a different data listing (hash {saved_hash[:12]}, this data set "
            f"{dataset.name!r} with {len(dataset)} images has {dataset.listing_hash()[:12]}): "
            f"images, labels or groups changed; make a new split")


# --------------------------------------------------------------------------
# Core assignment
# --------------------------------------------------------------------------
def _group_matrix(dataset: Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted group names, group x class count matrix, group index per sample)."""
    names = sorted({s.group for s in dataset.samples})
    gidx = {g: i for i, g in enumerate(names)}
    cidx = dataset.class_index()
    sample_group = np.array([gidx[s.group] for s in dataset.samples], dtype=np.int64)
    counts = np.zeros((len(names), len(dataset.classes)), dtype=np.float64)
    np.add.at(counts, (sample_group, [cidx[s.label] for s in dataset.samples]), 1.0)
    return names, counts, sample_group


def _check_enough_groups(dataset: Dataset, counts: np.ndarray, n_parts: int, what: str) -> None:
    groups_per_class = (counts > 0).sum(axis=0)
    images_per_class = counts.sum(axis=0)
    short = [(c, int(g), int(n)) for c, g, n in zip(dataset.classes, groups_per_class, images_per_class)
             if 0 < g < n_parts]
    if short:
        detail = "; ".join(f"class {c!r} has {g} group(s) ({n} images)" for c, g, n in short)
        raise DataError(dataset.root, f"too few groups for {what}: {detail}; each class needs at least "
                                      f"{n_parts} groups (merge or drop the class, or use fewer parts)")


def _assign(counts: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Part index for every group (see the module docstring)."""
    n_groups, n_classes = counts.shape
    rng = np.random.default_rng(seed)
    class_totals = counts.sum(axis=0)
    groups_per_class = (counts > 0).sum(axis=0)
    primary = counts.argmax(axis=1)
    # Rarest class first, then bigger groups first, then a seeded shuffle.
    shuffle = rng.permutation(n_groups)
    order = np.lexsort((shuffle, -counts.sum(axis=1), groups_per_class[primary]))
    target = fractions[:, None] * class_totals[None, :]  # parts x classes
    safe_target = np.where(target > 0, target, 1.0)
    assigned = np.zeros_like(target)
    part_of = np.empty(n_groups, dtype=np.int64)
    active = fractions > 0
    tie_noise = rng.random((n_groups, len(fractions))) * 1e-9
    for g in order:
        c = counts[g]
        nz = c > 0
        rel = ((target[:, nz] - assigned[:, nz]) / safe_target[:, nz]) @ c[nz]
        # Prefer: largest relative demand, then larger part, then random.
        score = rel + 1e-6 * fractions + tie_noise[g]
        score[~active] = -np.inf
        p = int(np.argmax(score))
        part_of[g] = p
        assigned[p] += c
    return part_of


def _indices_by_part(part_of: np.ndarray, sample_group: np.ndarray, n_parts: int) -> list[list[int]]:
    sample_part = part_of[sample_group]
    return [np.flatnonzero(sample_part == p).tolist() for p in range(n_parts)]


def split_grouped(dataset: Dataset, fractions: Sequence[float] = (0.70, 0.15, 0.15), seed: int = 0) -> Split:
    """Train / val / test split, disjoint by group and stratified by class.

    ``fractions`` are (train, val, test) and must sum to 1; a zero fraction
    gives an empty part. Raises DataError if a class has fewer groups than
    there are non-empty parts.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    if len(dataset) == 0:
        raise DataError(dataset.root, "cannot split an empty data set")
    _, counts, sample_group = _group_matrix(dataset)
    _check_enough_groups(dataset, counts, int((fr > 0).sum()),
                         f"a {'/'.join(f'{f:g}' for f in fr)} split")
    part_of = _assign(counts, fr, seed)
    train, val, test = _indices_by_part(part_of, sample_group, 3)
    return Split(train, val, test, seed=seed, fractions=tuple(float(f) for f in fr),
                 dataset_name=dataset.name, listing_hash=dataset.listing_hash()).attach(dataset)


def grouped_kfold(dataset: Dataset, k: int = 5, seed: int = 0, with_val: bool = False) -> list[Split]:
    """k group-disjoint, class-stratified folds.

    Fold i tests on part i and trains on the rest; every sample is in exactly
    one fold's test part. With ``with_val`` part (i + 1) % k becomes fold i's
    validation part (so training uses k - 2 parts).
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if with_val and k < 3:
        raise ValueError("with_val needs k >= 3")
    if len(dataset) == 0:
        raise DataError(dataset.root, "cannot split an empty data set")
    _, counts, sample_group = _group_matrix(dataset)
    _check_enough_groups(dataset, counts, k, f"{k}-fold cross-validation")
    part_of = _assign(counts, np.full(k, 1.0 / k), seed)
    parts = _indices_by_part(part_of, sample_group, k)
    h = dataset.listing_hash()
    folds = []
    for i in range(k):
        v = (i + 1) % k if with_val else None
        train = sorted(j for p in range(k) if p != i and p != v for j in parts[p])
        val = list(parts[v]) if v is not None else []
        folds.append(Split(train, val, list(parts[i]), seed=seed, fractions=tuple([1.0 / k] * k),
                           dataset_name=dataset.name, listing_hash=h, fold=i, k=k).attach(dataset))
    return folds
