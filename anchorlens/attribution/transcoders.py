"""Per-layer transcoders: a sparse dictionary that stands in for each MLP (circuit tracing's replacement model).

A transcoder reads the MLP's input (``blocks.{l}.mlp.hook_in``: the normalised residual after attention; or, where
its config says ``hook_resid_mid``, the residual before that norm) and predicts the MLP's output (``hook_mlp_out``,
which circuit-tracer's configs also call ``mlp.hook_out``):

    features = act(x W_enc^T + b_enc)          act: ReLU, JumpReLU (threshold) or TopK
    mlp_out ~ features W_dec + b_dec (+ x W_skip^T)

Cross-layer transcoders (CLTs) are the same structure: the feature of layer ``l`` reads layer ``l``'s input and
its decoder ``W_dec`` [features, k, d_model] writes to the MLP outputs of layers ``l .. l+k-1`` (circuit-tracer's
CLT: k = n_layers - l), so the replacement MLP output of layer ``l`` is the sum over source layers ``s <= l`` of
their decoded features, plus ``b_dec`` and the skip of layer ``l`` (``TranscoderSet.decode_layer``). A per-layer
transcoder is the case k = 1 (its ``W_dec`` may be stored as [features, d_model]).

Files: circuit-tracer's layout (a folder with ``config.yaml`` and ``layer_{i}.safetensors`` holding ``W_enc``
[features, d_model], ``W_dec`` [features, d_model], ``b_enc``, ``b_dec``, optional
``activation_function.threshold`` and ``W_skip``; the released sets' config lists ``hf://`` addresses of files
that a download puts in the folder) is read and written; so is its CLT layout (``config.yaml`` with ``model_kind:
cross_layer_transcoder``, ``W_enc_{i}.safetensors`` holding ``W_enc_{i}``, ``b_enc_{i}``, ``b_dec_{i}``, optional
``threshold_{i}``, and ``W_dec_{i}.safetensors`` holding ``W_dec_{i}`` [features, n_layers - i, d_model]);
EleutherAI sparsify's layout (one folder per hookpoint with ``cfg.json`` and ``sae.safetensors``) is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from anchorlens.errors import InputError
from anchorlens.results import Result

FEATURE_INPUT_HOOK = "mlp.hook_in"
FEATURE_OUTPUT_HOOK = "hook_mlp_out"

# circuit-tracer 0.5.0's hook names (``utils/tl_nnsight_mapping.py``) on the Llama / Qwen-style models anchorlens
# attributes, and the bridge hook each names: the MLP's input after its norm, the residual stream before that
# norm, and the MLP's output under either of its two names (circuit-tracer maps both to ``mlp``'s output).
INPUT_SITES = {"mlp.hook_in": "mlp.hook_in", "hook_resid_mid": "hook_resid_mid"}
OUTPUT_SITES = {"hook_mlp_out": "hook_mlp_out", "mlp.hook_out": "hook_mlp_out"}


TranscoderError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


@dataclass
class Transcoder:
    """One layer's transcoder (weights in circuit-tracer's orientation: rows are features). ``W_dec`` is
    [feature, d_model] (writes to its own layer) or [feature, k, d_model] (cross-layer: layers l .. l+k-1)."""

    W_enc: Float[Tensor, "feature d_model"]
    b_enc: Float[Tensor, " feature"]
    W_dec: Float[Tensor, "feature d_model"] | Float[Tensor, "feature reach d_model"]
    b_dec: Float[Tensor, " d_model"]
    threshold: Float[Tensor, " feature"] | None = None  # JumpReLU when set, else ReLU
    W_skip: Float[Tensor, "d_model d_model"] | None = None
    top_k: int | None = None  # TopK activation (sparsify); applied after ReLU

    def __post_init__(self):
        n, d = self.W_enc.shape
        want_dec = (n, self.W_dec.shape[1], d) if self.W_dec.ndim == 3 else (n, d)
        checks = {"W_dec": (self.W_dec.shape, want_dec), "b_enc": (self.b_enc.shape, (n,)),
                  "b_dec": (self.b_dec.shape, (d,))}
        if self.threshold is not None:
            checks["threshold"] = (self.threshold.shape, (n,))
        if self.W_skip is not None:
            checks["W_skip"] = (self.W_skip.shape, (d, d))
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise TranscoderError(f"transcoder {name} has shape {tuple(got)}, expected {want} "
                                      f"for W_enc of shape {(n, d)}: the files do not belong together")

    @property
    def n_features(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_model(self) -> int:
        return self.W_enc.shape[1]

    @property
    def reach(self) -> int:
        """How many layers the decoder writes to, from its own on (1: a per-layer transcoder)."""
        return self.W_dec.shape[1] if self.W_dec.ndim == 3 else 1

    def decoder(self, offset: int = 0) -> Float[Tensor, "feature d_model"]:
        """The decoder rows written to the MLP output ``offset`` layers after this transcoder's own."""
        if not 0 <= offset < self.reach:
            raise TranscoderError(f"this transcoder writes to {self.reach} layer(s) from its own; offset {offset}")
        return self.W_dec[:, offset] if self.W_dec.ndim == 3 else self.W_dec

    @property
    def activation(self) -> str:
        return "topk" if self.top_k else ("jumprelu" if self.threshold is not None else "relu")

    def pre_activations(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... feature"]:
        return torch.nn.functional.linear(x.to(self.W_enc.dtype), self.W_enc, self.b_enc)

    def activate(self, pre: Float[Tensor, "... feature"]) -> Float[Tensor, "... feature"]:
        if self.threshold is not None:
            return pre * (pre > self.threshold)  # circuit-tracer's JumpReLU forward
        acts = torch.relu(pre)
        if self.top_k:
            top = acts.topk(self.top_k, dim=-1)
            acts = torch.zeros_like(acts).scatter_(-1, top.indices, top.values)
        return acts

    def encode(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... feature"]:
        return self.activate(self.pre_activations(x))

    def skip(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if self.W_skip is None:
            return torch.zeros_like(x)
        return x @ self.W_skip.T

    def decode(self, features: Float[Tensor, "... feature"], x: Float[Tensor, "... d_model"]) -> Tensor:
        """This layer's MLP output from its own features: a per-layer transcoder's whole reconstruction (for a
        cross-layer one, earlier layers' features also write here: ``TranscoderSet.decode_layer``)."""
        if self.reach != 1:
            raise TranscoderError("a cross-layer transcoder's output at a layer sums the features of every earlier "
                                  "layer: use TranscoderSet.decode_layer(layer, activations, x)")
        return features @ self.decoder(0) + self.b_dec + self.skip(x)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The MLP output this transcoder predicts from the MLP input ``x``."""
        return self.decode(self.encode(x), x)

    __call__ = forward

    def tensors(self) -> dict[str, Tensor]:
        """circuit-tracer's safetensors keys."""
        if self.reach != 1:
            raise TranscoderError("a cross-layer transcoder's layer has no per-layer file: save the TranscoderSet "
                                  "(circuit-tracer's CLT layout)")
        out = {"W_enc": self.W_enc, "W_dec": self.decoder(0), "b_enc": self.b_enc, "b_dec": self.b_dec}
        if self.threshold is not None:
            out["activation_function.threshold"] = self.threshold
        if self.W_skip is not None:
            out["W_skip"] = self.W_skip
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}

    def to(self, device=None, dtype=None) -> "Transcoder":
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return Transcoder(move(self.W_enc), move(self.b_enc), move(self.W_dec), move(self.b_dec),
                          move(self.threshold), move(self.W_skip), self.top_k)


@dataclass
class TranscoderSet(Result):
    """One transcoder per layer, reading ``feature_input_hook`` and writing ``feature_output_hook`` (of its own
    layer, or, cross-layer, of its own and later layers)."""

    layers: list[Transcoder]
    feature_input_hook: str = FEATURE_INPUT_HOOK
    feature_output_hook: str = FEATURE_OUTPUT_HOOK
    scan: str | None = None
    meta: dict = field(default_factory=dict)  # e.g. training report (FVU, L0 per layer)

    def __post_init__(self):
        if not self.layers:
            raise TranscoderError("a transcoder set needs at least one layer")
        widths = {t.n_features for t in self.layers}
        if len(widths) > 1:
            raise TranscoderError(f"all layers' transcoders must have the same width; got {sorted(widths)}")
        if len({t.W_skip is None for t in self.layers}) > 1:
            raise TranscoderError("either every layer's transcoder has a skip connection (W_skip) or none has")
        for i, t in enumerate(self.layers):
            if t.reach > len(self.layers) - i:
                raise TranscoderError(f"layer {i}'s decoder writes to {t.reach} layers, past the last of "
                                      f"{len(self.layers)}: W_dec_{i} must reach at most {len(self.layers) - i}")

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.layers[layer]

    def __iter__(self):
        return iter(self.layers)

    @property
    def n_features(self) -> int:
        return self.layers[0].n_features

    @property
    def d_model(self) -> int:
        return self.layers[0].d_model

    @property
    def skip_connection(self) -> bool:
        return self.layers[0].W_skip is not None

    @property
    def cross_layer(self) -> bool:
        """Whether some feature writes past its own layer (a cross-layer transcoder)."""
        return any(t.reach > 1 for t in self.layers)

    def sources(self, layer: int) -> list[int]:
        """The layers whose features write to ``layer``'s MLP output (just ``layer`` for per-layer transcoders)."""
        return [s for s in range(layer + 1) if s + self.layers[s].reach > layer]

    def encode_layer(self, layer: int, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... feature"]:
        return self.layers[layer].encode(x)

    def skip_layer(self, layer: int, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.layers[layer].skip(x)

    def decode_features(self, layer: int, activations) -> Float[Tensor, "... d_model"]:
        """What the features write to ``layer``'s MLP output: ``activations[s]`` [..., feature] through the
        decoders of every source layer ``s`` that writes there (no bias, no skip)."""
        parts = [activations[s] @ self.layers[s].decoder(layer - s).to(activations[s]) for s in self.sources(layer)]
        return torch.stack(parts).sum(0)

    def decode_layer(self, layer: int, activations, x: Float[Tensor, "... d_model"]) -> Tensor:
        """The replacement MLP output of ``layer``: the decoded features of every layer that writes there
        (``activations[s]`` [..., feature] for those source layers ``s``), plus ``b_dec`` and the skip of ``x``."""
        return self.decode_features(layer, activations) + self.layers[layer].b_dec + self.layers[layer].skip(x)

    @property
    def input_site(self) -> str:
        """The bridge hook (without ``blocks.{i}.``) the transcoders read: ``mlp.hook_in`` or ``hook_resid_mid``."""
        return _site(self.feature_input_hook, INPUT_SITES, "read")

    @property
    def output_site(self) -> str:
        """The bridge hook (without ``blocks.{i}.``) the transcoders write: always the MLP output."""
        return _site(self.feature_output_hook, OUTPUT_SITES, "write")

    def to(self, device=None, dtype=None) -> "TranscoderSet":
        return TranscoderSet([t.to(device, dtype) for t in self.layers], self.feature_input_hook,
                             self.feature_output_hook, self.scan, dict(self.meta))

    def check_model(self, model) -> None:
        """Refuse transcoders that do not fit ``model``: layer count, width of the residual stream, hooks."""
        n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
        if len(self) != n_layers:
            raise TranscoderError(f"{len(self)} transcoders for a model with {n_layers} layers: train or load "
                                  "one transcoder per layer (anchorlens.train_transcoders)")
        if self.d_model != d_model:
            raise TranscoderError(f"transcoders read vectors of width {self.d_model}, the model's residual "
                                  f"stream has width {d_model}: they were made for another model")
        for name in (f"blocks.0.{self.input_site}", f"blocks.0.{self.output_site}"):
            if name not in model.hook_dict:
                raise TranscoderError(f"the model has no hook {name!r}; transcoders need a TransformerBridge "
                                      "with MLP hooks")

    def save(self, path: str | Path) -> Path:
        """Write circuit-tracer's layout: ``config.yaml`` and ``layer_{i}.safetensors`` (cross-layer:
        ``W_enc_{i}.safetensors`` and ``W_dec_{i}.safetensors``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.cross_layer:
            return save_clt(self, path)
        for i, transcoder in enumerate(self.layers):
            save_file(transcoder.tensors(), str(path / f"layer_{i}.safetensors"))
        config = {
            "model_kind": "transcoder_set",
            "feature_input_hook": self.feature_input_hook,
            "feature_output_hook": self.feature_output_hook,
            "scan": self.scan or f"anchorlens/{path.name}",
            "transcoders": [f"layer_{i}.safetensors" for i in range(len(self))],
        }
        if any(t.top_k for t in self.layers):
            config["anchorlens_top_k"] = [t.top_k for t in self.layers]
        (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        if self.meta:
            (path / "anchorlens.json").write_text(json.dumps(self.meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "TranscoderSet":
        """The same as ``load_transcoders``: circuit-tracer's layout (what ``save`` writes) or sparsify's."""
        from anchorlens.results import expect_kind

        expect_kind(path, cls)
        return load_transcoders(path, device)

    def to_dataframe(self):
        """One row per layer: width, activation, skip connection, mean decoder row norm."""
        import pandas as pd

        return pd.DataFrame([{"layer": i, "n_features": t.n_features, "d_model": t.d_model,
                              "activation": t.activation, "skip": t.W_skip is not None,
                              "mean_decoder_norm": float(t.W_dec.float().norm(dim=-1).mean())}
                             for i, t in enumerate(self.layers)])

    def plot(self, ax=None):
        """Per layer, the distribution of the features' decoder norms (how strongly each feature writes)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(max(4.0, 0.5 * len(self)), 3))[1]
        ax.boxplot([t.W_dec.float().norm(dim=-1).cpu().numpy() for t in self.layers], positions=range(len(self)),
                   showfliers=False)
        ax.set_xlabel("layer")
        ax.set_ylabel("decoder norm per feature")
        return ax


def load_transcoders(path: str | Path, device: str | torch.device = "cpu") -> TranscoderSet:
    """Load transcoders from a local folder: circuit-tracer's layout or EleutherAI sparsify's.

    circuit-tracer: ``config.yaml`` + ``layer_{i}.safetensors``; sparsify: subfolders ``layers.{i}.mlp`` (or any
    name ending in the layer index and ``.mlp``) with ``cfg.json`` + ``sae.safetensors``.
    """
    path = Path(path)
    if not path.is_dir():
        raise TranscoderError(f"{path} is not a folder of transcoders; pass a folder with config.yaml and "
                              "layer_{i}.safetensors (circuit-tracer) or sparsify's layers.{i}.mlp subfolders")
    if (path / "config.yaml").exists():
        return _load_circuit_tracer(path).to(device)
    if (path / "W_enc_0.safetensors").exists():  # a CLT folder without its config (circuit-tracer's load_clt)
        return load_clt(path, {}).to(device)
    if list(path.glob("*/sae.safetensors")):
        return _load_sparsify(path).to(device)
    raise TranscoderError(f"{path} holds neither config.yaml (circuit-tracer) nor */sae.safetensors (sparsify)")


def _load_circuit_tracer(path: Path) -> TranscoderSet:
    config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    if config.get("model_kind") == "cross_layer_transcoder":
        return load_clt(path, config)
    if config.get("model_kind", "transcoder_set") != "transcoder_set":
        raise TranscoderError(f"{path}/config.yaml is a {config.get('model_kind')!r}; anchorlens reads per-layer "
                              "transcoders (model_kind: transcoder_set) and cross-layer transcoders "
                              "(model_kind: cross_layer_transcoder)")
    files = config.get("transcoders") or [p.name for p in sorted(path.glob("layer_*.safetensors"),
                                                                   key=lambda p: int(p.stem.split("_")[1]))]
    if not files:
        raise TranscoderError(f"{path} has a config.yaml but no layer_{{i}}.safetensors")
    top_k = config.get("anchorlens_top_k") or [None] * len(files)
    layers = []
    for i, name in enumerate(files):
        file = _layer_file(path, name)
        if file.suffix != ".safetensors":
            raise TranscoderError(f"{file} is not a .safetensors file: anchorlens reads circuit-tracer's "
                                  "safetensors layout (not GemmaScope's params.npz)")
        t = load_file(str(file))
        missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - set(t)
        if missing:
            raise TranscoderError(f"{file} lacks {sorted(missing)}: not a circuit-tracer transcoder")
        layers.append(Transcoder(t["W_enc"].float(), t["b_enc"].float(), t["W_dec"].float(), t["b_dec"].float(),
                                 _maybe(t, "activation_function.threshold"), _maybe(t, "W_skip"), top_k[i]))
    meta_file = path / "anchorlens.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return TranscoderSet(layers, config.get("feature_input_hook", FEATURE_INPUT_HOOK),
                         config.get("feature_output_hook", FEATURE_OUTPUT_HOOK), config.get("scan"), meta)


def _site(hook: str, sites: dict[str, str], verb: str) -> str:
    if hook not in sites:
        gemma = " (circuit-tracer uses it for Gemma 2/3, which anchorlens does not attribute)" if "ln2" in hook else ""
        raise TranscoderError(f"transcoders that {verb} {hook!r}{gemma}: anchorlens attributes transcoders that "
                              f"{verb} one of {sorted(sites)} (circuit-tracer's names for Llama / Qwen models); "
                              "fix feature_input_hook / feature_output_hook in config.yaml if they mean one of these")
    return sites[hook]


def _layer_file(path: Path, name: str) -> Path:
    """A file that config.yaml names: a path in the folder, or an ``hf://owner/repo/file?revision=...`` address
    (circuit-tracer's released configs) whose file lies in the folder, as a download of the repository has it."""
    if name.startswith("hf://"):
        inside = name[len("hf://"):].split("?", 1)[0].split("/", 2)[2:]  # drop owner and repository
        candidates = [path / inside[0], path / Path(inside[0]).name] if inside else []
    else:
        candidates = [Path(name) if Path(name).is_absolute() else path / name]
    for file in candidates:
        if file.exists():
            return file
    raise TranscoderError(f"{path}/config.yaml names {name}, which is not in {path}: download the transcoder "
                          "repository's files into that folder (huggingface_hub.snapshot_download)")


def _maybe(tensors: dict, key: str):
    return tensors[key].float() if key in tensors else None


def _load_sparsify(path: Path) -> TranscoderSet:
    """sparsify (EleutherAI): ``encoder.weight`` [latents, d_in], ``encoder.bias``, ``W_dec`` [latents, d_in],
    ``b_dec``, optional ``W_skip`` [d_in, d_in] (applied as ``x @ W_skip.T``); TopK activation with ``k``."""
    import re

    folders = {}
    for sub in path.glob("*/sae.safetensors"):
        found = re.search(r"(\d+)\D*$", sub.parent.name)
        if found is None:
            raise TranscoderError(f"cannot read a layer index from {sub.parent.name!r}; name it layers.{{i}}.mlp")
        folders[int(found.group(1))] = sub.parent
    if sorted(folders) != list(range(len(folders))):
        raise TranscoderError(f"{path} has sparsify transcoders for layers {sorted(folders)}; need 0..n-1")
    layers = []
    for i in range(len(folders)):
        cfg = json.loads((folders[i] / "cfg.json").read_text())
        if not cfg.get("transcode", True):
            raise TranscoderError(f"{folders[i]} is a sparse autoencoder, not a transcoder (cfg.json transcode: false)")
        t = load_file(str(folders[i] / "sae.safetensors"))
        b_dec = t["b_dec"].float()
        layers.append(Transcoder(t["encoder.weight"].float(), t["encoder.bias"].float(), t["W_dec"].float(), b_dec,
                                 None, _maybe(t, "W_skip"), int(cfg["k"])))
    return TranscoderSet(layers, scan=f"sparsify/{path.name}")


def random_transcoders(
    n_layers: int,
    d_model: int,
    n_features: int,
    activation: str = "relu",
    skip: bool = False,
    seed: int = 0,
    enc_bias: float = 0.0,
    cross_layer: bool = False,
) -> TranscoderSet:
    """Seeded random transcoders (tests, oracle comparisons): ``activation`` ``"relu"`` or ``"jumprelu"``;
    ``cross_layer``: each layer's features write to every later layer (circuit-tracer's CLT shape)."""
    if cross_layer and skip:
        raise TranscoderError("circuit-tracer's CLT files have no skip connection: random CLTs are made without one")
    if activation not in ("relu", "jumprelu"):
        raise TranscoderError(f"activation must be 'relu' or 'jumprelu', not {activation!r}")
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(n_layers):
        W_enc = torch.randn(n_features, d_model, generator=g) / d_model**0.5
        layers.append(Transcoder(
            W_enc,
            torch.randn(n_features, generator=g) * 0.1 + enc_bias,
            torch.randn(n_features, n_layers - i, d_model, generator=g) / n_features**0.5 if cross_layer
            else torch.randn(n_features, d_model, generator=g) / n_features**0.5,
            torch.randn(d_model, generator=g) * 0.01,
            torch.rand(n_features, generator=g) * 0.5 if activation == "jumprelu" else None,
            torch.randn(d_model, d_model, generator=g) / d_model if skip else None,
        ))
    kind = "clt-" if cross_layer else ""
    return TranscoderSet(layers, scan=f"random-{kind}{activation}{'-skip' if skip else ''}-seed{seed}")


# ----- circuit-tracer's cross-layer transcoder (CLT) layout: W_enc_{i} / W_dec_{i}.safetensors per layer

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
