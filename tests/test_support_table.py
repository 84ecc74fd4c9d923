"""docs/architectures.md shows exactly what ``anchorlens.support.support_table`` answers (so it cannot go stale), and
the table's cells follow the checks the methods themselves raise on."""

from __future__ import annotations

import warnings

import pytest

from anchorlens.support import FAMILIES, METHODS, PAGE_END, PAGE_START, support_markdown, support_table
from conftest import REPO


@pytest.fixture(scope="module", autouse=True)
def _warm(one_torch_thread):
    """Import TransformerLens and load the tokenizer once, outside the timed tests."""
    from anchorlens import random_model

    random_model("llama")


@pytest.fixture(scope="module")
def table():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return support_table()


@pytest.mark.slow
def test_the_docs_page_is_the_support_table(table, one_torch_thread):
    page = (REPO / "docs" / "architectures.md").read_text()
    shown = page.split(PAGE_START, 1)[1].split(PAGE_END, 1)[0].lstrip("\n")
    assert shown == support_markdown(table), "docs/architectures.md is stale: run python scripts/support_table.py"


@pytest.mark.slow
def test_every_family_and_method_has_a_cell(table, one_torch_thread):
    assert list(table.index) == list(FAMILIES)
    assert set(METHODS) <= set(table.columns)
    assert table.loc["llama", "sentence attention"] == "fused"
    assert table.loc["olmo2", "attribution"].startswith("refused: norms after attention")
    assert "held at its clean scale" in table.loc["gemma3", "information flow"]
    assert not any(cell.startswith("refused") for cell in table["information flow"])  # flow runs on every family


def test_the_readme_and_the_docs_index_link_the_page():
    assert "(docs/architectures.md)" in (REPO / "README.md").read_text()
    assert "(architectures.md)" in (REPO / "docs" / "README.md").read_text()
