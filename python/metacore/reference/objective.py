"""The weighted multi-task objective in plain NumPy, one task at a time.

    f(θ) = Σ_i α_i f_i(θ) + (λ/2) ‖θ‖²

f_i is the mean row loss of task i over its chosen rows: ``rows="all"`` (offsets[i]:offsets[i+1]),
``"support"`` (the first n_support[i] of them) or ``"query"`` (the rest). α defaults to 1/T each;
λ = ``l2`` applies to all of θ. With per-task heads task i runs head ``ts.task_ids[i]``.

``ts`` is anything with ``X`` (N, d), ``y`` (N,) or (N, k), ``offsets`` (T+1,), ``n_support`` (T,),
``task_ids`` (T,) and ``n_tasks``. Results are float64 whatever the input dtype.
"""

from __future__ import annotations

import numpy as np

from .. import _validation
from .net import loss_and_grad, loss_hvp, row_losses, predict, weighted_loss_and_grad

__all__ = ["objective_value", "objective_grad", "objective_value_and_grad",
           "objective_value_and_grad_vectorized", "objective_hvp", "task_losses", "task_grads"]

ROWS = ("all", "support", "query")


# --- which rows, which head, which weights ------------------------------------------------------
def _row_bounds(ts, rows):
    """(lo, hi) (T,) int64: task i's chosen rows are lo[i]:hi[i]. Empty choices are an error."""
    rows = _validation.choice("rows", rows, ROWS)
    offsets = np.asarray(ts.offsets, dtype=np.int64)
    n_support = np.asarray(ts.n_support, dtype=np.int64)
    start, end = offsets[:-1], offsets[1:]
    lo = {"all": start, "support": start, "query": start + n_support}[rows]
    hi = {"all": end, "support": start + n_support, "query": end}[rows]
    empty = np.flatnonzero(hi <= lo)
    if empty.size:
        raise ValueError(f"task {int(empty[0])} has no {rows} rows to use (rows={rows!r})")
    return lo, hi


def _head(model, ts, i):
    """The head task i runs: ts.task_ids[i] with per-task heads, else the single output layer."""
    if not model.task_heads:
        return 0
    head = int(np.asarray(ts.task_ids)[i])
    if not 0 <= head < model.task_heads:
        raise ValueError(f"ts.task_ids[{i}] must be in 0..{model.task_heads - 1} "
                         f"(the model's task heads), got {head}")
    return head


def _task_weights(ts, weights):
    """α (T,): 1/T each by default, else the given finite weights."""
    T = int(ts.n_tasks)
    if weights is None:
        return np.full(T, 1.0 / T)
    alpha = _validation.float_array("weights", weights, ndim=1, dtype=np.float64)
    if alpha.shape[0] != T:
        raise ValueError(f"weights must have {T} entries (one per task), got {alpha.shape[0]}")
    return alpha


def _tasks(model, ts, rows):
    """Yield (X_i, y_i, head) for every task over its chosen rows."""
    lo, hi = _row_bounds(ts, rows)
    for i in range(int(ts.n_tasks)):
        yield ts.X[lo[i]:hi[i]], ts.y[lo[i]:hi[i]], _head(model, ts, i)


def _theta(model, theta):
    return _validation.theta("theta", theta, model.n_params, dtype=np.float64)


def _l2(l2):
    return _validation.real("l2", l2, minimum=0.0)


# --- per-task pieces ----------------------------------------------------------------------------
def task_losses(model, ts, theta, *, rows="all"):
    """f_i(θ) for every task: (T,), unweighted, without the L2 term."""
    theta = _theta(model, theta)
    return np.array([np.mean(row_losses(model, predict(model, theta, X, task=h), y))
                     for X, y, h in _tasks(model, ts, rows)], dtype=np.float64)


def task_grads(model, ts, theta, *, rows="all"):
    """∇f_i(θ) for every task: (T, P), unweighted, without the L2 term (row i is zero outside
    the layers task i uses)."""
    theta = _theta(model, theta)
    return np.stack([loss_and_grad(model, theta, X, y, task=h)[1]
                     for X, y, h in _tasks(model, ts, rows)])


# --- the objective ------------------------------------------------------------------------------
def objective_value(model, ts, theta, *, weights=None, l2=0.0, rows="all"):
    """f(θ) = Σ_i α_i f_i(θ) + (λ/2) ‖θ‖²."""
    theta = _theta(model, theta)
    alpha, lam = _task_weights(ts, weights), _l2(l2)
    return float(alpha @ task_losses(model, ts, theta, rows=rows) + 0.5 * lam * theta @ theta)


def objective_value_and_grad(model, ts, theta, *, weights=None, l2=0.0, rows="all"):
    """(f(θ), ∇f(θ)) with ∇f = Σ_i α_i ∇f_i(θ) + λ θ: the plain loop over tasks."""
    theta = _theta(model, theta)
    alpha, lam = _task_weights(ts, weights), _l2(l2)
    value, grad = 0.5 * lam * theta @ theta, lam * theta
    for a, (X, y, h) in zip(alpha, _tasks(model, ts, rows)):
        f_i, g_i = loss_and_grad(model, theta, X, y, task=h)
        value += a * f_i
        grad = grad + a * g_i
    return float(value), grad


def objective_grad(model, ts, theta, *, weights=None, l2=0.0, rows="all"):
    """∇f(θ) = Σ_i α_i ∇f_i(θ) + λ θ: (P,)."""
    return objective_value_and_grad(model, ts, theta, weights=weights, l2=l2, rows=rows)[1]


def objective_hvp(model, ts, theta, v, *, weights=None, l2=0.0, rows="all"):
    """∇²f(θ) v = Σ_i α_i ∇²f_i(θ) v + λ v: (P,), exact (forward-over-reverse per task)."""
    theta = _theta(model, theta)
    v = _validation.theta("v", v, model.n_params, dtype=np.float64)
    alpha, lam = _task_weights(ts, weights), _l2(l2)
    out = lam * v
    for a, (X, y, h) in zip(alpha, _tasks(model, ts, rows)):
        out = out + a * loss_hvp(model, theta, X, y, v, task=h)
    return out


def objective_value_and_grad_vectorized(model, ts, theta, *, weights=None, l2=0.0, rows="all"):
    """The same (f(θ), ∇f(θ)) in one NumPy pass over all chosen rows: the vectorised baseline.

    Row r of task i carries weight α_i / n_i, so Σ_r w_r ℓ_r = Σ_i α_i f_i. This needs one
    output layer for every row, so models with per-task heads fall back to the task loop; so do
    batch-normalised nets, whose statistics are per task (each task's rows one forward pass).
    """
    if model.task_heads or model.norm == "batch":
        return objective_value_and_grad(model, ts, theta, weights=weights, l2=l2, rows=rows)
    theta = _theta(model, theta)
    alpha, lam = _task_weights(ts, weights), _l2(l2)
    lo, hi = _row_bounds(ts, rows)
    counts = hi - lo
    # chosen row indices, task by task: lo[i] + 0..counts[i]−1 laid end to end
    block_start = np.cumsum(counts) - counts
    idx = np.repeat(lo - block_start, counts) + np.arange(counts.sum())
    row_weights = np.repeat(alpha / counts, counts)
    X = np.asarray(ts.X)[idx]
    y = np.asarray(ts.y)[idx]
    value, grad = weighted_loss_and_grad(model, theta, X, y, row_weights)
    return float(value + 0.5 * lam * theta @ theta), grad + lam * theta
