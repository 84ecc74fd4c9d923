"""The package's one statistics module: bootstrap draws, percentile intervals, paired differences, normal and
jackknife intervals. Pure math: arrays or tensors in, numbers out.

One argument convention everywhere: ``n_bootstrap`` (the number of resamples; the name the resampling and branch
methods already published, and unambiguous next to ``n_rollouts`` / ``n_sets``) and ``level`` (the interval's
coverage, 0.95 for 95%; what ``scipy.stats.bootstrap`` calls ``confidence_level``, short and not confused with a
model's confidence in an answer). The older names ``n_boot`` and ``confidence`` are accepted by the public
functions for one release with a ``DeprecationWarning`` (``renamed_arguments``).

Resampling units are the rows handed in: rollouts, items, sentences or whole traces (a caller that resamples
traces passes trace indices; ``resample_indices`` draws ``[n_bootstrap, n]`` row indices with one
``rng.integers`` call, so a seeded caller gets the same draws as before). ``scipy.stats.bootstrap`` is used where
one statistic over one sample is wanted (``bootstrap_distribution``, ``mean_interval``); the hand-written draws
where one draw must feed many statistics (every metric of every sentence, both categories of a difference).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

DEPRECATED_NAMES = {"n_boot": "n_bootstrap", "confidence": "level"}
LEVEL = 0.95  # every interval's default coverage
N_BOOTSTRAP = 1000  # the rollout methods' default resamples (the reference's; a few cheaper views take more)


def renamed_arguments(**old_to_new: str) -> Callable:
    """Accept the old keyword names of a public function (``n_boot=`` -> ``n_bootstrap=``) with a
    ``DeprecationWarning`` naming the new one, for one release. Default: ``DEPRECATED_NAMES``.

    On a (data)class it renames a stored field: the constructor takes the old keyword (as a function does),
    ``obj.old`` reads the new field (warning too), and ``_renamed`` tells ``Result.load`` to read files that
    saved it under the old name (silently: such a file is not the caller's to change).
    """
    mapping = old_to_new or DEPRECATED_NAMES

    def wrap(func: Callable) -> Callable:
        if isinstance(func, type):
            return _renamed_fields(func, mapping, wrap)

        @functools.wraps(func)
        def inner(*args, **kwargs):
            for old, new in mapping.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{_name(func)}() got both {old!r} and its new name {new!r}")
                    _deprecated(f"{_name(func)}({old}=...)", f"{new}=...")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return inner

    return wrap


def _name(func: Callable) -> str:
    return func.__qualname__.removesuffix(".__init__")


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated, use {new}", DeprecationWarning, stacklevel=3)


def _renamed_fields(cls: type, mapping: dict[str, str], wrap: Callable) -> type:
    cls.__init__ = wrap(cls.__init__)
    for old, new in mapping.items():
        def read(self, old=old, new=new):
            _deprecated(f"{type(self).__name__}.{old}", f".{new}")
            return getattr(self, new)

        setattr(cls, old, property(read))
    cls._renamed = {**getattr(cls, "_renamed", {}), **mapping}
    return cls


def check_level(level) -> None:
    """Refuse an interval level outside (0, 1) before any work starts."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        from anchorlens.errors import InputError

        raise InputError(f"level must lie in (0, 1), e.g. 0.95 for 95% intervals; got {level!r}")


def resample_indices(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_bootstrap, n]`` row indices drawn with replacement (one ``rng.integers`` call; ``n = 0``: empty rows)."""
    if n == 0:
        return np.zeros((n_bootstrap, 0), np.int64)
    return rng.integers(0, n, size=(n_bootstrap, n))


def resample_counts(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_bootstrap, n]`` how often each row is drawn (the same draws as ``resample_indices``): weights for
    statistics that are sums over rows."""
    draws = resample_indices(n, n_bootstrap, rng)
    return np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float) if n_bootstrap else np.zeros((0, n))


@renamed_arguments(confidence="level")
def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of ``[draws, ...]`` samples: the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles, NaN draws left out (a column of only NaN: NaN)."""
    samples = np.asarray(samples, dtype=float)
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    finite = np.isfinite(samples).any(0)
    low = np.full(samples.shape[1:], np.nan)
    high = np.full(samples.shape[1:], np.nan)
    if finite.any():
        low[finite] = np.nanpercentile(samples[:, finite], lo, axis=0)
        high[finite] = np.nanpercentile(samples[:, finite], hi, axis=0)
    return low, high


@renamed_arguments(confidence="level")
def interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of one statistic's ``[draws]`` (non-finite draws left out; none finite: NaN)."""
    low, high = percentile_interval(np.asarray(draws, dtype=float).reshape(-1)[:, None], level)
    return float(low[0]), float(high[0])


