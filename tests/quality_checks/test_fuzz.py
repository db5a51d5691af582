"""Every input ends in a Verdict or an ImageReadError: never a cv2/Pillow traceback."""
import io
import struct

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mobile_derm_quality import ImageReadError, Verdict, assess, decode_image_bytes

_DECODE_LIMIT = dict(max_pixels=4_000_000, min_long_side=64)


def _seed_files():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    out = []
    for fmt, kw in (("JPEG", {}), ("PNG", {}), ("WEBP", {})):
        b = io.BytesIO()
        Image.fromarray(a).save(b, fmt, **kw)
        out.append(b.getvalue())
    b = io.BytesIO()
    Image.fromarray(a).convert("CMYK").save(b, "JPEG")
    out.append(b.getvalue())
    out.append(cv2.imencode(".png", (a[:, :, 0].astype(np.uint16) * 257))[1].tobytes())
    out.append(cv2.imencode(".png", np.dstack([a, a[:, :, :1]]))[1].tobytes())
    return out


SEEDS = _seed_files()


def _judge(data: bytes):
    try:
        rgb = decode_image_bytes(data, "fuzz", **_DECODE_LIMIT)
    except ImageReadError as exc:
        assert str(exc).startswith("fuzz: ")
        return None
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    v = assess(rgb)
    assert isinstance(v, Verdict) and v.decision in ("accept", "warn", "reject")
    return v


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SEEDS))), st.data())
def test_mutated_and_truncated_files(idx, data):
    raw = bytearray(SEEDS[idx])
    op = data.draw(st.sampled_from(["truncate", "flip", "splice", "header"]))
    if op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif op == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    elif op == "splice":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(max_size=64))
    else:  # rewrite the dimensions a header announces (PNG IHDR / JPEG SOF)
        w, h = data.draw(st.integers(0, 70000)), data.draw(st.integers(0, 70000))
        if raw[:4] == b"\x89PNG":
            raw[16:24] = struct.pack(">II", w, h)
        else:
            j = bytes(raw).find(b"\xff\xc0")
            if j > 0:
                raw[j + 5 : j + 9] = struct.pack(">HH", min(h, 65535), min(w, 65535))
    _judge(bytes(raw))


@settings(max_examples=800, deadline=None)
@given(st.binary(min_size=0, max_size=512))
def test_random_bytes(b):
    _judge(b)
    _judge(b"\xff\xd8\xff" + b)
    _judge(b"\x89PNG\r\n\x1a\n" + b)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from([1, 2, 3, 4]),
    st.sampled_from(["zeros", "full", "random"]),
)
def test_arrays_of_odd_shapes(h, w, c, fill):
    rng = np.random.default_rng(h * 41 + w)
    if fill == "zeros":
        a = np.zeros((h, w, c), np.uint8)
    elif fill == "full":
        a = np.full((h, w, c), 255, np.uint8)
    else:
        a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if c in (3, 4):
        assert isinstance(assess(a), Verdict)
    elif c == 1:
        assert isinstance(assess(a[:, :, 0]), Verdict)
