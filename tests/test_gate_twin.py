"""gate.tflite, the gate's TFLite twin: builtin ops only, metadata read back without
TensorFlow, the same verdicts as the OpenCV gate on generated photos, refusals, and the
reference vectors an app port checks itself against."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobile_derm_quality import GateConfig
from mobile_derm_quality.gate_twin import (GUIDANCE, MEASUREMENT_NAMES, METADATA_FILENAME, REASON_CODES, GateTwin, GateTwinError,
                                           read_twin_metadata, twin_inputs)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def twin(default_gate_model):
    return GateTwin(default_gate_model)


def test_only_builtin_operators(default_gate_model):
    """No Select TF (Flex) or other custom operator: every operator code is a builtin."""
    from tensorflow_lite_support.metadata import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(default_gate_model.read_bytes(), 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    custom = [c.CustomCode() for c in codes if c.CustomCode()]
    assert codes and not custom
    builtin = {max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) for c in codes}
    assert schema.BuiltinOperator.CUSTOM not in builtin and schema.BuiltinOperator.DELEGATE not in builtin


def test_metadata_and_verdict_without_tensorflow(default_gate_model, block_tensorflow_prelude):
    """The config, reason codes and guidance come back, and the twin runs, with TensorFlow unimportable."""
    code = block_tensorflow_prelude + f"""
