"""gate-eval's classifier link on the phone-capture suite (issue 21, point 5) and the README's
gate table, generated from the gate_eval.json kept in docs/results."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobile_derm_quality.errors import QualityCheckError
from mobile_derm_quality.gate import GateConfig
from mobile_derm_quality.gate_eval import (README_BEGIN, README_END, TARGET_CLASSIFIER_GAP, link_summary, main,
                                           paired_sign_test, phone_capture_eval, render_link_by_label, render_markdown,
                                           render_phone_capture, render_readme_table, replace_readme_block)
from mobile_derm_quality.phone_capture import CATEGORIES

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results" / "gate_eval.json"


def test_link_summary_pairs_each_sample_with_its_own_clean_original():
    # (right clean, right degraded, gate rejected, abstained)
    link = [(True, True, False, False), (False, False, False, True), (True, False, False, False),
            (True, False, True, False), (False, True, True, False)]
    s = link_summary(link)
    a, r = s["accepted"], s["rejected"]
    assert s["n"] == 5 and s["clean_accuracy"] == 0.6
    # accepted: clean 2/3 right, degraded 1/3: a drop of 1/3 on the same three photos, lost one, gained none
    assert a["n"] == 3 and a["clean_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert a["accuracy"] == pytest.approx(1 / 3, abs=1e-4) and a["gap"] == pytest.approx(1 / 3, abs=1e-3)
    assert (a["lost"], a["gained"]) == (1, 0) and a["abstained"] == pytest.approx(1 / 3, abs=1e-4)
    assert a["meets_target"] is False
    assert r["n"] == 2 and r["clean_accuracy"] == 0.5 and r["accuracy"] == 0.5 and r["gap"] == 0.0
    assert (r["lost"], r["gained"]) == (1, 1)
    same = link_summary([(True, True, False, False)] * 4 + [(True, False, True, False)])
    assert same["accepted"]["gap"] == 0.0 and same["accepted"]["meets_target"] is True
    assert TARGET_CLASSIFIER_GAP == 0.03  # the "within 3 points"


def test_paired_sign_test_is_mcnemars_exact_test():
    assert paired_sign_test(0, 0) is None
    assert paired_sign_test(3, 3) == 1.0
    assert paired_sign_test(8, 0) == pytest.approx(2 / 2 ** 8, abs=1e-4)  # all eight discordant pairs one way
    assert paired_sign_test(10, 2) == paired_sign_test(2, 10) == pytest.approx(0.0386, abs=1e-4)  # 2 * 79 / 4096


def test_link_by_label_keeps_acceptable_and_retake_samples_apart():
    def cell(n, gap, lost, gained):
        return {"classifier": {"accepted": {"n": n, "gap": gap, "lost": lost, "gained": gained}}}

    cats = {"distance": {"all": {"acceptable": cell(47, 0.1702, 10, 2), "retake": cell(4, 0.25, 1, 0)}},
            "defocus": {"all": {"acceptable": cell(48, -0.0416, 0, 2), "retake": cell(0, None, 0, 0)}},
            "glare": {"all": {"acceptable": {}, "retake": {}}}}  # no classifier link: no row
    rows = [line for line in render_link_by_label(cats) if line.startswith("| ") and not line.startswith("| category")]
    assert rows == ["| distance | 47 | 0.1702 | 10 / 2 | 0.0386 | 4 | 0.25 | 1 / 0 | 1.0 |",
                    "| defocus | 48 | -0.0416 | 0 / 2 | 0.5 | 0 | - | - | - |"]


def _classify(rgb):
    """Right ("mel") on sharp photos, wrong on blurred ones; never abstains."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return ("mel" if cv2.Laplacian(g, cv2.CV_32F).var() > 30 else "nv"), False


def _capture(root: Path, make_skin) -> dict:
    """The phone-capture section on one photo per source: PAD-UFES-20 labelled with a label the model
    knows, Derm7pt with one it does not."""
    for ds, label in (("pad_ufes20_subset", "mel"), ("derm7pt_dermoscopic", "scc")):
        (root / ds / "images").mkdir(parents=True)
        rows = ["image,label"]
        for i in range(6):
            cv2.imwrite(str(root / ds / "images" / f"{i}.jpg"), make_skin(320, 400, seed=i)[:, :, ::-1])
            rows.append(f"images/{i}.jpg,{label}")
        (root / ds / "labels.csv").write_text("\n".join(rows) + "\n")
    return phone_capture_eval(root, GateConfig.default(), 1, 0, False, [], classify=_classify, labels=["mel", "nv"])


