"""A study's folder: its manifest, and the aggregation of whatever per-trace results are complete.

Layout of ``out_dir``::

    study.json                  the manifest: every trace of the study (in order), the views, importance, top_k,
                                the model's identity (every shard writes the same one)
    traces/<name>/              what ``analyze`` saved for that trace (keyed), plus ``published_chunks.json`` (a
                                copy of the published chunks_labeled.json) or ``study_skipped.json`` (why not)
    base/<name>/                with a base model: its receivers step on the same trace
    study.npz, study_sentences.json   the aggregated ``Study`` (``Study.load``)

The aggregation reads only saved files (no model), so it runs after any shard, on whatever is complete, and says
which traces are missing and why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch

from anchorlens.stats import renamed_arguments
from anchorlens.study import aggregate
from anchorlens.study.categories import normalised_position
from anchorlens.study.discovery import StudyInputError, published_records, read_json
from anchorlens.study.result import Study

MANIFEST = "study.json"
PUBLISHED_COPY = "published_chunks.json"
SKIPPED = "study_skipped.json"


def trace_dir(out_dir: Path, name: str, base: bool = False) -> Path:
    return Path(out_dir) / ("base" if base else "traces") / name


def write_json(path: Path, value) -> None:
    """Atomically: shards may write the same file at once."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)


def write_manifest(out_dir: Path, manifest: dict) -> None:
    write_json(Path(out_dir) / MANIFEST, manifest)


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise StudyInputError(f"{out_dir} has no {MANIFEST}: pass the out_dir of a study (al.study / anchorlens study)")
    return read_json(path)


def _receivers(folder: Path, model: dict | None):
    """``(kurtosis, vertical)`` of analyze's receivers step saved in ``folder``, or the reason there are none."""
    from anchorlens import step_keys
    from anchorlens.pipeline import TRACE_FILE, STEP_TABLE, saved_key
    from anchorlens.trace import Trace

    key = saved_key(folder, "receivers")
    if key is None or not (folder / TRACE_FILE).exists():
        return "not run yet (another shard's, or the study stopped before it)"
    if key.get("trace") != step_keys.trace_key(Trace.load(folder / TRACE_FILE)):
        return "its receivers were made for another trace: run the study again"
    if model is not None and key.get("model") != model:
        return f"its receivers were made with another model ({key.get('model', {}).get('name')}): run the study again"
    spec = next(s for s in STEP_TABLE if s.name == "receivers")
    if key.get("format") != spec.format:
        return "its receivers were saved by an older anchorlens in another layout: run the study again"
    receivers = spec.read(folder / spec.file)
    return receivers.per_trace_kurtosis[0].double(), receivers.vertical[0].double()


def trace_status(out_dir: Path, name: str, manifest: dict, base: bool = False):
    """Why trace ``name`` is incomplete (a string), or None when every result the study needs is saved."""
    from anchorlens.pipeline import Analysis

    folder = trace_dir(out_dir, name, base)
    if (folder / SKIPPED).exists():
        return read_json(folder / SKIPPED)["reason"]
    if manifest.get("model") is None and not base:  # a study of published importance without a model
        return None if (folder / PUBLISHED_COPY).exists() else "not run yet (another shard's, or the study stopped before it)"
    if not (folder / "trace.json").exists():
        return "not run yet (another shard's, or the study stopped before it)"
    model = manifest.get("base_model" if base else "model")
    if base or "receivers" in manifest["views"]:
        found = _receivers(folder, model)
        if isinstance(found, str):
            return found
    if base:
        return None
    analysis = Analysis.load(folder)
    needed = [v for v in manifest["views"] if v != "receivers"] + (
        ["resampling"] if manifest["importance"] == "rollouts" else [])
    absent = [step for step in needed if step not in analysis.keys]
    if absent:
        return f"not run yet: {', '.join(absent)} missing"
    if manifest["importance"] == "published" and not (folder / PUBLISHED_COPY).exists():
        return "its published chunks were not copied yet"
    return None


