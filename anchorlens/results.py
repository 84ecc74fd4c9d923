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

import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from anchorlens.io import load_arrays, save_arrays
from anchorlens.kinds import KINDS, check_kind, expect_kind, kind_error, kind_of, loader_of  # noqa: F401 (re-exported)


class Result:
    """Base of every public result class: ``to_dataframe``, ``plot``, ``save``, ``load`` and its kind.

    ``save``/``load`` serve every dataclass result (one persistence for all): tensor and array fields are stored
    as arrays of an ``.npz``, the other fields (numbers, strings, lists, dicts, DataFrames as lists of columns) as
    its JSON metadata; ``load`` turns JSON lists back into the tuples the field annotations name. A class with a
    field stored otherwise declares it: ``_array_dicts`` (a dict of tensors, one array per key under a prefix) or
    the two hooks ``_to_file`` / ``_from_file``. A renamed field (``anchorlens.stats.renamed_arguments`` on the
    class) is read from older files under its old name (``_renamed``).
    """

    _array_dicts: typing.ClassVar[dict[str, str]] = {}  # field -> prefix of its arrays (a dict of tensors)
    _nested: typing.ClassVar[dict[str, str]] = {}  # field holding a Result -> the name its arrays and meta go under
    _renamed: typing.ClassVar[dict[str, str]] = {}  # a field's old saved name -> its name (stats.renamed_arguments)

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
        """Write the result to one ``.npz`` file: arrays, and the other fields as JSON metadata (kind included)."""
        arrays, meta = self._to_file()
        return save_arrays(path, arrays, meta, kind=type(self).__name__)

    @classmethod
    def load(cls, path: str | Path):
        """The result that ``save`` wrote to ``path``; a file of another kind raises ``ResultKindError``."""
        arrays, meta = load_arrays(path, kind=cls.__name__)
        return cls._from_file(arrays, meta)

    def _to_file(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` of the dataclass fields."""
        import numpy as np
        import pandas as pd
        import torch

        arrays, meta = {}, {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._array_dicts:
                arrays.update({self._array_dicts[f.name] + k: v for k, v in value.items()})
            elif f.name in self._nested:
                inner_arrays, meta[self._nested[f.name]] = value._to_file()
                arrays.update({f"{self._nested[f.name]}.{k}": v for k, v in inner_arrays.items()})
            elif isinstance(value, (torch.Tensor, np.ndarray)):
                arrays[f.name] = value
            elif isinstance(value, pd.DataFrame):
                meta[f.name] = value.to_dict(orient="list")
            else:
                meta[f.name] = value
        return arrays, meta

    @classmethod
    def _from_file(cls, arrays: dict, meta: dict):
        """The result from what ``_to_file`` stored (or the hand-written saves before it wrote)."""
        if "fields" in meta and "fields" not in {f.name for f in fields(cls)}:  # the JSON-only form before 0.3
            meta = meta["fields"]
        if cls._renamed:  # files saved before a field was renamed
            arrays, meta = ({cls._renamed.get(k, k): v for k, v in d.items()} for d in (arrays, meta))
        kwargs = {}
        for f in fields(cls):
            if not f.init:
                continue
            hint = _hint(cls, f)
            if f.name in cls._array_dicts:
                prefix = cls._array_dicts[f.name]
                kwargs[f.name] = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            elif f.name in cls._nested:
                name = cls._nested[f.name]
                inner = {k[len(name) + 1:]: v for k, v in arrays.items() if k.startswith(name + ".")}
                kwargs[f.name] = hint._from_file(inner, meta[name])
            elif f.name in arrays or f.name in meta:
                kwargs[f.name] = _coerce(arrays[f.name] if f.name in arrays else meta[f.name], hint)
            elif f.default is MISSING and f.default_factory is MISSING:
                kwargs[f.name] = None if _optional(hint) else meta[f.name]  # an untagged file: says what it lacks
        return cls(**kwargs)


def _hint(cls, f):
    """The field's annotation as a type (None when it cannot be evaluated)."""
    if not isinstance(f.type, str):
        return f.type
    for klass in cls.__mro__:
        if f.name in getattr(klass, "__annotations__", {}):
            try:
                hint = eval(f.type, vars(sys.modules[klass.__module__]))  # noqa: S307 (the class's own annotation)
                return hint if not isinstance(hint, str) else "DataFrame" if hint.endswith("DataFrame") else None
            except Exception:  # noqa: BLE001 (a name only imported for type checking: no coercion)
                return None
    return None


def _optional(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _coerce(value, hint):
    """A value read from JSON (or an array) as the field's annotation names it: tuples, lists, DataFrames."""
    import torch

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None or hint is None:
        return value
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return _coerce(value, kinds[0]) if len(kinds) == 1 else value
    if getattr(hint, "__name__", hint) == "DataFrame" and isinstance(value, dict):
        import pandas as pd

        return pd.DataFrame(value)
    if isinstance(value, torch.Tensor) and (origin in (list, tuple) or hint in (list, tuple)):
        value = value.tolist()
    if origin is list and isinstance(value, (list, tuple)):
        return [_coerce(v, args[0]) for v in value] if args else list(value)
    if (origin is tuple or hint is tuple) and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        return tuple(_coerce(v, a) for v, a in zip(value, args)) if args else tuple(value)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _coerce(v, args[1]) for k, v in value.items()}
    return value
