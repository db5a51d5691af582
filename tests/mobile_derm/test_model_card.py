"""The model card: written with every export, packed into each .tflite, read back without TensorFlow."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.evaluation import model_card

SECTIONS = ("## Intended use", "## Data and licences", "## Split protocol", "## Results on the test split",
            "### Operating points", "### Abstention on the test split", "## Results on other data sets",
            "## Subgroups (test split)", "## Quality gate", "## Quantization", "## Known limits and failure modes")


class _Listing:
    """The part of a Dataset the subgroup table reads: its root and each sample's relative path."""

    def __init__(self, root: Path, images: list[str]):
        self.root, self.images = root, images

    def relative_path(self, index: int) -> str:
        return self.images[index]


def test_subgroups_report_n_interval_and_leave_small_ones_unscored(tmp_path):
    # 30 photos of women (the model is right on all), 10 of men (wrong on all), age recorded for some
    images = [f"images/{i}.jpg" for i in range(40)]
    rows = ["image,label,sex,age"] + [f"{im},a,{'FEMALE' if i < 30 else 'male'},{'' if i % 2 else 30 + i}"
                                      for i, im in enumerate(images)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    y = np.array([i % 2 for i in range(40)])
    right = np.arange(40) < 30
    probs = np.eye(2)[np.where(right, y, 1 - y)]
    info = ModelInfo(name="m", version="1", backbone="b", input_size=8, mean=(0, 0, 0), std=(1, 1, 1), labels=["a", "b"])
    tables = model_card.subgroup_table(_Listing(tmp_path, images), np.arange(40), probs, y, np.arange(40), info)
    assert set(tables) == {"sex", "age band"}
    women, men = tables["sex"]
    assert women["subgroup"] == "female" and women["n"] == 30 and women["top1"] == 1.0
    assert women["ci95"] == [1.0, 1.0]
    assert men == {"subgroup": "male", "n": 10}  # under MIN_SUBGROUP_N: n only
    assert [e["subgroup"] for e in tables["age band"]] == ["under 40", "40-59", "60-79", "not recorded"]
    assert tables["age band"][-1]["n"] == 20
    # classes are named by the model's decision rule: a step that always names class 1
    info.decision = {"offsets": [0.0, 100.0]}
    women = model_card.subgroup_table(_Listing(tmp_path, images), np.arange(40), probs, y, np.arange(40), info)["sex"][0]
    assert women["top1"] == pytest.approx(np.mean(y[:30] == 1))


def test_licence_comes_from_the_data_sets_source_file(tmp_path):
    assert "see your data's licence" in model_card.data_licence(tmp_path)
    (tmp_path / "SOURCE.md").write_text("# X\n\n**Licence.** CC BY 4.0. Attribution\nrequired.\n\n**Other.** no\n")
    assert model_card.data_licence(tmp_path) == "CC BY 4.0. Attribution required."


def test_external_reports_in_the_run_folder_are_shown_in_the_card(tmp_path):
    """`mobile-derm evaluate RUN --data SET` writes RUN/external_SET/external.json; the card of a
    later export shows each such report's figures."""
    from types import SimpleNamespace

    report = {"data": "derm7pt", "n": 987, "n_mapped": 900,
              "classification_on_mapped_photos": {"balanced_accuracy": 0.5641},
              "malignancy_on_all_photos": {"auc": 0.8193, "sensitive": {"sensitivity": 0.71, "specificity": 0.77}},
              "abstain_rate": {"low_confidence": 0.12}}
    (tmp_path / "external_derm7pt").mkdir()
    (tmp_path / "external_derm7pt" / "external.json").write_text(json.dumps(report))
    context = model_card.ModelCardContext(tmp_path, dataset=None, split=None, test_pixels=np.zeros((0,)),
                                          y_test=np.zeros((0,)))
    assert list(context.external_reports()) == ["derm7pt"]
    context.dataset = SimpleNamespace(name="d", samples=[], n_groups=lambda: 0, classes=["a", "b"], root=tmp_path)
    context.split = SimpleNamespace(sizes=lambda: {"train": 0, "val": 0, "test": 0}, fractions=(0.7, 0.15, 0.15),
                                    seed=0, test=[])
    context.gate_pass_rates = lambda gate: None
    info = ModelInfo(name="m", version="1", backbone="b", input_size=8, mean=(0, 0, 0), std=(1, 1, 1), labels=["a", "b"])
    card = model_card.render(info, context, None, None)
    row = next(line for line in card.splitlines() if line.startswith("| derm7pt |"))
    assert "987 (900)" in row and "0.564" in row and "0.819" in row and "0.710 / 0.770" in row and "0.120" in row
    assert "External data sets: **not measured**" not in card


def test_known_limits_are_one_list_in_one_data_file():
    limits = model_card.known_limits()
    assert len(limits) >= 5 and any("Not a medical device" in limit for limit in limits)


def test_every_exported_file_carries_the_card_and_it_agrees_with_the_runs_report(tiny_demo, block_tensorflow_prelude):
    """The demo's export writes model_card.md beside its files and packs the same text into
    each; read back with mobile_derm.app.model_file alone (TensorFlow blocked), it has every
    section and the run's test-split balanced accuracy."""
    beside = (tiny_demo / "model_card.md").read_text(encoding="utf-8")
    report = json.loads((tiny_demo / "run" / "eval" / "report.json").read_text())
    for variant in ("float32", "float16", "int8"):
        script = block_tensorflow_prelude + (
            "import sys\nfrom mobile_derm.app.model_file import read_model_card\n"
            f"sys.stdout.write(read_model_card({str(tiny_demo / f'{variant}.tflite')!r}))\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8")
        assert done.returncode == 0, done.stderr
        assert done.stdout == beside, variant
    for section in SECTIONS:
        assert section in beside, section
    assert f"balanced accuracy {report['balanced_accuracy']:.3f}" in beside
    assert f"n = {report['n']} images" in beside
    assert "not a medical device" in beside.lower()
    assert "External data sets: **not measured**" in beside
    # the packed gate judged the test split's own files, and each file's abstention on non-skin images is listed
    assert "On the original files of the test split (" in beside
    assert "Abstention (either rule) of each file on image sets" in beside
    if report.get("malignancy_sensitive"):
        assert "Each file carries thresholds chosen again on its own validation outputs" in beside
    for variant in ("float32", "float16", "int8"):
        assert f"| {variant} |" in beside.split("## Quantization")[1]


def test_pad_ufes20_subgroups_are_its_age_sex_site_and_skin_type_columns(real_data_root):
    from mobile_derm.datasets.sources import load

    dataset = load("pad_ufes20", real_data_root)
    test = np.arange(0, len(dataset.samples), 3)
    y = np.array([dataset.classes.index(dataset.samples[i].label) for i in test])
    probs = np.eye(len(dataset.classes))[y]  # always right: every scored subgroup reads 1.0
    tables = model_card.subgroup_table(dataset, test, probs, y, np.asarray(dataset.groups())[test])
    assert set(tables) == {"age band", "sex", "body site", "Fitzpatrick type"}
    for title, table in tables.items():
        assert sum(e["n"] for e in table) == len(test), title
        for entry in table:
            assert ("balanced_accuracy" in entry) == (entry["n"] >= model_card.MIN_SUBGROUP_N)
            if "balanced_accuracy" in entry:
                assert entry["balanced_accuracy"] == 1.0
