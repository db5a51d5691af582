"""Grouped, stratified splits and k-fold of mobile_derm.datasets.splits."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mobile_derm.datasets import sources as D
from mobile_derm.errors import DataError
from mobile_derm.datasets.splits import Split, grouped_kfold, split_grouped


def make_dataset(spec: dict[str, tuple[int, int]], seed: int = 0, root: str = "/data") -> D.Dataset:
    """Synthetic listing (no files): class -> (groups, max images per group)."""
    rng = np.random.default_rng(seed)
    samples = []
    for c, (n_groups, max_per) in spec.items():
        for g in range(n_groups):
            for v in range(int(rng.integers(1, max_per + 1))):
                samples.append(D.Sample(Path(root) / c / f"{g}_{v}.jpg", c, f"{c}-{g}"))
    return D.Dataset("toy", Path(root), samples)


@pytest.fixture(scope="module")
def toy():
    return make_dataset({"nv": (400, 3), "mel": (80, 4), "bcc": (40, 2), "df": (9, 3), "vasc": (3, 1)})


def _groups(ds, idx):
    return {ds.samples[i].group for i in idx}


def test_disjoint_by_group_and_complete(toy):
    sp = split_grouped(toy, seed=0)
    tr, va, te = (_groups(toy, p) for p in (sp.train, sp.val, sp.test))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert sorted(sp.train + sp.val + sp.test) == list(range(len(toy)))
    sp.check(toy)  # raises if not


def test_stratified_within_tolerance(toy):
    sp = split_grouped(toy, (0.70, 0.15, 0.15), seed=0)
    counts = sp.class_counts(toy)
    total = toy.class_counts()
    for c in ("nv", "mel", "bcc"):
        for part, f in zip(("train", "val", "test"), (0.70, 0.15, 0.15)):
            assert abs(counts[part][c] / total[c] - f) <= 0.03, (c, part, counts[part][c], total[c])
    # a tiny class (3 groups) still reaches every part, one group each
    assert [counts[p]["vasc"] for p in ("train", "val", "test")] == [1, 1, 1]
    for c in toy.classes:
        assert all(counts[p][c] > 0 for p in ("train", "val", "test")), c
    sizes = sp.sizes()
    assert abs(sizes["train"] / len(toy) - 0.70) < 0.02 and abs(sizes["test"] / len(toy) - 0.15) < 0.02


def test_multiclass_groups_stay_together():
    # groups holding two classes (a patient with two lesions) are never cut
    samples = []
    for g in range(60):
        samples.append(D.Sample(Path(f"/d/{g}a.jpg"), "A", f"p{g}"))
        if g % 3 == 0:
            samples.append(D.Sample(Path(f"/d/{g}b.jpg"), "B", f"p{g}"))
    for g in range(60, 90):
        samples.append(D.Sample(Path(f"/d/{g}b.jpg"), "B", f"p{g}"))
    ds = D.Dataset("mc", Path("/d"), samples)
    sp = split_grouped(ds, seed=3)
    sp.check(ds)
    counts = sp.class_counts(ds)
    assert abs(counts["train"]["B"] / 50 - 0.7) <= 0.1


def test_deterministic_and_seed_dependent(toy):
    a, b = split_grouped(toy, seed=0), split_grouped(toy, seed=0)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    c = split_grouped(toy, seed=1)
    assert c.test != a.test
    # sample order does not matter: same groups land in the same parts
    rev = D.Dataset(toy.name, toy.root, list(reversed(toy.samples)))
    r = split_grouped(rev, seed=0)
    assert _groups(rev, r.test) == _groups(toy, a.test)


def test_too_few_groups_message():
    ds = make_dataset({"nv": (20, 2), "df": (2, 3)})
    n_df = ds.class_counts()["df"]
    with pytest.raises(DataError) as e:
        split_grouped(ds)
    msg = e.value.problem
    assert f"class 'df' has 2 group(s) ({n_df} images)" in msg and "at least 3 groups" in msg
    # two parts are enough for two groups
    sp = split_grouped(ds, (0.8, 0.2, 0.0))
    assert sp.val == [] or sp.test == []
    with pytest.raises(DataError, match="class 'df' has 2 group"):
        grouped_kfold(ds, k=5)
    with pytest.raises(ValueError):
        split_grouped(ds, (0.5, 0.2, 0.2))


def test_kfold_covers_every_sample_once(toy):
    toy = toy.drop_labels(["vasc"])  # 3 groups: too few for 5 folds
    folds = grouped_kfold(toy, k=5, seed=0)
    assert len(folds) == 5 and [f.fold for f in folds] == list(range(5))
    tested = Counter(i for f in folds for i in f.test)
    assert sorted(tested) == list(range(len(toy))) and set(tested.values()) == {1}
    for f in folds:
        f.check(toy)
        assert sorted(f.train + f.test) == list(range(len(toy)))
        assert not _groups(toy, f.train) & _groups(toy, f.test)
        share = f.class_counts(toy)["test"]["nv"] / toy.class_counts()["nv"]
        assert abs(share - 0.2) < 0.03
    withval = grouped_kfold(toy, k=5, seed=0, with_val=True)
    assert withval[0].val == folds[1].test and withval[0].test == folds[0].test
    assert not set(withval[0].val) & set(withval[0].train)


def test_save_load_roundtrip_and_mismatch(tmp_path, toy):
    sp = split_grouped(toy, seed=7)
    path = tmp_path / "split.json"
    sp.save(path)
    d = json.loads(path.read_text())
    assert d["seed"] == 7 and d["fractions"] == [0.7, 0.15, 0.15]
    assert d["listing_hash"] == toy.listing_hash()
    first = d["parts"]["test"][0]
    assert first["image"] == toy.relative_path(sp.test[0]) and not first["image"].startswith("/")
    assert first["label"] == toy.samples[sp.test[0]].label

    back = Split.load(path, toy)
    assert (back.train, back.val, back.test) == (sp.train, sp.val, sp.test)
    assert back.seed == 7 and back.fractions == (0.7, 0.15, 0.15)
    # loads onto a re-ordered copy of the same data via the stored paths
    rev = D.Dataset(toy.name, toy.root, list(reversed(toy.samples)))
    moved = Split.load(path, rev)
    assert [rev.relative_path(i) for i in moved.test] == [toy.relative_path(i) for i in sp.test]
    # the same data at another location is the same listing
    elsewhere = D.Dataset(toy.name, Path("/mnt/other"),
                          [D.Sample(Path("/mnt/other") / toy.relative_path(s), s.label, s.group) for s in toy])
    assert Split.load(path, elsewhere).test == sp.test

    changed = D.Dataset(toy.name, toy.root, toy.samples[:-1])
    with pytest.raises(DataError) as e:
        Split.load(path, changed)
    assert e.value.path == str(path) and "different data listing" in e.value.problem
    with pytest.raises(DataError, match="different data listing"):
        sp.check(changed)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a split JSON"):
        Split.load(path)


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_ham10000_split_real(real_data_root):
    ham = D.load_preset("ham10000", real_data_root)
    sp = split_grouped(ham, seed=0)
    sp.check(ham)
    total = ham.class_counts()
    counts = sp.class_counts(ham)
    for c in ham.classes:
        for part, f in zip(("train", "val", "test"), (0.70, 0.15, 0.15)):
            assert abs(counts[part][c] / total[c] - f) < 0.02, (c, part)
    assert abs(sp.sizes()["test"] - 1502) < 30


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["pad_ufes20", "sd198"])
def test_kfold_real(real_data_root, name):
    ds = D.load_preset(name, real_data_root)
    folds = grouped_kfold(ds, k=5, seed=0)
    assert sorted(i for f in folds for i in f.test) == list(range(len(ds)))
    for f in folds:
        f.check(ds)
        assert min(f.class_counts(ds)["test"].values()) > 0
