"""A planted sampler: a ``Sampler`` whose behaviour is known exactly, to check the branch methods against
closed-form values (tests, docs/branches.md).

Every completion is drawn from a random stream fixed by (prompt, seed), so it is reproducible like a real seeded
sampler. A completion is: an opening sentence (one of ``openers``; when the prompt ends with a *trigger*
sentence, the follow-up planted for it comes first), then, with probability ``p_return``, the planted
``content`` sentence after 0 to 2 filler sentences, then a filler and a boxed answer. The answer follows a known
rule: when ``content`` is in the prompt or the completion, ``answers[0]`` with probability ``q_present``, else
with probability ``q_absent``; otherwise ``answers[1]``.

So with the content as sentence i of a trace: each resilience iteration brings the content back with
probability ``p_return`` (resilience = sum_{k=1..M} p^k, persistence = p^M at a cap of M iterations), the
abandoned chains answer ``answers[0]`` with probability ``q_absent`` and the kept rollouts with ``q_present``
(Counterfactual++ accuracy = q_present - q_absent).
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Sequence

import numpy as np

from anchorlens.resampling.samplers.base import Completion, Sampler, SampleRequest, SamplingParams, check_requests

OPENERS = ("Let me write the numbers down.", "Okay, I will go step by step.", "Hmm, I need to be careful here.")
FILLERS = ("I keep going with the calculation.", "Now the next part.", "This looks fine so far.")


class PlantedSampler(Sampler):
    """A sampler with known behaviour (module docstring). ``identity`` names every parameter, so stored
    completions of one planted sampler are never reused for another."""

    name = "planted"

    def __init__(self, content: str, p_return: float, *, q_present: float = 0.9, q_absent: float = 0.2,
                 answers: tuple[str, str] = ("42", "41"), openers: Sequence[str] = OPENERS,
                 fillers: Sequence[str] = FILLERS, triggers: dict[str, str] | None = None):
        self.content, self.p_return = content, float(p_return)
        self.q_present, self.q_absent, self.answers = float(q_present), float(q_absent), tuple(answers)
        self.openers, self.fillers = tuple(openers), tuple(fillers)
        self.triggers = dict(triggers or {})
        self.calls = 0  # completions produced (for cost checks)

    @property
    def identity(self) -> dict:
        return {"sampler": self.name, "content": self.content, "p_return": self.p_return, "q_present": self.q_present,
                "q_absent": self.q_absent, "answers": list(self.answers), "openers": list(self.openers),
                "fillers": list(self.fillers), "triggers": self.triggers}

    def stream(self, requests: Sequence[SampleRequest], params: SamplingParams) -> Iterator[Completion]:
        for request in check_requests(requests):
            self.calls += 1
            digest = hashlib.sha256(f"{request.prompt}\x1f{request.seed}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
            pieces = []
            tail = request.prompt.rstrip()
            follow = [v for k, v in self.triggers.items() if tail.endswith(k)]
            pieces.append(follow[0] if follow else self.openers[rng.integers(len(self.openers))])
            returned = rng.random() < self.p_return
            if returned:
                pieces += [self.fillers[rng.integers(len(self.fillers))] for _ in range(rng.integers(0, 3))]
                pieces.append(self.content)
            pieces.append(self.fillers[rng.integers(len(self.fillers))])
            present = returned or self.content in request.prompt
            right = rng.random() < (self.q_present if present else self.q_absent)
            pieces.append(f"So the answer is \\boxed{{{self.answers[0] if right else self.answers[1]}}}.")
            text = " " + " ".join(pieces)
            yield Completion(request, text=text, n_tokens=len(text.split()), finish_reason="stop")
