"""Greedy decoding under feature interventions: ``feature_intervention_generate`` (the package's one greedy decoder,
KV-cached, the interventions as hooks by absolute position) against the loop it replaced (every step reruns the
whole sequence under ``intervened_pass``: the definition), same model, transcoders, prompt and interventions, in
the same run, interleaved.

    .venv/bin/python benchmarks/bench_intervention_decoding.py --new-tokens 64 256 --repeats 3

Model: a random Llama with a small real model's layer size (``bench_attribution``'s ``mid``: d_model 512, 8 heads of
64, 2 KV heads, MLP 2048, 8 layers, SmolLM2's 49k vocabulary), 512 seeded random transcoder features per layer.
Interventions: one at a prompt position, two open-ended (they act on every new token), attention frozen on the
prompt. Prints a Markdown table: median seconds, ratio = uncached / cached, and the agreement of the two (tokens
equal, largest logit difference over every position).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's anchorlens, not an installed one
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

PROMPT = ("Solve this step by step. A train leaves at nine and travels sixty miles an hour; a second train leaves "
          "an hour later at eighty miles an hour. When does the second train catch up?")
INTERVENTIONS = [(2, -1, 5, 0.0), (1, slice(4, None), 7, 6.0), (5, slice(1, None), 11, 4.0)]


def uncached(model, transcoders, prompt, interventions, max_new_tokens):
    """The replaced ``feature_intervention_generate``: each new token reruns the whole sequence under the
    interventions (the prompt frozen as in the first step), then the argmax; and the clean continuation (KV-cached,
    as both versions decode it)."""
    import torch

    from anchorlens.attribution.attribute import prepare
    from anchorlens.attribution.intervention import _at_positions, _check
    from anchorlens.generation import greedy_generate
    from anchorlens.hooks.feature_intervention import clean_pass, intervened_pass

    tokens, transcoders = prepare(model, transcoders, prompt)
    n_prompt = len(tokens)
    checked = [_check(i, model.cfg.n_layers, n_prompt, transcoders.n_features) for i in interventions]
    open_ended = [(layer, f, v) for layer, p, f, v in checked if isinstance(p, slice) and p.stop is None]
    clean = clean_pass(model, transcoders, tokens, patterns=True, mlps=False, scales=False)
    sequence = tokens
    for _ in range(max_new_tokens):
        logits, _ = intervened_pass(model, transcoders, sequence, _at_positions(checked, n_prompt), clean, None,
                                    n_prompt=n_prompt, open_ended=open_ended)
        sequence = torch.cat([sequence, logits[-1].argmax().reshape(1)])
    greedy_generate(model, tokens[None], max_new_tokens, stop_at_eos=False)
    return sequence, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    import anchorlens as al
    from attribution_cases import case_model, case_transcoders
    from bench_attribution import MID

    from anchorlens.attribution.attribute import prompt_tokens

    torch.set_num_threads(args.threads)
    model, transcoders = case_model(MID), case_transcoders(MID)
    print(f"prompt tokens: {len(prompt_tokens(model, PROMPT))}; model: random Llama, {MID['n_layers']} layers, "
          f"d_model {MID['d_model']}, {MID['n_features']} features per layer; {args.threads} thread(s)")
    print("| new tokens | cached s | uncached s | ratio (uncached / cached) | tokens equal | max logit diff |")
    print("|---|---|---|---|---|---|")
    for n_new in args.new_tokens:
        times = {"cached": [], "uncached": []}
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            started = time.perf_counter()
            cached = al.feature_intervention_generate(model, transcoders, PROMPT, INTERVENTIONS,
                                                      max_new_tokens=n_new, progress=False)
            times["cached"].append(time.perf_counter() - started)
            started = time.perf_counter()
            sequence, logits = uncached(model, transcoders, PROMPT, INTERVENTIONS, n_new)
            times["uncached"].append(time.perf_counter() - started)
        a, b = statistics.median(times["cached"]), statistics.median(times["uncached"])
        equal = torch.equal(cached.tokens, sequence.cpu())
        diff = float((cached.logits - logits.cpu()).abs().max())
        print(f"| {n_new} | {a:.2f} | {b:.2f} | {b / a:.1f}x | {equal} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
