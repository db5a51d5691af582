"""The command line's contract (hardening issue): one ``error: <file>: <problem>`` line on
stderr for each input that cannot be used, even with JSON output; a list in the JSON for one
photo as for many; options checked by the parser; documented exit codes; quiet output."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mobile_derm.cli import main
from mobile_derm_quality.cli import EXIT_ERROR, EXIT_OK, EXIT_REJECTED


def _photo(path, size=(480, 360), alpha=False):
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal((170, 120, 100), 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    if alpha:
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        rgba[:40, :40, 3] = 0
        Image.fromarray(rgba, "RGBA").save(path)
    else:
        Image.fromarray(rgb).save(path, quality=95)
    return path


@pytest.mark.parametrize("argv, fragment", [
    (["predict", "x.jpg", "--model", "m.tflite", "--top-k", "0"], "--top-k: 0 is not a whole number >= 1"),
    (["predict", "x.jpg", "--model", "m.tflite", "--top-k", "-1"], "--top-k: -1 is not a whole number >= 1"),
    (["predict", "x.jpg", "--model", "m.tflite", "--threads", "0"], "--threads: 0 is not a whole number >= 1"),
    (["check-photo", "x.jpg", "--min-model-input", "-3"], "--min-model-input: -3 is not a whole number >= 1"),
    (["calibrate-gate", "photos", "--out", "g.json", "--target-pass-rate", "1.5"], "not a fraction in (0, 1]"),
    (["crossval", "--data", "d", "--out", "o", "--folds", "2"], "--folds: 2 is not a whole number >= 3"),
    (["fuzz", "--out", "o", "--count", "0"], "--count: 0 is not a whole number >= 1"),
])
def test_out_of_range_options_are_refused_by_the_parser(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_ERROR
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_calibrate_gate_into_a_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    _photo(tmp_path / "photos" / "a.jpg")
    assert main(["calibrate-gate", str(tmp_path / "photos"), "--out", str(tmp_path)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path}: is a folder; --out is the config file to write (for example gate.json)"]


def test_check_photo_json_is_a_list_and_errors_reach_stderr(tmp_path, capsys):
    good = _photo(tmp_path / "good.jpg")
    (tmp_path / "text.jpg").write_text("not a photo")
    code = main(["check-photo", str(good), "--json"])
    one = json.loads(capsys.readouterr().out)
    assert isinstance(one, list) and len(one) == 1 and one[0]["path"] == str(good)
    assert code in (EXIT_OK, EXIT_REJECTED)
    code = main(["check-photo", str(good), str(tmp_path / "text.jpg"), "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_ERROR and len(json.loads(captured.out)) == 2
    assert captured.err.strip().splitlines() == [
        f"error: {tmp_path / 'text.jpg'}: not an image in a format this package reads "
        "(JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP, GIF, ...)"]


def test_check_photo_reports_transparency_and_the_photos_own_size(tmp_path, capsys):
    photo = _photo(tmp_path / "cut.png", size=(4000, 3000), alpha=True)
    main(["check-photo", str(photo), "--json"])
    [verdict] = json.loads(capsys.readouterr().out)
    assert "transparent" in verdict["reasons"] and verdict["decision"] in ("warn", "reject")
    assert (verdict["width"], verdict["height"]) == (4000, 3000)


def test_exit_codes_are_documented_in_help(capsys):
    for command in ("check-photo", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "3 (check-photo, predict) a photo was rejected by the quality gate" in " ".join(
            capsys.readouterr().out.split())


@pytest.mark.slow
def test_predict_error_contract_and_json_shape(tiny_demo, tmp_path):
    """Run as a user would, in a fresh process: the JSON is a list; each bad photo gets its own
    stderr line; nothing else reaches stderr (no LiteRT banner); the gate's path is filled in."""
    model = tiny_demo / "int8.tflite"
    good = _photo(tmp_path / "good.jpg")
    (tmp_path / "text.jpg").write_text("not a photo")
    run = lambda *images: subprocess.run([sys.executable, "-m", "mobile_derm.cli", "predict", *map(str, images),
                                          "--model", str(model)], capture_output=True, text=True)
    one = run(good)
    [result] = json.loads(one.stdout)
    assert result["quality"]["path"] == str(good) and (result["quality"]["width"], result["quality"]["height"]) == (480, 360)
    assert one.stderr == "" and one.returncode in (EXIT_OK, EXIT_REJECTED)
    assert one.returncode == (EXIT_OK if result["classified"] else EXIT_REJECTED)
    two = run(good, tmp_path / "text.jpg", tmp_path / "missing.jpg")
    assert two.returncode == EXIT_ERROR and len(json.loads(two.stdout)) == 3
    assert two.stderr.splitlines() == [
        f"error: {tmp_path / 'text.jpg'}: not an image in a format this package reads "
        "(JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP, GIF, ...)",
        f"error: {tmp_path / 'missing.jpg'}: file not found"]
    verbose = subprocess.run([sys.executable, "-m", "mobile_derm.cli", "predict", str(good), "--model", str(model),
                              "--verbose"], capture_output=True, text=True)
    assert "XNNPACK" in verbose.stderr  # the banner exists, and only --verbose shows it


NOISE = ("WARNING:tensorflow", "W0000", "E0000", "I0000", "INFO: Created TensorFlow Lite", "cuda", "UserWarning",
         "Epoch 5/")


@pytest.mark.slow
def test_demo_output_fits_on_a_screen(tmp_path):
    """`make demo`'s command, tiny: stages, progress, the benchmark table and the gate's verdicts, without
    TensorFlow's, LiteRT's and Keras' log lines (they come back with --verbose)."""
    # bytes, not text=True: universal newlines would turn each progress-bar redraw (\r) into a line
    result = subprocess.run([sys.executable, "-m", "mobile_derm.cli", "demo", "--tiny", "--out", str(tmp_path / "demo")],
                            capture_output=True, timeout=600)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, output[-2000:]
    assert [marker for marker in NOISE if marker in output] == []
    assert len(output.split("\n")) <= 60  # progress bars redraw their line with \r: one line each
    for expected in ("== 1/5", "== 5/5", "| int8 |", "blurred.jpg", "reject"):
        assert expected in output
