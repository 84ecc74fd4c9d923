"""Checks of command-line inputs that need no model and no torch: text files, saved traces, where ``--model``,
``--transcoders`` and ``--server`` point, published trace folders. Each refusal is an ``InputError`` saying what
to pass instead, raised before any long work starts."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from anchorlens.errors import InputError, ServerError

_WAY_OUT = ("pass a folder that save_pretrained wrote (config.json with model_type, the weights, the tokenizer), "
            "a Hugging Face model name, or the embedded smollm2-135m-instruct")
# What save_pretrained (or a download) writes as weights: safetensors, possibly sharded, or PyTorch's older files.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
TRACE_FIELDS = ("prompt", "cot", "sentences", "token_ids", "token_spans", "prompt_token_end")
TRACE_OPTIONAL = ("style", "model_name", "metadata", "kind")


def read_bytes(path: Path, option: str) -> bytes:
    """A file's bytes; a missing file, a folder or an unreadable file is an ``InputError`` naming ``option``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file: pass a file to {option}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file {path}: check the path given to {option}") from None
    except OSError as error:
        raise InputError(f"cannot read {path} ({error.strerror}): pass a file you can read to {option}") from None


def read_text(path: Path, option: str) -> str:
    """A UTF-8 text file's text; a binary file (invalid UTF-8 or NUL bytes) is refused with what to do."""
    data = read_bytes(path, option)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8 "
                         f"and pass it to {option} again") from None
    if "\x00" in text:
        raise InputError(f"{path} is a binary file (a NUL byte at character {text.index(chr(0))}), not text: pass "
                         f"{option} a UTF-8 text file")
    return text


def read_json(path: Path, option: str, way_out: str):
    """A UTF-8 JSON file's value; anything else is an ``InputError`` ending in ``way_out``."""
    text = read_text(path, option)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error.msg}, line {error.lineno}): {way_out}") from None


def read_trace_json(path: str | Path, option: str = "--trace") -> dict:
    """The JSON of a saved trace (``Trace.save``), checked for the fields and types ``Trace.load`` needs."""
    path = Path(path)
    way_out = "pass a .json that Trace.save (or anchorlens analyze) wrote, or the chain of thought as a .txt file"
    data = read_json(path, option, way_out)
    missing = [name for name in TRACE_FIELDS if not isinstance(data, dict) or name not in data]
    if missing:
        raise InputError(f"{path} is not a saved trace: it lacks {', '.join(missing)}; {way_out}")
    unknown = [name for name in data if name not in TRACE_FIELDS + TRACE_OPTIONAL]
    wrong = [name for name, ok in [
        ("prompt", isinstance(data["prompt"], str)), ("cot", isinstance(data["cot"], str)),
        ("sentences", isinstance(data["sentences"], list) and all(
            isinstance(s, dict) and set(s) == {"text", "start", "end"} and isinstance(s["text"], str)
            and _whole(s["start"]) and _whole(s["end"]) for s in data["sentences"])),
        ("token_ids", isinstance(data["token_ids"], list) and all(_whole(t) for t in data["token_ids"])),
        ("token_spans", isinstance(data["token_spans"], list) and all(
            isinstance(s, list) and len(s) == 2 and all(_whole(t) for t in s) for s in data["token_spans"])),
        ("prompt_token_end", _whole(data["prompt_token_end"])),
        ("metadata", isinstance(data.get("metadata", {}), dict)),
    ] if not ok]
    if unknown or wrong:
        what = "; ".join(filter(None, [f"unknown field(s) {', '.join(unknown)}" if unknown else "",
                                       f"field(s) of the wrong type: {', '.join(wrong)}" if wrong else ""]))
        raise InputError(f"{path} is not a saved trace ({what}): the file was edited; save the trace again with "
                         "Trace.save, or pass the chain of thought as a .txt file")
    if len(data["sentences"]) != len(data["token_spans"]):
        raise InputError(f"{path} has {len(data['sentences'])} sentences but {len(data['token_spans'])} token "
                         "spans: the file was edited or truncated; save the trace again")
    return data


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_source(name: str, option: str = "--model") -> None:
    """Refuse a ``--model`` that names a local path holding no Hugging Face model, before transformers sees it.

    A name that is neither an existing path nor shaped like one (``org/model``) is left to the loader: it may be
    the embedded model or a Hugging Face model name.
    """
    if not name.strip():
        raise InputError(f"{option} is empty: {_WAY_OUT}")
    path = Path(name).expanduser()
    if not path.exists():
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
            raise InputError(f"{option} {name}: no such folder; {_WAY_OUT}")
        return
    if not path.is_dir():
        raise InputError(f"{option} {name} is a file, not a model folder: {_WAY_OUT}")
    config = path / "config.json"
    if not config.is_file():
        what = "is empty" if not any(path.iterdir()) else "has no config.json"
        raise InputError(f"{option} folder {name} {what}: {_WAY_OUT}")
    data = read_json(config, option, _WAY_OUT)
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise InputError(f"{option} folder {name}: config.json names no model_type: {_WAY_OUT}")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise InputError(f"{option} folder {name} has a config.json but no weights ({', '.join(WEIGHT_PATTERNS)}): "
                         "save the model into it with save_pretrained, or pass another model")