import json, numpy as np
from mobile_derm_quality.gate_twin import GateTwin, read_twin_metadata
meta = read_twin_metadata({str(default_gate_model)!r})
twin = GateTwin({str(default_gate_model)!r})
rng = np.random.default_rng(0)
v = twin.assess(rng.integers(120, 200, (300, 400, 3), np.uint8))
print(json.dumps({{"config": meta["config"], "reasons": meta["reason_codes"], "guidance": meta["guidance"],
                  "decision": v.decision}}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["config"] == json.loads(json.dumps(GateConfig.default().to_dict()))
    assert got["reasons"] == list(REASON_CODES)
    assert got["guidance"] == GUIDANCE
    assert got["decision"] in ("accept", "warn", "reject")


def test_parity_on_generated_photos(twin, tmp_path):
    """Both engines on generated lesion photos, clean and in every degradation: the same
    verdicts and reasons (acceptance: >= 99% / >= 98%; on this set every one is the same)."""
    from mobile_derm_export.gate_parity import gate_parity, variants

    n_kinds = len(variants()) - 1
    rep = gate_parity(twin, tmp_path, synthetic=12, per_photo=(n_kinds + 11) // 12, progress=False)
    assert set(rep["by_category"]) == {k for k, _ in variants()}  # every category and severity was used
    assert rep["n"] >= 12 * (1 + n_kinds // 12)
    assert rep["verdict_agreement"] >= 0.99, rep["disagreements"][:5]
    assert rep["reason_agreement_min"] >= 0.98, rep["disagreements"][:5]
    assert rep["measurement_error"]["luma_median"]["max"] == 0.0  # integer arithmetic: exact
    assert rep["measurement_error"]["skin_fraction"]["max"] < 1e-6
    assert rep["measurement_error"]["detail_offset"]["max"] < 1e-6  # the same cells by integer counts
    assert rep["measurement_error"]["jpeg_grid"]["max"] < 1e-7  # float32 sums against float64 (values up to ~0.05)
    assert (tmp_path / "gate_parity.md").is_file() and (tmp_path / "gate_parity.json").is_file()


def test_jpeg_grid_parity_on_a_resampled_jpeg(twin):
    """The coarse JPEG grid (features._jpeg_grid) in the graph: the same value within float32 round-off
    and the same verdict, on a photo shrunk, compressed hard and grown back, its clean original and
    crops of odd sizes down to under the measure's 64 px."""
    from mobile_derm_quality.features import _jpeg_grid, native_steps
    from mobile_derm_quality.gate import assess

    rng = np.random.default_rng(3)
    clean = cv2.GaussianBlur(rng.normal(170, 30, (450, 600, 3)), (0, 0), 1.2).clip(0, 255).astype(np.uint8)
    clean[150:300, 220:380] = (clean[150:300, 220:380] * np.array([0.6, 0.45, 0.45])).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.resize(clean, (200, 150), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 10])
    resampled = cv2.resize(cv2.imdecode(buf, cv2.IMREAD_COLOR), (600, 450), interpolation=cv2.INTER_LINEAR)
    index = MEASUREMENT_NAMES.index("jpeg_grid")
    values = []
    for img in (resampled, clean, resampled[:70, :301], resampled[:63, :200], resampled[:257, :129]):
        out = twin.run(twin_inputs(img, twin.config.analysis_size, twin.config.min_model_input))
        ref = _jpeg_grid(native_steps(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)))
        assert float(out["measurements"][index]) == pytest.approx(ref, rel=1e-5, abs=1e-8)
        assert twin.verdict(out, twin.config.min_model_input).decision == assess(img, twin.config).decision
        values.append(ref)
    assert values[0] > 10 * max(values[1], 1e-4) and values[3] == 0.0


def test_parity_report_counts_a_disagreement():
    """The report is not blind: a pair of verdicts that differ is counted and listed."""
    from mobile_derm_export.gate_parity import report
    from mobile_derm_quality.gate import assess

    config = GateConfig.default()
    rng = np.random.default_rng(1)
    good = assess(rng.integers(120, 200, (300, 400, 3), np.uint8), config)
    bad = assess(np.zeros((40, 30, 3), np.uint8), config)
    values = np.zeros(len(MEASUREMENT_NAMES))
    rows = [{"photo": "a", "category": "clean", "severity": None, "ref": good, "twin": good, "ref_values": values,
             "twin_values": values},
            {"photo": "b", "category": "clean", "severity": None, "ref": good, "twin": bad, "ref_values": values,
             "twin_values": values + 1.0}]
    rep = report(rows, config)
    assert rep["verdict_agreement"] == (0.5 if good.decision != bad.decision else 1.0)
    assert len(rep["disagreements"]) == 1 and rep["disagreements"][0]["photo"] == "b"
    assert rep["measurement_error"]["blur"]["max"] == 1.0


def test_learned_skin_check_is_refused():
    from mobile_derm_export.gate_model import build_gate_model

    config = GateConfig.default()
    config.skin_check_model = "skin_check.tflite"
    config.ramps["not_skin"] = {"skin_check_distance": {"good": 1.0, "bad": 3.0}}
    with pytest.raises(GateTwinError, match="learned not-skin check"):
        build_gate_model(config)


def test_unknown_ramp_is_refused():
    from mobile_derm_export.gate_model import build_gate_model

    config = GateConfig.default()
    config.ramps["glare"]["sparkle"] = {"good": 0.0, "bad": 1.0}
    with pytest.raises(GateTwinError, match="sparkle"):
        build_gate_model(config)


def test_wrong_inputs_are_refused(twin):
    inputs = twin_inputs(np.full((200, 300, 3), 150, np.uint8), 320, 224)
    inputs["analysis"] = inputs["analysis"].astype(np.float32)
    with pytest.raises(GateTwinError, match="input analysis is float32"):
        twin.run(inputs)
    inputs = twin_inputs(np.full((200, 300, 3), 150, np.uint8), 320, 224)
    inputs["tiny"] = inputs["tiny"][:, :64]
    with pytest.raises(GateTwinError, match="input tiny"):
        twin.run(inputs)


def test_not_a_gate_model_is_refused(tmp_path):
    path = tmp_path / "gate.tflite"
    path.write_bytes(b"TFL3" + b"\0" * 100)
    with pytest.raises(GateTwinError, match=METADATA_FILENAME):
        GateTwin(path)
    with pytest.raises(GateTwinError, match="not found"):
        read_twin_metadata(tmp_path / "missing.tflite")


def test_a_twin_of_another_input_contract_is_refused(default_gate_model, tmp_path):
    """A gate.tflite whose inputs were made by an older recipe (contract 1: another shrink of
    large photos) would give other numbers than the OpenCV gate: refused, saying what to do."""
    import zipfile

    from mobile_derm_quality.gate_twin import CONTRACT_VERSION

    old = tmp_path / "gate.tflite"
    with zipfile.ZipFile(default_gate_model) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == METADATA_FILENAME:
                data = json.dumps({**json.loads(data), "contract_version": CONTRACT_VERSION - 1}).encode()
            dst.writestr(item, data)
    with pytest.raises(GateTwinError, match=f"contract {CONTRACT_VERSION - 1} is not this code's .*export the model again"):
        GateTwin(old)


def test_a_twin_listing_fewer_measurements_still_judges(default_gate_model):
    """A gate.tflite made before a measurement was added lists fewer in its gate.json (and outputs fewer):
    GateTwin reads the measurements by the names the file lists, so its verdicts stand and the missing
    value is left out of the raw values instead of being taken from the wrong position."""
    from mobile_derm_export.gate_parity import synthetic_photos

    img = next(iter(synthetic_photos(1)))[1]
    new = GateTwin(default_gate_model).assess(img)
    older = GateTwin(default_gate_model)
    names = older.metadata["outputs"]["measurements"]
    assert names == list(MEASUREMENT_NAMES) and names[-1] == "nonskin_logit"
    older.metadata["outputs"]["measurements"] = names[:-1]  # as the file's gate.json said before the term
    old = older.assess(img)
    assert old.decision == new.decision and old.reasons == new.reasons
    assert "nonskin_logit" in new.check("not_skin").raw and "nonskin_logit" not in old.check("not_skin").raw
    assert old.check("not_skin").raw["typicality"] == new.check("not_skin").raw["typicality"]


def test_grey_and_hsv_as_opencv():
    """The twin's integer formulas for OpenCV's RGB->grey and RGB->HSV, on random colours."""
    from mobile_derm_export.gate_model import _grey, _hsv
    from mobile_derm.tf_setup import tf

    rgb = np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)
    planes = [tf.constant(rgb[..., c].astype(np.float32)) for c in range(3)]
    grey = _grey(tf, planes).numpy()
    assert np.array_equal(grey, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32))
    h, s, v = (x.numpy() for x in _hsv(tf, planes))
    assert np.array_equal(np.stack([h, s, v], axis=-1), cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32))


