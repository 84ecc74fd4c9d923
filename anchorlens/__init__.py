"""anchorlens: which steps of a chain of thought mattered, and which parts of the model carried them.

Thought Anchors (Bogdan, Macar, Nanda, Conmy 2025) finds the sentences a chain of thought hinges on three
independent ways; this package gives each its own part, on one model-loading, trace and hook layer:

    model = load_model()                                     # a TransformerLens TransformerBridge
    trace = generate_trace(model, "What is 6 times 7?")      # or Trace.from_text(model, cot, prompt=...)

    resampling_importance(model, trace)    # 1. black box: regenerate from each sentence, watch the answer
    receiver_heads(model, [trace])         # 2. attention: heads that concentrate on a few sentences
    suppression_matrix(model, trace)       # 3. causal: mask attention to a sentence, KL on later ones

    analyze(model, "report/", problem=...)  # all of it, into an interactive report
"""

from typing import TYPE_CHECKING

from anchorlens.lazy import lazy_exports
from anchorlens.versions import __version__

if TYPE_CHECKING:  # what a type checker and an IDE see; at run time each name is imported on first use (below)
    # Models, chains of thought, sentences and answers
    from anchorlens.answers import (
        check_answer,
        extract_boxed,
        get_extractor,
        last_number,
        normalize_answer,
        regex_extractor,
    )
    from anchorlens.errors import (
        AnchorlensError,
        CachedDecodingError,
        DegenerateTraceError,
        EmptyTextError,
        InputError,
        ModelLoadError,
        ResultKindError,
        ServerError,
        ModelPackageMissingError,
        TokenizerMismatchError,
        TraceTooLongError,
        UnknownModelError,
        UnsupportedArchitectureError,
        UnsupportedDtypeError,
    )
    from anchorlens.generation import generate_trace, problem_prompt
    from anchorlens.hooks.fused_attention import FusedAttentionFallbackWarning, PatternUnavailableError, fused_attention
    from anchorlens.models import DEFAULT_MODEL, load_model, random_model, verify_attention_edits, verify_cached_decoding
    from anchorlens.progress import progress_enabled, set_progress
    from anchorlens.results import Result
    from anchorlens.support import support_table
    from anchorlens.sentences import Sentence, split_sentences
    from anchorlens.trace import Trace

    # 1. Resampling (black box): rollouts from each sentence, and the importance metrics computed on them
    from anchorlens.resampling.metrics import (
        ImportanceResult,
        counterfactual_matrix,
        different_trajectories_fraction,
        overdeterminedness,
        sentence_importance,
    )
    from anchorlens.resampling.published_format import (
        export_chunks_labeled,
        export_chunks_resampled,
        load_chunks_labeled,
        load_chunks_resampled,
        load_reference_trace,
    )
    from anchorlens.resampling.rollout import Rollout
    from anchorlens.resampling.runner import RunSummary, resampling_importance, rollout_prompt, run_rollouts
    from anchorlens.resampling.samplers import (
        Completion,
        LocalSampler,
        SampleRequest,
        Sampler,
        SamplerError,
        SamplingParams,
        ServerSampler,
        ServerUnavailableError,
    )
    from anchorlens.resampling.server import ModelServer, start_server
    from anchorlens.resampling.store import RolloutStore, StoreError

    # 2. Receiver heads (attention): sentence attention, kurtosis, ablation, model comparison
    from anchorlens.receivers import (
        HeadAblationResult,
        HeadSelectionError,
        ModelComparison,
        ReceiverHeads,
        SentenceAttention,
        SentenceSpanError,
        SplitHalfReliability,
        ablate_heads,
        compare_models,
        head_ablation_experiment,
        head_kurtosis,
        head_means,
        planted_receiver_model,
        receiver_heads,
        receiver_scores,
        sentence_attention,
        split_half_reliability,
        vertical_scores,
    )

    # 3. Attention suppression (causal): the sentence-to-sentence KL matrix, all layers or layer by layer
    from anchorlens.suppression import (
        LayerSuppression,
        SuppressionFallbackWarning,
        SuppressionInputError,
        SuppressionMatrix,
        suppression_by_layer,
        suppression_matrix,
    )

    # Sentence categories (the paper's taxonomy)
    from anchorlens.taxonomy import (
        SENTENCE_CATEGORIES,
        TaxonomyClassifier,
        classify_sentences,
        label_sentences_with_model,
    )

    # Information flow routes (Ferrando and Voita 2024): token / head / MLP contributions, routes, knockout
    from anchorlens.flow import (
        EdgeAttribution,
        EdgePatchingError,
        FlowInputError,
        InformationFlow,
        KnockoutResult,
        Routes,
        SentenceFlow,
        edge_attribution,
        expand_kv_heads,
        information_flow,
        knockout_experiment,
        sentence_flow,
    )
    from anchorlens.flow.organism import planted_route_model

    # Attribution graphs (circuit tracing with transcoders)
    from anchorlens.attribution.attribute import AttributionInputError, attribution_graph
    from anchorlens.attribution.graph import AttributionGraph
    from anchorlens.attribution.sentences import SentenceAttribution, answer_attribution
    from anchorlens.attribution.training import train_transcoders
    from anchorlens.attribution.transcoders import Transcoder, TranscoderError, TranscoderSet, load_transcoders
    from anchorlens.attribution.targets import CustomTarget, TargetError, logit_difference_target
    from anchorlens.attribution.intervention import (GenerationResult, InterventionResult, feature_intervention,
                                                feature_intervention_generate)

    # Causal mediation analysis (Stolfo, Belinkov, Sachan 2023): patch counterfactual activations cell by cell
    from anchorlens.mediation import (
        MediationInputError,
        MediationResult,
        PromptPair,
        arithmetic_pairs,
        factual_pairs,
        filter_pairs,
        mediation_sweep,
        retrieval_pairs,
    )
    from anchorlens.mediation.organism import arithmetic_organism
    from anchorlens.mediation.overlap import NeuronOverlap, neuron_overlap
    from anchorlens.mediation.findings import MediationPicture, mediation_picture

    # Thought Branches: resilience and Counterfactual++, on- and off-policy chain disruption, transplant resampling
    from anchorlens.branches import (BranchSettingsError, ChainDisruptionResult, PlantedSampler, ResilienceResult,
                                     TransplantResult, chain_disruption, resilience, transplant_resampling)

    # Everything into one report
    from anchorlens.pipeline import Analysis, analyze
    from anchorlens.report import ReportData, build_report

    # Studies: many chains of thought, aggregated over traces as the paper does
    from anchorlens.study import Explained, Study, StudyInputError, study


