"""Readers, validation and presets of mobile_derm.datasets.sources."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobile_derm.datasets import sources as D
from mobile_derm.errors import DataError


def _img(path: Path, value: int = 100, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))
    return path


def _csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def small(tmp_path):
    """A 5-image CSV data set with groups."""
    for i in range(5):
        _img(tmp_path / "images" / f"im{i}.jpg", 40 * i)
    rows = [("images/im0.jpg", "b", "g1"), ("images/im1.jpg", "a", "g1"), ("images/im2.jpg", "a", "g2"),
            ("images/im3.jpg", "c", "g3"), ("images/im4.jpg", "b", "g4")]
    return _csv(tmp_path / "labels.csv", ["image", "label", "lesion"], rows)


def test_read_csv_values(small, tmp_path):
    ds = D.read_csv(small, group_col="lesion")
    assert len(ds) == 5
    assert ds.classes == ["a", "b", "c"]
    assert ds.samples[0] == D.Sample(tmp_path / "images/im0.jpg", "b", "g1")
    assert ds.class_counts() == {"a": 2, "b": 2, "c": 1}
    assert ds.group_counts() == {"a": 2, "b": 2, "c": 1}
    assert list(ds.labels_array()) == ["b", "a", "a", "c", "b"]
    assert ds.label_indices().tolist() == [1, 0, 0, 2, 1]
    assert ds.relative_path(2) == "images/im2.jpg"
    sub = ds.subset([3, 1])
    assert [s.label for s in sub] == ["c", "a"] and sub.classes == ds.classes
    assert sub.class_counts() == {"a": 1, "b": 0, "c": 1}
    assert ds.drop_labels(["c"]).classes == ["a", "b"]
    assert D.verify_images(ds) == 5


def test_read_csv_default_group_is_stem(small):
    ds = D.read_csv(small)
    assert ds.groups() == ["im0", "im1", "im2", "im3", "im4"]


def test_listing_hash_ignores_order_and_location(small, tmp_path):
    ds = D.read_csv(small, group_col="lesion")
    rev = D.Dataset(ds.name, ds.root, list(reversed(ds.samples)))
    assert rev.listing_hash() == ds.listing_hash()
    relabelled = D.Dataset(ds.name, ds.root, [D.Sample(ds[0].path, "c", ds[0].group)] + ds.samples[1:])
    assert relabelled.listing_hash() != ds.listing_hash()


def test_missing_column(tmp_path):
    _img(tmp_path / "a.jpg")
    p = _csv(tmp_path / "labels.csv", ["file", "label"], [("a.jpg", "x")])
    with pytest.raises(DataError) as e:
        D.read_csv(p)
    assert e.value.path == str(p)
    assert "'image'" in e.value.problem and "file, label" in e.value.problem
    with pytest.raises(DataError, match="missing column.*'patient'"):
        D.read_csv(p, image_col="file", group_col="patient")


def test_missing_image(tmp_path):
    _img(tmp_path / "a.jpg")
    p = _csv(tmp_path / "labels.csv", ["image", "label"], [("a.jpg", "x"), ("gone.jpg", "x")])
    with pytest.raises(DataError) as e:
        D.read_csv(p)
    assert e.value.path == str(tmp_path / "gone.jpg")
    assert "not found" in e.value.problem and "line 3" in e.value.problem
    # check_files=False defers the check (e.g. listing a remote copy)
    assert len(D.read_csv(p, check_files=False)) == 2


def test_unreadable_image_bytes(tmp_path):
    _img(tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    p = _csv(tmp_path / "labels.csv", ["image", "label"], [("a.jpg", "x"), ("bad.jpg", "y")])
    ds = D.read_csv(p)  # existence is fine
    with pytest.raises(DataError) as e:
        D.verify_images(ds)
    assert e.value.path == str(tmp_path / "bad.jpg") and "decode" in e.value.problem
    p2 = _csv(tmp_path / "l2.csv", ["image", "label"], [("empty.jpg", "x")])
    with pytest.raises(DataError, match="empty"):
        D.verify_images(D.read_csv(p2))


def test_duplicate_paths(tmp_path):
    _img(tmp_path / "images" / "a.jpg")
    p = _csv(tmp_path / "labels.csv", ["image", "label"],
             [("images/a.jpg", "x"), ("images/./a.jpg", "y")])
    with pytest.raises(DataError) as e:
        D.read_csv(p)
    assert e.value.path == str(p)
    assert "duplicate image path" in e.value.problem and "line 3" in e.value.problem and "line 2" in e.value.problem


def test_unknown_label_against_taxonomy(small):
    with pytest.raises(DataError) as e:
        D.read_csv(small, taxonomy={"a", "b"})
    assert e.value.path == str(small) and "'c'" in e.value.problem
    from mobile_derm.taxonomy import Taxonomy

    with pytest.raises(DataError, match="'a', 'b', 'c'"):
        D.read_csv(small, taxonomy=Taxonomy.load())


def test_empty_csv_and_empty_cells(tmp_path):
    p = _csv(tmp_path / "labels.csv", ["image", "label"], [])
    with pytest.raises(DataError, match="empty"):
        D.read_csv(p)
    _img(tmp_path / "a.jpg")
    p2 = _csv(tmp_path / "l2.csv", ["image", "label"], [("a.jpg", "")])
    with pytest.raises(DataError, match="line 2: empty 'label'"):
        D.read_csv(p2)
    with pytest.raises(DataError, match="label file not found"):
        D.read_csv(tmp_path / "nope.csv")


def test_read_folder(tmp_path):
    _img(tmp_path / "nv" / "x1.jpg")
    _img(tmp_path / "nv" / "x2.png")
    _img(tmp_path / "mel" / "lesionA" / "v1.jpg")
    _img(tmp_path / "mel" / "lesionA" / "v2.jpg")
    _img(tmp_path / "mel" / "x1.jpg")
    (tmp_path / "nv" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    ds = D.read_folder(tmp_path)
    assert ds.classes == ["mel", "nv"]
    assert len(ds) == 5
    groups = {ds.relative_path(s): s.group for s in ds}
    assert groups["mel/lesionA/v1.jpg"] == groups["mel/lesionA/v2.jpg"] == "mel/lesionA"
    assert groups["mel/x1.jpg"] != groups["nv/x1.jpg"]  # same stem, different class
    assert groups["nv/x2.png"] == "nv/x2"


def test_read_folder_empty(tmp_path):
    with pytest.raises(DataError) as e:
        D.read_folder(tmp_path)
    assert e.value.path == str(tmp_path) and "no class folders" in e.value.problem
    (tmp_path / "nv").mkdir()
    (tmp_path / "nv" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        D.read_folder(tmp_path)
    assert e.value.path == str(tmp_path / "nv") and "no image files" in e.value.problem
    with pytest.raises(DataError, match="not found"):
        D.read_folder(tmp_path / "missing")


def test_sd198_grouping_rule():
    names = ["Psoriasis__042601HB.jpg", "Psoriasis__042603VB.jpg", "Psoriasis__042606HB.jpg",
             "Psoriasis__042611HB.jpg",  # gap 5 -> new block
             "Eczema__042604HB.jpg",  # other class never joins
             "Psoriasis__10295-P1010083.jpg", "Psoriasis__10295-P1010084.jpg",  # same upload number
             "Psoriasis__odd.jpg", "Eczema__043855VB1.jpg"]
    labels = [n.split("__")[0] for n in names]
    g = D.sd198_groups(labels, names)
    assert g[0] == g[1] == g[2] == "Psoriasis/dq042601"
    assert g[3] == "Psoriasis/dq042611"
    assert g[4] == "Eczema/dq042604"
    assert g[5] == g[6] == "Psoriasis/up010295"
    assert g[7] == "Psoriasis/file:Psoriasis__odd"
    assert g[8] == "Eczema/dq043855"
    # a long unbroken run is cut every max_span numbers
    run = [f"A__{40821 + i:06d}HB.jpg" for i in range(0, 40, 2)]
    blocks = D.sd198_groups(["A"] * len(run), run)
    assert len(set(blocks)) == 4 and blocks[:5] == ["A/dq040821"] * 5 and blocks[5] == "A/dq040831"


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert D.data_root() == tmp_path
    with pytest.raises(DataError) as e:
        D.require_data("ham10000")
    assert e.value.path == str(tmp_path / "ham10000_200px") and D.DATA_ENV in e.value.problem
    monkeypatch.delenv(D.DATA_ENV)
    assert D.data_root() == Path(D.__file__).resolve().parents[3] / "shared" / "data"
    with pytest.raises(DataError, match="unknown data set preset 'nope'"):
        D.load_preset("nope", tmp_path)


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_presets_real(real_data_root):
    ham = D.load_preset("ham10000", real_data_root)
    assert len(ham) == 10015 and ham.n_groups() == 7470
    assert ham.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert ham.class_counts()["nv"] == 6705 and ham.group_counts()["df"] == 73

    pad = D.load_preset("pad_ufes20", real_data_root)
    assert (len(pad), pad.n_groups()) == (745, 582)
    assert pad.classes == ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]

    d7 = D.load_preset("derm7pt", real_data_root)
    assert len(d7) == 1011 and d7.class_counts()["other"] == 24 and len(d7.classes) == 7
    d7h = D.load_preset("derm7pt", real_data_root, drop_other=True)
    assert len(d7h) == 987 and "other" not in d7h.classes
    d7f = D.load_preset("derm7pt", real_data_root, label_col="label")
    assert len(d7f.classes) == 20 and d7f.class_counts()["clark nevus"] == 399
    assert len(D.load_preset("derm7pt", real_data_root, label_col="label", drop_other=True).classes) == 18

    sd = D.load_preset("sd198", real_data_root)
    assert len(sd) == 800 and len(sd.classes) == 27
    assert sd.n_groups() == 432 and min(sd.group_counts().values()) == 6
    by = {s.path.name: s.group for s in sd}
    assert by["Pityriasis_Rosea__040821VB.jpg"] == by["Pityriasis_Rosea__040822VB.jpg"]

    ood = D.load_preset("ood", real_data_root)
    assert len(ood) == 50 and ood.classes == ["ood_grayscale", "ood_natural_photo"]
    assert D.verify_images(ood.subset(range(5))) == 5
