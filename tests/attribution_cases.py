"""The cases compared with circuit-tracer (tests/data/attribution/): a model and seeded transcoders each."""

from __future__ import annotations

CASES = {
    "tiny_llama_relu": {"model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 0,
                        "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1, "enc_bias": 0.0,
                        "prompt": "The capital of France is"},
    "tiny_llama_jumprelu_skip": {"model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                                 "seed": 2, "n_features": 48, "activation": "jumprelu", "skip": True, "tc_seed": 3,
                                 "enc_bias": 0.0, "prompt": "The capital of France is"},
    # circuit-tracer's choice of features under a limit: 100 of 241, in rounds of 4 x 16 (two rankings)
    "tiny_llama_relu_max100": {"model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                               "seed": 0, "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1,
                               "enc_bias": 0.0, "prompt": "The capital of France is", "max_feature_nodes": 100,
                               "batch_size": 16},
    # circuit-tracer's hook names as its released Qwen3 / GemmaScope configs write them (the same graph as above)
    "tiny_llama_released_hooks": {"model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                                  "seed": 0, "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1,
                                  "enc_bias": 0.0, "prompt": "The capital of France is",
                                  "input_hook": "mlp.hook_in", "output_hook": "mlp.hook_out"},
    # transcoders that read the residual stream before the MLP's norm (circuit-tracer's hook_resid_mid for Llama)
    "tiny_llama_resid_mid_skip": {"model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                                  "seed": 2, "n_features": 48, "activation": "jumprelu", "skip": True, "tc_seed": 3,
                                  "enc_bias": 0.0, "prompt": "The capital of France is",
                                  "input_hook": "hook_resid_mid", "output_hook": "hook_mlp_out"},
    # attribution_targets: token strings, token ids, custom directions (two logit differences, unequal weights)
    "tiny_llama_token_strings": {"model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                                 "seed": 0, "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1,
                                 "enc_bias": 0.0, "prompt": "The capital of France is",
                                 "targets": {"strings": [" Rome", " Paris", " the"]}},
    "tiny_llama_token_ids": {"model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                             "seed": 2, "n_features": 48, "activation": "jumprelu", "skip": True, "tc_seed": 3,
                             "enc_bias": 0.0, "prompt": "The capital of France is",
                             "targets": {"ids": [4528, 11452, 7042, 260]}},
    "tiny_llama_logit_diff": {"model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                              "seed": 0, "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1,
                              "enc_bias": 0.0, "prompt": "The capital of France is",
                              "targets": {"logit_diffs": [["logit( Paris)-logit( Rome)", 0.7, " Paris", " Rome"],
                                                          ["London not Berlin", 0.3, " London", " Berlin"]]}},
    # the same targets with circuit-tracer's choice of 60 features, ranked by influence on the weighted targets
    "tiny_llama_logit_diff_max60": {"model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
                                    "seed": 2, "n_features": 48, "activation": "jumprelu", "skip": True,
                                    "tc_seed": 3, "enc_bias": 0.0, "prompt": "The capital of France is",
                                    "max_feature_nodes": 60, "batch_size": 8,
                                    "targets": {"logit_diffs": [["logit( Paris)-logit( Rome)", 0.7, " Paris", " Rome"],
                                                                ["London not Berlin", 0.3, " London", " Berlin"]]}},
    # feature_intervention (graph coordinates): frozen attention, free attention, every MLP and norm frozen
    "tiny_llama_relu_interventions": {
        "model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 0,
        "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1, "enc_bias": 0.0,
        "prompt": "The capital of France is",
        "interventions": [
            {"interventions": [[0, 5, 2, 0.0], [0, 3, 1, 4.0], [1, 5, 7, 3.0], [0, 5, 6, 10.0]],
             "freeze_attention": True, "constrained_layers": None},
            {"interventions": [[0, 5, 2, 0.0], [0, 3, 1, 4.0], [1, 5, 7, 3.0], [0, 5, 6, 10.0]],
             "freeze_attention": False, "constrained_layers": None},
            {"interventions": [[0, 5, 2, 0.0], [0, 3, 1, 4.0], [1, 5, 7, 3.0], [0, 5, 6, 10.0]],
             "freeze_attention": True, "constrained_layers": [0, 2]},
        ]},
    # with skip connections and JumpReLU; MLPs of layers 0-1 frozen (the layer-2 intervention is then ignored)
    "tiny_llama_jumprelu_skip_interventions": {
        "model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 2,
        "n_features": 48, "activation": "jumprelu", "skip": True, "tc_seed": 3, "enc_bias": 0.0,
        "prompt": "The capital of France is",
        "interventions": [
            {"interventions": [[0, 5, 1, 0.0], [1, 4, 3, 6.0], [2, 5, 12, 0.0]],
             "freeze_attention": True, "constrained_layers": None},
            {"interventions": [[0, 5, 1, 0.0], [1, 4, 3, 6.0], [2, 5, 12, 0.0]],
             "freeze_attention": True, "constrained_layers": [0, 2]},
        ]},
    # feature_intervention_generate: 6 greedy tokens; [3] is an open-ended position (slice(3, None)), which also
    # acts on every generated token
    "tiny_llama_relu_generate": {
        "model": "random", "n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 0,
        "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 1, "enc_bias": 0.0,
        "prompt": "The capital of France is",
        "interventions": [
            {"interventions": [[0, 5, 2, 0.0], [1, [3], 7, 8.0], [0, [1], 6, 10.0]],
             "freeze_attention": True, "constrained_layers": None, "generate": 6},
            {"interventions": [[0, 5, 2, 0.0], [1, [3], 7, 8.0], [0, [1], 6, 10.0]],
             "freeze_attention": True, "constrained_layers": [0, 2], "generate": 6},
            {"interventions": [[0, 5, 2, 0.0], [1, [3], 7, 8.0], [0, [1], 6, 10.0]],
             "freeze_attention": False, "constrained_layers": None, "generate": 6},
        ]},
    # cross-layer transcoders (circuit-tracer's CLT folder): each layer's features write to every later MLP output;
    # feature_intervention with frozen attention, with layers 0-1 constrained (of 3), and with all constrained
    "tiny_llama_clt": {
        "model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 2,
        "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 6, "enc_bias": 0.0, "cross_layer": True,
        "prompt": "The capital of France is",
        "interventions": [
            {"interventions": [[0, 5, 2, 0.0], [0, 3, 1, 4.0], [1, 5, 7, 3.0], [2, 4, 6, 10.0]],
             "freeze_attention": True, "constrained_layers": None},
            {"interventions": [[0, 5, 2, 0.0], [0, 3, 1, 4.0], [1, 5, 7, 3.0], [2, 4, 6, 10.0]],
             "freeze_attention": True, "constrained_layers": [0, 2]},
            {"interventions": [[0, 5, 2, 0.0], [0, 3, 1, 4.0], [1, 5, 7, 3.0], [2, 4, 6, 10.0]],
             "freeze_attention": True, "constrained_layers": [0, 3]},
        ]},
    # feature_intervention_generate with the CLT: open-ended positions; frozen attention, layers 0-1 of 3
    # constrained (generated tokens then run free at every layer), free attention
    "tiny_llama_clt_generate": {
        "model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 2,
        "n_features": 48, "activation": "relu", "skip": False, "tc_seed": 6, "enc_bias": 0.0, "cross_layer": True,
        "prompt": "The capital of France is",
        "interventions": [
            {"interventions": [[0, 5, 2, 0.0], [1, [3], 7, 8.0], [0, [1], 6, 10.0]],
             "freeze_attention": True, "constrained_layers": None, "generate": 6},
            {"interventions": [[0, 5, 2, 0.0], [1, [3], 7, 8.0], [0, [1], 6, 10.0]],
             "freeze_attention": True, "constrained_layers": [0, 2], "generate": 6},
            {"interventions": [[0, 5, 2, 0.0], [1, [3], 7, 8.0], [0, [1], 6, 10.0]],
             "freeze_attention": False, "constrained_layers": None, "generate": 6},
        ]},
    # a JumpReLU CLT reading the residual before the MLP's norm (circuit-tracer's default CLT hooks)
    "tiny_llama_clt_jumprelu_resid_mid": {
        "model": "random", "n_layers": 3, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "seed": 2,
        "n_features": 48, "activation": "jumprelu", "skip": False, "tc_seed": 7, "enc_bias": 0.0,
        "cross_layer": True, "prompt": "The capital of France is",
        "input_hook": "hook_resid_mid", "output_hook": "hook_mlp_out"},
    "smollm2_relu": {"model": "smollm2", "n_features": 16, "activation": "relu", "skip": False, "tc_seed": 4,
                     "enc_bias": -0.2, "prompt": "The capital of France is"},
    "smollm2_jumprelu_skip": {"model": "smollm2", "n_features": 16, "activation": "jumprelu", "skip": True,
                              "tc_seed": 5, "enc_bias": 0.0, "prompt": "The capital of France is"},
}


