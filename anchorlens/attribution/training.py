"""Train per-layer or cross-layer ReLU transcoders on a local model: resumable, cached, in circuit-tracer's layout.

Activations are streamed: the texts are cut into windows of ``context`` tokens (a special token in front, as
attribution puts one), and each step runs the model on ``windows_per_step`` windows, records every layer's MLP
input (``mlp.hook_in``) and output (``hook_mlp_out``), and takes one optimiser step on every layer's transcoder.
Loss per layer: fraction of variance unexplained (FVU) + ``l1`` x mean over tokens of sum_f act_f ||W_dec,f||
(Anthropic 2025's sparsity penalty). Position 0 is left out (attribution zeroes it).

Cross-layer (``cross_layer=True``, circuit-tracer's CLT): layer ``s``'s features decode to the MLP outputs of layers
``s .. n_layers - 1``, each layer's output is predicted by the features of every layer up to it, and the sparsity
penalty weighs a feature by the norm of all its decoders together (Ameisen et al. 2025's CLT loss).

Why not EleutherAI sparsify: it installs beside our pins and runs on CPU, but it trains TopK transcoders
(circuit-tracer's files cannot say TopK, so its graphs would differ) and hooks Hugging Face modules rather than
the bridge; a ReLU trainer of ~100 lines keeps files, hooks and attribution the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import InputError
from anchorlens.attribution.transcoders import Transcoder, TranscoderSet
from anchorlens.progress import progress_bar

CORPUS = Path(__file__).resolve().parents[1] / "data" / "tracing_corpus.json"


TrainingInputError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def shipped_corpus() -> list[str]:
    """The small corpus shipped with anchorlens (chains of thought of the thought-anchors data, capital facts)."""
    return json.loads(CORPUS.read_text())["texts"]


def token_windows(tokenizer, texts: list[str], context: int, bos: int) -> Tensor:
    """[window, context] token ids: each text cut into windows of ``context - 1`` tokens, a special token first."""
    windows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        for start in range(0, len(ids) - context // 2, context - 1):
            chunk = ids[start : start + context - 1]
            if len(chunk) == context - 1:
                windows.append([bos] + chunk)
    if not windows:
        raise TrainingInputError(f"the texts give no window of {context} tokens: pass longer texts or a smaller context")
    return torch.tensor(windows)


class _Layer(torch.nn.Module):
    """Trainable parameters of one transcoder (circuit-tracer orientation)."""

    def __init__(self, d_model: int, n_features: int, skip: bool, generator: torch.Generator, reach: int | None = None):
        super().__init__()
        W_dec = torch.randn(n_features, d_model, generator=generator)
        W_dec = 0.1 * W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_enc = torch.nn.Parameter(W_dec.clone() * 10 / d_model**0.5)
        if reach is not None:  # cross-layer: [feature, reach, d_model], the own layer's rows as a per-layer one's
            later = torch.randn(n_features, reach - 1, d_model, generator=generator)
            W_dec = torch.cat([W_dec[:, None], 0.1 * later / later.norm(dim=-1, keepdim=True)], dim=1)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.b_enc = torch.nn.Parameter(torch.zeros(n_features))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_model))
        self.W_skip = torch.nn.Parameter(torch.zeros(d_model, d_model)) if skip else None

    def encode(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n feature"]:
        return torch.relu(x @ self.W_enc.T + self.b_enc)

    def decoder(self, offset: int) -> Tensor | None:
        """Decoder rows to the layer ``offset`` after this one, or None when it does not write there."""
        if self.W_dec.ndim == 2:
            return self.W_dec if offset == 0 else None
        return self.W_dec[:, offset] if offset < self.W_dec.shape[1] else None

    def decoder_norms(self) -> Float[Tensor, " feature"]:
        return self.W_dec.flatten(1).norm(dim=1)  # all decoders of a feature together

    def transcoder(self) -> Transcoder:
        skip = None if self.W_skip is None else self.W_skip.detach().clone()
        return Transcoder(self.W_enc.detach().clone(), self.b_enc.detach().clone(), self.W_dec.detach().clone(),
                          self.b_dec.detach().clone(), None, skip)


def _reconstruct(layers, inputs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """(each layer's predicted MLP output, each layer's activations): layer ``l``'s output sums the decoded
    features of every layer that writes there (only its own for per-layer transcoders)."""
    acts = [layer.encode(x) for layer, x in zip(layers, inputs)]
    outs = []
    for l, (layer, x) in enumerate(zip(layers, inputs)):
        out = layer.b_dec + (x @ layer.W_skip.T if layer.W_skip is not None else 0)
        for s in range(l + 1):
            decoder = layers[s].decoder(l - s)
            if decoder is not None:
                out = out + acts[s] @ decoder
        outs.append(out)
    return outs, acts


def fvu(y: Float[Tensor, "n d"], y_hat: Float[Tensor, "n d"]) -> Tensor:
    """Fraction of variance unexplained: sum |y - y_hat|^2 / sum |y - mean y|^2."""
    return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp(min=1e-12)


def _activations(model, windows: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Every layer's MLP input and output on ``windows``, position 0 dropped, flattened to [token, d_model]."""
    n_layers = model.cfg.n_layers
    names = {f"blocks.{i}.mlp.hook_in" for i in range(n_layers)} | {f"blocks.{i}.hook_mlp_out" for i in range(n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(windows, names_filter=lambda n: n in names)
    flat = lambda t: t[:, 1:].reshape(-1, t.shape[-1]).float()  # noqa: E731
    return ([flat(cache[f"blocks.{i}.mlp.hook_in"]) for i in range(n_layers)],
            [flat(cache[f"blocks.{i}.hook_mlp_out"]) for i in range(n_layers)])


def train_transcoders(
    model,
    texts: list[str] | None = None,
    n_features: int = 1024,
    steps: int = 200,
    windows_per_step: int = 8,
    context: int = 64,
    l1: float = 3e-4,
    lr: float = 1e-3,
    skip: bool = False,
    seed: int = 0,
    out: str | Path | None = None,
    cache: bool = True,
    progress: bool = True,
    checkpoint_every: int = 10,
    cross_layer: bool = False,
) -> TranscoderSet:
    """Train one ReLU transcoder per layer of ``model`` (MLP input -> MLP output) and save it; with
    ``cross_layer`` a cross-layer transcoder (each layer's features write to its own and every later MLP output).

    Args:
        texts: training texts; default: the corpus shipped with anchorlens (``shipped_corpus()``).
        n_features: features per layer. steps / windows_per_step / context: how much text (tokens seen =
            steps x windows_per_step x (context - 1)); windows repeat when the texts run out.
        l1: sparsity penalty; larger gives fewer active features (lower L0) and higher FVU.
        skip: also learn a linear skip connection ``W_skip`` (per-layer only: circuit-tracer's CLT files have none).
        cross_layer: train a CLT, saved in circuit-tracer's CLT layout (``W_enc_{i}`` / ``W_dec_{i}.safetensors``).
        out: folder to write (circuit-tracer's layout); default: a folder in anchorlens's cache keyed by the model,
            texts and settings. With ``cache``, a finished folder is loaded instead of trained again, and a run
            that was stopped resumes from its last checkpoint.

    The returned set's ``meta["layers"]`` holds each layer's held-out FVU and L0 (mean active features per token).
    """
    from anchorlens.models import cache_dir

    if n_features < 1 or steps < 1 or windows_per_step < 1 or context < 3:
        raise TrainingInputError("n_features, steps and windows_per_step must be positive and context at least 3")
    if cross_layer and skip:
        raise TrainingInputError("cross_layer=True with skip=True: circuit-tracer's CLT files cannot hold a skip "
                                 "connection; train the CLT without skip, or per-layer transcoders with it")
    texts = shipped_corpus() if texts is None else list(texts)
    if not texts or not any(t.strip() for t in texts):
        raise TrainingInputError("no training text: pass texts, or leave texts=None for the shipped corpus")
    settings = {"model": getattr(model, "anchorlens_name", type(model).__name__), "n_layers": model.cfg.n_layers,
                "d_model": model.cfg.d_model, "n_features": n_features, "steps": steps,
                "windows_per_step": windows_per_step, "context": context, "l1": l1, "lr": lr, "skip": skip,
                "seed": seed, "texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]}
    if cross_layer:  # only then, so per-layer runs keep their cache keys
        settings["cross_layer"] = True
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(out) if out is not None else cache_dir() / "transcoders" / f"{settings['model']}-{key}"
    if cache and (out / "config.yaml").exists() and (out / "anchorlens.json").exists():
        from anchorlens.attribution.transcoders import load_transcoders

        done = load_transcoders(out)
        if done.meta.get("settings") == settings:
            return done

    bos = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else model.tokenizer.eos_token_id
    windows = token_windows(model.tokenizer, texts, context, bos)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(windows), generator=generator)
    held_out = windows[order[: max(1, min(len(windows) // 10, windows_per_step))]]
    train = windows[order[len(held_out):]] if len(windows) > len(held_out) else windows
    n_layers = model.cfg.n_layers
    layers = torch.nn.ModuleList(_Layer(model.cfg.d_model, n_features, skip, generator,
                                        n_layers - i if cross_layer else None) for i in range(n_layers))
    optimizer = torch.optim.Adam(layers.parameters(), lr=lr)
    step, started = 0, time.time()
    checkpoint = out.with_name(out.name + ".checkpoint.pt")
    if cache and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["settings"] == settings:
            layers.load_state_dict(state["layers"])
            optimizer.load_state_dict(state["optimizer"])
            step = state["step"]

    if step == 0:  # decoder bias at the mean MLP output, so FVU starts near 1, not above
        _, first = _activations(model, train[: windows_per_step])
        with torch.no_grad():
            for layer, y in zip(layers, first):
                layer.b_dec.copy_(y.mean(0))
                # decoder rows at a tenth of the output's spread, whatever the layer's scale
                layer.W_dec.mul_((y - y.mean(0)).norm(dim=-1).mean() / layer.W_dec.norm(dim=-1).mean() / 10)
                # (a CLT's later decoders get this layer's scale: close enough for a start)
    bar = progress_bar(total=steps, initial=step, desc="training transcoders", progress=progress)
    while step < steps:
        pick = torch.arange(step * windows_per_step, (step + 1) * windows_per_step) % len(train)
        inputs, targets = _activations(model, train[pick])
        optimizer.zero_grad()
        loss = 0.0
        predicted, activations = _reconstruct(layers, inputs)
        for layer, acts, y, y_hat in zip(layers, activations, targets, predicted):
            sparsity = (acts * layer.decoder_norms()).sum(-1).mean()
            loss = loss + fvu(y, y_hat) + l1 * sparsity
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=loss.item() / len(layers))
        if cache and (step % checkpoint_every == 0 or step == steps):
            _atomic_save({"settings": settings, "layers": layers.state_dict(),
                          "optimizer": optimizer.state_dict(), "step": step}, checkpoint)
    bar.close()

    trained = TranscoderSet([layer.transcoder() for layer in layers])
    report = evaluate(model, trained, held_out)
    result = TranscoderSet(trained.layers, scan=f"anchorlens/{out.name}",
                           meta={"settings": settings, "layers": report, "seconds": time.time() - started,
                                 "tokens_seen": steps * windows_per_step * (context - 1)})
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    result.save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    checkpoint.unlink(missing_ok=True)
    return result


def evaluate(model, transcoders: TranscoderSet | list[Transcoder], windows: Tensor) -> list[dict]:
    """Per layer: FVU of the MLP output (for a CLT: from the features of every layer that writes there) and L0
    (mean number of active features per token) on ``windows``."""
    if not isinstance(transcoders, TranscoderSet):
        transcoders = TranscoderSet(list(transcoders))
    inputs, targets = _activations(model, windows)
    report = []
    with torch.no_grad():
        acts = [transcoders.encode_layer(i, x) for i, x in enumerate(inputs)]
        for i, (x, y) in enumerate(zip(inputs, targets)):
            report.append({"layer": i, "fvu": float(fvu(y, transcoders.decode_layer(i, acts, x))),
                           "l0": float((acts[i] > 0).float().sum(-1).mean())})
    return report


def _atomic_save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
