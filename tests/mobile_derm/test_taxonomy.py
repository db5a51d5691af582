"""Taxonomy file, malignancy / treatment scores and threshold choice."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mobile_derm.datasets import sources as D
from mobile_derm.errors import DataError
from mobile_derm.taxonomy import TREATMENTS, Taxonomy, choose_thresholds, malignancy_score, treatment_scores

LABELS = ["bcc", "mel", "nv", "akiec"]


@pytest.fixture(scope="module")
def tax():
    return Taxonomy.load()


def test_shipped_file_is_valid(tax):
    assert len(tax) >= 69
    for label, e in tax.entries.items():
        assert e.display_name and set(e.treatments) <= set(TREATMENTS)
        assert e.treatments or e.ood, label
    # the documented malignancy choices
    assert tax["akiec"].malignant and not tax["ACK"].malignant
    assert {l for l in ("BCC", "MEL", "SCC", "ACK", "NEV", "SEK") if tax[l].malignant} == {"BCC", "MEL", "SCC"}
    assert {l for l in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc") if tax[l].malignant} == {"akiec", "bcc", "mel"}
    assert "pre-malignant" in tax["ACK"].notes.lower()
    assert "surgery_biopsy" in tax["Cutaneous_Horn"].treatments
    assert tax["Herpes_Simplex_Virus"].treatments == ("antiviral",)
    assert "antifungal" in tax["Tinea_Corporis"].treatments and "antifungal" in tax["Onychomycosis"].treatments
    assert "antibiotic" in tax["Cellulitis"].treatments
    for l in ("Eczema", "Psoriasis", "Lichen_Planus", "Atopic_Dermatitis"):
        assert "steroid" in tax[l].treatments
    for l in ("melanoma (in situ)", "melanoma (more than 1.5 mm)", "Malignant_Melanoma", "Lentigo_Maligna_Melanoma"):
        assert tax[l].malignant and "surgery_biopsy" in tax[l].treatments
    assert len(tax.demo_labels()) == 6


def test_for_labels_unknown(tax):
    got = tax.for_labels(["nv", "mel"])
    assert list(got) == ["nv", "mel"] and got["mel"].malignant
    with pytest.raises(DataError) as e:
        tax.for_labels(["nv", "eczemaa", "psoriasis"])
    assert "'eczemaa'" in e.value.problem and "'psoriasis'" in e.value.problem and "2 label(s)" in e.value.problem
    assert e.value.path.endswith("taxonomy.json")


def test_malignancy_score_hand_example(tax):
    probs = np.array([[0.10, 0.20, 0.60, 0.10],
                      [0.00, 0.00, 1.00, 0.00],
                      [0.25, 0.25, 0.25, 0.25]])
    got = tax.malignancy_score(probs, LABELS)
    np.testing.assert_allclose(got, [0.40, 0.0, 0.75])
    assert tax.malignancy_score(probs[0], LABELS) == pytest.approx(0.40)
    assert malignancy_score(probs, LABELS) == pytest.approx([0.40, 0.0, 0.75])
    with pytest.raises(ValueError, match="n_classes=4"):
        tax.malignancy_score(np.ones((2, 3)) / 3, LABELS)


def test_treatment_scores_hand_example(tax):
    labels = ["Tinea_Corporis", "Herpes_Simplex_Virus", "Psoriasis", "Basal_Cell_Carcinoma"]
    probs = np.array([[0.5, 0.2, 0.2, 0.1], [0.0, 0.0, 0.0, 1.0]])
    s = tax.treatment_scores(probs, labels)
    assert list(s) == list(TREATMENTS)
    np.testing.assert_allclose(s["antifungal"], [0.5, 0.0])
    np.testing.assert_allclose(s["antiviral"], [0.2, 0.0])
    np.testing.assert_allclose(s["steroid"], [0.2, 0.0])
    np.testing.assert_allclose(s["surgery_biopsy"], [0.1, 1.0])
    np.testing.assert_allclose(s["destructive"], [0.1, 1.0])
    np.testing.assert_allclose(s["antibiotic"], [0.0, 0.0])
    one = treatment_scores(probs[0], labels)
    assert one["antifungal"] == pytest.approx(0.5) and isinstance(one["antifungal"], float)


def test_choose_thresholds_hand_example():
    # 10 malignant, 10 benign
    pos = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55, 0.5, 0.3, 0.1])
    neg = np.array([0.65, 0.45, 0.4, 0.35, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0])
    y = np.r_[np.ones(10), np.zeros(10)]
    s = np.r_[pos, neg]
    t = choose_thresholds(y, s)
    # sensitivity >= 0.9 needs 9 of 10 positives >= t -> highest t = 0.3
    assert t["sensitive"] == pytest.approx(0.3)
    # specificity >= 0.9 needs 9 of 10 negatives < t -> lowest observed t above 0.45 is 0.5
    assert t["specific"] == pytest.approx(0.5)
    sens = lambda th: (pos >= th).mean()
    spec = lambda th: (neg < th).mean()
    assert sens(t["sensitive"]) >= 0.9 and spec(t["specific"]) >= 0.9
    # they are the extreme such thresholds among the observed scores
    higher = s[s > t["sensitive"]]
    assert all(sens(h) < 0.9 for h in higher)
    lower = s[s < t["specific"]]
    assert all(spec(l) < 0.9 for l in lower)
    with pytest.raises(DataError, match="0 malignant"):
        choose_thresholds(np.zeros(4), np.arange(4) / 4)


def test_choose_thresholds_random_meets_targets():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    t = choose_thresholds(y, s, 0.95, 0.85)
    assert (s[y] >= t["sensitive"]).mean() >= 0.95
    assert (s[~y] < t["specific"]).mean() >= 0.85
    assert (s[y] >= np.nextafter(t["sensitive"], 2)).mean() < 0.95


def test_bad_taxonomy_files(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"classes": {"x": {"display_name": "X", "malignant": "yes", "treatments": []}}}))
    with pytest.raises(DataError, match="malignant must be true or false"):
        Taxonomy.load(p)
    p.write_text(json.dumps({"classes": {"x": {"display_name": "X", "malignant": False, "treatments": ["cream"]}}}))
    with pytest.raises(DataError, match="unknown treatment.*'cream'"):
        Taxonomy.load(p)
    p.write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        Taxonomy.load(p)
    t = Taxonomy.load().subset(["nv", "mel"])
    t.save(tmp_path / "sub.json")
    back = Taxonomy.load(tmp_path / "sub.json")
    assert back.labels() == ["nv", "mel"] and back["mel"] == t["mel"]


@pytest.mark.realdata
def test_covers_every_preset_label(real_data_root, tax):
    for name in D.PRESETS:
        ds = D.load_preset(name, real_data_root, check_files=False)
        tax.for_labels(ds.classes)  # raises on any missing label
        ds.check_labels(tax)
    d7 = D.load_preset("derm7pt", real_data_root, label_col="label", check_files=False)
    assert len(tax.for_labels(d7.classes)) == 20
