"""ood-eval on a tiny trained run: rates come from the run's own thresholds."""
import json

import numpy as np
import pytest

from mobile_derm import familiarity
from mobile_derm.errors import ConfigError
from mobile_derm.ood_eval import abstention_rates


def test_abstention_rates_count_each_rule_and_their_union():
    top = np.array([0.9, 0.3, 0.8, 0.2])
    dist = np.array([1.0, 1.0, 50.0, 50.0])
    r = abstention_rates(top, dist, ood_threshold=0.5, familiarity_threshold=10.0)
    assert r == {"n": 4, "softmax": 0.5, "familiarity": 0.5, "either": 0.75}


def test_ood_eval_on_a_tiny_run(tmp_path):
    from mobile_derm.config import TrainConfig
    from mobile_derm.ood_eval import run_ood_eval
    from mobile_derm.synthetic import generate_demo_dataset
    from mobile_derm.train import train

    data = generate_demo_dataset(tmp_path / "data", lesions_per_class=4, views_per_lesion=2, size=48)
    config = TrainConfig(input_size=32, head_epochs=3, finetune_epochs=0, batch_size=8, allow_random_weights=True)
    train(data, config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    # "other" photos: the same demo images with their colours inverted
    from mobile_derm.datasets import read_folder
    import cv2

    for sample in data.samples[:6]:
        out = tmp_path / "inverted" / sample.label / f"inv_{sample.path.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), 255 - cv2.imread(str(sample.path)))
    inverted = read_folder(tmp_path / "inverted")
    doc = run_ood_eval(tmp_path / "run", data, {"inverted": inverted}, tmp_path / "out", progress=False)
    assert set(doc["sets"]) == {f"{data.name} test split", "inverted"}
    assert doc["sets"]["inverted"]["n"] == 6
    saved = json.loads((tmp_path / "out" / "ood_eval.json").read_text())
    assert saved["familiarity_threshold"] == pytest.approx(
        familiarity.FamiliarityModel.load(tmp_path / "run" / familiarity.FILENAME).threshold)
    assert (tmp_path / "out" / "ood_eval.png").stat().st_size > 1000
    (tmp_path / "run" / familiarity.FILENAME).unlink()
    with pytest.raises(ConfigError, match="familiarity.npz"):
        run_ood_eval(tmp_path / "run", data, {}, tmp_path / "out2", progress=False)
