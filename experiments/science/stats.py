"""Statistics over seeds for the science tables: confidence intervals and paired tests.

Seeds are few (5), so intervals use Student's t with ``n - 1`` degrees of freedom rather
than a bootstrap, whose percentile intervals are too narrow at that size. Losses span
orders of magnitude across seeds (a seed that solves a task and one that does not differ
by 100x), so the plots and the paired tests work on ``log10`` of the loss; the tables give
the arithmetic mean with its t interval, as asked of a results table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
LOG_FLOOR = 1e-12
"""Losses are raised to this floor before a log is taken: a float32 cross-entropy can
round to exactly 0 for a model that has learnt a task perfectly."""


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, ...]:
    """``(mean, low, high)``: the mean of ``values`` and its two-sided Student-t interval.

    ``low`` and ``high`` are NaN for fewer than two values (no spread to estimate).

    Raises:
        ValueError: if ``values`` is empty or ``confidence`` is not in (0, 1).
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("values must hold at least one number, got none")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def log_t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, ...]:
    """``(geometric mean, low, high)``: `t_interval` of ``log10(values)`` mapped back, so
    the interval stays positive (on a log axis); values under `LOG_FLOOR` count as it.

    Raises:
        ValueError: if a value is negative or NaN.
    """
    x = np.asarray(values, dtype=float)
    if np.any(~(x >= 0)):
        raise ValueError(f"values must be >= 0 for a log-space interval, got {x.tolist()}")
    return tuple(float(10.0**v) for v in t_interval(np.log10(np.maximum(x, LOG_FLOOR)), confidence))


def paired_t_test(a: Sequence[float], b: Sequence[float], *, log: bool = True) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (pairs by index: the
    same seed, hence the same data stream, in both configurations), on ``log10`` values
    (floored at `LOG_FLOOR`) when ``log``. 1.0 when every difference is 0 (no evidence
    of a difference); NaN for fewer than two pairs.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up, got {x.size} and {y.size} values")
    if x.size < 2:
        return math.nan
    if log:
        x, y = np.log10(np.maximum(x, LOG_FLOOR)), np.log10(np.maximum(y, LOG_FLOOR))
    d = x - y
    if np.all(d == d[0]):
        # No spread: identical pairs carry no evidence; a constant non-zero shift is as
        # strong as the data can show (the t statistic is infinite).
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(x, y).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order), for several comparisons in one
    table; NaN stays NaN and does not count as a comparison."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(p.shape, math.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