#: Every public name -> the module it lives in: ``anchorlens.X`` imports that module on first use, so that
#: ``import anchorlens`` (and ``anchorlens --help``) imports no torch.
_EXPORTS = {
    "check_answer": "anchorlens.answers",
    "extract_boxed": "anchorlens.answers",
    "get_extractor": "anchorlens.answers",
    "last_number": "anchorlens.answers",
    "normalize_answer": "anchorlens.answers",
    "regex_extractor": "anchorlens.answers",
    "AnchorlensError": "anchorlens.errors",
    "CachedDecodingError": "anchorlens.errors",
    "DegenerateTraceError": "anchorlens.errors",
    "EmptyTextError": "anchorlens.errors",
    "InputError": "anchorlens.errors",
    "ModelLoadError": "anchorlens.errors",
    "ServerError": "anchorlens.errors",
    "ResultKindError": "anchorlens.errors",
    "ModelPackageMissingError": "anchorlens.errors",
    "TokenizerMismatchError": "anchorlens.errors",
    "TraceTooLongError": "anchorlens.errors",
    "UnknownModelError": "anchorlens.errors",
    "UnsupportedArchitectureError": "anchorlens.errors",
    "UnsupportedDtypeError": "anchorlens.errors",
    "generate_trace": "anchorlens.generation",
    "problem_prompt": "anchorlens.generation",
    "FusedAttentionFallbackWarning": "anchorlens.hooks.fused_attention",
    "PatternUnavailableError": "anchorlens.hooks.fused_attention",
    "fused_attention": "anchorlens.hooks.fused_attention",
    "DEFAULT_MODEL": "anchorlens.models",
    "load_model": "anchorlens.models",
    "random_model": "anchorlens.models",
    "verify_attention_edits": "anchorlens.models",
    "verify_cached_decoding": "anchorlens.models",
    "progress_enabled": "anchorlens.progress",
    "set_progress": "anchorlens.progress",
    "Result": "anchorlens.results",
    "support_table": "anchorlens.support",
    "Sentence": "anchorlens.sentences",
    "split_sentences": "anchorlens.sentences",
    "Trace": "anchorlens.trace",
    "ImportanceResult": "anchorlens.resampling.metrics",
    "counterfactual_matrix": "anchorlens.resampling.metrics",
    "different_trajectories_fraction": "anchorlens.resampling.metrics",
    "overdeterminedness": "anchorlens.resampling.metrics",
    "sentence_importance": "anchorlens.resampling.metrics",
    "export_chunks_labeled": "anchorlens.resampling.published_format",
    "export_chunks_resampled": "anchorlens.resampling.published_format",
    "load_chunks_labeled": "anchorlens.resampling.published_format",
    "load_chunks_resampled": "anchorlens.resampling.published_format",
    "load_reference_trace": "anchorlens.resampling.published_format",
    "Rollout": "anchorlens.resampling.rollout",
    "RunSummary": "anchorlens.resampling.runner",
    "resampling_importance": "anchorlens.resampling.runner",
    "rollout_prompt": "anchorlens.resampling.runner",
    "run_rollouts": "anchorlens.resampling.runner",
    "Completion": "anchorlens.resampling.samplers",
    "LocalSampler": "anchorlens.resampling.samplers",
    "SampleRequest": "anchorlens.resampling.samplers",
    "Sampler": "anchorlens.resampling.samplers",
    "SamplerError": "anchorlens.resampling.samplers",
    "SamplingParams": "anchorlens.resampling.samplers",
    "ServerSampler": "anchorlens.resampling.samplers",
    "ServerUnavailableError": "anchorlens.resampling.samplers",
    "ModelServer": "anchorlens.resampling.server",
    "start_server": "anchorlens.resampling.server",
    "RolloutStore": "anchorlens.resampling.store",
    "StoreError": "anchorlens.resampling.store",
    "HeadAblationResult": "anchorlens.receivers",
    "HeadSelectionError": "anchorlens.receivers",
    "ModelComparison": "anchorlens.receivers",
    "ReceiverHeads": "anchorlens.receivers",
    "SentenceAttention": "anchorlens.receivers",
    "SentenceSpanError": "anchorlens.receivers",
    "SplitHalfReliability": "anchorlens.receivers",
    "ablate_heads": "anchorlens.receivers",
    "compare_models": "anchorlens.receivers",
    "head_ablation_experiment": "anchorlens.receivers",
    "head_kurtosis": "anchorlens.receivers",
    "head_means": "anchorlens.receivers",
    "planted_receiver_model": "anchorlens.receivers",
    "receiver_heads": "anchorlens.receivers",
    "receiver_scores": "anchorlens.receivers",
    "sentence_attention": "anchorlens.receivers",
    "split_half_reliability": "anchorlens.receivers",
    "vertical_scores": "anchorlens.receivers",
    "LayerSuppression": "anchorlens.suppression",
    "SuppressionFallbackWarning": "anchorlens.suppression",
    "SuppressionInputError": "anchorlens.suppression",
    "SuppressionMatrix": "anchorlens.suppression",
    "suppression_by_layer": "anchorlens.suppression",
    "suppression_matrix": "anchorlens.suppression",
    "SENTENCE_CATEGORIES": "anchorlens.taxonomy",
    "TaxonomyClassifier": "anchorlens.taxonomy",
    "classify_sentences": "anchorlens.taxonomy",
    "label_sentences_with_model": "anchorlens.taxonomy",
    "EdgeAttribution": "anchorlens.flow",
    "EdgePatchingError": "anchorlens.flow",
    "FlowInputError": "anchorlens.flow",
    "InformationFlow": "anchorlens.flow",
    "KnockoutResult": "anchorlens.flow",
    "Routes": "anchorlens.flow",
    "SentenceFlow": "anchorlens.flow",
    "edge_attribution": "anchorlens.flow",
    "expand_kv_heads": "anchorlens.flow",
    "information_flow": "anchorlens.flow",
    "knockout_experiment": "anchorlens.flow",
    "sentence_flow": "anchorlens.flow",
    "planted_route_model": "anchorlens.flow.organism",
    "AttributionInputError": "anchorlens.attribution.attribute",
    "attribution_graph": "anchorlens.attribution.attribute",
    "AttributionGraph": "anchorlens.attribution.graph",
    "SentenceAttribution": "anchorlens.attribution.sentences",
    "answer_attribution": "anchorlens.attribution.sentences",
    "train_transcoders": "anchorlens.attribution.training",
    "Transcoder": "anchorlens.attribution.transcoders",
    "TranscoderError": "anchorlens.attribution.transcoders",
    "TranscoderSet": "anchorlens.attribution.transcoders",
    "load_transcoders": "anchorlens.attribution.transcoders",
    "CustomTarget": "anchorlens.attribution.targets",
    "TargetError": "anchorlens.attribution.targets",
    "logit_difference_target": "anchorlens.attribution.targets",
    "GenerationResult": "anchorlens.attribution.intervention",
    "InterventionResult": "anchorlens.attribution.intervention",
    "feature_intervention": "anchorlens.attribution.intervention",
    "feature_intervention_generate": "anchorlens.attribution.intervention",
    "MediationInputError": "anchorlens.mediation",
    "MediationResult": "anchorlens.mediation",
    "PromptPair": "anchorlens.mediation",
    "arithmetic_pairs": "anchorlens.mediation",
    "factual_pairs": "anchorlens.mediation",
    "filter_pairs": "anchorlens.mediation",
    "mediation_sweep": "anchorlens.mediation",
    "retrieval_pairs": "anchorlens.mediation",
    "arithmetic_organism": "anchorlens.mediation.organism",
    "NeuronOverlap": "anchorlens.mediation.overlap",
    "neuron_overlap": "anchorlens.mediation.overlap",
    "MediationPicture": "anchorlens.mediation.findings",
    "mediation_picture": "anchorlens.mediation.findings",
    "BranchSettingsError": "anchorlens.branches",
    "ChainDisruptionResult": "anchorlens.branches",
    "PlantedSampler": "anchorlens.branches",
    "ResilienceResult": "anchorlens.branches",
    "TransplantResult": "anchorlens.branches",
    "chain_disruption": "anchorlens.branches",
    "resilience": "anchorlens.branches",
    "transplant_resampling": "anchorlens.branches",
    "Analysis": "anchorlens.pipeline",
    "analyze": "anchorlens.pipeline",
    "ReportData": "anchorlens.report",
    "build_report": "anchorlens.report",
    "Explained": "anchorlens.study",
    "Study": "anchorlens.study",
    "StudyInputError": "anchorlens.study",
    "study": "anchorlens.study",
}