def test_phone_capture_reports_the_classifier_per_category_where_labels_map(tmp_path, make_skin):
    capture = _capture(tmp_path, make_skin)
    c = capture["classifier"]
    assert c["sources"] == ["pad_ufes20_subset"] and c["clean_originals"]["pad_ufes20_subset"]["n"] == 1
    assert c["clean_originals"]["pad_ufes20_subset"]["accuracy"] == 1.0
    for split in ("fit", "held_out"):
        assert set(capture["by_split"][split]) == set(CATEGORIES)
        for category, per_source in capture["by_split"][split].items():
            assert "classifier" not in per_source["derm7pt_dermoscopic"]  # its labels are not the model's
            link = per_source["pad_ufes20_subset"]["classifier"]
            assert link == per_source["all"]["classifier"]  # pooled over the sources with labels
            assert link["n"] == 2 and link["accepted"]["n"] + link["rejected"]["n"] == 2  # retake + acceptable
            assert link["clean_accuracy"] == 1.0
            per_label = [per_source["pad_ufes20_subset"][label]["classifier"] for label in ("retake", "acceptable")]
            assert [x["n"] for x in per_label] == [1, 1]
            assert sum(x["accepted"]["n"] for x in per_label) == link["accepted"]["n"]
            # the gap is against the same photos clean (all right here), so it is the degraded error rate
            for part in ("accepted", "rejected"):
                if link[part]["n"]:
                    assert link[part]["gap"] == pytest.approx(1 - link[part]["accuracy"], abs=1e-4)
    # blurred retakes fool this classifier: where the gate lets one through, the gap shows it
    defocus = capture["by_split"]["held_out"]["defocus"]["all"]
    blurred_wrong = defocus["classifier"]["accepted"]["lost"] + defocus["classifier"]["rejected"]["lost"]
    assert blurred_wrong >= 1
    md = "\n".join(render_phone_capture(capture))
    assert "### The classifier on phone captures" in md and "| defocus | pad_ufes20_subset | " in md
    _check_readme_table(capture)


def _report(capture) -> dict:
    return {"clean": {"pad_ufes20_subset": {"pass_rate": 0.9704}, "sd198_subset": {"pass_rate": 0.961}},
            "ood_reject_rate": 0.66, "ood": {"n": 50}, "nonskin_free_reject_rate": 0.6695,
            "nonskin_free": {"n": 118}, "nonskin_report_reject_rate": 0.75, "nonskin_report": {"n": 100},
            "ms_per_image": 5.917, "phone_capture": capture}


def _check_readme_table(capture):
    """The README's table from a report with this phone-capture section."""
    text = render_readme_table(_report(capture))
    lines = text.splitlines()
    assert lines[0].startswith("Clean photos passed (report half; target 0.95): pad 0.9704, sd198 0.9610; not-skin photos "
                               "rejected: ood 0.66 (n=50), nonskin_free 0.67 (n=118), nonskin_report 0.75 (n=100); 5.9 ms")
    assert lines[1] == ""  # a Markdown table starts after a blank line
    head, sep, rejected, classifier = (line.strip("| ").split(" | ") for line in lines[2:])
    cats = capture["by_split"]["held_out"]
    assert head[1:] == [k + (" (flag)" if CATEGORIES[k].flagged_is_enough else "") for k in cats]
    r = cats["defocus"]["all"]["retake"]
    assert rejected[1 + list(cats).index("defocus")].startswith(f"{r['rejected']:.2f} ({r['flagged']:.2f}) [")
    link = cats["defocus"]["all"]["classifier"]
    assert classifier[1 + list(cats).index("defocus")] == (
        f"{100 * link['accepted']['gap']:.1f} ({link['accepted']['n']}) / " if link["accepted"]["n"] else "- (0) / "
    ) + (f"{100 * link['rejected']['gap']:.1f} ({link['rejected']['n']})" if link["rejected"]["n"] else "- (0)")
    with pytest.raises(QualityCheckError, match="phone-capture"):
        render_readme_table({**_report(capture), "phone_capture": None})


def test_replace_readme_block_keeps_the_rest():
    text = f"# Title\n\nintro\n{README_BEGIN}\nold\nlines\n{README_END}\n\n## Next\n"
    new = replace_readme_block(text, "a\nb\n")
    assert new == f"# Title\n\nintro\n{README_BEGIN}\na\nb\n{README_END}\n\n## Next\n"
    assert replace_readme_block(new, "a\nb\n") == new
    with pytest.raises(QualityCheckError, match="README.md: no"):
        replace_readme_block("# no block\n", "x\n", "README.md")


def test_readme_table_cli(tmp_path, capsys):
    from mobile_derm_quality.cli import EXIT_ERROR

    with pytest.raises(SystemExit) as exit_:
        main(["--readme-table", str(tmp_path / "none.json"), str(tmp_path / "README.md")])
    assert exit_.value.code == EXIT_ERROR
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: {tmp_path / 'none.json'}: cannot read the gate_eval report: No such file or directory")


def test_readme_gate_table_is_generated_from_docs_results():
    """The README's gate block is exactly the rendering of docs/results/gate_eval.json: regenerate it with
    ``python -m mobile_derm_quality.gate_eval --readme-table docs/results/gate_eval.json README.md``."""
    readme = (REPO / "README.md").read_text()
    rep = json.loads(RESULTS.read_text())
    assert replace_readme_block(readme, render_readme_table(rep)) == readme, (
        "README.md's gate table differs from docs/results/gate_eval.json; run python -m mobile_derm_quality.gate_eval "
        "--readme-table docs/results/gate_eval.json README.md")
    assert rep["phone_capture"]["classifier"]["sources"], "docs/results/gate_eval.json was made without --model"
    assert "## Phone-capture failures" in render_markdown(rep)
