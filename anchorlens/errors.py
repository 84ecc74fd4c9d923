"""Errors anchorlens raises. Each message says what to do next.

A few kinds, one per thing a caller does about it (issue 30):

- ``InputError``: the caller's input or settings (a text, a file, an option, a head list, a saved result, a rollout
  store, a completion server's address): change it as the message says. Three trace errors stay apart since a
  study skips such a trace and goes on: ``EmptyTextError``, ``TraceTooLongError``, ``DegenerateTraceError``;
  ``ResultKindError``, ``StoreError`` and ``ServerError`` (``ServerUnavailableError``, which the remote sampler
  retries) are input errors of their own kind.
- ``ModelLoadError``: a model that cannot be loaded (``ModelPackageMissingError``: install the package named).
- ``UnsupportedArchitectureError``: the model's attention cannot be edited as the methods need.
- ``CachedDecodingError``: KV-cached decoding differs from a full recomputation (install the tested versions).

The older per-package names (``StudyInputError``, ``FlowInputError``, ...) are aliases of these kinds for one
release (``DEPRECATED_ALIASES``; DEVELOPING.md, "Errors", has the removal plan).
"""


class AnchorlensError(ValueError):
    """Base class: bad input or an unsupported setting, with advice in the message."""


class InputError(AnchorlensError):
    """Input or settings anchorlens cannot use: a text, file, option, head list, prompt, target or server address."""


class EmptyTextError(InputError):
    """The text is empty or holds no sentence."""


class TraceTooLongError(InputError):
    """A trace has more tokens than the model's context window."""


class DegenerateTraceError(InputError):
    """A generated chain of thought is degenerate (one sentence, or one character repeated)."""


class ResultKindError(InputError):
    """A saved result loaded with the wrong class: the message names the file's kind and the loader to use."""


class StoreError(InputError):
    """A rollout store that cannot be used as asked (bad path, other schema, other settings)."""


class ServerError(InputError):
    """A completion server that cannot be started or reached."""


class ServerUnavailableError(ServerError, ConnectionError):
    """A completion server did not answer (after every retry) or answered with an error."""


class ModelLoadError(AnchorlensError):
    """A model that cannot be loaded: neither embedded, a local folder, nor loadable by TransformerLens."""


class ModelPackageMissingError(ModelLoadError, ImportError):
    """The Python package that carries an embedded model is not installed."""


class UnsupportedArchitectureError(AnchorlensError):
    """Attention edits (hook_attn_scores / hook_pattern / hook_z) do not change this model's output."""


class CachedDecodingError(AnchorlensError):
    """Decoding with the KV cache through this bridge does not equal a full recomputation."""


# Deprecated aliases, kept for one release (removed in 0.3; see DEVELOPING.md, "Errors"). The per-package ones
# are assigned in their old modules too, so ``from anchorlens.flow import FlowInputError`` keeps working.
UnknownModelError = ModelLoadError
UnsupportedDtypeError = InputError
TokenizerMismatchError = InputError
TraceFileError = InputError
OptionError = InputError

#: Every deprecated name -> (the module it stays importable from, the kind it now is).
DEPRECATED_ALIASES: dict[str, tuple[str, type[AnchorlensError]]] = {
    "UnknownModelError": ("anchorlens.errors", ModelLoadError),
    "UnsupportedDtypeError": ("anchorlens.errors", InputError),
    "TokenizerMismatchError": ("anchorlens.errors", InputError),
    "TraceFileError": ("anchorlens.errors", InputError),
    "OptionError": ("anchorlens.errors", InputError),
    "AttributionInputError": ("anchorlens.attribution.attribute", InputError),
    "TargetError": ("anchorlens.attribution.targets", InputError),
    "TrainingInputError": ("anchorlens.attribution.training", InputError),
    "TranscoderError": ("anchorlens.attribution.transcoders", InputError),
    "EdgePatchingError": ("anchorlens.flow.edge_patching", InputError),
    "FlowInputError": ("anchorlens.flow.checks", InputError),
    "SuppressionInputError": ("anchorlens.suppression.validation", InputError),
    "PatternUnavailableError": ("anchorlens.hooks.fused_attention", InputError),
    "SentenceSpanError": ("anchorlens.spans", InputError),
    "ReportDataError": ("anchorlens.report.errors", InputError),
    "RolloutMismatchError": ("anchorlens.resampling.metrics", InputError),
    "ReferenceFormatError": ("anchorlens.resampling.published_format", InputError),
    "RunSettingsError": ("anchorlens.resampling.runner", InputError),
    "ServerStartError": ("anchorlens.resampling.server", ServerError),
    "SamplerError": ("anchorlens.resampling.samplers.base", InputError),
    "AnswerExtractorError": ("anchorlens.answers", InputError),
    "BranchSettingsError": ("anchorlens.branches.keyed", InputError),
    "MediationInputError": ("anchorlens.mediation.errors", InputError),
    "UnequalLengthError": ("anchorlens.mediation.errors", InputError),
    "MultiTokenAnswerError": ("anchorlens.mediation.errors", InputError),
    "UnknownComponentError": ("anchorlens.mediation.errors", InputError),
    "PositionError": ("anchorlens.mediation.errors", InputError),
    "HeadSelectionError": ("anchorlens.heads", InputError),
    "StudyInputError": ("anchorlens.study.discovery", InputError),
}
