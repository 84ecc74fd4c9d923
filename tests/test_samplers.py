"""Samplers: nucleus math, the local KV-reusing sampler, and the OpenAI-compatible server sampler.

Ground truth: greedy sampling equals a full recomputation at every step (tests/test_cached_decoding.py;
comparing it with TransformerBridge.generate proved nothing, both reuse the same cache); sampled first tokens must follow the model's own next-token
distribution (SmolLM2 puts about 0.77 on " Paris" after "The capital of France is"); the server
sampler is run against a real ``transformers serve`` process serving the embedded model, and against
a small flaky HTTP server for the retry, timeout and concurrency logic.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from anchorlens.errors import AnchorlensError
from anchorlens.resampling.samplers import (
    LocalSampler,
    SampleRequest,
    SamplerError,
    SamplingParams,
    ServerSampler,
    ServerUnavailableError,
    nucleus_probs,
    sample_rows,
)
from anchorlens.resampling.samplers.nucleus import seeded_generators
from anchorlens.trace import encode_text

FRANCE = "The capital of France is"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: 1 thread is faster on a busy 2-core CPU


# --------------------------------------------------------------------------- pure math


def brute_force_nucleus(probs: list[float], top_p: float) -> set[int]:
    """The smallest set of most probable tokens with total probability >= top_p."""
    order = sorted(range(len(probs)), key=lambda k: -probs[k])
    kept, mass = set(), 0.0
    for k in order:
        kept.add(k)
        mass += probs[k]
        if mass >= top_p:
            break
    return kept


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_nucleus_keeps_the_smallest_top_p_set(top_p):
    logits = torch.randn(6, 11, generator=torch.Generator().manual_seed(3)) * 2
    probs = nucleus_probs(logits, temperature=0.7, top_p=top_p)
    full = torch.softmax(logits / 0.7, dim=-1)
    for row in range(6):
        kept = brute_force_nucleus(full[row].tolist(), top_p)
        assert set(torch.nonzero(probs[row]).flatten().tolist()) == kept
        expected = full[row] * torch.tensor([k in kept for k in range(11)])
        torch.testing.assert_close(probs[row], expected / expected.sum())


def test_temperature_zero_is_argmax_and_top_p_one_is_softmax():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 1.9]])
    assert nucleus_probs(logits, 0, 0.95).tolist() == [[0, 1, 0], [1, 0, 0]]
    torch.testing.assert_close(nucleus_probs(logits, 2.0, 1.0), torch.softmax(logits / 2.0, -1))


def test_sample_rows_follows_the_distribution_and_the_seeds():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0]).expand(4000, -1)
    draws = sample_rows(probs, seeded_generators(list(range(4000))))
    freq = torch.bincount(draws, minlength=4).float() / 4000
    assert freq[3] == 0  # a token outside the nucleus is never drawn
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03, rtol=0)
    again = sample_rows(probs[:50], seeded_generators(list(range(50))))
    assert torch.equal(again, draws[:50])  # a row depends on its own seed only
    with pytest.raises(ValueError, match="one generator per row"):
        sample_rows(probs[:3], seeded_generators([0]))


def test_bad_settings_are_clear_errors(tiny_llama):
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_tokens": 0}):
        with pytest.raises(SamplerError) as info:
            SamplingParams(**bad)
        assert isinstance(info.value, AnchorlensError)
    with pytest.raises(SamplerError, match="batch_size"):
        LocalSampler(tiny_llama, batch_size=0)
    sampler = LocalSampler(tiny_llama, progress=False)
    with pytest.raises(SamplerError, match="seeds"):
        sampler.sample([SampleRequest("x", seed=-1)])
    with pytest.raises(SamplerError, match="context"):
        sampler.sample([SampleRequest("word " * 2100, seed=0)], SamplingParams(max_tokens=8))
    with pytest.raises(SamplerError, match="http"):
        ServerSampler("127.0.0.1:8000", model="m")


# --------------------------------------------------------------------------- local sampler


def texts(completions):
    return [c.text for c in completions]


def test_local_rollouts_depend_on_their_seed_only(tiny_llama):
    requests = [SampleRequest("Let us think step by step.", seed=s) for s in (5, 6, 7, 8, 9)]
    params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=10)
    batched = LocalSampler(tiny_llama, batch_size=4, progress=False).sample(requests, params)
    single = LocalSampler(tiny_llama, batch_size=1, progress=False).sample(requests, params)
    unshared = LocalSampler(tiny_llama, batch_size=3, share_prefix=False, progress=False).sample(requests, params)
    assert texts(batched) == texts(single) == texts(unshared)
    assert len(set(texts(batched))) == 5  # different seeds, different rollouts
    assert all(c.n_tokens == 10 and c.finish_reason == "length" for c in batched)
    assert [c.request.seed for c in batched] == [5, 6, 7, 8, 9]


def test_rows_that_stop_early_leave_the_batch_cleanly(tiny_llama):
    # Planted stop tokens: every third token id ends a row, so rows stop at different steps and
    # the batch shrinks under the others; each row must still equal its run alone.
    requests = [SampleRequest("Once upon a time", seed=s) for s in range(8)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=12)
    batched = LocalSampler(tiny_llama, batch_size=8, progress=False)
    alone = LocalSampler(tiny_llama, batch_size=1, progress=False)
    stops = set(range(0, len(tiny_llama.tokenizer), 3))
    batched.stop_token_ids = alone.stop_token_ids = stops
    got, expected = batched.sample(requests, params), alone.sample(requests, params)
    assert texts(got) == texts(expected)
    assert [c.n_tokens for c in got] == [c.n_tokens for c in expected]
    lengths = {c.n_tokens for c in got}
    assert len(lengths) > 2, "the planted stop tokens should end rows at different steps"
    for c in got:
        assert c.finish_reason == ("stop" if c.n_tokens < 12 else c.finish_reason)


def test_hooks_apply_while_sampling(tiny_llama):
    requests = [SampleRequest("A B C", seed=s) for s in range(3)]
    params = SamplingParams(temperature=0, max_tokens=6)
    sampler = LocalSampler(tiny_llama, progress=False)
    plain = texts(sampler.sample(requests, params))

    def zero(z, hook):
        return torch.zeros_like(z)

    hooks = [(f"blocks.{layer}.attn.hook_z", zero) for layer in range(tiny_llama.cfg.n_layers)]
    with tiny_llama.hooks(fwd_hooks=hooks):
        ablated = texts(sampler.sample(requests, params))
    assert ablated != plain
    assert texts(sampler.sample(requests, params)) == plain  # hooks gone with the context


@pytest.mark.slow
def test_sampled_first_tokens_follow_the_model_distribution(smol):
    ids = torch.tensor([encode_text(smol, FRANCE)])
    with torch.inference_mode():
        logits = smol(ids)[0, -1]
    paris = smol.tokenizer.encode(" Paris", add_special_tokens=False)
    assert len(paris) == 1
    n = 300
    sampler = LocalSampler(smol, batch_size=n, progress=False)
    requests = [SampleRequest(FRANCE, seed=s) for s in range(n)]

    # temperature 1, no nucleus: the share of " Paris" is the model's probability (about 0.77)
    first = texts(sampler.sample(requests, SamplingParams(temperature=1.0, top_p=1.0, max_tokens=1)))
    p_paris = torch.softmax(logits, -1)[paris[0]].item()
    assert 0.6 < p_paris < 0.9
    share = first.count(" Paris") / len(first)
    assert abs(share - p_paris) < 3.5 * (p_paris * (1 - p_paris) / n) ** 0.5
    # the published settings: empirical frequencies match nucleus_probs (total variation)
    first = texts(sampler.sample(requests, SamplingParams(temperature=0.6, top_p=0.95, max_tokens=1)))
    expected = nucleus_probs(logits[None], 0.6, 0.95)[0]
    support = torch.nonzero(expected).flatten().tolist()
    names = {smol.tokenizer.decode([t]): t for t in support}
    assert set(first) <= set(names), "a token outside the nucleus was sampled"
    tv = 0.5 * sum(abs(first.count(name) / n - expected[t].item()) for name, t in names.items())
    assert tv < 0.08
    # a nucleus smaller than P(" Paris") holds " Paris" alone
    first = texts(sampler.sample(requests[:20], SamplingParams(temperature=1.0, top_p=0.5, max_tokens=1)))
    assert set(first) == {" Paris"}


# --------------------------------------------------------------------------- server sampler, real server


@pytest.mark.slow
def test_server_greedy_equals_local_greedy(embedded_server, smol):
    chat = smol.tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}],
                                              add_generation_prompt=True, tokenize=False)
    params = SamplingParams(temperature=0, max_tokens=6)
    [remote] = embedded_server.sampler(progress=False).sample([SampleRequest(chat, seed=3)], params)
    [local] = LocalSampler(smol, progress=False).sample([SampleRequest(chat, seed=0)], params)
    assert remote.text == local.text  # the same tokens: the chat template starts with BOS
    assert 1 <= remote.n_tokens <= 6 and remote.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_server_honours_seed_temperature_and_top_p(embedded_server):
    sampler = embedded_server.sampler(concurrency=1, progress=False)  # transformers serve seeds globally: one at a time
    hot = SamplingParams(temperature=1.5, top_p=1.0, max_tokens=4)
    runs = texts(sampler.sample([SampleRequest(FRANCE, seed=s) for s in (11, 11, 12, 13)], hot))
    assert runs[0] == runs[1], "the same seed should give the same completion"
    assert len(set(runs)) >= 2, "different seeds should give different completions"
    narrow = SamplingParams(temperature=1.5, top_p=0.3, max_tokens=1)
    assert set(texts(sampler.sample([SampleRequest(FRANCE, seed=s) for s in range(4)], narrow))) == {" Paris"}


@pytest.mark.slow
def test_server_refuses_a_wrong_model_name_without_retrying(embedded_server):
    sampler = ServerSampler(embedded_server.base_url, model="no-such-model", max_retries=3, backoff=5, progress=False)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="HTTP 4"):
        sampler.sample([SampleRequest(FRANCE, seed=0)], SamplingParams(max_tokens=2))
    assert time.monotonic() - started < 5  # no back-off sleeps: a 4xx is not retried


# --------------------------------------------------------------------------- server sampler, flaky server


class Flaky:
    """A small OpenAI-style completion server on 127.0.0.1 that fails on purpose."""

    def __init__(self, fail_first: int = 0, status: int = 503, delay: float = 0.0, slow_first: float = 0.0):
        self.fail_first, self.status, self.delay, self.slow_first = fail_first, status, delay, slow_first
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with flaky.lock:
                    flaky.requests += 1
                    number = flaky.requests
                    flaky.in_flight += 1
                    flaky.max_in_flight = max(flaky.max_in_flight, flaky.in_flight)
                try:
                    time.sleep(flaky.slow_first if number == 1 else flaky.delay)
                    if number <= flaky.fail_first:
                        self.send_response(flaky.status)
                        self.end_headers()
                        self.wfile.write(b"failing on purpose")
                        return
                    answer = {"choices": [{"text": f" seed {body['seed']}", "finish_reason": "length"}],
                              "usage": {"completion_tokens": body["max_tokens"]}}
                    data = json.dumps(answer).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with flaky.lock:
                        flaky.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky_server():
    servers = []

    def make(**kwargs):
        servers.append(Flaky(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_retries_with_backoff_on_server_errors(flaky_server):
    server = flaky_server(fail_first=2, status=503)
    sampler = ServerSampler(server.url, model="m", backoff=0.01, progress=False)
    [completion] = sampler.sample([SampleRequest("x", seed=4)], SamplingParams(max_tokens=3))
    assert completion.text == " seed 4" and completion.n_tokens == 3 and completion.finish_reason == "length"
    assert server.requests == 3


def test_gives_up_after_max_retries(flaky_server):
    server = flaky_server(fail_first=100, status=500)
    sampler = ServerSampler(server.url, model="m", max_retries=2, backoff=0.01, progress=False)
    with pytest.raises(ServerUnavailableError, match="failed 3 times"):
        sampler.sample([SampleRequest("x", seed=0)])
    assert server.requests == 3


def test_timeouts_are_retried(flaky_server):
    server = flaky_server(slow_first=1.5)
    sampler = ServerSampler(server.url, model="m", timeout=0.5, backoff=0.01, progress=False)
    assert texts(sampler.sample([SampleRequest("x", seed=1)])) == [" seed 1"]
    assert server.requests == 2


def test_nothing_listening_is_a_clear_error():
    from anchorlens.resampling.server import free_port

    sampler = ServerSampler(f"http://127.0.0.1:{free_port()}", model="m", max_retries=1, backoff=0.01, progress=False)
    with pytest.raises(ServerUnavailableError, match="Is the server running"):
        sampler.sample([SampleRequest("x", seed=0)])


def test_concurrency_is_bounded_and_completions_stream(flaky_server):
    server = flaky_server(delay=0.2)
    sampler = ServerSampler(server.url, model="m", concurrency=3, progress=False)
    requests = [SampleRequest("x", seed=s) for s in range(9)]
    got = sampler.sample(requests, SamplingParams(max_tokens=2))
    assert texts(got) == [f" seed {s}" for s in range(9)]  # sample() restores request order
    assert server.max_in_flight == 3
    # a consumer that stops early leaves no backlog: only the requests already in flight were sent
    stream = sampler.stream([SampleRequest("x", seed=s) for s in range(30)], SamplingParams(max_tokens=2))
    before = server.requests
    next(stream)
    stream.close()
    time.sleep(0.5)
    assert server.requests - before <= 4


def test_servable_folders_are_checked(tmp_path):
    from anchorlens.resampling.server import ServerStartError, servable_model_dir

    with pytest.raises(ServerStartError, match="config.json"):
        servable_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    with pytest.raises(ServerStartError, match="do_sample"):  # the server would silently decode greedily
        servable_model_dir(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": True}))
    assert servable_model_dir(tmp_path) == tmp_path
    embedded = servable_model_dir()
    assert json.loads((embedded / "generation_config.json").read_text())["do_sample"] is True
