"""Activation patching of many cells in one forward: each batch row patches its own (layer, position, unit).

A *component* names a hook point and what one cell of it is (docs/methods.md section 2):

- ``resid_pre``, ``attn_out``, ``mlp_out``: the whole vector at (layer, position).
- ``head_out``: one query head's output before ``W_O`` (``attn.hook_z``, ``[batch, pos, head, d_head]``;
  grouped-query models repeat key/value heads to query heads before this point, so every query head is a cell).
- ``head_pattern``: one head's attention weights of one query position (``attn.hook_pattern``,
  ``[batch, head, query, key]``), the reference code's head intervention.
- ``mlp_out_dim``: one of the ``d_model`` dimensions of the MLP output (the reference code's "neuron").
- ``mlp_post``: one MLP hidden unit (``mlp.hook_post``, ``d_mlp`` units).

Rows of a batch are cells: row ``i`` gets the counterfactual value ``source[i]`` at its own position and unit;
only layers that some row patches get a hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor


@dataclass(frozen=True)
class Component:
    """A patchable component: its hook name pattern and what indexes one cell beyond (layer, position)."""

    name: str
    hook: str            # with {layer}
    unit: str | None     # "head", "dim", "neuron" or None (the whole vector)
    doc: str

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    def n_units(self, cfg) -> int | None:
        return {"head": cfg.n_heads, "dim": cfg.d_model, "neuron": cfg.d_mlp, None: None}[self.unit]


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("resid_pre", "blocks.{layer}.hook_resid_pre", None, "residual stream before the block"),
        Component("attn_out", "blocks.{layer}.hook_attn_out", None, "attention output of the block"),
        Component("mlp_out", "blocks.{layer}.hook_mlp_out", None, "MLP output of the block"),
        Component("head_out", "blocks.{layer}.attn.hook_z", "head", "one head's output before W_O (hook_z)"),
        Component("head_pattern", "blocks.{layer}.attn.hook_pattern", "head",
                  "one head's attention weights at the query position (hook_pattern)"),
        Component("mlp_out_dim", "blocks.{layer}.hook_mlp_out", "dim",
                  "one d_model dimension of the MLP output (the reference code's neuron)"),
        Component("mlp_post", "blocks.{layer}.mlp.hook_post", "neuron", "one MLP hidden unit (hook_post)"),
    )
}


def source_values(component: Component, activation: Tensor, pairs: Tensor, position: int,
                  units: Tensor | None) -> Tensor:
    """The counterfactual values of the cells: ``activation`` is the counterfactual run's whole hook tensor
    (``[pair, pos, ...]``, or ``[pair, head, query, key]`` for patterns); one row per cell."""
    if component.name == "head_pattern":
        return activation[pairs, units, position]              # [row, key]
    if component.unit is None:
        return activation[pairs, position]                     # [row, d_model]
    return activation[pairs, position, units]                  # [row, d_head] or [row]


def _patch(activation: Tensor, hook, component: Component, rows: Tensor, position: int, units: Tensor | None,
           source: Tensor) -> Tensor:
    activation = activation.clone()  # leave the model's tensor as it was; return the edited copy
    source = source.to(device=activation.device, dtype=activation.dtype)
    if component.name == "head_pattern":
        activation[rows, units, position] = source
    elif component.unit is None:
        activation[rows, position] = source
    else:
        activation[rows, position, units] = source
    return activation


def cell_patch_hooks(component: Component, layers: Tensor, position: int, units: Tensor | None,
                     sources: dict[int, Tensor]) -> list[tuple[str, object]]:
    """Hooks patching row ``i`` at layer ``layers[i]``, ``position`` (in this forward's own positions) and unit
    ``units[i]`` with ``sources[layer][rank of i among that layer's rows]``."""
    hooks = []
    for layer in sorted(set(layers.tolist())):
        rows = (layers == layer).nonzero().flatten()
        hooks.append((
            component.hook_name(layer),
            partial(_patch, component=component, rows=rows, position=position,
                    units=None if units is None else units[rows], source=sources[layer]),
        ))
    return hooks
