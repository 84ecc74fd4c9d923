"""What a saved step result is keyed on, and how a re-run says what changed.

Every step of ``analyze`` saves its result with a *key*: a JSON dict of everything that changes it (the model's
identity, the trace's tokens and spans, the step's own settings). A re-run compares the key it would use with
the saved one and either reuses the result or recomputes it, saying why in one line
(``receivers: recomputed (heads 16 -> 4)``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def digest(value) -> str:
    """A short, stable hash of any JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def trace_key(trace) -> dict:
    """A trace's identity: its tokens and sentence spans (and their sizes, for the change message)."""
    spans = [list(span) for span in trace.token_spans]
    return {"tokens": digest(trace.token_ids), "spans": digest(spans), "n_tokens": len(trace.token_ids),
            "n_sentences": len(spans)}


def normalise(key: dict) -> dict:
    """The key as it reads back from JSON (tuples become lists), so saved and new keys compare equal."""
    return json.loads(json.dumps(key, sort_keys=True))


def _flatten(key: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in key.items():
        label = f"{prefix}{name}"
        if isinstance(value, dict):
            flat |= _flatten(value, label + " ")
        else:
            flat[label] = value
    return flat


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two keys, readably: ``["heads 16 -> 4", "a new trace"]``."""
    old_flat, new_flat = _flatten(normalise(old)), _flatten(normalise(new))
    said, out = set(), []
    for name in sorted(set(old_flat) | set(new_flat), key=lambda n: (n.startswith("trace"), n)):
        a, b = old_flat.get(name), new_flat.get(name)
        if a == b:
            continue
        if name.startswith("trace "):  # tokens or spans: one message, with the sizes
            if "trace" not in said:
                said.add("trace")
                out.append("a new trace")
        elif name == "model weights":
            out.append("other model weights")
        else:
            out.append(f"{name} {_short(a)} -> {_short(b)}")
    return out


def status(old: dict | None, new: dict) -> str:
    """``computed`` (nothing saved), ``reused`` (the same key) or ``recomputed (what changed)``."""
    if old is None:
        return "computed"
    diff = changes(old, new)
    return "reused" if not diff else f"recomputed ({', '.join(diff)})"


def _short(value) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def key_path(path: str | Path) -> Path:
    """Where the key of the result saved at ``path`` lies: ``<file>.key.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".key.json")


def read_key(path: str | Path) -> dict | None:
    """The key the result at ``path`` was made under (its ``.key.json`` beside it), or None when it has none."""
    try:
        return json.loads(key_path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_key(path: str | Path, key: dict) -> None:
    """Write ``key`` beside ``path`` atomically (a run killed while writing leaves no half key)."""
    target = key_path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(key, indent=1, sort_keys=True))
    tmp.replace(target)
