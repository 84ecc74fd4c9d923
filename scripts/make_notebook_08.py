"""Write notebooks/08_thought_branches.ipynb and run it in place, so it is stored with its outputs.

Run: .venv/bin/python scripts/make_notebook_08.py
"""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

PATH = Path(__file__).resolve().parents[1] / "notebooks" / "08_thought_branches.ipynb"

CELLS = [
    ("markdown", """# 07 Thought Branches: resilience, Counterfactual++ and a transplant curve

Resampling one sentence (notebook 01) misses what Thought Branches measures: a removed sentence's content often
comes back a few sentences later. **Resilience** removes a sentence, lets the model continue, follows its content
wherever it comes back (MiniLM cosine >= 0.6 to the original sentence), removes it again, up to a cap, and counts
how often it came back. **Counterfactual++** compares the answers of the chains that abandoned the content for good
with the answers when the sentence is kept: accuracy kept minus accuracy abandoned (the opposite sign of Thought
Anchors' counterfactual importance). **Transplant resampling** puts the first i sentences of one chain of thought
after another prompt and watches the answers as i grows. Definitions: `docs/branches.md`, `docs/methods.md` 6.

Everything here runs on the embedded SmolLM2-135M on a CPU with few, short rollouts: the numbers are noisy (read the
intervals), the point is the workflow. Every completion goes into a rollout store, so re-running a cell samples
nothing new."""),
    ("code", """import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import anchorlens as al

torch.set_num_threads(1)
al.set_progress(False)
model = al.load_model()
trace = al.generate_trace(model, "What is 6 times 7?", max_new_tokens=200, seed=1)  # the demo's trace
store = Path(tempfile.mkdtemp()) / "rollouts.sqlite"
for i, sentence in enumerate(trace.sentence_texts()):
    print(i, sentence)"""),
    ("markdown", """## Resilience and Counterfactual++ of three sentences

Three sentences near the end, where 64-token continuations usually reach an answer (a continuation cut off at the
token limit has an answer only if it holds a complete `\\boxed{}`, and Counterfactual++ needs answers on both
sides). 4 chains per sentence (30 in the paper), at most 3 iterations (20 in the paper)."""),
    ("code", """result = al.resilience(model, trace, [5, 6, 7], n_rollouts=4, max_iterations=3, max_tokens=64, store=store,
                       reference_answer="42", outcome="boxed_or_last_number", n_bootstrap=200)
columns = ["sentence", "resilience", "resilience_ci_low", "resilience_ci_high", "abandonment_rate",
           "accuracy_kept", "accuracy_abandoned", "counterfactual_pp_accuracy"]
print(result.to_dataframe()[columns].round(2).to_string(index=False))
print(result.run_info["generated"], "completions sampled")
result.plot()
plt.show()"""),
    ("markdown", """Each chain's history: how many iterations it ran, how often the content came back, and the best cosine to the
original sentence at each iteration."""),
    ("code", """print(result.chains_dataframe()[["sentence", "chain", "iterations", "score", "persisted", "final_answer",
                                  "best_cosine"]].to_string(index=False))"""),
    ("markdown", """## A transplant curve

The chain of thought above was written for "What is 6 times 7?". Put its first i sentences after a prompt with a
hint towards another answer, and sample: how much of the chain does it take before the answers follow the chain
rather than the hint? (4 completions per position, every third position.)"""),
    ("code", """hinted = al.problem_prompt(model, "A professor says the answer is 48. What is 6 times 7?")
curve = al.transplant_resampling(model, trace, hinted, positions=list(range(0, trace.n_sentences + 1, 3)),
                                 n_rollouts=4, max_tokens=64, store=store, reference_answer="42", cue_answer="48",
                                 outcome="boxed_or_last_number", n_bootstrap=200)
print(curve.to_dataframe()[["sentences_transplanted", "n_answered", "accuracy", "cue_rate", "answers"]].to_string(index=False))
curve.plot()
plt.show()"""),
    ("markdown", """Re-running either call with the same store samples nothing: every completion is keyed on what made it."""),
    ("code", """again = al.resilience(model, trace, [5, 6, 7], n_rollouts=4, max_iterations=3, max_tokens=64, store=store,
                      reference_answer="42", outcome="boxed_or_last_number", n_bootstrap=200)
print("sampled on the second call:", again.run_info["generated"])"""),
]


def main() -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
                      for kind, text in CELLS]
    NotebookClient(notebook, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(PATH.parent)}}).execute()
    nbformat.write(notebook, PATH)
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
