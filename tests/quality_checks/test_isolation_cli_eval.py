import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import mobile_derm_quality.cli as qcli
from mobile_derm_quality.gate_eval import gate_eval
from mobile_derm_quality.roc import roc_auc

REPO = Path(__file__).resolve().parents[2]


def test_import_without_tensorflow():
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow.") or name == "mobile_derm" or name.startswith("mobile_derm."):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import mobile_derm_quality, mobile_derm_quality.cli, mobile_derm_quality.gate_eval, mobile_derm_quality.calibrate
        v = mobile_derm_quality.assess(np.full((64, 64, 3), 128, np.uint8))
        assert v.decision == "reject"
        assert "tensorflow" not in sys.modules and "mobile_derm" not in sys.modules
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    qcli.register(p.add_subparsers(dest="cmd", required=True))
    return p


def test_cli_check_photo(tmp_path, capsys, make_skin):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), make_skin()[:, :, ::-1])
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), make_skin(120, 160)[:, :, ::-1])
    args = _parser().parse_args(["check-photo", str(good), "--json"])
    assert qcli.run(args) == 0
    [out] = json.loads(capsys.readouterr().out)  # a list, for one photo as for many
    assert out["decision"] in ("accept", "warn") and len(out["checks"]) == 8
    args = _parser().parse_args(["check-photo", str(good), str(small)])
    assert qcli.run(args) == 3
    text = capsys.readouterr().out
    assert "REJECT" in text and "too_small" in text and "->" in text
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    args = _parser().parse_args(["check-photo", str(bad)])
    assert qcli.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: ")


def test_cli_calibrate_gate(tmp_path, capsys, make_skin):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), make_skin(seed=i)[:, :, ::-1])
    out = tmp_path / "cfg" / "gate.json"
    args = _parser().parse_args(["calibrate-gate", str(tmp_path), "--target-pass-rate", "0.8", "--out", str(out), "--quiet"])
    assert qcli.run(args) == 0
    assert json.loads(out.read_text())["calibration"]["n_images"] == 5
    args = _parser().parse_args(["check-photo", str(tmp_path / "0.jpg"), "--config", str(out)])
    assert qcli.run(args) in (0, 3)
    args = _parser().parse_args(["check-photo", str(tmp_path / "0.jpg"), "--config", str(tmp_path / "none.json")])
    assert qcli.run(args) == 2


def test_roc_auc():
    assert roc_auc([1, 2, 3], [0, 0.5]) == 1.0
    assert roc_auc([0, 0], [0, 0]) == 0.5
    assert roc_auc([], [1]) is None


class FakePredictor:
    """Stands in for mobile_derm.app.predict.Predictor: right on sharp images, wrong on blurred
    ones; finds green pictures unfamiliar and abstains on them."""

    class info:
        labels = ["mel", "nv"]

    def predict(self, rgb):
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        sharp = cv2.Laplacian(g, cv2.CV_32F).var() > 30
        r, gr, _ = rgb.reshape(-1, 3).mean(axis=0)
        return (np.array([0.9, 0.1]) if sharp else np.array([0.1, 0.9])), (0.9 if gr > r else 0.1)

    def explain(self, probs, top_k=3, unfamiliarity=None):
        order = np.argsort(-np.asarray(probs))[:top_k]
        return {"abstained": unfamiliarity > 0.5, "top_k": [{"label": self.info.labels[i]} for i in order]}


def _fake_data(root: Path, skin_texture):
    for ds, n, size in (("pad_ufes20_subset", 4, (320, 400)), ("ood", 2, (300, 300)), ("ham10000_200px", 2, (150, 200))):
        (root / ds / "images").mkdir(parents=True)
        rows = ["image,label"]
        for i in range(n):
            if ds == "ood":
                img = np.zeros(size + (3,), np.uint8)
                img[:] = (30, 120 + 20 * i, 60)
            else:
                img = skin_texture(*size, seed=i)
            cv2.imwrite(str(root / ds / "images" / f"{i}.jpg"), img[:, :, ::-1])
            rows.append(f"images/{i}.jpg,mel")
        (root / ds / "labels.csv").write_text("\n".join(rows) + "\n")


def test_gate_eval_with_fake_predictor(tmp_path, make_skin):
    _fake_data(tmp_path / "data", make_skin)
    out = tmp_path / "out"
    rep = gate_eval(tmp_path / "data", out, predictor=FakePredictor(), degrade_per_set=2, progress=False, plots=False)
    saved = json.loads((out / "gate_eval.json").read_text())
    assert saved["clean"]["pad_ufes20_subset"]["n"] == 4
    assert set(saved["degradations"]) >= {"gaussian_blur", "underexpose", "downscale", "zoom_out"}
    assert saved["ood_reject_rate"] == 1.0 and saved["lowres"]["resolution_reject_rate"] == 1.0
    assert saved["ms_per_image"] > 0
    c = rep["classifier"]
    assert c["n"]["clean"] == 4 and c["accuracy"]["clean"] == 1.0
    # the gap compares the degraded photos with their own clean originals
    assert c["n"]["clean_degraded_sample"] == 2 and c["accuracy"]["clean_degraded_sample"] == 1.0
    assert c["n"]["degraded_accepted"] + c["n"]["degraded_rejected"] > 0
    # the classifier after the gate: abstains on the (green) non-skin pictures, not on the skin ones
    assert saved["ood"]["classifier_abstain_rate"] == 1.0 and saved["ood"]["reject_or_abstain_rate"] == 1.0
    assert c["abstain_rate_on_accepted_clean"] == 0.0
    assert (out / "gate_eval.md").read_text().startswith("# Photo-quality gate evaluation")


