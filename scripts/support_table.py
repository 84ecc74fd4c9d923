"""Regenerate the table of docs/architectures.md from the code's own checks: ``python scripts/support_table.py``.

Each family's small random model is ``anchorlens.random_model(family)``, as ``support_table()`` builds it by default.
"""

import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # this checkout's anchorlens

from anchorlens.support import support_table, write_support_page  # noqa: E402

if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = support_table()
    changed = write_support_page(REPO / "docs" / "architectures.md", table)
    print("docs/architectures.md", "rewritten" if changed else "already up to date")
