"""The phone-capture failure generators do what their physics says, deterministically."""
import cv2
import numpy as np
import pytest

from mobile_derm_quality import phone_capture as pc


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("category", list(pc.CATEGORIES))
@pytest.mark.parametrize("split", pc.SPLITS)
@pytest.mark.parametrize("label", pc.LABELS)
def test_every_generator_is_deterministic_and_keeps_shape(category, split, label, make_skin):
    rgb = make_skin(120, 160)
    a, la, pa = pc.sample(rgb, category, split, _rng(7), label=label)
    b, lb, pb = pc.sample(rgb, category, split, _rng(7), label=label)
    assert a.shape == rgb.shape and a.dtype == np.uint8
    assert la == lb == label and pa == pb
    assert np.array_equal(a, b)
    c, _, pc_ = pc.sample(rgb, category, split, _rng(8), label=label)
    assert pc_ != pa or not np.array_equal(a, c)  # another seed, another draw


def test_sample_draws_both_labels_and_params_from_the_split(make_skin):
    rgb = make_skin(64, 64)
    labels = set()
    for seed in range(12):
        _, label, params = pc.sample(rgb, "defocus", "held_out", _rng(seed))
        labels.add(label)
        [(lo, hi)] = pc.ranges("defocus", "held_out", label)["radius"]
        assert lo <= params["radius"] <= hi
    assert labels == set(pc.LABELS)
    with pytest.raises(ValueError, match="unknown capture category"):
        pc.ranges("sunburn", "fit", "retake")
    with pytest.raises(ValueError):
        pc.ranges("defocus", "test", "retake")


def _numeric_overlap(a, b) -> bool:
    (lo1, hi1), (lo2, hi2) = a, b
    if all(isinstance(v, int) for v in (lo1, hi1, lo2, hi2)):
        return max(lo1, lo2) <= min(hi1, hi2)
    return max(lo1, lo2) < min(hi1, hi2)


@pytest.mark.parametrize("category", list(pc.CATEGORIES))
def test_held_out_ranges_do_not_overlap_the_fit_ones(category):
    c = pc.CATEGORIES[category]
    name = c.held_out_param
    fit = [iv for label in pc.LABELS for iv in c.fit[label][name]]
    held = [iv for label in pc.LABELS for iv in c.held_out[label][name]]
    if all(isinstance(v, str) for v in fit + held):
        assert not set(fit) & set(held)
    else:
        assert not any(_numeric_overlap(a, b) for a in fit for b in held), (fit, held)
    # both splits draw the same parameters: only their ranges differ
    for label in pc.LABELS:
        assert set(c.fit[label]) == set(c.held_out[label])


def test_disk_psf_sums_to_one_and_has_the_radius():
    for r in (2.0, 5.5, 9.0):
        k = pc.disk_kernel(r)
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        c = k.shape[0] // 2
        row = k[c]
        assert row[c] > 0 and np.allclose(k, k.T, atol=1e-7)
        # the disk's area in pixels (a fully covered pixel has the kernel's peak value) is pi r^2
        assert np.sqrt(k.sum() / k.max() / np.pi) == pytest.approx(r, abs=0.05)
        yy, xx = np.mgrid[: k.shape[0], : k.shape[1]] - c
        assert k[np.hypot(yy, xx) > r + 0.75].max() == 0  # nothing beyond the radius
        assert (k[np.hypot(yy, xx) < r - 0.75] == k.max()).all()  # uniform inside


def test_defocus_uses_the_radius_as_a_fraction_of_the_short_side(make_skin):
    rgb = make_skin(200, 300)
    out = pc.defocus(rgb, {"radius": 0.02}, _rng())
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
    assert lap(out) < 0.2 * lap(rgb)
    assert abs(float(out.mean()) - float(rgb.mean())) < 3  # a blur moves light, it does not add or remove it


