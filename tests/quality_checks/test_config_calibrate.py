import json

import cv2
import numpy as np
import pytest

from mobile_derm_quality import GateConfig, GateConfigError, calibrate
from mobile_derm_quality.calibrate import thresholds_for


def test_config_roundtrip(tmp_path):
    cfg = GateConfig.default()
    cfg.thresholds["sharpness"] = 0.42
    p = tmp_path / "gate.json"
    cfg.save(p)
    again = GateConfig.load(p)
    assert again.to_dict() == cfg.to_dict()
    assert json.loads(p.read_text())["schema_version"] == 1
    assert not list(tmp_path.glob("*.part"))


def test_config_errors(tmp_path):
    with pytest.raises(GateConfigError):
        GateConfig.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GateConfigError, match="not valid JSON"):
        GateConfig.load(bad)
    with pytest.raises(GateConfigError):
        GateConfig.from_dict({"thresholds": {"sharpness": 2.0}})
    with pytest.raises(GateConfigError):
        GateConfig.from_dict({"thresholds": {"nonsense": 0.5}})
    with pytest.raises(GateConfigError):
        GateConfig.from_dict({"schema_version": 99})
    with pytest.raises(GateConfigError, match="positive definite"):
        GateConfig.from_dict({"white_locus": {"a": 1.0, "b": 2.0, "c": 1.0}})


def test_white_locus_roundtrip_and_partial_update():
    cfg = GateConfig.from_dict({"white_locus": {"u": 0.5}})
    assert cfg.white_locus["u"] == 0.5 and cfg.white_locus["c"] == GateConfig.default().white_locus["c"]
    assert GateConfig.from_dict(cfg.to_dict()).white_locus == cfg.white_locus


def test_white_locus_fit_and_distance():
    from types import SimpleNamespace

    from mobile_derm_quality.fit_checks import fit_white_locus
    from mobile_derm_quality.photo_sets import worst_source_quantile
    from mobile_derm_quality.gate import white_distance

    rng = np.random.default_rng(0)
    uv = rng.normal([0.1, -0.05], [0.05, 0.02], (4000, 2))
    clean = [{"m": SimpleNamespace(white_u=u, white_v=v)} for u, v in uv]
    locus = fit_white_locus(clean)
    assert locus["u"] == pytest.approx(0.1, abs=0.005) and locus["v"] == pytest.approx(-0.05, abs=0.005)
    # one standard deviation along either axis is a distance of about 1
    assert white_distance(SimpleNamespace(white_u=0.15, white_v=locus["v"]), locus) == pytest.approx(1.0, abs=0.05)
    assert white_distance(SimpleNamespace(white_u=locus["u"], white_v=-0.09), locus) == pytest.approx(2.0, abs=0.1)
    values, sources = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0]), np.array(list("aaabbb"))
    assert worst_source_quantile(values, sources, 1.0) == 30.0


def test_ramp_for_puts_warn_and_fail_where_asked():
    from mobile_derm_quality.config import ramp_for
    from mobile_derm_quality.gate import ramp

    r = ramp_for(4.0, 6.0, threshold=0.3, warn_margin=0.1)
    assert ramp(4.0, r["good"], r["bad"]) == pytest.approx(0.4)
    assert ramp(6.0, r["good"], r["bad"]) == pytest.approx(0.3)


def test_thresholds_for_hits_target():
    rng = np.random.default_rng(0)
    base = GateConfig.default()
    scores = [{k: float(rng.uniform(0.3, 1.0)) for k in base.thresholds} | {"resolution": 1.0} for _ in range(400)]
    thr, alpha, achieved = thresholds_for(scores, 0.9, base)
    assert 0.88 <= achieved <= 0.95
    assert thr["resolution"] == base.thresholds["resolution"]
    assert all(0.05 <= v <= 0.9 for v in thr.values())


def test_calibrate_folder(tmp_path, make_skin):
    for i in range(6):
        img = make_skin(240, 320, seed=i)
        cv2.imwrite(str(tmp_path / f"p{i}.jpg"), img[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    cfg = calibrate(tmp_path, target_pass_rate=0.8)
    assert cfg.calibration["n_images"] == 6 and cfg.calibration["n_unreadable"] == 1
    assert cfg.version.endswith("-cal")
    out = tmp_path / "cal.json"
    cfg.save(out)
    assert GateConfig.load(out).thresholds == cfg.thresholds
    with pytest.raises(GateConfigError):
        calibrate(tmp_path / "nope")
