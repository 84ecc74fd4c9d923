"""The protocol every public result follows, and the kind check that keeps one result's file from another.

Every result class (``SuppressionMatrix``, ``Routes``, ``Analysis``, ``Study``, ...) subclasses ``Result``:

    result.to_dataframe()          # a pandas DataFrame, one row per the result's natural unit
    result.plot()                  # a matplotlib Axes or Figure; no argument needed
    path = result.save(path)       # one file (or one folder for Analysis, Study, TranscoderSet)
    Class.load(path)               # the same result back; another class's file raises ResultKindError

A saved file names its kind (the class name): in the ``.npz`` metadata, as a ``"kind"`` key in JSON files, or by
what a folder holds. ``Class.load`` on a file of another kind raises ``ResultKindError`` naming both kinds and the
loader that reads the file. Files from before the kind was stored still load.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

from anchorlens.errors import ResultKindError

# kind (= class name) -> class, filled as the result classes are defined
KINDS: dict[str, type] = {}


class Result:
    """Base of every public result class: ``to_dataframe``, ``plot``, ``save``, ``load`` and its kind.

    The defaults here serve a dataclass whose fields are all JSON values (numbers, strings, lists, dicts): they
    are stored as the metadata of an ``.npz`` without arrays. Classes holding tensors override save/load.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        KINDS[cls.__name__] = cls

    def to_dataframe(self):
        """The result as one pandas row (the default for results made of a few numbers)."""
        import pandas as pd

        return pd.DataFrame([{f.name: getattr(self, f.name) for f in fields(self)
                              if not isinstance(getattr(self, f.name), (dict, list))}])

    def plot(self, ax=None):
        raise NotImplementedError(f"{type(self).__name__} has no plot")

    def save(self, path: str | Path) -> Path:
        """Write the result's fields to one ``.npz`` file (JSON metadata, kind included)."""
        from anchorlens.io import save_arrays

        return save_arrays(path, {}, {"fields": asdict(self)}, kind=type(self).__name__)

    @classmethod
    def load(cls, path: str | Path):
        """The result that ``save`` wrote to ``path``; a file of another kind raises ``ResultKindError``."""
        from anchorlens.io import load_arrays

        _, meta = load_arrays(path, kind=cls.__name__)
        return cls(**meta["fields"])


def loader_of(kind: str | None) -> str:
    """How to read a file of ``kind``, for error messages."""
    return f"anchorlens.{kind}.load(path)" if kind in KINDS else f"whatever reads a {kind!r}"


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