def check_transcoder_folder(path: Path, option: str = "--transcoders") -> None:
    """A folder in one of the layouts ``load_transcoders`` reads (circuit-tracer's, its CLT layout, sparsify's)."""
    layouts = "config.yaml and layer_*.safetensors (circuit-tracer), or sparsify's layers.{i}.mlp/sae.safetensors"
    if not Path(path).is_dir():
        raise InputError(f"no transcoder folder {path}: pass {option} the folder with {layouts}")
    config = Path(path) / "config.yaml"
    if config.exists():
        import yaml

        try:
            data = yaml.safe_load(read_text(config, option))
        except yaml.YAMLError as error:
            raise InputError(f"{config} is not valid YAML ({str(error).splitlines()[0]}): restore the transcoder "
                             f"folder ({layouts})") from None
        if not isinstance(data, dict):
            raise InputError(f"{config} holds no settings (a YAML mapping): restore the transcoder folder ({layouts})")
    elif not (Path(path) / "W_enc_0.safetensors").exists() and not next(Path(path).glob("*/sae.safetensors"), None):
        raise InputError(f"{option} {path} holds no transcoders: pass the folder with {layouts}")


def check_server_url(url: str, option: str = "--server") -> str:
    """An http(s) URL with a host (and a valid port, if any); returns it. Refused without contacting it."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except (ValueError, TypeError, AttributeError):  # not a string, or a port that is not a number
        valid = False
    if not valid:
        raise InputError(f"{option} must be an http(s) URL such as 'http://127.0.0.1:8000', not {url!r}")
    return url


def check_server_reachable(url: str, option: str = "--server", timeout: float = 10.0) -> None:
    """The server at ``url`` answers HTTP at all (any status): refused in seconds, before a model is loaded,
    rather than when the first rollout is asked for."""
    import requests

    check_server_url(url, option)
    probe = url.rstrip("/").removesuffix("/v1") + "/v1/models"
    try:
        requests.get(probe, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as error:
        reason = type(error).__name__ if isinstance(error, requests.Timeout) else "no connection"
        raise ServerError(f"{option} {url} does not answer ({reason} at {probe}): start the server (vllm serve, "
                          "sglang, transformers serve) or fix the URL; leave --server out to sample with the "
                          "local model") from None
    except requests.RequestException as error:
        raise ServerError(f"{option} {url} cannot be asked ({type(error).__name__}): fix the URL") from None


def check_chunk_records(records, path: Path) -> list[dict]:
    """A published ``chunks_labeled.json``'s value: a non-empty list of records with a ``chunk`` text each."""
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) and "chunk" in r for r in records):
        raise InputError(f"{path} is not a list of chunk records with a 'chunk' each: fix or remove that trace folder")
    return records


def check_published_folders(folders) -> None:
    """Each published trace folder's files are UTF-8 JSON of the shape the study reads (``problem.json`` and
    ``base_solution.json`` objects, the latter with a ``solution`` text; ``chunks_labeled.json`` chunk records)."""
    way_out = "fix or remove that trace folder"
    for folder in folders:
        data = {name: read_json(Path(folder) / name, "the study folder", way_out)
                for name in ("problem.json", "base_solution.json")}
        for name, value in data.items():
            if not isinstance(value, dict):
                raise InputError(f"{Path(folder) / name} is not a JSON object: {way_out}")
        solution = data["base_solution.json"].get("solution")
        if not isinstance(solution, str) or not solution.strip():
            raise InputError(f"{folder}/base_solution.json has no 'solution' text (the chain of thought): {way_out}")
        check_chunk_records(read_json(Path(folder) / "chunks_labeled.json", "the study folder", way_out),
                            Path(folder) / "chunks_labeled.json")
