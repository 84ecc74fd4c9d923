"""Checks of command-line inputs that need no model and no torch: where ``--model`` points."""

from __future__ import annotations

import json
from pathlib import Path

from anchorlens.errors import OptionError

_WAY_OUT = ("pass a folder that save_pretrained wrote (config.json with model_type, the weights, the tokenizer), "
            "a Hugging Face model name, or the embedded smollm2-135m-instruct")


def check_model_source(name: str, option: str = "--model") -> None:
    """Refuse a ``--model`` that names a local path holding no Hugging Face model, before transformers sees it.

    A name that is neither an existing path nor shaped like one (``org/model``) is left to the loader: it may be
    the embedded model or a Hugging Face model name.
    """
    path = Path(name).expanduser()
    if not path.exists():
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
            raise OptionError(f"{option} {name}: no such folder; {_WAY_OUT}")
        return
    if not path.is_dir():
        raise OptionError(f"{option} {name} is a file, not a model folder: {_WAY_OUT}")
    config = path / "config.json"
    if not config.is_file():
        what = "is empty" if not any(path.iterdir()) else "has no config.json"
        raise OptionError(f"{option} folder {name} {what}: {_WAY_OUT}")
    try:
        data = json.loads(config.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptionError(f"{option} folder {name}: config.json is not valid JSON ({error}): {_WAY_OUT}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise OptionError(f"{option} folder {name}: config.json names no model_type: {_WAY_OUT}")
