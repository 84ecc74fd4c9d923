"""The sentence categories and their colours, shared by the report's data, its page and its figures."""

from __future__ import annotations

#: The sentence taxonomy of Thought Anchors (docs/methods.md 1.4), in the paper's order.
CATEGORIES: tuple[str, ...] = (
    "problem_setup",
    "plan_generation",
    "fact_retrieval",
    "active_computation",
    "uncertainty_management",
    "result_consolidation",
    "self_checking",
    "final_answer_emission",
)

#: One colour per category (colour-blind-friendly Tableau 10 hues), shared by the page and the PNGs.
CATEGORY_COLORS: dict[str, str] = {
    "problem_setup": "#4e79a7",
    "plan_generation": "#f28e2b",
    "fact_retrieval": "#59a14f",
    "active_computation": "#76b7b2",
    "uncertainty_management": "#e15759",
    "result_consolidation": "#b07aa1",
    "self_checking": "#edc948",
    "final_answer_emission": "#ff9da7",
}
UNLABELLED_COLOR = "#c8c8c8"