def test_motion_kernel_is_a_path_of_the_given_length():
    k = pc.motion_kernel(20.0, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.nonzero(k > 1e-4)
    assert xs.max() - xs.min() == pytest.approx(20, abs=1.5) and ys.max() - ys.min() <= 1
    k = pc.motion_kernel(20.0, 90.0)
    ys, xs = np.nonzero(k > 1e-4)
    assert ys.max() - ys.min() == pytest.approx(20, abs=1.5) and xs.max() - xs.min() <= 1
    # a curved path has the same arc length: its points step evenly and sum to the length
    pts = pc.motion_path(30.0, 30.0, turn_deg=90.0)
    assert np.linalg.norm(np.diff(pts, axis=0), axis=1).sum() == pytest.approx(30.0, rel=1e-3)
    chord = np.linalg.norm(pts[-1] - pts[0])
    assert chord < 29.0  # it bends
    k = pc.motion_kernel(30.0, 30.0, 90.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5) and np.count_nonzero(k > 1e-4) >= 25


def test_white_balance_error_makes_grey_warm_or_cool():
    grey = np.full((32, 32, 3), 128, np.uint8)
    warm = pc.white_balance(grey, {"kelvin": 2800.0}, _rng())
    r, g, b = warm.reshape(-1, 3).mean(axis=0)
    assert r > g > b and r - b > 40
    cool = pc.white_balance(grey, {"kelvin": 7500.0}, _rng())
    r, g, b = cool.reshape(-1, 3).mean(axis=0)
    assert b > r
    same = pc.white_balance(grey, {"kelvin": pc.ASSUMED_KELVIN}, _rng())
    assert np.abs(same.astype(int) - 128).max() <= 1
    green = pc.white_balance(grey, {"kelvin": pc.ASSUMED_KELVIN, "tint": 0.1}, _rng())
    r, g, b = green.reshape(-1, 3).mean(axis=0)
    assert g > r + 5 and g > b + 5
    assert pc.mired_error(2800.0) > 100 and pc.mired_error(pc.ASSUMED_KELVIN) == 0


def test_over_exposure_clips_more_pixels(make_skin):
    rgb = make_skin()
    clipped = lambda im: int((im >= 255).any(axis=2).sum())
    out = pc.over_exposure(rgb, {"stops": 2.0}, _rng())
    assert clipped(out) > clipped(rgb) + rgb.shape[0] * rgb.shape[1] // 4
    assert (out.astype(int) >= rgb.astype(int)).all()


def test_low_light_leaves_blotchy_noise_and_loses_detail(make_skin):
    rgb = make_skin(160, 200)
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
    corr = lambda im: np.corrcoef(im[:, :, 1].ravel(), rgb[:, :, 1].ravel())[0, 1]
    mild = pc.low_light(rgb, {"stops": 1.0, "jpeg_quality": 92}, _rng())
    dark = pc.low_light(rgb, {"stops": 7.0, "jpeg_quality": 92}, _rng())
    assert lap(dark) < 0.2 * lap(mild)  # the denoiser took the skin's texture with the noise
    assert corr(dark) < corr(mild) - 0.1
    assert abs(float(dark.mean()) - float(rgb.mean())) < 25  # the gain restores the brightness
    # on a flat grey card what the denoiser leaves is low-frequency blotches, stronger the darker
    grey = np.full((160, 200, 3), 120, np.uint8)
    blotches = lambda im: cv2.GaussianBlur(im.astype(np.float32), (0, 0), 3).std()
    assert blotches(pc.low_light(grey, {"stops": 7.0, "jpeg_quality": 92}, _rng())) > 2 * blotches(
        pc.low_light(grey, {"stops": 1.0, "jpeg_quality": 92}, _rng()))


@pytest.mark.parametrize("count", [1, 3, 5])
def test_glare_adds_the_given_number_of_saturated_white_blobs(count):
    grey = np.full((300, 400, 3), 120, np.uint8)
    out = pc.flash_glare(grey, {"count": count, "radius": 0.04, "strength": 3.0}, _rng(count))
    white = (out >= 250).all(axis=2).astype(np.uint8)
    n, _ = cv2.connectedComponents(white)
    assert n - 1 == count
    none = pc.flash_glare(grey, {"count": 0, "radius": 0.04, "strength": 3.0}, _rng())
    assert np.array_equal(none, grey)


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_distance_shrinks_the_photo_to_the_fraction_of_the_frame(fraction):
    photo = np.zeros((240, 320, 3), np.uint8)
    photo[:] = (200, 150, 125)  # skin around the lesion: the wider scene's limb takes this colour
    photo[24:-24, 24:-24] = (0, 0, 255)  # a colour the generated scene does not use at full saturation
    out = pc.distance(photo, {"fraction": fraction, "jitter": 0.1}, _rng(3))
    is_blue = (out[:, :, 2] > 200) & (out[:, :, 0] < 40) & (out[:, :, 1] < 40)
    ys, xs = np.nonzero(is_blue)
    assert (xs.max() - xs.min() + 1) / (320 - 48) == pytest.approx(fraction, abs=0.03)
    assert (ys.max() - ys.min() + 1) / (240 - 48) == pytest.approx(fraction, abs=0.03)


def test_off_centre_moves_the_photo_the_other_way():
    img = np.zeros((200, 200, 3), np.uint8)
    img[:] = (0, 0, 255)
    img[90:110, 90:110] = (255, 0, 0)  # the "lesion" at the centre
    out = pc.off_centre(img, {"shift": 0.3, "direction": 0.0}, _rng())  # the frame moves right
    ys, xs = np.nonzero((out[:, :, 0] > 200) & (out[:, :, 1] < 40) & (out[:, :, 2] < 40))
    assert xs.mean() == pytest.approx(100 - 60, abs=2) and ys.mean() == pytest.approx(100, abs=2)


@pytest.mark.parametrize("kind", ["finger", "thumb", "cloth", "hair"])
def test_occlusion_covers_the_centre_only_when_it_reaches_it(kind):
    img = np.zeros((200, 240, 3), np.uint8)
    img[:] = (0, 0, 255)
    changed = lambda im: np.abs(im.astype(int) - img).sum(axis=2) > 30
    centre = (slice(85, 115), slice(105, 135))
    size = 0.3 if kind == "hair" else 0.15
    far = changed(pc.occlusion(img, {"kind": kind, "size": size, "reach": 1.0}, _rng(2)))
    near = changed(pc.occlusion(img, {"kind": kind, "size": size, "reach": 0.1}, _rng(2)))
    assert far.any() and near.any()
    assert far[centre].mean() > near[centre].mean()
    assert near[centre].mean() < 0.05
    with pytest.raises(ValueError):
        pc.occlusion(img, {"kind": "glove", "size": 0.1, "reach": 0.5}, _rng())


def test_jpeg_resample_removes_detail(make_skin):
    rgb = make_skin(200, 260)
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
    heavy = pc.jpeg_resample(rgb, {"scale": 0.25, "quality": 10}, _rng())
    light = pc.jpeg_resample(rgb, {"scale": 1.0, "quality": 95}, _rng())
    assert lap(heavy) < 0.3 * lap(rgb) and lap(light) > 0.7 * lap(rgb)


def test_srgb_round_trip():
    v = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(pc.to_srgb(pc.to_linear(v)), v)


def _block_step_ratio(rgb):
    """Mean grey step across the 8x8 JPEG block borders over the mean step elsewhere (1: no block grid)."""
    d = np.abs(np.diff(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), axis=1))
    border = (np.arange(d.shape[1]) % 8) == 7
    return float(d[:, border].mean() / d[:, ~border].mean())


