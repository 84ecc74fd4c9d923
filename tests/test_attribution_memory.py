"""The attribution forward's memory savers change nothing: the known-MLP shortcut gives the model's own output
(and is really used), frozen parameters come back as they were."""

import torch

from attribution_cases import CASES, case_model
from anchorlens.hooks.known_mlp import known_mlp_outputs
from anchorlens.hooks.replacement import frozen_parameters


def _mlp_outputs(model, tokens):
    names = [f"blocks.{i}.mlp.hook_out" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return [cache[name][0] for name in names]


def test_known_mlp_outputs_give_the_models_logits_on_every_copy(one_torch_thread):
    model = case_model(CASES["tiny_llama_relu"])
    tokens = torch.tensor([1, 504, 3575, 282, 4649, 314])
    with torch.no_grad():
        plain = model(tokens[None])
        outputs = _mlp_outputs(model, tokens[None])
        with known_mlp_outputs(model, outputs):
            known = model(tokens[None].expand(3, -1))
        with known_mlp_outputs(model, [torch.zeros_like(o) for o in outputs]):
            zeroed = model(tokens[None])
        again = model(tokens[None])  # the MLPs are back after the block
    torch.testing.assert_close(known, plain.expand(3, -1, -1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(zeroed, plain, atol=1e-3)  # the shortcut is what ran, not the MLPs
    torch.testing.assert_close(again, plain, rtol=0, atol=0)


def test_frozen_parameters_restores_requires_grad(one_torch_thread):
    model = case_model(CASES["tiny_llama_relu"])
    first = next(model.parameters())
    first.requires_grad_(False)  # one already frozen stays frozen
    with frozen_parameters(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert not first.requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not first)
