"""The steps of ``analyze``: one table that ``analyze`` runs, ``Analysis.load`` reads and the study looks up.

Each step computes one method's result (``ReceiverHeads``, ``SuppressionMatrix``, ``ImportanceResult``,
``ResilienceResult``, ``SentenceFlow``, ``SentenceAttribution``; the categories are a JSON list), saves it with
the result's own ``save`` and writes beside it the key it was made under (``<file>.key.json``: the model's identity,
the trace, the step's settings), so that a re-run reuses exactly the steps whose key is unchanged.
"""

from __future__ import annotations

import importlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from anchorlens import step_keys
from anchorlens.receivers.scores import PROXIMITY_IGNORE
from anchorlens.trace import Trace

TRACE_FILE, CATEGORIES_FILE = "trace.json", "categories.json"
RECEIVERS_FILE, SUPPRESSION_FILE, IMPORTANCE_FILE = "receivers.npz", "suppression.npz", "importance.npz"
FLOW_FILE, RESILIENCE_FILE, ATTRIBUTION_FILE = "flow.npz", "resilience.npz", "attribution.npz"
ROLLOUT_STORE = "rollouts.sqlite"


@dataclass
class Run:
    """What one ``analyze`` call's steps share: the model, the trace, its answer and the call's options."""

    model: object
    trace: Trace
    identity: dict
    this_trace: dict
    out: Path
    analysis: object  # the Analysis being filled
    notes: dict
    say: Callable[[str], None]
    progress: bool
    answer: str | None
    sampler: object
    transcoders: object
    options: dict
    targets: list[int] = field(default_factory=list)

    @property
    def sampling(self):
        """Who samples the rollouts: the model itself or the given sampler."""
        return self.model if self.sampler is None else self.sampler

    def sampling_key(self) -> dict:
        o = self.options
        extractor = o["extractor"]
        return {"sampler": sampler_key(self.identity, self.sampler), "rollouts": o["n_rollouts"],
                "rollout_tokens": o["rollout_max_tokens"], "temperature": o["temperature"], "top_p": o["top_p"],
                "extractor": extractor if isinstance(extractor, str) else getattr(extractor, "__name__", "custom"),
                "answer": self.answer, "answer_equivalence": o["answer_equivalence"],
                # the sampler names the model that samples (a server's own), so the local model's identity is out
                "model": None}

    def sampling_options(self) -> dict:
        """The keyword arguments every rollout-sampling method takes from ``analyze``'s options."""
        o = self.options
        return dict(n_rollouts=o["n_rollouts"], store=self.out / ROLLOUT_STORE, reference_answer=self.answer,
                    max_tokens=o["rollout_max_tokens"], temperature=o["temperature"], top_p=o["top_p"],
                    answer_equivalence=o["answer_equivalence"], progress=self.progress)


@dataclass(frozen=True)
class Step:
    """One step of ``analyze``.

    Attributes:
        name: the step's name (``--skip`` takes it); ``attribute``: the ``Analysis`` field its result fills.
        file: where its result is saved (its key beside it).
        result: ``"module:Class"`` of the result it saves with ``Class.save`` and reads with ``Class.load``
            (``"json"``: a JSON value).
        settings: the step's own settings for the key (``settings(run)``); None: nothing to compute, a note says
            why.
        compute: the result (``compute(run)``).
        after: what it adds to the report's notes afterwards (``after(run)``).
        format: written into the key: a file saved in an older layout (before the step saved its result class)
            has another key, so it is recomputed, not misread.
    """

    name: str
    attribute: str
    file: str
    result: str
    settings: Callable[[Run], dict | None]
    compute: Callable[[Run], object]
    after: Callable[[Run], None] | None = None
    format: str | None = None

    def read(self, path: Path):
        """The result saved at ``path``."""
        if self.result == "json":
            return json.loads(Path(path).read_text())
        module, name = self.result.split(":")
        return getattr(importlib.import_module(module), name).load(path)

    def save(self, value, path: Path) -> None:
        if self.result == "json":
            write_json(path, value)
        else:
            value.save(path)


@contextmanager
def timed(analysis, step: str):
    started = time.perf_counter()
    yield
    analysis.seconds[step] = time.perf_counter() - started


def run_step(spec: Step, run: Run) -> None:
    """Reuse ``spec``'s saved result when it was made under the same key; else compute and save it."""
    settings = spec.settings(run)
    if settings is not None:
        path = run.out / spec.file
        key = step_keys.normalise({"model": run.identity, "trace": run.this_trace} | settings
                                  | ({"format": spec.format} if spec.format else {}))
        old = step_keys.read_key(path) if path.exists() else None
        status = step_keys.status(old, key)
        with timed(run.analysis, spec.name):
            if status == "reused":
                value = spec.read(path)
            else:
                step_keys.key_path(path).unlink(missing_ok=True)  # a run killed while writing leaves no stale key
                value = spec.compute(run)
                spec.save(value, path)
                step_keys.write_key(path, key)
        run.analysis.steps[spec.name], run.analysis.keys[spec.name] = status, key
        setattr(run.analysis, spec.attribute, value)
        run.say(f"{spec.name}: {status}")
    if spec.after is not None:
        spec.after(run)


