"""Make each block's MLP return an output already known instead of computing it again.

The frozen forward of attribution (``replacement``) runs ``batch`` copies of one prompt and detaches every MLP
output: its value is the same in every copy, the one plain forward already computed it, and no gradient goes
through the MLP. Computing it again for 64 copies is most of the forward's arithmetic (a gated MLP has 3 of a
Llama layer's 4.x d_model^2-sized matrices, x4 wide) and its [batch, position, d_mlp] intermediates are the
forward's largest transient tensors. Inside ``known_mlp_outputs`` the wrapped Hugging Face MLP returns the known
value expanded over the batch; the bridge's hooks around it (``mlp.hook_in``, ``mlp.hook_out``) still fire.
A bridge that does not call the wrapped module (processed-weights mode) computes the MLP as before. An MLP that
returns a tuple (gpt-oss's mixture of experts returns its router scores too, which its block discards) gets
``(output, None)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor


@torch.no_grad()
def _returns_tuple(module, output: Tensor) -> bool:
    """Whether ``module``'s own forward returns a tuple (probed on one zero token)."""
    probe = output.new_zeros(1, 1, output.shape[-1]).to(next(module.parameters()).dtype)
    return isinstance(type(module).forward(module, probe), tuple)


@contextmanager
def known_mlp_outputs(model, outputs: list[Float[Tensor, "position d_model"]]) -> Iterator[None]:
    """Block ``i``'s MLP returns ``outputs[i]`` (broadcast over the batch) inside the ``with`` block."""
    modules = [getattr(block.mlp, "original_component", None) for block in model.blocks]
    replaced = []
    for module, output in zip(modules, outputs):
        if module is None or output is None:
            continue

        def known(x, *args, _output=output, _tuple=_returns_tuple(module, output), **kwargs):
            value = _output.to(x.dtype).expand(*x.shape[:-2], *_output.shape)
            return (value, None) if _tuple else value

        module.__dict__["forward"] = known  # an instance attribute, found before the class's forward
        replaced.append(module)
    try:
        yield
    finally:
        for module in replaced:
            module.__dict__.pop("forward", None)