def test_nearest_rounding_table_as_opencv():
    """cv2.INTER_NEAREST's index, double rounding included, for every tiny -> analysis size pair."""
    from mobile_derm_export.gate_model import nearest_rounding_table

    shortfall, c = nearest_rounding_table(96, 320)
    drops = 0
    for src in range(1, 97):
        for dst in range(src, 321, 3 if src % 2 else 1):
            x = np.arange(dst)
            k = x * src // dst
            drop = (x * src % dst == 0) & (shortfall[src, dst] * c[np.minimum(k, 96)] > 1)
            ramp = np.arange(src, dtype=np.uint8)[None].repeat(2, axis=0)
            expected = cv2.resize(ramp, (dst, 2), interpolation=cv2.INTER_NEAREST)[0]
            assert np.array_equal(np.minimum(k - drop, src - 1), expected), (src, dst)
            drops += int(drop.sum())
    assert drops > 0  # the correction is needed: exact integer division alone would be wrong


def test_reference_vectors_round_trip(twin, tmp_path):
    """gate-vectors' files check against this code, and a changed input pixel or verdict is caught."""
    from mobile_derm_export.gate_vectors import check_reference_vectors, write_reference_vectors

    cases = write_reference_vectors(twin, tmp_path)
    assert len(cases) >= 5 and check_reference_vectors(twin, tmp_path) == []
    analysis = cases[0] / "analysis.bin"
    data = bytearray(analysis.read_bytes())
    data[0] ^= 0xFF
    analysis.write_bytes(bytes(data))
    expected = cases[1] / "expected.json"
    doc = json.loads(expected.read_text())
    doc["decision"] = "reject" if doc["decision"] != "reject" else "accept"
    expected.write_text(json.dumps(doc))
    problems = check_reference_vectors(twin, tmp_path)
    assert any(cases[0].name in p and "input analysis" in p for p in problems)
    assert any(cases[1].name in p and "verdict" in p for p in problems)


