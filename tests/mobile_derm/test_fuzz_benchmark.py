"""The fuzz benchmark: its inputs, its runner's judgement, and a seeded run through decode -> gate -> predict."""
import os
import time

import pytest

from mobile_derm.cli import main
from mobile_derm.evaluation.fuzz import generate_inputs, run_fuzz


def test_inputs_are_seeded_and_cover_every_format():
    first = list(generate_inputs(400, seed=3))
    assert first == list(generate_inputs(400, seed=3))
    assert first != list(generate_inputs(400, seed=4))
    names = " ".join(name for name, _ in first)
    for kind in ("jpeg_cmyk", "png_16bit", "png_palette", "png_alpha", "gif_animated", "tiff_16bit", "webp_alpha",
                 "bmp", "ico", "heic", "avif", "jpeg_exif8", "jpeg_broken_exif", "huge_gif", "huge_tiff", "empty",
                 "_truncate_", "_flip_", "_splice_", "_header_"):
        assert kind in names, kind


def _raises(data, name, predictor):
    raise ValueError("not a typed error")


def _dies(data, name, predictor):
    os._exit(9)


def _sleeps(data, name, predictor):
    time.sleep(30)


def _allocates(data, name, predictor):
    return "verdict", str(len(bytearray(200 * 2**20)))


def _allocates_nothing(data, name, predictor):
    return "verdict", "-"


def _untyped_message(data, name, predictor):
    from mobile_derm_quality.errors import ImageReadError

    raise ImageReadError(name, "cannot identify image file <_io.BytesIO object at 0x7fe7>")


@pytest.mark.parametrize("stage, outcome", [(_raises, "traceback"), (_dies, "crash"), (_sleeps, "hang")])
def test_the_runner_reports_each_kind_of_failure_and_carries_on(stage, outcome):
    """A stage that raises, kills its process or hangs is reported as such, and the next input still runs."""
    summary = run_fuzz(inputs=[("a", b"x"), ("b", b"y")], stage=stage, time_limit=1.0, progress=False,
                       start_method="fork")
    assert summary["outcomes"][outcome] == 2 and not summary["passed"]
    assert [f["name"] for f in summary["failures"]] == ["a", "b"]


def test_the_runner_sees_peak_memory_and_broken_messages():
    # the forked worker starts from this test process's size: compare with an input that allocates nothing
    limit = 100_000
    idle = run_fuzz(inputs=[("small", b"")], stage=_allocates_nothing, memory_limit_mb=limit, progress=False,
                    start_method="fork")
    measured = run_fuzz(inputs=[("big", b"")], stage=_allocates, memory_limit_mb=limit, progress=False,
                        start_method="fork")
    assert measured["passed"] and measured["max_peak_rss_mb"] - idle["max_peak_rss_mb"] > 150
    capped = run_fuzz(inputs=[("big", b"")], stage=_allocates, memory_limit_mb=100, progress=False, start_method="fork")
    assert capped["outcomes"]["traceback"] == 1 and "MemoryError" in capped["failures"][0]["detail"]
    untyped = run_fuzz(inputs=[("x.jpg", b"")], stage=_untyped_message, progress=False, start_method="fork")
    assert untyped["outcomes"]["traceback"] == 1


def test_seeded_run_through_decode_and_gate_has_no_failure():
    summary = run_fuzz(300, seed=0, progress=False)
    assert summary["inputs"] == 300 and summary["passed"], summary["failures"][:5]
    assert summary["outcomes"]["verdict"] > 30 and summary["outcomes"]["typed_error"] > 30


@pytest.mark.slow
def test_fuzz_command_with_the_demo_model(tiny_demo, tmp_path):
    """The CLI, with the demo's int8 classifier behind the gate: JSON + table, exit 0 when every input passes."""
    out = tmp_path / "fuzz"
    assert main(["fuzz", "--count", "200", "--seed", "5", "--model", str(tiny_demo / "int8.tflite"),
                 "--out", str(out)]) == 0
    import json

    summary = json.loads((out / "fuzz.json").read_text())
    assert summary["passed"] and summary["inputs"] == 200 and summary["model"].endswith("int8.tflite")
    assert summary["classified"] == summary["outcomes"]["verdict"] > 30  # every decodable input reached the classifier
    assert "| verdict |" in (out / "fuzz.md").read_text()
