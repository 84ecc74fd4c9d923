"""Head ablation: exactly the ablated heads' contribution is removed (checked by hand against W_O),
on GQA models; hooks persist through generation and are removed afterwards, also on exceptions;
and the receiver-vs-random experiment runs end to end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from anchorlens import Trace
from anchorlens.errors import AnchorlensError
from anchorlens.receivers import (
    HeadAblationResult,
    HeadSelectionError,
    ablate_heads,
    greedy_generate,
    head_ablation_experiment,
    head_means,
    planted_receiver_model,
    random_head_sets,
)
from anchorlens.receivers.ablation import continuation_logprob

TOKENS = torch.tensor([[1, 504, 3458, 314, 4649, 314, 260, 1345, 28, 2458, 5600, 30, 378]])


def run_layer(model, layer, tokens):
    names = [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.attn.hook_out"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return cache[names[0]], cache[names[1]]


def w_o(model, layer):
    """``[d_model, n_heads * d_head]``: the output projection, straight from the Hugging Face module."""
    return model.original_model.model.layers[layer].self_attn.o_proj.weight


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen"])
@pytest.mark.parametrize("heads", [[0], [1, 2], [0, 1, 2, 3]], ids=["one", "two-kv-groups", "all"])
def test_zero_ablation_removes_exactly_the_heads_contribution(request, fixture, heads):
    model = request.getfixturevalue(fixture)
    assert model.cfg.n_heads == 4 and model.cfg.n_key_value_heads == 2  # GQA: 2 query heads per KV head
    layer, d_head = 1, model.cfg.d_head
    z, out = run_layer(model, layer, TOKENS)
    assert z.shape[2] == model.cfg.n_heads  # hook_z is per query head
    with ablate_heads(model, [(layer, h) for h in heads]):
        _, ablated = run_layer(model, layer, TOKENS)
    weight = w_o(model, layer)
    removed = sum(z[0, :, h] @ weight[:, h * d_head : (h + 1) * d_head].T for h in heads)
    torch.testing.assert_close(ablated[0], out[0] - removed, atol=1e-5, rtol=1e-5)
    assert (ablated - out).abs().max() > 1e-3  # it did something


def test_mean_ablation_replaces_the_output_by_its_mean(tiny_llama):
    model, layer, d_head = tiny_llama, 1, tiny_llama.cfg.d_head
    means = head_means(model, TOKENS)
    assert means.shape == (2, 4, d_head)
    z, out = run_layer(model, layer, TOKENS)
    torch.testing.assert_close(means[layer], z[0].mean(0))
    with ablate_heads(model, [(layer, 2)], method="mean", means=means):
        _, ablated = run_layer(model, layer, TOKENS)
    slice_ = w_o(model, layer)[:, 2 * d_head : 3 * d_head]
    expected = out[0] - (z[0, :, 2] - means[layer, 2]) @ slice_.T
    torch.testing.assert_close(ablated[0], expected, atol=1e-5, rtol=1e-5)


def test_hooks_are_removed_after_the_block_even_on_exceptions(tiny_qwen):
    baseline = tiny_qwen(TOKENS)
    with pytest.raises(ZeroDivisionError):
        with ablate_heads(tiny_qwen, [(0, 1), (1, 3)]):
            assert not torch.allclose(tiny_qwen(TOKENS), baseline)
            1 / 0
    assert not any(point.fwd_hooks for point in tiny_qwen.hook_dict.values())
    torch.testing.assert_close(tiny_qwen(TOKENS), baseline, atol=0, rtol=0)


@pytest.mark.slow
def test_generation_inside_the_block_is_ablated_at_every_step(tiny_llama):
    """Greedy generation with the KV cache under ablation = step-by-step full forwards under ablation."""
    model, heads, steps = tiny_llama, [(0, 0), (0, 1), (1, 1), (1, 2)], 8
    with ablate_heads(model, heads):
        generated = model.generate(TOKENS, max_new_tokens=steps, do_sample=False, verbose=False, stop_at_eos=False)
        tokens = TOKENS
        for _ in range(steps):
            tokens = torch.cat([tokens, model(tokens)[:, -1:].argmax(-1)], dim=1)
        fast = greedy_generate(model, TOKENS, steps, stop_at_eos=False)  # the experiment's KV-cache loop
    plain = TOKENS  # without ablation, by full forwards too: both cached paths (generate, the loop) could be wrong alike
    for _ in range(steps):
        plain = torch.cat([plain, model(plain)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, tokens)
    assert torch.equal(fast, generated[:, TOKENS.shape[1] :])
    assert not torch.equal(generated, plain)
    assert torch.equal(model.generate(TOKENS, max_new_tokens=steps, do_sample=False, verbose=False, stop_at_eos=False),
                       plain)
    assert torch.equal(greedy_generate(model, TOKENS, steps, stop_at_eos=False), plain[:, TOKENS.shape[1] :])


def test_bad_ablation_requests_are_refused(tiny_llama):
    with pytest.raises(HeadSelectionError, match="outside the model"):
        with ablate_heads(tiny_llama, [(2, 0)]):
            pass
    with pytest.raises(HeadSelectionError, match="pair"):
        with ablate_heads(tiny_llama, [3]):
            pass
    with pytest.raises(AnchorlensError, match="unknown ablation method"):
        with ablate_heads(tiny_llama, [(1, 0)], method="resample"):
            pass
    with pytest.raises(AnchorlensError, match="head_means"):
        with ablate_heads(tiny_llama, [(1, 0)], method="mean"):
            pass
    assert not any(point.fwd_hooks for point in tiny_llama.hook_dict.values())


def test_random_head_sets_avoid_the_target_and_excluded_layers():
    sets = random_head_sets(4, 3, size=3, n_sets=25, avoid=[(1, 0), (2, 2)], seed=1)
    assert len(sets) == 25 and all(len(set(s)) == 3 for s in sets)
    assert all(layer != 0 and (layer, head) not in {(1, 0), (2, 2)} for s in sets for layer, head in s)
    assert sets == random_head_sets(4, 3, size=3, n_sets=25, avoid=[(1, 0), (2, 2)], seed=1)
    with pytest.raises(HeadSelectionError, match="cannot draw"):
        random_head_sets(2, 2, size=3, n_sets=1)


@pytest.mark.slow
def test_ablation_experiment_end_to_end(tmp_path):
    model = planted_receiver_model()
    text = "We add the numbers. This is the anchor of it. Then we subtract two. The answer is five."
    traces = [Trace.from_text(model, text, prompt="Problem: compute.\n")]
    pairs = [("Question: what is two plus three?\n", "Two plus three is five, so the answer is five.")]
    result = head_ablation_experiment(
        model, [(1, 3), (2, 0)], continuations=traces + pairs, problems=[("What is 2 + 3?", "5")],
        n_random=4, max_new_tokens=4, progress=False,
    )
    assert result.conditions == ["none", "receiver heads", "random 0", "random 1", "random 2", "random 3"]
    assert result.logprob.shape == (6, 2) and result.correct.shape == (6, 1)
    assert result.deltas()["none"] == 0.0
    # each number is the log-prob under that head set's ablation, recomputed here by hand
    tokens = traces[0].tokens()
    with ablate_heads(model, result.head_sets["random 2"]):
        expected = continuation_logprob(model, tokens, traces[0].prompt_token_end)
    # The experiment runs fused (SDPA) attention by default, the forward here eager: float rounding apart.
    assert result.logprob[4, 0].item() == pytest.approx(expected, abs=1e-6)
    assert result.logprob[0, 0].item() == pytest.approx(continuation_logprob(model, tokens, traces[0].prompt_token_end))
    assert all(len(answers) == 1 for answers in result.answers.values())

    summary = result.comparison("logprob")
    low, high = summary["target_ci"]
    assert low <= summary["target_delta"] <= high
    assert 0 < summary["p_value"] <= 1
    frame = result.to_dataframe()
    assert list(frame.condition) == result.conditions and "delta_accuracy" in frame
    assert result.plot() is not None and result.plot("accuracy") is not None
    loaded = HeadAblationResult.load(result.save(tmp_path / "ablation"))
    assert loaded.head_sets == result.head_sets and torch.equal(loaded.logprob, result.logprob)


def test_ablation_experiment_refuses_bad_input(tiny_llama):
    with pytest.raises(AnchorlensError, match="nothing to measure"):
        head_ablation_experiment(tiny_llama, [(1, 0)], progress=False)
    with pytest.raises(AnchorlensError, match="continuation"):
        head_ablation_experiment(tiny_llama, [(1, 0)], continuations=["just a string"], progress=False)
    with pytest.raises(HeadSelectionError):
        head_ablation_experiment(tiny_llama, [], continuations=[("a", "b")], progress=False)
