"""Feature interventions: set transcoder features to chosen values and run the model (circuit-tracer 0.5.0's
``ReplacementModel.feature_intervention``).

For each intervention ``(layer, position, feature, value)`` the MLP output of ``layer`` at ``position`` gets
``(value - a) * W_dec[feature]`` added, ``a`` being the feature's activation in this pass (its clean activation under
``constrained_layers``); a cross-layer transcoder's feature adds it through its decoder at each later layer too. The real MLPs run; only the difference goes through the transcoder's decoder, so features
not intervened on keep the model's own computation. With ``freeze_attention`` (the default) attention patterns are
the clean ones: the intervention acts through the values, not by moving attention. With ``constrained_layers``
those layers' MLP outputs are frozen at their clean values (plus the skip connection's change), so the effect
does not pass through other features, and when it covers every layer the norms' scales are frozen too (the
direct effects an attribution graph's edges predict). Positions are the graph's token positions (a special token
is put in front of the prompt, as ``attribution_graph`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.hooks.feature_intervention import InterventionHooks, clean_pass, intervened_pass, quiet_norm_edits
from anchorlens.attribution.attribute import AttributionInputError, prepare
from anchorlens.attribution.transcoders import TranscoderSet
from anchorlens.generation import greedy_generate
from anchorlens.results import Result


@dataclass
class InterventionResult(Result):
    """Logits and feature activations of the intervened pass, beside the clean pass's."""

    tokens: Int[Tensor, " position"]
    logits: Float[Tensor, "position vocab"]
    activations: Float[Tensor, "layer position feature"]
    clean_logits: Float[Tensor, "position vocab"]
    interventions: list[tuple] = field(default_factory=list)
    token_strings: list[str] = field(default_factory=list)

    def top_tokens(self, k: int = 10, position: int = -1) -> pd.DataFrame:
        """The ``k`` most likely next tokens after the intervention, with their clean probabilities."""
        probs = torch.softmax(self.logits[position].float(), -1)
        clean = torch.softmax(self.clean_logits[position].float(), -1)
        top = probs.topk(k)
        return pd.DataFrame({"token_id": top.indices.tolist(), "probability": top.values.tolist(),
                             "clean_probability": clean[top.indices].tolist()})

    def to_dataframe(self) -> pd.DataFrame:
        return self.top_tokens()

    def plot(self, ax=None, k: int = 10, tokenizer=None):
        """Bars: the top next tokens' probabilities after the intervention and in the clean pass."""
        import matplotlib.pyplot as plt

        frame = self.top_tokens(k)
        ax = ax or plt.subplots(figsize=(6, 3))[1]
        names = [tokenizer.decode([t]) if tokenizer else str(t) for t in frame["token_id"]]
        x = range(len(frame))
        ax.bar([i - 0.2 for i in x], frame["clean_probability"], width=0.4, label="clean")
        ax.bar([i + 0.2 for i in x], frame["probability"], width=0.4, label="intervened")
        ax.set_xticks(list(x))
        ax.set_xticklabels([repr(n) for n in names], rotation=45, ha="right")
        ax.set_ylabel("next-token probability")
        ax.legend()
        return ax

    def _to_file(self) -> tuple[dict, dict]:
        arrays, meta = super()._to_file()
        meta["interventions"] = [[int(layer), _position_json(p), int(f), float(v)] for layer, p, f, v in
                                 self.interventions]
        return arrays, meta

    @classmethod
    def _from_file(cls, arrays: dict, meta: dict) -> "InterventionResult":
        meta = {**meta, "interventions": [(layer, _position_from_json(p), f, v)
                                          for layer, p, f, v in meta["interventions"]]}
        return super()._from_file(arrays, meta)


def _position_json(position):
    if isinstance(position, slice):
        return {"slice": [position.start, position.stop, position.step]}
    return position.tolist() if isinstance(position, Tensor) else int(position)


def _position_from_json(position):
    if isinstance(position, dict):
        return slice(*position["slice"])
    return torch.tensor(position) if isinstance(position, list) else position


