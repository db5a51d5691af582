import json

import cv2
import numpy as np
import pytest

from mobile_derm_quality import GateConfig, assess, degrade
from mobile_derm_quality.features import measure, shrink
from mobile_derm_quality.gate import GUIDANCE, ramp


def test_clean_synthetic_skin_is_accepted(skin):
    v = assess(skin)
    assert v.decision in ("accept", "warn"), v.to_dict()
    assert all(0.0 <= c.score <= 1.0 for c in v.checks)
    json.dumps(v.to_dict())


def test_gaussian_blur_lowers_sharpness_below_threshold(skin):
    sharp = assess(skin).check("sharpness")
    blurred = assess(degrade.gaussian_blur(skin, 5.0)).check("sharpness")
    assert sharp.passed and not blurred.passed
    assert blurred.score < sharp.score
    assert blurred.reason in ("blurred", "motion_blur")


def test_motion_blur_gives_hold_still(skin):
    k = np.zeros((1, 31), np.float32)
    k[0, :] = 1 / 31
    moved = cv2.filter2D(skin, -1, k)
    v = assess(moved)
    c = v.check("sharpness")
    assert not c.passed and c.reason == "motion_blur"
    assert GUIDANCE["motion_blur"] in v.guidance and v.decision == "reject"


def test_diagonal_shake_gives_hold_still(skin):
    # a shake at 45 degrees spreads over both axes: neither the horizontal nor the vertical blur is large
    k = np.eye(21, dtype=np.float32) / 21
    v = assess(cv2.filter2D(skin, -1, k))
    c = v.check("sharpness")
    assert max(c.raw["blur_h"], c.raw["blur_v"]) < 2.2  # the blur term alone would not even warn
    assert not c.passed and c.reason == "motion_blur" and GUIDANCE["motion_blur"] in v.guidance


def test_defocus_is_not_a_shake(skin):
    # defocus blurs every direction alike: the blur term judges it and names it, the shake term stays quiet
    cfg = GateConfig.default()
    shake, thr = cfg.ramps["sharpness"]["shake_blur"], cfg.thresholds["sharpness"] + cfg.warn_margin["sharpness"]
    for sigma in (1.0, 2.0):
        c = assess(degrade.gaussian_blur(skin, sigma)).check("sharpness")
        assert ramp(c.raw["shake_blur"], shake["good"], shake["bad"]) >= thr, sigma
    for sigma in (4.0, 5.0):  # rejected, and named for what it is (at 3 the two terms are close: a warning, either name)
        assert assess(degrade.gaussian_blur(skin, sigma)).check("sharpness").reason == "blurred", sigma


def test_shake_direction_is_the_edges_dominant_normal():
    from mobile_derm_quality.features import shake_direction

    assert shake_direction(np.array([3.0, -2.0]), np.array([0.0, 0.0])) == pytest.approx((1.0, 0.0))
    c, s = shake_direction(np.array([1.0, -2.0]), np.array([1.0, -2.0]))
    assert (c, s) == pytest.approx((np.sqrt(0.5), np.sqrt(0.5)))
    assert shake_direction(np.array([1.0, 0.0]), np.array([0.0, 1.0])) is None  # even: no direction


def test_underexposure_fails_with_reason(skin):
    v = assess(degrade.gain(skin, 0.3))
    c = v.check("exposure")
    assert not c.passed and c.reason == "too_dark"
    assert "Move to better light" in v.guidance
    # colour/framing checks are not blamed for what exposure caused
    assert "not_skin" not in v.reasons


def test_overexposure_fails(skin):
    c = assess(degrade.gain(skin, 3.0)).check("exposure")
    assert not c.passed and c.reason in ("too_bright", "clipped_highlights")


def test_glare_spot_fails_glare(skin):
    img = skin.copy()
    cv2.circle(img, (200, 150), 60, (255, 255, 255), -1)
    c = assess(img).check("glare")
    assert not c.passed and c.reason == "glare" and c.guidance == "Turn off the flash and avoid reflections on the skin"


