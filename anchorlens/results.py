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

from dataclasses import asdict, fields
from pathlib import Path

from anchorlens.io import load_arrays, save_arrays
from anchorlens.kinds import KINDS, check_kind, expect_kind, kind_error, kind_of, loader_of  # noqa: F401 (re-exported)


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
        return save_arrays(path, {}, {"fields": asdict(self)}, kind=type(self).__name__)

    @classmethod
    def load(cls, path: str | Path):
        """The result that ``save`` wrote to ``path``; a file of another kind raises ``ResultKindError``."""
        _, meta = load_arrays(path, kind=cls.__name__)
        return cls(**meta["fields"])
