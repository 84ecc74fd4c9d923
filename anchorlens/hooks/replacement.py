"""Hook plumbing for attribution graphs: the local replacement model's forward pass on a TransformerBridge.

One forward on ``batch`` copies of the prompt in which the model is linear in its residual stream:
attention patterns (``hook_pattern``) and normalisation scales (``hook_scale`` of ln1, ln2, ln_final) are
detached, and each MLP output becomes ``skip(x) + (mlp_out - skip(x)).detach()`` (gradients pass only through
a transcoder's linear skip connection). It records the tensors that gradients are injected into (each layer's
transcoder input, ``mlp.hook_in`` or ``hook_resid_mid``; the final norm's output) and read from (the embedding
output, each layer's MLP output).
circuit-tracer detaches the same quantities (softmax output, RMSNorm mean, MLP output).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor

from anchorlens.hooks.dictionary import FeatureDictionary
from anchorlens.hooks.known_mlp import known_mlp_outputs


@dataclass
class ReplacementForward:
    """What one frozen forward recorded. Lists are indexed by layer; tensors are [batch, position, d_model]."""

    embed: Tensor | None = None  # gradient read here: token nodes
    mlp_in: list[Tensor] = field(default_factory=list)  # the transcoders' input; gradient injected here: features
    mlp_out: list[Tensor] = field(default_factory=list)  # gradient read here: feature and error nodes
    mlp_out_value: list[Tensor] = field(default_factory=list)  # the real MLP outputs (batch element 0)
    final: Tensor | None = None  # final norm output: logit targets injected here
    logits: Tensor | None = None


class _StopAtFinalNorm(Exception):
    """Raised by the final norm's hook when the logits are not wanted (they would be [batch, position, vocab])."""


@contextmanager
def frozen_parameters(model):
    """Parameters without ``requires_grad`` for the duration: autograd then saves no layer's input for a weight
    gradient nobody asks for (every norm and linear input of every copy: 4.5 GB of SmolLM2's 16 GB peak at 256
    tokens x 64 copies)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def replacement_forward(model, transcoders: FeatureDictionary, tokens: Tensor, batch: int,
                        logits: bool = True, mlp_outputs: list[Tensor] | None = None) -> ReplacementForward:
    """Run the frozen forward on ``batch`` copies of ``tokens`` ([position]) with autograd on; with
    ``logits=False`` it stops at the final norm's output (the unembedding of every copy and position is the
    largest tensor of the pass: 64 x 256 x 49k floats, 3 GB, for SmolLM2). ``mlp_outputs`` (each layer's MLP
    output [position, d_model], from a forward of the same tokens) are used instead of computing the MLPs again."""
    n_layers = model.cfg.n_layers
    record = ReplacementForward(mlp_in=[None] * n_layers, mlp_out=[None] * n_layers,
                                mlp_out_value=[None] * n_layers)

    def embed_hook(e, hook):
        e = e.detach().requires_grad_(True)
        record.embed = e
        return e

    def detach_hook(t, hook):
        return t.detach()

    def mlp_in_hook(x, hook, layer):
        record.mlp_in[layer] = x
        return x

    def mlp_out_hook(out, hook, layer):
        record.mlp_out_value[layer] = out[0].detach().clone()
        x = record.mlp_in[layer]
        skip = transcoders.skip_layer(layer, x) if transcoders.skip_connection else 0 * x.sum()
        frozen = skip + (out - skip).detach()
        record.mlp_out[layer] = frozen
        return frozen

    def final_hook(x, hook):
        record.final = x
        if not logits:
            raise _StopAtFinalNorm
        return x

    read, write = transcoders.input_site, transcoders.output_site  # where the transcoders read and write
    hooks = [("embed.hook_out", embed_hook), ("ln_final.hook_scale", detach_hook), ("ln_final.hook_out", final_hook)]
    for layer in range(n_layers):
        hooks += [
            (f"blocks.{layer}.attn.hook_pattern", detach_hook),
            (f"blocks.{layer}.ln1.hook_scale", detach_hook),
            (f"blocks.{layer}.ln2.hook_scale", detach_hook),
            (f"blocks.{layer}.{read}", lambda x, hook, layer=layer: mlp_in_hook(x, hook, layer)),
            (f"blocks.{layer}.{write}", lambda o, hook, layer=layer: mlp_out_hook(o, hook, layer)),
        ]
    with torch.enable_grad(), warnings.catch_warnings(), frozen_parameters(model):
        # The bridge warns that an edited hook_scale makes it rebuild the norm from hooked values: that is the point.
        warnings.simplefilter("ignore")
        known = known_mlp_outputs(model, mlp_outputs) if mlp_outputs is not None else nullcontext()
        with model.hooks(fwd_hooks=hooks), known:
            try:
                record.logits = model(tokens.unsqueeze(0).expand(batch, -1)).detach()
            except _StopAtFinalNorm:
                pass
    missing = [name for name, value in (("embed.hook_out", record.embed), ("ln_final.hook_out", record.final))
               if value is None] + [f"blocks.{i}.{read}" for i, x in enumerate(record.mlp_in) if x is None]
    if missing:
        raise RuntimeError(f"hooks {missing} did not fire on {type(model).__name__}: attribution needs them")
    return record


def bytes_per_copy(model, transcoders: FeatureDictionary, tokens: Tensor,
                   mlp_outputs: list[Tensor] | None = None) -> int:
    """Bytes that one copy of ``replacement_forward`` keeps alive for the backward passes, measured on a one-copy
    forward: what autograd saves (each storage once; the model's and the transcoders' weights, shared by all
    copies, left out) plus the recorded sites. At long prompts this is mostly every layer's attention pattern
    (n_heads x T^2 floats per layer), which is why the batch has to shrink with the prompt."""
    shared = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    for part in [transcoders, *(transcoders if hasattr(transcoders, "__iter__") else [])]:
        shared |= {t.untyped_storage().data_ptr() for t in vars(part).values() if isinstance(t, Tensor)}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in shared:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        record = replacement_forward(model, transcoders, tokens, batch=1, logits=False, mlp_outputs=mlp_outputs)
    for t in [record.embed, record.final, *record.mlp_in, *record.mlp_out]:
        pack(t)
    return sum(seen.values())
