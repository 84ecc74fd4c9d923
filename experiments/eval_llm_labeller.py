"""Score ``label_sentences_with_model`` on the taxonomy classifier's held-out problems, for comparison.

Prompts the embedded SmolLM2-135M-Instruct (or ``--model NAME``) with the category definitions, two worked
examples per category from the training problems (``FEW_SHOT_EXAMPLES``; ``--no-examples`` leaves them out),
the problem and the two preceding sentences, for every sentence of the held-out problems named in the
shipped classifier's ``taxonomy_classifier.json``, and writes accuracy, macro-F1, per-category F1 and the
confusion matrix to anchorlens/data/taxonomy_llm_labeller.json (``--out``) and into the report's section
(``scripts/train_taxonomy.py`` writes the same from that file). The shared part of the prompt runs once per
trace (a KV cache), so each sentence costs a forward of its own ~60-150 tokens: the 782 sentences took 30
minutes of one CPU thread on this loaded machine (2.3 s per sentence).
``--sample N`` labels N of them drawn with random.Random(0) (each prompt still shows its own trace's
preceding sentences).

    .venv/bin/python experiments/eval_llm_labeller.py [--sample 200] [--no-examples --out other.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import anchorlens as al  # noqa: E402
from anchorlens.resampling.published_format import load_reference_trace, reference_trace_dirs  # noqa: E402
from anchorlens.taxonomy.categories import SENTENCE_CATEGORIES  # noqa: E402
from anchorlens.taxonomy.classifier import DATA_DIR, TaxonomyClassifier  # noqa: E402
from anchorlens.taxonomy.llm_labeller import _instructions, _PrefixLabeller, _sentence_part  # noqa: E402
from anchorlens.taxonomy.training import score  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "thought-anchors")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=DATA_DIR / "taxonomy_llm_labeller.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample", type=int, default=None, help="label this many sentences, drawn with seed 0")
    parser.add_argument("--no-examples", action="store_true", help="the prompt without the worked examples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples = not args.no_examples

    held_out = TaxonomyClassifier.load().info["held_out_problems"]
    model = al.load_model(args.model)
    traces = [load_reference_trace(f) for f in reference_trace_dirs(args.data) if f.name in held_out]
    items = [(t, i) for t, trace in enumerate(traces) for i in range(len(trace.sentences))]
    if args.sample is not None:
        items = sorted(random.Random(0).sample(items, args.sample))
    truth, predicted = [], []
    start = time.time()
    if args.sample is None:  # the public function, trace by trace
        for trace in traces:
            tags = al.label_sentences_with_model(model, trace.sentences, problem=trace.problem.get("problem"),
                                                 examples=examples)
            truth += [SENTENCE_CATEGORIES.index(c) for c in trace.categories]
            predicted += [SENTENCE_CATEGORIES.index(tag) for tag in tags]
    else:  # what label_sentences_with_model does, for the sampled sentences only
        labeller = _PrefixLabeller(model, _instructions(examples))
        for t, i in tqdm(items, desc="labelling sentences"):
            trace = traces[t]
            tag = labeller(_sentence_part(trace.sentences, i, problem=trace.problem.get("problem"), context=2))
            truth.append(SENTENCE_CATEGORIES.index(trace.categories[i]))
            predicted.append(SENTENCE_CATEGORIES.index(tag))
    result = score(truth, predicted)
    result.update(model=args.model, held_out_problems=held_out, seconds=time.time() - start,
                  sample=args.sample, examples=examples)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.out.parent == DATA_DIR:  # the report's section, as scripts/train_taxonomy.py writes it
        import train_taxonomy

        train_taxonomy.replace_section(DATA_DIR / "taxonomy_report.md", train_taxonomy.LLM_HEADING,
                                       train_taxonomy.llm_section(args.out))
    print(json.dumps({k: result[k] for k in ("accuracy", "macro_f1", "f1", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