def saved_key(folder: str | Path, step: str) -> dict | None:
    """The key under which ``analyze`` saved step ``step``'s result in ``folder``, or None when it is not saved
    (the result's file or its key is missing)."""
    path = Path(folder) / STEP_FILES[step]
    return step_keys.read_key(path) if path.exists() else None


def write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)


def sampler_key(identity: dict, sampler) -> dict:
    """Who samples the rollouts: the model itself, or a server (its URL and the model it serves)."""
    if sampler is None:
        return {"local": identity}
    if isinstance(sampler, str):
        return {"server": sampler}
    return {"sampler": getattr(sampler, "name", type(sampler).__name__)}


# ---- categories ------------------------------------------------------------------------------------------------


def _classifier_version() -> str:
    """A digest of the shipped taxonomy classifier's weights: new weights recompute the categories."""
    import hashlib

    from anchorlens.taxonomy.classifier import DEFAULT_WEIGHTS

    return hashlib.sha256(Path(DEFAULT_WEIGHTS).read_bytes()).hexdigest()[:16]


def _categories(run: Run) -> list[str]:
    from anchorlens.taxonomy import classify_sentences

    return list(classify_sentences(run.trace.sentence_texts()))


# ---- receiver heads ----------------------------------------------------------------------------------------------


def _receivers(run: Run):
    """Receiver heads of this one trace (its vertical scores kept, so a study can choose heads over many traces),
    with the top head's sentence attention; no heads on a trace too short for a kurtosis."""
    import warnings

    from anchorlens.receivers.heads import FewerHeadsWarning, receiver_heads

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewerHeadsWarning)  # _receivers_after says so in the report
        return receiver_heads(run.model, run.trace, top_k=run.options["top_k_heads"], keep_head_attention=True,
                              require_heads=False, progress=False)


def _receivers_after(run: Run) -> None:
    found, asked = len(run.analysis.receiver_heads), run.options["top_k_heads"]
    if found == 0:
        run.notes["receiver"] = run.notes["head_attention"] = (
            f"Too short for receiver heads: {run.trace.n_sentences} sentences, and a head's kurtosis needs "
            f"vertical scores of several sentences, each attended from {PROXIMITY_IGNORE} or more sentences later.")
    elif found < asked:
        run.notes["receiver"] = (f"Only {found} heads have a kurtosis on this trace (layer 0 is left out, and "
                                 f"short traces leave few sentences far enough apart): the top {found}, not {asked}.")


# ---- attention suppression ---------------------------------------------------------------------------------------


def _suppression_settings(run: Run) -> dict | None:
    if run.trace.n_sentences < 2:
        run.notes["suppression"] = "The trace has a single sentence: nothing to suppress."
        return None
    return {}


def _suppression(run: Run):
    from anchorlens.suppression import suppression_matrix

    return suppression_matrix(run.model, run.trace, progress=run.progress)


# ---- resampling importance and resilience ------------------------------------------------------------------------


def _resampling_settings(run: Run) -> dict:
    if run.answer is None:
        run.notes["importance"] = (
            "No reference answer (the chain of thought has no \\boxed{} answer and none was given): "
            "accuracy-based columns are empty; KL-based ones still compare answer distributions.")
    return run.sampling_key()


def _resampling(run: Run):
    from anchorlens.resampling.runner import resampling_importance

    return resampling_importance(run.sampling, run.trace, extractor=run.options["extractor"],
                                 **run.sampling_options())


def _resampling_after(run: Run) -> None:
    info = run.analysis.importance.run_info
    if run.analysis.steps["resampling"] != "reused" and info:
        run.say(f"resampling rollouts: {info.get('already_done', 0)} found in {Path(info.get('store', '')).name} "
                f"under the same settings, {info.get('generated', 0)} generated")


