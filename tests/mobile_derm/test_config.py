import json

import numpy as np
import pytest

from mobile_derm.training.config import TrainConfig
from mobile_derm.errors import ConfigError
from mobile_derm.training.fit import class_weights, effective_class_weights


def test_config_round_trips_through_json(tmp_path):
    config = TrainConfig(input_size=160, finetune_epochs=3, class_weighting="balanced")
    config.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == config
    assert config.image_size == 160 and TrainConfig().image_size == config.spec.input_size == 224


@pytest.mark.parametrize("content, fragment", [
    ('{"backbone": "resnet50"}', "resnet50"),
    ('{"class_weighting": "loud"}', "class_weighting"),
    ('{"oversampling": "cube"}', "oversampling"),
    ('{"augment": "heavy"}', "augment"),
    ('{"split_fractions": [0.5, 0.5, 0.5]}', "split_fractions"),
    ('{"learning_rat": 1}', "learning_rat"),
    ('{"logit_adjustment": "often"}', "per_class"),
    ('{"frozen_blocks": -1}', "frozen_blocks"),
    ('{"frozen_blocks": 2.5}', "frozen_blocks"),
    ('{"ensemble_members": 0}', "ensemble_members"),
    ('{"ensemble_members": 9}', "ensemble_members"),
    ('{"ensemble_members": true}', "ensemble_members"),
    ('{"loss_logit_adjustment": -1}', "loss_logit_adjustment"),
    ('{"loss_logit_adjustment": "yes"}', "loss_logit_adjustment"),
    ("[1, 2]", "JSON object"),
    ("{oops", "not valid JSON"),
])
def test_bad_config_files_name_the_problem(tmp_path, content, fragment):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig.load(path)


def test_class_weights_balance_the_loss():
    y = np.array([0] * 90 + [1] * 10)
    for mode, ratio in (("none", 1.0), ("sqrt", 3.0), ("balanced", 9.0)):
        w = class_weights(y, 2, mode)
        assert w[1] / w[0] == pytest.approx(ratio)
        assert np.mean(w[y]) == pytest.approx(1.0)  # the loss keeps its scale


def test_older_on_off_augment_setting_still_loads():
    assert TrainConfig(augment=True).augment == "phone"
    assert TrainConfig(augment=False).augment == "none"


def test_sqrt_weights_with_sqrt_oversampling_make_a_balanced_objective():
    y = np.array([0] * 90 + [1] * 10)
    w = effective_class_weights(y, 2, TrainConfig(class_weighting="sqrt", oversampling="sqrt"))
    assert w[1] / w[0] == pytest.approx(9.0)  # sqrt(9) from the loss x sqrt(9) from sampling
    assert np.mean(w[y]) == pytest.approx(1.0)
    plain = effective_class_weights(y, 2, TrainConfig(class_weighting="sqrt"))
    np.testing.assert_allclose(plain, class_weights(y, 2, "sqrt"))


def test_sample_weights_reach_the_loss():
    """Class weighting only works if the loss is per image: a pre-reduced
    scalar would make every weighting a no-op."""
    from mobile_derm.tf_setup import keras
    from mobile_derm.training.fit import _smoothed_loss

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss=_smoothed_loss(0.1, 2))
    x = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    y = np.array([0, 0])
    per_image = _smoothed_loss(0.1, 2)(y, model(x)).numpy()
    assert per_image.shape == (2,) and per_image[0] != pytest.approx(per_image[1])
    weighted = model.evaluate(x, y, sample_weight=np.array([3.0, 1.0]), verbose=0)
    assert weighted == pytest.approx((3 * per_image[0] + per_image[1]) / 2, rel=1e-4)


def test_every_shipped_recipe_loads():
    from pathlib import Path

    import mobile_derm

    recipes = sorted((Path(mobile_derm.__file__).parent / "data").glob("train_*.json"))
    assert len(recipes) >= 3
    for path in recipes:
        TrainConfig.load(path)  # raises ConfigError naming the file on a stale option
