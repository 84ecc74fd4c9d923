"""Hook plumbing: the one place where anchorlens reaches into a model.

Every intervention is a TransformerLens hook on a ``TransformerBridge`` (``model.hooks(...)``,
``model.run_with_hooks(...)``); the modules here build those hooks. The math they feed (sentence
matrices, kurtosis, KL) lives elsewhere as pure functions over tensors. Hook names are spelled by
``transformer_lens.utilities.get_act_name`` (``get_act_name("z", 3) == "blocks.3.attn.hook_z"``).

This package imports nothing of anchorlens above it (only ``anchorlens.errors``, ``anchorlens.versions`` and
``anchorlens.heads``, leaf modules): ``tests/test_layers.py`` checks it.
"""


def active_hook_points(model) -> list[str]:
    """The names of the hook points with a hook on them right now (sorted)."""
    return sorted(name for name, module in model.named_modules()
                  if type(module).__name__ == "HookPoint" and (module._forward_hooks or module._forward_pre_hooks))


from anchorlens.hooks import fused_mla as _fused_mla  # noqa: E402,F401  (registers MLA's fused forward)
