"""Generating a chain of thought for a problem, with the prompt format Thought Anchors used."""

from __future__ import annotations

import torch
from torch import Tensor

from anchorlens import settings
from anchorlens.errors import EmptyTextError
from anchorlens.trace import Trace

# docs/methods.md 1.2: the raw-completion prompt of the reference experiments.
INSTRUCTION = "Solve this math problem step by step. You MUST put your final answer in \\boxed{{}}. Problem: {problem}"
RAW_PROMPT = INSTRUCTION + " Solution: \n<think>\n"


def problem_prompt(model, problem: str, chat_template: bool | None = None) -> str:
    """The text a model sees before its chain of thought.

    With a chat template (default when the tokenizer has one) the instruction is the user turn and the
    chain of thought is the assistant's reply; otherwise the reference's raw prompt, ending in ``<think>``.
    """
    if not isinstance(problem, str) or not problem.strip():
        raise EmptyTextError("the problem is empty: pass the problem text")
    tokenizer = model.tokenizer
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None) is not None
    if chat_template:
        messages = [{"role": "user", "content": INSTRUCTION.format(problem=problem.strip())}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return RAW_PROMPT.format(problem=problem.strip())


@torch.inference_mode()
def generate_trace(
    model,
    problem: str,
    max_new_tokens: int = 256,
    seed: int | None = 0,
    temperature: float = settings.TEMPERATURE,
    top_p: float = settings.TOP_P,
    style: str = "default",
    chat_template: bool | None = None,
    attention: str = "auto",
) -> Trace:
    """Let ``model`` reason about ``problem`` and return the chain of thought as a ``Trace``.

    Text after ``</think>`` (when the model writes one) is kept in ``trace.metadata["after_think"]``;
    the final ``\\boxed{}`` answer, if any, in ``trace.metadata["answer"]``. ``attention``: ``"auto"``
    (fused SDPA attention where supported), ``"sdpa"`` or ``"eager"`` (see ``LocalSampler``).

    >>> trace = generate_trace(load_model(), "What is 12 + 30?", max_new_tokens=128)  # doctest: +SKIP
    """
    from anchorlens.answers import extract_boxed
    from anchorlens.resampling.samplers import LocalSampler, SampleRequest, SamplingParams

    prompt = problem_prompt(model, problem, chat_template)
    # The KV-cached sampler of the resampling runs: about 5x faster on a CPU than TransformerBridge.generate.
    sampler = LocalSampler(model, batch_size=1, progress=False, attention=attention)
    params = SamplingParams(temperature=max(temperature, 0.0), top_p=top_p, max_tokens=max_new_tokens)
    (result,) = sampler.sample([SampleRequest(prompt, seed=int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed)], params)
    completion = result.text
    cot, after = completion, ""
    if "</think>" in completion:
        cot, after = completion.split("</think>", 1)
    if not cot.strip():
        raise EmptyTextError(
            f"the model wrote no chain of thought for this problem within {max_new_tokens} tokens; "
            "raise max_new_tokens or try another seed"
        )
    metadata = {
        "problem": problem,
        "answer": extract_boxed(completion),
        "after_think": after,
        "generation": {"max_new_tokens": max_new_tokens, "seed": seed, "temperature": temperature, "top_p": top_p},
    }
    return Trace.from_text(model, cot, prompt=prompt, style=style, metadata=metadata)


def greedy_generate(model, input_ids: Tensor, max_new_tokens: int, stop_at_eos: bool = True, hooks=None,
                    return_logits: bool = False, progress: bool = False):
    """Greedy continuation ``[1, n_new]`` of ``input_ids`` ``[1, n]``, reusing the Hugging Face KV cache.

    The same tokens as ``model.generate(input_ids, do_sample=False)``, several times faster on a CPU: the
    resampling sampler's decoding loop at temperature 0 (one cached forward per new token; eager attention,
    so that hooks on any hook point apply). Hooks in effect (``ablate_heads``) apply to every step; the
    end-of-sequence token, when it ends the continuation, is its last token.

    ``hooks``: hooks that act by absolute position (``LocalSampler.continue_ids``): ``hooks(start)`` gives the
    ``(hook name, function)`` pairs for the forward whose first token sits at ``start`` (the prompt at 0, each new
    token at its own position), e.g. ``InterventionHooks`` (feature interventions). ``return_logits``: also return
    the logits ``[n + n_new - 1, vocab]`` of every position that was run (the prompt and every new token but the
    last). ``progress``: a bar over the new tokens.

    The package's one greedy decoder (head ablation, feature interventions and their clean continuation).

    >>> with ablate_heads(model, heads):                                          # doctest: +SKIP
    ...     new_tokens = greedy_generate(model, model.to_tokens("2 + 2 ="), 10)
    """
    from anchorlens.resampling.samplers.base import SamplingParams
    from anchorlens.resampling.samplers.local import LocalSampler

    if max_new_tokens < 1:
        none = input_ids[:, :0]
        return (none, torch.zeros(0, model.cfg.d_vocab)) if return_logits else none
    eos = model.tokenizer.eos_token_id
    stops = {int(eos)} if stop_at_eos and eos is not None else set()
    sampler = LocalSampler(model, batch_size=1, share_prefix=False, progress=False, attention="eager")
    logits = [] if return_logits else None
    new = sampler.continue_ids(input_ids[0].tolist(), SamplingParams(temperature=0.0, max_tokens=max_new_tokens),
                               stop_token_ids=stops, hooks=hooks, logits_out=logits, progress=progress)
    new = torch.tensor([new], dtype=input_ids.dtype, device=input_ids.device)
    return (new, torch.cat(logits, dim=1)[0]) if return_logits else new
