r"""Summary statistics over tasks: the mean and half-width of its Student-t confidence interval,

    h = t_{(1+c)/2, T−1} · s / √T,

with the t quantile computed exactly (no SciPy): the "±" of Li et al. 2017 and Finn et al. 2017.
:func:`interval` is what reports show: no interval from fewer than ``MIN_TASKS_FOR_CI`` tasks
(with 2 tasks t = 12.7 and the "±" is mostly noise), and the interval clipped to the metric's
range (an accuracy stays in [0, 1], a loss at or above 0), with a flag when it was.
:func:`explained_variance` is the multi-task regression score.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _validation

__all__ = ["mean_ci", "t_quantile", "interval", "Interval", "MIN_TASKS_FOR_CI",
           "explained_variance", "task_explained_variance"]

MIN_TASKS_FOR_CI = 5    # below this a report gives the mean and says the tasks are too few


# --- Student-t quantiles without SciPy -----------------------------------------------------------
def _t_two_sided(t, nu):
    """P(|T| <= t) for T ~ Student-t with integer ν (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(nu))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if nu % 2 == 1:
        term, total = math.cos(theta), 0.0
        if nu > 1:
            total = term
            for j in range(3, nu - 1, 2):       # cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...)
                term *= c2 * (j - 1) / j
                total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0
    for j in range(2, nu - 1, 2):               # 1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...
        term *= c2 * (j - 1) / j
        total += term
    return s * total


def _normal_quantile(p):
    """Φ⁻¹(p) by bisection on erf (|error| < 1e-14)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_quantile(p, nu):
    """The p-quantile (p in (0.5, 1)) of Student's t with ν >= 1 degrees of freedom."""
    p = _validation.real("p", p, minimum=0.5, min_open=True, maximum=1.0)
    nu = _validation.integer("nu", nu, minimum=1)
    if p >= 1.0:
        raise ValueError(f"p must be < 1, got {p}")
    if nu > 2000:
        # Cornish-Fisher expansion around the normal quantile: error O(ν⁻⁵), < 1e-12 here
        z = _normal_quantile(p)
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        return z + g1 / nu + g2 / nu ** 2 + g3 / nu ** 3
    target = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, nu) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided(mid, nu) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_ci(values, confidence=0.95):
    """(mean, half-width) of the Student-t confidence interval of the mean of ``values`` (1-D);
    the half-width is NaN for a single value. A non-finite value gives the mean NumPy gives
    (inf for a task whose adaptation diverged, −inf, or NaN for a NaN value or for +inf and −inf
    together, e.g. a diverged task's accuracy) and a NaN half-width. Finite values of any size
    give finite, exact figures: they are scaled by a power of two (exact) before the sums, so
    1e-320 losses keep their spread and 1e160 losses do not overflow the squares; a half-width
    beyond the float range is inf."""
    v = _validation.float_array("values", values, ndim=1, dtype=np.float64, finite=False)
    if v.shape[0] == 0:
        raise ValueError("values must not be empty")
    confidence = _validation.real("confidence", confidence, minimum=0.0, min_open=True,
                                  maximum=1.0, max_open=True)
    n = v.shape[0]
    if not np.isfinite(v).all():
        with np.errstate(invalid="ignore"):      # +inf and −inf together: NaN
            return float(v.mean()), float("nan")
    if n == 1:
        return float(v[0]), float("nan")
    t = t_quantile(0.5 * (1.0 + confidence), n - 1)
    # v = w · 2^e with max |w| in [0.5, 1): the sums of w neither overflow (1e160² would) nor
    # underflow (1e-320² would, giving a zero spread); scaling by 2^e is exact both ways, so
    # values of ordinary size give bit for bit the unscaled figures
    peak = float(np.max(np.abs(v)))
    e = math.frexp(peak)[1] if peak > 0.0 else 0
    w = np.ldexp(v, -e)
    mean, sd = float(w.mean()), float(w.std(ddof=1))
    with np.errstate(over="ignore"):
        return math.ldexp(mean, e), float(np.ldexp(t * sd / math.sqrt(n), e))


# --- explained variance ---------------------------------------------------------------------------
def _targets(y_true, y_pred):
    t = _validation.float_array("y_true", y_true, ndim=1, dtype=np.float64)
    p = _validation.float_array("y_pred", y_pred, ndim=1, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"y_pred must have the shape of y_true {t.shape}, got {p.shape}")
    if t.shape[0] < 2:
        raise ValueError(f"y_true must hold at least 2 values, got {t.shape[0]}")
    return t, p


def _explained(t, p):
    sst = float(np.sum((t - t.mean()) ** 2))
    if sst == 0.0:
        raise ValueError("y_true must not be constant (its variance is the denominator)")
    return 1.0 - float(np.sum((t - p) ** 2)) / sst


def explained_variance(y_true, y_pred):
    r"""1 − Σ(y − ŷ)² / Σ(y − ȳ)² over all rows: the share of the targets' variance a model
    explains, as the multi-task literature reports it on the school data (Bakker & Heskes 2003,
    Argyriou et al. 2008); the errors' mean is not removed (unlike scikit-learn's
    ``explained_variance_score``), so it is the coefficient of determination R²."""
    return _explained(*_targets(y_true, y_pred))


def task_explained_variance(y_true, y_pred, offsets):
    """(T,) explained variance of each task, task i being rows ``offsets[i]:offsets[i + 1]``
    (e.g. ``test.offsets`` of a TaskSet); their mean is the "mean over tasks" figure."""
    t, p = _targets(y_true, y_pred)
    o = _validation.as_array("offsets", offsets)
    if o.ndim != 1 or o.shape[0] < 2 or o.dtype.kind not in "iu" or o[0] != 0 \
            or o[-1] != t.shape[0] or (np.diff(o) < 2).any():
        raise ValueError(f"offsets must be integers rising from 0 to len(y_true) = {t.shape[0]} "
                         f"in steps of at least 2, got {o.tolist()}")
    return np.array([_explained(t[a:b], p[a:b]) for a, b in zip(o[:-1], o[1:])])


class Interval(NamedTuple):
    """A summary of one metric over tasks: mean, the half-width of the Student-t interval (NaN
    when there is none), its ends clipped to the metric's range, whether they were clipped, the
    number of tasks, and whether they were too few for an interval."""

    mean: float
    half_width: float
    low: float
    high: float
    clipped: bool
    n: int
    too_few: bool


def interval(values, confidence=0.95, bounds=(-math.inf, math.inf), min_tasks=MIN_TASKS_FOR_CI):
    """:func:`mean_ci` as a report shows it: no interval (NaN) from fewer than ``min_tasks``
    values or from a non-finite mean (a diverged task), else [m − h, m + h] clipped to ``bounds``
    (the metric's range) with ``clipped`` set when it was."""
    mean, h = mean_ci(values, confidence)
    min_tasks = _validation.integer("min_tasks", min_tasks, minimum=2)
    n = int(np.asarray(values).shape[0])
    lo, hi = bounds
    too_few = n < min_tasks
    if too_few or not math.isfinite(mean) or math.isnan(h):
        nan = float("nan")
        return Interval(mean, nan, nan, nan, False, n, too_few)
    low, high = max(mean - h, lo), min(mean + h, hi)
    return Interval(mean, h, low, high, low != mean - h or high != mean + h, n, False)
