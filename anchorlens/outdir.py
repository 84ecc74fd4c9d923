"""The output folder of a command: checked before any long work starts, so a typo fails in a second."""

from __future__ import annotations

from pathlib import Path

from anchorlens.errors import OptionError


def check_writable(out: Path) -> None:
    """The output folder exists or can be made, and a file can be written in it."""
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out} is a file: pass a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".anchorlens-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise OptionError(f"cannot write the report to {out} ({error.strerror}): pass --out a folder you can "
                          "write to") from None
