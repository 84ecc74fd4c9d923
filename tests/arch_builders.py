"""Small random models of every family issue 27 names, with an untouched Hugging Face copy as ground truth.

Built by ``anchorlens.random_model`` (one builder for the package and its tests) at the sizes these tests use: 2
layers, width 64, 4 heads over 2 key/value heads, head size 16, and sliding windows of ``WINDOW`` tokens, shorter than
every test text. Norm weights and 1-D biases are randomised (some families start them at 0 or 1) so that every
part of the model shows in a comparison. ``build(family)`` returns ``(bridge, hf)``: ``hf`` is an untouched copy of
the same weights, taken before booting (the bridge wraps, and may edit, the model it boots).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from anchorlens.random_models import FAMILIES as _FAMILIES

FAMILIES = tuple(_FAMILIES)
WINDOW = 6  # sliding windows shorter than every test text
SIZES = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_mlp=96, n_ctx=256)


@lru_cache(maxsize=1)
def tokenizer():
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def _randomise_vectors(model) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)


def hf_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """The plain Hugging Face model (eager attention) of ``build(family, seed)``, not booted."""
    from anchorlens.random_models import random_config

    config, model_class = random_config(family, tokenizer(), sliding_window=WINDOW,
                                        **{k: v for k, v in SIZES.items() if k != "n_ctx"}, n_ctx=SIZES["n_ctx"])
    torch.manual_seed(seed)
    model = model_class(config)
    _randomise_vectors(model)
    return model.to(dtype=dtype).eval()


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """``(bridge, hf)``: the family's random model booted as a bridge, and an untouched copy of it."""
    from anchorlens.models import random_model

    kept = {}

    def randomise_and_keep(model):
        _randomise_vectors(model)
        kept["hf"] = copy.deepcopy(model)

    bridge = random_model(family, seed=seed, dtype=dtype, tokenizer=tokenizer(), sliding_window=WINDOW,
                          edit_weights=randomise_and_keep, check_attention_edits=False,
                          check_cached_decoding=False, check_fused=False, **SIZES)
    return bridge, kept["hf"]
