"""What the methods need to know of the Hugging Face model behind a bridge, read here (and in hooks/) only:
the forward's ``logits_to_keep``, the stop tokens, and a copy with one key/value head per query head."""

from __future__ import annotations

import torch

from anchorlens.errors import UnsupportedArchitectureError

def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (unembed only the last positions)."""
    import inspect

    original = getattr(model, "original_model", None)
    return original is not None and "logits_to_keep" in inspect.signature(original.forward).parameters


def stop_token_ids(model) -> set[int]:
    """End-of-sequence ids: the tokenizer's and the generation config's (which may list several)."""
    ids: set[int] = set()
    if model.tokenizer.eos_token_id is not None:
        ids.add(int(model.tokenizer.eos_token_id))
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


@torch.no_grad()
def expand_kv_heads(model, check_text: str = "The capital of France is"):
    """An equivalent bridge whose attention has one key/value head per query head (no GQA).

    Works for Hugging Face Llama / Qwen2 / Mistral-style models (``k_proj`` / ``v_proj`` linear layers).
    The copy is checked: its logits equal the original's on ``check_text`` (else UnsupportedArchitectureError).
    Edge attribution patching (``anchorlens.flow.edge_patching``) runs on it.
    """
    from transformer_lens.model_bridge import TransformerBridge

    hf = model.original_model
    config = hf.config
    n_heads, n_kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    if n_kv == n_heads:
        return model
    group = n_heads // n_kv
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    new_config = type(config).from_dict(config.to_dict())
    new_config.num_key_value_heads = n_heads
    new_config._attn_implementation = "eager"
    expanded = type(hf)(new_config).to(dtype=next(hf.parameters()).dtype, device=next(hf.parameters()).device).eval()
    # The bridge wraps the Hugging Face modules (its own state-dict names differ): read every parameter the
    # plain model expects by attribute path, through the wrappers.
    state = {}
    for name in expanded.state_dict():
        owner = hf
        for part in name.split(".")[:-1]:
            owner = getattr(owner, part)
        state[name] = getattr(owner, name.split(".")[-1]).detach().clone()
    for name, tensor in list(state.items()):
        if any(f"self_attn.{p}_proj." in name for p in ("k", "v")):  # [kv * d_head, ...] -> [heads * d_head, ...]
            rows = tensor.reshape(n_kv, d_head, *tensor.shape[1:])
            state[name] = rows.repeat_interleave(group, dim=0).reshape(n_heads * d_head, *tensor.shape[1:])
    expanded.load_state_dict(state)
    bridge = TransformerBridge.boot_transformers(
        getattr(model.cfg, "model_name", "expanded"), hf_model=expanded, tokenizer=model.tokenizer,
        device=model.cfg.device, dtype=next(hf.parameters()).dtype,
    )
    bridge.eval()
    bridge.anchorlens_name = f"{getattr(model, 'anchorlens_name', 'model')}-mha"
    tokens = model.to_tokens(check_text)
    if not torch.allclose(model(tokens), bridge(tokens), atol=1e-4, rtol=1e-4):
        raise UnsupportedArchitectureError("the key/value-expanded copy does not reproduce the model's logits: this architecture's "
                                "attention is not a plain grouped-query one; use node granularity instead")
    return bridge
