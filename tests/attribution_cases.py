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
    from anchorlens.tracing.transcoders import random_transcoders

    n_layers = n_layers or case.get("n_layers", 30)
    d_model = d_model or case.get("d_model", 576)
    return random_transcoders(n_layers, d_model, case["n_features"], activation=case["activation"],
                              skip=case["skip"], seed=case["tc_seed"], enc_bias=case["enc_bias"])
