"""The one-class skin-photo model behind the not-skin check."""
import json

import cv2
import numpy as np
import pytest

from mobile_derm_quality import GateConfig, assess, calibrate
from mobile_derm_quality.errors import GateConfigError
from mobile_derm_quality.not_skin import DESCRIPTOR_SIZE, MIN_PHOTOS_TO_FIT, SkinPhotoModel, describe, fit


def test_descriptor_has_its_declared_size_and_is_deterministic(make_skin):
    img = make_skin(240, 320, seed=1)
    d = describe(img)
    assert d.shape == (DESCRIPTOR_SIZE,) and d.dtype == np.float32 and np.all(np.isfinite(d))
    np.testing.assert_array_equal(d, describe(img.copy()))


def test_fit_scores_its_own_kind_low_and_other_pictures_high(make_skin):
    rng = np.random.default_rng(0)
    skins = np.stack([describe(make_skin(120, 160, seed=i)) for i in range(80)])
    model = fit(skins[:60], n_components=8)
    held_out = [model.distance(d) for d in skins[60:]]
    # Sky over green grass: nothing like a skin photo.
    scene = np.zeros((120, 160, 3), np.uint8)
    scene[:60] = (110, 160, 230)
    scene[60:] = (50, 140, 40)
    scene = np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255).astype(np.uint8)
    assert np.median(held_out) < 3.0
    assert model.distance(describe(scene)) > 10 * max(held_out)


def test_model_round_trips_and_rejects_bad_parameters(make_skin):
    skins = np.stack([describe(make_skin(96, 128, seed=i)) for i in range(MIN_PHOTOS_TO_FIT)])
    model = fit(skins, n_components=6, source="test")
    again = SkinPhotoModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.distance(skins[0]) == pytest.approx(model.distance(skins[0]), rel=1e-4)
    bad = model.to_dict()
    bad["scale"][3] = 0.0
    with pytest.raises(GateConfigError):
        SkinPhotoModel.from_dict(bad)
    with pytest.raises(GateConfigError):
        SkinPhotoModel.from_dict({**model.to_dict(), "mean": [0.0] * 5})
    with pytest.raises(GateConfigError):
        fit(skins[: MIN_PHOTOS_TO_FIT - 1])


def test_default_config_ships_a_model_and_uses_it():
    cfg = GateConfig.default()
    assert cfg.skin_photo_model() is not None
    assert "typicality" in cfg.ramps["not_skin"]
    # A config saved without a model (older files) still loads; the check then relies on skin colour.
    d = cfg.to_dict()
    d["skin_model"] = None
    assert GateConfig.from_dict(d).skin_photo_model() is None


def test_calibrate_can_refit_the_skin_model(tmp_path, make_skin):
    for i in range(MIN_PHOTOS_TO_FIT):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), make_skin(120, 160, seed=100 + i)[:, :, ::-1])
    cfg = calibrate(tmp_path, target_pass_rate=0.9, fit_skin_model=True)
    assert cfg.skin_model["n_photos"] == MIN_PHOTOS_TO_FIT
    assert cfg.skin_model != GateConfig.default().skin_model
    assert cfg.calibration["skin_model_refitted"] is True
    # The refitted model accepts a new photo of the same kind as skin.
    v = assess(make_skin(120, 160, seed=999), cfg)
    assert v.check("not_skin").passed


def test_shipped_model_missing_means_none_and_broken_is_a_typed_error(tmp_path, monkeypatch):
    from mobile_derm_quality import config

    def use_shipped_file(path):
        monkeypatch.setattr(config, "SKIN_MODEL_FILE", path)
        config._read_shipped.cache_clear()
        config._shipped_typicality_ramp.cache_clear()

    try:
        use_shipped_file(tmp_path / "absent.json")
        cfg = GateConfig.default()
        assert cfg.skin_photo_model() is None and "typicality" not in cfg.ramps["not_skin"]
        broken = tmp_path / "skin_model.json"
        broken.write_text('{"mean": [')
        use_shipped_file(broken)
        with pytest.raises(GateConfigError, match="skin_model.json: .*not valid JSON"):
            GateConfig.default()
    finally:
        monkeypatch.undo()
        use_shipped_file(config.SKIN_MODEL_FILE)
    assert GateConfig.default().skin_photo_model() is not None


# ---------------------------------------------------------------- the contrast with non-skin photos