def test_check_photo_with_either_engine(default_gate_model, tmp_path, capsys):
    from mobile_derm.cli import main
    from mobile_derm.datasets.synthetic import render_lesion_views

    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), cv2.resize(render_lesion_views("demo_nevus_like", 0, 1, 400)[0], (800, 600)))
    verdicts = {}
    for engine in ("opencv", "tflite"):
        extra = ["--gate-model", str(default_gate_model)] if engine == "tflite" else []
        main(["check-photo", "--json", "--engine", engine, *extra, str(photo)])
        verdicts[engine] = json.loads(capsys.readouterr().out)[0]
    assert verdicts["tflite"]["decision"] == verdicts["opencv"]["decision"]
    assert verdicts["tflite"]["reasons"] == verdicts["opencv"]["reasons"]
    assert main(["check-photo", "--engine", "tflite", str(photo)]) == 2
    assert "--gate-model" in capsys.readouterr().err


def test_export_writes_the_twin_and_predict_gates_with_it(tiny_demo, tmp_path):
    """export writes gate.tflite beside the models, the classifier's packed gate config names it,
    and predict gates with either engine to the same verdict."""
    from mobile_derm.app.model_file import read_model_info
    from mobile_derm.app.predict import Predictor
    from mobile_derm.datasets.synthetic import render_lesion_views
    from mobile_derm_quality.gate_twin import CONFIG_POINTER_KEY, MODEL_FILENAME

    assert (tiny_demo / MODEL_FILENAME).is_file()
    info = read_model_info(tiny_demo / "int8.tflite")
    assert info.gate_config[CONFIG_POINTER_KEY] == MODEL_FILENAME
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), render_lesion_views("demo_bcc_like", 2, 1, 500)[0])
    predictor = Predictor(tiny_demo / "int8.tflite")
    by_engine = {e: predictor.predict(str(photo), gate_engine=e).quality for e in ("opencv", "tflite")}
    assert by_engine["tflite"]["decision"] == by_engine["opencv"]["decision"]
    assert by_engine["tflite"]["reasons"] == by_engine["opencv"]["reasons"]


def test_parity_with_another_config(tmp_path):
    """The twin follows its config: another analysis size, warn-only checks, another threshold
    and warning margin, and the colour rules instead of the skin-photo model."""
    from mobile_derm_export.gate_model import write_gate_model
    from mobile_derm_export.gate_parity import gate_parity

    config = GateConfig.default()
    config.analysis_size = 256
    config.warn_only = ["noise", "framing"]
    config.thresholds["sharpness"] = 0.45
    config.warn_margin["exposure"] = 0.0
    config.skin_model = None
    config.ramps["not_skin"] = {"skin_fraction": {"good": 0.2, "bad": 0.0}, "hue_entropy": {"good": 2.0, "bad": 3.2},
                                "colourful_fraction": {"good": 0.08, "bad": 0.3}}
    twin = GateTwin(write_gate_model(config, tmp_path / "gate.tflite"))
    # the config as any reader loads it (from_dict fills in left-out ramp terms), and the graph computes that
    assert twin.config.to_dict() == GateConfig.from_dict(config.to_dict()).to_dict()
    assert twin.config.analysis_size == 256 and twin.config.warn_only == ["noise", "framing"]
    rep = gate_parity(twin, tmp_path, synthetic=8, per_photo=5, progress=False)
    assert rep["verdict_agreement"] >= 0.99 and rep["reason_agreement_min"] >= 0.98, rep["disagreements"][:5]
    assert len(rep["decisions"]) >= 2  # the set is not all one verdict
