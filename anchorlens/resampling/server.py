"""Starting and stopping a local ``transformers serve`` process: an OpenAI-compatible completion server.

``transformers serve`` (the extra ``transformers[serving]``, installed by ``pip install anchorlens[serve]``)
speaks the same ``POST /v1/completions`` API as vLLM and SGLang, so the ``ServerSampler`` that talks to
it talks to them too. It cannot serve the embedded GGUF file directly; ``servable_model_dir`` gives an
ordinary Hugging Face folder (de-quantised once, sampling enabled in its generation config).

>>> with start_server() as server:                       # doctest: +SKIP
...     sampler = server.sampler(concurrency=2)
...     sampler.sample([SampleRequest("The capital of France is", seed=0)])
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from anchorlens.errors import ServerError
from anchorlens.models import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_model_dir

log = logging.getLogger(__name__)

# Runs the `transformers` console script with this very interpreter (no reliance on PATH).
_CLI = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"


ServerStartError = ServerError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.ServerError


def servable_model_dir(model: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """A folder ``transformers serve`` can serve, with sampling on (else it ignores temperature and top_p).

    Embedded model names are de-quantised into the anchorlens cache once; a folder you pass is checked,
    never modified.

    >>> servable_model_dir()                                  # doctest: +SKIP
    PosixPath('/root/.cache/anchorlens/models/smollm2-135m-instruct')
    """
    if str(model) in EMBEDDED_MODELS:
        return embedded_model_dir(str(model))
    folder = Path(model).expanduser()
    if not (folder / "config.json").exists():
        raise ServerStartError(
            f"{folder} is not a Hugging Face model folder (no config.json). Pass an embedded model name "
            f"({', '.join(EMBEDDED_MODELS)}) or a folder written by save_pretrained."
        )
    generation_config = folder / "generation_config.json"
    settings = json.loads(generation_config.read_text()) if generation_config.exists() else {}
    if not settings.get("do_sample", False):
        raise ServerStartError(
            f"{generation_config} does not set \"do_sample\": true, so transformers serve would silently "
            "ignore temperature and top_p and decode greedily. Add \"do_sample\": true to that file."
        )
    return folder


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(eq=False)  # identity semantics: kept in a WeakSet
class ModelServer:
    """A running ``transformers serve`` process. Stop it with ``stop()`` or use it as a context manager.

    Attributes:
        process: the server process (its own process group, so ``stop`` ends its children too).
        base_url: ``http://host:port``.
        model: the model name requests must carry (the served folder's path).
        log_path: the server's stdout and stderr.
    """

    process: subprocess.Popen
    base_url: str
    model: str
    log_path: Path
    _stopped: bool = field(default=False, repr=False)
    _temporary_log: bool = field(default=False, repr=False)  # a log file we made: removed by stop()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def sampler(self, **kwargs):
        """A ``ServerSampler`` for this server (keyword arguments as for ``ServerSampler``)."""
        from anchorlens.resampling.samplers.remote import ServerSampler

        return ServerSampler(self.base_url, model=self.model, **kwargs)

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if it has not exited within ``timeout``."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        # children of the group that outlived the leader
        _signal_group(self.process, signal.SIGKILL)
        if self._temporary_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str = "cpu",
    continuous_batching: bool = False,
    threads: int | None = None,
    startup_timeout: float = 300.0,
    log_path: str | os.PathLike | None = None,
    extra_args: tuple[str, ...] = (),
) -> ModelServer:
    """Start ``transformers serve`` on ``host:port`` and wait (at most ``startup_timeout`` s) until it answers.

    Ready means: ``GET /health`` answers and a one-token completion succeeds (the model is loaded).

    Args:
        model: an embedded model name or a Hugging Face folder (see ``servable_model_dir``).
        host: listen address; the default keeps it on this machine.
        port: None picks a free port (retried if another process takes it first).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        continuous_batching: let the server batch concurrent requests (paged attention).
        threads: torch threads for the server process (``OMP_NUM_THREADS``); None inherits.
        startup_timeout: seconds to wait for readiness before giving up (the process is then stopped).
        log_path: where the server's output goes (default: a temporary file, removed by ``stop()``).
        extra_args: more ``transformers serve`` options, e.g. ``("--dtype", "bfloat16")``.

    >>> server = start_server()            # doctest: +SKIP
    >>> server.base_url, server.model      # doctest: +SKIP
    ('http://127.0.0.1:40123', '/root/.cache/anchorlens/models/smollm2-135m-instruct')
    >>> server.stop()                      # doctest: +SKIP
    """
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ServerStartError(
            f"transformers serve needs {', '.join(missing)}: install the serving extra with "
            "pip install 'anchorlens[serve]' (or 'transformers[serving]')"
        )
    folder = servable_model_dir(model)
    attempts = 1 if port is not None else 3  # a port picked for us may be taken before the server binds it
    last_error: ServerStartError | None = None
    for _ in range(attempts):
        try:
            return _start_once(folder, host, port or free_port(host), device, continuous_batching, threads,
                               startup_timeout, log_path, extra_args)
        except _PortTaken as error:
            last_error = ServerStartError(str(error))
    raise last_error  # type: ignore[misc]


class _PortTaken(Exception):
    pass


def _start_once(folder, host, port, device, continuous_batching, threads, startup_timeout, log_path, extra_args):
    import requests

    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HF_HUB_OFFLINE"] = "1"  # the folder is local: never reach for the hub
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-c", _CLI, "serve", str(folder), "--host", host, "--port", str(port),
               "--device", device, "--log-level", "warning"]
    command.append("--continuous-batching" if continuous_batching else "--no-continuous-batching")
    command.extend(extra_args)
    temporary_log = log_path is None
    if temporary_log:
        handle, name = tempfile.mkstemp(prefix="anchorlens-serve-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path = Path(log_path)
    with open(log_path, "ab") as log_file:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    server = ModelServer(process, f"http://{host}:{port}", str(folder), log_path, _temporary_log=temporary_log)
    _LIVE.add(server)
    log.info("started transformers serve (pid %d) on %s for %s", process.pid, server.base_url, folder)

    deadline = time.monotonic() + startup_timeout
    session = requests.Session()
    try:
        for url, body in ((f"{server.base_url}/health", None),
                          (f"{server.base_url}/v1/completions", {"model": server.model, "prompt": "Hello",
                                                                 "max_tokens": 1})):
            while True:
                if not server.running:
                    tail = server.log_tail()
                    if "address already in use" in tail.lower():
                        raise _PortTaken(f"port {port} on {host} is taken")
                    raise ServerStartError(f"transformers serve exited with code {process.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"transformers serve did not get ready within {startup_timeout:.0f} s (log: {log_path}):\n"
                        f"{server.log_tail()}\nRaise startup_timeout on a slow or busy machine."
                    )
                try:
                    left = max(1.0, deadline - time.monotonic())
                    response = (session.post(url, json=body, timeout=left) if body else session.get(url, timeout=5))
                    if response.status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
    except BaseException:
        server._temporary_log = False  # keep the log the error message points to
        server.stop()
        raise
    finally:
        session.close()
    return server


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the server's own group (start_new_session): its pid is the group id
    except (ProcessLookupError, PermissionError):
        pass


# Servers still running when Python exits are stopped, so a forgotten server does not outlive the session.
_LIVE: "weakref.WeakSet[ModelServer]" = weakref.WeakSet()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_LIVE):
        server.stop(timeout=5)
