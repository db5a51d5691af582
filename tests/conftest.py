"""Shared fixtures.

``real_data_root``: the real-data folder (``$MOBILE_DERM_DATA`` or
``<repo>/../shared/data``). When it is absent the test is skipped with the
reason, except under ``CI=true``, where a missing data folder is a failure
rather than a silent skip.
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def real_data_root():
    from mobile_derm.datasets.sources import DATA_ENV, PRESET_FOLDERS, data_root

    root = data_root()
    missing = [f for f in PRESET_FOLDERS.values() if not (root / f / "labels.csv").is_file()]
    if missing:
        reason = (f"real data not found: {root} lacks {', '.join(missing)} "
                  f"(set {DATA_ENV} to the shared/data folder)")
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def ham10000_lesions(real_data_root):
    """``subset(n)``: HAM10000 cut to the first ``n`` lesions of each class, with all their
    photos, still named "ham10000" so the preset's rules (split by lesion) apply."""
    from mobile_derm.datasets.sources import load_preset

    ham = load_preset("ham10000", real_data_root)

    def subset(n: int):
        keep, seen = [], {}
        for i, sample in enumerate(ham.samples):
            groups = seen.setdefault(sample.label, set())
            if sample.group in groups or len(groups) < n:
                groups.add(sample.group)
                keep.append(i)
        return ham.subset(keep, name="ham10000")

    return subset


BLOCK_TENSORFLOW = """
import sys
class _BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow.") or name == "tf_keras":
            raise ImportError("tensorflow is blocked in this test")
sys.meta_path.insert(0, _BlockTensorFlow())
"""


@pytest.fixture(scope="session")
def block_tensorflow_prelude():
    """Python source that makes any later ``import tensorflow`` fail: prefix it
    to a ``python -c`` script to prove a code path never needs TensorFlow."""
    return BLOCK_TENSORFLOW


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The whole demo at its tiny size, once per test session (about a minute
    per exported variant with the pure-Python protobuf that tflite-support pins)."""
    from mobile_derm.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--tiny", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def default_gate_model(tmp_path_factory):
    """gate.tflite of the default gate config, made once per test session by ``mobile-derm
    export-gate`` (about a minute): the gate twin's tests and the browser app's share it."""
    from mobile_derm.cli import main
    from mobile_derm_quality.cli import EXIT_OK
    from mobile_derm_quality.gate_twin import MODEL_FILENAME

    folder = tmp_path_factory.mktemp("gate_twin")
    assert main(["export-gate", "--out", str(folder)]) == EXIT_OK
    return folder / MODEL_FILENAME
