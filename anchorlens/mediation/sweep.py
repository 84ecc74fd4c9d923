"""Batched causal mediation sweeps: many (pair, cell) interventions per forward pass.

What a cell at (layer ``l``, position ``t``) cannot change is reused instead of recomputed:

- positions before ``t`` (causal attention): every row patched at ``t`` starts from the base run's keys and
  values of positions ``< t`` (a Hugging Face ``DynamicCache``, as the suppression method does) and runs
  only positions ``t..end``;
- layers before ``l``: the row enters at block ``l`` with the base run's residual stream
  (``start_at_layer``), and blocks before it are skipped (``anchorlens.hooks.skip_blocks``);
- the unembedding of positions other than the last (``logits_to_keep=1``): the metrics read only the last.

Every forward runs fused SDPA attention (``anchorlens.hooks.fused_attention``) unless a pattern is read:
the components patch ``hook_z``, ``hook_attn_out``, ``hook_mlp_out``, residuals or MLP units, never the
pattern, except ``head_pattern``, which runs eager.

Rows of a forward are (pair, layer, unit) combinations at one position and a few neighbouring layers (the
forward starts at the lowest), at most ``chunk_size`` of them, which bounds memory.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from transformer_lens.utilities import get_act_name

from anchorlens import settings
from anchorlens.hooks.architecture import mediation_refusal, refuse
from anchorlens.hooks.cell_patch import COMPONENTS, Component, cell_patch_hooks, source_values
from anchorlens.hooks.fused_attention import ATTENTION_CHOICES, fused_attention
from anchorlens.mediation.errors import MediationInputError, PositionError, UnknownComponentError
from anchorlens.mediation.metrics import METRICS, answer_quantities
from anchorlens.mediation.pairs import EncodedPairs, encode_pairs
from anchorlens.mediation.result import MediationResult
from anchorlens.progress import progress_bar


def get_component(name: str) -> Component:
    """The component called ``name``, or an error listing the valid ones."""
    if name not in COMPONENTS:
        valid = ", ".join(f"{c.name} ({c.doc})" for c in COMPONENTS.values())
        raise UnknownComponentError(f"unknown component {name!r}; choose one of: {valid}")
    return COMPONENTS[name]


def _check_indices(name: str, values, n: int, what: str) -> list[int]:
    if values is None:
        return list(range(n))
    values = [values] if isinstance(values, int) else list(values)
    bad = [v for v in values if not -n <= v < n]
    if bad:
        raise MediationInputError(f"{name} {bad} out of range: this model has {n} {what} (0..{n - 1})")
    return sorted({v % n for v in values})


def resolve_positions(positions, n_tokens: list[int]) -> list:
    """``"last"``, ``"all"`` or a list of (possibly negative) token positions, checked against the prompts."""
    if positions == "last":
        return ["last"]
    if len(set(n_tokens)) != 1:
        raise MediationInputError(
            f"positions={positions!r} needs every prompt of one token length (got lengths {sorted(set(n_tokens))}): "
            "use positions='last', or sweep each group of anchorlens.mediation.group_by_length separately"
        )
    n = n_tokens[0]
    if positions == "all":
        return list(range(n))
    if isinstance(positions, str):
        raise PositionError(f"positions must be 'last', 'all' or a list of token positions, not {positions!r}")
    positions = [positions] if isinstance(positions, int) else list(positions)
    bad = [p for p in positions if not -n <= p < n]
    if bad:
        raise PositionError(f"positions {bad} out of range: the prompts have {n} tokens (positions 0..{n - 1}, "
                            f"or -{n}..-1 from the end)")
    return [p % n for p in positions]


@torch.no_grad()
def mediation_sweep(
    model,
    base: Sequence[str],
    counterfactual: Sequence[str],
    base_answer: Sequence[str],
    counterfactual_answer: Sequence[str],
    component: str = settings.MEDIATION_COMPONENT,
    positions=settings.MEDIATION_POSITIONS,
    metric: str = settings.MEDIATION_METRIC,
    layers: Sequence[int] | None = None,
    units: Sequence[int] | None = None,
    chunk_size: int = settings.MEDIATION_CHUNK_SIZE,
    reuse_prefix: bool = True,
    reuse_layers: bool = True,
    layer_span: int | None = None,
    progress: bool = True,
    attention: str = "auto",
) -> MediationResult:
    """Patch each cell's counterfactual activation into the base run and measure the effect on the answer.

    Args:
        model: a TransformerBridge.
        base, counterfactual: equally many prompt strings; each counterfactual has its base's token length.
        base_answer, counterfactual_answer: one-token answers (strings) of each prompt.
        component: one of ``anchorlens.mediation.COMPONENTS`` (``resid_pre``, ``attn_out``, ``mlp_out``,
            ``head_out``, ``head_pattern``, ``mlp_out_dim``, ``mlp_post``).
        positions: ``"last"`` (``n_positions = 1``; prompts may differ in length), ``"all"`` or a list of positions.
        metric: what ``.effects`` reports: ``stolfo_ie``, ``logit_diff``, ``logprob_base``,
            ``logprob_counterfactual`` (every metric stays available in the result).
        layers, units: subsets of layers and of heads / dims / hidden units (default: all).
        chunk_size: rows (cells x pairs) per forward pass; bounds memory.
        reuse_prefix: start each patched run from the base run's keys and values before the patched position.
        reuse_layers: start each patched run at the lowest patched layer of its forward, from the base run's
            residual stream, skipping the blocks before it.
        layer_span: how many neighbouring layers' cells share a forward (default: enough for 16 rows; more
            layers per forward means fewer, larger forwards but more recomputed blocks).
        attention: ``"auto"`` (fused SDPA attention where the model supports it, else eager with a
            warning; always eager for ``head_pattern``, which patches the pattern), ``"sdpa"`` (refuses an
            unsupported model and ``head_pattern``) or ``"eager"``. Equal to float rounding (tested against
            one eager forward per cell).

    Returns a ``MediationResult``; ``.effects`` is ``[n_layers, n_positions]`` (plus a unit dimension for
    ``head_out``, ``head_pattern``, ``mlp_out_dim``, ``mlp_post``), the mean over pairs.
    """
    comp = get_component(component)
    refuse(f"mediation of {component}", mediation_refusal(model, component))
    attention = resolve_sweep_attention(comp, attention)
    if metric not in METRICS:
        raise MediationInputError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if chunk_size < 1:
        raise MediationInputError(f"chunk_size must be at least 1, got {chunk_size}")
    cfg = model.cfg
    layers = _check_indices("layers", layers, cfg.n_layers, "layers")
    n_units = comp.n_units(cfg)
    if comp.unit is None and units is not None:
        raise MediationInputError(f"component {component!r} has no units; leave units=None")
    units = _check_indices("units", units, n_units, f"{comp.unit}s") if comp.unit else None
    groups = encode_pairs(model, base, counterfactual, base_answer, counterfactual_answer)
    n_tokens = [g.n_positions for g in groups for _ in g.indices]
    cell_positions = resolve_positions(positions, n_tokens)

    n_pairs = len(base)
    cell_shape = (len(layers), len(cell_positions)) + ((len(units),) if units else ())
    out = {
        "patched_logprobs": torch.zeros((n_pairs, *cell_shape, 2)),
        "patched_logit_diff": torch.zeros((n_pairs, *cell_shape)),
        "base_logprobs": torch.zeros((n_pairs, 2)),
        "cf_logprobs": torch.zeros((n_pairs, 2)),
        "base_logit_diff": torch.zeros(n_pairs),
        "cf_logit_diff": torch.zeros(n_pairs),
    }
    total = sum(g.n_pairs for g in groups) * len(cell_positions) * len(layers) * (len(units) if units else 1)
    bar = progress_bar(total=total, desc=f"mediation {component}", progress=progress, leave=False)
    with fused_attention(model, attention):
        for group in groups:
            _sweep_group(model, comp, group, layers, cell_positions, units, chunk_size, reuse_prefix,
                         reuse_layers, layer_span, out, bar)
    bar.close()
    return MediationResult(
        component=component, layers=layers, positions=cell_positions, units=units, unit=comp.unit, metric=metric,
        **out,
        pairs={"base": list(base), "counterfactual": list(counterfactual), "base_answer": list(base_answer),
               "counterfactual_answer": list(counterfactual_answer)},
        model_name=getattr(model, "anchorlens_name", None) or getattr(cfg, "model_name", None),
        method="batched",
    )


def resolve_sweep_attention(comp: Component, attention: str) -> str:
    """The attention a sweep of ``comp`` runs with: ``head_pattern`` needs the eager pattern."""
    if attention not in ATTENTION_CHOICES:
        raise MediationInputError(f"unknown attention {attention!r}: choose one of {ATTENTION_CHOICES}")
    if comp.hook.endswith("hook_pattern"):
        if attention == "sdpa":
            raise MediationInputError(
                f"component {comp.name!r} patches the attention pattern, which fused (SDPA) attention never "
                "computes: use attention='auto' or 'eager'")
        return "eager"
    return attention


def _chunks(n_layers: int, rows_per_layer: int, chunk_size: int, layer_span: int | None):
    """Slot ranges ``(first layer slot, last + 1, first row in that range, last row + 1)`` of each forward."""
    span = layer_span or max(1, -(-16 // rows_per_layer))
    for first in range(0, n_layers, span):
        stop = min(first + span, n_layers)
        total = (stop - first) * rows_per_layer
        for begin in range(0, total, chunk_size):
            yield first, stop, begin, min(begin + chunk_size, total)


def _sweep_group(model, comp: Component, group: EncodedPairs, layers, cell_positions, units, chunk_size,
                 reuse_prefix, reuse_layers, layer_span, out, bar) -> None:
    from anchorlens.hooks.skip_blocks import skipped_blocks
    from anchorlens.hooks.kv_cache import forward_with_cache, prefix, reusable
    from anchorlens.models import accepts_logits_to_keep

    n, length = group.n_pairs, group.n_positions
    index = torch.tensor(group.indices)
    hook_names = {comp.hook_name(layer) for layer in layers}
    cf_logits, cf_cache = model.run_with_cache(group.counterfactual_tokens,
                                               names_filter=lambda name: name in hook_names)
    resid_names = {get_act_name("resid_pre", layer) for layer in layers} if reuse_layers else set()
    base_logits, base_resid = model.run_with_cache(group.base_tokens, names_filter=lambda name: name in resid_names)
    if reuse_prefix:
        _, base_kv = forward_with_cache(model, group.base_tokens, keep="full")
        reuse_prefix = reusable(base_kv, length)
    for logits, key in ((base_logits, "base"), (cf_logits, "cf")):
        logprobs, diff = answer_quantities(logits[:, -1], group.base_answer, group.counterfactual_answer)
        out[f"{key}_logprobs"][index] = logprobs.cpu()
        out[f"{key}_logit_diff"][index] = diff.cpu()

    # the metrics read the last position only: skip the unembedding of the others where the model allows it
    last_logits_only = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    unit_list = units if units else [None]
    rows_per_layer = len(unit_list) * n
    # rows at one position, layer-major: (layer slot, unit slot, pair), pair fastest
    cells = torch.tensor(list(itertools.product(range(len(layers)), range(len(unit_list)), range(n))))
    for p_slot, position in enumerate(cell_positions):
        t = length - 1 if position == "last" else position
        start = t if reuse_prefix and t > 0 else 0
        for first, _, begin, stop in _chunks(len(layers), rows_per_layer, chunk_size, layer_span):
            chunk = cells[first * rows_per_layer + begin: first * rows_per_layer + stop]
            l_slots, u_slots, pairs = chunk[:, 0], chunk[:, 1], chunk[:, 2]
            row_layers = torch.tensor(layers)[l_slots]
            row_units = torch.tensor(units)[u_slots] if units else None
            sources = {}
            for layer in sorted(set(row_layers.tolist())):
                rows = (row_layers == layer).nonzero().flatten()
                sources[layer] = source_values(comp, cf_cache[comp.hook_name(layer)], pairs[rows], t,
                                               None if row_units is None else row_units[rows])
            hooks = cell_patch_hooks(comp, row_layers, t - start, row_units, sources)
            kwargs = {"past_key_values": prefix(base_kv, start, pairs)} if start > 0 else {}
            kwargs |= last_logits_only
            enter = int(row_layers.min()) if reuse_layers else 0
            if enter > 0:  # enter at block `enter` with the base residual stream; skip the blocks before it
                residual = base_resid[get_act_name("resid_pre", enter)][pairs, start:]
                with skipped_blocks(model, enter):
                    logits = model.run_with_hooks(residual, fwd_hooks=hooks, start_at_layer=enter, **kwargs)
            else:
                logits = model.run_with_hooks(group.base_tokens[pairs, start:], fwd_hooks=hooks, **kwargs)
            logprobs, diff = answer_quantities(logits[:, -1], group.base_answer[pairs],
                                               group.counterfactual_answer[pairs])
            target = (index[pairs], l_slots, p_slot) + ((u_slots,) if units else ())
            out["patched_logprobs"][target] = logprobs.cpu()
            out["patched_logit_diff"][target] = diff.cpu()
            bar.update(len(chunk))
