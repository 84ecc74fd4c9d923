"""Write notebooks/06_attribution_graphs.ipynb (then scripts/run_notebooks.py executes it and stores its outputs)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# 06 Attribution graphs: transcoders and circuit tracing on SmolLM2

Circuit tracing (Anthropic 2025) with circuit-tracer 0.5.0's definitions, on a TransformerLens 4 bridge:
each MLP is replaced by a transcoder, attention patterns and norm scales are frozen, and the graph holds the
linear direct effects between active features, error nodes, tokens and the top logits. anchorlens's graph
equals circuit-tracer's on the same model, transcoders and prompt (tests/test_attribution_oracle.py).

Here: train small transcoders (a few steps, so the notebook runs in a minute; the README gives the numbers of a
30-minute run), attribute "The capital of France is", prune, score, plot, export circuit-tracer's JSON, and
attribute a chain of thought's answer back to its sentences."""),
    new_code_cell("""import torch
import anchorlens as al

torch.set_num_threads(1)
model = al.load_model()"""),
    new_markdown_cell("""## Transcoders
`train_transcoders` streams MLP inputs and outputs from the model on a shipped corpus and trains one ReLU
transcoder per layer; the result is cached (a second call loads it) and saved in circuit-tracer's layout.
A budget this small explains little of each MLP (FVU near 1): the error nodes will carry most of the graph."""),
    new_code_cell("""transcoders = al.train_transcoders(model, n_features=64, steps=6, windows_per_step=2, l1=3e-3, lr=3e-3,
                                   progress=False)
import pandas as pd
pd.DataFrame(transcoders.meta["layers"]).set_index("layer").T.round(2)"""),
    new_markdown_cell("## The graph of one prediction"),
    new_code_cell("""graph = al.attribution_graph(model, transcoders, "The capital of France is", progress=False)
print(graph.adjacency.shape, "nodes;", graph.n_features, "active features")
print(list(zip(graph.logit_tokens, graph.logit_probabilities.round(decimals=3).tolist())))
graph.nodes.groupby("kind").size()"""),
    new_code_cell("""pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
print("kept", int(pruned.node_mask.sum()), "nodes and", int(pruned.edge_mask.sum()), "edges")
print("replacement, completeness (full graph):  ", graph.scores())
print("replacement, completeness (pruned graph):", pruned.scores())
pruned.nodes[pruned.nodes.kept].nlargest(10, "influence")[["kind", "layer", "position", "feature", "label", "influence"]]"""),
    new_code_cell("""pruned.plot();"""),
    new_code_cell("""import json, tempfile
from pathlib import Path

path = pruned.to_json(Path(tempfile.mkdtemp()) / "capital.json", slug="capital")   # for circuit-tracer's frontend
data = json.loads(path.read_text())
print(list(data), len(data["nodes"]), "nodes,", len(data["links"]), "links")"""),
    new_markdown_cell("""## A chain of thought: which sentences feed the answer
The final answer token's logit, attributed back to the sentences (token-embedding and feature influence summed
per sentence)."""),
    new_code_cell("""from anchorlens.attribution.attribute import trace_attribution

trace = al.Trace.from_text(model, "We need 6 times 7. 6 * 7 = 42. So the answer is 42",
                           prompt=al.problem_prompt(model, "What is 6 times 7?"))
cot_graph, sentences = trace_attribution(model, transcoders, trace, progress=False)
print("answer token among the logit nodes:", sentences.attrs["answer_is_logit_node"])
sentences"""),
]
notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbformat.write(notebook, Path(__file__).resolve().parents[1] / "notebooks" / "06_attribution_graphs.ipynb")
