"""Cost of the sentence-taxonomy classifier: the shipped one against the ones before it, in the same run.

On published traces (data/thought-anchors), times ``TaxonomyClassifier.predict``:

- previous: the logistic regression over MiniLM features (benchmarks/data/taxonomy_classifier_previous.npz,
  the weights shipped before SmolLM2 states were added);
- layer 20: the same features plus the embedded SmolLM2's residual stream after layer 20
  (benchmarks/data/taxonomy_classifier_layer20.npz, the weights shipped before issue 14);
- shipped: the same features plus SmolLM2's states after layers 15 and 20 (the same partial forward);
- for scale, one plain forward of the whole embedded model over the same trace (what a single step of the
  analysis costs: ``sentence_attention`` is about one forward, ``suppression_matrix`` many).

Every repeat uses a fresh MiniLM embedder (no cached strings); the SmolLM2 feature models are loaded once
beforehand, as ``classify_sentences`` keeps them (the loading time is reported on its own). One torch thread,
interleaved repeats, median.

    .venv/bin/python benchmarks/bench_taxonomy.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchorlens.resampling.published_format import load_reference_trace  # noqa: E402
from anchorlens.resampling.similarity import MiniLMEmbedder  # noqa: E402
from anchorlens.taxonomy import TaxonomyClassifier  # noqa: E402
from anchorlens.taxonomy.classifier import sentence_states  # noqa: E402
from anchorlens.taxonomy.lm_states import HEADER, sentence_char_spans  # noqa: E402

TRACES = REPO / "data" / "thought-anchors" / "deepseek-r1-distill-llama-8b"
BENCH_TRACES = (TRACES / "incorrect_base_solution" / "problem_6998",
                TRACES / "incorrect_base_solution" / "problem_4164")
PREVIOUS = REPO / "benchmarks" / "data" / "taxonomy_classifier_previous.npz"
LAYER20 = REPO / "benchmarks" / "data" / "taxonomy_classifier_layer20.npz"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)

    previous, layer20 = TaxonomyClassifier.load(PREVIOUS), TaxonomyClassifier.load(LAYER20)
    shipped = TaxonomyClassifier.load()
    load_s, states = timed(lambda: sentence_states(shipped.lm_layers))
    sentence_states(layer20.lm_layers)
    print(f"loading the SmolLM2 feature model (once per process): {load_s:.1f} s")
    from transformers import AutoModelForCausalLM

    full_model = AutoModelForCausalLM.from_pretrained(states.tokenizer.name_or_path, dtype=torch.float32).eval()

    for folder in BENCH_TRACES:
        sentences = load_reference_trace(folder).sentences
        text = HEADER + sentence_char_spans(sentences)[0]
        ids = torch.tensor([states.tokenizer(text, add_special_tokens=False)["input_ids"]])
        times = {"previous": [], "layer20": [], "shipped": [], "forward": []}
        for _ in range(args.repeats):
            times["previous"].append(timed(lambda: previous.predict(sentences, embed=MiniLMEmbedder()))[0])
            times["layer20"].append(timed(lambda: layer20.predict(sentences, embed=MiniLMEmbedder()))[0])
            times["shipped"].append(timed(lambda: shipped.predict(sentences, embed=MiniLMEmbedder()))[0])
            times["forward"].append(timed(lambda: full_model(ids))[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        n = len(sentences)
        print(f"{folder.parent.name}/{folder.name}: {n} sentences, {ids.shape[1]} tokens")
        print(f"  previous classifier {med['previous']:.2f} s ({n / med['previous']:.0f} sentences/s)")
        print(f"  layer-20 classifier {med['layer20']:.2f} s ({n / med['layer20']:.0f} sentences/s)  "
              f"{med['layer20'] / med['previous']:.2f}x the previous")
        print(f"  shipped classifier  {med['shipped']:.2f} s ({n / med['shipped']:.0f} sentences/s)  "
              f"{med['shipped'] / med['previous']:.2f}x the previous, {med['shipped'] / med['layer20']:.2f}x layer 20")
        print(f"  one forward of the whole embedded model {med['forward']:.2f} s  "
              f"(shipped classifier = {med['shipped'] / med['forward']:.2f} forwards)")


if __name__ == "__main__":
    main()
