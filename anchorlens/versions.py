"""The dependency versions anchorlens was tested with, and the ones installed here.

``TESTED`` names the versions in ``requirements/lock.txt`` (the set that ``scripts/setup.sh`` installs and CI
tests; ``tests/test_versions.py`` keeps the two in step). Error messages about a model that misbehaves quote
both, so a user can tell a version mismatch at a glance.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: This package's own version (kept equal to pyproject.toml); here, in a leaf module, so that any module can
#: quote it without importing the whole package.
__version__ = "0.1.0"

# The packages whose versions decide how a model runs through a bridge.
TESTED: dict[str, str] = {
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "transformer-lens": "4.3.0",
}


def installed_versions(packages=tuple(TESTED)) -> dict[str, str]:
    """``{package: installed version}`` ("not installed" where missing)."""
    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def version_report() -> str:
    """One line: installed against tested versions, e.g. for an error message."""
    installed = installed_versions()
    parts = [f"{name} {installed[name]} (tested: {TESTED[name]})" for name in TESTED]
    return "installed " + ", ".join(parts)
