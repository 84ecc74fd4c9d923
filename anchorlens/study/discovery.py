"""Which traces a study runs on: published trace folders found under a folder, or ``Trace`` objects.

A published trace folder (the layout of ``data/thought-anchors``) holds ``problem.json``, ``base_solution.json``
and ``chunks_labeled.json``. Its chunks stay the sentences: the trace is built on the white-box model's tokenizer
from the published prompt and chain of thought, with one sentence per published chunk, so that the published
metrics line up with the sentences one to one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

from anchorlens import inputs
from anchorlens.errors import InputError, TraceTooLongError
from anchorlens.settings import STUDY_VIEWS
from anchorlens.sentences import Sentence, split_sentences

if TYPE_CHECKING:  # the trace module imports torch; the command line checks its folder without it
    from anchorlens.trace import Trace

PUBLISHED_FILES = ("problem.json", "base_solution.json", "chunks_labeled.json")


StudyInputError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


@dataclass(frozen=True)
class TraceSource:
    """One trace of a study: its name (its folder under the study's ``traces/``) and where it comes from."""

    name: str
    folder: Path | None = None  # a published trace folder
    trace: Trace | None = None  # or a given trace
    problem: str | None = None  # or a problem for the model to reason about (analyze generates the trace)
    answer: str | None = None  # the problem's correct answer, when the problems file gives one

    @property
    def published(self) -> bool:
        return self.folder is not None


def find_trace_folders(root: str | Path) -> list[Path]:
    """Published trace folders under ``root`` (searched recursively), in sorted order of their paths."""
    root = Path(root)
    if not root.is_dir():
        raise StudyInputError(f"{root} is not a folder: pass a folder holding published trace folders "
                              f"({', '.join(PUBLISHED_FILES)} in each), or a list of Trace objects")
    folders = sorted(_walk(root))
    if not folders:
        raise StudyInputError(f"no trace folder under {root}: each trace folder holds {', '.join(PUBLISHED_FILES)} "
                              "(the layout of data/thought-anchors)")
    for folder in folders:
        missing = [f for f in PUBLISHED_FILES if not (folder / f).is_file()]
        if missing:
            raise StudyInputError(f"{folder} lacks {', '.join(missing)}: a published trace folder holds "
                                  f"{', '.join(PUBLISHED_FILES)}")
    return folders


def _walk(root: Path) -> set[Path]:
    """Folders under ``root`` holding a ``chunks_labeled.json``, symbolic links to folders followed (how people pick
    a subset of traces), each real folder visited once (a link back up would loop)."""
    found, seen = set(), set()
    for here, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        if "chunks_labeled.json" in files:
            found.add(Path(here))
    return found


def discover(traces) -> list[TraceSource]:
    """The study's traces, named and in order: a folder (searched recursively) or a list of ``Trace`` objects."""
    if isinstance(traces, (str, Path)) and Path(traces).is_file():
        return problem_sources(Path(traces))
    if isinstance(traces, (str, Path)):
        root = Path(traces)
        folders = find_trace_folders(root)
        return [TraceSource(folder.relative_to(root).as_posix() if folder != root else folder.name, folder=folder)
                for folder in folders]
    from anchorlens.trace import Trace  # torch: not needed to check a folder

    if isinstance(traces, Trace):
        traces = [traces]
    try:
        traces = list(traces)
    except TypeError:
        raise StudyInputError(f"traces must be a folder or a list of Trace objects, not {type(traces).__name__}") from None
    if not traces:
        raise StudyInputError("no traces given: pass a folder of published trace folders or a list of Trace objects")
    bad = [type(t).__name__ for t in traces if not isinstance(t, Trace)]
    if bad:
        raise StudyInputError(f"traces must be Trace objects, got {bad[0]}: build them with Trace.from_text or "
                              "generate_trace, or pass a folder of published trace folders")
    names = [str(t.metadata.get("name") or f"trace_{i:03d}") for i, t in enumerate(traces)]
    if len(set(names)) != len(names):
        raise StudyInputError("two traces have the same metadata['name']: give each trace its own name")
    return [TraceSource(name, trace=t) for name, t in zip(names, traces)]


def problem_sources(path: Path) -> list[TraceSource]:
    """A file of problems to generate traces for: ``.txt`` (one problem a line) or ``.json`` (a list of problems,
    each a string or ``{"problem": ..., "answer": ...}``); named ``problem_000``, ``problem_001``, ..."""
    if path.suffix == ".json":
        items = read_json(path, "write a JSON list of problems (texts, or objects with problem and answer)")
        if not isinstance(items, list):
            raise StudyInputError(f"{path} must hold a JSON list of problems (strings or {{'problem', 'answer'}})")
    else:
        items = [line.strip() for line in inputs.read_text(path, "the study").splitlines() if line.strip()]
    sources = []
    for i, item in enumerate(items):
        problem, answer = (item.get("problem"), item.get("answer")) if isinstance(item, dict) else (item, None)
        if not isinstance(problem, str) or not problem.strip():
            raise StudyInputError(f"{path}: problem {i} is not a non-empty text: {item!r}")
        sources.append(TraceSource(f"problem_{i:03d}", problem=problem, answer=None if answer is None else str(answer)))
    if not sources:
        raise StudyInputError(f"{path} holds no problem: write one problem a line (.txt) or a JSON list")
    return sources


def parse_shard(shard) -> tuple[int, int] | None:
    """``"i/n"`` (or ``(i, n)``) as ``(i, n)`` with ``0 <= i < n``; None stays None (every trace)."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise StudyInputError(f"shard must read i/n (e.g. 0/4: every 4th trace from the first), not {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise StudyInputError(f"shard {i}/{n}: n must be at least 1 and i lie in 0..n-1")
    return i, n


def read_json(path: Path, way_out: str = "fix or remove that trace folder"):
    """A study file's JSON value (``inputs.read_json``: UTF-8, not empty, valid JSON, else a clear error)."""
    return inputs.read_json(Path(path), "the study", way_out)


def published_records(folder: Path, file: str = "chunks_labeled.json") -> list[dict]:
    """The records of a published ``chunks_labeled.json``, in ``chunk_idx`` order, as they are in the file."""
    records = inputs.check_chunk_records(read_json(Path(folder) / file), Path(folder) / file)
    if "chunk_idx" in records[0]:
        records = sorted(records, key=lambda r: r["chunk_idx"])
    return records


def published_trace(model, folder: Path) -> Trace:
    """The published trace on ``model``'s tokenizer, its published chunks as its sentences."""
    folder = Path(folder)
    solution = read_json(folder / "base_solution.json")
    problem = read_json(folder / "problem.json")
    chunks = [r["chunk"] for r in published_records(folder)]
    cot, prompt = solution.get("solution"), solution.get("prompt", "")
    if not isinstance(cot, str) or not cot.strip():
        raise StudyInputError(f"{folder}/base_solution.json has no 'solution' text (the chain of thought)")
    metadata = {"problem": problem.get("problem"), "answer": problem.get("gt_answer"),
                "is_correct": solution.get("is_correct"), "source": str(folder)}
    return trace_from_sentences(model, prompt, cot, sentences_of_chunks(cot, chunks, folder), metadata=metadata)


def sentences_of_chunks(cot: str, chunks: list[str], where: Path | str = "") -> list[Sentence]:
    """Each published chunk as a ``Sentence`` of ``cot``: the thought-anchors splitter when it reproduces the
    chunks (it merges short chunks, which then are not verbatim substrings), else each chunk found in order."""
    split = split_sentences(cot, style="thought-anchors")
    if [s.text for s in split] == chunks:
        return split
    sentences, cursor = [], 0
    for i, chunk in enumerate(chunks):
        start = cot.find(chunk, cursor)
        if start < 0:
            raise StudyInputError(f"{where}: chunk {i} ({chunk[:60]!r}) does not occur in the solution text after "
                                  "the chunks before it; the chunks must be the chain of thought's sentences in order")
        sentences.append(Sentence(chunk, start, start + len(chunk)))
        cursor = start + len(chunk)
    return sentences


def trace_from_sentences(model, prompt: str, cot: str, sentences: list[Sentence], metadata: dict | None = None,
                         style: str = "thought-anchors") -> Trace:
    """A ``Trace`` with the given sentences (offsets into ``cot``), tokenized as ``Trace.from_text`` does."""
    from anchorlens.trace import Trace, _token_spans, _wants_bos

    tokenizer = getattr(model, "tokenizer", model)
    full = prompt + cot
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    token_ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    if _wants_bos(model, tokenizer, full):
        token_ids, offsets = [tokenizer.bos_token_id] + token_ids, [(0, 0)] + offsets
    spans, prompt_end = _token_spans(full, offsets, sentences, len(prompt))
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None and len(token_ids) > n_ctx:
        raise TraceTooLongError(f"the trace has {len(token_ids)} tokens but the model's context holds {n_ctx}")
    name = getattr(model, "anchorlens_name", None) or getattr(getattr(model, "cfg", None), "model_name", None)
    return Trace(prompt, cot, list(sentences), token_ids, spans, prompt_end, style, name, dict(metadata or {}))


VIEWS = STUDY_VIEWS
IMPORTANCE = ("published", "rollouts", None)


def check_study_options(views, importance, top_k, shard) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """Refuse bad options before any model work (the command line calls this before loading the model)."""
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise StudyInputError(f"unknown view(s) {', '.join(map(repr, unknown))}: choose from {', '.join(VIEWS)}")
    if importance not in IMPORTANCE:
        raise StudyInputError(f"importance must be 'published', 'rollouts' or None, not {importance!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise StudyInputError(f"top_k must be a whole number of at least 1, not {top_k!r}")
    return views, parse_shard(shard)
