"""Write notebooks/07_study.ipynb (then scripts/run_notebooks.py executes it and stores its outputs)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# A study of the published traces: the paper's category figure and what explains importance

The Thought Anchors paper compares sentence categories by their counterfactual importance, averaged over many
traces. This notebook computes that figure on the 20 published DeepSeek-R1-Distill-Llama-8B traces shipped in
`data/thought-anchors`, as the reference code computes it (convergence filter, clipping at zero, each trace's
mean per category and then the mean over traces), asks which differences 20 traces can support, and how much of
importance position, indecision, category and length explain. It loads no model: published importance is all it
reads. Definitions: `docs/methods.md` 1.7; more in `docs/study.md`."""),
    new_code_cell("""import tempfile

import pandas as pd

import anchorlens as al

pd.set_option("display.width", 160)
study = al.study(None, "../data/thought-anchors", out_dir=tempfile.mkdtemp(), views=(), importance="published",
                 progress=False)
study"""),
    new_markdown_cell("""## Importance by category, the paper's definition

`by_category()` defaults to the reference's definition; `shown` marks the five categories its figure draws.
`table.attrs["definition"]` records every option, and how many sentences the convergence filter kept."""),
    new_code_cell("""metric = "counterfactual_importance_kl"
table = study.by_category([metric])
print(table.attrs["definition"]["n_sentences_kept"], "of", table.attrs["definition"]["n_sentences"], "sentences kept")
table[["category", "n_sentences", "n_traces", "position", metric, f"{metric}_se", f"{metric}_ci_low",
       f"{metric}_ci_high", "shown"]].sort_values(metric, ascending=False).round(3)"""),
    new_markdown_cell("""The paper-style figure: mean importance against mean normalised position per category, error bars one
standard error over traces, marker size by number of traces."""),
    new_code_cell("""import matplotlib.pyplot as plt

figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
study.plot_categories(metric, ax=left)
study.plot_categories(metric, ax=right, debias="polynomial", degree=10)
right.set_title("position-debiased (degree 10)")
figure.tight_layout()"""),
    new_markdown_cell("""## The earlier definition: one mean over every sentence

Without the filter and the trace weighting, problem setup comes first and uncertainty management falls to fifth:
the late, settled sentences (importance mostly 0) and the long traces weigh in."""),
    new_code_cell("""pooled = study.by_category([metric], convergence=False, clip=False, weighting="sentence", min_sentences=1,
                          min_traces=1)
both = table.set_index("category")[[metric]].join(pooled.set_index("category")[[metric]], rsuffix="_pooled")
both.sort_values(metric, ascending=False).round(2)"""),
    new_markdown_cell("""## What 20 traces can show

Every pair of the figure's categories, the difference of their means with a bootstrap interval over traces (both
means on the same draws of traces)."""),
    new_code_cell("""pairs = study.category_differences(metric)
pairs.round(3)"""),
    new_code_cell("""study.category_differences(metric, debias="polynomial")[lambda t: t.excludes_zero].round(3)"""),
    new_markdown_cell("""## What explains importance

Least-squares R^2 of the metric on each predictor alone, on all together, and what the full model loses without
each (unique), within traces (every column centred per trace), with 95% bootstrap intervals over traces."""),
    new_code_cell("""explained = study.explain(metric)
explained.to_dataframe().round(3)"""),
    new_code_cell("""explained.plot();"""),
    new_code_cell("""study.explain("resampling_importance_accuracy").to_dataframe().round(3)"""),
    new_markdown_cell("""On these traces little of the per-sentence variance is explained by any of them: published importance is
heavy-tailed, a few sentences carry most of it. Indecision (the entropy of correct vs incorrect among the rollouts
resampled at the sentence) and position each explain more of counterfactual KL importance than category does, and
category adds almost nothing once they are in. A study with the receivers or suppression views adds those columns
as predictors (and `by_category(["receiver_score"])` gives the receiver-head figure the same way)."""),
]
notebook = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python", "version": "3.11.7"}})
nbformat.write(notebook, Path(__file__).resolve().parents[1] / "notebooks" / "07_study.ipynb")
