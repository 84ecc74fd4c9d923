"""Greedy decoding under hooks on a KV cache (``greedy_generate(hooks=...)``) against its definition: a full forward
over the whole sequence at every step, with the same edits at the same absolute positions, then the argmax.

Two kinds of hooks: a hand-written steering hook on the residual stream (the decoder's position bookkeeping, on
Llama, Qwen3 and Gemma 3 with sliding windows shorter than the sequence), and the feature interventions of
``feature_intervention_generate`` (prompt positions frozen as circuit-tracer's first step, open-ended positions on
every new token) with the transcoders of the circuit-tracer cases. Tokens equal; logits and activations to 1e-4.
"""

from __future__ import annotations

import functools

import pytest
import torch

import anchorlens as al
from anchorlens.generation import greedy_generate
from anchorlens.hooks.feature_intervention import clean_pass, intervened_pass
from attribution_cases import CASES, case_transcoders

N_NEW = 16
PROMPT = "The capital of France is"


def naive_greedy(model, tokens, n_new: int, hooks_at_zero):
    """The definition: the whole sequence through the model with ``hooks_at_zero()`` at every step; argmax of
    the last position. Returns the tokens and the last step's logits (every position but the last new token's)."""
    sequence = tokens
    for _ in range(n_new):
        with torch.no_grad(), model.hooks(fwd_hooks=hooks_at_zero()):
            logits = model(sequence[None])[0]
        sequence = torch.cat([sequence, logits[-1].argmax().reshape(1)])
    return sequence[len(tokens):], logits


def steering(model, direction, every: int = 3):
    """Positional hooks: add ``direction`` to layer 1's residual stream at absolute positions divisible by
    ``every``, the first token excluded (``hooks(start)`` for a forward whose first token is at ``start``)."""
    def hooks(start: int):
        def add(resid, hook):
            positions = torch.arange(start, start + resid.shape[1])
            on = ((positions % every == 0) & (positions > 0)).to(resid.dtype)
            return resid + on[None, :, None] * direction
        return [("blocks.1.hook_resid_pre", add)]
    return hooks


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_greedy_decoding_under_positional_hooks_equals_full_recomputation(family, one_torch_thread):
    """The prompt at start 0, then each new token at its own position, on the KV cache (Gemma 3's sliding layers
    windowed at 4 positions, fewer than the sequence): the tokens and logits of a full forward per step."""
    model = al.random_model(family, n_layers=2, sliding_window=4 if family == "gemma3" else None, seed=3)
    tokens = model.to_tokens(PROMPT)[0]
    direction = 4.0 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    hooks = steering(model, direction)
    new, logits = greedy_generate(model, tokens[None], N_NEW, stop_at_eos=False, hooks=hooks, return_logits=True)
    want, want_logits = naive_greedy(model, tokens, N_NEW, lambda: hooks(0))
    assert new[0].tolist() == want.tolist()
    assert logits.shape == want_logits.shape == (len(tokens) + N_NEW - 1, model.cfg.d_vocab)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
    # the steering acts on new tokens: without it the continuation differs (so the comparison above can fail)
    assert new[0].tolist() != greedy_generate(model, tokens[None], N_NEW, stop_at_eos=False)[0].tolist()


# (transcoder case, interventions, freeze_attention, constrained_layers); slice(k, None) is open-ended: every new
# token gets it too. The layer-0 open-ended intervention switches feature 6 on hard, so new tokens feel it.
SETTINGS = {
    "frozen attention": ("tiny_llama_relu", [(0, 5, 2, 0.0), (1, [3], 7, 8.0), (0, slice(1, None), 6, 10.0)],
                         True, None),
    "free attention": ("tiny_llama_relu", [(0, 5, 2, 0.0), (1, [3], 7, 8.0), (0, slice(1, None), 6, 10.0)],
                       False, None),
    "some MLPs frozen": ("tiny_llama_relu", [(0, 5, 2, 0.0), (1, slice(2, None), 7, 8.0), (0, slice(-2, None), 6, 10.0)],
                         True, [0]),
    "every MLP and norm frozen": ("tiny_llama_jumprelu_skip", [(0, 5, 1, 0.0), (1, slice(3, None), 3, 6.0),
                                                               (2, slice(1, None), 12, 5.0)], True, [0, 1, 2]),
    "cross-layer transcoder": ("tiny_llama_clt", [(0, 5, 2, 0.0), (1, slice(2, None), 7, 8.0),
                                                 (0, torch.tensor([1, 4]), 6, 10.0), (0, slice(3, None), 5, 6.0)],
                               True, None),
}


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_generation_under_interventions_equals_full_recomputation(family, setting, one_torch_thread):
    """feature_intervention_generate (KV cache) against the definition: every step the whole sequence under
    ``intervened_pass`` (the prompt frozen as in the first step, the open-ended interventions on every new token
    against its own activations), argmax. Tokens equal; logits and activations of every position to 1e-4."""
    name, interventions, freeze, constrained = SETTINGS[setting]
    case = CASES[name]
    model = case_model(family, case["n_layers"], case["seed"])
    generation_equals_full_recomputation(model, case_transcoders(case), interventions, freeze, constrained)


