"""Checks on the real photos in ../shared/data (skipped when absent, but never in CI)."""
import csv

import numpy as np
import pytest

from mobile_derm_quality import check_photo, read_image

pytestmark = pytest.mark.realdata


def _paths(root, ds, n, seed=0):
    rows = list(csv.DictReader(open(root / ds / "labels.csv", newline="")))
    idx = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [root / ds / rows[i]["image"] for i in idx]


def test_clean_phone_photos_mostly_pass(data_root):
    paths = [p for ds in ("pad_ufes20_subset", "sd198_subset", "derm7pt_dermoscopic") for p in _paths(data_root, ds, 40)]
    ok = [check_photo(p).decision != "reject" for p in paths if min(read_image(p).shape[:2]) >= 300]
    assert np.mean(ok) >= 0.9, np.mean(ok)


def test_ham10000_copies_fail_resolution(data_root):
    for p in _paths(data_root, "ham10000_200px", 10):
        v = check_photo(p)
        assert v.decision == "reject" and "too_small" in v.reasons


def test_ood_mostly_rejected_by_some_check(data_root):
    vs = [check_photo(p) for p in _paths(data_root, "ood", 50)]
    rate = np.mean([v.decision == "reject" for v in vs])
    # Measured 0.88 with the default config (docs/results/gate_eval.json; 0.70 before the not-skin
    # contrast, 0.42 with colour rules alone): this guards the not-skin check against regressions,
    # it is not the acceptance target (0.9).
    assert rate >= 0.8, rate
    grey = [v for p, v in zip(_paths(data_root, "ood", 50), vs) if "skimage_brick" in p.name or "gravel" in p.name]
    assert all(v.decision == "reject" for v in grey)