def test_a_few_small_flash_lobes_flag_glare(skin):
    # 1-4 small specular lobes: too little white area for glare_fraction, but each stands out from its skin
    img = skin.copy()
    assert assess(img).check("glare").reason is None
    for x, y in ((80, 70), (300, 90), (150, 230)):
        cv2.circle(img, (x, y), 9, (235, 225, 220), -1)
        cv2.circle(img, (x, y), 5, (255, 255, 255), -1)
    c = assess(img).check("glare")
    assert c.raw["glare_spots"] > 0 and ramp(c.raw["glare_fraction"], 0.005, 0.06) > 0.4  # the old term alone: no flag
    assert c.reason == "glare" and (c.warn or not c.passed)


def test_glare_spots_need_contrast_with_the_surroundings():
    from mobile_derm_quality.features import _glare_spots, shrink

    def spots(img):
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return _glare_spots(cv2.inRange(img, (245,) * 3, (255,) * 3), gray, shrink(img, 96))

    white = np.full((240, 320, 3), 250, np.uint8)
    assert spots(white) == 0.0  # all white: nothing stands out (an over-exposure, not a reflection)
    img = np.full((240, 320, 3), (180, 130, 110), np.uint8)
    img[100:106, 150:156] = 255
    assert spots(img) == pytest.approx(36 / (240 * 320))


def test_blue_cast_fails_colour_cast(skin):
    cast = degrade.colour_cast(skin, 0.35, np.random.default_rng(1))  # rng picks a direction
    img = np.clip(skin.astype(np.float32) * np.array([0.7, 1.0, 1.45]), 0, 255).astype(np.uint8)
    assert not assess(img).check("colour_cast").passed
    assert cast.shape == skin.shape


def test_white_point_ignores_clipped_pixels():
    from mobile_derm_quality.features import _white_point

    tiny = np.full((40, 40, 3), (200, 150, 125), np.uint8)
    u, v = _white_point(tiny)
    assert u == pytest.approx(np.log(201 / 151)) and v == pytest.approx(np.log(126 / 151))
    tiny[:10] = 255  # clipped: no colour of the light left
    assert _white_point(tiny) == pytest.approx((u, v))


def test_warm_tungsten_cast_fails_colour_cast(skin):
    # a tungsten light the phone took for daylight: blue and green weak against red. The frame's mean
    # chromaticity stays inside the skin box (cast_distance 0); the white point leaves the clean photos'.
    assert assess(skin).check("colour_cast").reason is None
    warm = np.clip(skin.astype(np.float32) * np.array([1.0, 0.82, 0.55]), 0, 255).astype(np.uint8)
    c = assess(warm).check("colour_cast")
    assert c.raw["cast_distance"] == 0.0
    assert not c.passed and c.reason == "colour_cast"


def test_shade_cast_moves_white_cool_and_warns_colour_cast(skin):
    # light bluer than the phone assumed (shade) multiplies each channel alike everywhere: the white point's log
    # chromaticity moves by the log gains, along COOL_LIGHT_DIRECTION for a colour-temperature error
    import dataclasses

    from mobile_derm_quality.features import COOL_LIGHT_DIRECTION
    from mobile_derm_quality.gate import verdict_from_measurements, white_distance

    def lit(shift):
        gains = np.exp(np.array([COOL_LIGHT_DIRECTION[0], 0.0, COOL_LIGHT_DIRECTION[1]]) * shift)
        return np.clip(skin.astype(np.float32) * gains, 0, 255).astype(np.uint8)

    base = assess(skin).check("colour_cast")
    assert base.reason is None
    assert assess(lit(0.25)).check("colour_cast").raw["white_cool"] == pytest.approx(base.raw["white_cool"] + 0.25, abs=0.02)
    assert assess(lit(-0.25)).check("colour_cast").raw["white_cool"] == pytest.approx(base.raw["white_cool"] - 0.25, abs=0.02)
    # a white point 0.19 from clean photos' towards blue (beyond their 99th percentile, 0.139, below the fail
    # point) warns; the symmetric white_distance alone lets it through, because clean photos spread far
    # further towards warm light
    cfg = GateConfig.default()
    locus = cfg.white_locus
    m = dataclasses.replace(measure(skin), white_u=locus["u"] + 0.19 * COOL_LIGHT_DIRECTION[0],
                            white_v=locus["v"] + 0.19 * COOL_LIGHT_DIRECTION[1])
    assert white_distance(m, locus) < 4.17
    c = verdict_from_measurements(m, cfg).check("colour_cast")
    assert c.passed and c.warn and c.reason == "colour_cast"
    without = GateConfig.default()
    without.ramps["colour_cast"].pop("white_cool")
    assert verdict_from_measurements(m, without).check("colour_cast").reason is None


