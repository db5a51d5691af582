"""The web app's pixel arithmetic (mobile_derm/app/web/pipeline.js), run in Node, equals
mobile_derm.app.preprocess and predict's quantization byte for byte: shrinking (OpenCV's
INTER_AREA, integer and fractional factors), enlarging (OpenCV 5's float warpAffine),
centre cropping, compositing on grey and the input quantization."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.app.preprocess import normalize, resize_square
from mobile_derm.web_app import WEB_SOURCE

# (height, width, model input): shrink by 2, by 4, by fractions, equal, enlarge, portrait
CASES = [(448, 448, 224), (300, 400, 224), (896, 1000, 224), (450, 600, 224), (224, 300, 224), (100, 150, 224),
         (200, 150, 224), (97, 120, 64), (500, 333, 64), (31, 50, 32), (2000, 1500, 224)]

NODE_SCRIPT = """
import fs from 'fs';
import {resizeSquare, modelInput, rgbaToRgb} from '%s';
const cases = JSON.parse(fs.readFileSync(process.argv[2]));
const out = cases.map((c) => {
  const rgb = new Uint8Array(fs.readFileSync(c.path));
  const pixels = resizeSquare(rgb, c.width, c.height, c.size);
  const q = modelInput(pixels, [127, 120, 110], [128, 60, 70], {dtype: 'uint8', scale: c.scale, zero_point: c.zero});
  const rgba = new Uint8Array(fs.readFileSync(c.rgba_path));
  return {resized: Buffer.from(pixels).toString('base64'), quantized: Buffer.from(q).toString('base64'),
          composited: Buffer.from(rgbaToRgb(rgba, 128)).toString('base64')};
});
process.stdout.write(JSON.stringify(out));
"""


def _node():
    node = shutil.which("node")
    assert node, "Node.js is needed (it runs the web app's pipeline; make test's set-up installs the npm packages)"
    return node


def test_browser_pipeline_matches_python_byte_for_byte(tmp_path):
    from mobile_derm_quality.decode import TRANSPARENCY_BACKGROUND, _composite

    rng = np.random.default_rng(0)
    cases, expected = [], []
    for i, (h, w, size) in enumerate(CASES):
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        smooth = np.linspace(0, 255, h * w * 3).reshape(h, w, 3).astype(np.uint8)
        image = noise if i % 2 else smooth ^ rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
        rgba = np.dstack([image[:16, :16], rng.integers(0, 256, (16, 16), dtype=np.uint8)])
        (tmp_path / f"{i}.rgb").write_bytes(image.tobytes())
        (tmp_path / f"{i}.rgba").write_bytes(rgba.tobytes())
        scale, zero = float(np.float32(1 / 60.5)), 120
        cases.append({"path": str(tmp_path / f"{i}.rgb"), "rgba_path": str(tmp_path / f"{i}.rgba"), "width": w,
                      "height": h, "size": size, "scale": scale, "zero": zero})
        pixels = resize_square(image, size)
        x = normalize(pixels, (127, 120, 110), (128, 60, 70))
        quantized = np.clip(np.round(x / scale + zero), 0, 255).astype(np.uint8)  # LiteRTModel.input_tensor
        expected.append((pixels, quantized, _composite(rgba)))
    assert TRANSPARENCY_BACKGROUND == 128
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = tmp_path / "check.mjs"
    script.write_text(NODE_SCRIPT % (WEB_SOURCE / "pipeline.js").as_uri())
    run = subprocess.run([_node(), str(script), str(tmp_path / "cases.json")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    import base64

    for (h, w, size), got, (pixels, quantized, composited) in zip(CASES, json.loads(run.stdout), expected):
        resized = np.frombuffer(base64.b64decode(got["resized"]), np.uint8).reshape(size, size, 3)
        assert np.array_equal(resized, pixels), f"{h}x{w} -> {size}: {np.sum(resized != pixels)} values differ"
        assert np.array_equal(np.frombuffer(base64.b64decode(got["quantized"]), np.uint8), quantized.ravel())
        assert np.array_equal(np.frombuffer(base64.b64decode(got["composited"]), np.uint8), composited.ravel())


RANKINGS = [([0.2, 0.5, 0.3], None), ([0.25, 0.25, 0.5], None), ([0.4, 0.4, 0.2], None)]
if "decision" in ModelInfo.__dataclass_fields__:  # models with a class-balanced decision step
    RANKINGS.append(([0.2, 0.5, 0.3], [1.0, 0.0, 0.0]))


@pytest.mark.parametrize("probs, offsets", RANKINGS)
def test_browser_pipeline_ranks_classes_as_predict_does(tmp_path, probs, offsets):
    """Ties keep label order (a stable sort), and the decision step's offsets reorder."""
    info = ModelInfo(name="t", version="1", backbone="b", input_size=8, mean=(0, 0, 0), std=(1, 1, 1),
                     labels=["a", "b", "c"], malignancy_thresholds={"x": 0.3}, ood_threshold=0.45)
    if offsets is not None:
        info.decision = {"offsets": offsets}
    script = tmp_path / "rank.mjs"
    script.write_text(
        f"import {{explain}} from '{(WEB_SOURCE / 'pipeline.js').as_uri()}';\n"
        f"const info = {info.to_json()};\n"
        f"process.stdout.write(JSON.stringify(explain(Float32Array.from({json.dumps(probs)}), null, {{info}}, 3)));\n")
    run = subprocess.run([_node(), str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    from mobile_derm.app.predict import Predictor

    predictor = Predictor.__new__(Predictor)  # explain() needs only the info
    predictor.info = info
    expected = predictor.explain(np.asarray(probs, np.float32), top_k=3)
    assert json.loads(run.stdout) == json.loads(json.dumps(expected))


GATE_NODE_SCRIPT = """
import fs from 'fs';
import {twinInputs, gateVerdict} from '%s';
const {contract, cases, verdicts} = JSON.parse(fs.readFileSync(process.argv[2]));
const inputs = cases.map((c) => {
  const got = twinInputs({rgb: new Uint8Array(fs.readFileSync(c.path)), width: c.width, height: c.height}, contract, 224);
  return Object.fromEntries(Object.entries(got).map(([k, v]) => [k, Buffer.from(v.buffer).toString('base64')]));
});
process.stdout.write(JSON.stringify({inputs, verdicts: verdicts.map((v) => gateVerdict(v, contract))}));
"""


def test_browser_pipeline_makes_the_gate_twins_inputs_as_python_does(tmp_path):
    """gate_twin.twin_inputs (nearest, halving, area and grow steps; the native crop; the
    sizes) and the verdict's reason order, for photos from tiny to 12 MP, in Node."""
    import base64

    from mobile_derm_quality import GateConfig
    from mobile_derm_quality.gate_twin import (CHECK_NAMES, DECISIONS, MIN_ANALYSIS_SIDE, REASON_CODES,
                                               input_shapes, twin_inputs)
    from mobile_derm_quality.gate import GUIDANCE

    config = GateConfig.default()
    contract = {"config": config.to_dict(), "min_analysis_side": MIN_ANALYSIS_SIDE, "reason_codes": list(REASON_CODES),
                "guidance": GUIDANCE, "outputs": {"passed": list(CHECK_NAMES), "decision": list(DECISIONS)},
                "inputs": {k: {"shape": list(shape), "dtype": dtype}
                           for k, (shape, dtype) in input_shapes(config.analysis_size).items()}}
    rng = np.random.default_rng(1)
    cases, expected = [], []
    for i, (h, w) in enumerate([(480, 640), (1201, 1601), (3000, 4000), (751, 1001), (200, 150), (40, 30), (10, 300),
                                (641, 641), (333, 999), (2000, 13)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        (tmp_path / f"{i}.rgb").write_bytes(image.tobytes())
        cases.append({"path": str(tmp_path / f"{i}.rgb"), "width": w, "height": h})
        expected.append(twin_inputs(image, config.analysis_size, 224))
    # outputs of two checks failing and one warning, in the graph's layout
    n = len(CHECK_NAMES)
    verdicts = [{"applicable": [1] * n, "passed": [1, 0, 1, 1, 1, 0, 1, 1], "warn": [0, 0, 1, 0, 0, 0, 0, 0],
                 "reason": [-1, REASON_CODES.index("too_dark"), REASON_CODES.index("blurred"), -1, -1,
                            REASON_CODES.index("noisy"), -1, -1], "decision": [2]}]
    (tmp_path / "gate.json").write_text(json.dumps({"contract": contract, "cases": cases, "verdicts": verdicts}))
    script = tmp_path / "gate.mjs"
    script.write_text(GATE_NODE_SCRIPT % (WEB_SOURCE / "pipeline.js").as_uri())
    run = subprocess.run([_node(), str(script), str(tmp_path / "gate.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    for case, inputs, want in zip(cases, got["inputs"], expected):
        for name, tensor in want.items():
            mine = np.frombuffer(base64.b64decode(inputs[name]), tensor.dtype)
            assert np.array_equal(mine, tensor.ravel()), (case["height"], case["width"], name)
    # failing checks first (too_dark, noisy), then the warning (blurred); guidance the same
    assert got["verdicts"] == [{"decision": "reject", "reasons": ["too_dark", "noisy", "blurred"],
                                "guidance": [GUIDANCE["too_dark"], GUIDANCE["blurred"]]}]
