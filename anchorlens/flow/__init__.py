"""Information flow routes (Ferrando and Voita 2024): which tokens, heads and MLPs feed a prediction.

- ``information_flow``: per-layer contributions of every token, head and MLP (``information_flow``, the math in
  ``contributions``); ``stream`` computes the same for long traces in blocks of queries.
- ``routes``: the graph of edges above a threshold and token-to-token influence.
- ``knockout``: attention knockout of chosen edges; ``edge_patching``: edge attribution patching.
- ``sentences``: the flow summed over sentence spans; ``organism``: a planted route to check all of it.
"""

from anchorlens.flow.checks import FlowFallbackWarning
from anchorlens.flow.information_flow import FlowInputError, InformationFlow, information_flow
from anchorlens.flow.knockout import KnockoutResult, knockout_experiment
from anchorlens.flow.routes import Routes, build_routes, token_influence
from anchorlens.flow.sentences import SentenceFlow, sentence_flow
from anchorlens.flow.edge_patching import EdgeAttribution, EdgePatchingError, edge_attribution, expand_kv_heads
