"""The photo sets' fit and report halves (by patient, case or lesion) and the second non-skin set."""
import csv
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobile_derm_quality.gate_eval import gate_eval
from mobile_derm_quality.groups import GROUP_COLUMNS, SD198_FOLDER, set_groups
from mobile_derm_quality.photo_sets import NONSKIN_REPORT_SET, NONSKIN_SET, OOD_SET, fit_half, read_rows


def _pad_rows(n_patients=40, per_patient=3):
    return [{"image": f"images/PAT_{p}_{k}.jpg", "patient_id": f"PAT_{p}"}
            for p in range(n_patients) for k in range(per_patient)]


def test_fit_half_keeps_each_patient_on_one_side_whatever_the_row_order():
    rows = _pad_rows()
    side = dict(zip((r["image"] for r in rows), fit_half("pad_ufes20_subset", rows)))
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(side[r["image"]])
    assert all(len(s) == 1 for s in by_patient.values())
    assert 0.25 < np.mean(list(side.values())) < 0.75  # both halves get patients
    shuffled = random.Random(0).sample(rows, len(rows))
    assert dict(zip((r["image"] for r in shuffled), fit_half("pad_ufes20_subset", shuffled))) == side


def test_fit_half_follows_the_group_column_not_the_file_name():
    # the same file names with every photo its own patient, then all of one patient: the halves differ
    own = [{"image": r["image"], "patient_id": r["image"]} for r in _pad_rows()]
    one = [{"image": r["image"], "patient_id": "PAT_0"} for r in _pad_rows()]
    assert len(set(fit_half("pad_ufes20_subset", one))) == 1
    assert len(set(fit_half("pad_ufes20_subset", own))) == 2
    # a set with no group column: the file name decides, so one name always lands on the same side
    rows = [{"image": f"images/{i}.jpg"} for i in range(20)]
    assert fit_half(OOD_SET, rows) == fit_half(OOD_SET, list(reversed(rows)))[::-1]
    assert len(set(fit_half(OOD_SET, rows))) == 2  # names differing in one digit still split


def test_sd198_blocks_of_nearby_ids_share_a_half():
    rows = [{"image": f"images/Psoriasis__04260{k}HB.jpg", "label": "Psoriasis"} for k in (1, 3, 6)]
    rows += [{"image": "images/Psoriasis__042611HB.jpg", "label": "Psoriasis"}]
    groups = set_groups(SD198_FOLDER, rows)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    assert len(set(fit_half(SD198_FOLDER, rows)[:3])) == 1


@pytest.mark.realdata
def test_group_columns_name_real_columns(data_root):
    for folder, column in GROUP_COLUMNS.items():
        rows = read_rows(data_root / folder)
        assert all(r[column].strip() for r in rows), (folder, column)


