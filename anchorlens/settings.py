"""The settings of ``analyze``, ``study`` and ``mediate``: their choices, defaults and range checks, in one light
module (no torch), so that the Python functions and the command line share one source and ``anchorlens --help``
answers at once.
"""

from __future__ import annotations

from numbers import Integral, Real

from anchorlens.errors import OptionError

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"  # the embedded model
STEPS = ("categories", "receivers", "suppression", "resampling", "flow", "attribution", "resilience")
DEFAULT_STEPS = ("categories", "receivers", "suppression", "resampling", "flow")
STYLES = ("default", "thought-anchors")
EXTRACTORS = ("boxed", "boxed_or_last_number", "last_number")
DTYPES = ("float32", "bfloat16", "float16")

# analyze (and the study's per-trace analyses)
N_ROLLOUTS = 8
ROLLOUT_MAX_TOKENS = 64
MAX_NEW_TOKENS = 200
TOP_K_HEADS = 16
SEED = 0
TEMPERATURE = 0.6
TOP_P = 0.95
STYLE = "default"
EXTRACTOR = "boxed"  # as published (docs/methods.md: the first \boxed{...}); boxed_or_last_number for small models
ATTRIBUTION_FEATURES = 1024
RESILIENCE_TOP = 0
RESILIENCE_ITERATIONS = 20  # as in Thought Branches

# study
STUDY_VIEWS = ("categories", "receivers", "suppression", "flow", "attribution")
STUDY_DEFAULT_VIEWS = ("categories", "receivers")
STUDY_IMPORTANCE = "published"
STUDY_TOP_K = 20  # the paper's default number of receiver heads

# mediate (the names of anchorlens.hooks.cell_patch.COMPONENTS; tests/test_cli_startup.py keeps them equal)
MEDIATION_COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "head_out", "head_pattern", "mlp_out_dim",
                        "mlp_post")
MEDIATION_METRICS = ("stolfo_ie", "logit_diff", "logprob_base", "logprob_counterfactual")
MEDIATION_COMPONENT = "mlp_out"
MEDIATION_POSITIONS = "last"
MEDIATION_POSITION_CHOICES = ("last", "all")  # the command line's; mediation_sweep also takes a list of positions
MEDIATION_METRIC = "stolfo_ie"
MEDIATION_CHUNK_SIZE = 256
MEDIATION_TASKS = ("arithmetic", "arithmetic_words", "retrieval", "factual")  # mediation.prompts.task_pairs
MEDIATION_TASK = "factual"
MEDIATION_SEED = 0  # the prompts' sampling seed (task_pairs and the task generators)
MEDIATION_PER_TEMPLATE = 10  # arithmetic pairs per (operator, template, pair type)
MEDIATION_COMMAND_COMPONENTS = ("mlp_out", "attn_out")  # what `anchorlens mediate` sweeps, one after the other
MEDIATION_MAX_PAIRS = 40  # `anchorlens mediate`: at most this many of the kept pairs are swept
MEDIATION_OUT = "anchorlens-mediation"  # `anchorlens mediate`'s output folder


def check_settings(*, n_rollouts: int = 1, rollout_max_tokens: int = 1, max_new_tokens: int = 1,
                   top_k_heads: int = 1, attribution_features: int = 1, temperature: float = TEMPERATURE,
                   top_p: float = TOP_P, style: str = STYLE, extractor=EXTRACTOR,
                   steps: tuple[str, ...] = (), resilience_top: int = 1, resilience_iterations: int = 1) -> None:
    """Refuse settings out of range before any work starts (the command line checks the same, before loading)."""
    for name, value in [("n_rollouts", n_rollouts), ("rollout_max_tokens", rollout_max_tokens),
                        ("max_new_tokens", max_new_tokens), ("top_k_heads", top_k_heads),
                        ("attribution_features", attribution_features), ("resilience_top", resilience_top),
                        ("resilience_iterations", resilience_iterations)]:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise OptionError(f"{name} must be a whole number of at least 1, not {value!r}")
    if not isinstance(temperature, Real) or not 0 <= temperature <= 10:
        raise OptionError(f"temperature must lie in [0, 10], not {temperature}")
    if not isinstance(top_p, Real) or not 0 < top_p <= 1:
        raise OptionError(f"top_p must lie in (0, 1], not {top_p}")
    if style not in STYLES:
        raise OptionError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    if isinstance(extractor, str) and extractor not in EXTRACTORS:
        raise OptionError(f"extractor must be one of {', '.join(EXTRACTORS)} or a callable, not {extractor!r}")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise OptionError(f"unknown step(s) {', '.join(map(repr, unknown))}: choose from {', '.join(STEPS)}")
