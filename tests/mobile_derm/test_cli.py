"""Bad input ends in one line, a non-zero exit, and no partial files."""
import pytest

from mobile_derm.cli import main


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def assert_one_line_error(code, err, *fragments):
    """Exit 2, no traceback, and exactly one ``error:`` line, the last one
    (progress bars may come before it on stderr)."""
    assert code == 2
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0]


def test_train_on_missing_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(["train", "--data", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "nope", "not found")
    assert not out.exists()


def test_train_on_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    code, err = run(["train", "--data", str(tmp_path / "empty"), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "empty")
    assert not out.exists()


def test_train_on_non_image_file(tmp_path, capsys):
    import cv2
    import numpy as np

    for cls in ("demo_nevus_like", "demo_melanoma_like"):  # labels the shipped taxonomy knows
        folder = tmp_path / "data" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(folder / f"{i}.jpg"), np.full((40, 40, 3), 100 + i, np.uint8))
    (tmp_path / "data" / "demo_nevus_like" / "notes.jpg").write_text("this is not an image")
    out = tmp_path / "run"
    code, err = run(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--random-weights",
                     "--input-size", "32"], capsys)
    assert_one_line_error(code, err, "notes.jpg")
    assert not out.exists()


def test_train_with_labels_missing_from_the_taxonomy(tmp_path, capsys):
    import cv2
    import numpy as np

    for cls in ("blue_things", "red_things"):
        folder = tmp_path / "data" / cls
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "0.jpg"), np.zeros((40, 40, 3), np.uint8))
    out = tmp_path / "run"
    code, err = run(["train", "--data", str(tmp_path / "data"), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "blue_things", "taxonomy")
    assert not out.exists()


def test_unknown_variant_name(tmp_path, capsys):
    out = tmp_path / "demo"
    code, err = run(["demo", "--tiny", "--variants", "float32,int4", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "int4")
    assert not out.exists()


def test_config_file_with_unknown_option(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text('{"learning_rat": 0.1}')
    code, err = run(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(config)], capsys)
    assert_one_line_error(code, err, "config.json", "learning_rat")


@pytest.mark.parametrize("value, fragment", [("often", "'often'"), ("9", "[0, 3]")])
def test_train_with_a_bad_logit_adjustment(tmp_path, capsys, value, fragment):
    out = tmp_path / "run"
    code, err = run(["train", "--data", str(tmp_path), "--out", str(out), "--logit-adjustment", value], capsys)
    assert_one_line_error(code, err, "logit", fragment)
    assert not out.exists()


def test_predict_with_missing_model(tmp_path, capsys):
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    code, err = run(["predict", str(image), "--model", str(tmp_path / "missing.tflite")], capsys)
    assert_one_line_error(code, err, "missing.tflite")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "train", "export", "benchmark", "predict", "check-photo", "gate-eval", "calibrate-gate"):
        assert command in text


def test_export_packs_the_gate_config_it_is_given(tiny_demo, tmp_path):
    """`export --gate-config` puts a calibrated gate into the model file, so the app applies
    the user's thresholds; a bad config file is a one-line error and writes nothing."""
    from mobile_derm.app.model_file import read_model_info
    from mobile_derm_quality import GateConfig

    cfg = GateConfig.default()
    cfg.thresholds["sharpness"] = 0.55
    cfg.version = "9.9.9-test"
    cfg_file = tmp_path / "gate.json"
    cfg.save(cfg_file)
    data = str(tiny_demo / "data" / "labels.csv")
    out = tmp_path / "models"
    code = main(["export", str(tiny_demo / "run"), "--data", data, "--out", str(out), "--variants", "float32",
                 "--gate-config", str(cfg_file)])
    assert code == 0
    packed = read_model_info(out / "float32.tflite").gate_config
    assert packed["version"] == "9.9.9-test" and packed["thresholds"]["sharpness"] == 0.55
    assert packed["skin_model"] == cfg.skin_model

    bad = tmp_path / "bad.json"
    bad.write_text('{"thresholds": {"sharpness": 7}}')
    out2 = tmp_path / "models2"
    assert main(["export", str(tiny_demo / "run"), "--data", data, "--out", str(out2), "--variants", "float32",
                 "--gate-config", str(bad)]) == 2
    assert not (out2 / "float32.tflite").exists()


def test_train_sets_finetune_epochs_with_its_own_name(tmp_path, monkeypatch, capsys):
    """--finetune-epochs sets TrainConfig.finetune_epochs; the old --epochs is gone."""
    import mobile_derm.api

    seen = {}

    def fake_train(cls, data, config=None, out=None, **kwargs):
        seen["config"] = config
        raise mobile_derm.api.ConfigError(None, "stopped by the test")

    monkeypatch.setattr(mobile_derm.api.Classifier, "train", classmethod(fake_train))
    monkeypatch.setattr(mobile_derm.api, "load_dataset", lambda data, data_root=None: data)
    code, err = run(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--finetune-epochs", "7"], capsys)
    assert_one_line_error(code, err, "stopped by the test")
    assert seen["config"].finetune_epochs == 7
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "7"])