__all__ = [
    # models, traces, sentences, answers
    "DEFAULT_MODEL", "load_model", "random_model", "verify_attention_edits", "verify_cached_decoding",
    "Trace", "generate_trace", "problem_prompt", "Sentence", "split_sentences",
    "check_answer", "extract_boxed", "get_extractor", "last_number", "normalize_answer", "regex_extractor",
    "AnchorlensError", "EmptyTextError", "ModelPackageMissingError", "TokenizerMismatchError", "TraceTooLongError",
    "UnknownModelError", "UnsupportedArchitectureError", "UnsupportedDtypeError", "CachedDecodingError",
    "DegenerateTraceError", "InputError", "ModelLoadError", "ServerError",
    "fused_attention", "PatternUnavailableError", "FusedAttentionFallbackWarning",
    # every result's protocol (to_dataframe / plot / save / load) and the one switch for progress bars
    "Result", "ResultKindError", "set_progress", "progress_enabled", "support_table",
    # 1. resampling
    "resampling_importance", "run_rollouts", "rollout_prompt", "RunSummary", "Rollout", "RolloutStore", "StoreError",
    "Sampler", "LocalSampler", "ServerSampler", "SampleRequest", "SamplingParams", "Completion", "SamplerError",
    "ServerUnavailableError", "ModelServer", "start_server",
    "ImportanceResult", "sentence_importance", "counterfactual_matrix", "different_trajectories_fraction",
    "overdeterminedness",
    "load_reference_trace", "load_chunks_labeled", "load_chunks_resampled", "export_chunks_labeled",
    "export_chunks_resampled",
    # 2. receiver heads
    "sentence_attention", "SentenceAttention", "vertical_scores", "head_kurtosis", "receiver_heads", "ReceiverHeads",
    "receiver_scores", "split_half_reliability", "SplitHalfReliability", "ablate_heads", "head_means",
    "head_ablation_experiment", "HeadAblationResult", "compare_models", "ModelComparison", "planted_receiver_model",
    "HeadSelectionError", "SentenceSpanError",
    # 3. attention suppression
    "suppression_matrix", "SuppressionMatrix", "suppression_by_layer", "LayerSuppression", "SuppressionInputError",
    "SuppressionFallbackWarning",
    # sentence categories
    "SENTENCE_CATEGORIES", "classify_sentences", "TaxonomyClassifier", "label_sentences_with_model",
    # information flow routes
    "information_flow", "InformationFlow", "Routes", "FlowInputError", "knockout_experiment", "KnockoutResult",
    "sentence_flow", "SentenceFlow", "edge_attribution", "EdgeAttribution", "EdgePatchingError", "expand_kv_heads",
    "planted_route_model",
    # attribution graphs
    "attribution_graph", "AttributionGraph", "AttributionInputError", "SentenceAttribution", "answer_attribution",
    "load_transcoders", "train_transcoders",
    "Transcoder",
    "TranscoderSet", "TranscoderError",
    "CustomTarget", "TargetError", "logit_difference_target",
    "feature_intervention", "InterventionResult", "feature_intervention_generate", "GenerationResult",
    # thought branches
    "resilience", "ResilienceResult", "chain_disruption", "ChainDisruptionResult", "transplant_resampling",
    "TransplantResult", "PlantedSampler", "BranchSettingsError",
    # the report
    "analyze", "Analysis", "build_report", "ReportData",
    # studies over many traces
    "study", "Study", "StudyInputError", "Explained",
    # causal mediation analysis
    "mediation_sweep", "MediationResult", "MediationInputError", "PromptPair", "arithmetic_pairs", "retrieval_pairs",
    "factual_pairs", "filter_pairs", "arithmetic_organism", "neuron_overlap", "NeuronOverlap", "MediationPicture",
    "mediation_picture",
]

lazy_exports(__name__, _EXPORTS)