def _generated(rgb, category, seed):
    """What the category's generator alone makes from the draws ``sample`` makes with the same seed (fit, retake)."""
    rng = _rng(seed)
    drawn = {k: pc.draw(v, rng) for k, v in pc.ranges(category, "fit", "retake").items()}
    return pc.CATEGORIES[category].generate(rgb, drawn, rng)


@pytest.mark.parametrize("category", [c for c in pc.CATEGORIES if not pc.CATEGORIES[c].saves_jpeg])
def test_every_capture_is_saved_as_a_jpeg(category, make_skin):
    rgb = make_skin(240, 320)
    img, _, params = pc.sample(rgb, category, "fit", _rng(3), label="retake")
    bare = _generated(rgb, category, 3)
    assert pc.SAVE_QUALITY[0] <= params["save_quality"] <= pc.SAVE_QUALITY[1]
    assert np.array_equal(img, pc.jpeg(bare, params["save_quality"]))


def test_a_blurred_capture_carries_the_jpeg_block_grid_its_optics_smoothed_away(make_skin):
    src = pc.jpeg(make_skin(240, 320), 90)
    assert _block_step_ratio(src) > 1.02  # the photo the failure is made from: a JPEG
    img, _, params = pc.sample(src, "defocus", "fit", _rng(3), label="retake")
    bare = pc.defocus(src, {"radius": params["radius"]}, _rng())
    assert _block_step_ratio(bare) < 1.01  # the blur took its blocks away
    assert _block_step_ratio(img) > 1.2  # the capture is a JPEG again


def test_low_light_ends_with_its_own_jpeg(make_skin):
    rgb = make_skin(120, 160)
    img, _, params = pc.sample(rgb, "low_light", "fit", _rng(4), label="retake")
    assert "save_quality" not in params
    assert np.array_equal(img, _generated(rgb, "low_light", 4))
