"""Errors anchorlens raises for bad input. Each message says what to do next."""


class AnchorlensError(ValueError):
    """Base class: bad input or an unsupported setting, with advice in the message."""


class EmptyTextError(AnchorlensError):
    """The text is empty or holds no sentence."""


class TraceTooLongError(AnchorlensError):
    """A trace has more tokens than the model's context window."""


class UnknownModelError(AnchorlensError):
    """A model name that is neither embedded, a local folder, nor loadable by TransformerLens."""


class ModelPackageMissingError(ImportError):
    """The Python package that carries an embedded model is not installed."""


class UnsupportedArchitectureError(AnchorlensError):
    """Attention edits (hook_attn_scores / hook_pattern / hook_z) do not change this model's output."""


class UnsupportedDtypeError(AnchorlensError):
    """A dtype anchorlens does not run, or float16 for a model whose activations would overflow it."""


class TokenizerMismatchError(AnchorlensError):
    """Two models that must share a tokenizer do not."""


class CachedDecodingError(AnchorlensError):
    """Decoding with the KV cache through this bridge does not equal a full recomputation."""


class DegenerateTraceError(AnchorlensError):
    """A generated chain of thought is degenerate (one sentence, or one character repeated)."""


class TraceFileError(AnchorlensError):
    """A trace file that cannot be read: not UTF-8, not JSON, or without a saved trace's fields."""


class OptionError(AnchorlensError):
    """A command-line option out of range, or one that does nothing without another."""


class ResultKindError(AnchorlensError):
    """A saved result loaded with the wrong class: the message names the file's kind and the loader to use."""
