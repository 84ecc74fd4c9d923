"""Small random Hugging Face models of every family issue 27 names, booted as TransformerBridges.

Until ``anchorlens.random_model`` builds every family, tests build them here the way ``random_model`` does:
a config with ``config.architectures`` set, eager attention, sliding windows shorter than the test texts where
the family has them, random weights from a fixed seed, and ``TransformerBridge.boot_transformers(hf_model=...)``.
``build(family)`` returns ``(bridge, hf)``: ``hf`` is an untouched copy of the same weights (the ground truth).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

FAMILIES = ("llama", "qwen2", "mistral", "qwen3", "qwen3_moe", "olmo2", "olmo3", "gemma2", "gemma3",
            "gpt_oss", "phi3", "deepseek_v3")
WINDOW = 6  # sliding windows shorter than every test text

D_MODEL, N_HEADS, N_KV, D_HEAD, N_LAYERS = 64, 4, 2, 16, 2


def _config(family: str, vocab: int, bos: int, eos: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=96, num_hidden_layers=N_LAYERS,
                  num_attention_heads=N_HEADS, num_key_value_heads=N_KV, max_position_embeddings=256,
                  bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=False)
    if family == "llama":
        return tf.LlamaConfig(**common), "LlamaForCausalLM"
    if family == "qwen2":
        return tf.Qwen2Config(**common), "Qwen2ForCausalLM"
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=WINDOW, head_dim=D_HEAD), "MistralForCausalLM"
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=D_HEAD), "Qwen3ForCausalLM"
    if family == "qwen3_moe":
        return tf.Qwen3MoeConfig(**common, head_dim=D_HEAD, num_experts=4, num_experts_per_tok=2,
                                 moe_intermediate_size=32, decoder_sparse_step=1), "Qwen3MoeForCausalLM"
    if family == "olmo2":
        return tf.Olmo2Config(**common), "Olmo2ForCausalLM"
    if family == "olmo3":
        return tf.Olmo3Config(**common, sliding_window=WINDOW,
                              layer_types=["sliding_attention", "full_attention"]), "Olmo3ForCausalLM"
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=D_HEAD, sliding_window=WINDOW,
                               layer_types=["sliding_attention", "full_attention"]), "Gemma2ForCausalLM"
    if family == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=D_HEAD, sliding_window=WINDOW,
                                   layer_types=["sliding_attention", "full_attention"]), "Gemma3ForCausalLM"
    if family == "gpt_oss":
        common = {**common, "intermediate_size": 32}
        return tf.GptOssConfig(**common, head_dim=D_HEAD, sliding_window=WINDOW, num_local_experts=4,
                               num_experts_per_tok=2, layer_types=["sliding_attention", "full_attention"]), "GptOssForCausalLM"
    if family == "phi3":
        return tf.Phi3Config(**common), "Phi3ForCausalLM"
    if family == "deepseek_v3":
        common = {**common, "num_key_value_heads": N_HEADS}  # MLA: every query head has its own keys and values
        return tf.DeepseekV3Config(**common, q_lora_rank=32, kv_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=16,
                                   v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
                                   moe_intermediate_size=32, first_k_dense_replace=1), "DeepseekV3ForCausalLM"
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


@lru_cache(maxsize=1)
def tokenizer():
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def hf_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """The plain Hugging Face model (eager attention), random weights from ``seed``."""
    import transformers as tf

    tok = tokenizer()
    config, architecture = _config(family, len(tok), tok.bos_token_id, tok.eos_token_id)
    config.architectures = [architecture]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(tf, architecture)(config)
    with torch.no_grad():  # some families start norms / biases at 0 or 1: randomise them so every part shows
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)
    return model.to(dtype=dtype).eval()


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """``(bridge, hf)``: the family's random model booted as a bridge, and an untouched copy of it."""
    from transformer_lens.model_bridge import TransformerBridge

    model = hf_model(family, seed, dtype)
    reference = copy.deepcopy(model)
    bridge = TransformerBridge.boot_transformers(f"random-{family}", hf_model=model, tokenizer=tokenizer(),
                                                 device="cpu", dtype=dtype)
    bridge.eval()
    bridge.anchorlens_name = f"random-{family}-seed{seed}"
    return bridge, reference
