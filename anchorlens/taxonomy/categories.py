"""The eight sentence categories of Thought Anchors (docs/methods.md 1.4), with the definitions used in prompts."""

from __future__ import annotations

# Order as in docs/methods.md 1.4; the classifier's output columns follow it.
CATEGORY_DEFINITIONS: dict[str, str] = {
    "problem_setup": "parsing or rephrasing the problem",
    "plan_generation": "stating or deciding on a plan of action, meta-reasoning",
    "fact_retrieval": "recalling facts, formulas or problem details without computation",
    "active_computation": "algebra, calculations, or other manipulations toward the answer",
    "uncertainty_management": "expressing confusion, re-evaluating, proposing alternatives, or backtracking",
    "result_consolidation": "aggregating intermediate results, summarising, or preparing the answer",
    "self_checking": "verifying previous steps, checking calculations, re-confirmations",
    "final_answer_emission": "explicitly stating the final answer",
}

SENTENCE_CATEGORIES: tuple[str, ...] = tuple(CATEGORY_DEFINITIONS)
