"""CPU time of ``anchorlens --help`` and of refused arguments against importing every export (the old start-up).

Before issue 30, ``import anchorlens.cli`` ran the package's ``__init__``, which imported every module (torch,
transformers, TransformerLens included) before argparse printed anything. The baseline reproduces that in the
same run: a fresh interpreter that touches every name of ``anchorlens.__all__``. Each command runs in a fresh
interpreter, the commands interleaved over ``--rounds`` rounds; CPU time is the child's user + system time
(``os.wait4``), reported as medians and as a ratio to the baseline.

    .venv/bin/python benchmarks/bench_cli.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(argv: list[str]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit status) of one fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - started, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    python = sys.executable
    cli = [python, "-m", "anchorlens.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty"
        empty.mkdir()
        commands = {
            "python -c pass (the interpreter alone)": [python, "-c", "pass"],
            "baseline: every export imported (the old `import anchorlens`)":
                [python, "-c", "import anchorlens as al; [getattr(al, n) for n in al.__all__]"],
            "anchorlens --help": [*cli, "--help"],
            "anchorlens analyze --help": [*cli, "analyze", "--help"],
            "anchorlens analyze --rollouts x (argparse refuses)": [*cli, "analyze", "--rollouts", "x"],
            "anchorlens analyze --heads 0 (our check refuses)": [*cli, "analyze", "--heads", "0", "--out",
                                                                  str(Path(tmp) / "out")],
            "anchorlens analyze --model EMPTY_FOLDER": [*cli, "analyze", "--model", str(empty), "--out",
                                                       str(Path(tmp) / "out")],
        }
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        wall: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, argv in commands.items():
                seconds, elapsed, code = run(argv)
                expected = 0 if "--help" in argv or "-c" in argv else 2
                assert code == expected, f"{name}: exit {code}, expected {expected}"
                cpu[name].append(seconds)
                wall[name].append(elapsed)
    baseline = statistics.median(cpu["baseline: every export imported (the old `import anchorlens`)"])
    print(f"{rounds} rounds, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print("| command | median CPU s | median wall s | CPU ratio to baseline |")
    print("|---|---|---|---|")
    for name in commands:
        median = statistics.median(cpu[name])
        print(f"| {name} | {median:.2f} | {statistics.median(wall[name]):.2f} | {median / baseline:.3f}x |")


if __name__ == "__main__":
    main()
