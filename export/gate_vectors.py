"""Reference vectors for apps that port the gate twin's pre-processing.

``write_reference_vectors(twin, out_dir)`` writes, for a handful of generated photos (no
research data: the package's synthetic lesion photos at sizes that exercise every step of
the resize rule, and a tiny thumbnail), one folder each:

* ``photo.png``      the decoded photo, lossless (what the app has after decoding and EXIF rotation)
* ``<input>.bin``    each input tensor exactly as ``gate_twin.twin_inputs`` makes it, raw
                     little-endian bytes (uint8, or int32 for ``sizes``)
* ``expected.json``  the input shapes and dtypes, the sizes, and gate.tflite's outputs on those
                     inputs (measurements by name, scores, pass/warn/applicable, reasons, decision)

An app checks itself in two steps: its own pre-processing of photo.png against the .bin
files (the sizes must be equal; the pixels equal, or off by one where its resize rounds
differently), then its runtime's outputs on the .bin inputs against expected.json.
``check_reference_vectors`` is that check in Python (the tests run it).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from mobile_derm_quality.config import CHECK_NAMES
from mobile_derm_quality.errors import QualityCheckError
from mobile_derm_quality.files import atomic_write_text
from mobile_derm_quality.gate_twin import (DECISIONS, MEASUREMENT_NAMES, REASON_CODES, SIZE_FIELDS, GateTwin,
                                           twin_inputs)

# (height, width) of the generated photos: a large photo (nearest step, halvings, area),
# one between 1x and 2x the analysis size (area only), one smaller than it (no resize),
# a portrait one, and a thumbnail below 16 px (grown by nearest neighbour)
SIZES = ((1800, 2400), (500, 380), (240, 300), (1200, 700), (12, 9))
EXPECTED = "expected.json"


def _photos(seed: int = 0):
    from mobile_derm.datasets.synthetic import DEMO_CLASSES, render_lesion_views

    for i, (h, w) in enumerate(SIZES):
        label = DEMO_CLASSES[i % len(DEMO_CLASSES)]
        bgr = render_lesion_views(label, i, 1, max(64, min(max(h, w), 600)), seed=seed)[0]
        rgb = cv2.resize(np.ascontiguousarray(bgr[..., ::-1]), (w, h), interpolation=cv2.INTER_LINEAR)
        yield f"{i:02d}_{label}_{w}x{h}", rgb


def write_reference_vectors(twin: GateTwin, out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write the vectors (see the module docstring); returns the case folders."""
    out_dir = Path(out_dir)
    config = twin.config
    cases = []
    for name, rgb in _photos(seed):
        case = out_dir / name
        case.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(case / "photo.png"), np.ascontiguousarray(rgb[..., ::-1]))
        inputs = twin_inputs(rgb, config.analysis_size, config.min_model_input)
        for key, tensor in inputs.items():
            (case / f"{key}.bin").write_bytes(np.ascontiguousarray(tensor).astype(tensor.dtype.newbyteorder("<")).tobytes())
        out = twin.run(inputs)
        expected = {
            "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name, "file": f"{k}.bin"} for k, v in inputs.items()},
            "sizes": dict(zip(SIZE_FIELDS, (int(x) for x in inputs["sizes"][0]))),
            "measurements": {k: float(v) for k, v in zip(MEASUREMENT_NAMES, out["measurements"])},
            "scores": {k: float(v) for k, v in zip(CHECK_NAMES, out["scores"])},
            "passed": {k: bool(v) for k, v in zip(CHECK_NAMES, out["passed"])},
            "warn": {k: bool(v) for k, v in zip(CHECK_NAMES, out["warn"])},
            "applicable": {k: bool(v) for k, v in zip(CHECK_NAMES, out["applicable"])},
            "reasons": [REASON_CODES[i] for i, flag in enumerate(out["reason_flags"]) if flag],
            "decision": DECISIONS[int(np.ravel(out["decision"])[0])],
            "gate_config_version": config.version,
        }
        atomic_write_text(case / EXPECTED, json.dumps(expected, indent=2) + "\n")
        cases.append(case)
    return cases


def _read_input(case: Path, spec: dict) -> np.ndarray:
    data = (case / spec["file"]).read_bytes()
    return np.frombuffer(data, np.dtype(spec["dtype"]).newbyteorder("<")).astype(spec["dtype"]).reshape(spec["shape"])


def check_reference_vectors(twin: GateTwin, folder: str | Path, rtol: float = 1e-5) -> list[str]:
    """Every mismatch between the vectors in ``folder`` and this code: the pre-processing of
    photo.png against the stored inputs, and the twin's outputs on the stored inputs against
    expected.json. An empty list: they agree."""
    problems = []
    cases = sorted(p.parent for p in Path(folder).glob(f"*/{EXPECTED}"))
    if not cases:
        raise QualityCheckError(folder, f"no reference vectors ({EXPECTED}) in it")
    for case in cases:
        expected = json.loads((case / EXPECTED).read_text(encoding="utf-8"))
        stored = {k: _read_input(case, spec) for k, spec in expected["inputs"].items()}
        rgb = cv2.imread(str(case / "photo.png"), cv2.IMREAD_COLOR)[..., ::-1]
        made = twin_inputs(rgb, twin.config.analysis_size, twin.config.min_model_input)
        for key, tensor in made.items():
            if not np.array_equal(tensor, stored[key]):
                problems.append(f"{case.name}: input {key} differs from {key}.bin")
        out = twin.run(stored)
        got = dict(zip(MEASUREMENT_NAMES, (float(v) for v in out["measurements"])))
        for key, value in expected["measurements"].items():
            if not np.isclose(got[key], value, rtol=rtol, atol=1e-6):
                problems.append(f"{case.name}: measurement {key} {got[key]} != {value}")
        decision = DECISIONS[int(np.ravel(out["decision"])[0])]
        reasons = [REASON_CODES[i] for i, flag in enumerate(out["reason_flags"]) if flag]
        if decision != expected["decision"] or reasons != expected["reasons"]:
            problems.append(f"{case.name}: verdict {decision} {reasons} != {expected['decision']} {expected['reasons']}")
    return problems
