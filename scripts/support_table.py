"""Regenerate the table of docs/architectures.md from the code's own checks: ``python scripts/support_table.py``.

Each family's small random model comes from ``tests/arch_builders.py`` until ``anchorlens.random_model`` builds
every family (then: ``support_table()`` with its default).
"""

import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's anchorlens and test builders

from arch_builders import build  # noqa: E402

from anchorlens.support import support_table, write_support_page  # noqa: E402

if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = support_table(lambda family: build(family)[0])
    changed = write_support_page(REPO / "docs" / "architectures.md", table)
    print("docs/architectures.md", "rewritten" if changed else "already up to date")
