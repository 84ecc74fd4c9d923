"""The README, followed literally: every code block runs as written, in order, on the embedded model.

A block the test cannot run here (it downloads a model, needs a GPU or a vLLM server) is preceded by
``<!-- readme-test: skip (why) -->``; every other ``python`` block runs in one namespace and every other
``bash`` block in bash, both in a fresh folder that holds what a clone holds (``data/``, ``.venv``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

FENCE = re.compile(
    r"(?:<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.S | re.M
)


@dataclass
class Block:
    lang: str
    body: str
    line: int
    skip: str | None


def readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text()
    return [
        Block(m["lang"], m["body"], text.count("\n", 0, m.start("body")) + 1, m["reason"])
        for m in FENCE.finditer(text)
    ]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder that looks like the repository root to the README's commands."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "data").symlink_to(REPO / "data")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def test_the_readme_runs_nearly_all_its_code():
    blocks = readme_blocks()
    assert {b.lang for b in blocks} <= {"python", "bash"}, "give every block a language this test knows"
    run = [b for b in blocks if not b.skip]
    assert sum(b.lang == "python" for b in run) >= 8 and sum(b.lang == "bash" for b in run) >= 1
    assert len(blocks) - len(run) <= 5, "most of the README should be checked, not skipped"


def test_python_blocks_run_top_to_bottom(clone, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(clone)
    namespace: dict = {"__name__": "__readme__"}
    for block in readme_blocks():
        if block.lang == "python" and not block.skip:
            exec(compile(block.body, f"README.md, the block at line {block.line}", "exec"), namespace)
            plt.close("all")

    # What the reader was promised, checked on what the blocks computed.
    trace, importance = namespace["trace"], namespace["importance"]
    assert trace.n_sentences >= 3 and "42" in trace.cot
    assert len(importance.to_dataframe()) == trace.n_sentences
    assert namespace["suppression"].kl.shape == (trace.n_sentences, trace.n_sentences)
    assert len(namespace["heads"]) == 20
    assert (clone / "out" / "report.html").exists() and (clone / "my-out" / "report.html").exists()
    assert (clone / "rollouts.sqlite").exists() and (clone / "served.sqlite").exists()
    assert (clone / "chunks_labeled.json").exists()


def test_bash_blocks_run(clone):
    env = os.environ | {"PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for block in readme_blocks():
        if block.lang == "bash" and not block.skip:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=clone, env=env,
                                  capture_output=True, text=True, timeout=1800)
            assert done.returncode == 0, f"README.md, the block at line {block.line}:\n{done.stderr[-3000:]}"
    assert (clone / "my-report" / "report.html").exists()
    assert (clone / "my-cot-report" / "report.html").exists() and (clone / "quick-report" / "report.html").exists()
