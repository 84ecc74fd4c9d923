"""Execute every notebook in notebooks/ in its own folder and save it with its outputs (plots included), so that
the notebooks read well on GitHub. The test suite runs them too (tests/test_notebooks.py), without saving.

    .venv/bin/python scripts/run_notebooks.py [notebooks/01_thought_anchors.ipynb ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def main(paths: list[str]) -> None:
    for path in [Path(p) for p in paths] or sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        for cell in notebook.cells:
            cell.get("metadata", {}).pop("execution", None)  # this run's timings only add noise to diffs
            if "outputs" in cell:  # stderr is progress bars (an output per refresh) and tqdm's widget warning
                cell.outputs = [o for o in cell.outputs if not _stderr(o)]
        nbformat.write(notebook, path)
        print(f"executed {path}")


def _stderr(output) -> bool:
    return output.get("output_type") == "stream" and output.get("name") == "stderr"


if __name__ == "__main__":
    main(sys.argv[1:])
