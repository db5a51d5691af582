"""One interface for every labelled image set: a list of (path, label, group).

A :class:`Dataset` is a plain list of :class:`Sample` s plus the sorted class
list. Everything downstream (splits, the tf.data pipeline, evaluation) works
on it and never parses a label file itself.

Readers
-------
- :func:`read_folder`: a class-per-folder tree (``root/<class>/*.jpg``).
- :func:`read_csv`: a CSV with image / label (/ group) columns.
- :func:`load_preset`: the real data sets under :func:`data_root`
  (``ham10000``, ``pad_ufes20``, ``derm7pt``, ``sd198``, ``ood``).

The *group* of a sample is the unit a split must never cut: a lesion (HAM10000),
a patient (PAD-UFES-20), a case (Derm7pt), a block of nearby DermQuest ids
(SD-198, see :func:`sd198_groups`). Images of one group always land in the
same split.

Every bad-data case raises :class:`~mobile_derm.errors.DataError` naming the
file it is about. Readers check that each image file exists; decoding every
image is slower and is a separate step, :func:`verify_images`.

Nothing here imports TensorFlow.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_derm.errors import DataError
# The sets' group columns and SD-198's grouping rule live in the gate package (its fit/report halves use
# them too); re-exported here.
from mobile_derm_quality.groups import (GROUP_COLUMNS, SD198_MAX_GAP, SD198_MAX_SPAN, sd198_groups,  # noqa: F401
                                        sd198_numeric_id)

#: File name extensions :func:`read_folder` treats as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: Environment variable that points at the real-data folder.
DATA_ENV = "MOBILE_DERM_DATA"

#: Preset name -> folder under :func:`data_root`.
PRESET_FOLDERS = {
    "ham10000": "ham10000_200px",
    "pad_ufes20": "pad_ufes20_subset",
    "derm7pt": "derm7pt_dermoscopic",
    "sd198": "sd198_subset",
    "ood": "ood",
}
PRESETS = tuple(PRESET_FOLDERS)


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``path`` is absolute (or as given by the caller)."""

    path: Path
    label: str
    group: str


