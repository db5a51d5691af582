"""The synthetic demo data set (procedural; not dermatology)."""
from __future__ import annotations

import csv
import time

import cv2
import numpy as np
import pytest

from mobile_derm.datasets import synthetic as S
from mobile_derm.datasets.sources import verify_images
from mobile_derm.errors import ConfigError
from mobile_derm.datasets.splits import split_grouped


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    t = time.perf_counter()
    ds = S.generate_demo_dataset(out, lesions_per_class=6, views_per_lesion=3, size=96, seed=0)
    return out, ds, time.perf_counter() - t


def _features(path):
    """Lesion colour relative to the surrounding skin, centre colour (Lab a, b),
    colour spread and texture: simple hand-made features, no learning."""
    img = cv2.imread(str(path)).astype(np.float32)
    h, w = img.shape[:2]
    centre = img[3 * h // 8: 5 * h // 8, 3 * w // 8: 5 * w // 8]
    border = np.concatenate([img[: h // 8].reshape(-1, 3), img[-h // 8:].reshape(-1, 3),
                             img[:, : w // 8].reshape(-1, 3), img[:, -w // 8:].reshape(-1, 3)])
    ratio = centre.reshape(-1, 3).mean(0) / (border.mean(0) + 1.0)
    lab = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2LAB).astype(np.float32)
    cl = lab[3 * h // 8: 5 * h // 8, 3 * w // 8: 5 * w // 8].reshape(-1, 3)
    lap = cv2.Laplacian(cv2.cvtColor(centre, cv2.COLOR_BGR2GRAY), cv2.CV_32F)
    return np.concatenate([np.log(ratio), cl.mean(0)[1:], cl.std(0), [np.log(lap.std() + 1.0)]])


def test_layout_labels_and_groups(demo):
    out, ds, seconds = demo
    assert len(ds) == 6 * 6 * 3 and ds.name == "demo"
    assert ds.classes == sorted(S.DEMO_CLASSES)
    assert set(ds.class_counts().values()) == {18}
    assert ds.n_groups() == 36
    groups = {}
    for s in ds:
        groups.setdefault(s.group, []).append(s)
    assert all(len(v) == 3 and len({x.label for x in v}) == 1 for v in groups.values())
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "label", "group"] and len(rows) == 109
    assert "NOT dermatology" in (out / "DEMO_DATA.txt").read_text()
    assert verify_images(ds) == 108
    img = cv2.imread(str(ds[0].path))
    assert img.shape == (96, 96, 3)
    assert seconds < 10


def test_deterministic_bytes(demo, tmp_path):
    out, ds, _ = demo
    again = S.generate_demo_dataset(tmp_path / "a", classes=["demo_bcc_like", "demo_nevus_like"],
                                    lesions_per_class=2, views_per_lesion=3, size=96, seed=0)
    for s in again:
        rel = again.relative_path(s)
        assert (tmp_path / "a" / rel).read_bytes() == (out / rel).read_bytes(), rel
    other = S.render_lesion_views("demo_bcc_like", 0, 3, 96, seed=1)
    same = S.render_lesion_views("demo_bcc_like", 0, 3, 96, seed=0)
    assert not np.array_equal(other[0], same[0])
    assert np.array_equal(same[1], S.render_lesion_views("demo_bcc_like", 0, 3, 96, seed=0)[1])


def test_views_differ_but_lesions_are_consistent(demo):
    _, ds, _ = demo
    v = [cv2.imread(str(s.path)) for s in ds if s.group == "demo_melanoma_like_000"]
    assert not np.array_equal(v[0], v[1])


def test_classes_distinguishable(demo):
    """Nearest-centroid on simple colour/texture features, trained on some
    lesions and tested on other lesions, is far above chance (1/6)."""
    _, ds, _ = demo
    sp = split_grouped(ds, (0.5, 0.0, 0.5), seed=0)
    x = np.array([_features(s.path) for s in ds])
    y = ds.label_indices()
    mu, sd = x[sp.train].mean(0), x[sp.train].std(0) + 1e-6
    z = (x - mu) / sd
    cents = np.array([z[sp.train][y[sp.train] == k].mean(0) for k in range(len(ds.classes))])
    pred = np.argmin(((z[sp.test][:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    acc = (pred == y[sp.test]).mean()
    assert acc > 0.7, acc
    # and the class means of the standardised features differ pairwise
    means = np.array([z[y == k].mean(0) for k in range(len(ds.classes))])
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert d[~np.eye(len(means), dtype=bool)].min() > 1.0


def test_demo_taxonomy_and_errors(tmp_path):
    tax = S.demo_taxonomy()
    assert tax.labels() == list(S.DEMO_CLASSES)
    assert all(tax[l].demo for l in S.DEMO_CLASSES)
    assert tax["demo_melanoma_like"].malignant and not tax["demo_nevus_like"].malignant
    with pytest.raises(ConfigError, match="unknown demo class"):
        S.generate_demo_dataset(tmp_path, classes=["demo_nevus_like", "eczema"])
    with pytest.raises(ConfigError):
        S.generate_demo_dataset(tmp_path, size=8)
