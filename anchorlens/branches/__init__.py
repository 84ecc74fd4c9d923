"""Thought Branches (arXiv 2510.27484, the follow-up to Thought Anchors): what resampling one sentence misses.

- ``resilience``: does a removed sentence's content come back later, and how often; with Counterfactual++
  (the outcome when it is abandoned for good) from the same rollouts;
- ``chain_disruption``: an idea inserted on-policy (found among the model's own resamples) against the same idea
  handwritten (off-policy);
- ``transplant_resampling``: one prompt's chain of thought, sentence by sentence, after another prompt.

Definitions, constants and where ours differ from the reference code: docs/branches.md.
"""

from anchorlens.branches.chain_disruption import ChainDisruptionResult, chain_disruption
from anchorlens.branches.keyed import BranchSettingsError
from anchorlens.branches.organism import PlantedSampler
from anchorlens.branches.resilience import ResilienceResult, resilience
from anchorlens.branches.transplant import TransplantResult, transplant_resampling

__all__ = ["BranchSettingsError", "ChainDisruptionResult", "PlantedSampler", "ResilienceResult", "TransplantResult",
           "chain_disruption", "resilience", "transplant_resampling"]
