"""The pages of docs/, followed literally: every code block of a page runs as written, in order.

Each page runs in its own namespace and its own fresh folder that holds what a clone holds (``data/``, ``.venv``),
with the README's rule: a block preceded by ``<!-- readme-test: skip (why) -->`` is not run; every other ``python``
block runs, and every ``bash`` block runs in bash. Pages whose examples load the embedded SmolLM2 or MiniLM
are ``slow``; the others use random models and organisms only and stay in the fast tier. ``upstream-kv-cache.md``
is a bug report whose code needs another transformers, so it is not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_readme import FENCE, Block

DOCS = REPO / "docs"
# Pages whose examples load a real model (SmolLM2, MiniLM): slow. The others use random models and organisms
# only and stay in the fast tier (each under 2 s on the idle 2-core machine, after imports).
SLOW_PAGES = {"analyze.md", "taxonomy.md", "resampling.md", "branches.md"}
# Pages whose code is not meant to run here, and why.
NOT_RUN = {"upstream-kv-cache.md": "a reproduction for TransformerLens under transformers 5.24 and a Hub model"}
# The method families, each with its page (issue 22), and the methods page the docstrings cite.
FAMILY_PAGES = {"methods.md", "resampling.md", "receivers.md", "suppression.md", "mediation.md", "flow.md",
                "attribution.md", "taxonomy.md", "analyze.md"}


def page_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [Block(m["lang"], m["body"], text.count("\n", 0, m.start("body")) + 1, m["reason"])
            for m in FENCE.finditer(text)]


def pages_with_code() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if page_blocks(p))


def test_every_family_has_a_page_with_examples_that_run():
    present = {p.name for p in DOCS.glob("*.md")}
    assert FAMILY_PAGES <= present, f"missing pages: {sorted(FAMILY_PAGES - present)}"
    for name in FAMILY_PAGES - {"methods.md"}:
        blocks = page_blocks(DOCS / name)
        assert {b.lang for b in blocks} <= {"python", "bash"}, f"{name}: give every block a language this test knows"
        assert any(b.lang == "python" and not b.skip for b in blocks), f"{name} shows no example that runs"
    skipped = [(p.name, b.line) for p in pages_with_code() if p.name not in NOT_RUN for b in page_blocks(p) if b.skip]
    assert len(skipped) <= 5, f"most of docs/ should be checked, not skipped: {skipped}"


def test_the_index_links_every_page():
    index = (DOCS / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"


LINK = re.compile(r"\]\((?!https?://)(?P<path>[^)#\s]*)(?:#(?P<anchor>[^)\s]+))?\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [REPO / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_lead_somewhere(page):
    for m in LINK.finditer(page.read_text()):
        target = (page.parent / m["path"]).resolve() if m["path"] else page
        assert target.exists(), f"{page.name} links {m['path']}, which does not exist"
        if m["anchor"]:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            assert m["anchor"] in {github_anchor(h) for h in headings}, f"{page.name}: no heading #{m['anchor']}"


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh folder that looks like the repository root to a page's commands."""
    (tmp_path / "data").symlink_to(REPO / "data")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def _pages():
    return [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW_PAGES else [])
            for p in pages_with_code() if p.name not in NOT_RUN]


@pytest.mark.parametrize("page", _pages())
def test_page_runs(page, clone, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(clone)
    namespace: dict = {"__name__": "__docs__"}
    env = os.environ | {"PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    ran = 0
    for block in page_blocks(page):
        if block.skip:
            continue
        where = f"docs/{page.name}, the block at line {block.line}"
        if block.lang == "python":
            exec(compile(block.body, where, "exec"), namespace)
            plt.close("all")
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=clone, env=env,
                                  capture_output=True, text=True, timeout=1800)
            assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"
        ran += 1
    assert ran >= 1
