"""What kind of result a saved file holds, and the error when it is not the kind a loader expects.

A leaf module (``io`` and ``results`` both use it): a file names its kind (the class name) in its ``.npz``
metadata, as a ``"kind"`` key in JSON, or by what a folder holds.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from anchorlens.errors import ResultKindError

# kind (= class name) -> class, filled as the result classes are defined (``results.Result.__init_subclass__``);
# the package imports its modules on first use, so ``all_kinds()`` fills it with every exported result class
KINDS: dict[str, type] = {}


def all_kinds() -> dict[str, type]:
    """``KINDS`` with every result class ``anchorlens`` exports imported (exports are imported on first use)."""
    import sys

    package = sys.modules["anchorlens"]
    for name in getattr(package, "__all__", ()):
        if name not in KINDS and name[:1].isupper():
            getattr(package, name)
    return KINDS


def loader_of(kind: str | None) -> str:
    """How to read a file of ``kind``, for error messages."""
    return f"anchorlens.{kind}.load(path)" if kind in all_kinds() else f"whatever reads a {kind!r}"


def kind_error(path, found: str | None, expected: str) -> ResultKindError:
    return ResultKindError(f"{path} holds a {found}, not a {expected}: load it with {loader_of(found)}")


def check_kind(path, found: str | None, expected: str) -> None:
    """Refuse a file whose stored kind is another class's; a file without a kind (an older file) passes."""
    if found is not None and found != expected:
        raise kind_error(path, found, expected)


def kind_of(path: str | Path) -> str | None:
    """The kind of result saved at ``path`` (an ``.npz``, a JSON file or a folder), or None when it names none."""
    path = Path(path)
    if path.is_dir():
        if (path / "study.npz").exists():
            return "Study"
        if (path / "trace.json").exists():
            return "Analysis"
        if (path / "config.yaml").exists() or list(path.glob("*/sae.safetensors")):
            return "TranscoderSet"
        return None
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        if handle.read(16) == b"SQLite format 3\x00":
            return "RolloutStore"
    if zipfile.is_zipfile(path):  # an .npz
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                return json.loads(str(data["__meta__"])).get("kind") if "__meta__" in data.files else None
        except (ValueError, OSError, KeyError):
            return None
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read(1) != "{":
                return None
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, OSError):
        return None
    return payload.get("kind") if isinstance(payload, dict) else None


def expect_kind(path: str | Path, cls: type) -> None:
    """Before a class-specific reader runs: refuse ``path`` when it holds another kind of result."""
    check_kind(path, kind_of(path), cls.__name__)
