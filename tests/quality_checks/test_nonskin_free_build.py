"""docs/data/nonskin_free/build.py: each manifest row read from its git mirror at its commit, shrunk to at most
600 px and checked against the recorded size; a wrong size or a missing file stops the build."""
import csv
import importlib.util
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobile_derm_quality.photo_sets import read_rows

BUILD = Path(__file__).resolve().parents[2] / "docs" / "data" / "nonskin_free" / "build.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("nonskin_free_build", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def mirror(tmp_path):
    """A one-commit repository ``owner/repo`` under tmp_path/mirrors holding a 900x450 PNG; (mirrors, commit)."""
    work = tmp_path / "mirrors" / "owner+repo" / "repo"
    (work / "pics").mkdir(parents=True)
    img = np.zeros((450, 900, 3), np.uint8)
    img[:, :450] = (30, 120, 200)
    cv2.imwrite(str(work / "pics" / "a.png"), img)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "a"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return tmp_path / "mirrors", commit


def _row(commit, width=600, height=300, path="pics/a.png"):
    return {"image": "images/a.jpg", "source_repository": "owner/repo", "commit": commit, "original_path": path,
            "width": str(width), "height": str(height)}


def test_a_row_is_read_at_its_commit_and_shrunk_to_600_px(build, mirror):
    mirrors, commit = mirror
    img = build.build_one(_row(commit), mirrors)
    assert img.shape == (300, 600, 3)
    assert tuple(img[150, 100]) == (30, 120, 200) and tuple(img[150, 500]) == (0, 0, 0)


def test_a_size_other_than_the_manifest_s_or_a_missing_file_stops_the_build(build, mirror):
    mirrors, commit = mirror
    with pytest.raises(SystemExit, match="labels.csv says 640x320"):
        build.build_one(_row(commit, 640, 320), mirrors)
    with pytest.raises(SystemExit, match="cannot read pics/b.png"):
        build.build_one(_row(commit, path="pics/b.png"), mirrors)
    with pytest.raises(SystemExit, match="no git mirror of other/repo"):
        build.build_one({**_row(commit), "source_repository": "other/repo"}, mirrors)


def test_another_manifest_builds_its_own_set_with_its_source_md(build, mirror, tmp_path):
    mirrors, commit = mirror
    folder = tmp_path / "other_set"
    folder.mkdir()
    row = {**_row(commit), "label": "nonskin_texture", "licence": "CC0 1.0", "licence_evidence": "README"}
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    (folder / "SOURCE.md").write_text("# other set\n")
    out = tmp_path / "data" / "other_set"
    assert build.main(["--manifest", str(folder / "labels.csv"), "--mirrors", str(mirrors), "--out", str(out)]) == 0
    assert cv2.imread(str(out / "images" / "a.jpg")).shape == (300, 600, 3)
    assert (out / "SOURCE.md").read_text() == "# other set\n"
    assert (out / "labels.csv").read_text() == (folder / "labels.csv").read_text()


def test_the_report_set_shares_no_photo_and_no_source_repository_with_the_set_the_check_is_built_on():
    """nonskin_report says what the not-skin check does on photos it has not seen: none of its photos, and none of
    its repositories (photos of one repository are alike), may be in nonskin_free; none of its names in ood."""
    docs = BUILD.parents[1]
    report, free = read_rows(docs / "nonskin_report"), read_rows(docs / "nonskin_free")
    assert len(report) == len({r["image"] for r in report}) == 100
    assert not {r["source_repository"] for r in report} & {r["source_repository"] for r in free}
    assert not {(r["source_repository"], r["original_path"]) for r in report} & {(r["source_repository"], r["original_path"]) for r in free}
    ood_sources = ("kodim", "mcmaster", "astronaut", "chelsea", "rocket", "hubble")
    assert not [r["image"] for r in report if any(s in r["original_path"].lower() for s in ood_sources)]
    for r in report:
        assert r["licence"].strip() and r["licence_evidence"].strip() and len(r["commit"]) == 40, r["image"]
        assert max(int(r["width"]), int(r["height"])) <= 600, r["image"]
