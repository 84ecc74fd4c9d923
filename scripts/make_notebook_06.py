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

Here: train small transcoders (a few steps, so the notebook runs in a minute; docs/attribution.md gives the numbers of a
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
    new_markdown_cell("""## Any target: one token rather than another
`attribution_targets` takes what circuit-tracer's `attribute` takes: token ids, token strings, or
`(label, weight, vector)` directions in the residual stream. `logit_difference_target` builds "Paris rather than
London", so the graph explains the difference of the two logits, not either alone. In a chain of thought the same
question reads "why 42 rather than 48"."""),
    new_code_cell("""prompt = "The capital of France is"
contrast = al.attribution_graph(model, transcoders, prompt,
                                attribution_targets=[al.logit_difference_target(model, " Paris", " London")],
                                progress=False)
print("target:", contrast.logit_strings)
chosen = al.attribution_graph(model, transcoders, prompt, attribution_targets=[" Paris", " London"], progress=False)
print("targets:", chosen.logit_strings, chosen.logit_probabilities.round(decimals=3).tolist())"""),
    new_markdown_cell("""## Steering the features the graph found
`graph.feature_interventions(nodes, scale=...)` turns feature nodes into `(layer, position, feature, value)`
interventions. `feature_intervention` reruns the prompt with them (attention frozen at its clean pattern, as in
circuit-tracer) and returns the logits and feature activations; `feature_intervention_generate` continues the text
under them. With transcoders this briefly trained the features explain little of the MLPs (the error nodes carry the
graph), so switching the three strongest off barely moves the prediction; set far above their activations (about
0.03) to 20, they change the continuation. The planted organism (tests/test_attribution_organism.py) shows the
clean case: switching off the planted feature flips the answer, an unrelated one does not."""),
    new_code_cell("""strongest = graph.nodes.query("kind == 'feature'").nlargest(3, "influence").index
off = al.feature_intervention(model, transcoders, prompt, graph.feature_interventions(strongest, scale=0.0))
table = off.top_tokens(5)
table["token"] = [model.tokenizer.decode([t]) for t in table.token_id]
table"""),
    new_code_cell("""steered = al.feature_intervention_generate(model, transcoders, prompt,
                                           graph.feature_interventions(strongest, value=20.0), max_new_tokens=8)
print("clean:  ", repr(steered.clean_text))
print("steered:", repr(steered.text))"""),
    new_markdown_cell("""## Cross-layer transcoders
A cross-layer transcoder (CLT) feature reads the residual stream at one layer and writes to the MLP output of
that layer and every later one. `train_transcoders(..., cross_layer=True)` trains one (here far too briefly to
explain much) and `load_transcoders` reads circuit-tracer's CLT folders as they are; the graph, interventions and
generation take it in place of per-layer transcoders (tests/test_attribution_clt.py: equal to circuit-tracer's)."""),
    new_code_cell("""clt = al.train_transcoders(model, cross_layer=True, n_features=32, steps=3, windows_per_step=2, l1=3e-3,
                           lr=3e-3, progress=False)
print("cross-layer:", clt.cross_layer, "| layers reached from layers 0-2:", [t.reach for t in clt][:3])
clt_graph = al.attribution_graph(model, clt, prompt, max_feature_nodes=100, progress=False)
print(clt_graph.adjacency.shape, "nodes; replacement, completeness:", clt_graph.scores())"""),
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
