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
