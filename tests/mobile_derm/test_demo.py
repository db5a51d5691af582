"""End to end: ``mobile-derm demo --tiny`` leaves what the README promises."""
import json
import subprocess
import sys

import pytest

VARIANTS = ("float32", "float16", "int8")


def test_demo_writes_models_and_benchmark(tiny_demo):
    for variant in VARIANTS:
        assert (tiny_demo / f"{variant}.tflite").stat().st_size > 100_000
    document = json.loads((tiny_demo / "benchmark.json").read_text())
    rows = document["variants"]
    assert set(rows) == {"keras_float", *VARIANTS}
    for name, row in rows.items():
        assert 0.0 <= row["top1"] <= 1.0
        assert row["n_test"] == document["n_test"] > 0
        if name != "keras_float":
            assert row["size_bytes"] == (tiny_demo / f"{name}.tflite").stat().st_size
            assert row["latency_ms_p50"] > 0
    # int8: weights a quarter of float32, plus biases, scales and the flatbuffer
    assert rows["int8"]["size_bytes"] <= 0.31 * rows["float32"]["size_bytes"]
    # float32 on LiteRT is the same network as Keras: same top-1 decisions
    assert rows["float32"]["agreement_with_float"] >= 0.99
    table = (tiny_demo / "benchmark.md").read_text()
    assert all(f"| {v} |" in table for v in VARIANTS)
    assert (tiny_demo / "benchmark.png").stat().st_size > 0


def test_every_model_runs_on_litert_without_tensorflow(tiny_demo, block_tensorflow_prelude):
    script = block_tensorflow_prelude + f"""
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from mobile_derm.app.model_file import read_model_info
for variant in {VARIANTS!r}:
    path = r"{tiny_demo}/" + variant + ".tflite"
    info = read_model_info(path)
    interp = Interpreter(model_path=path)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert out.shape[-1] == len(info.labels), (variant, out.shape)
assert "tensorflow" not in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_metadata_displayer_reads_labels_back(tiny_demo):
    from tensorflow_lite_support.metadata.python import metadata

    from mobile_derm.app.model_file import read_model_info

    for variant in VARIANTS:
        path = str(tiny_demo / f"{variant}.tflite")
        displayer = metadata.MetadataDisplayer.with_model_file(path)
        labels = displayer.get_associated_file_buffer("labels.txt").decode().split()
        assert labels == read_model_info(path).labels
        assert "mobile_derm.json" in displayer.get_packed_associated_file_list()


def test_int8_model_takes_uint8_pixels_mapped_like_the_float_normalization(tiny_demo):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tiny_demo / "int8.tflite"))
    detail = interp.get_input_details()[0]
    assert detail["dtype"].__name__ == "uint8"
    scale, zero = detail["quantization"]
    # (pixel - 127) / 128 == (pixel - zero) * scale for every pixel value
    assert scale == pytest.approx(1 / 128, rel=0.01)
    assert zero in (127, 128)