def test_dark_skin_in_daylight_is_not_rejected_as_colour_cast(make_skin):
    # matte dark skin, no highlight: its brightest pixels are skin-coloured, not the light's colour. The
    # white point may warn (docs/gate.md says so) but must not reject.
    for tone in ((150, 100, 75), (95, 60, 45), (60, 38, 28)):
        assert assess(make_skin(tone=tone)).check("colour_cast").passed, tone


def test_noise_fails_noise(skin):
    noisy = degrade.noise(skin, 35.0, np.random.default_rng(0))
    c = assess(noisy).check("noise")
    assert not c.passed and c.reason == "noisy"


def test_heavy_jpeg_is_compressed(skin):
    big = cv2.resize(skin, (600, 450))
    c = assess(degrade.jpeg(big, 5)).check("noise")
    assert not c.passed and c.reason == "compressed"


def _resampled_jpeg(img: np.ndarray, scale: float, quality: int) -> np.ndarray:
    """Shrunk by ``scale``, JPEG-compressed hard and grown back: the small copy's 8 px blocks every 8 * scale px."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
    return cv2.resize(degrade.jpeg(small, quality), (w, h), interpolation=cv2.INTER_LINEAR)


def _fail_point(check: str, term: str) -> float:
    """The raw value where the term's score falls to the check's threshold."""
    cfg = GateConfig.default()
    gb = cfg.ramps[check][term]
    return gb["bad"] + cfg.thresholds[check] * (gb["good"] - gb["bad"])


def test_resampled_jpeg_is_compressed(make_skin):
    # 3x smaller, quality 10, grown back: 24 px blocks, which the native 8 px blockiness does not see
    big = make_skin(900, 1200)
    v = assess(_resampled_jpeg(big, 3, 10))
    c = v.check("noise")
    fail_at = _fail_point("noise", "jpeg_grid")
    assert c.raw["jpeg_grid"] > 2 * fail_at
    assert _term_score(c, "blockiness") >= GateConfig.default().thresholds["noise"]  # not what rejects it
    assert not c.passed and c.reason == "compressed" and v.decision == "reject"
    assert measure(big).jpeg_grid < 0.1 * fail_at  # the clean photo-like image: no coarse grid


@pytest.mark.parametrize("quality", [90, 40, 10])
def test_a_jpegs_own_8px_grid_is_not_a_coarse_grid(make_skin, quality):
    # a photo compressed at its own size, even hard, has its blocks every 8 px: blockiness's business
    m = measure(degrade.jpeg(make_skin(900, 1200), quality))
    assert m.jpeg_grid < 0.1 * _fail_point("noise", "jpeg_grid")


def test_jpeg_grid_needs_a_crop_of_64_px():
    from mobile_derm_quality.features import GRID_MIN_SIDE, _jpeg_grid, native_steps

    rng = np.random.default_rng(0)
    assert _jpeg_grid(native_steps(rng.integers(0, 255, (GRID_MIN_SIDE - 1, 300), np.uint8))) == 0.0
    assert _jpeg_grid(native_steps(np.zeros((300, 300), np.uint8))) == 0.0  # flat: no steps at all


def test_resolution_uses_model_input(skin):
    small = cv2.resize(skin, (200, 150), interpolation=cv2.INTER_AREA)
    v = assess(small, min_model_input=224)
    c = v.check("resolution")
    assert not c.passed and c.reason == "too_small" and v.decision == "reject"
    assert assess(small, min_model_input=128).check("resolution").passed


def test_zoom_out_fails_framing_move_closer(skin):
    far = degrade.zoom_out(skin, 0.2, np.random.default_rng(0))
    v = assess(far)
    assert v.decision == "reject"
    assert {"too_far", "not_skin"} & set(v.reasons)


def test_off_centre_reason(make_skin):
    img = np.zeros((300, 400, 3), np.uint8)
    img[:] = (60, 90, 160)  # blue cloth
    patch = make_skin(150, 200, seed=3)
    img[:150, :200] = patch
    c = assess(img).check("framing")
    assert c.reason in ("off_centre", "too_far") and not c.passed


def _term_score(check, term: str) -> float:
    gb = GateConfig.default().ramps[check.name][term]
    return ramp(check.raw[term], gb["good"], gb["bad"])


def test_detail_at_the_edge_gives_centre_the_spot(skin):
    # the sharp skin and its lesion in the left 40% of the frame, the rest the same skin out of focus (more
    # of the body, farther away): the skin colour is everywhere, so only where the detail lies tells it
    body = cv2.GaussianBlur(skin, (0, 0), 6)
    img = body.copy()
    img[:, :160] = skin[:, 120:280]
    # the strip's sharp border and the lesion's outline, 23 px apart in the native crop, read as a coarse JPEG
    # grid (jpeg_grid's limit, docs/gate.md): that term is left out, this test is framing's
    cfg = GateConfig.default()
    del cfg.ramps["noise"]["jpeg_grid"]
    v = assess(img, cfg)
    c = v.check("framing")
    thr = GateConfig.default().thresholds["framing"]
    assert _term_score(c, "roi_offset") >= thr and _term_score(c, "skin_fraction") >= thr  # the skin-colour terms pass
    assert c.raw["detail_offset"] > 0.3
    # the term warns only (docs/gate.md): framing passes with a warning that names it
    assert c.passed and c.warn and c.reason == "off_centre" and GUIDANCE["off_centre"] in v.guidance
    assert v.decision == "warn"


def test_detail_offset_warns_but_never_rejects():
    from mobile_derm_quality.features import MAX_DETAIL_OFFSET, _detail_offset

    grad = np.zeros((64, 64), np.float32)
    grad[:8, :8] = 100.0  # every detailed point in the top-left cell: the largest offset a frame can give
    assert _detail_offset(grad) == pytest.approx(MAX_DETAIL_OFFSET)
    cfg = GateConfig.default()
    gb = cfg.ramps["framing"]["detail_offset"]
    assert ramp(MAX_DETAIL_OFFSET, gb["good"], gb["bad"]) >= cfg.thresholds["framing"]  # passes ...
    assert ramp(0.5, gb["good"], gb["bad"]) < cfg.thresholds["framing"] + cfg.warn_margin["framing"]  # ... with a warning


def test_centred_detail_passes_framing(skin):
    cfg = GateConfig.default()
    c = assess(skin).check("framing")
    assert c.raw["detail_offset"] < 0.05
    assert _term_score(c, "detail_offset") >= cfg.thresholds["framing"] + cfg.warn_margin["framing"]  # not even a warning


def test_detail_offset_weighs_cells_by_their_squared_detailed_share():
    from mobile_derm_quality.features import DETAIL_GRADIENT, DETAIL_GRID, _detail_offset, detail_shares

    grad = np.zeros((4 * DETAIL_GRID, 4 * DETAIL_GRID), np.float32)
    grad[:, : 2 * DETAIL_GRID] = DETAIL_GRADIENT + 1  # the left half of the frame is detailed
    shares = detail_shares(grad)
    assert (shares[:, : DETAIL_GRID // 2] == 1.0).all() and (shares[:, DETAIL_GRID // 2 :] == 0.0).all()
    # centroid at x = -0.25 of the frame, y = 0: 0.25 / the half-diagonal
    assert _detail_offset(grad) == pytest.approx(0.25 / np.hypot(0.5, 0.5))
    grad[:] = 0.0
    grad[::2, : 2 * DETAIL_GRID] = DETAIL_GRADIENT  # at the level is not above it
    assert _detail_offset(grad) == 0.0
    # a densely detailed left half against a right half detailed at a quarter of its points: 16 to 1
    grad[:, : 2 * DETAIL_GRID] = DETAIL_GRADIENT + 1
    grad[::2, 2 * DETAIL_GRID :: 2] = DETAIL_GRADIENT + 1
    assert detail_shares(grad)[0, -1] == 0.25
    assert _detail_offset(grad) == pytest.approx((0.25 * 15 / 17) / np.hypot(0.5, 0.5))
    assert _detail_offset(np.zeros_like(grad)) == 0.0  # no detail: nothing to locate


@pytest.mark.parametrize("colour", [(128, 128, 128), (40, 80, 200), (60, 160, 70)])
def test_grey_blue_green_images_fail_not_skin(colour):
    rng = np.random.default_rng(0)
    img = np.clip(np.array(colour, np.float32) + rng.normal(0, 8, (240, 320, 3)), 0, 255).astype(np.uint8)
    v = assess(img)
    assert v.decision == "reject"
    assert not v.check("not_skin").passed or not v.check("colour_cast").passed


def test_grayscale_photo_is_rejected(skin):
    g = cv2.cvtColor(cv2.cvtColor(skin, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    v = assess(g)
    assert v.decision == "reject" and "colour_cast" in v.reasons


def test_ramp_and_shrink():
    assert ramp(1.0, good=1.0, bad=3.0) == 1.0 and ramp(3.0, 1.0, 3.0) == 0.0 and ramp(2.0, 1.0, 3.0) == 0.5
    assert ramp(float("nan"), 1.0, 3.0) == 0.0
    big = np.zeros((3000, 4000, 3), np.uint8)
    assert max(shrink(big, 320).shape[:2]) == 320
    small = np.zeros((10, 20, 3), np.uint8)
    assert shrink(small, 320) is small


@pytest.mark.parametrize("h, w", [(3000, 4000), (4001, 1333), (1280, 1280), (5, 2000)])
def test_shrink_of_a_large_photo_is_point_samples_then_one_2x2_mean(h, w):
    """At least 4x the target: nearest neighbour to exactly twice the final size, then the 2x2 box
    mean (round half up), nothing after it; the final size is the photo's shape scaled, rounded."""
    rgb = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    fw, fh = max(1, round(w * 320 / max(h, w))), max(1, round(h * 320 / max(h, w)))
    rows = (np.arange(2 * fh) * h // (2 * fh))[:, None]  # OpenCV's INTER_NEAREST: floor(d * src / dst)
    cols = (np.arange(2 * fw) * w // (2 * fw))[None, :]
    samples = rgb[rows, cols].astype(np.int32)
    box = samples[0::2, 0::2] + samples[1::2, 0::2] + samples[0::2, 1::2] + samples[1::2, 1::2]
    got = shrink(rgb, 320)
    assert got.shape == (fh, fw, 3) and max(got.shape[:2]) == 320
    assert np.array_equal(got, ((box + 2) // 4).astype(np.uint8))


def test_shrink_below_4x_halves_then_takes_one_area_step():
    """Under 4x the target (every photo the gate's thresholds were fitted on): exact halvings, then INTER_AREA."""
    rgb = np.random.default_rng(0).integers(0, 256, (750, 1000, 3), dtype=np.uint8)
    half = cv2.resize(rgb, (500, 375), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(shrink(rgb, 320), cv2.resize(half, (320, 240), interpolation=cv2.INTER_AREA))
    assert np.array_equal(shrink(half, 320), cv2.resize(half, (320, 240), interpolation=cv2.INTER_AREA))


def test_sharpness_is_resolution_independent(skin):
    a = measure(skin).blur
    b = measure(cv2.resize(skin, (1600, 1200), interpolation=cv2.INTER_CUBIC)).blur
    c = measure(cv2.resize(skin, (1600, 1200), interpolation=cv2.INTER_CUBIC)).blur
    assert b == c
    # upscaling 4x with cubic adds a little softness but the measure stays on the same scale
    assert abs(a - b) < 1.5


def test_assess_rejects_bad_arrays():
    with pytest.raises(ValueError):
        assess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        assess(np.zeros((10, 10, 5), np.uint8))


def test_warn_only_and_warn_margin(skin, make_skin):
    cfg = GateConfig.default()
    # made at this size: the 400 px image halved puts two of its straight, high-contrast hairs 39 px apart, which
    # read as a coarse JPEG grid (jpeg_grid's limit, docs/gate.md) and would reject it as compressed as well
    small = make_skin(150, 200)
    cfg.warn_only = ["resolution"]
    v = assess(small, cfg)
    assert v.decision == "warn" and "too_small" in v.reasons
    cfg2 = GateConfig.default()
    cfg2.warn_margin["resolution"] = 1.0
    assert assess(skin, cfg2).decision == "warn"
