"""docs/data/nonskin_free/build.py: each manifest row read from its git mirror at its commit, shrunk to at most
600 px and checked against the recorded size; a wrong size or a missing file stops the build."""
import importlib.util
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

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
