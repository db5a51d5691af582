"""The reference web app in a real browser: Playwright driving Debian's Chromium, headless.

A tiny two-output model (probabilities and the unfamiliarity score, as the exported
models have) is exported here with our metadata, and photos are generated, so the tests
need no data and no trained model. Chromium and the npm runtime are installed by
`make test`; a missing one fails the test (it never skips).
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.app.predict import Predictor
from mobile_derm.web_agreement import AppPage, compare
from mobile_derm.web_app import CONFIG_FILENAME, write_site

SIZE = 32
LABELS = ["melanoma", "nevus", "seborrheic_keratosis"]


@pytest.fixture(scope="module", autouse=True)
def browser_closed_afterwards():
    """The pages share one Chromium; it is closed when this module is done, not left to the
    rest of the test session."""
    yield
    from mobile_derm.web_agreement import stop_browser

    stop_browser()


def _info() -> ModelInfo:
    return ModelInfo(
        name="tiny_web_test", version="0.0.1", backbone="tiny_cnn", input_size=SIZE,
        mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), labels=list(LABELS),
        taxonomy={
            "melanoma": {"display_name": "Melanoma", "malignant": True, "treatments": ["excision"]},
            "nevus": {"display_name": "Mole (nevus)", "malignant": False, "treatments": []},
            "seborrheic_keratosis": {"display_name": "Seborrheic keratosis", "malignant": False,
                                     "treatments": ["cryotherapy"]},
        },
        # set so the generated photos fall on both sides of every rule
        malignancy_thresholds={"sensitive": 0.2, "specific": 0.7},
        ood_threshold=0.7,
        familiarity={"output": "unfamiliarity", "abstain_above": 0.95},
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """float32.tflite and int8.tflite (uint8 in and out) of one tiny two-output model whose
    answers swing with the photo's colour, so photos land on every class and both sides
    of the thresholds."""
    from mobile_derm.tf_setup import keras, tf
    from mobile_derm_export.metadata import write_model_file

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    probs = keras.layers.Dense(len(LABELS), activation="softmax", name="head",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))(x)
    unfamiliar = keras.layers.Dense(1, activation="sigmoid", name="unfamiliarity",
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))(x)
    model = keras.Model(inp, [probs, unfamiliar])
    out = tmp_path_factory.mktemp("web_models")
    write_model_file(out / "float32.tflite", tf.lite.TFLiteConverter.from_keras_model(model).convert(), _info())
    rng = np.random.default_rng(0)
    calibration = (rng.integers(0, 256, (16, SIZE, SIZE, 3)).astype(np.float32) - 127.0) / 128.0
    calibration[0], calibration[1] = -127.0 / 128.0, 128.0 / 128.0  # the full 0..255 pixel range
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c[None]] for c in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        write_model_file(out / "int8.tflite", converter.convert(), _info())
    return out


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth generated 'photo': a coloured blob on a tinted background, some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 220, 3)
    blob = rng.uniform(0, 255, 3)
    cy, cx, r = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7), min(h, w) * rng.uniform(0.15, 0.4)
    mask = np.clip(1.5 - np.hypot(yy - cy, xx - cx) / r, 0, 1)[..., None]
    image = base * (1 - mask) + blob * mask + rng.normal(0, 6, (h, w, 3))
    return np.clip(cv2.GaussianBlur(image, (0, 0), 1.5), 0, 255).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray, jpeg_quality: int = 92) -> Path:
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix == ".jpg" else []
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Generated photos covering the decode and resize paths the page mirrors: PNG (exact
    pixels), JPEG, sizes above, at and below the model input, a portrait turned by its
    EXIF orientation, a PNG with transparency, and a grey one."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("web_photos")
    out = []
    for i, (h, w) in enumerate([(480, 640), (300, 300), (SIZE, SIZE), (24, 40), (97, 130), (720, 540), (50, 31)]):
        out.append(_write(folder / f"scene_{i}.png", _scene(h, w, i)))
    for i, (h, w) in enumerate([(480, 640), (640, 480), (200, 150)]):
        out.append(_write(folder / f"scene_{i}.jpg", _scene(h, w, 10 + i)))
    # stored landscape, EXIF orientation 6: upright it is portrait
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_scene(300, 400, 20)).save(folder / "rotated.jpg", quality=92, exif=exif)
    out.append(folder / "rotated.jpg")
    rgba = np.dstack([_scene(120, 160, 21), np.tile(np.linspace(0, 255, 160), (120, 1)).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    out.append(folder / "transparent.png")
    out.append(_write(folder / "grey.png", np.repeat(_scene(90, 120, 22)[..., :1], 3, axis=2)))
    return out


@pytest.fixture(scope="module", params=["int8", "float32"])
def site(request, models, tmp_path_factory) -> Path:
    return write_site(models, tmp_path_factory.mktemp(f"site_{request.param}") / "site", request.param)


def test_browser_page_agrees_with_predictor(site, photos):
    config = json.loads((site / CONFIG_FILENAME).read_text())
    predictor = Predictor(site / config["classifier"]["file"])
    with AppPage(site) as app:
        opened = app.open()
        assert opened["state"] == "ready", opened
        results = {photo.name: app.analyse(photo) for photo in photos}
    seen = set()
    for photo in photos:
        page = results[photo.name]
        reference = predictor.predict(photo, gate=False).to_dict()
        assert page.get("error") is None, (photo.name, page)
        assert compare(page, reference, gate_on_page=False) == {
            "gate": None, "top1": True, "abstained": True, "malignancy": True}, (photo.name, page, reference)
        if photo.name == "transparent.png":
            # a canvas keeps translucent pixels premultiplied by alpha, so their colour comes
            # back within a code value or so: the decisions agree, the probabilities nearly
            close = [abs(a["probability"] - b["probability"]) for a, b in zip(page["top_k"], reference["top_k"])]
            assert max(close) < 0.01, (photo.name, page["top_k"], reference["top_k"])
            continue
        for key in ("prediction", "abstain_reasons", "top_k", "malignancy", "treatment_scores", "unfamiliarity"):
            assert page[key] == reference[key], (photo.name, key)
        assert page["gate"] == "not_available"
        seen.add(page["prediction"])
    assert len(seen) >= 3, f"the generated photos should not all get one answer: {seen}"
    reasons = {r for page in results.values() for r in page["abstain_reasons"]}
    refer = {p["refer"] for page in results.values() for p in page["malignancy"]["operating_points"].values()}
    assert reasons == {"low_confidence", "unfamiliar"} and refer == {True, False}


def test_browser_makes_no_request_after_load(site, photos):
    with AppPage(site) as app:
        app.open()
        for photo in photos[:4]:
            assert "error" not in app.analyse(photo)
    after = [r["url"] for r in app.requests if r["after_ready"]]
    assert after == []
    assert app.requests and all(r["url"].startswith(app.url) for r in app.requests)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    import pillow_heif

    folder = tmp_path_factory.mktemp("bad_inputs")
    text = folder / "notes.jpg"
    text.write_text("not a photo, only text")
    # a real JPEG whose frame header says 10,001 x 10,000: the page refuses it from the header,
    # as the Python decoder does, before decoding a pixel (and the test writes no 300 MB array)
    small = _write(folder / "small.jpg", _scene(16, 16, 2)).read_bytes()
    sof = small.index(b"\xff\xc0")
    huge = folder / "huge.jpg"
    huge.write_bytes(small[: sof + 5] + (10_000).to_bytes(2, "big") + (10_001).to_bytes(2, "big") + small[sof + 9:])
    heif = pillow_heif.from_bytes(mode="RGB", size=(64, 48), data=_scene(48, 64, 3).tobytes())
    heif.save(str(folder / "phone.heic"), quality=80)
    large = _write(folder / "large.jpg", cv2.resize(_scene(300, 400, 4), (4000, 3000)), jpeg_quality=90)
    return {"text": text, "huge": huge, "heic": folder / "phone.heic", "large": large}


@pytest.fixture(scope="module")
def int8_page(models, tmp_path_factory):
    with AppPage(write_site(models, tmp_path_factory.mktemp("int8_site") / "site")) as app:
        assert app.open()["state"] == "ready"
        yield app


@pytest.mark.parametrize("which, words", [
    ("text", "not a photo this browser can read"),
    ("huge", "100,010,000 pixels, more than the 100,000,000"),
    ("heic", "cannot decode phone.heic (HEIF)"),
])
def test_browser_bad_photo_gets_a_message_on_the_page(int8_page, bad_inputs, which, words):
    result = int8_page.analyse(bad_inputs[which])
    assert words in result["error"]
    assert int8_page.page.is_visible("#error") and words in int8_page.page.inner_text("#error")
    assert not int8_page.page.is_visible("#result")


def test_browser_large_photo_is_downscaled_then_analysed(int8_page, bad_inputs):
    result = int8_page.analyse(bad_inputs["large"])
    assert result.get("error") is None and result["classified"]
    assert not int8_page.page.is_visible("#error")
    # as the Python decoder does: a 4000-px JPEG at a quarter, keeping >= 800 px
    assert result["analysed_size"] == [1000, 750]


@pytest.mark.parametrize("missing, words", [
    ("int8.tflite", "int8.tflite is missing from this site"),
    (CONFIG_FILENAME, "no model description"),
    ("vendor/litertjs-core/wasm", "could not start"),
])
def test_browser_site_without_its_files_says_so(models, tmp_path, missing, words):
    site = write_site(models, tmp_path / "site")
    target = site / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with AppPage(site) as app:
        opened = app.open()
    assert opened["state"] == "error" and words in opened["error"]


def test_web_app_refuses_a_model_folder_without_the_variant(models, tmp_path, capsys):
    from mobile_derm.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["web-app", "--models", str(empty), "--out", str(tmp_path / "site")]) == 2
    assert f"error: {empty}: no int8.tflite here" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("gate_json, words", [
    ({"analysis_size": 480}, "was built from another gate config than the one packed in the classifier"),
    (None, "not a gate model"),
])
def test_browser_site_refuses_a_gate_twin_that_does_not_fit(models, tmp_path, capsys, gate_json, words):
    """gate.tflite's packed gate.json is read before anything is written: a twin of another
    gate config, or a file that is no twin, stops web-app with one line."""
    import zipfile

    from mobile_derm.cli import main
    from mobile_derm_quality import GateConfig
    from mobile_derm_quality.gate_twin import CONTRACT_VERSION

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(models / "int8.tflite", folder / "int8.tflite")
    with zipfile.ZipFile(folder / "gate.tflite", "w") as packed:  # only the metadata is read before refusing
        if gate_json is not None:
            config = {**GateConfig.default().to_dict(), **gate_json}
            packed.writestr("gate.json", json.dumps({"contract_version": CONTRACT_VERSION, "config": config}))
    assert main(["web-app", "--models", str(folder), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / 'gate.tflite'}: ") and words in err
    assert not (tmp_path / "site").exists()


def test_web_app_config_comes_from_the_metadata(models, tmp_path):
    site = write_site(models, tmp_path / "site")
    config = json.loads((site / CONFIG_FILENAME).read_text())
    assert config["classifier"]["info"] == json.loads(_info().to_json())
    tensors = config["classifier"]["tensors"]
    assert tensors["input"]["dtype"] == "uint8" and tensors["input"]["scale"] == pytest.approx(1 / 128)
    assert tensors["outputs"]["unfamiliarity"]["name"] == "unfamiliarity"
    # nothing about this model is in the page's source
    for name in ("index.html", "app.js", "pipeline.js", "runtime.js", "gate.js"):
        text = (site / name).read_text()
        assert not any(word in text for word in [*LABELS, "Melanoma", "excision", "tiny_web_test"]), name


def test_browser_agreement_command_writes_its_report(models, photos, tmp_path, capsys):
    from mobile_derm.cli import main

    out = tmp_path / "agreement"
    assert main(["web-agreement", "--models", str(models), "--photos", *map(str, photos[:4]),
                 "--non-skin", "2", "--out", str(out)]) == 0
    report = json.loads((out / "web_agreement.json").read_text())
    assert report["n_photos"] == 6 and len(report["photos"]) == 6
    assert {key: value["rate"] for key, value in report["agreement"].items() if value} == {
        "top1": 1.0, "abstained": 1.0, "malignancy": 1.0}
    assert report["agreement"]["gate"] is None and report["requests_after_load"] == []
    assert report["benchmark_ms"]["inference"]["n"] == 6
    assert "| top1 | 6 | 6 | 100.0% |" in capsys.readouterr().out



@pytest.fixture(scope="module")
def gate_photos(tmp_path_factory) -> list[Path]:
    """Phone-sized generated photos, clean and degraded the ways the gate judges."""
    from mobile_derm_quality import degrade

    from mobile_derm.datasets.synthetic import DEMO_CLASSES, render_lesion_views

    folder = tmp_path_factory.mktemp("gate_photos")
    out = []
    for i, kind in enumerate([None, "gaussian_blur", "underexpose", "overexpose", "noise", "jpeg", "downscale",
                              "motion_blur", "glare", None]):
        # the demo's generated lesions: skin the gate accepts when undamaged (BGR -> RGB)
        image = np.ascontiguousarray(render_lesion_views(DEMO_CLASSES[i % 4], i, 1, 480, seed=i)[0][..., ::-1])
        if kind:
            levels = degrade.DEGRADATIONS[kind]["levels"]
            image = degrade.apply(image, kind, levels[-1], seed=i)
        out.append(_write(folder / f"{i}_{kind or 'clean'}.jpg", image))
    return out


def test_browser_gate_twin_gives_predicts_verdicts(default_gate_model, models, gate_photos, tmp_path):
    """The twin of the default gate config (which the tiny model's metadata leaves in force;
    its build's exit status is asserted in the fixture) gives the page predict's verdicts."""
    folder = tmp_path / "models"
    folder.mkdir()
    for source in (models / "int8.tflite", default_gate_model):
        shutil.copyfile(source, folder / source.name)
    site = write_site(folder, tmp_path / "site")
    config = json.loads((site / CONFIG_FILENAME).read_text())
    assert config["gate"]["file"] == "gate.tflite"
    predictor = Predictor(site / "int8.tflite")
    with AppPage(site) as app:
        assert app.open()["state"] == "ready"
        results = [app.analyse(photo) for photo in gate_photos]
        after = [r["url"] for r in app.requests if r["after_ready"]]
    decisions = set()
    for photo, page in zip(gate_photos, results):
        reference = predictor.predict(photo).to_dict()
        for key in ("decision", "reasons", "guidance"):
            assert page["quality"][key] == reference["quality"][key], (photo.name, key, page, reference)
        assert compare(page, reference, gate_on_page=True) == dict.fromkeys(["gate", "top1", "abstained", "malignancy"], True)
        decisions.add(page["quality"]["decision"])
    assert decisions >= {"accept", "reject"} and after == []
