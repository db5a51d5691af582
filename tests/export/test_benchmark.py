"""mobile_derm_export.benchmark latency: every variant timed in the same rounds."""
import numpy as np
import pytest

from mobile_derm_export.benchmark import LATENCY_BLOCKS, interleaved_times_ms, latency_columns, ratio_by_block
from mobile_derm_export.convert import convert
from mobile_derm_export.metadata import write_model_file
from mobile_derm.app.model_info import ModelInfo

SIZE = 48


def _model_file(path, width: int):
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for _ in range(3):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    info = ModelInfo(name="t", version="1", backbone="tiny", input_size=SIZE, mean=(127.0,) * 3, std=(128.0,) * 3,
                     labels=["a", "b"], taxonomy={"a": {"malignant": True}, "b": {"malignant": False}})
    return write_model_file(path, convert(model, "float32"), info)


def test_interleaved_latency_times_each_model_and_ranks_them_by_work(tmp_path):
    small = _model_file(tmp_path / "small.tflite", 4)
    large = _model_file(tmp_path / "large.tflite", 96)  # about 500x the multiply-adds
    times = interleaved_times_ms({"small": small, "large": large}, num_threads=1, runs=15, warmup=2)
    assert set(times) == {"small", "large"}
    timings = {name: np.percentile(t, [50, 95]) for name, t in times.items()}
    for p50, p95 in timings.values():
        assert 0 < p50 <= p95
    assert timings["large"][0] > 3 * timings["small"][0]
    alone = interleaved_times_ms({"large": large}, 1, runs=5, warmup=1)["large"]  # one model alone
    assert len(alone) == 5 and 0 < np.percentile(alone, 50) <= np.percentile(alone, 95)


def test_ratio_by_block_measures_each_stretch_of_rounds():
    reference = np.array([10.0] * 4 + [20.0] * 4)  # a slow spell in the second half
    times = np.array([5.0] * 4 + [12.0] * 4)
    assert ratio_by_block(times, reference, blocks=2) == pytest.approx([0.5, 0.6])


def test_latency_columns_give_every_model_its_ratio_to_float32(tmp_path):
    small = _model_file(tmp_path / "small.tflite", 4)
    large = _model_file(tmp_path / "large.tflite", 96)
    columns = latency_columns({"float32": large, "small": small}, runs=10)
    assert columns["float32"]["latency_vs_float32"] == 1.0
    ratio = columns["small"]["latency_vs_float32"]
    assert ratio == pytest.approx(columns["small"]["latency_ms_p50"] / columns["float32"]["latency_ms_p50"])
    assert ratio < 0.5
    assert len(columns["small"]["latency_vs_float32_by_block"]) == LATENCY_BLOCKS
    assert all(r < 1 for r in columns["small"]["latency_vs_float32_by_block"])
    assert columns["small"]["latency_ms_p50_2threads"] > 0


# ------------------------------------------------------------ models brought from elsewhere
BYO_SIZE = 32


