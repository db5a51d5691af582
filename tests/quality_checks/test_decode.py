import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from mobile_derm_quality import ImageReadError, check_photo, decode_image_bytes, read_image
from mobile_derm_quality.decode import header_size


def _two_tone(h=40, w=80):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return a


def test_exif_orientation_applied(tmp_path):
    a = _two_tone()
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(a).save(p, "JPEG", exif=ex.tobytes(), quality=95)
    img = read_image(p)
    assert img.shape == (80, 40, 3)
    # after a 90 degree clockwise turn, the red (left) half is on top
    assert img[5, 20, 0] > 200 and img[75, 20, 2] > 200


def test_png_16bit_gray_rgba(tmp_path):
    g16 = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    img = read_image(tmp_path / "g16.png")
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3) and img.max() >= 250
    rgb16 = np.zeros((30, 40, 3), np.uint16)
    rgb16[..., 0] = 65535
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])
    c = read_image(tmp_path / "c16.png")
    assert c[0, 0].tolist() == [255, 0, 0]
    Image.fromarray(np.full((20, 30), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (20, 30, 3)
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (20, 30, 3) and x[0, 0, 1] == 200


def test_cmyk_jpeg_and_webp(tmp_path):
    a = _two_tone()
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", "JPEG")
    img = read_image(tmp_path / "c.jpg")
    assert img.shape == (40, 80, 3) and img[5, 5, 0] > 200 and img[5, 5, 2] < 60
    Image.fromarray(a).save(tmp_path / "w.webp", "WEBP", lossless=True)
    w = read_image(tmp_path / "w.webp")
    assert np.array_equal(w, a)
    Image.fromarray(a).save(tmp_path / "l.webp", "WEBP", quality=80)
    assert read_image(tmp_path / "l.webp").shape == a.shape


def test_reduced_decode_of_big_jpeg(tmp_path):
    big = cv2.resize(_two_tone(), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    p = tmp_path / "big.jpg"
    cv2.imwrite(str(p), big[:, :, ::-1])
    assert header_size(p.read_bytes()) == (4000, 3000)
    img = read_image(p)  # default keeps >= 800 px on the long side: 1/4 -> 1000x750
    assert img.shape == (750, 1000, 3)
    assert read_image(p, min_long_side=2000).shape == (1500, 2000, 3)
    assert read_image(p, min_long_side=5000).shape == (3000, 4000, 3)


def test_pixel_limit(tmp_path):
    p = tmp_path / "big.png"
    cv2.imwrite(str(p), np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageReadError, match="more than the limit"):
        read_image(p, max_pixels=100_000)


def _png_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_huge_dimension_headers_rejected_before_decoding():
    with pytest.raises(ImageReadError, match="limit"):
        decode_image_bytes(_png_header(60000, 60000) + b"\x00" * 64)
    # JPEG SOF0 claiming 65000 x 65000
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65000, 65000, 1) + b"\x01\x11\x00"
    with pytest.raises(ImageReadError, match="limit"):
        decode_image_bytes(b"\xff\xd8\xff\xe0\x00\x02" + sof + b"\x00" * 32)


def test_unreadable_inputs_raise_typed_error(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    with pytest.raises(ImageReadError) as exc:
        check_photo(tmp_path / "text.jpg")
    assert str(exc.value).startswith(str(tmp_path / "text.jpg") + ": ")
    buf = io.BytesIO()
    Image.fromarray(_two_tone()).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:40])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "trunc.jpg")
    with pytest.raises(ImageReadError):
        read_image(tmp_path)


def test_heic_without_extra_is_a_clear_error(tmp_path):
    p = tmp_path / "x.heic"
    p.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        with pytest.raises(ImageReadError, match="pillow-heif"):
            read_image(p)
    else:
        with pytest.raises(ImageReadError):
            read_image(p)


def test_one_pixel_image(tmp_path):
    p = tmp_path / "one.png"
    cv2.imwrite(str(p), np.full((1, 1, 3), 128, np.uint8))
    v = check_photo(p)
    assert v.decision == "reject" and "too_small" in v.reasons
