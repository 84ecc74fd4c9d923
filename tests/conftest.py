"""Shared fixtures: the embedded model (loaded once per session) and small random models."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "data" / "thought-anchors"


def reference_traces() -> list[Path]:
    """The 20 published trace folders (problem_*/) shipped in data/thought-anchors."""
    return sorted(REFERENCE.glob("*/*/problem_*"))


#: Fixtures that load the embedded model or start a process: a test that uses one (directly or through another
#: fixture) is in the slow tier, so `pytest -m "not slow"` stays fast without anyone remembering to mark it.
SLOW_FIXTURES = {"smol", "sample_analysis", "embedded_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def load_json(path: Path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while these tests run: on a shared 2-core machine, 2 threads that wait for each
    other run several times slower than 1 (measured: 0.14 s against 0.39 s per SmolLM2 decode step)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M-Instruct from the embedded GGUF, as a TransformerBridge."""
    from anchorlens import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def tiny_llama():
    from anchorlens import random_model

    return random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen():
    from anchorlens import random_model

    return random_model("qwen2", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=1)


ANCHORLENS_COMMAND = Path(sys.executable).parent / "anchorlens"  # the installed console script


def run_anchorlens(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run the real ``anchorlens`` command (a separate process, as a user runs it)."""
    return subprocess.run([str(ANCHORLENS_COMMAND), *args], capture_output=True, text=True, timeout=timeout)


def _stored_rollouts(store: Path) -> int:
    """Rows in a rollout store, 0 while the file or its table is not there yet."""
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0  # the table is not created yet (or the file is being created)


def kill_after_rollouts(*args: str, out: Path, at_least: int, timeout: float = 900) -> None:
    """Start the real ``anchorlens`` command, wait until ``out/rollouts.sqlite`` holds ``at_least`` rollouts, then
    kill it with SIGKILL (no clean-up runs), as a crash or an out-of-time job would. The caller resumes it."""
    process = subprocess.Popen([str(ANCHORLENS_COMMAND), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while _stored_rollouts(out / "rollouts.sqlite") < at_least:
            assert process.poll() is None, "the run finished before it could be killed: make it longer"
            assert time.monotonic() < deadline, "no rollouts appeared in time"
            time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def sample_analysis(tmp_path_factory) -> Path:
    """``anchorlens analyze`` on the sample problem with the embedded model: the main job, few and short rollouts."""
    out = tmp_path_factory.mktemp("analyze") / "report"
    done = run_anchorlens("analyze", "--rollouts", "2", "--rollout-tokens", "16", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "stdout.txt").write_text(done.stdout)
    (out / "stderr.txt").write_text(done.stderr)
    return out


@pytest.fixture(scope="session")
def embedded_server():
    """A real ``transformers serve`` process serving the embedded model, shared by every test that needs one."""
    from anchorlens.resampling.server import start_server

    server = start_server(threads=1, startup_timeout=600)
    try:
        yield server
    finally:
        server.stop()
    assert not server.running
