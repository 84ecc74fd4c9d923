"""Run circuit-tracer 0.5.0 (the peer tool) on a model folder, a transcoder folder and a prompt; write its graph.

circuit-tracer cannot be installed beside TransformerLens 4 (it pins transformers <= 4.57.3), so this script runs
in its own virtual environment and imports nothing from anchorlens:

    python3 -m venv /work/venvs/circuit-tracer
    /work/venvs/circuit-tracer/bin/pip install torch==2.13.0        # first, so the CPU build is kept
    /work/venvs/circuit-tracer/bin/pip install circuit-tracer==0.5.0 transformers==4.57.3 nnsight==0.6.3
    /work/venvs/circuit-tracer/bin/python scripts/circuit_tracer_oracle.py \
        --model MODEL_DIR --transcoders TRANSCODER_DIR --prompt "The capital of France is" --out graph.npz

MODEL_DIR is a Hugging Face folder (``anchorlens.embedded_model_dir()``, or a saved random model); a folder
written by transformers 5 is misread by 4.57 (RoPE base only in ``rope_parameters``; tokenizer class
``TokenizersBackend``), so the script gives circuit-tracer a patched copy. TRANSCODER_DIR is circuit-tracer's
layout (``layer_{i}.safetensors``; or its cross-layer layout, ``W_enc_{i}`` / ``W_dec_{i}.safetensors``), as
``TranscoderSet.save`` writes it. The output ``.npz`` holds the adjacency,
the node lists, the pruning masks and the scores (``--time`` adds attribution seconds and peak memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def four_x_copy(model_dir: Path, target: Path) -> Path:
    """A copy of ``model_dir`` that transformers 4.57 reads as transformers 5 meant it."""
    shutil.copytree(model_dir, target, dirs_exist_ok=True)
    config = json.loads((target / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = rope
    (target / "config.json").write_text(json.dumps(config, indent=2))
    tok_config = target / "tokenizer_config.json"
    if tok_config.exists():
        settings = json.loads(tok_config.read_text())
        if settings.get("tokenizer_class") in (None, "TokenizersBackend"):
            settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        settings.setdefault("model_input_names", ["input_ids", "attention_mask"])  # no token_type_ids for generate
        tok_config.write_text(json.dumps(settings, indent=2))
    return target


def attribution_targets(model, spec: dict):
    """circuit-tracer's ``attribution_targets`` from the JSON spec of a case."""
    if "ids" in spec:
        return torch.tensor(spec["ids"])
    if "strings" in spec:
        return list(spec["strings"])
    from circuit_tracer.attribution.targets import CustomTarget

    W_U = model.unembed_proj.detach().float()  # [vocab, d_model] on the nnsight backend
    one = lambda s: model.tokenizer.encode(s, add_special_tokens=False)[0]  # noqa: E731
    return [CustomTarget(label, weight, W_U[one(a)] - W_U[one(b)]) for label, weight, a, b in spec["logit_diffs"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--transcoders", required=True, type=Path)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-feature-nodes", type=int, default=None)
    parser.add_argument("--node-threshold", type=float, default=0.8)
    parser.add_argument("--edge-threshold", type=float, default=0.98)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="attribute this many times; the fastest is reported")
    parser.add_argument("--json-dir", type=Path, help="also write circuit-tracer's frontend JSON here")
    parser.add_argument("--input-hook", default="mlp.hook_in", help="the transcoders' feature_input_hook")
    parser.add_argument("--output-hook", default="hook_mlp_out", help="the transcoders' feature_output_hook")
    parser.add_argument("--targets", help="attribution_targets as JSON: {\"ids\": [...]}, {\"strings\": [...]} or "
                        "{\"logit_diffs\": [[label, weight, token, other], ...]} (custom targets: the difference "
                        "of the two tokens' unembedding rows); default: the salient logits")
    parser.add_argument("--interventions", help="also run feature_intervention: JSON list of {\"interventions\": "
                        "[[layer, position, feature, value], ...], \"freeze_attention\": bool, "
                        "\"constrained_layers\": [start, stop] or null, optional \"generate\": new tokens}, on the "
                        "prompt's tokens; a position [start] is open-ended, slice(start, None)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.graph import Graph, compute_graph_scores, prune_graph
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    if (args.transcoders / "W_enc_0.safetensors").exists():  # its cross-layer transcoder layout
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        transcoders = load_clt(str(args.transcoders), feature_input_hook=args.input_hook,
                               feature_output_hook=args.output_hook, scan="anchorlens-oracle",
                               device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False)
    else:
        layer_files = sorted(args.transcoders.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
        transcoders = load_transcoder_set({i: str(p) for i, p in enumerate(layer_files)}, scan="anchorlens-oracle",
                                          feature_input_hook=args.input_hook, feature_output_hook=args.output_hook,
                                          device=torch.device("cpu"), dtype=torch.float32,
                                          lazy_encoder=False, lazy_decoder=False)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = four_x_copy(args.model, Path(tmp) / "model")
        model = ReplacementModel.from_pretrained_and_transcoders(str(model_dir), transcoders, backend="nnsight",
                                                                 device=torch.device("cpu"), dtype=torch.float32)
        targets = attribution_targets(model, json.loads(args.targets)) if args.targets else None
        seconds = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            graph = attribute(args.prompt, model, batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes,
                              attribution_targets=targets)
            seconds.append(time.perf_counter() - started)
        interventions = {}
        input_ids = model.ensure_tokenized(args.prompt)
        # its nnsight backend counts positions by tokenizing a string (a tensor fails without frozen attention):
        # the text whose tokens are the graph's, special token in front included
        text = model.tokenizer.decode(input_ids)
        assert model.tokenizer(text).input_ids == input_ids.tolist(), "the text does not give the graph's tokens"
        for i, setting in enumerate(json.loads(args.interventions) if args.interventions else []):
            constrained = range(*setting["constrained_layers"]) if setting.get("constrained_layers") else None
            # a position written [start] is open-ended, slice(start, None): it also acts on generated tokens
            steps = [(x[0], slice(x[1][0], None) if isinstance(x[1], list) else x[1], x[2], x[3])
                     for x in setting["interventions"]]
            logits, acts = model.feature_intervention(text, steps,
                                                      constrained_layers=constrained,
                                                      freeze_attention=setting["freeze_attention"])
            logits = logits.squeeze(0).float().cpu().numpy()  # kept small: the last position, and 512 ids at all
            interventions[f"intervention_{i}_last_logits"] = logits[-1]
            interventions[f"intervention_{i}_logits_head"] = logits[:, :512]
            interventions[f"intervention_{i}_activations"] = acts.float().cpu().numpy()
            if setting.get("generate"):  # greedy decoding with its kv cache
                text_out, logits, acts = model.feature_intervention_generate(
                    text, steps, constrained_layers=constrained, freeze_attention=setting["freeze_attention"],
                    max_new_tokens=setting["generate"], do_sample=False)
                interventions[f"generate_{i}_text"] = np.array(text_out)
                interventions[f"generate_{i}_last_logits"] = logits[-1].float().cpu().numpy()
                interventions[f"generate_{i}_activations"] = acts.float().cpu().numpy()
        if args.json_dir:
            from circuit_tracer.utils.create_graph_files import create_graph_files

            graph.cfg.tokenizer_name = str(model_dir)
            create_graph_files(graph, "oracle", str(args.json_dir), node_threshold=args.node_threshold,
                               edge_threshold=args.edge_threshold)
    replacement, completeness = compute_graph_scores(graph)
    node_mask, edge_mask, cumulative = prune_graph(graph, args.node_threshold, args.edge_threshold)
    pruned = Graph(input_string=graph.input_string, input_tokens=graph.input_tokens,
                   active_features=graph.active_features, adjacency_matrix=graph.adjacency_matrix * edge_mask,
                   cfg=graph.cfg, selected_features=graph.selected_features,
                   activation_values=graph.activation_values, logit_targets=graph.logit_targets,
                   logit_probabilities=graph.logit_probabilities, scan=graph.scan, vocab_size=graph.vocab_size)
    pruned_replacement, pruned_completeness = compute_graph_scores(pruned)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        adjacency=graph.adjacency_matrix.numpy(),
        input_tokens=graph.input_tokens.cpu().numpy(),
        active_features=graph.active_features.cpu().numpy(),
        selected_features=graph.selected_features.cpu().numpy(),
        activation_values=graph.activation_values.cpu().numpy(),
        logit_token_ids=graph.logit_token_ids.cpu().numpy(),
        logit_probabilities=graph.logit_probabilities.cpu().numpy(),
        logit_labels=np.array([target.token_str for target in graph.logit_targets]),
        node_mask=node_mask.numpy(), edge_mask=edge_mask.numpy(), cumulative_scores=cumulative.numpy(),
        scores=np.array([replacement, completeness]),
        pruned_scores=np.array([pruned_replacement, pruned_completeness]),
        seconds=np.array(min(seconds)),
        peak_rss_mb=np.array(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        prompt=np.array(args.prompt),
        **interventions,
    )
    print(json.dumps({"nodes": int(graph.adjacency_matrix.shape[0]), "features": int(len(graph.selected_features)),
                      "scores": [replacement, completeness], "seconds": min(seconds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
