"""Which method runs how on which architecture, asked of the code itself (docs/architectures.md is its output).

``support_table()`` boots each family's small random model and asks every method's own check (the same
functions the methods call before their work: ``hooks.fused_attention.unsupported_reasons``,
``hooks.prefix_cache.reusable``, ``hooks.architecture``), so the table cannot drift from what the code does.
Each cell is ``fused`` (no ``[tokens, tokens]`` array beyond one block of queries), ``eager`` (a layer's
``T x T`` pattern at a time), ``fallback`` (runs, more slowly, with a warning) or ``refused`` (an
``UnsupportedArchitectureError``), followed by the reason.
"""

from __future__ import annotations

from typing import Callable

import torch

FAMILIES = ("llama", "qwen2", "mistral", "qwen3", "qwen3_moe", "olmo2", "olmo3", "gemma2", "gemma3",
            "gpt_oss", "phi3", "deepseek_v3")
METHODS = ("sentence attention", "suppression", "information flow", "sentence flow", "head ablation",
           "mediation", "attribution")
PROBE_TOKENS = 24  # longer than the sliding windows of the small random models


def _reasons(model) -> str:
    from anchorlens.hooks.fused_attention import unsupported_reasons

    seen: list[str] = []
    for reason in unsupported_reasons(model):
        reason = reason.split(": ", 1)[1] if reason.startswith("layer ") else reason
        if reason not in seen:
            seen.append(reason)
    return ", ".join(seen)


@torch.inference_mode()
def _prefix_reusable(model) -> bool:
    from anchorlens.hooks.prefix_cache import reusable

    tokens = torch.arange(1, PROBE_TOKENS + 1, device=model.cfg.device)[None]
    _, cache = model(tokens, return_type="logits_and_cache")
    return cache is not None and reusable(cache, PROBE_TOKENS)


def method_support(model) -> dict[str, str]:
    """One cell per method (``METHODS``) for ``model``: how the method runs on it, and why."""
    from anchorlens.hooks import architecture as arch
    from anchorlens.hooks.cell_patch import COMPONENTS

    why_eager = _reasons(model)
    attention = "fused" if not why_eager else f"eager: {why_eager}"
    suppression = attention if _prefix_reusable(model) else (
        f"fallback: one full forward per sentence (the KV cache cannot be cut to a prefix); {attention}")
    flow = arch.information_flow_refusal(model)
    if flow is None:
        flow = "eager, layer by layer"
        if arch.has_post_attention_norm(model):
            flow += " (norm after attention held at its clean scale)"
    else:
        flow = f"refused: {flow}"
    stream = arch.streamed_flow_refusal(model)
    if why_eager or stream:
        sentence_flow = f"fallback: token-level flow; {stream or why_eager}"
    else:
        sentence_flow = "fused, streamed"
    ablation = arch.head_ablation_refusal(model)
    refused = {name: arch.mediation_refusal(model, name) for name in COMPONENTS}
    refused = {name: why for name, why in refused.items() if why}
    mediation = "every component" if not refused else "refused for " + "; ".join(
        f"{name} ({why})" for name, why in refused.items())
    attribution = arch.attribution_refusal(model)
    return {
        "sentence attention": attention,
        "suppression": suppression,
        "information flow": flow,
        "sentence flow": sentence_flow,
        "head ablation": "at hook_z; " + attention if ablation is None else f"refused: {ablation}",
        "mediation": mediation,
        "attribution": "supported" if attribution is None else f"refused: {attribution}",
    }


def support_table(build: Callable[[str], object] | None = None, families=FAMILIES):
    """A DataFrame, one row per family and one column per method (``method_support``).

    ``build(family)`` returns that family's small random model as a bridge (default: ``random_model(family)``).
    """
    import pandas as pd

    if build is None:
        from anchorlens.models import random_model

        build = random_model
    rows = []
    for family in families:
        model = build(family)
        rows.append({"family": family, "attention bridge": type(model.blocks[0].attn).__name__, **method_support(model)})
    return pd.DataFrame(rows).set_index("family")


def support_markdown(table) -> str:
    """``support_table``'s output as the markdown table of docs/architectures.md."""
    columns = [table.index.name, *table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for family, row in table.iterrows():
        lines.append("| " + " | ".join([str(family), *(str(v).replace("|", "/") for v in row)]) + " |")
    return "\n".join(lines) + "\n"
