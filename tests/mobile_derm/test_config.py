import json

import numpy as np
import pytest

from mobile_derm.training.config import DEFAULT_RECIPE, TrainConfig
from mobile_derm.errors import ConfigError
from mobile_derm.training.fit import class_weights


def test_config_round_trips_through_json(tmp_path):
    config = TrainConfig(input_size=160, finetune_epochs=3, class_weighting="balanced")
    config.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == config
    assert config.input_size == 160 and TrainConfig(input_size=None).input_size == config.spec.input_size == 224


@pytest.mark.parametrize("content, fragment", [
    ('{"backbone": "resnet50"}', "resnet50"),
    ('{"class_weighting": "loud"}', "class_weighting"),
    ('{"oversampling": "cube"}', "oversampling"),
    ('{"augment": "heavy"}', "augment"),
    ('{"split_fractions": [0.5, 0.5, 0.5]}', "split_fractions"),
    ('{"learning_rat": 1}', "learning_rat"),
    ('{"logit_adjustment": "often"}', "logit_adjustment"),
    ('{"logit_adjustment": "per_class"}', "logit_adjustment 'per_class' was retired"),
    ('{"class_weighting": "sqrt"}', "class_weighting 'sqrt' was retired"),
    ('{"weights": "runs/ham/weights.h5"}', "weights file was retired"),
    ('{"backbone": "efficientnet_lite1"}', "'efficientnet_lite1' \\(retired"),
    ('{"input_size": 16}', "input_size"),
    ('{"input_size": 160.5}', "input_size"),
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
    for mode, ratio in (("none", 1.0), ("balanced", 9.0)):
        w = class_weights(y, 2, mode)
        assert w[1] / w[0] == pytest.approx(ratio)
        assert np.mean(w[y]) == pytest.approx(1.0)  # the loss keeps its scale


# train_config.json of a HAM10000 recipe run as the code before the retirements saved it
OLDER_RUN_CONFIG = {
    "backbone": "efficientnet_lite0", "input_size": 160, "weights": "imagenet", "allow_random_weights": False,
    "batch_size": 32, "head_epochs": 40, "head_learning_rate": 0.001, "finetune_epochs": 14,
    "finetune_learning_rate": 0.001, "warmup_epochs": 0.5, "weight_decay": 1e-05, "train_batchnorm": True,
    "frozen_blocks": 0, "label_smoothing": 0.1, "class_weighting": "none", "oversampling": "none",
    "augment": "phone", "early_stopping_patience": 14, "logit_adjustment": 0.0, "loss_logit_adjustment": 0.0,
    "test_time_views": "none", "ensemble_members": 1, "dropout_rate": None, "seed": 0,
    "split_fractions": [0.7, 0.15, 0.15], "min_sensitivity": 0.9, "min_specificity": 0.9,
    "ood_keep_fraction": 0.95, "representative_size": 200,
}


def test_an_older_run_config_with_retired_options_at_their_neutral_values_loads(tmp_path):
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(OLDER_RUN_CONFIG))
    assert TrainConfig.load(path) == TrainConfig()
    earliest = {**OLDER_RUN_CONFIG, "augment": True, "input_size": None}  # the on/off form; native size
    assert TrainConfig.from_dict(earliest) == TrainConfig(input_size=224)
    with_low_light_off = {**OLDER_RUN_CONFIG, "low_light_probability": 0.0}  # stop 26's runs wrote it
    assert TrainConfig.from_dict(with_low_light_off) == TrainConfig()


@pytest.mark.parametrize("option, value", [
    ("frozen_blocks", 5), ("frozen_blocks", False), ("oversampling", "sqrt"), ("augment", "light"),
    ("augment", "none"), ("augment", False), ("dropout_rate", 0.5), ("low_light_probability", 0.25),
    ("low_light_probability", False),
])
def test_an_older_run_config_that_used_a_retired_option_is_refused_by_name(tmp_path, option, value):
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({**OLDER_RUN_CONFIG, option: value}))
    with pytest.raises(ConfigError, match=f"option {option} = {json.dumps(value)} was retired") as info:
        TrainConfig.load(path)
    assert info.value.path == str(path) and "\n" not in str(info.value)


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
    assert len(recipes) >= 3 and DEFAULT_RECIPE in recipes
    for path in recipes:
        TrainConfig.load(path)  # raises ConfigError naming the file on a stale option
        # every recipe lists all its values, so a changed default cannot change a recipe
        assert list(json.loads(path.read_text())) == list(TrainConfig().to_dict()), path.name


def test_the_defaults_are_the_default_recipe_field_by_field():
    recipe = TrainConfig.load(DEFAULT_RECIPE)
    for name, value in TrainConfig().to_dict().items():
        assert getattr(recipe, name) == value, name
    assert recipe == TrainConfig()
