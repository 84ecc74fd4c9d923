"""Hook plumbing for feature interventions (circuit-tracer's ``feature_intervention``) on a TransformerBridge.

A clean pass records what may be frozen: attention patterns, normalisation scales, the transcoders' inputs, MLP
outputs and feature activations. The intervened pass then, layer by layer, encodes the transcoder input into
feature activations (position 0 zeroed, as in attribution) and adds ``(value - activation) * W_dec[feature]`` to the
MLP output at the chosen positions (a cross-layer feature: to its own layer's and every later layer's MLP output,
each through its decoder there, as circuit-tracer distributes a CLT's deltas); frozen quantities are replaced by
their clean values.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import torch
from torch import Tensor

from anchorlens.hooks.dictionary import FeatureDictionary


def _norm_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{i}.{ln}.hook_scale" for i in range(n_layers) for ln in ("ln1", "ln2")] + ["ln_final.hook_scale"]


@torch.no_grad()
def clean_pass(model, transcoders: FeatureDictionary, tokens: Tensor, patterns: bool = True, scales: bool = True,
               mlps: bool = True) -> dict:
    """Record the clean logits and feature activations (``acts``), and what may be frozen: attention ``pattern``,
    norm ``scale``, transcoder ``input`` and MLP ``output`` (by layer or hook; only those asked for: the patterns
    are layers x heads x positions^2 floats)."""
    n_layers = model.cfg.n_layers
    read, write = transcoders.input_site, transcoders.output_site
    clean = {"pattern": {}, "scale": {}, "input": {}, "output": {}, "acts": [None] * n_layers}

    def keep(kind, key):
        def hook(t, hook):
            clean[kind][key] = t.detach().clone()
            return t
        return hook

    def read_hook(x, hook, layer):
        if mlps:
            clean["input"][layer] = x.detach().clone()
        acts = transcoders.encode_layer(layer, x[0].detach())
        acts[0] = 0  # position 0 (the special token) has no features, as in attribution
        clean["acts"][layer] = acts
        return x

    hooks = [(name, keep("scale", name)) for name in _norm_hooks(n_layers)] if scales else []
    for layer in range(n_layers):
        hooks += [(f"blocks.{layer}.attn.hook_pattern", keep("pattern", layer))] if patterns else []
        hooks += [(f"blocks.{layer}.{read}", lambda x, hook, layer=layer: read_hook(x, hook, layer))]
        hooks += [(f"blocks.{layer}.{write}", keep("output", layer))] if mlps else []
    with model.hooks(fwd_hooks=hooks):
        clean["logits"] = model(tokens.unsqueeze(0))[0].detach()
    return clean


@torch.no_grad()
def intervened_pass(model, transcoders: FeatureDictionary, tokens: Tensor, interventions, clean: dict | None,
                    constrained_layers: set[int] | None, n_prompt: int | None = None,
                    open_ended=()) -> tuple[Tensor, Tensor]:
    """(logits [position, vocab], feature activations [layer, position, feature]) under ``interventions``
    ((layer, positions, feature, value), positions a LongTensor of prompt positions).

    The first ``n_prompt`` positions (all by default) are the prompt, computed as circuit-tracer's first step:
    with ``clean`` (``clean_pass`` on the prompt) their attention patterns are frozen, with ``constrained_layers``
    also those layers' MLP outputs (and all norms when it holds every layer). Later positions (generated tokens)
    run freely, with the ``open_ended`` interventions (layer, feature, value) on each of them."""
    n_layers = model.cfg.n_layers
    n_prompt = len(tokens) if n_prompt is None else n_prompt
    read, write = transcoders.input_site, transcoders.output_site
    by_layer, new_by_layer = defaultdict(list), defaultdict(list)
    for layer, positions, feature, value in interventions:
        by_layer[layer].append((positions, feature, value))
    for layer, feature, value in open_ended:
        new_by_layer[layer].append((feature, value))
    constrained = constrained_layers is not None
    acts = [None] * n_layers
    deltas = [None] * n_layers  # per source layer: [position, feature] change its interventions make
    inputs = {}

    def read_hook(x, hook, layer):
        inputs[layer] = x
        a = transcoders.encode_layer(layer, x[0])
        a[0] = 0
        acts[layer] = a
        return x

    def write_hook(out, hook, layer):
        delta = torch.zeros_like(acts[layer])
        base = clean["acts"][layer] if constrained else acts[layer][:n_prompt]  # constrained: clean values
        for positions, feature, value in by_layer[layer]:
            delta[positions, feature] = value - base[positions, feature]
        for feature, value in new_by_layer[layer]:  # generated tokens: always on their own activations
            delta[n_prompt:, feature] = value - acts[layer][n_prompt:, feature]
        deltas[layer] = delta
        change = transcoders.decode_features(layer, deltas)  # this layer's and earlier (cross-layer) features
        if constrained and layer not in constrained_layers:
            change[:n_prompt] = 0  # circuit-tracer adds nothing to the prompt outside them (generated tokens run free)
        elif constrained:  # the prompt's clean MLP output, plus the skip connection's change from the clean input
            out = out.clone()
            out[:, :n_prompt] = clean["output"][layer]
            if transcoders.skip_connection:
                out[:, :n_prompt] += (transcoders.skip_layer(layer, inputs[layer][:, :n_prompt])
                                      - transcoders.skip_layer(layer, clean["input"][layer]))
        if not change.any():
            return out
        out = out.clone()
        out[0] = out[0] + change.to(out)
        return out

    def frozen_pattern(pattern, hook, layer):  # [batch, head, query, key]: the prompt's rows
        pattern = pattern.clone()
        pattern[..., :n_prompt, :n_prompt] = clean["pattern"][layer]
        return pattern

    def frozen_scale(scale, hook):  # [batch, position, 1]: the prompt's positions
        scale = scale.clone()
        scale[:, :n_prompt] = clean["scale"][hook.name]
        return scale

    hooks = []
    if clean is not None:  # circuit-tracer freezes attention whenever it freezes anything
        hooks += [(f"blocks.{i}.attn.hook_pattern", lambda t, hook, i=i: frozen_pattern(t, hook, i))
                  for i in range(n_layers)]
        if constrained and set(range(n_layers)) <= constrained_layers:
            hooks += [(name, frozen_scale) for name in _norm_hooks(n_layers)]
    for layer in range(n_layers):
        hooks += [(f"blocks.{layer}.{read}", lambda x, hook, layer=layer: read_hook(x, hook, layer)),
                  (f"blocks.{layer}.{write}", lambda o, hook, layer=layer: write_hook(o, hook, layer))]
    with warnings.catch_warnings(), model.hooks(fwd_hooks=hooks):
        warnings.simplefilter("ignore")  # the bridge warns that an edited hook_scale rebuilds the norm: intended
        logits = model(tokens.unsqueeze(0))[0]
    return logits.detach(), torch.stack(acts)
