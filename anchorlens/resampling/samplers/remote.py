"""Sampling through any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, ``transformers serve``).

One HTTP request per rollout, a bounded number in flight at once (a thread pool), retries with
exponential back-off on connection errors, timeouts, HTTP 429 and 5xx, and a per-request timeout.
This is how rollouts spread over many GPUs or machines: start vLLM where the GPUs are (behind one
load balancer, or one URL per machine, each with its own sampler and run) and point this sampler at it.

Seeds: vLLM and SGLang honour a per-request ``seed``. ``transformers serve`` sets the global torch seed
when a request arrives, so its completions are reproducible only with ``concurrency=1``.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Iterator, Sequence


from anchorlens.resampling.samplers.base import (
    FINISH_REASONS,
    Completion,
    Sampler,
    SampleRequest,
    SamplerError,
    SamplingParams,
    ServerUnavailableError,
    check_requests,
)
from anchorlens.progress import progress_bar

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class ServerSampler(Sampler):
    """Completions from an OpenAI-compatible server.

    Args:
        base_url: the server root, e.g. ``"http://127.0.0.1:8000"`` (a trailing ``/v1`` is accepted).
        model: the model name the server expects in each request; None asks ``GET /v1/models``
            for the first one. (``transformers serve`` started by ``anchorlens.resampling.serve`` wants
            the served folder's path; ``ModelServer.sampler()`` fills it in.)
        concurrency: requests in flight at once. A server that batches (vLLM, SGLang, or
            ``transformers serve --continuous-batching``) gets faster with more.
        timeout: seconds to wait for one response before retrying it.
        max_retries: retries per request after the first try; then ``ServerUnavailableError``.
        backoff: first retry delay in seconds; doubles on every retry (with +-25 % jitter).
        api_key: sent as ``Authorization: Bearer ...`` when given.
        progress: show a tqdm bar.

    >>> sampler = ServerSampler("http://127.0.0.1:8000", model="Qwen/Qwen2.5-1.5B", concurrency=32)  # doctest: +SKIP
    >>> sampler.sample([SampleRequest("1 + 1 =", seed=0)], SamplingParams(max_tokens=4))           # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        api_key: str | None = None,
        progress: bool = True,
    ):
        from anchorlens.inputs import check_server_url

        check_server_url(base_url, "base_url")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise SamplerError(f"concurrency must be a positive integer, got {concurrency!r}")
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise SamplerError("timeout must be > 0, max_retries and backoff >= 0")
        base_url = base_url.rstrip("/")
        self.base_url = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.api_key = api_key
        self.progress = progress
        self._local = threading.local()  # one requests.Session per worker thread
        self.model = model or self._first_model()
        self.name = f"server:{self.base_url}:{self.model}"

    @property
    def identity(self) -> dict:
        """The model name the server serves (not its URL: the same model behind another host samples the same)."""
        return {"sampler": "server", "model": self.model}

    # ------------------------------------------------------------------ the Sampler interface

    def stream(self, requests: Sequence[SampleRequest], params: SamplingParams) -> Iterator[Completion]:
        """Yield completions as responses arrive; at most ``concurrency`` requests are in flight."""
        requests = check_requests(requests)
        pending = iter(requests)
        in_flight: set[Future] = set()
        bar = progress_bar(total=len(requests), unit="rollout", desc="server sampling", progress=self.progress)
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="anchorlens-sampler")
        try:
            # Submit lazily, keeping only `concurrency` requests queued: a consumer that stops early
            # (or a killed run) leaves no backlog of requests the server would still work through.
            for request in pending:
                in_flight.add(executor.submit(self.complete, request, params))
                if len(in_flight) >= self.concurrency:
                    break
            while in_flight:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    completion = future.result()  # re-raises ServerUnavailableError after the retries
                    next_request = next(pending, None)
                    if next_request is not None:
                        in_flight.add(executor.submit(self.complete, next_request, params))
                    bar.update(1)
                    yield completion
        finally:
            for future in in_flight:
                future.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
            bar.close()

    def complete(self, request: SampleRequest, params: SamplingParams) -> Completion:
        """One request, with retries; the unit of work of ``stream`` (runs in a worker thread)."""
        body = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": request.seed,
            "stream": False,
        }
        data = self._post("/v1/completions", body)
        try:
            choice = data["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError) as error:
            raise ServerUnavailableError(f"{self.base_url} answered without choices[0].text: {str(data)[:300]}") from error
        usage = data.get("usage") or {}
        n_tokens = int(usage.get("completion_tokens") or 0)
        reason = choice.get("finish_reason")
        if reason not in FINISH_REASONS:
            reason = "length" if n_tokens >= params.max_tokens else "stop"
        return Completion(request, text=text, n_tokens=n_tokens, finish_reason=reason)

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    # ------------------------------------------------------------------ HTTP

    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self.api_key:
                session.headers["Authorization"] = f"Bearer {self.api_key}"
            self._local.session = session
        return session

    def _post(self, path: str, body: dict) -> dict:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict | None = None, max_retries: int | None = None) -> dict:
        import requests

        url = self.base_url + path
        retries = self.max_retries if max_retries is None else max_retries
        last_problem = "no attempt made"
        for attempt in range(retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)
                time.sleep(delay)
            try:
                response = self._session().request(method, url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as error:
                last_problem = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in RETRY_STATUS:
                last_problem = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code >= 400:  # the request itself is wrong: retrying cannot help
                raise ServerUnavailableError(
                    f"{method} {url} was refused with HTTP {response.status_code}: {response.text[:500]}\n"
                    "Check the model name (ServerSampler(model=...)) and the sampling settings."
                )
            try:
                return response.json()
            except ValueError:
                last_problem = f"a response that is not JSON: {response.text[:200]!r}"
                continue
        raise ServerUnavailableError(
            f"{method} {url} failed {retries + 1} times (last: {last_problem}). Is the server running "
            "and reachable? Raise timeout= for slow servers or max_retries= for flaky networks."
        )

    def _first_model(self) -> str:
        try:
            data = self._call("GET", "/v1/models", max_retries=min(self.max_retries, 1))
            return str(data["data"][0]["id"])
        except (ServerUnavailableError, KeyError, IndexError, TypeError) as error:
            raise SamplerError(
                f"could not ask {self.base_url}/v1/models which model it serves ({error}); "
                "pass the name explicitly: ServerSampler(base_url, model=...)"
            ) from error
