"""Every KV-cached path through a bridge equals recomputing the whole sequence (issue 10).

Ground truth is a full forward over everything so far, at every step: greedy decoding must pick its argmax,
and the fast (cache-reusing) suppression path must equal the naive one, which runs each suppressed sequence
from scratch. transformers 5.24 with TransformerLens 4.3 broke all of these silently (the cache stayed empty)
while a test that compared the sampler with ``TransformerBridge.generate`` passed, both being broken alike.

The models here are loaded with ``check_cached_decoding=False``, so these tests check the decoding paths
themselves rather than rely on the load-time check. Run with ``ANCHORLENS_KV_CACHE_SHIM=0`` on transformers
5.24 and they fail; with the shim they pass.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
import torch
from packaging.version import Version

import anchorlens as al
from anchorlens.errors import CachedDecodingError
from anchorlens.hooks.kv_cache_compat import install_kv_cache_shim, remove_kv_cache_shim
from anchorlens.resampling.samplers import LocalSampler, SampleRequest, SamplingParams
from anchorlens.trace import encode_text

N_TOKENS = 48
MODELS = ["smol", "llama", "qwen2"]


@pytest.fixture(scope="module")
def models(one_torch_thread):
    return {
        "smol": al.load_model(device="cpu", check_cached_decoding=False),
        # grouped-query attention: 4 query heads share 2 key/value heads
        "llama": al.random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0,
                                 check_cached_decoding=False),
        "qwen2": al.random_model("qwen2", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=1,
                                 check_cached_decoding=False),
    }


def prompt_for(model) -> str:
    return al.problem_prompt(model, "What is 6 times 7?")


@torch.inference_mode()
def greedy_by_recomputation(model, prompt: str, n: int) -> str:
    """Greedy decoding with no cache at all: a fresh forward over the whole sequence for every token."""
    ids = encode_text(model, prompt)
    n_prompt = len(ids)
    stop = LocalSampler(model, progress=False).stop_token_ids
    for _ in range(n):
        token = int(model(torch.tensor([ids]))[0, -1].argmax())
        if token in stop:
            break
        ids.append(token)
    return model.tokenizer.decode(ids[n_prompt:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_sampler_greedy_equals_full_recomputation(models, name):
    model = models[name]
    prompt = prompt_for(model)
    expected = greedy_by_recomputation(model, prompt, N_TOKENS)
    params = SamplingParams(temperature=0, max_tokens=N_TOKENS)
    for share_prefix in (True, False):  # the prefix's cache copied across rows, or one prefill per row
        sampler = LocalSampler(model, batch_size=2, share_prefix=share_prefix, progress=False)
        got = sampler.sample([SampleRequest(prompt, seed=s) for s in (0, 1)], params)
        assert [c.n_tokens for c in got] == [N_TOKENS] * 2, "the test needs 48 decoded tokens"
        assert got[0].text == got[1].text == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_generate_trace_greedy_equals_full_recomputation(models, name):
    model = models[name]
    trace = al.generate_trace(model, "What is 6 times 7?", max_new_tokens=N_TOKENS, temperature=0)
    expected = greedy_by_recomputation(model, trace.prompt, N_TOKENS)
    assert "</think>" not in expected
    assert trace.cot == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_fast_suppression_equals_naive_recomputation(models, name):
    model = models[name]
    cot = greedy_by_recomputation(model, prompt_for(model), 64)
    if name == "smol":
        assert len(encode_text(model, cot)) >= N_TOKENS
    else:  # random models write no sentences: a fixed text of the same length
        cot = "We need 6 times 7. Six sevens are 42. Check: 7 times 6 is 42 too. So the answer is 42."
    trace = al.Trace.from_text(model, cot, prompt=prompt_for(model))
    assert trace.n_sentences >= 3 and trace.n_tokens - trace.prompt_token_end >= 20
    naive = al.suppression_matrix(model, trace, method="naive", progress=False)
    # pyproject turns a SuppressionFallbackWarning into an error: "fast" must really run the fast path
    fast = al.suppression_matrix(model, trace, method="fast", progress=False)
    assert naive.kl.nan_to_num(0).max() > 0
    torch.testing.assert_close(fast.token_kl, naive.token_kl, atol=1e-4, rtol=0, equal_nan=True)


@pytest.mark.slow
def test_load_check_refuses_a_model_whose_cache_is_not_filled(models):
    """Without the shim, transformers >= 5.24 leaves the cache empty and the load-time check refuses the
    model, naming the versions; the shim repairs it. On older transformers no shim is needed."""
    model = models["llama"]
    broken = Version(version("transformers")) >= Version("5.24")
    remove_kv_cache_shim(model)
    try:
        if broken:
            with pytest.raises(CachedDecodingError, match=r"transformers .* \(tested: "):
                al.verify_cached_decoding(model)
        else:
            al.verify_cached_decoding(model)
    finally:
        install_kv_cache_shim(model)
    al.verify_cached_decoding(model)


@pytest.mark.slow
def test_load_check_catches_wrong_decoding(models):
    """A cache that answers with the wrong positions (here: every step's key/value dropped) is refused."""
    model = models["llama"]
    attention = model.blocks[0].attn

    def forget_cache(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs.pop("past_key_values", None)
        kwargs.pop("cache", None)
        return args, kwargs

    handle = attention.register_forward_pre_hook(forget_cache, with_kwargs=True)
    try:
        with pytest.raises(CachedDecodingError, match="does not equal a full recomputation"):
            al.verify_cached_decoding(model)
    finally:
        handle.remove()
