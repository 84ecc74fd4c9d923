"""Hook plumbing: the one place where anchorlens reaches into a model.

Every intervention is a TransformerLens hook on a ``TransformerBridge`` (``model.hooks(...)``,
``model.run_with_hooks(...)``); the modules here build those hooks. The math they feed (sentence
matrices, kurtosis, KL) lives elsewhere as pure functions over tensors.
"""


def attn_hook(layer: int, name: str) -> str:
    """The name of an attention hook point, e.g. ``attn_hook(3, "hook_z") == "blocks.3.attn.hook_z"``."""
    return f"blocks.{layer}.attn.{name}"


def active_hook_points(model) -> list[str]:
    """The names of the hook points with a hook on them right now (sorted)."""
    return sorted(name for name, module in model.named_modules()
                  if type(module).__name__ == "HookPoint" and (module._forward_hooks or module._forward_pre_hooks))
