"""Circuit tracing: which tokens, heads and components feed a prediction.

- Information flow routes (Ferrando and Voita 2024): ``information_flow`` (``flow``, ``flow_math``),
  ``routes``, attention knockout (``knockout``), sentence aggregation (``flow_sentences``).
- Attribution graphs (circuit-tracer's definitions): ``transcoders``, ``attribution``, ``graph``, ``graph_json``,
  ``graph_plot``, ``training``.
"""

from anchorlens.tracing.flow import FlowInputError, InformationFlow, information_flow
from anchorlens.tracing.knockout import KnockoutResult, knockout_experiment
from anchorlens.tracing.routes import Routes, build_routes, token_influence
from anchorlens.tracing.flow_sentences import SentenceFlow, sentence_flow
from anchorlens.tracing.edge_patching import EdgeAttribution, EdgePatchingError, edge_attribution, expand_kv_heads
from anchorlens.tracing.transcoders import Transcoder, TranscoderError, TranscoderSet, load_transcoders
from anchorlens.tracing.graph import AttributionGraph
from anchorlens.tracing.attribution import AttributionInputError, attribution_graph
from anchorlens.tracing.targets import CustomTarget, TargetError, logit_difference_target
from anchorlens.tracing.intervention import (GenerationResult, InterventionResult, feature_intervention,
                                            feature_intervention_generate)