def _scenes(n: int, seed: int = 0) -> list[np.ndarray]:
    """Everyday-like pictures: sky over ground in random colours, with a few hard-edged blocks."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.zeros((96, 128, 3), np.uint8)
        h = int(rng.integers(30, 70))
        img[:h] = rng.integers(60, 255, 3)
        img[h:] = rng.integers(0, 200, 3)
        for _ in range(3):
            y, x = int(rng.integers(0, 80)), int(rng.integers(0, 110))
            img[y:y + 16, x:x + 18] = rng.integers(0, 255, 3)
        out.append(np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8))
    return out


def test_contrast_tells_skin_from_other_pictures_out_of_fold_and_round_trips(make_skin):
    from mobile_derm_quality.not_skin import NonSkinContrast, fit_contrast
    from mobile_derm_quality.photo_sets import contrast_from_descriptors

    skins = np.stack([describe(make_skin(96, 128, seed=i)) for i in range(60)])
    others = np.stack([describe(p) for p in _scenes(60)])
    contrast = contrast_from_descriptors(skins, others, [f"p{i // 2}" for i in range(60)], [f"r{i % 5}" for i in range(60)],
                                         ["a" if i % 2 else "b" for i in range(60)])
    # the cut lies among the skin photos' cross-fitted scores (it fails about 0.5% of the worst source) ...
    assert contrast.warn_at < contrast.fail_at
    assert contrast.cross_fitted["nonskin_failed"] >= 0.9 and max(contrast.cross_fitted["clean_failed"].values()) <= 0.05
    # ... and the shipped weights, fitted on everything, score new pictures of each kind on their side of it
    new_skin = [contrast.logit(describe(make_skin(96, 128, seed=100 + i))) for i in range(10)]
    new_scene = [contrast.logit(describe(p)) for p in _scenes(10, seed=7)]
    assert np.median(new_skin) < contrast.warn_at and min(new_scene) > contrast.fail_at
    again = NonSkinContrast.from_dict(json.loads(json.dumps(contrast.to_dict())))
    assert again.logit(others[0]) == pytest.approx(contrast.logit(others[0]), rel=1e-4, abs=1e-4)
    with pytest.raises(GateConfigError, match="finite warn_at < fail_at"):
        NonSkinContrast.from_dict({**contrast.to_dict(), "warn_at": contrast.fail_at + 1})
    with pytest.raises(GateConfigError, match="123 finite weights"):
        NonSkinContrast.from_dict({**contrast.to_dict(), "weights": [0.0] * 5})
    with pytest.raises(GateConfigError, match="at least"):
        fit_contrast(skins[:10], others, ["p"] * 10, ["r"] * 60)


def test_contrast_folds_keep_each_group_on_one_side_and_spread_a_few_groups_over_every_fold():
    from mobile_derm_quality.not_skin import CONTRAST_FOLDS, contrast_folds

    groups = [f"repo{i % 5}" for i in range(40)]
    folds = contrast_folds(groups)
    assert sorted(set(folds)) == list(range(CONTRAST_FOLDS))
    assert all(len({f for g2, f in zip(groups, folds) if g2 == g}) == 1 for g in set(groups))


def test_default_config_ships_the_contrast_and_the_gate_scores_it(make_skin):
    from mobile_derm_quality.features import analysis_copy

    cfg = GateConfig.default()
    contrast = cfg.nonskin_contrast_model()
    assert contrast is not None and "nonskin_logit" in cfg.ramps["not_skin"]
    img = make_skin(240, 320, seed=3)
    v = assess(img, cfg)
    expected = contrast.logit(describe(analysis_copy(img, cfg.analysis_size)))
    assert v.check("not_skin").raw["nonskin_logit"] == pytest.approx(expected, abs=1e-4)
    # the ramp fails from the shipped fail point and warns from the warn point
    from mobile_derm_quality.gate import ramp

    r = cfg.ramps["not_skin"]["nonskin_logit"]
    thr, margin = cfg.thresholds["not_skin"], cfg.warn_margin["not_skin"]
    assert ramp(contrast.fail_at, r["good"], r["bad"]) == pytest.approx(thr, abs=1e-3)
    assert ramp(contrast.warn_at, r["good"], r["bad"]) == pytest.approx(thr + margin, abs=1e-3)
    # a config saved before the contrast existed gets the shipped one; one that drops it still loads (the term scores 0)
    d = cfg.to_dict()
    d.pop("nonskin_contrast")
    assert GateConfig.from_dict(d).nonskin_contrast == cfg.nonskin_contrast
    d["nonskin_contrast"] = None
    assert GateConfig.from_dict(d).nonskin_contrast_model() is None
