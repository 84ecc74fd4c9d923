"""Receiver heads (Thought Anchors, docs/methods.md 1.5): which sentences do later sentences keep attending to?

    attention = sentence_attention(model, trace)          # [layer, head, sentence, sentence], one forward
    heads = receiver_heads(model, traces, top_k=20)        # ranked (layer, head) by kurtosis
    heads.scores(trace=0)                                  # receiver score per sentence
    with ablate_heads(model, heads):                       # remove them at hook_z, before W_O
        model.generate(...)

Modules: ``reduce`` (token -> sentence attention, pure math), ``attention`` (one forward, hooks),
``scores`` (vertical scores, kurtosis, receiver scores, reliability; pure math), ``heads``
(receiver heads over traces), ``ablation`` (receiver vs random head ablation), ``compare``
(reasoning vs base model), ``organism`` (a model with a planted receiver head), ``plots``.
"""

from anchorlens.hooks.head_ablation import ablate_heads, head_means
from anchorlens.generation import greedy_generate
from anchorlens.receivers.ablation import HeadAblationResult, head_ablation_experiment, random_head_sets
from anchorlens.receivers.attention import SentenceAttention, sentence_attention
from anchorlens.receivers.compare import ModelComparison, check_same_tokenizer, compare_models
from anchorlens.receivers.heads import FewerHeadsWarning, ReceiverHeads, receiver_heads
from anchorlens.receivers.organism import planted_receiver_model
from anchorlens.receivers.reduce import SentenceReducer, SentenceSpanError, membership_matrix, sentence_average
from anchorlens.receivers.scores import (
    HeadSelectionError,
    SplitHalfReliability,
    head_kurtosis,
    kurtosis,
    receiver_scores,
    split_half_reliability,
    top_heads,
    vertical_scores,
)

__all__ = [
    "FewerHeadsWarning",
    "HeadAblationResult",
    "HeadSelectionError",
    "ModelComparison",
    "ReceiverHeads",
    "SentenceAttention",
    "SentenceReducer",
    "SentenceSpanError",
    "SplitHalfReliability",
    "ablate_heads",
    "check_same_tokenizer",
    "compare_models",
    "greedy_generate",
    "head_ablation_experiment",
    "head_kurtosis",
    "head_means",
    "kurtosis",
    "membership_matrix",
    "planted_receiver_model",
    "random_head_sets",
    "receiver_heads",
    "receiver_scores",
    "sentence_attention",
    "sentence_average",
    "split_half_reliability",
    "top_heads",
    "vertical_scores",
]
