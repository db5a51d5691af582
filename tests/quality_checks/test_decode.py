import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from mobile_derm_quality import ImageReadError, check_photo, decode_image_bytes, read_image
from mobile_derm_quality.decode import MAX_DECODE_BYTES, TRANSPARENCY_BACKGROUND, decode_photo, header_size


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
    # half-transparent green over the neutral grey, not the hidden colour values as they are
    assert x.shape == (20, 30, 3) and x[0, 0].tolist() == [64, 164, 64]


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


def _gif_header(w, h):
    """A GIF whose screen and first image descriptor claim w x h, with a one-code image."""
    screen = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00\x3b"
    return screen + image


def _tiff_header(w, h, samples=3, bits=8):
    """A little-endian TIFF whose first IFD claims w x h (no strip data)."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 8), (277, 3, 1, samples), (278, 4, 1, h), (279, 4, 1, w * h * samples)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _bmp_header(w, h):
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + dib


@pytest.mark.parametrize("make", [_gif_header, _tiff_header, _bmp_header], ids=["gif", "tiff", "bmp"])
def test_bomb_headers_of_every_format_rejected_before_decoding(make):
    """The 20000x20000 GIF and TIFF of the hardening issue were decoded in full (3.1 GB) before
    the pixel limit fired; now the header alone stops them."""
    assert header_size(make(5000, 4000)) == (5000, 4000)
    with pytest.raises(ImageReadError, match="more than the limit"):
        decode_image_bytes(make(20000, 20000))


def test_decode_memory_is_bounded_by_the_header():
    # 90 MP is under the pixel limit, but four 16-bit samples per pixel are not under the memory cap
    with pytest.raises(ImageReadError, match=f"limit of {MAX_DECODE_BYTES // 2**20} MiB"):
        decode_image_bytes(_tiff_header(10000, 9000, samples=4, bits=16))


def test_unknown_or_lying_headers_are_one_line_errors(tmp_path):
    (tmp_path / "text.jpg").write_text("hello, not an image")
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "text.jpg")
    message = str(exc.value)
    assert "object at 0x" not in message and "\n" not in message and "not an image" in message
    with pytest.raises(ImageReadError, match="TIFF|header|decode"):
        decode_image_bytes(b"II*\x00" + b"\xff" * 40)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((30, 40, 3), c, np.uint8)) for c in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    img = read_image(p)
    assert img.shape == (30, 40, 3) and img[15, 20, 0] > 200 and img[15, 20, 1] < 60


def test_transparent_pixels_are_composited_on_neutral_grey(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (255, 0, 255)  # hidden colour under full transparency
    rgba[:, 15:, 3] = 255
    for name, fmt in (("t.png", "PNG"), ("t.webp", "WEBP")):
        Image.fromarray(rgba, "RGBA").save(tmp_path / name, fmt, lossless=True) if fmt == "WEBP" else \
            Image.fromarray(rgba, "RGBA").save(tmp_path / name, fmt)
        photo = decode_photo((tmp_path / name).read_bytes(), name)
        assert photo.had_transparency
        assert photo.rgb[5, 2].tolist() == [TRANSPARENCY_BACKGROUND] * 3
        assert photo.rgb[5, 25].tolist() == [255, 0, 255]
    Image.fromarray(rgba[..., :3]).save(tmp_path / "opaque.png")
    assert not decode_photo((tmp_path / "opaque.png").read_bytes()).had_transparency


def test_decoded_photo_reports_the_photos_own_upright_size(tmp_path):
    big = cv2.resize(_two_tone(), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    ex = Image.Exif()
    ex[0x0112] = 6  # shown turned a quarter
    Image.fromarray(big).save(tmp_path / "big.jpg", "JPEG", exif=ex.tobytes())
    photo = decode_photo((tmp_path / "big.jpg").read_bytes())
    assert photo.rgb.shape == (1000, 750, 3)  # a reduced decode, upright
    assert (photo.width, photo.height) == (3000, 4000)


def test_heic_decodes_in_the_default_install(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.fromarray(_two_tone()).save(tmp_path / "x.heic", "HEIF")
    img = read_image(tmp_path / "x.heic")
    assert img.shape == (40, 80, 3) and img[5, 5, 0] > 200 and img[5, 75, 2] > 200
