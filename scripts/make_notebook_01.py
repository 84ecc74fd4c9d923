# Writes notebooks/01_thought_anchors.ipynb (outputs stripped); edit here, then run it.
import nbformat as nbf
nb = nbf.v4.new_notebook()
md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell
nb.cells = [
md("""# 1. Thought anchors of a chain of thought, three ways

Which sentences of a chain of thought mattered? Thought Anchors (Bogdan, Macar, Nanda, Conmy 2025) answers
three independent ways; anchorlens runs all three on any TransformerLens model. This notebook uses the
embedded SmolLM2-135M-Instruct so it runs offline on a laptop CPU in a few minutes; pass a reasoning model's
name to `load_model` (e.g. `"deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"`) for real work."""),
code("""import torch
import anchorlens as al

torch.manual_seed(0)
model = al.load_model()  # a TransformerLens TransformerBridge
model.cfg.n_layers, model.cfg.n_heads"""),
md("""## A trace: a prompt and a chain of thought, split into sentences mapped onto tokens
Here we write the chain of thought ourselves so the planted structure is known: sentence 0 states a fact
that the last sentence needs. `al.generate_trace(model, problem)` lets the model write one instead."""),
code("""prompt = "Solve the problem step by step.\\nProblem: Tom has 3 boxes with 4 apples each. He eats 2. How many are left?\\n"
cot = (
    "Tom has 3 boxes with 4 apples in each box. "
    "Let me first count all the apples. "
    "Three boxes times four apples is 12 apples. "
    "Wait, he also eats some apples. "
    "He eats 2 of the 12 apples. "
    "So the number of apples left is 12 - 2 = 10."
)
trace = al.Trace.from_text(model, cot, prompt=prompt)
trace.to_dataframe()"""),
md("""## 1. Receiver heads (attention)
One forward pass gives every head's sentence-to-sentence attention. Heads whose *vertical scores* (how much
later sentences attend to each sentence) are concentrated, with high kurtosis, are receiver heads."""),
code("""attention = al.sentence_attention(model, trace)  # .matrix: [layer, head, sentence, sentence]
attention.matrix.shape"""),
code("""# a 6-sentence trace: a proximity band of 1 instead of the paper's 4 (made for traces of ~100 sentences)
heads = al.receiver_heads(model, [trace], top_k=8, proximity_ignore=1)
print("receiver heads (layer, head):", list(heads))
heads.sentence_dataframe()"""),
code("""attention.plot(*heads[0]);"""),
code("""heads.plot();  # kurtosis map, layers x heads, receiver heads outlined"""),
md("""## 2. Attention suppression (causal)
Mask all attention to one sentence (pre-softmax scores set to the dtype's minimum, in every layer and head)
and measure the KL of every later token's next-token distribution. `S[i, j]`: effect on sentence i of
suppressing sentence j."""),
code("""suppression = al.suppression_matrix(model, trace)
suppression.to_dataframe().head()"""),
code("""suppression.plot();"""),
code("""suppression.plot_graph(top_k=6);"""),
md("""## 3. Resampling importance (black box)
Regenerate from the prefix before each sentence several times and see how the final answer moves. The paper
uses 100 rollouts per sentence; 3 short ones keep this notebook fast. Rollouts are stored in SQLite, so an
interrupted run resumes where it stopped."""),
code("""import tempfile, pathlib
store = pathlib.Path(tempfile.mkdtemp()) / "rollouts.sqlite"
importance = al.resampling_importance(
    model, trace, n_rollouts=3, store=store, reference_answer="10",
    max_tokens=32, extractor="boxed_or_last_number",
)
importance.to_dataframe()[["chunk", "accuracy", "resampling_importance_accuracy", "forced_importance_accuracy",
                           "different_trajectories_fraction"]]"""),
md("""## Sentence categories and the report
The shipped taxonomy classifier labels each sentence with one of the paper's 8 categories;
`al.analyze(...)` (or the `anchorlens analyze` command) runs everything above and writes an interactive HTML
report."""),
code("""al.classify_sentences(trace.sentence_texts())"""),
code("""# resampling was shown above; leave it out here to keep the notebook quick (steps=... picks analyses)
analysis = al.analyze(model, pathlib.Path(tempfile.mkdtemp()) / "report", trace=trace, top_k_heads=8,
                      steps=("categories", "receivers", "suppression"))
print(analysis.report_path)
analysis.to_dataframe().round(3)"""),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/01_thought_anchors.ipynb")
