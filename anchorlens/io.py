"""Saving and loading result objects: one ``.npz`` file of arrays plus a JSON blob of metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


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
    """Read what ``save_arrays`` wrote: ``(tensors, meta)``; with ``kind``, refuse a file of another kind."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        arrays = {k: torch.from_numpy(data[k]) for k in data.files if k != "__meta__"}
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, not a {kind}: load it with that class")
    return arrays, meta