def case_model(case: dict):
    from anchorlens import random_model

    return random_model("llama", n_layers=case["n_layers"], d_model=case["d_model"], n_heads=case["n_heads"],
                        n_kv_heads=case["n_kv_heads"], seed=case["seed"])


def case_transcoders(case: dict, n_layers: int | None = None, d_model: int | None = None):
    from anchorlens.attribution.transcoders import random_transcoders

    n_layers = n_layers or case.get("n_layers", 30)
    d_model = d_model or case.get("d_model", 576)
    transcoders = random_transcoders(n_layers, d_model, case["n_features"], activation=case["activation"],
                                     skip=case["skip"], seed=case["tc_seed"], enc_bias=case["enc_bias"],
                                     cross_layer=case.get("cross_layer", False))
    transcoders.feature_input_hook = case.get("input_hook", transcoders.feature_input_hook)
    transcoders.feature_output_hook = case.get("output_hook", transcoders.feature_output_hook)
    return transcoders


def case_targets(case: dict, model):
    """anchorlens's ``attribution_targets`` for the case (None: the salient logits)."""
    import torch

    from anchorlens.attribution.targets import logit_difference_target

    spec = case.get("targets")
    if spec is None:
        return None
    if "ids" in spec:
        return torch.tensor(spec["ids"])
    if "strings" in spec:
        return list(spec["strings"])
    return [logit_difference_target(model, a, b, weight=w, label=label) for label, w, a, b in spec["logit_diffs"]]
