r"""The few-shot evaluation protocol: adapt to every held-out task on its support rows, score its
query rows, and summarise over tasks with a 95% confidence interval.

For each number of adaptation steps s, task i gives φ_i^s (s SGD steps from θ on its support rows,
by the learner's rule: Meta-SGD's learned rates, ANIL's head-only loop) and the query loss
L_i^s = mean over its query rows of the row loss at φ_i^s (and, for classifiers, the accuracy).
Over T tasks the report gives the mean m = (1/T) Σ_i L_i^s and the half-width of its confidence
interval

    h = t_{(1+c)/2, T−1} · s_L / √T,   s_L² = (1/(T−1)) Σ_i (L_i^s − m)²,

the Student-t interval of the mean (the "±" of Li et al. 2017 and Finn et al. 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _checks
from .adapt import adapt_batch
from .models import MLP
from .taskset import TaskSet

__all__ = ["evaluate", "EvalReport", "mean_ci", "t_quantile"]


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
    p = _checks.real("p", p, minimum=0.5, min_open=True, maximum=1.0)
    nu = _checks.integer("nu", nu, minimum=1)
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
    the half-width is NaN for a single value, and (inf, NaN) when a value is not finite (a task
    whose adaptation diverged)."""
    v = _checks.float_array("values", values, ndim=1, dtype=np.float64, finite=False)
    if v.shape[0] == 0:
        raise ValueError("values must not be empty")
    confidence = _checks.real("confidence", confidence, minimum=0.0, min_open=True, maximum=1.0)
    n = v.shape[0]
    if not np.isfinite(v).all():
        return float("inf"), float("nan")
    if n == 1:
        return float(v[0]), float("nan")
    t = t_quantile(0.5 * (1.0 + confidence), n - 1)
    with np.errstate(over="ignore", invalid="ignore"):   # huge losses of tasks blowing up
        mean, sd = float(v.mean()), float(v.std(ddof=1))
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return float("inf"), float("nan")
    return mean, t * sd / math.sqrt(n)


# --- the report ----------------------------------------------------------------------------------
@dataclass
class EvalReport:
    """Per-task query losses (S, T) after each of ``steps`` adaptation steps (and accuracies for
    classifiers, else None); ``summary()`` gives mean ± 95% CI per step."""

    name: str
    steps: tuple
    losses: np.ndarray
    accuracies: np.ndarray | None = None
    lr: object = None
    info: dict = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return int(self.losses.shape[1])

    def summary(self, confidence=0.95) -> list:
        """One dict per step count: steps, loss, loss_ci (and accuracy, accuracy_ci)."""
        rows = []
        for j, s in enumerate(self.steps):
            row = {"steps": int(s)}
            row["loss"], row["loss_ci"] = mean_ci(self.losses[j], confidence)
            if self.accuracies is not None:
                row["accuracy"], row["accuracy_ci"] = mean_ci(self.accuracies[j], confidence)
            rows.append(row)
        return rows

    def at(self, steps, metric="loss"):
        """(mean, 95% half-width) of ``metric`` ("loss" or "accuracy") after ``steps`` steps."""
        row = self.summary()[list(self.steps).index(steps)]
        return row[metric], row[metric + "_ci"]

    def to_dict(self) -> dict:
        """Plain data: name, steps, n_tasks, lr, info and the summary rows."""
        lr = self.lr if self.lr is None or isinstance(self.lr, (int, float, str)) else "learned"
        return {"name": self.name, "steps": [int(s) for s in self.steps],
                "n_tasks": self.n_tasks, "lr": lr, "info": dict(self.info),
                "summary": self.summary()}


# --- evaluation ----------------------------------------------------------------------------------
def _row_losses(loss, pred, y):
    """Row losses (n,) and correctness (n,) or None, in float64."""
    z = np.asarray(pred, dtype=np.float64)
    if loss == "mse":
        z = z.reshape(y.shape[0], -1)
        return ((z - y.reshape(z.shape)) ** 2).mean(axis=1), None
    if loss == "logistic":
        z = z.reshape(-1)
        # log(1 + e^{−z}) for y = 1, log(1 + e^{z}) for y = 0
        row = np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))
        return row, ((z > 0) == (y > 0.5))
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    labels = y.astype(np.int64)
    return lse - z[np.arange(z.shape[0]), labels], (z.argmax(axis=1) == labels)


def _rule(model, theta, lr, learner):
    """(θ, lr, head_only, lr for the report) from the arguments."""
    if learner is None:
        lr = 0.01 if lr is None else lr
        return theta, lr, False, lr
    if learner.model != model:
        raise ValueError(f"learner's model {learner.model!r} differs from model {model!r}")
    theta, rates, head_only = learner._adapt_rule(learner._params(theta))
    if lr is None:
        lr = rates
    return theta, lr, head_only, lr if isinstance(lr, (int, float)) else "learned"


def evaluate(model, theta, test_tasks, *, steps=(0, 1, 5, 10), lr=None, learner=None,
             name=None, n_threads=None) -> EvalReport:
    """Few-shot evaluation of θ on held-out tasks.

    For every task of ``test_tasks`` (a TaskSet whose tasks all have support and query rows) and
    every s in ``steps``: adapt θ by s SGD steps on the support rows, then score the query rows.

    lr: the inner rate (a scalar or one per parameter); None uses the learner's (its inner_lr,
    or Meta-SGD's learned rates), else 0.01. learner: apply its adaptation rule (Meta-SGD:
    ``theta`` holds θ and the rates packed; ANIL: only the output layer adapts).
    Returns an :class:`EvalReport` (per-task losses, and accuracies for classifiers).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a metacore model (MLP), got {type(model).__name__}")
    if not isinstance(test_tasks, TaskSet):
        raise TypeError(f"test_tasks must be a TaskSet, got {type(test_tasks).__name__}")
    steps = tuple(_checks.int_sequence("steps", steps, minimum=0))
    if (test_tasks.n_query == 0).any() or (test_tasks.n_support == 0).any():
        raise ValueError("test_tasks: every task needs support rows to adapt on and query rows "
                         "to score")
    theta, lr, head_only, lr_shown = _rule(model, theta, lr, learner)
    theta = _checks.theta("theta", theta, model.n_params)

    ts = test_tasks
    starts = ts.offsets[:-1] + ts.n_support
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ts.offsets[1:])])
    y_query = np.asarray(ts.y[rows], dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(ts.n_query)[:-1]])
    losses = np.empty((len(steps), ts.n_tasks))
    accs = None if model.loss == "mse" else np.empty((len(steps), ts.n_tasks))
    for j, s in enumerate(steps):
        _, pred = adapt_batch(model, theta, ts, steps=s, lr=lr, head_only=head_only,
                              n_threads=n_threads)
        with np.errstate(over="ignore", invalid="ignore"):   # a diverged task scores inf
            row_loss, correct = _row_losses(model.loss, pred, y_query)
            losses[j] = np.add.reduceat(row_loss, bounds) / ts.n_query
        losses[j][~np.isfinite(losses[j])] = np.inf
        if accs is not None:
            accs[j] = np.add.reduceat(correct.astype(np.float64), bounds) / ts.n_query
    if name is None:
        name = type(learner).__name__ if learner is not None else "theta"
    return EvalReport(name=name, steps=steps, losses=losses, accuracies=accs, lr=lr_shown)