def _trace_rows(out_dir: Path, name: str, manifest: dict, heads, vertical) -> tuple[pd.DataFrame, list[str]]:
    """One row per sentence of trace ``name``: analyze's table, published columns, the study's receiver score."""
    from anchorlens.pipeline import Analysis
    from anchorlens.receivers.scores import receiver_scores

    folder = trace_dir(out_dir, name)
    if manifest.get("model") is None:  # no model: the published chunks are the sentences
        chunks = [r["chunk"] for r in published_records(folder, PUBLISHED_COPY)]
        frame = pd.DataFrame({"sentence": range(len(chunks)), "text": chunks})
    else:
        frame = Analysis.load(folder).to_dataframe()
    frame = frame.rename(columns={"receiver_score": "receiver_score_own_heads"})
    importance: list[str] = []
    if manifest["importance"] == "rollouts":
        from anchorlens.resampling.metrics import METRIC_COLUMNS

        importance = [c for c in METRIC_COLUMNS if c in frame]
    if manifest["importance"] == "published":
        records = published_records(folder, PUBLISHED_COPY)
        if len(records) != len(frame):
            raise StudyInputError(f"{name}: {len(records)} published chunks for {len(frame)} sentences")
        published = pd.DataFrame([{k: v for k, v in r.items() if k != "chunk"} for r in records])
        if "function_tags" in published:  # the published first tag is the category; the classifier's kept apart
            frame = frame.rename(columns={"category": "classifier_category"})
            frame["category"] = [tags[0] if tags else None for tags in published["function_tags"]]
        importance = [c for c in published.columns if c not in ("chunk_idx", "function_tags", "depends_on", "summary")
                      and pd.api.types.is_numeric_dtype(published[c])]
        frame = pd.concat([frame, published.reset_index(drop=True)], axis=1)
    if vertical is not None:
        frame["receiver_score"] = (receiver_scores(vertical, heads).numpy() if heads
                                   else float("nan"))
    frame.insert(0, "trace", name)
    return frame, importance


@renamed_arguments()
def aggregate_folder(out_dir: str | Path, n_bootstrap: int = 2000, seed: int = 0) -> Study:
    """The ``Study`` of whatever traces of ``out_dir``'s study are complete; the rest are in ``missing``."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    names = manifest["traces"]
    missing = {name: why for name in names if (why := trace_status(out_dir, name, manifest)) is not None}
    complete = [name for name in names if name not in missing]
    receivers = "receivers" in manifest["views"]
    kurtosis, verticals = [], []
    for name in complete:
        if receivers:
            k, v = _receivers(trace_dir(out_dir, name), manifest.get("model"))
            kurtosis.append(k)
            verticals.append(v)
        else:
            verticals.append(None)
    kurtosis = torch.stack(kurtosis) if kurtosis else torch.zeros(len(complete), 0, 0, dtype=torch.float64)
    heads = aggregate.study_heads(kurtosis, manifest["top_k"]) if receivers and complete else []
    frames, importance = [], []
    for name, vertical in zip(complete, verticals):
        frame, columns = _trace_rows(out_dir, name, manifest, heads, vertical)
        frames.append(frame)
        importance += [c for c in columns if c not in importance]
    sentences = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trace", "sentence", "text"])
    sentences = sentences.astype({c: "float64" for c in sentences.select_dtypes("float32").columns})  # as saved
    if len(sentences):
        sentences.insert(sentences.columns.get_loc("sentence") + 1, "position", normalised_position(sentences))
    base_kurtosis, base_traces = None, []
    if manifest.get("base_model") is not None:
        for name in complete:
            if trace_status(out_dir, name, manifest, base=True) is None:
                base_traces.append(name)
        found = [_receivers(trace_dir(out_dir, name, True), manifest["base_model"])[0] for name in base_traces]
        base_kurtosis = torch.stack(found) if found else None
        for name in complete:
            if name not in base_traces:
                missing[f"base/{name}"] = trace_status(out_dir, name, manifest, base=True)
    return Study(
        traces=complete, kurtosis=kurtosis, receiver_heads=heads,
        reliability=aggregate.even_odd_reliability(kurtosis) if receivers else float("nan"),
        reliability_ci=aggregate.reliability_interval(kurtosis, n_bootstrap=n_bootstrap, seed=seed) if receivers
        else (float("nan"), float("nan")),
        sentences=sentences, missing=missing, importance_columns=importance, top_k=manifest["top_k"],
        model_name=(manifest.get("model") or {}).get("name"),
        base_model_name=(manifest.get("base_model") or {}).get("name"), base_kurtosis=base_kurtosis,
        base_traces=base_traces,
        settings={k: manifest[k] for k in ("views", "importance", "top_k") if k in manifest} | {"out_dir": str(out_dir)},
    )