@functools.lru_cache(maxsize=None)
def case_model(family: str, n_layers: int, seed: int):
    """The circuit-tracer cases' model shape in ``family`` (shared by the settings: hooks leave it as it was)."""
    case = CASES["tiny_llama_relu"]
    return al.random_model(family, n_layers=n_layers, d_model=case["d_model"], n_heads=case["n_heads"],
                           n_kv_heads=case["n_kv_heads"], seed=seed)


def test_generation_under_interventions_on_smollm2_equals_full_recomputation(smol, one_torch_thread):
    """The same on the embedded SmolLM2 (30 layers), frozen attention, open-ended interventions. Moderate ones: with
    feature 6 of layer 0 set to 10 at every position as well, float32 rounding of the definition itself reaches
    1.2e-3 on a logit (two uncached passes of different lengths differ that much on the same earlier position), and
    the cached decoding differs from it by up to 2.4e-3 (tokens equal): the same order, but not within 1e-4."""
    case = CASES["smollm2_relu"]
    interventions = [(3, 5, 2, 0.0), (10, slice(2, None), 7, 8.0)]
    generation_equals_full_recomputation(smol, case_transcoders(case), interventions, True, None, n_new=8)


def generation_equals_full_recomputation(model, transcoders, interventions, freeze, constrained, n_new=N_NEW):
    result = al.feature_intervention_generate(model, transcoders, PROMPT, interventions, max_new_tokens=n_new,
                                              freeze_attention=freeze, constrained_layers=constrained,
                                              progress=False)
    # the reference, from the definition (positions resolved among the prompt's; open-ended ones kept apart)
    tokens = result.tokens[: result.n_prompt]
    n_prompt, n_layers = len(tokens), model.cfg.n_layers
    at_prompt = [(layer, torch.arange(n_prompt)[torch.as_tensor(p) if isinstance(p, list) else p].reshape(-1), f, v)
                 for layer, p, f, v in interventions]
    open_ended = [(layer, f, v) for layer, p, f, v in interventions if isinstance(p, slice) and p.stop is None]
    frozen = None if constrained is None else set(constrained)
    all_frozen = frozen == set(range(n_layers))
    transcoders = transcoders.to(tokens.device, torch.float32)
    clean = clean_pass(model, transcoders, tokens, patterns=True, mlps=frozen is not None, scales=all_frozen)
    clean = clean if freeze or frozen is not None else None

    def run(sequence, open_ended):
        return intervened_pass(model, transcoders, sequence, at_prompt, clean, frozen, n_prompt=n_prompt,
                               open_ended=open_ended)

    sequence = tokens
    for _ in range(n_new):
        logits, acts = run(sequence, open_ended)
        sequence = torch.cat([sequence, logits[-1].argmax().reshape(1)])
    assert result.tokens.tolist() == sequence.tolist()
    assert not (result.logits.is_inference() or result.activations.is_inference())  # a caller may edit them
    assert result.logits.shape == logits.shape == (n_prompt + n_new - 1, model.cfg.d_vocab)
    torch.testing.assert_close(result.logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(result.activations, acts, rtol=1e-4, atol=1e-4)
    # the comparison can fail: the interventions change the continuation, and those on new tokens matter
    assert result.text != result.clean_text
    prompt_only, _ = run(sequence[:-1], ())
    assert not torch.allclose(prompt_only[n_prompt:], logits[n_prompt:], atol=1e-2)


def test_intervention_hooks_refuse_a_forward_that_splits_the_prompt(one_torch_thread):
    """A forward holds the whole prompt or starts after it (the prompt's frozen values are whole-prompt tensors)."""
    from anchorlens.hooks.feature_intervention import InterventionHooks

    case = CASES["tiny_llama_relu"]
    model = case_model("llama", case["n_layers"], case["seed"])
    transcoders = case_transcoders(case)
    hooks = InterventionHooks(model, transcoders, [], None, None, n_prompt=6)
    assert hooks(0) and hooks(6)
    with pytest.raises(ValueError, match="starts at 0 or after"):
        hooks(3)
    # a position in a one-element list is that position; a position that is no integer is refused clearly
    one = al.feature_intervention(model, transcoders, PROMPT, [(0, [3], 7, 8.0)])
    torch.testing.assert_close(one.logits, al.feature_intervention(model, transcoders, PROMPT, [(0, 3, 7, 8.0)]).logits)
    with pytest.raises(al.AttributionInputError, match="position is an int"):
        al.feature_intervention(model, transcoders, PROMPT, [(0, "end", 7, 8.0)])
