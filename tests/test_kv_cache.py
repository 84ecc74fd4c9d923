"""``anchorlens.hooks.kv_cache`` and its users on sliding-window models, against the Hugging Face model itself.

Each step (a full-length prefix, crop, repeated and kept rows) and each user (the local sampler's rollouts, the
taxonomy labeller's shared prompt, the mediation sweep's prefix reuse) runs on random models whose sliding
windows are shorter than the sequences, and is compared with the untouched Hugging Face model's plain forward of
the whole sequence. A model whose cache holds a running state (Qwen3-Next's linear attention) cannot be cut:
suppression says so and why.
"""

from __future__ import annotations

import copy

import pytest
import torch

from anchorlens.hooks.kv_cache import (
    crop,
    forward_with_cache,
    keep_rows,
    prefix,
    repeat_rows,
    reusable,
    sliding_windows,
)
from sliding_models import WINDOW, boot, hf_random

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["olmo3", "gpt_oss"])
def family(request):
    hf_model, tokenizer = hf_random(request.param, seed=3)
    reference = copy.deepcopy(hf_model)
    return request.param, reference, boot(hf_model, tokenizer, request.param)


def tokens_of(model, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(100, model.cfg.d_vocab - 100, (1, n), generator=generator)


def test_prefix_crop_and_rows_continue_as_the_whole_sequence(family):
    name, reference, model = family
    n, cut = 4 * WINDOW, 2 * WINDOW + 3
    tokens = tokens_of(model, n)
    with torch.no_grad():
        expected = reference(tokens).logits[0]
        _, cache = forward_with_cache(model, tokens)
        assert reusable(cache, n) and cache.get_seq_length() == n
        keys = cache.layers[0].keys.clone()

        # prefix: a fresh copy, one row repeated; the baseline cache stays as it was
        more = model(tokens[:, cut:].expand(3, -1), past_key_values=prefix(cache, cut, 3))
        assert torch.equal(cache.layers[0].keys, keys) and cache.get_seq_length() == n
        for row in range(3):
            torch.testing.assert_close(more[row], expected[cut:], rtol=1e-5, atol=1e-5)

        # prefix with chosen rows, crop in place, then repeated and kept rows
        rows = prefix(cache, cut, torch.tensor([0]))
        crop(cache, cut)
        assert cache.get_seq_length() == cut and torch.equal(cache.layers[0].keys, keys[:, :, :cut])
        copies = repeat_rows(cache, 4)
        assert cache.layers[0].keys.shape[0] == 1 and copies.layers[0].keys.shape[0] == 4
        keep_rows(copies, torch.tensor([1, 3]))
        for past in (rows, cache, copies):
            batch = past.layers[0].keys.shape[0]
            logits = model(tokens[:, cut:].expand(batch, -1), past_key_values=past)
            torch.testing.assert_close(logits[-1], expected[cut:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot crop"):
        crop(cache, n + 1)


def test_window_cache_is_the_models_own(family):
    """``keep="window"``: sliding layers hold only their window (what the model's own cache keeps), so it
    cannot be cut; decoding on it still gives the model's logits."""
    name, reference, model = family
    n = 3 * WINDOW
    tokens = tokens_of(model, n + 1, seed=1)
    with torch.no_grad():
        expected = reference(tokens).logits[0, -1]
        _, own = forward_with_cache(model, tokens[:, :n], keep="window")
        lengths = [layer.keys.shape[-2] for layer in own.layers]
        assert lengths == [WINDOW - 1 if w else n for w in sliding_windows(model)]
        assert not reusable(own, n)
        step, _ = forward_with_cache(model, tokens[:, n:], past_key_values=own)
    torch.testing.assert_close(step[0, -1], expected, rtol=1e-5, atol=1e-5)


def test_local_sampler_greedy_rollouts_equal_hf_recomputation(family):
    """Rollouts decode on the prompt's cache copied over a batch (``repeat_rows``), sliding layers windowed:
    greedy tokens equal the argmax of the Hugging Face model's forward over the whole sequence at every step."""
    from anchorlens.resampling.samplers.base import SampleRequest, SamplingParams
    from anchorlens.resampling.samplers.local import LocalSampler

    name, reference, model = family
    prompt = " ".join(["The cat sat on the mat and then it ran away."] * 3)
    sampler = LocalSampler(model, batch_size=3, progress=False)
    ids = sampler._encode(prompt, 8)
    assert len(ids) > 2 * WINDOW
    expected, sequence = [], list(ids)
    with torch.no_grad():
        for _ in range(8):
            token = int(reference(torch.tensor([sequence])).logits[0, -1].argmax())
            expected.append(token)
            sequence.append(token)
    params = SamplingParams(temperature=0, max_tokens=8)
    assert sampler.continue_ids(ids, params, stop_token_ids=set()) == expected
    requests = [SampleRequest(prompt, seed=s) for s in range(3)]
    stop = model.tokenizer.eos_token_id
    for completion in sampler.sample(requests, params):
        want = expected[: expected.index(stop) + 1] if stop in expected else expected
        assert completion.n_tokens == len(want)


def test_labeller_prefix_on_a_sliding_window_model_equals_the_whole_prompt(family):
    """The labeller keeps the shared prompt's cache and crops each sentence's tokens off again: with windows
    far shorter than the shared prompt, each sentence's logits still equal one HF forward of its whole prompt."""
    from anchorlens.taxonomy.llm_labeller import _instructions, _PrefixLabeller, _sentence_part

    name, reference, model = family
    sentences = ["12 + 30 = 42.", "Wait, let me double-check that.", "So the answer is 42."]
    labeller = _PrefixLabeller(model, _instructions(False))
    assert labeller.n_shared > 4 * WINDOW
    for i in (1, 2, 1):
        own = _sentence_part(sentences, i, problem="What is 12 + 30?", context=2)
        with torch.no_grad():
            expected = reference(torch.tensor([labeller.token_ids(own)])).logits[0, -1]
        torch.testing.assert_close(labeller.logits(own), expected, rtol=1e-4, atol=1e-4)
        assert labeller.cache.get_seq_length() == labeller.n_shared


@pytest.mark.slow
def test_mediation_prefix_reuse_on_a_sliding_window_model():
    """The sweep's patched runs start from the base run's full-length cache; with a window of 4 (shorter than the
    prompts) every cell equals the sweep that recomputes the whole prompt."""
    from anchorlens.mediation import arithmetic_pairs, filter_pairs, group_by_length, mediation_sweep

    hf_model, tokenizer = hf_random("olmo3", seed=4, window=4)
    model = boot(hf_model, tokenizer, "olmo3")
    pairs = filter_pairs(model, arithmetic_pairs(n_per_template=1, operators=["addition"], seed=2),
                         require_correct=False).kept
    group = list(group_by_length(model, pairs).values())[0][:3]
    assert model.to_tokens(group[0].base).shape[1] > 2 * 4
    args = ([p.base for p in group], [p.counterfactual for p in group], [p.base_answer for p in group],
            [p.counterfactual_answer for p in group])
    reused = mediation_sweep(model, *args, component="attn_out", positions="all", progress=False)
    whole = mediation_sweep(model, *args, component="attn_out", positions="all", reuse_prefix=False,
                            reuse_layers=False, progress=False)
    torch.testing.assert_close(reused.patched_logit_diff, whole.patched_logit_diff, atol=1e-5, rtol=0)
    assert whole.values("logit_diff").nan_to_num().abs().max() > 1e-4


def test_a_linear_attention_cache_falls_back_and_says_why():
    """Qwen3-Next's linear-attention layers keep a running state, not per-position keys: no full-length cache,
    and suppression's baseline warns that it recomputes every sentence, naming the cache's layer types."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from anchorlens.hooks.kv_cache import full_length_cache
    from anchorlens.models import _check, embedded_model_dir
    from anchorlens.suppression import SuppressionFallbackWarning
    from anchorlens.suppression.runner import run_baseline

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = AutoConfig.for_model(
        "qwen3_next", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_num_value_heads=4, linear_num_key_heads=2,
        linear_key_head_dim=16, linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=32, shared_expert_intermediate_size=32, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    hf_model.config.architectures = [type(hf_model).__name__]
    model = TransformerBridge.boot_transformers("qwen3_next", hf_model=hf_model, tokenizer=tokenizer, device="cpu",
                                                dtype=torch.float32)
    _check(model, True, True)
    assert full_length_cache(model) is None
    with pytest.warns(SuppressionFallbackWarning, match="LinearAttentionLayer.*running state"):
        baseline = run_baseline(model, tokens_of(model, 20), 0.6)
    assert baseline.cache is None
