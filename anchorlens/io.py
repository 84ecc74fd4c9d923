"""Saving and loading result objects: one ``.npz`` file of arrays plus a JSON blob of metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from anchorlens.errors import ResultKindError
from anchorlens.kinds import check_kind, kind_of


def save_arrays(path: str | Path, arrays: dict, meta: dict | None = None, kind: str | None = None) -> Path:
    """Write tensors / arrays and JSON-able metadata to one ``.npz`` file (atomic: temp file, then rename).

    ``kind`` (a result class's name) is stored so that ``load_arrays(path, kind=...)`` can refuse another file.
    """
    meta = dict(meta or {}) | ({"kind": kind} if kind else {})
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in arrays.items()}
    payload["__meta__"] = np.array(json.dumps(meta))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **payload)
    tmp.replace(path)
    return path


def load_arrays(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what ``save_arrays`` wrote: ``(tensors, meta)``; with ``kind``, refuse a file of another kind.

    A file of another kind raises ``ResultKindError`` naming both kinds; a file without a kind (written before
    kinds were stored) loads, and a key it lacks raises the same error.
    """
    path = Path(path)
    if kind is not None and path.exists() and (path.is_dir() or path.suffix != ".npz"):
        check_kind(path, kind_of(path), kind)  # another result's folder or JSON file, named as such
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        arrays = {k: torch.from_numpy(data[k]) for k in data.files if k != "__meta__"}
    if kind is not None:
        check_kind(path, meta.get("kind"), kind)
        if "kind" not in meta:  # written before kinds were stored: a missing entry means another kind of file
            arrays, meta = _Untagged(arrays, path, kind), _Untagged(meta, path, kind)
    return arrays, meta


class _Untagged(dict):
    """The contents of a file without a stored kind: asking for what it lacks says it is not the expected kind."""

    def __init__(self, items: dict, path: Path, kind: str):
        super().__init__(items)
        self.path, self.kind = path, kind

    def __missing__(self, key):
        raise ResultKindError(f"{self.path} has no {key!r}, so it holds no {self.kind} (it names no kind: an older "
                              f"file, or not a result): load it with the function that wrote it")
