"""Small random Hugging Face models with sliding-window layers, for the KV-cache and suppression tests.

Until ``anchorlens.random_model`` builds these families, the tests build them here: a config of the family with
``layer_types`` mixing sliding and full layers and a window (``WINDOW``) much shorter than the test traces,
``config.architectures`` set, eager attention, booted as ``anchorlens.random_model`` boots its models.
"""

from __future__ import annotations

import torch

WINDOW = 16
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
FAMILIES = ["qwen3", "olmo3", "gemma3_text", "gpt_oss"]


def hf_random(model_type: str, seed: int = 0, window: int = WINDOW):
    """A small random Hugging Face causal LM of ``model_type`` with sliding-window layers (``window``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from anchorlens.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    kwargs = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=len(LAYER_TYPES),
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        layer_types=LAYER_TYPES, sliding_window=window,
    )
    if model_type == "qwen3":
        kwargs |= dict(use_sliding_window=True, max_window_layers=0)
    if model_type == "gpt_oss":
        kwargs |= dict(num_local_experts=4, num_experts_per_tok=2)
    config = AutoConfig.for_model(model_type, **kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    model.config.architectures = [type(model).__name__]
    assert list(model.config.layer_types) == LAYER_TYPES
    return model, tokenizer


def boot(hf_model, tokenizer, name: str):
    """The bridge anchorlens uses, with the checks ``load_model`` runs (attention edits, cached decoding)."""
    from transformer_lens.model_bridge import TransformerBridge

    from anchorlens.models import _check

    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, device="cpu",
                                                 dtype=torch.float32)
    bridge.eval()
    bridge.anchorlens_name = f"random-{name}-window{hf_model.config.sliding_window}"
    _check(bridge, True, True)
    return bridge