@renamed_arguments(confidence="level")
def paired_difference(draws_a: np.ndarray, draws_b: np.ndarray, level: float = LEVEL) -> tuple[float, float, bool]:
    """Interval of ``a - b`` over the same bootstrap draws (paired), and whether it excludes 0."""
    low, high = interval(np.asarray(draws_a, dtype=float) - np.asarray(draws_b, dtype=float), level)
    return low, high, bool(low > 0 or high < 0)


@renamed_arguments(n_boot="n_bootstrap", confidence="level")
def bootstrap_mean(values, n_bootstrap: int, level: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values`` with a percentile interval over ``n_bootstrap`` resamples of the values
    (``resample_indices``); NaN when there are no values, NaN bounds when ``n_bootstrap`` is 0."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    if not n_bootstrap:
        return float(values.mean()), float("nan"), float("nan")
    low, high = interval(values[resample_indices(len(values), n_bootstrap, rng)].mean(1), level)
    return float(values.mean()), low, high


@renamed_arguments(n_boot="n_bootstrap", confidence="level")
def mean_interval(values: np.ndarray, n_bootstrap: int = 2000, level: float = LEVEL,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``); non-finite values
    dropped; one value is its own interval, none is NaN."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:  # scipy needs two observations
        return (float(values[0]),) * 2 if len(values) else (float("nan"),) * 2
    result = bootstrap((values,), np.mean, n_resamples=n_bootstrap, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@renamed_arguments(n_boot="n_bootstrap")
def bootstrap_distribution(data: tuple, statistic: Callable, n_bootstrap: int, rng: np.random.Generator, *,
                           paired: bool = False, batch: int | None = None) -> np.ndarray:
    """``[n_bootstrap]`` values of a vectorised ``statistic(*samples, axis)`` over resamples of ``data``
    (``scipy.stats.bootstrap``'s draws; resamples where the statistic is undefined stay NaN, for ``interval``
    to leave out; scipy's own interval would be NaN as soon as one is)."""
    from scipy.stats import DegenerateDataWarning, bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(data, statistic, n_resamples=n_bootstrap, vectorized=True, paired=paired,
                           method="percentile", rng=rng, batch=batch)
    return np.asarray(result.bootstrap_distribution, dtype=float)


def normal_mean_interval(values: Float[Tensor, "item ..."], level: float = LEVEL) -> tuple[Tensor, Tensor, Tensor]:
    """NaN-aware mean over the first dimension with a normal-approximation interval (mean ± z·SE)."""
    valid = ~values.isnan()
    n = valid.sum(0).clamp(min=1)
    filled = torch.where(valid, values, torch.zeros_like(values))
    mean = filled.sum(0) / n
    var = (torch.where(valid, values - mean, torch.zeros_like(values)) ** 2).sum(0) / (n - 1).clamp(min=1)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)).item()
    half = z * (var / n).sqrt()
    mean = torch.where(valid.any(0), mean, torch.full_like(mean, float("nan")))
    return mean, mean - half, mean + half


def jackknife_variance(estimates: np.ndarray) -> float:
    """Jackknife variance ``(n - 1) / n * sum((x_i - mean)^2)`` of ``n`` leave-one-out estimates."""
    estimates = np.asarray(estimates, dtype=float)
    n = len(estimates)
    return (n - 1) / n * float(((estimates - estimates.mean()) ** 2).sum())


def fisher_z(r) -> np.ndarray:
    """``atanh(r)``, clipped just inside ±1 so a perfect correlation stays finite."""
    return np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))


def fisher_z_interval(r: float, variance: float, level: float = LEVEL) -> tuple[float, float]:
    """Interval of a correlation ``r`` from the variance of its Fisher z: ``tanh(z ± q·sqrt(variance))``."""
    from scipy.stats import norm

    spread = norm.ppf(0.5 + level / 2) * np.sqrt(variance)
    if spread == 0:
        return r, r
    z0 = fisher_z(r)
    return float(np.tanh(z0 - spread)), float(np.tanh(z0 + spread))
