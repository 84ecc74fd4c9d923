"""Causal mediation analysis (Stolfo, Belinkov, Sachan 2023; docs/methods.md section 2).

Patch a component's activation from a counterfactual prompt into a base prompt, one cell (layer,
position[, head / dim / hidden unit]) at a time, and measure the indirect effect on the answer:

    pairs = filter_pairs(model, arithmetic_pairs(seed=0)).kept
    result = mediation_sweep(model, [p.base for p in pairs], [p.counterfactual for p in pairs],
                             [p.base_answer for p in pairs], [p.counterfactual_answer for p in pairs],
                             component="mlp_out", positions="all")
    result.effects, result.plot(), result.to_dataframe()

Modules: ``prompts`` (tasks and pairs), ``pairs`` (tokenizing, filtering), ``sweep`` (the batched method),
``reference`` (one forward per cell), ``metrics`` (pure math), ``result``, ``overlap`` (top-k neurons
shared by two tasks), ``organism`` (a small model trained to do the templates' arithmetic), ``plots``;
the patching hooks are ``anchorlens.hooks.cell_patch``.
"""

from typing import TYPE_CHECKING

from anchorlens.lazy import lazy_exports

if TYPE_CHECKING:
    from anchorlens.hooks.cell_patch import COMPONENTS
    from anchorlens.mediation.errors import (
        MediationInputError,
        MultiTokenAnswerError,
        PositionError,
        UnequalLengthError,
        UnknownComponentError,
    )
    from anchorlens.mediation.metrics import METRICS
    from anchorlens.mediation.pairs import FilterReport, encode_pairs, filter_pairs, group_by_length
    from anchorlens.mediation.prompts import (
        OPERATORS,
        PAIR_TYPES,
        TEMPLATES,
        PromptPair,
        arithmetic_pairs,
        factual_facts,
        factual_pairs,
        retrieval_pairs,
        task_pairs,
    )
    from anchorlens.mediation.naive import naive_sweep
    from anchorlens.mediation.result import MediationResult
    from anchorlens.mediation.sweep import mediation_sweep


_EXPORTS = {
    "COMPONENTS": "anchorlens.hooks.cell_patch",
    "MediationInputError": "anchorlens.mediation.errors",
    "MultiTokenAnswerError": "anchorlens.mediation.errors",
    "PositionError": "anchorlens.mediation.errors",
    "UnequalLengthError": "anchorlens.mediation.errors",
    "UnknownComponentError": "anchorlens.mediation.errors",
    "METRICS": "anchorlens.mediation.metrics",
    "FilterReport": "anchorlens.mediation.pairs",
    "encode_pairs": "anchorlens.mediation.pairs",
    "filter_pairs": "anchorlens.mediation.pairs",
    "group_by_length": "anchorlens.mediation.pairs",
    "OPERATORS": "anchorlens.mediation.prompts",
    "PAIR_TYPES": "anchorlens.mediation.prompts",
    "TEMPLATES": "anchorlens.mediation.prompts",
    "PromptPair": "anchorlens.mediation.prompts",
    "arithmetic_pairs": "anchorlens.mediation.prompts",
    "factual_facts": "anchorlens.mediation.prompts",
    "factual_pairs": "anchorlens.mediation.prompts",
    "retrieval_pairs": "anchorlens.mediation.prompts",
    "task_pairs": "anchorlens.mediation.prompts",
    "naive_sweep": "anchorlens.mediation.naive",
    "MediationResult": "anchorlens.mediation.result",
    "mediation_sweep": "anchorlens.mediation.sweep",
}

__all__ = [
    "COMPONENTS", "METRICS", "OPERATORS", "PAIR_TYPES", "TEMPLATES",
    "PromptPair", "arithmetic_pairs", "retrieval_pairs", "factual_pairs", "factual_facts", "task_pairs",
    "FilterReport", "filter_pairs", "encode_pairs", "group_by_length",
    "mediation_sweep", "naive_sweep", "MediationResult",
    "MediationInputError", "MultiTokenAnswerError", "PositionError", "UnequalLengthError", "UnknownComponentError",
]

lazy_exports(__name__, _EXPORTS)
