"""The README is a user guide that stays true: short, its links resolve, and its
Python quickstart runs as written.

The quickstart blocks are the ```python blocks right after a line
``<!-- quickstart -->``. They are executed verbatim in a temporary folder laid out
as ``make demo`` leaves the repository: ``runs/demo/data`` (the generated demo
photos), ``runs/demo/run/train_config.json`` (the demo's settings, here at the
test suite's tiny size, as ``mobile-derm demo --tiny`` uses) and a ``photo.jpg``
(one demo photo standing in for the reader's own).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 250
QUICKSTART_MARK = "<!-- quickstart -->"
# The photo the README's quickstart classifies; it exists once `make demo` has run.
DEMO_PHOTO = "runs/demo/data/images/demo_nevus_like/demo_nevus_like_000_v0.jpg"


def quickstart_blocks(markdown: str) -> list[str]:
    """The code of every ```python block that follows a QUICKSTART_MARK line."""
    return re.findall(re.escape(QUICKSTART_MARK) + r"\s*\n```python\n(.*?)\n```", markdown, flags=re.S)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors, seen = set(), {}
    for title in re.findall(r"^#{1,6} +(.+?) *$", strip_code(markdown), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def strip_code(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def broken_links(path: Path) -> list[str]:
    """Relative links in a Markdown file whose file or heading does not exist."""
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", strip_code(path.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{shown}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            broken.append(f"{shown}: {target} (no such heading)")
    return broken


def test_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (f"README.md has {lines} lines; it is the user guide (at most "
                                       f"{MAX_README_LINES}): move history and measurements to docs/")


def test_readme_has_a_python_quickstart_that_compiles():
    blocks = quickstart_blocks(README.read_text())
    assert blocks, f"README.md has no ```python block after a line {QUICKSTART_MARK}"
    assert "from mobile_derm import" in blocks[0]
    for code in blocks:
        compile(code, "README.md quickstart", "exec")


def test_links_in_readme_and_docs_resolve():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert DOCS / "README.md" in pages, "docs/README.md (the index) is missing"
    broken = [link for page in pages for link in broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_link_checker_sees_a_missing_file_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with punctuation\n")
    page.write_text("# Page\n[ok](other.md#a-code-heading-with-punctuation) [self](#page) "
                    "[gone](missing.md) [bad](other.md#nowhere) [web](https://example.org/x.md)\n"
                    "```sh\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: other.md#nowhere (no such heading)"]


@pytest.mark.slow
def test_readme_python_quickstart_runs_as_written(tmp_path, monkeypatch):
    from mobile_derm.datasets.synthetic import generate_demo_dataset
    from mobile_derm.training.config import TrainConfig

    blocks = quickstart_blocks(README.read_text())
    assert any(DEMO_PHOTO in code for code in blocks), f"the quickstart no longer classifies {DEMO_PHOTO}"
    # What `make demo` leaves behind, at the tiny size the other slow tests use; photos at
    # the demo's 320 px so the quality gate judges them as it does in the demo.
    generate_demo_dataset(tmp_path / "runs/demo/data", lesions_per_class=4, views_per_lesion=3, size=320, seed=0)
    (tmp_path / "runs/demo/run").mkdir(parents=True)
    TrainConfig(input_size=64, head_epochs=5, finetune_epochs=1, batch_size=16, representative_size=32,
                ensemble_members=1, test_time_views="none").save(tmp_path / "runs/demo/run/train_config.json")
    shutil.copy(tmp_path / DEMO_PHOTO, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md quickstart", "exec"), namespace)

    assert set(namespace["paths"]) == {"float32", "float16", "int8"}
    assert all(Path(p).is_file() for p in namespace["paths"].values())
    assert namespace["rows"]
    result = namespace["result"]
    assert result.classified, f"the quality gate rejected the demo photo: {result.quality}"
    assert result.top_k and isinstance(result.abstained, bool)
    assert result.to_dict()["abstained"] == result.abstained
    assert namespace["verdict"].decision in ("accept", "warn", "reject")