def top_sentences(importance, top: int) -> list[int]:
    """The ``top`` sentences of highest counterfactual_importance_kl (the reference's choice of sentences to
    test), in trace order; sentences without a value are left out."""
    values = importance.counterfactual_importance_kl.double().numpy()
    order = [int(i) for i in np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable") if np.isfinite(values[i])]
    return sorted(order[:top])


def _resilience_settings(run: Run) -> dict | None:
    importance = run.analysis.importance
    run.targets = top_sentences(importance, run.options["resilience_top"]) if importance is not None else []
    if not run.targets:
        run.notes["importance"] = run.notes.get("importance", "") + (
            " Resilience was asked for, but no sentence has a counterfactual importance to pick the top ones by "
            "(no answered rollouts): nothing measured.").lstrip()
        return None
    return run.sampling_key() | {"sentences": run.targets, "max_iterations": run.options["resilience_iterations"]}


def _resilience(run: Run):
    from anchorlens.branches import resilience

    return resilience(run.sampling, run.trace, run.targets, max_iterations=run.options["resilience_iterations"],
                      outcome=run.options["extractor"], **run.sampling_options())


def _resilience_after(run: Run) -> None:
    if not run.targets:
        return
    info = run.analysis.resilience.run_info
    if run.analysis.steps["resilience"] != "reused" and info:
        run.say(f"resilience completions: {info.get('chain_reused', 0) + info.get('plain_reused', 0)} found in "
                f"{Path(info.get('store', '')).name}, {info.get('generated', 0)} generated")
    run.notes["importance"] = run.notes.get("importance", "") + (
        f" Resilience (Thought Branches) of sentences {run.targets}, the top {len(run.targets)} by "
        "counterfactual_importance_kl: each of n_rollouts chains removes the sentence, continues, and follows "
        "its content wherever it comes back (cosine >= 0.6), up to "
        f"{run.options['resilience_iterations']} iterations; Counterfactual++ is accuracy kept minus accuracy when "
        "the content was finally abandoned (the opposite sign of counterfactual importance).").lstrip()


# ---- information flow and attribution ----------------------------------------------------------------------------


def _flow(run: Run):
    """Information flow (L2: it factors into dot products) into the prediction of the answer token, by sentence."""
    from anchorlens.flow.sentences import sentence_flow

    return sentence_flow(run.model, run.trace, distance="l2", position=run.analysis.answer_position - 1,
                         progress=run.progress)


def _attribution_settings(run: Run) -> dict:
    return {"transcoders": run.transcoders.scan, "max_feature_nodes": run.options["attribution_features"],
            "answer_position": run.analysis.answer_position}


def _attribution(run: Run):
    """The answer token's logit attributed to sentences (the graph of the tokens before it)."""
    from anchorlens.attribution.sentences import answer_attribution

    return answer_attribution(run.model, run.transcoders, run.trace, run.analysis.answer_position,
                              max_feature_nodes=run.options["attribution_features"], progress=run.progress)


def _attribution_after(run: Run) -> None:
    run.notes["attribution"] = attribution_note(run.analysis.attribution.info)


def attribution_note(info: dict) -> str:
    logit = ("one of the logit nodes: attribution_to_answer is each sentence's influence on its logit"
             if info["answer_is_logit_node"] else "NOT among the logit nodes (not among the model's top predictions "
             "there): attribution_to_answer is each sentence's influence on the top predictions instead")
    return (f"The logit of the answer token {info['answer_text']!r} (position {info['answer_position']}; {logit}) "
            f"through transcoders {info['transcoders']}: {info['features_kept']} feature nodes kept, "
            f"{info['features_dropped']} of smaller influence dropped (max_feature_nodes={info['max_feature_nodes']}); "
            f"pruned graph replacement score {info['replacement']:.3f}, completeness {info['completeness']:.3f}. "
            "attribution_to_answer counts the paths that start at a sentence's token embeddings; "
            "attribution_features_at_sentence the features computed at its positions (which overlap).")


STEP_TABLE: tuple[Step, ...] = (
    Step("categories", "categories", CATEGORIES_FILE, "json", lambda run: {"classifier": _classifier_version()},
         _categories),
    Step("receivers", "receivers", RECEIVERS_FILE, "anchorlens.receivers.heads:ReceiverHeads",
         lambda run: {"heads": run.options["top_k_heads"], "proximity_ignore": PROXIMITY_IGNORE}, _receivers,
         _receivers_after, format="ReceiverHeads"),
    Step("suppression", "suppression", SUPPRESSION_FILE, "anchorlens.suppression.result:SuppressionMatrix",
         _suppression_settings, _suppression, format="SuppressionMatrix"),
    Step("resampling", "importance", IMPORTANCE_FILE, "anchorlens.resampling.metrics:ImportanceResult",
         _resampling_settings, _resampling, _resampling_after),
    Step("resilience", "resilience", RESILIENCE_FILE, "anchorlens.branches:ResilienceResult", _resilience_settings,
         _resilience, _resilience_after),
    Step("flow", "flow", FLOW_FILE, "anchorlens.flow.sentences:SentenceFlow",
         lambda run: {"distance": "l2", "answer_position": run.analysis.answer_position}, _flow,
         format="SentenceFlow"),
    Step("attribution", "attribution", ATTRIBUTION_FILE, "anchorlens.attribution.sentences:SentenceAttribution",
         _attribution_settings, _attribution, _attribution_after, format="SentenceAttribution"),
)
STEP_FILES = {"trace": TRACE_FILE} | {spec.name: spec.file for spec in STEP_TABLE}
