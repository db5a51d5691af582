import os
from pathlib import Path

import cv2
import numpy as np
import pytest

DATA_ROOT = Path(os.environ.get("MOBILE_DERM_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


def skin_texture(h=300, w=400, seed=0, tone=(200, 150, 125)):
    """A sharp synthetic skin-like photo: skin tone, fine pore texture, a darker central lesion."""
    rng = np.random.default_rng(seed)
    base = np.empty((h, w, 3), np.float32)
    base[:] = tone
    tex = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.8) * 25
    img = base * (1 + tex[:, :, None] / 255.0)
    yy, xx = np.mgrid[:h, :w]
    lesion = ((yy - h / 2) ** 2 / (h / 6) ** 2 + (xx - w / 2) ** 2 / (w / 7) ** 2) < 1
    img[lesion] *= np.array([0.55, 0.45, 0.45], np.float32)
    # hair-like dark strokes give sharp edges
    for i in range(12):
        y = int(rng.integers(0, h))
        cv2.line(img, (0, y), (w - 1, int(rng.integers(0, h))), (90, 60, 50), 1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def make_skin():
    return skin_texture


@pytest.fixture
def skin():
    return skin_texture()


@pytest.fixture
def data_root():
    if not DATA_ROOT.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real data folder {DATA_ROOT} is missing and CI=true: the real-data tests must run in CI")
        pytest.skip(f"real data folder {DATA_ROOT} not found (set MOBILE_DERM_DATA)")
    return DATA_ROOT
