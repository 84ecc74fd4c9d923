"""Progress bars: on by default for every call that can take more than a few seconds; one switch turns all off.

    anchorlens.set_progress(False)      # every bar off, for this process (analyze / study still say what they reuse)
    ANCHORLENS_PROGRESS=0 python ...    # the same from the environment

A call's own ``progress=False`` turns off its bars only. Every bar in anchorlens is made by ``progress_bar``, so
the switch reaches them all. This module imports nothing from anchorlens (``hooks/`` uses it too).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

_enabled: bool | None = None  # None: ANCHORLENS_PROGRESS decides


def set_progress(enabled: bool | None) -> bool | None:
    """Turn every progress bar on (True) or off (False); None goes back to ``ANCHORLENS_PROGRESS``. Returns the
    previous setting, so ``set_progress(previous)`` restores it."""
    global _enabled
    previous, _enabled = _enabled, None if enabled is None else bool(enabled)
    return previous


def progress_enabled() -> bool:
    """Whether bars may show: ``set_progress``'s setting, else ``ANCHORLENS_PROGRESS`` (0 / false / no / off: no)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("ANCHORLENS_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def show(progress: bool) -> bool:
    """A call's ``progress`` argument under the global switch."""
    return bool(progress) and progress_enabled()


def progress_bar(iterable=None, *, progress: bool = True, **kwargs) -> tqdm:
    """A tqdm bar that shows when the call's ``progress`` and the global switch are both on (``disable=None``
    passed through: also hidden when standard error is not a terminal)."""
    kwargs["disable"] = True if not show(progress) else kwargs.get("disable", False)
    return tqdm(iterable, **kwargs)
