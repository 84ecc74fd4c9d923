"""A model organism with a known information flow route: one head copies a marker token to every later position.

Built on ``planted_receiver_model`` (``anchorlens.receivers.organism``): head ``(layer, head)`` attends from
every position to the marker token (``" anchor"``). Here that head's output is also made loud (its columns of
``o_proj`` scaled by ``gain``), so the marker's value, moved by that head, is a large part of every later
``resid_mid``: the route into the last prediction must hold the attention edge ``marker -> last`` at
``layer``, carried by ``head``. The control (``planted=False``) has the same loud head but no query/key plant,
so the head spreads its attention and no single edge carries the marker.
"""

from __future__ import annotations

import torch

from anchorlens.receivers.organism import planted_receiver_model


@torch.no_grad()
def planted_route_model(layer: int = 1, head: int = 3, gain: float = 10.0, planted: bool = True, seed: int = 0, **kwargs):
    """A random Llama bridge whose head ``(layer, head)`` copies the marker token to every later position.

    ``model.planted_head`` and ``model.marker_token`` say where the route is; ``planted=False`` gives the
    control without the attention plant (same weights otherwise).
    """
    model = planted_receiver_model(layer=layer, head=head, strength=1.5 if planted else 0.0, seed=seed, **kwargs)
    attention = model.original_model.model.layers[layer].self_attn
    d_head = model.cfg.d_head
    attention.o_proj.weight[:, head * d_head : (head + 1) * d_head] *= gain
    model.anchorlens_name = f"planted-route-L{layer}H{head}-{'planted' if planted else 'control'}-seed{seed}"
    return model