@dataclass
class Dataset:
    """Labelled images plus the sorted list of classes.

    ``classes`` is sorted (stable across runs and machines) and is the label
    order a model trained on this data uses, unless a caller chooses otherwise.
    A :meth:`subset` keeps the parent's ``classes`` so indices stay comparable.
    """

    name: str
    root: Path
    samples: list[Sample]
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.classes:
            self.classes = sorted({s.label for s in self.samples})
        missing = {s.label for s in self.samples} - set(self.classes)
        if missing:
            raise DataError(self.root, f"labels not in the class list: {sorted(missing)}")

    # -- basic views ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    def labels(self) -> list[str]:
        return [s.label for s in self.samples]

    def groups(self) -> list[str]:
        return [s.group for s in self.samples]

    def labels_array(self) -> np.ndarray:
        """Labels as a numpy array of strings (one per sample)."""
        return np.array(self.labels(), dtype=str)

    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def label_indices(self) -> np.ndarray:
        """Integer class index per sample (position in ``classes``), int64."""
        idx = self.class_index()
        return np.array([idx[s.label] for s in self.samples], dtype=np.int64)

    def groups_array(self) -> np.ndarray:
        return np.array(self.groups(), dtype=str)

    def class_counts(self) -> dict[str, int]:
        """Images per class, in ``classes`` order (zero for absent classes)."""
        counts = Counter(s.label for s in self.samples)
        return {c: counts.get(c, 0) for c in self.classes}

    def group_counts(self) -> dict[str, int]:
        """Distinct groups per class, in ``classes`` order."""
        groups: dict[str, set[str]] = {c: set() for c in self.classes}
        for s in self.samples:
            groups[s.label].add(s.group)
        return {c: len(g) for c, g in groups.items()}

    def n_groups(self) -> int:
        return len({s.group for s in self.samples})

    def relative_path(self, sample: Sample | int) -> str:
        """POSIX path of a sample relative to ``root`` (absolute if outside it)."""
        if isinstance(sample, (int, np.integer)):
            sample = self.samples[int(sample)]
        try:
            return Path(sample.path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(sample.path).as_posix()

    def relative_paths(self) -> list[str]:
        return [self.relative_path(s) for s in self.samples]

    def listing_hash(self) -> str:
        """SHA-256 of the sorted (relative path, label, group) listing.

        Independent of sample order and of where the data folder lives, so a
        saved split can check it is being applied to the same data.
        """
        lines = sorted(f"{self.relative_path(s)}\t{s.label}\t{s.group}" for s in self.samples)
        h = hashlib.sha256()
        for line in lines:
            h.update(line.encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    # -- derived datasets ----------------------------------------------------
    def subset(self, indices: Iterable[int], name: str | None = None) -> "Dataset":
        """The samples at ``indices`` (in that order); keeps ``classes``."""
        samples = [self.samples[int(i)] for i in indices]
        return Dataset(name or self.name, self.root, samples, list(self.classes))

    def filter(self, keep: Callable[[Sample], bool], name: str | None = None,
               reduce_classes: bool = True) -> "Dataset":
        """Samples for which ``keep(sample)`` is true.

        With ``reduce_classes`` the class list shrinks to the labels left.
        """
        samples = [s for s in self.samples if keep(s)]
        classes = sorted({s.label for s in samples}) if reduce_classes else list(self.classes)
        return Dataset(name or self.name, self.root, samples, classes)

    def drop_labels(self, labels: Collection[str]) -> "Dataset":
        """Without the samples (and classes) named in ``labels``."""
        drop = set(labels)
        return Dataset(self.name, self.root, [s for s in self.samples if s.label not in drop],
                       [c for c in self.classes if c not in drop])

    def check_labels(self, taxonomy, source: str | Path | None = None) -> None:
        """Raise DataError if a label is not in ``taxonomy``.

        ``taxonomy`` is a :class:`mobile_derm.taxonomy.Taxonomy` or any
        collection of allowed label strings.
        """
        allowed = _allowed_labels(taxonomy)
        unknown = sorted({s.label for s in self.samples} - allowed)
        if unknown:
            raise DataError(source or self.root,
                            f"{len(unknown)} label(s) not in the taxonomy: {', '.join(map(repr, unknown))}")

    def summary(self) -> str:
        counts = ", ".join(f"{c} {n}" for c, n in self.class_counts().items())
        return f"{self.name}: {len(self)} images, {self.n_groups()} groups, {len(self.classes)} classes ({counts})"


def _allowed_labels(taxonomy) -> set[str]:
    if hasattr(taxonomy, "labels") and callable(taxonomy.labels):
        return set(taxonomy.labels())
    if isinstance(taxonomy, dict):
        return set(taxonomy)
    return set(taxonomy)


# --------------------------------------------------------------------------
# Where the real data lives
# --------------------------------------------------------------------------
def data_root() -> Path:
    """The real-data folder: ``$MOBILE_DERM_DATA`` or ``<repo root>/../shared/data``.

    The repo root is the parent of the ``mobile_derm`` package folder. The
    folder may not exist; :func:`require_data` checks.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data"


def require_data(name: str, data_root_: str | Path | None = None) -> Path:
    """The folder of preset ``name`` (or a folder name under the data root).

    Raises DataError saying where it looked and how to point elsewhere.
    """
    root = Path(data_root_) if data_root_ is not None else data_root()
    folder = root / PRESET_FOLDERS.get(name, name)
    if not folder.is_dir():
        where = f"${DATA_ENV}" if os.environ.get(DATA_ENV) and data_root_ is None else "the data root"
        raise DataError(folder, f"data set '{name}' not found (looked in {where}); "
                                f"set {DATA_ENV} to the folder holding {PRESET_FOLDERS.get(name, name)}/")
    if not (folder / "labels.csv").is_file() and name in PRESET_FOLDERS:
        raise DataError(folder / "labels.csv", f"data set '{name}' has no labels.csv")
    return folder


# --------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------
def _check_exists(paths: Sequence[Path], where: Callable[[int], str]) -> None:
    """Raise DataError for the first path that is not a regular file."""
    for i, p in enumerate(paths):
        if not p.is_file():
            what = "is a folder, not an image file" if p.is_dir() else "image file not found"
            raise DataError(p, f"{what} ({where(i)})")


def _finish(name: str, root: Path, samples: list[Sample], source: Path, taxonomy,
            check_files: bool, where: Callable[[int], str]) -> Dataset:
    if not samples:
        raise DataError(source, "no images: the data set is empty")
    seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        key = os.path.normcase(os.path.normpath(str(s.path)))
        if key in seen:
            raise DataError(source, f"duplicate image path {s.path} ({where(i)}; first at {where(seen[key])})")
        seen[key] = i
    if check_files:
        _check_exists([s.path for s in samples], where)
    ds = Dataset(name, root, samples)
    if taxonomy is not None:
        ds.check_labels(taxonomy, source)
    return ds


def read_csv(csv_path: str | Path, image_col: str = "image", label_col: str = "label",
             group_col: str | None = None, root: str | Path | None = None, *,
             name: str | None = None, taxonomy=None, check_files: bool = True,
             exclude_labels: Collection[str] = (),
             row_filter: Callable[[dict[str, str]], bool] | None = None,
             group_fn: Callable[[dict[str, str]], str] | None = None) -> Dataset:
    """Read a label CSV.

    ``image_col`` holds paths relative to ``root`` (default: the CSV's folder)
    or absolute. The group is ``group_col``'s value, else ``group_fn(row)``,
    else the image file's stem (every image its own group).
    ``exclude_labels`` / ``row_filter`` drop rows before validation.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DataError(csv_path, "CSV is empty (no header row)")
            needed = [image_col, label_col] + ([group_col] if group_col else [])
            missing = [c for c in needed if c not in header]
            if missing:
                raise DataError(csv_path, f"missing column(s) {', '.join(map(repr, missing))}; "
                                          f"columns are {', '.join(header)}")
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DataError(csv_path, "label file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(csv_path, f"not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(csv_path, f"malformed CSV: {exc}") from None

    exclude = set(exclude_labels)
    samples: list[Sample] = []
    lines: list[int] = []
    for line, row in rows:
        if None in row:  # more cells than header columns
            raise DataError(csv_path, f"line {line}: more cells than header columns")
        image = (row.get(image_col) or "").strip()
        label = (row.get(label_col) or "").strip()
        if not image and not label and all(not (v or "").strip() for v in row.values()):
            continue  # blank line
        if not image:
            raise DataError(csv_path, f"line {line}: empty {image_col!r} cell")
        if not label:
            raise DataError(csv_path, f"line {line}: empty {label_col!r} cell for {image}")
        if label in exclude or (row_filter is not None and not row_filter(row)):
            continue
        path = Path(image)
        path = path if path.is_absolute() else root / path
        if group_col:
            group = (row.get(group_col) or "").strip()
            if not group:
                raise DataError(csv_path, f"line {line}: empty {group_col!r} cell for {image}")
        elif group_fn is not None:
            group = group_fn(row)
        else:
            group = path.stem
        samples.append(Sample(path, label, group))
        lines.append(line)
    return _finish(name or csv_path.parent.name, root, samples, csv_path, taxonomy, check_files,
                   lambda i: f"{csv_path.name} line {lines[i]}")


def read_folder(root: str | Path, *, name: str | None = None, taxonomy=None,
                extensions: Collection[str] = IMAGE_EXTENSIONS,
                group_fn: Callable[[Path, str], str] | None = None) -> Dataset:
    """Read a class-per-folder tree: ``root/<class>/<image>``.

    Grouping: images directly in a class folder are their own group (the file
    stem, prefixed by the class so equal stems in two classes stay apart);
    images one level deeper, ``root/<class>/<group>/<image>``, share the
    subfolder's group (e.g. several photos of one lesion). ``group_fn(path,
    label)`` overrides both. Hidden files and folders are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    exts = {e.lower() for e in extensions}
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(root, "no class folders (expected root/<class>/<image files>)")
    samples: list[Sample] = []
    for cdir in class_dirs:
        label = cdir.name
        found = []
        for dirpath, dirnames, filenames in os.walk(cdir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith(".") or Path(fn).suffix.lower() not in exts:
                    continue
                found.append(Path(dirpath) / fn)
        if not found:
            raise DataError(cdir, f"class folder {label!r} has no image files ({', '.join(sorted(exts))})")
        for p in found:
            if group_fn is not None:
                group = group_fn(p, label)
            else:
                rel = p.relative_to(cdir)
                group = f"{label}/{rel.parts[0]}" if len(rel.parts) > 1 else f"{label}/{p.stem}"
            samples.append(Sample(p, label, group))
    return _finish(name or root.name, root, samples, root, taxonomy, True,
                   lambda i: f"under {root}")


# --------------------------------------------------------------------------
# Decoding check
# --------------------------------------------------------------------------
def verify_images(dataset: Dataset, min_side: int = 8) -> int:
    """Decode every image with OpenCV; raise DataError on the first bad one.

    Returns the number of images checked. Slow for big sets (about 1 ms per
    small JPEG); readers only check that files exist.
    """
    import cv2

    for s in dataset.samples:
        try:
            data = np.fromfile(str(s.path), dtype=np.uint8)
        except OSError as exc:
            raise DataError(s.path, f"cannot read image file: {exc.strerror or exc}") from None
        if data.size == 0:
            raise DataError(s.path, "image file is empty (0 bytes)")
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(s.path, "cannot decode image (not a JPEG/PNG/... OpenCV can read, or truncated)")
        if min(img.shape[:2]) < min_side:
            raise DataError(s.path, f"image is only {img.shape[1]}x{img.shape[0]} px (need >= {min_side})")
    return len(dataset.samples)


# --------------------------------------------------------------------------
# Presets for the real data
# --------------------------------------------------------------------------
def load(spec: str | Path, data_root: str | Path | None = None) -> Dataset:
    """A preset name (ham10000, pad_ufes20, derm7pt, sd198), a labels CSV, or a
    class-per-folder tree: what ``--data`` accepts."""
    spec = str(spec)
    path = Path(spec)
    if spec in PRESETS:
        return load_preset(spec, data_root)
    if path.suffix.lower() == ".csv":
        # A "group" column (lesion or patient id), when present, keeps a
        # group's images on one side of every split.
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
        except OSError:
            header = []  # read_csv reports the problem with the file's name
        return read_csv(path, group_col="group" if "group" in header else None)
    if path.is_dir():
        return read_folder(path)
    raise DataError(path, f"not found (give a preset: {', '.join(PRESETS)}; a labels .csv; or a folder)")


def load_preset(name: str, data_root: str | Path | None = None, *, taxonomy=None,
                check_files: bool = True, label_col: str | None = None,
                drop_other: bool = False, sd198_max_gap: int = SD198_MAX_GAP,
                sd198_max_span: int = SD198_MAX_SPAN) -> Dataset:
    """Load one of the real data sets under the data root.

    - ``ham10000``: label = HAM ``dx`` code, group = ``lesion_id``.
    - ``pad_ufes20``: label = PAD code, group = ``patient_id``.
    - ``derm7pt``: label = ``diagnosis_group`` (HAM-style codes plus "other")
      or, with ``label_col="label"``, the 20 Derm7pt diagnoses; group =
      ``case_id``. ``drop_other=True`` removes the rows whose
      ``diagnosis_group`` is "other" (melanosis, miscellaneous), as wanted when
      Derm7pt is a HAM-style test set.
    - ``sd198``: label = class, group = block of nearby DermQuest ids
      (:func:`sd198_groups`: gap <= ``sd198_max_gap``, span <= ``sd198_max_span``).
    - ``ood``: label ``ood_*``, every file its own group.
    """
    if name not in PRESET_FOLDERS:
        raise DataError(None, f"unknown data set preset {name!r}; choose one of {', '.join(PRESETS)}")
    folder = require_data(name, data_root)
    csv_path = folder / "labels.csv"
    if name != "derm7pt" and (label_col not in (None, "label") or drop_other):
        raise DataError(csv_path, "label_col / drop_other apply to the derm7pt preset only")
    kw = dict(name=name, taxonomy=taxonomy, check_files=check_files)
    if name == "ham10000":
        return read_csv(csv_path, group_col=GROUP_COLUMNS[PRESET_FOLDERS[name]], **kw)
    if name == "pad_ufes20":
        return read_csv(csv_path, group_col=GROUP_COLUMNS[PRESET_FOLDERS[name]], **kw)
    if name == "derm7pt":
        col = label_col or "diagnosis_group"
        if col not in ("diagnosis_group", "label"):
            raise DataError(csv_path, f"derm7pt label_col must be 'diagnosis_group' or 'label', not {col!r}")
        row_filter = (lambda row: row.get("diagnosis_group", "").strip() != "other") if drop_other else None
        return read_csv(csv_path, label_col=col, group_col=GROUP_COLUMNS[PRESET_FOLDERS[name]], row_filter=row_filter, **kw)
    if name == "sd198":
        ds = read_csv(csv_path, **kw)
        groups = sd198_groups(ds.labels(), [s.path.name for s in ds.samples], sd198_max_gap, sd198_max_span)
        ds.samples = [Sample(s.path, s.label, g) for s, g in zip(ds.samples, groups)]
        return ds
    # ood
    return read_csv(csv_path, **kw)
