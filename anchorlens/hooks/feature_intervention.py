"""Hook plumbing for feature interventions (circuit-tracer's ``feature_intervention``) on a TransformerBridge.

A clean pass records what may be frozen: attention patterns, normalisation scales, the transcoders' inputs, MLP
outputs and feature activations. The intervened pass then, layer by layer, encodes the transcoder input into
feature activations (position 0 zeroed, as in attribution) and adds ``(value - activation) * W_dec[feature]`` to the
MLP output at the chosen positions (a cross-layer feature: to its own layer's and every later layer's MLP output,
each through its decoder there, as circuit-tracer distributes a CLT's deltas); frozen quantities are replaced by
their clean values.

``InterventionHooks`` builds those hooks for a forward that starts at a given absolute position, so that
``anchorlens.generation.greedy_generate`` decodes under them on a KV cache (the prompt once, then one forward per
new token) with the values of one forward over the whole sequence (``intervened_pass``, the definition).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

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
    """(logits [position, vocab], feature activations [layer, position, feature]) of one forward over ``tokens``
    under ``InterventionHooks`` (the definition that KV-cached decoding under interventions reproduces)."""
    hooks = InterventionHooks(model, transcoders, interventions, clean, constrained_layers,
                              len(tokens) if n_prompt is None else n_prompt, open_ended)
    with quiet_norm_edits(), model.hooks(fwd_hooks=hooks(0)):
        logits = model(tokens.unsqueeze(0))[0]
    return logits.detach(), hooks.activations()


@contextmanager
def quiet_norm_edits() -> Iterator[None]:
    """Silence the bridge's warning that an edited ``hook_scale`` rebuilds the norm from the hooked values (the
    frozen norms edit it on purpose); other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
        yield


class InterventionHooks:
    """The hooks of a pass under feature interventions, by absolute position: ``hooks(start)`` is the list of
    ``(hook name, function)`` for one forward whose first token sits at position ``start`` (``model.hooks``).

    ``interventions``: (layer, positions, feature, value), positions a LongTensor of prompt positions. The first
    ``n_prompt`` positions are the prompt, computed as circuit-tracer's first step: with ``clean`` (``clean_pass``
    on the prompt) their attention patterns are frozen, with ``constrained_layers`` also those layers' MLP outputs
    (and all norms when it holds every layer). Later positions (generated tokens) run freely, with the
    ``open_ended`` interventions (layer, feature, value) on each of them, against their own activations.

    Every edit at a position depends only on that position and the ones before it (the clean values are the
    prompt's, fixed before decoding), so a forward over the prompt (``start=0``) followed by forwards over the new
    tokens on its KV cache gives what one forward over the whole sequence gives: the prompt's keys and values are
    cached as intervened, and each new token gets its own interventions. A forward must either start at 0 and hold
    the whole prompt, or start after the prompt. ``activations()``: every forward's feature activations, in order
    (a layer's read before its own interventions).
    """

    def __init__(self, model, transcoders: FeatureDictionary, interventions, clean: dict | None,
                 constrained_layers: set[int] | None, n_prompt: int, open_ended=()):
        self.n_layers = model.cfg.n_layers
        self.transcoders, self.clean, self.n_prompt = transcoders, clean, n_prompt
        self.constrained_layers = constrained_layers
        self.by_layer, self.new_by_layer = defaultdict(list), defaultdict(list)
        for layer, positions, feature, value in interventions:
            self.by_layer[layer].append((positions, feature, value))
        for layer, feature, value in open_ended:
            self.new_by_layer[layer].append((feature, value))
        self.recorded: list[list[Tensor]] = [[] for _ in range(self.n_layers)]  # per layer, per forward

    def activations(self) -> Tensor:
        """Feature activations [layer, position, feature] of every position run so far."""
        return torch.stack([torch.cat(acts) for acts in self.recorded])

    def __call__(self, start: int) -> list[tuple]:
        if 0 < start < self.n_prompt:
            raise ValueError(f"a forward under interventions starts at 0 or after the prompt's {self.n_prompt} "
                             f"positions, not at {start}")
        n_prompt = self.n_prompt if start == 0 else 0  # the prompt's positions in this forward
        transcoders, clean, n_layers = self.transcoders, self.clean, self.n_layers
        read, write = transcoders.input_site, transcoders.output_site
        constrained_layers = self.constrained_layers
        constrained = constrained_layers is not None
        acts = [None] * n_layers
        deltas = [None] * n_layers  # per source layer: [position, feature] change its interventions make
        inputs = {}

        def read_hook(x, hook, layer):
            inputs[layer] = x
            a = transcoders.encode_layer(layer, x[0])
            if start == 0:
                a[0] = 0  # position 0 (the special token) has no features, as in attribution
            acts[layer] = a
            self.recorded[layer].append(a.detach())
            return x

        def write_hook(out, hook, layer):
            delta = torch.zeros_like(acts[layer])
            if n_prompt:
                base = clean["acts"][layer] if constrained else acts[layer][:n_prompt]  # constrained: clean values
                for positions, feature, value in self.by_layer[layer]:
                    delta[positions, feature] = value - base[positions, feature]
            for feature, value in self.new_by_layer[layer]:  # generated tokens: always on their own activations
                delta[n_prompt:, feature] = value - acts[layer][n_prompt:, feature]
            deltas[layer] = delta
            change = transcoders.decode_features(layer, deltas)  # this layer's and earlier (cross-layer) features
            if constrained and n_prompt and layer not in constrained_layers:
                change[:n_prompt] = 0  # circuit-tracer adds nothing to the prompt outside them (new tokens run free)
            elif constrained and n_prompt:  # the prompt's clean MLP output, plus the skip connection's change
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
        if clean is not None and n_prompt:  # circuit-tracer freezes attention whenever it freezes anything
            hooks += [(f"blocks.{i}.attn.hook_pattern", lambda t, hook, i=i: frozen_pattern(t, hook, i))
                      for i in range(n_layers)]
            if constrained and set(range(n_layers)) <= constrained_layers:
                hooks += [(name, frozen_scale) for name in _norm_hooks(n_layers)]
        for layer in range(n_layers):
            hooks += [(f"blocks.{layer}.{read}", lambda x, hook, layer=layer: read_hook(x, hook, layer)),
                      (f"blocks.{layer}.{write}", lambda o, hook, layer=layer: write_hook(o, hook, layer))]
        return hooks
