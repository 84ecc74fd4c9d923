"""circuit-tracer 0.5.0's cross-layer transcoder (CLT) folder, read and written as it is.

The folder (``transcoder/cross_layer_transcoder.py``: ``to_safetensors`` / ``load_clt``) holds, per layer ``i``:
``W_enc_{i}.safetensors`` with ``W_enc_{i}`` [features, d_model], ``b_enc_{i}`` [features], ``b_dec_{i}``
[d_model] and, for JumpReLU, ``threshold_{i}`` [features]; ``W_dec_{i}.safetensors`` with ``W_dec_{i}``
[features, n_layers - i, d_model] (the decoders to layers i .. n_layers - 1). ``config.yaml`` says
``model_kind: cross_layer_transcoder`` and the hooks; without it, circuit-tracer's ``load_clt`` defaults apply
(``hook_resid_mid`` in, ``hook_mlp_out`` out). The format has no skip connection.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from anchorlens.attribution.transcoders import Transcoder, TranscoderError, TranscoderSet

CLT_INPUT_HOOK = "hook_resid_mid"  # circuit-tracer's load_clt defaults
CLT_OUTPUT_HOOK = "hook_mlp_out"


def load_clt(path: Path, config: dict) -> TranscoderSet:
    """The CLT in ``path`` as a ``TranscoderSet`` whose layer ``i`` decodes to layers ``i .. n_layers - 1``."""
    found = sorted(int(m.group(1)) for p in path.glob("W_enc_*.safetensors")
                   if (m := re.fullmatch(r"W_enc_(\d+)\.safetensors", p.name)))
    if not found:
        raise TranscoderError(f"{path} says model_kind: cross_layer_transcoder but holds no W_enc_{{i}}.safetensors: "
                              "download the CLT repository's .safetensors files into that folder")
    n_layers = len(found)
    if found != list(range(n_layers)):
        raise TranscoderError(f"{path} has W_enc files for layers {found}; a CLT needs W_enc_0 .. W_enc_{n_layers - 1}")
    layers = []
    for i in range(n_layers):
        enc = _read(path / f"W_enc_{i}.safetensors", [f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}"])
        dec = _read(path / f"W_dec_{i}.safetensors", [f"W_dec_{i}"])[f"W_dec_{i}"]
        W_enc = enc[f"W_enc_{i}"]
        want = (W_enc.shape[0], n_layers - i, W_enc.shape[1])
        if tuple(dec.shape) != want:
            raise TranscoderError(f"{path}/W_dec_{i}.safetensors holds W_dec_{i} of shape {tuple(dec.shape)}, expected "
                                  f"{want} (features, layers {i}..{n_layers - 1}, d_model): the files do not belong "
                                  "together")
        threshold = enc.get(f"threshold_{i}")
        layers.append(Transcoder(W_enc, enc[f"b_enc_{i}"], dec, enc[f"b_dec_{i}"],
                                 None if threshold is None else threshold.reshape(-1)))
    meta_file = path / "anchorlens.json"  # training report, when anchorlens trained it
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return TranscoderSet(layers, config.get("feature_input_hook", CLT_INPUT_HOOK),
                         config.get("feature_output_hook", CLT_OUTPUT_HOOK), config.get("scan"), meta)


def _read(file: Path, keys: list[str]) -> dict:
    if not file.exists():
        raise TranscoderError(f"{file} is missing: a CLT folder needs W_enc_{{i}} and W_dec_{{i}}.safetensors for "
                              "every layer")
    tensors = load_file(str(file))
    missing = sorted(set(keys) - set(tensors))
    if missing:
        raise TranscoderError(f"{file} lacks {missing}: not circuit-tracer's CLT layout")
    return {k: v.float() for k, v in tensors.items()}


def save_clt(transcoders: TranscoderSet, path: Path) -> Path:
    """Write circuit-tracer's CLT layout (decoders that stop early are padded with zeros to the last layer)."""
    if transcoders.skip_connection:
        raise TranscoderError("circuit-tracer's CLT files have no skip connection: this CLT cannot be saved in them")
    if any(t.top_k for t in transcoders):
        raise TranscoderError("circuit-tracer's CLT files cannot say TopK: this CLT cannot be saved in them")
    n_layers = len(transcoders)
    for i, t in enumerate(transcoders):
        cpu = lambda x: x.detach().to("cpu", torch.float32).contiguous()  # noqa: E731
        enc = {f"W_enc_{i}": cpu(t.W_enc), f"b_enc_{i}": cpu(t.b_enc), f"b_dec_{i}": cpu(t.b_dec)}
        if t.threshold is not None:
            enc[f"threshold_{i}"] = cpu(t.threshold)
        dec = torch.zeros(t.n_features, n_layers - i, t.d_model)
        for offset in range(t.reach):
            dec[:, offset] = cpu(t.decoder(offset))
        save_file(enc, str(path / f"W_enc_{i}.safetensors"))
        save_file({f"W_dec_{i}": dec}, str(path / f"W_dec_{i}.safetensors"))
    config = {"model_kind": "cross_layer_transcoder", "feature_input_hook": transcoders.feature_input_hook,
              "feature_output_hook": transcoders.feature_output_hook,
              "scan": transcoders.scan or f"anchorlens/{path.name}"}
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if transcoders.meta:
        (path / "anchorlens.json").write_text(json.dumps(transcoders.meta, indent=2))
    return path
