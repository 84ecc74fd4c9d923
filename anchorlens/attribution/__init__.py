"""Attribution graphs with transcoders (circuit-tracer's definitions), on a TransformerLens bridge.

- ``transcoders``: the sparse dictionaries that replace each MLP (load, save, circuit-tracer's folder layout);
  ``training``: train small ones.
- ``attribute``: build the graph (``attribution_graph``) for the salient logits or chosen ``targets``.
- ``sentences``: a chain of thought's answer logit attributed to its sentences (``answer_attribution``).
- ``graph``: the graph, its pruning and influence; ``graph_json`` / ``graph_plot``: export and a picture.
- ``intervention``: steer features (``feature_intervention``, ``feature_intervention_generate``).
"""

from anchorlens.attribution.transcoders import Transcoder, TranscoderError, TranscoderSet, load_transcoders
from anchorlens.attribution.graph import AttributionGraph
from anchorlens.attribution.attribute import AttributionInputError, attribution_graph
from anchorlens.attribution.sentences import SentenceAttribution, answer_attribution
from anchorlens.attribution.targets import CustomTarget, TargetError, logit_difference_target
from anchorlens.attribution.intervention import (GenerationResult, InterventionResult, feature_intervention,
                                                 feature_intervention_generate)