def test_gate_eval_cli_missing_root(tmp_path, capsys):
    args = _parser().parse_args(["gate-eval", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet"])
    assert qcli.run(args) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_standalone_gate_eval_takes_no_model(tmp_path):
    """The gate's own CLI cannot load a classifier (it never imports mobile_derm);
    `mobile-derm gate-eval` is where --model lives."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["gate-eval", "--model", str(tmp_path / "m.tflite")])


def test_mobile_derm_gate_eval_scores_the_model_it_is_given(tiny_demo, tmp_path, make_skin):
    from mobile_derm.app.model_file import read_model_info
    from mobile_derm.cli import main

    label = read_model_info(tiny_demo / "int8.tflite").labels[0]
    root = tmp_path / "data"
    for ds, n in (("pad_ufes20_subset", 3), ("ood", 1)):
        (root / ds / "images").mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / ds / "images" / f"{i}.jpg"), make_skin(320, 400, seed=i)[:, :, ::-1])
        (root / ds / "labels.csv").write_text("image,label\n" + "".join(f"images/{i}.jpg,{label}\n" for i in range(n)))
    out = tmp_path / "out"
    assert main(["gate-eval", "--data-root", str(root), "--out", str(out), "--model", str(tiny_demo / "int8.tflite"),
                 "--degrade-per-set", "1", "--quiet", "--no-plots"]) == 0
    saved = json.loads((out / "gate_eval.json").read_text())
    assert saved["classifier"]["n"]["clean"] == 3
    assert main(["gate-eval", "--data-root", str(root), "--out", str(out), "--model", str(tmp_path / "none.tflite"),
                 "--quiet", "--no-plots"]) == 2


def test_wilson_interval():
    from mobile_derm_quality.gate_eval import wilson_interval

    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(18, 20)
    assert lo == pytest.approx(0.6990, abs=1e-3) and hi == pytest.approx(0.9721, abs=1e-3)  # textbook values
    lo, hi = wilson_interval(20, 20)
    assert hi == pytest.approx(1.0) and 0.83 < lo < 0.84


def test_gate_eval_phone_capture_section(tmp_path, make_skin):
    """--phone-capture N: every category on both splits, retake and acceptable per source and
    pooled, with intervals; the clean pass rate by Fitzpatrick type, small groups not rated."""
    root = tmp_path / "data"
    (root / "pad_ufes20_subset" / "images").mkdir(parents=True)
    rows = ["image,label,fitzpatrick"]
    for i in range(63):  # type 2: enough for 20 in the report half; type 5: too few in either
        cv2.imwrite(str(root / "pad_ufes20_subset" / "images" / f"{i}.jpg"), make_skin(320, 400, seed=i)[:, :, ::-1])
        rows.append(f"images/{i}.jpg,mel,{2 if i < 60 else 5}")
    (root / "pad_ufes20_subset" / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = _parser().parse_args(["gate-eval", "--data-root", str(root), "--out", str(out), "--quiet", "--no-plots",
                                 "--degrade-per-set", "0", "--phone-capture", "2"])
    assert qcli.run(args) == 0
    saved = json.loads((out / "gate_eval.json").read_text())
    pc = saved["phone_capture"]
    from mobile_derm_quality.phone_capture import CATEGORIES

    assert pc["photos_per_source"] == 2 and pc["sources"] == ["pad_ufes20_subset"]
    assert pc["originals_passed"]["pad_ufes20_subset"]["n"] == 2
    for split in ("fit", "held_out"):
        assert set(pc["by_split"][split]) == set(CATEGORIES)
        for category, per_source in pc["by_split"][split].items():
            assert set(per_source) == {"pad_ufes20_subset", "all"}
            retake, acceptable = per_source["pad_ufes20_subset"]["retake"], per_source["pad_ufes20_subset"]["acceptable"]
            assert retake["n"] == acceptable["n"] == 2
            assert 0 <= retake["rejected"] <= retake["flagged"] <= 1
            lo, hi = retake["rejected_ci95"]
            assert lo <= retake["rejected"] <= hi
            assert per_source["all"]["retake"]["n"] == 2
    # rated like the pass rate: on the report half (patients nothing was fitted on); all photos beside it
    from mobile_derm_quality.photo_sets import fit_half, read_rows

    in_fit = fit_half("pad_ufes20_subset", read_rows(root / "pad_ufes20_subset"))
    n_report_2 = sum(not f for f in in_fit[:60])
    assert 20 <= n_report_2 < 60
    clean = saved["clean"]["pad_ufes20_subset"]
    by_type, by_type_all = clean["by_fitzpatrick"], clean["by_fitzpatrick_all"]
    assert by_type["2"]["n"] == n_report_2 and by_type["2"]["pass_rate"] is not None and len(by_type["2"]["ci95"]) == 2
    assert by_type_all["2"]["n"] == 60 and by_type_all["2"]["pass_rate"] is not None
    assert by_type["5"] == {"n": sum(not f for f in in_fit[60:]), "pass_rate": None, "note": "n < 20: too few to report"}
    assert by_type_all["5"] == {"n": 3, "pass_rate": None, "note": "n < 20: too few to report"}
    md = (out / "gate_eval.md").read_text()
    assert "## Phone-capture failures" in md and "| motion_blur | pad_ufes20_subset | 2 |" in md
    assert "Fitzpatrick skin type, report half" in md
