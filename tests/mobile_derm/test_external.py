"""External validation: the taxonomy's label mapping, the external report, and the evaluate command."""
import csv
import json

import numpy as np
import pytest

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.cli import main
from mobile_derm.errors import DataError
from mobile_derm.evaluation.external import evaluate_external, label_mapping
from mobile_derm.taxonomy import Taxonomy

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
PAD = ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]


def _tiny_taxonomy(**extra):
    classes = {
        "mel": {"display_name": "Melanoma", "malignant": True, "treatments": ["surgery_biopsy"]},
        "nv": {"display_name": "Nevus", "malignant": False, "treatments": ["observation"]},
        "MM": {"display_name": "Melanoma (atlas)", "malignant": True, "treatments": ["surgery_biopsy"],
               "counts_as": ["mel"]},
        "odd": {"display_name": "Something else", "malignant": True, "treatments": []},
        **extra,
    }
    return Taxonomy.from_dict({"classes": classes})


def _info(labels=("mel", "nv")):
    taxonomy = _tiny_taxonomy()
    return ModelInfo(name="m", version="1", backbone="b", input_size=8, mean=(0, 0, 0), std=(1, 1, 1),
                     labels=list(labels), taxonomy={l: taxonomy[l].to_dict() for l in labels},
                     malignancy_thresholds={"sensitive": 0.3, "specific": 0.7}, ood_threshold=0.6)


def test_model_label_for_follows_counts_as_and_never_guesses():
    taxonomy = _tiny_taxonomy(both={"display_name": "x", "malignant": False, "treatments": [],
                                    "counts_as": ["mel", "nv"]})
    assert taxonomy.model_label_for("nv", ["mel", "nv"]) == "nv"
    assert taxonomy.model_label_for("MM", ["mel", "nv"]) == "mel"
    assert taxonomy.model_label_for("odd", ["mel", "nv"]) is None
    assert taxonomy.model_label_for("both", ["mel", "nv"]) is None  # two candidates: not scored
    assert taxonomy.model_label_for("both", ["nv"]) == "nv"
    with pytest.raises(DataError, match="counts_as names 'nowhere'"):
        _tiny_taxonomy(bad={"display_name": "x", "malignant": False, "treatments": [], "counts_as": ["nowhere"]})


def test_the_shipped_mapping_between_the_shared_sets():
    taxonomy = Taxonomy.load()
    info = _info()
    info.labels = HAM
    derm7pt = ["mel", "nv", "bkl", "bcc", "vasc", "df", "other"]  # Derm7pt's diagnosis_group codes
    assert {l: m for l, m in label_mapping(derm7pt, info, taxonomy).items()} == {**{l: l for l in derm7pt[:-1]}, "other": None}
    sd198_to_ham = label_mapping(["Malignant_Melanoma", "Lentigo_Maligna_Melanoma", "Basal_Cell_Carcinoma", "Psoriasis"],
                                 info, taxonomy)
    assert sd198_to_ham == {"Basal_Cell_Carcinoma": "bcc", "Lentigo_Maligna_Melanoma": "mel", "Malignant_Melanoma": "mel",
                            "Psoriasis": None}
    info.labels = PAD
    assert label_mapping(["Actinic_Keratosis", "Nevus_Spilus", "mel", "Eczema"], info, taxonomy) == {
        "Actinic_Keratosis": "ACK", "Eczema": None, "Nevus_Spilus": "NEV", "mel": "MEL"}


def test_external_report_scores_mapped_photos_and_malignancy_on_all():
    info = _info()
    taxonomy = _tiny_taxonomy()
    labels = ["mel", "MM", "nv", "nv", "odd", "odd"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.45, 0.55], [0.2, 0.8], [0.8, 0.2]])
    report = evaluate_external(probs, labels, info, taxonomy, "atlas", groups=["a", "b", "c", "d", "e", "f"])
    c = report["classification_on_mapped_photos"]
    assert report["n"] == 6 and report["n_mapped"] == 4 and c["n"] == 4
    assert c["top1"] == pytest.approx(3 / 4)  # MM (a melanoma) called nevus
    assert c["per_class_recall"] == {"mel": 0.5, "nv": 1.0}
    assert report["label_mapping"]["odd"] == {"model_class": None, "n": 2}
    m = report["malignancy_on_all_photos"]
    # malignant by their own labels: mel, MM and both "odd" photos; the model's malignancy = p(mel)
    assert m["n"] == 6 and m["n_malignant"] == 4
    assert m["specific"]["sensitivity"] == pytest.approx(2 / 4) and m["specific"]["specificity"] == 1.0
    assert report["abstain_rate"]["low_confidence"] == pytest.approx(1 / 6)  # only 0.45/0.55 is below 0.6
    with pytest.raises(DataError, match="no label of atlas maps"):
        evaluate_external(probs[:1], ["odd"], info, taxonomy, "atlas")


@pytest.mark.slow
def test_evaluate_command_on_an_exported_file(tiny_demo, tmp_path, capsys):
    """A set whose labels are not the model's, mapped through a user's taxonomy: the command writes the report."""
    rows = list(csv.DictReader(open(tiny_demo / "data" / "labels.csv")))
    taxonomy = Taxonomy.load().to_dict()
    renamed = {"demo_nevus_like": "atlas_nevus", "demo_melanoma_like": "atlas_melanoma"}
    for old, new in renamed.items():
        entry = dict(taxonomy["classes"][old])
        entry["counts_as"] = [old]
        taxonomy["classes"][new] = entry
    (tmp_path / "taxonomy.json").write_text(json.dumps(taxonomy))
    with open(tmp_path / "atlas.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for row in rows:
            writer.writerow([str(tiny_demo / "data" / row["image"]), renamed.get(row["label"], row["label"])])
    out = tmp_path / "external"
    assert main(["evaluate", str(tiny_demo / "int8.tflite"), "--data", str(tmp_path / "atlas.csv"),
                 "--taxonomy", str(tmp_path / "taxonomy.json"), "--out", str(out)]) == 0
    report = json.loads((out / "external.json").read_text())
    assert report["n"] == len(rows) and report["n_mapped"] == len(rows)
    assert report["label_mapping"]["atlas_nevus"]["model_class"] == "demo_nevus_like"
    assert 0.0 <= report["malignancy_on_all_photos"]["auc"] <= 1.0
    assert "| atlas_melanoma |" in (out / "external.md").read_text() and "external" in capsys.readouterr().out
