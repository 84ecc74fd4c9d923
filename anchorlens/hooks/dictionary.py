"""What the replacement-model hooks need from a set of transcoders, as a protocol (hooks/ imports nothing from the
method packages above it; ``anchorlens.attribution.transcoders.TranscoderSet`` satisfies it).

Per layer, features are encoded from the input site; a feature of layer ``s`` may write to the output sites of
layers ``s`` and later (cross-layer transcoders), so decoding at layer ``l`` takes every layer's activations.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from torch import Tensor


class FeatureDictionary(Protocol):
    @property
    def input_site(self) -> str:
        """The bridge hook (without ``blocks.{i}.``) the features read, e.g. ``mlp.hook_in``."""

    @property
    def output_site(self) -> str:
        """The bridge hook (without ``blocks.{i}.``) the features write, e.g. ``hook_mlp_out``."""

    @property
    def skip_connection(self) -> bool:
        """Whether the reconstruction has a linear skip term of the input (gradients pass through it)."""

    def encode_layer(self, layer: int, x: Tensor) -> Tensor:
        """Feature activations [..., feature] of ``layer`` from its input ``x`` [..., d_model]."""

    def skip_layer(self, layer: int, x: Tensor) -> Tensor:
        """The skip term [..., d_model] of ``layer`` from its input ``x``."""

    def decode_features(self, layer: int, activations: Sequence[Tensor | None]) -> Tensor:
        """What the features write to ``layer``'s output: the sum over the layers ``s`` that write there of
        ``activations[s]`` [..., feature] through their decoders (no bias, no skip)."""