@pytest.fixture(scope="module")
def brought_models(tmp_path_factory):
    """Two .tflite files made with plain tf.lite.TFLiteConverter (no metadata of ours):
    a float32 model and its full-integer version with a uint8 input, plus a labelled
    folder of generated images (class sub-folders) and a labels.txt."""
    from mobile_derm.tf_setup import keras, tf

    root = tmp_path_factory.mktemp("byo")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((BYO_SIZE, BYO_SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)  # enough weights for int8 to be smaller
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    (root / "float.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    rng = np.random.default_rng(0)

    def calibration():
        for _ in range(20):
            yield [rng.uniform(-1, 1, (1, BYO_SIZE, BYO_SIZE, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    (root / "quantized.tflite").write_bytes(converter.convert())

    import cv2

    for label, colour in (("reddish", (40, 40, 200)), ("bluish", (200, 60, 40))):
        folder = root / "photos" / label
        folder.mkdir(parents=True)
        for i in range(4):
            image = np.clip(np.array(colour) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i}.png"), image)
    (root / "labels.txt").write_text("bluish\nreddish\n")
    return root


def test_benchmark_of_brought_models_writes_the_usual_columns(brought_models, tmp_path, capsys):
    """`mobile-derm benchmark --models A B --data FOLDER --labels labels.txt`, no training run:
    both files get accuracy, agreement with the float one, size and latency columns."""
    import json

    from mobile_derm.cli import main

    root = brought_models
    out = tmp_path / "bench"
    code = main(["benchmark", "--models", str(root / "float.tflite"), str(root / "quantized.tflite"),
                 "--data", str(root / "photos"), "--labels", str(root / "labels.txt"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "benchmark.json").read_text())
    rows = document["variants"]
    assert set(rows) == {"float", "quantized"}
    assert document["reference"] == "float" and document["n_test"] == 8
    for name, row in rows.items():
        for column in ("top1", "balanced_accuracy", "agreement_with_float", "latency_ms_p50", "latency_vs_float32"):
            assert row[column] is not None, (name, column)
        assert 0.0 <= row["top1"] <= 1.0 and 0.0 <= row["agreement_with_float"] <= 1.0
        assert row["size_bytes"] == (root / f"{name}.tflite").stat().st_size
        assert row["n_test"] == 8
    assert rows["float"]["agreement_with_float"] == 1.0 and rows["float"]["latency_vs_float32"] == 1.0
    assert rows["quantized"]["size_bytes"] < rows["float"]["size_bytes"]
    table = (out / "benchmark.md").read_text()
    assert "| float |" in table and "| quantized |" in table and "over float's" in table
    assert (out / "benchmark.png").stat().st_size > 0


def test_brought_models_get_the_same_probabilities_as_the_converter_made_them(brought_models):
    """The float file's scores in the benchmark equal LiteRT's on the normalized image
    ((pixel - 127.5) / 127.5 by default), so an unlabelled model is read the documented way."""
    from ai_edge_litert.interpreter import Interpreter

    from mobile_derm_export.benchmark import BYO_MEAN, BYO_STD, open_brought_model, tflite_probs

    model, labels, info = open_brought_model(brought_models / "float.tflite", ["bluish", "reddish"])
    assert labels == ["bluish", "reddish"] and info is None and model.float_input
    pixels = np.random.default_rng(1).integers(0, 256, (3, BYO_SIZE, BYO_SIZE, 3), dtype=np.uint8)
    interp = Interpreter(model_path=str(brought_models / "float.tflite"))
    interp.allocate_tensors()
    expected = []
    for p in pixels:
        interp.set_tensor(interp.get_input_details()[0]["index"],
                          ((p.astype(np.float32) - BYO_MEAN) / BYO_STD)[None].astype(np.float32))
        interp.invoke()
        expected.append(interp.get_tensor(interp.get_output_details()[0]["index"])[0])
    np.testing.assert_allclose(tflite_probs(model, pixels, progress=False), np.array(expected), atol=1e-6)


def test_brought_models_without_labels_or_with_unknown_classes_are_one_line_errors(brought_models, tmp_path, capsys):
    from mobile_derm.cli import main

    root = brought_models
    models = ["--models", str(root / "float.tflite"), str(root / "quantized.tflite")]
    assert main(["benchmark", *models, "--data", str(root / "photos"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "float.tflite" in err[-1] and "--labels" in err[-1]
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("bluish\ngreenish\n")
    assert main(["benchmark", *models, "--data", str(root / "photos"), "--labels", str(wrong),
                 "--out", str(tmp_path)]) == 2
    assert "reddish" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "benchmark.json").exists()


def test_abstention_columns_compare_each_rule_with_float_photo_by_photo():
    from mobile_derm_export.benchmark import abstention_columns

    info = ModelInfo(name="t", version="1", backbone="tiny", input_size=SIZE, mean=(127.0,) * 3, std=(128.0,) * 3,
                     labels=["a", "b"], ood_threshold=0.6,
                     familiarity={"output": "unfamiliarity", "abstain_above": 0.5})
    sure, unsure = [0.9, 0.1], [0.55, 0.45]
    reference = {"test": (np.array([sure, sure, unsure, sure]), np.array([0.1, 0.9, 0.1, 0.2])),
                 "not_skin": (np.array([sure, sure]), np.array([0.9, 0.8]))}
    # a variant whose score is stuck low: it misses both unfamiliar photos of not_skin and one of test
    stuck = {"test": (reference["test"][0], np.full(4, 0.02)), "not_skin": (reference["not_skin"][0], np.full(2, 0.02))}
    columns = abstention_columns({"float32": info, "int8": info}, {"float32": reference, "int8": stuck})
    assert columns["float32"]["abstention_agreement_with_float"] == 1.0
    assert columns["float32"]["unfamiliarity_mae_vs_float"] == 0.0
    int8 = columns["int8"]
    assert int8["unfamiliar_agreement_with_float"] == pytest.approx(3 / 6)
    assert int8["abstention_agreement_with_float"] == pytest.approx(3 / 6)  # photo 3 abstains on low confidence in both
    by_set = int8["abstention_by_set"]
    assert by_set["not_skin"]["abstention_agreement_with_float"] == 0.0 and by_set["not_skin"]["abstain_rate"] == 0.0
    assert by_set["test"]["low_confidence_agreement_with_float"] == 1.0
    assert by_set["not_skin"]["unfamiliarity_mae_vs_float"] == pytest.approx((0.88 + 0.78) / 2)
    # each variant is judged by its own file's thresholds: int8's own lower threshold keeps photo 3
    lower = ModelInfo(**{**info.to_dict(), "ood_threshold": 0.5})
    columns = abstention_columns({"float32": info, "int8": lower}, {"float32": reference, "int8": reference})
    assert columns["int8"]["abstention_by_set"]["test"]["low_confidence_agreement_with_float"] == pytest.approx(3 / 4)


def test_each_exported_file_carries_thresholds_chosen_on_its_own_outputs(tiny_demo):
    """The demo's int8 file once abstained on every photo: its float32 twin's abstention
    threshold (0.99986) was above the largest probability a uint8 output can hold (255/256).
    Export now chooses each file's thresholds on that file's validation outputs."""
    import json

    from mobile_derm.app.model_file import read_model_info

    int8 = read_model_info(tiny_demo / "int8.tflite")
    assert int8.ood_threshold <= 255 / 256
    assert int8.malignancy_targets == read_model_info(tiny_demo / "float32.tflite").malignancy_targets
    rows = json.loads((tiny_demo / "benchmark.json").read_text())["variants"]
    assert rows["int8"]["abstention_by_set"]["test"]["abstain_rate"] < 0.5


def test_the_demo_int8_model_keeps_its_unfamiliarity_score(tiny_demo):
    """The demo's benchmark compares every variant's abstention with float32's on the test
    split and on photos that are not skin (generated; ../shared/data/ood too when present).
    Before the score's integer ranges were bounded in the graph, the int8 demo model gave
    two distinct scores (0.02 and 0.05) to every photo: MAE 0.07-0.22 per set."""
    import json

    document = json.loads((tiny_demo / "benchmark.json").read_text())
    assert {"test", "non_skin_generated"} <= set(document["abstention_sets"])
    assert "unfamiliar_agreement_with_float" in (tiny_demo / "benchmark.md").read_text()
    for variant in ("float16", "int8"):
        row = document["variants"][variant]
        assert row["unfamiliar_agreement_with_float"] >= 0.98, variant
        for name, per_set in row["abstention_by_set"].items():
            assert per_set["unfamiliarity_mae_vs_float"] < (0.1 if name == "ood" else 0.05), (variant, name)
