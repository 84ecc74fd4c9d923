"""Causal mediation analysis: prompts, filter, batched sweeps against TransformerLens's own patching and a
one-cell-per-forward implementation, metrics on ground truth, the model organism and the paper's picture."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import patching

import anchorlens as al
from anchorlens.errors import AnchorlensError
from anchorlens.mediation import (
    COMPONENTS,
    MediationInputError,
    OPERATORS,
    TEMPLATES,
    MediationResult,
    MultiTokenAnswerError,
    PositionError,
    UnequalLengthError,
    UnknownComponentError,
    arithmetic_pairs,
    encode_pairs,
    factual_facts,
    factual_pairs,
    filter_pairs,
    group_by_length,
    mediation_sweep,
    naive_sweep,
    retrieval_pairs,
)
from anchorlens.mediation.metrics import stolfo_effect
from anchorlens.mediation.organism import arithmetic_organism, shuffled_weights
from anchorlens.mediation.overlap import top_k_overlap
from anchorlens.mediation.findings import mediation_picture
from anchorlens.mediation.prompts import apply

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def organism():
    return arithmetic_organism(progress=False)


def columns(pairs):
    return ([p.base for p in pairs], [p.counterfactual for p in pairs], [p.base_answer for p in pairs],
            [p.counterfactual_answer for p in pairs])


@pytest.fixture(scope="module")
def organism_pairs(organism):
    """Six equal-length pairs the organism answers right: operands and operator counterfactuals."""
    pairs = [p for p in arithmetic_pairs(n_per_template=3, result_range=(0, 99), pair_types=["operands", "operator"],
                                         seed=5) if p.template.endswith("/1")]
    kept = filter_pairs(organism, pairs).kept
    return list(group_by_length(organism, kept).values())[0][:6]


# ---------------------------------------------------------------- prompts


@pytest.mark.slow
def test_templates_and_pair_types():
    assert set(TEMPLATES) == set(OPERATORS) and all(len(t) == 6 for t in TEMPLATES.values())
    pairs = arithmetic_pairs(n_per_template=2, operand_range=(1, 9), result_range=(0, 99), seed=0)
    assert {p.template for p in pairs} == {f"{op}/{t}" for op in OPERATORS for t in range(6)}
    assert pairs == arithmetic_pairs(n_per_template=2, operand_range=(1, 9), result_range=(0, 99), seed=0)
    for p in pairs:
        if p.pair_type == "operands":
            assert p.base_answer != p.counterfactual_answer
        elif p.pair_type == "same_result":
            assert p.base_answer == p.counterfactual_answer and p.base != p.counterfactual
        else:  # same operands, other operator: the numbers of the two prompts are the same
            assert p.pair_type == "operator"
            assert [w for w in p.base.split() if w.strip("?").isdigit()] == \
                   [w for w in p.counterfactual.split() if w.strip("?").isdigit()]
            assert p.base_answer != p.counterfactual_answer
    addition = [p for p in pairs if p.template == "addition/5"][0]  # "{x} + {y} =": the answer is right
    x, _, y, _ = addition.base.split()
    assert int(addition.base_answer) == apply("addition", int(x), int(y))


def test_words_retrieval_and_factual():
    words = arithmetic_pairs(n_per_template=1, words=True, result_range=(0, 20), seed=1)
    assert all(not any(c.isdigit() for c in p.base) for p in words)
    retrieval = retrieval_pairs(n=10, seed=0)
    assert all(p.base.startswith("I have ") and "How many" in p.base for p in retrieval)
    assert all(p.base_answer != p.counterfactual_answer for p in retrieval)
    facts = factual_facts()
    assert "common knowledge" in facts["source"] and "CC0" in facts["licence"]
    factual = factual_pairs()
    assert len(factual) >= 50 and all(p.base_answer != p.counterfactual_answer for p in factual)


def test_filter_drops_with_reasons(tiny_llama):
    pairs = arithmetic_pairs(n_per_template=8, operators=["addition"], result_range=(0, 99), operand_range=(1, 9),
                             pair_types=["operands"], seed=0)
    report = filter_pairs(tiny_llama, pairs)   # SmolLM2's tokenizer: "12" is two digits; a random model is wrong
    table = report.to_dataframe()
    assert table["generated"].sum() == len(pairs) == report.n_generated
    assert table["multi_token_answer"].sum() > 0
    assert table["kept"].sum() == report.n_kept == 0
    assert (table["base_wrong"] + table["counterfactual_wrong"]).sum() > 0
    lenient = filter_pairs(tiny_llama, pairs, require_correct=False)
    assert lenient.n_kept > 0 and all(p.base.endswith("A: ") or p.base.endswith("= ") or p.base.endswith("is ")
                                      for p in lenient.kept)  # the split leading space moved into the prompt


# ---------------------------------------------------------------- bad input


def test_bad_input_errors(organism):
    good = ["Q: What is 3 plus 4? A:"], ["Q: What is 5 plus 1? A:"], [" 7"], [" 6"]
    with pytest.raises(UnequalLengthError, match="token"):
        mediation_sweep(organism, ["Q: What is 3 plus 4? A:"], ["What is 3 plus 4? A:"], [" 7"], [" 7"])
    with pytest.raises(MultiTokenAnswerError, match="tokens"):
        mediation_sweep(organism, *good[:2], [" 7 plus"], [" 6"])
    with pytest.raises(UnknownComponentError, match="mlp_out_dim"):
        mediation_sweep(organism, *good, component="mlp")
    with pytest.raises(PositionError, match="0..10"):
        mediation_sweep(organism, *good, positions=[11])
    with pytest.raises(AnchorlensError, match="list"):
        mediation_sweep(organism, "Q: What is 3 plus 4? A:", *good[1:])
    with pytest.raises(AnchorlensError, match="metric"):
        mediation_sweep(organism, *good, metric="kl")
    for error in (UnequalLengthError, MultiTokenAnswerError, UnknownComponentError, PositionError):
        assert issubclass(error, AnchorlensError)


# ---------------------------------------------------------------- the batched sweep is exact


UNITS = {"head": [0, 3], "dim": [1, 64, 127], "neuron": [0, 200, 511]}


@pytest.fixture(scope="module", autouse=True)
def strong_units(organism, organism_pairs):
    """Two of the strongest MLP dims and hidden units at the last position, plus a weak one, so that the
    comparisons below see effects far above their tolerance."""
    for component, kind in (("mlp_out_dim", "dim"), ("mlp_post", "neuron")):
        effect = mediation_sweep(organism, *columns(organism_pairs), component=component, metric="logit_diff")
        strongest = effect.effects[:, 0].abs().amax(0).argsort(descending=True)[:2].tolist()
        UNITS[kind] = sorted(set(strongest) | {UNITS[kind][0]})


@pytest.mark.slow
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_batched_equals_one_cell_per_forward(organism, organism_pairs, component):
    units = UNITS.get(COMPONENTS[component].unit)
    pairs = organism_pairs[:3]
    fast = mediation_sweep(organism, *columns(pairs), component=component, positions="all", units=units,
                           chunk_size=50, layer_span=1)   # every forward enters at its own layer
    slow = naive_sweep(organism, *columns(pairs), component=component, positions="all", units=units)
    assert fast.effects.shape == (4, 11) + ((len(units),) if units else ())
    # the metrics (scale 1) to 1e-5; raw logits (scale 10-40; batch shapes change float32 rounding) to 1e-4
    for metric in ("logit_diff", "logprob_base", "logprob_counterfactual"):
        torch.testing.assert_close(fast.values(metric), slow.values(metric), atol=1e-5, rtol=0, equal_nan=True)
    torch.testing.assert_close(fast.values("stolfo_ie"), slow.values("stolfo_ie"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.patched_logit_diff, slow.patched_logit_diff, atol=1e-4, rtol=0)
    assert fast.values("logit_diff").nan_to_num().abs().max() > 1e-3, "cells with effects 100x the tolerance"


@pytest.mark.slow
def test_batched_on_gqa_qwen_with_mixed_lengths(tiny_qwen):
    pairs = filter_pairs(tiny_qwen, arithmetic_pairs(n_per_template=1, operators=["addition"], seed=2),
                         require_correct=False).kept[:5]
    assert len({tiny_qwen.to_tokens(p.base).shape[1] for p in pairs}) > 1   # "last" takes prompts of any length
    for component, units in (("head_out", None), ("head_pattern", [1, 2]), ("mlp_post", [3, 9])):
        fast = mediation_sweep(tiny_qwen, *columns(pairs), component=component, units=units, chunk_size=3)
        slow = naive_sweep(tiny_qwen, *columns(pairs), component=component, units=units)
        torch.testing.assert_close(fast.patched_logit_diff, slow.patched_logit_diff, atol=1e-5, rtol=0)
    with pytest.raises(AnchorlensError, match="one token length"):
        mediation_sweep(tiny_qwen, *columns(pairs), positions="all")


@pytest.mark.slow
def test_fused_sweep_equals_eager_one_cell_per_forward(organism, organism_pairs, tiny_qwen):
    """Sweeps run fused (SDPA) attention by default; the reference runs eager, one forward per cell."""
    pairs = organism_pairs[:3]
    for component in ("head_out", "resid_pre", "attn_out"):
        fused = mediation_sweep(organism, *columns(pairs), component=component, positions="all", attention="sdpa")
        eager = naive_sweep(organism, *columns(pairs), component=component, positions="all")
        torch.testing.assert_close(fused.values("stolfo_ie"), eager.values("stolfo_ie"), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused.patched_logit_diff, eager.patched_logit_diff, atol=1e-4, rtol=0)
        assert fused.values("logit_diff").abs().max() > 1e-2  # control: effects far above the tolerance
    qwen_pairs = filter_pairs(tiny_qwen, arithmetic_pairs(n_per_template=1, operators=["addition"], seed=2),
                              require_correct=False).kept[:4]  # grouped-query heads, prompts of several lengths
    fused = mediation_sweep(tiny_qwen, *columns(qwen_pairs), component="head_out", attention="sdpa", chunk_size=3)
    eager = naive_sweep(tiny_qwen, *columns(qwen_pairs), component="head_out")
    torch.testing.assert_close(fused.patched_logit_diff, eager.patched_logit_diff, atol=1e-5, rtol=0)
    with pytest.raises(MediationInputError, match="pattern"):
        mediation_sweep(organism, *columns(pairs), component="head_pattern", attention="sdpa")
    with pytest.raises(MediationInputError, match="attention"):
        mediation_sweep(organism, *columns(pairs), attention="flash")


def _tl_metric(model, pairs_tokens):
    """Per pair, the normalised logit difference at the last position (0: base run, 1: counterfactual run)."""
    answers = torch.stack([pairs_tokens.base_answer, pairs_tokens.counterfactual_answer], -1)

    def logit_diff(logits):
        last = logits[:, -1].float()
        return last.gather(-1, answers[:, :1])[:, 0] - last.gather(-1, answers[:, 1:])[:, 0]

    base = logit_diff(model(pairs_tokens.base_tokens))
    counterfactual = logit_diff(model(pairs_tokens.counterfactual_tokens))
    return lambda logits: (logit_diff(logits) - base) / (counterfactual - base)


def _tl_generic(organism, tokens, cache, metric, name, units):
    import pandas as pd

    rows = [(layer, pos, unit) for layer in range(4) for pos in range(tokens.shape[1]) for unit in units]

    def setter(corrupted, index, clean):
        corrupted[:, index[1], index[2]] = clean[:, index[1], index[2]]
        return corrupted

    result = patching.generic_activation_patch(
        organism, tokens, cache, metric, setter, name, index_df=pd.DataFrame(rows, columns=["layer", "pos", "unit"]),
        reduce="none")
    return result.values.reshape(4, tokens.shape[1], len(units), -1).permute(3, 0, 1, 2)


@pytest.mark.slow
def test_batched_equals_transformer_lens_patching(organism, organism_pairs):
    """TransformerLens 4's own patching (transformer_lens.patching) runs on the bridge: one forward per cell
    over all pairs (base = its corrupted run, counterfactual = its clean cache)."""
    encoded = encode_pairs(organism, *columns(organism_pairs))[0]
    _, cf_cache = organism.run_with_cache(encoded.counterfactual_tokens)
    metric = _tl_metric(organism, encoded)
    base = encoded.base_tokens
    tl = {
        "resid_pre": patching.get_act_patch_resid_pre(organism, base, cf_cache, metric, reduce="none").values,
        "attn_out": patching.get_act_patch_attn_out(organism, base, cf_cache, metric, reduce="none").values,
        "mlp_out": patching.get_act_patch_mlp_out(organism, base, cf_cache, metric, reduce="none").values,
        "head_out": patching.get_act_patch_attn_head_out_by_pos(organism, base, cf_cache, metric,
                                                                reduce="none").values,
        # TransformerLens orders pattern cells (layer, head, query position)
        "head_pattern": patching.get_act_patch_attn_head_pattern_by_pos(organism, base, cf_cache, metric,
                                                                        reduce="none").values.transpose(1, 2),
    }
    tl = {k: v.movedim(-1, 0) for k, v in tl.items()}
    tl["mlp_out_dim"] = _tl_generic(organism, base, cf_cache, metric, "mlp_out", UNITS["dim"])
    tl["mlp_post"] = _tl_generic(organism, base, cf_cache, metric, "post", UNITS["neuron"])
    for component, expected in tl.items():
        unit = COMPONENTS[component].unit
        ours = mediation_sweep(organism, *columns(organism_pairs), component=component, positions="all",
                               units=None if unit == "head" else UNITS.get(unit))   # TransformerLens: every head
        torch.testing.assert_close(ours.values("logit_diff"), expected.float(), atol=1e-5, rtol=0, msg=component)


@pytest.mark.slow
def test_chunking_and_prefix_reuse_do_not_change_results(organism, organism_pairs):
    args = columns(organism_pairs[:3])
    reference = mediation_sweep(organism, *args, component="head_out", positions="all", reuse_prefix=False,
                                reuse_layers=False)
    for chunk_size, layer_span in ((5, None), (10_000, None), (7, 2)):
        other = mediation_sweep(organism, *args, component="head_out", positions="all", chunk_size=chunk_size,
                                layer_span=layer_span)
        torch.testing.assert_close(other.patched_logit_diff, reference.patched_logit_diff, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- metrics on ground truth


def test_metrics_on_ground_truth(organism, organism_pairs):
    args = columns(organism_pairs)
    result = mediation_sweep(organism, *args, component="resid_pre", positions="all")
    # a pair whose prompts differ at one token only (an operator pair): patching the residual stream there,
    # before layer 0, gives the counterfactual prompt's own run: logit difference 1, Stolfo effect = total effect
    encoded = encode_pairs(organism, *args)[0]
    differ = encoded.base_tokens != encoded.counterfactual_tokens
    single = [i for i in range(len(args[0])) if differ[i].sum() == 1]
    assert single, "the fixture pairs include operator pairs"
    for i in single:
        position = int(differ[i].nonzero())
        assert abs(result.values("logit_diff")[i, 0, position].item() - 1) < 1e-5
        assert math.isclose(result.values("stolfo_ie")[i, 0, position].item(), result.total_effect()[i].item(),
                            rel_tol=1e-4)
    # patching a position where base and counterfactual tokens agree, before anything can differ: no effect
    torch.testing.assert_close(result.values("logit_diff")[:, 0, 1], torch.zeros(len(args[0])), atol=1e-6, rtol=0)
    # Stolfo's formula, by hand, for one cell
    p, p_star = result.base_logprobs[0].exp(), result.patched_logprobs[0, 2, 5].exp()
    by_hand = 0.5 * ((p[0] - p_star[0]) / p_star[0] + (p_star[1] - p[1]) / p[1])
    assert math.isclose(result.values("stolfo_ie")[0, 2, 5].item(), by_hand.item(), rel_tol=1e-5)
    assert stolfo_effect(result.base_logprobs, result.base_logprobs).abs().max() == 0
    mean, low, high = result.mean("logit_diff")
    assert (low <= mean + 1e-6).all() and (mean <= high + 1e-6).all()


def test_result_table_plot_save_load(organism, organism_pairs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    result = mediation_sweep(organism, *columns(organism_pairs), component="mlp_out_dim", units=[0, 5, 9])
    assert result.effects.shape == (4, 1, 3) and result.dims == ("layer", "position", "dim")
    frame = result.to_dataframe()
    assert len(frame) == 12 and {"layer", "dim", "stolfo_ie", "logit_diff_ci_low"} <= set(frame.columns)
    assert result.plot() is not None
    path = result.save(tmp_path / "result")
    loaded = MediationResult.load(path)
    torch.testing.assert_close(loaded.effects, result.effects, equal_nan=True)
    assert loaded.pairs == result.pairs and loaded.units == [0, 5, 9]
    with pytest.raises(ValueError, match="MediationResult"):
        al.SuppressionMatrix.load(path)


# ---------------------------------------------------------------- neuron overlap


def test_top_k_overlap_on_planted_sets():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(30, 576, generator=generator)
    same = top_k_overlap(a, a * 2 + 1, k=400, n_permutations=200)
    assert same.overlap == 1.0 and same.p_value < 0.01 and math.isclose(same.chance, 400 / (30 * 576))
    independent = top_k_overlap(a, torch.rand(30, 576, generator=generator), k=400, n_permutations=200)
    assert independent.overlap < 0.1 and independent.p_value > 0.01
    half = a.clone().flatten()
    order = half.argsort(descending=True)
    half[order[200:400]] = -1.0                       # drop half of a's top 400 from b's
    partial = top_k_overlap(a, half.reshape(30, 576), k=400, n_permutations=200)
    assert 0.45 <= partial.overlap <= 0.55


# ---------------------------------------------------------------- the organism and the paper's picture


def test_organism_answers_held_out_prompts(organism):
    info = organism.anchorlens_organism
    assert info["held_out_accuracy"] >= 0.95 and info["n_held_out"] >= 200
    from anchorlens.mediation.pairs import predictions
    from anchorlens.mediation.organism import organism_prompts

    _, held_out = organism_prompts(seed=info["seed"])
    assert [p for p, _ in held_out] == info["held_out_prompts"]
    guesses = predictions(organism, [p for p, _ in held_out], batch_size=128)
    right = sum(g == organism.tokenizer.encode(a, add_special_tokens=False)[0] for g, (_, a) in zip(guesses, held_out))
    assert right / len(held_out) >= 0.95


@pytest.mark.slow
def test_paper_picture_on_the_organism_and_not_on_its_shuffled_control():
    model = arithmetic_organism(progress=False)
    pairs = [p for p in arithmetic_pairs(n_per_template=6, result_range=(0, 99), pair_types=["operands", "operator"],
                                         seed=3) if p.template.endswith("/1")]
    pairs = filter_pairs(model, pairs).kept
    assert len(pairs) >= 40
    flow = mediation_picture(model, pairs)
    assert flow.holds, flow.checks()
    # numbers: information at the operands/operator at layer 0, at the last token by the last layer, moved by
    # attention in layers 0-1, and MLPs at the last token in layers 2-3 write the result
    assert flow.source_early > 0.9 and flow.last_late > 0.95 and abs(flow.source_late) < 0.01
    assert flow.attn_last_early > 0.9 and abs(flow.attn_last_late) < 0.05 and flow.mlp_last_late > 0.4
    control = mediation_picture(shuffled_weights(arithmetic_organism(progress=False)), pairs)
    assert not control.holds
    assert control.mlp_last_late < 0.3


def test_mediate_command_writes_heatmaps_and_tables(tmp_path, capsys):
    from anchorlens.cli import main

    out = tmp_path / "mediation"
    status = main(["mediate", "--task", "arithmetic", "--model", "organism", "--components", "mlp_out", "head_out",
                   "--pairs", "6", "--per-template", "1", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "answers" in printed and "strongest cells" in printed
    for name in ("filter.csv", "pairs.csv", "mlp_out.png", "mlp_out.csv", "head_out.png", "head_out.npz"):
        assert (out / name).stat().st_size > 0
    assert MediationResult.load(out / "head_out.npz").effects.shape == (4, 1, 4)
    assert main(["mediate", "--task", "retrieval", "--model", "organism", "--out", str(tmp_path / "none")]) == 2
    assert "survived the filter" in capsys.readouterr().err