def feature_intervention(
    model,
    transcoders: TranscoderSet,
    prompt: str | Tensor | list[int],
    interventions,
    freeze_attention: bool = True,
    constrained_layers: range | list[int] | None = None,
) -> InterventionResult:
    """Run ``prompt`` with transcoder features set to chosen values (circuit-tracer's ``feature_intervention``).

    Args:
        interventions: ``(layer, position, feature, value)`` tuples; ``position`` in the graph's coordinates (an
            int, negative from the end, a slice, or a tensor of positions); e.g. ``(1, 5, 17, 0.0)`` switches a
            feature off, a larger value steers with it; ``AttributionGraph.feature_interventions`` makes them
            from graph nodes.
        freeze_attention: keep the clean attention patterns.
        constrained_layers: freeze these layers' MLP outputs at their clean values (attention is then frozen too);
            interventions outside them are ignored, as in circuit-tracer.
    Returns:
        ``InterventionResult``: logits [position, vocab] and feature activations [layer, position, feature] of the
        intervened pass (a layer's activations are read before its own interventions), and the clean logits.
    """
    tokens, transcoders = prepare(model, transcoders, prompt)
    n_layers, n_pos, n_feat = model.cfg.n_layers, len(tokens), transcoders.n_features
    checked = [_check(i, n_layers, n_pos, n_feat) for i in interventions]
    constrained = _constrained(constrained_layers, n_layers)
    freeze = (freeze_attention or constrained is not None) and bool(checked)  # circuit-tracer's condition
    clean = clean_pass(model, transcoders, tokens, patterns=freeze, mlps=freeze and constrained is not None,
                       scales=freeze and constrained is not None and constrained == set(range(n_layers)))
    logits, acts = intervened_pass(model, transcoders, tokens, _at_positions(checked, n_pos),
                                   clean if freeze else None, constrained)
    return InterventionResult(tokens.cpu(), logits.cpu(), acts.cpu(), clean["logits"].cpu(), checked,
                              [model.tokenizer.decode([t]) for t in tokens.tolist()])


def _at_positions(interventions, n_pos: int) -> list[tuple]:
    """(layer, LongTensor of positions among ``n_pos``, feature, value): ints, negative ints, slices, tensors."""
    return [(layer, torch.arange(n_pos)[position].reshape(-1), feature, value)
            for layer, position, feature, value in interventions]


def _constrained(constrained_layers, n_layers: int) -> set[int] | None:
    if constrained_layers is None:
        return None
    constrained = {int(layer) for layer in constrained_layers}
    if not constrained or not constrained <= set(range(n_layers)):
        raise AttributionInputError(f"constrained_layers must be layers of the model (0..{n_layers - 1}), got "
                                    f"{list(constrained_layers)}; pass None to freeze no MLP")
    return constrained