def _write_set(folder, labels, seed):
    (folder / "images").mkdir(parents=True)
    rows = ["image,label,source_repository,licence"]
    for i, label in enumerate(labels):
        img = np.random.default_rng(seed + i).integers(0, 255, (240, 320, 3), np.uint8)
        cv2.imwrite(str(folder / "images" / f"{i}.jpg"), img)
        rows.append(f"images/{i}.jpg,{label},someone/photos,CC0")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def test_gate_eval_reports_each_non_skin_set_apart_from_ood(tmp_path, make_skin):
    root = tmp_path / "data"
    (root / "pad_ufes20_subset" / "images").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / "pad_ufes20_subset" / "images" / f"{i}.jpg"), make_skin(320, 400, seed=i)[:, :, ::-1])
    (root / "pad_ufes20_subset" / "labels.csv").write_text("image,label\n" + "".join(f"images/{i}.jpg,mel\n" for i in range(3)))
    _write_set(root / OOD_SET, ["ood_natural_photo"] * 2, 0)
    # absent: reported as skipped, with the reason
    rep = gate_eval(root, tmp_path / "a", degrade_per_set=0, progress=False, plots=False)
    assert rep["nonskin_free_reject_rate"] is None and "not found" in rep[NONSKIN_SET]["skipped"]
    assert "nonskin_free_reject_rate: not measured" in (tmp_path / "a" / "gate_eval.md").read_text()
    _write_set(root / NONSKIN_SET, ["nonskin_food", "nonskin_food", "nonskin_animal"], 10)
    rep = gate_eval(root, tmp_path / "b", degrade_per_set=0, progress=False, plots=False)
    free = json.loads((tmp_path / "b" / "gate_eval.json").read_text())[NONSKIN_SET]
    assert free["n"] == 3 and rep["ood"]["n"] == 2  # each set on its own
    assert 0 <= free["reject_rate"] <= 1 and free["reject_rate"] == rep["nonskin_free_reject_rate"]
    lo, hi = free["reject_ci95"]
    assert 0 <= lo <= free["reject_rate"] <= hi <= 1
    assert {k: v["n"] for k, v in free["by_label"].items()} == {"nonskin_animal": 1, "nonskin_food": 2}
    assert len(json.loads((tmp_path / "b" / "gate_eval_nonskin_free.json").read_text())) == 3
    assert "**nonskin_free_reject_rate:" in (tmp_path / "b" / "gate_eval.md").read_text()
    # the third set (never fitted on) is reported on its own, beside the others
    assert rep["nonskin_report_reject_rate"] is None and "not found" in rep[NONSKIN_REPORT_SET]["skipped"]
    _write_set(root / NONSKIN_REPORT_SET, ["nonskin_texture"] * 4, 20)
    rep = gate_eval(root, tmp_path / "c", degrade_per_set=0, progress=False, plots=False)
    held = rep[NONSKIN_REPORT_SET]
    assert held["n"] == 4 and rep[NONSKIN_SET]["n"] == 3 and rep["ood"]["n"] == 2
    assert held["reject_rate"] == rep["nonskin_report_reject_rate"] and set(held) >= {"reject_ci95", "reasons"}
    assert len(json.loads((tmp_path / "c" / "gate_eval_nonskin_report.json").read_text())) == 4
    assert "**nonskin_report_reject_rate:" in (tmp_path / "c" / "gate_eval.md").read_text()
    # the clean figures: the report half as the headline, the fit half beside it
    pad = rep["clean"]["pad_ufes20_subset"]
    assert pad["n_report"] + pad["n_fit"] == pad["n"] == 3


@pytest.fixture
def nonskin_root(data_root):
    if not (data_root / NONSKIN_SET).is_dir():
        pytest.skip(f"{data_root / NONSKIN_SET} not found (the second non-skin set; see its SOURCE.md)")
    return data_root


@pytest.mark.realdata
def test_nonskin_free_lists_exactly_its_files_each_with_source_and_licence(nonskin_root):
    folder = nonskin_root / NONSKIN_SET
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    listed = [r["image"] for r in rows]
    assert len(listed) == len(set(listed)) >= 100
    assert set(listed) == {f"images/{p.name}" for p in (folder / "images").iterdir()}
    for r in rows:
        assert r["licence"].strip() and r["source_repository"].strip() and r["original_path"].strip(), r["image"]
        assert len(r["commit"]) == 40, r["image"]
        assert max(int(r["width"]), int(r["height"])) <= 600, r["image"]
    ood_names = {r["image"].split("/")[-1] for r in read_rows(nonskin_root / OOD_SET)}
    assert not ood_names & {n.split("/")[-1] for n in listed}


@pytest.mark.realdata
def test_default_gate_reject_rate_on_nonskin_free_is_reported(nonskin_root, tmp_path, make_skin):
    root = tmp_path / "data"
    (root / "pad_ufes20_subset" / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "pad_ufes20_subset" / "images" / "0.jpg"), make_skin(320, 400)[:, :, ::-1])
    (root / "pad_ufes20_subset" / "labels.csv").write_text("image,label\nimages/0.jpg,mel\n")
    (root / NONSKIN_SET).symlink_to(nonskin_root / NONSKIN_SET)
    rep = gate_eval(root, tmp_path / "out", degrade_per_set=0, progress=False, plots=False)
    free = rep[NONSKIN_SET]
    assert free["n"] >= 100 and 0 <= free["reject_rate"] <= 1
    assert all(0 <= v["reject_rate"] <= 1 for v in free["by_label"].values())
    assert sum(v["n"] for v in free["by_label"].values()) == free["n"]


@pytest.mark.realdata
def test_the_report_set_on_disk_is_the_one_its_manifest_in_the_repository_lists(data_root):
    """gate-eval's nonskin_report figure is about the photos docs/data/nonskin_report lists, no more, no fewer."""
    folder = data_root / NONSKIN_REPORT_SET
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (build it as docs/data/nonskin_report/SOURCE.md says)")
    manifest = Path(__file__).resolve().parents[2] / "docs" / "data" / NONSKIN_REPORT_SET
    assert read_rows(folder) == read_rows(manifest)
    assert {r["image"] for r in read_rows(folder)} == {f"images/{p.name}" for p in (folder / "images").iterdir()}
