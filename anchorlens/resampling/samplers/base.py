"""The sampler interface: prompts in, completions (text and token counts) out.

Every way of producing rollouts (a model in this process, an OpenAI-compatible server, anything else)
is a ``Sampler``: it takes ``SampleRequest`` objects (a prompt and a seed) plus ``SamplingParams``
(temperature, top_p, max_tokens) and yields a ``Completion`` for each request as soon as that request
is finished, in whatever order they finish. Yielding one by one is what lets a run store each
finished rollout at once, so that a killed run loses only the rollouts still in flight.

Writing a new sampler means subclassing ``Sampler`` and implementing ``stream``:

>>> class Echo(Sampler):
...     def stream(self, requests, params):
...         for request in requests:
...             yield Completion(request, text=" echo", n_tokens=1, finish_reason="stop")
>>> [c.text for c in Echo().sample([SampleRequest("Hi", seed=0)], SamplingParams())]
[' echo']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Iterator, Sequence

from anchorlens import settings
from anchorlens.errors import InputError, ServerUnavailableError  # noqa: F401 (still importable from here)

FINISH_REASONS = ("stop", "length")


SamplerError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: the same for every request of one call.

    Attributes:
        temperature: softmax temperature; 0 means greedy (argmax). Thought Anchors used 0.6.
        top_p: nucleus sampling, keep the smallest set of tokens whose probability reaches top_p (0.95).
        max_tokens: the most tokens to generate per completion (the end-of-sequence token included).
    """

    temperature: float = settings.TEMPERATURE
    top_p: float = settings.TOP_P
    max_tokens: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
            raise SamplerError(f"temperature must be a number >= 0 (0 = greedy), got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise SamplerError(f"top_p must lie in (0, 1] (1 = no nucleus cut), got {self.top_p!r}")
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise SamplerError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")


@dataclass(frozen=True)
class SampleRequest:
    """One completion to produce.

    Attributes:
        prompt: the raw text to continue (no chat template is applied: put it in the prompt yourself).
        seed: the sampling seed; with the local sampler the same (prompt, seed) gives the same completion.
        tag: anything hashable the caller wants back with the completion (the runner uses
            ``(sentence_index, kind, seed)``).
    """

    prompt: str
    seed: int
    tag: Hashable = None


@dataclass(frozen=True)
class Completion:
    """A finished completion of one ``SampleRequest``.

    Attributes:
        request: the request it answers (so completions may arrive in any order).
        text: the generated text (special tokens removed), without the prompt.
        n_tokens: tokens generated, the end-of-sequence token included when one was produced.
        finish_reason: ``"stop"`` (the model ended it) or ``"length"`` (max_tokens reached).
    """

    request: SampleRequest
    text: str
    n_tokens: int
    finish_reason: str

    @property
    def tag(self) -> Any:
        return self.request.tag


class Sampler(ABC):
    """Base class of every sampler. Implement ``stream``; ``sample`` and context-manager use come free."""

    #: a short description of where completions come from, recorded with each run (model name, URL)
    name: str = "sampler"

    @property
    def identity(self) -> dict:
        """What makes this sampler's completions what they are, as a JSON-able dict: part of the key the
        rollout store files rollouts under (with the sampling settings). Subclasses add the model's
        identity (name, dtype, weights); the default is the sampler's ``name``."""
        return {"sampler": self.name}

    @abstractmethod
    def stream(self, requests: Sequence[SampleRequest], params: SamplingParams) -> Iterator[Completion]:
        """Yield one ``Completion`` per request, each as soon as it is finished (any order)."""

    def sample(self, requests: Iterable[SampleRequest], params: SamplingParams | None = None) -> list[Completion]:
        """All completions, in the order of ``requests``.

        >>> sampler.sample([SampleRequest("The capital of France is", seed=s) for s in range(4)])  # doctest: +SKIP
        """
        requests = list(requests)
        params = params or SamplingParams()
        by_position: dict[int, Completion] = {}
        positions: dict[int, list[int]] = {}  # by object identity: equal-looking requests stay distinct
        for k, request in enumerate(requests):
            positions.setdefault(id(request), []).append(k)
        for completion in self.stream(requests, params):
            by_position[positions[id(completion.request)].pop(0)] = completion
        missing = len(requests) - len(by_position)
        if missing:
            raise SamplerError(f"{type(self).__name__} returned no completion for {missing} of {len(requests)} requests")
        return [by_position[k] for k in range(len(requests))]

    def close(self) -> None:
        """Free resources (thread pools, sessions). Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_requests(requests: Sequence[SampleRequest]) -> list[SampleRequest]:
    """Validate a request list (shared by the samplers): strings, integer seeds."""
    requests = list(requests)
    for request in requests:
        if not isinstance(request, SampleRequest):
            raise SamplerError(f"expected SampleRequest objects, got {type(request).__name__}")
        if not isinstance(request.prompt, str) or not request.prompt:
            raise SamplerError("a request's prompt is empty: pass the text the model should continue")
        if not isinstance(request.seed, int) or isinstance(request.seed, bool) or request.seed < 0:
            raise SamplerError(f"seeds must be non-negative integers, got {request.seed!r}")
    return requests
