"""The plain method: one forward pass per (pair, cell), each a full base run with one activation replaced.

Slow on purpose, written independently of the batched sweep (no shared patching code, no key/value reuse):
the tests and the benchmark check ``mediation_sweep`` against it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from anchorlens.mediation.errors import MediationInputError
from anchorlens.mediation.pairs import encode_pairs
from anchorlens.mediation.result import MediationResult
from anchorlens.mediation.sweep import _check_indices, get_component, resolve_positions
from anchorlens.progress import progress_bar


def _replace_one(activation, hook, name: str, unit_kind, position: int, unit, value):
    activation = activation.clone()
    if name == "head_pattern":
        activation[0, unit, position, :] = value
    elif unit_kind is None:
        activation[0, position, :] = value
    else:
        activation[0, position, unit] = value
    return activation


def _log_softmax_answers(logits, r, r2):
    logprobs = logits.float().log_softmax(-1)
    return torch.stack([logprobs[r], logprobs[r2]]), (logits[r] - logits[r2]).float()


@torch.no_grad()
def naive_sweep(model, base: Sequence[str], counterfactual: Sequence[str], base_answer: Sequence[str],
                counterfactual_answer: Sequence[str], component: str = "mlp_out", positions="last",
                metric: str = "stolfo_ie", layers=None, units=None, progress: bool = True) -> MediationResult:
    """Same arguments and result as ``mediation_sweep``, one forward pass per pair and cell."""
    comp = get_component(component)
    cfg = model.cfg
    layers = _check_indices("layers", layers, cfg.n_layers, "layers")
    if comp.unit is None and units is not None:
        raise MediationInputError(f"component {component!r} has no units; leave units=None")
    units = _check_indices("units", units, comp.n_units(cfg), "units") if comp.unit else None
    groups = encode_pairs(model, base, counterfactual, base_answer, counterfactual_answer)
    cell_positions = resolve_positions(positions, [g.n_positions for g in groups for _ in g.indices])
    n = len(base)
    unit_list = units if units else [None]
    shape = (n, len(layers), len(cell_positions)) + ((len(units),) if units else ())
    patched_lp, patched_ld = torch.zeros(shape + (2,)), torch.zeros(shape)
    base_lp, cf_lp, base_ld, cf_ld = torch.zeros(n, 2), torch.zeros(n, 2), torch.zeros(n), torch.zeros(n)
    jobs = [(g, j) for g in groups for j in range(g.n_pairs)]
    for group, j in progress_bar(jobs, desc="mediation (naive)", progress=progress, leave=False):
        i = group.indices[j]
        tokens, cf_tokens = group.base_tokens[j:j + 1], group.counterfactual_tokens[j:j + 1]
        r, r2 = int(group.base_answer[j]), int(group.counterfactual_answer[j])
        cf_logits, cf_cache = model.run_with_cache(cf_tokens)
        base_lp[i], base_ld[i] = _log_softmax_answers(model(tokens)[0, -1], r, r2)
        cf_lp[i], cf_ld[i] = _log_softmax_answers(cf_logits[0, -1], r, r2)
        for (a, layer), (b, position), (c, unit) in [
            (x, y, z) for x in enumerate(layers) for y in enumerate(cell_positions) for z in enumerate(unit_list)
        ]:
            t = tokens.shape[1] - 1 if position == "last" else position
            name = comp.hook_name(layer)
            cf_act = cf_cache[name][0]
            if comp.name == "head_pattern":
                value = cf_act[unit, t, :]
            elif comp.unit is None:
                value = cf_act[t, :]
            else:
                value = cf_act[t, unit]

            def hook(activation, hook, value=value, t=t, unit=unit):
                return _replace_one(activation, hook, comp.name, comp.unit, t, unit, value)

            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])[0, -1]
            cell = (i, a, b) + ((c,) if units else ())
            patched_lp[cell], patched_ld[cell] = _log_softmax_answers(logits, r, r2)
    return MediationResult(
        component=component, layers=layers, positions=cell_positions, units=units, unit=comp.unit, metric=metric,
        patched_logprobs=patched_lp, patched_logit_diff=patched_ld, base_logprobs=base_lp, cf_logprobs=cf_lp,
        base_logit_diff=base_ld, cf_logit_diff=cf_ld,
        pairs={"base": list(base), "counterfactual": list(counterfactual), "base_answer": list(base_answer),
               "counterfactual_answer": list(counterfactual_answer)},
        model_name=getattr(model, "anchorlens_name", None), method="naive",
    )