@dataclass
class GenerationResult(Result):
    """A greedy continuation under feature interventions (circuit-tracer's ``feature_intervention_generate``):
    all tokens (prompt, special token in front, then the new ones), the text, and the logits and feature
    activations of every position that was run (the prompt and all new tokens but the last)."""

    tokens: Int[Tensor, " position"]
    n_prompt: int
    text: str
    logits: Float[Tensor, "run vocab"]
    activations: Float[Tensor, "layer run feature"]
    clean_text: str = ""

    @property
    def new_tokens(self) -> Tensor:
        return self.tokens[self.n_prompt :]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per generated token: its id and its probability when it was chosen."""
        probs = torch.softmax(self.logits[self.n_prompt - 1 :].float(), -1)
        ids = self.new_tokens
        return pd.DataFrame({"token_id": ids.tolist(), "probability": probs[torch.arange(len(ids)), ids].tolist()})

    def plot(self, ax=None):
        """The probability of each generated token when it was chosen (low: the intervention forced a turn)."""
        import matplotlib.pyplot as plt

        frame = self.to_dataframe()
        ax = ax or plt.subplots(figsize=(max(4.0, 0.3 * len(frame)), 3))[1]
        ax.bar(range(len(frame)), frame["probability"])
        ax.set_xlabel("generated token")
        ax.set_ylabel("probability when chosen")
        ax.set_ylim(0, 1)
        return ax


def feature_intervention_generate(
    model,
    transcoders: TranscoderSet,
    prompt: str | Tensor | list[int],
    interventions,
    max_new_tokens: int = 20,
    freeze_attention: bool = True,
    constrained_layers: range | list[int] | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Greedy generation under feature interventions, as circuit-tracer's ``feature_intervention_generate``: the
    prompt runs as in ``feature_intervention`` (frozen attention, ``constrained_layers``: for the prompt's
    positions only); each new token then runs freely, with the open-ended interventions (position
    ``slice(start, None)``) on it, against its own activations. Decoded by ``greedy_generate`` on a KV cache: the
    prompt runs once under the interventions, then each new token once (the same values as rerunning the whole
    sequence at every step, which is the definition, up to float rounding: the interventions at a position depend
    only on it and earlier positions; tests/test_intervention_decoding.py checks it). ``progress``: a bar over the
    new tokens."""
    tokens, transcoders = prepare(model, transcoders, prompt)
    n_layers, n_prompt, n_feat = model.cfg.n_layers, len(tokens), transcoders.n_features
    if max_new_tokens < 1:
        raise AttributionInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if n_prompt + max_new_tokens - 1 > model.cfg.n_ctx:
        raise AttributionInputError(f"{n_prompt} prompt tokens and {max_new_tokens} new ones exceed the model's "
                                    f"context of {model.cfg.n_ctx}: generate fewer")
    checked = [_check(i, n_layers, n_prompt, n_feat) for i in interventions]
    constrained = _constrained(constrained_layers, n_layers)
    at_prompt = _at_positions(checked, n_prompt)
    open_ended = [(layer, feature, value) for layer, position, feature, value in checked
                  if isinstance(position, slice) and position.stop is None]
    freeze = (freeze_attention or constrained is not None) and bool(checked)
    clean = clean_pass(model, transcoders, tokens, patterns=freeze, mlps=freeze and constrained is not None,
                       scales=freeze and constrained is not None and constrained == set(range(n_layers)))
    hooks = InterventionHooks(model, transcoders, at_prompt, clean if freeze else None, constrained, n_prompt,
                              open_ended)
    with quiet_norm_edits():  # the package's one greedy decoder, on a KV cache (exact: see InterventionHooks)
        new, logits = greedy_generate(model, tokens[None], max_new_tokens, stop_at_eos=False, hooks=hooks,
                                      return_logits=True, progress=progress)
    sequence = torch.cat([tokens, new[0]])
    # the clean continuation, for comparison: the same decoder without the hooks
    clean_sequence = torch.cat([tokens, greedy_generate(model, tokens[None], max_new_tokens, stop_at_eos=False)[0]])
    decode = model.tokenizer.decode
    return GenerationResult(sequence.cpu(), n_prompt, decode(sequence.tolist()), logits.cpu(),
                            hooks.activations().cpu(), decode(clean_sequence.tolist()))


def _check(intervention, n_layers: int, n_pos: int, n_feat: int) -> tuple:
    try:
        layer, position, feature, value = intervention
    except (TypeError, ValueError):
        raise AttributionInputError(f"an intervention is (layer, position, feature, value), not {intervention!r}")
    layer, feature = int(layer), int(feature)
    value = float(value)
    if not 0 <= layer < n_layers:
        raise AttributionInputError(f"intervention layer {layer} is not a layer of the model (0..{n_layers - 1})")
    if not 0 <= feature < n_feat:
        raise AttributionInputError(f"intervention feature {feature} is not a transcoder feature (0..{n_feat - 1})")
    if isinstance(position, (Tensor, list, tuple)) and torch.as_tensor(position).numel() != 1:
        position = torch.as_tensor(position, dtype=torch.long).reshape(-1)  # several positions, as circuit-tracer
        if position.numel() == 0 or not ((position >= -n_pos) & (position < n_pos)).all():
            raise AttributionInputError(f"intervention positions {position.tolist()} are not all within the "
                                        f"prompt's {n_pos} tokens (positions count the special token in front)")
    elif not isinstance(position, slice):
        if isinstance(position, (Tensor, list, tuple)):  # one position in a list or tensor: that position
            position = torch.as_tensor(position).reshape(())
        try:
            position = int(position)
        except (TypeError, ValueError, RuntimeError):
            raise AttributionInputError(f"an intervention's position is an int, a slice or a list or tensor of "
                                        f"ints, not {position!r}")
        if not -n_pos <= position < n_pos:
            raise AttributionInputError(f"intervention position {position} is outside the prompt's {n_pos} tokens "
                                        "(positions count the special token put in front)")
    return layer, position, feature, value
