"""Attention suppression on a model organism with a planted dependency (ground truth known by construction).

The organism is a 2-layer Llama trained (CPU, a few seconds) on traces like

    "The code is red. dog sun. rock tree cat. lamp sky. Now recall? red was the code."

(one to four fillers).
The colour of the last sentence can only come from the first sentence; fillers are random words and carry
nothing. So in the last row of the suppression matrix the first sentence must be the largest entry, and
the prediction of the colour (made at the "?" that ends the cue sentence) must count for the recall
sentence, not for the cue: the test fails if the one-position shift were missing or the mask hid the
wrong keys.
"""

from __future__ import annotations

import random

import pytest
import torch

from anchorlens import Trace

VALUES = "red blue green pink gold gray black white".split()
FILLER = "dog cat sun tree sky moon fish bird rock leaf road lamp door milk rain snow".split()
STRUCTURE = "The code is Now recall was the . ?".split()


def organism_text(rng: random.Random, n_fillers: int | None = None) -> str:
    # A random number of fillers: the cue "Now" must not be predictable by counting sentences (which would
    # make every sentence, the first included, a real dependency of the cue).
    n_fillers = rng.randint(1, 4) if n_fillers is None else n_fillers
    value = rng.choice(VALUES)
    fillers = [" ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 4))) + "." for _ in range(n_fillers)]
    return " ".join([f"The code is {value}."] + fillers + ["Now recall?", f"{value} was the code."])


def word_tokenizer(folder):
    """A word-level fast tokenizer (offsets included, BOS ``<s>``), saved and reloaded as transformers expects."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>"] + sorted(set(VALUES + FILLER + STRUCTURE))
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def train_organism(tokenizer, steps: int = 150, seed: int = 0, dead_attention_layers=(0,)):
    """Train a plain HF Llama on organism texts, then wrap it as a TransformerBridge.

    The attention of ``dead_attention_layers`` writes nothing (output projection frozen at zero), so the
    recall must be read in the other layer: a planted answer for ``suppression_by_layer``.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    from anchorlens import verify_attention_edits

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    for layer in dead_attention_layers:
        o_proj = model.model.layers[layer].self_attn.o_proj
        torch.nn.init.zeros_(o_proj.weight)
        o_proj.weight.requires_grad_(False)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    rng = random.Random(seed)
    question = tokenizer.convert_tokens_to_ids("?")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a busy machine
    try:
        for _ in range(steps):
            ids = [[tokenizer.bos_token_id] + tokenizer(organism_text(rng), add_special_tokens=False)["input_ids"]
                   for _ in range(64)]
            width = max(map(len, ids))
            x = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])
            logits = model(input_ids=x).logits[:, :-1]
            target = x[:, 1:].masked_fill(x[:, 1:] == tokenizer.pad_token_id, -100)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
            ).view_as(target)
            # Weight the recall step (the colour predicted at "?") so the planted circuit forms quickly.
            weight = torch.where(x[:, :-1] == question, 10.0, 1.0) * (target != -100)
            loss = (loss * weight).sum() / weight.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    bridge = TransformerBridge.boot_transformers("organism", hf_model=model, tokenizer=tokenizer, device="cpu")
    bridge.eval()
    bridge.anchorlens_name = "suppression-organism"
    verify_attention_edits(bridge)
    return bridge


@pytest.fixture(scope="module")
def organism(tmp_path_factory):
    tokenizer = word_tokenizer(tmp_path_factory.mktemp("organism-tokenizer"))
    return train_organism(tokenizer)


@pytest.fixture(scope="module")
def organism_traces(organism):
    rng = random.Random(123)
    return [Trace.from_text(organism, organism_text(rng, n_fillers)) for n_fillers in (2, 3, 2, 3)]


@pytest.mark.slow
def test_organism_learned_the_recall(organism, organism_traces):
    for trace in organism_traces:
        start, _ = trace.token_spans[-1]
        logits = organism(trace.tokens())
        assert logits[0, start - 1].argmax().item() == trace.token_ids[start]  # the colour, predicted at "?"


@pytest.mark.slow
def test_planted_edge_is_largest_in_its_row(organism, organism_traces):
    from anchorlens import suppression_matrix

    for trace in organism_traces:
        result = suppression_matrix(organism, trace, progress=False)
        recall, cue = trace.n_sentences - 1, trace.n_sentences - 2
        row = result.kl[recall, :recall]
        assert row.argmax().item() == 0, (trace.cot, row)
        assert row[0] > 0.05 and row[0] > 10 * row[1:].max()  # the colour is lost; fillers carry ~nothing
        # The colour is predicted by the logits at the cue's last token ("?"): it belongs to the recall
        # sentence. Without the one-position shift it would land on the cue row instead.
        assert result.kl[recall, 0] > 5 * result.kl[cue, 0]
        tokens = result.token_kl[0]
        start = trace.token_spans[recall][0]
        assert tokens[start] == tokens[trace.token_spans[cue][0] : trace.token_spans[recall][1]].max()


def test_fast_equals_naive_on_organism(organism, organism_traces):
    from anchorlens import suppression_matrix

    for trace in organism_traces[:2]:
        naive = suppression_matrix(organism, trace, method="naive", progress=False)
        for max_batch in (None, 2, 64):
            fast = suppression_matrix(organism, trace, max_batch=max_batch, max_waste=100.0, progress=False)
            torch.testing.assert_close(fast.token_kl, naive.token_kl, atol=1e-4, rtol=0, equal_nan=True)
            torch.testing.assert_close(fast.kl, naive.kl, atol=1e-4, rtol=0, equal_nan=True)


def test_by_layer_finds_the_planted_layer(organism, organism_traces):
    """Layer 0's attention of the organism writes nothing: every dependency must be carried in layer 1."""
    from anchorlens import suppression_by_layer, suppression_matrix

    trace = organism_traces[0]
    recall = trace.n_sentences - 1
    by_layer = suppression_by_layer(organism, trace, window=1, progress=False)
    assert by_layer.windows == [[0], [1]]
    lower = torch.tril(torch.ones(trace.n_sentences, trace.n_sentences, dtype=torch.bool), diagonal=-1)
    # A dead layer carries nothing. Not exactly zero: the fast path's batched suffix forwards round
    # differently from the baseline's full forward (~1e-11 seen in CI, eager or fused alike), which is
    # still nine orders below the planted edge.
    assert by_layer.kl[0][lower].abs().max() < 1e-8
    assert by_layer.kl[1, recall, 0] > 0.05
    summary = by_layer.summary()
    planted = summary[(summary.target == recall) & (summary.suppressed == 0)].iloc[0]
    assert planted["peak_layers"] == "1" and planted["carriers"] == "1"
    # One window spanning every layer is the full suppression matrix.
    every_layer = suppression_by_layer(organism, trace, window=2, progress=False)
    full = suppression_matrix(organism, trace, progress=False)
    torch.testing.assert_close(every_layer.kl[0], full.kl, atol=1e-6, rtol=0, equal_nan=True)
    torch.testing.assert_close(by_layer.kl[1], full.kl, atol=1e-4, rtol=0, equal_nan=True)
