"""The latency path: adapt θ to a new task by a few SGD steps on its support rows, then predict.

    φ_0 = θ,   φ_{j+1} = φ_j − r ⊙ ∇L_s(φ_j)   (j = 0..steps−1),

with ``lr`` a scalar r (MAML, Reptile), one rate per parameter (Meta-SGD's learned rates) or one
row of per-parameter rates per step (m, P) (MAML++'s per-step rates; step j uses row
min(j, m − 1)), and
``head_only=True`` adapting the output layer only (ANIL). One call into the core, with the GIL
released and no allocation but the outputs (each thread keeps its own scratch): safe and fast to
call from many Python threads at once.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core, _validation
from .models import MLP
from .data.taskset import TaskSet

__all__ = ["adapt", "adapt_predict", "adapt_batch"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _model(model):
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a metacore model (MLP), got {type(model).__name__}")
    if model.task_heads is not None:
        raise ValueError(f"model: adapting needs one shared output layer; per-task heads "
                         f"(task_heads={model.task_heads}) are not supported")
    return model.core_net()


def _theta(model, theta):
    if (type(theta) is np.ndarray and theta.dtype in _FLOATS
            and (f := theta.flags).c_contiguous and f.aligned):
        return theta  # shape and finiteness are checked in the core binding
    return _validation.theta("theta", theta, model.n_params)


def _rows(name, X, dtype):
    """X as a C-contiguous 2-D array of θ's dtype; a copy only when the input is not one."""
    if (type(X) is np.ndarray and X.dtype == dtype and X.ndim == 2
            and (f := X.flags).c_contiguous and f.aligned):
        return X
    return _validation.float_array(name, X, ndim=2, dtype=dtype)


def _targets(name, y, dtype):
    if (type(y) is np.ndarray and y.dtype == dtype and (f := y.flags).c_contiguous
            and f.aligned):
        return y
    return _validation.float_array(name, y, ndim=(1, 2), dtype=dtype)


# a rate in this range is a normal, finite number in float32 and float64 alike
_NORMAL_IN_BOTH = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def _rule(model, lr, steps, dtype):
    """(steps, scalar lr, per-parameter rates or None)."""
    if type(steps) is int and 0 <= steps <= _validation.INT64_MAX and type(lr) is float \
            and (lr == 0.0 or _NORMAL_IN_BOTH[0] <= lr <= _NORMAL_IN_BOTH[1]):
        return steps, lr, None  # the common call: plain Python numbers already in range
    steps = _validation.integer("steps", steps, minimum=0)
    lr = _validation.scalar(lr)     # a 0-d array is a scalar rate (it was refused as 'must be 1-D')
    if isinstance(lr, (bool, np.bool_)):
        raise TypeError(f"lr must be a real number or an array of rates, got "
                        f"{type(lr).__name__} {lr!r}")
    if isinstance(lr, numbers.Real) and not isinstance(lr, (bool, np.bool_)):
        lr = _validation.real("lr", lr, minimum=0.0)
        if lr != 0.0:       # 1e-50 is 0 in float32 (no adaptation), 1e39 inf: named instead
            _validation.step_size("lr", lr, dtype)
        return steps, lr, None
    arr = np.asarray(lr)
    rates = _validation.rates("lr", lr, dtype, ndim=2 if arr.ndim == 2 else 1)
    if rates.shape[-1] != model.n_params or rates.shape[0] == 0:
        raise ValueError(f"lr must be a scalar or one rate per parameter ({model.n_params},) "
                         f"or one row of rates per step (m, {model.n_params}), got shape "
                         f"{rates.shape}")
    return steps, 0.0, rates


def adapt(model, theta, X_support, y_support, *, steps=5, lr=0.01, head_only=False):
    """φ after ``steps`` SGD steps from θ on (X_support, y_support): (P,), θ's dtype.

    ``lr``: a scalar >= 0 (a plain SGD step; a 0-d array counts as one), an array (P,) of
    per-parameter rates (Meta-SGD), or (m, P) rates per step (MAML++: step j uses row
    min(j, m − 1)). Per-parameter rates may be negative: they are the rates Meta-SGD and MAML++
    learn, which the papers leave unconstrained in sign (a negative rate is an ascent step on
    its parameter), and ``mc.evaluate`` and ``metacore predict`` adapt with them here.
    ``head_only``: adapt the output layer only (ANIL).

    Raises ValueError naming ``lr`` for a negative or non-finite scalar, a non-finite entry of
    an array (with its index), a non-zero rate that is zero or subnormal in θ's dtype, or an
    array of another shape; TypeError for boolean rates. ``steps`` must be an integer >= 0.
    """
    net = _model(model)
    theta = _theta(model, theta)
    X = _rows("X_support", X_support, theta.dtype)
    y = _targets("y_support", y_support, theta.dtype)
    steps, lr, rates = _rule(model, lr, steps, theta.dtype)
    return _core.adapt(net, theta, X, y, steps, lr, rates, bool(head_only))


def adapt_predict(model, theta, X_support, y_support, X_query, *, steps=5, lr=0.01,
                  head_only=False):
    """The outputs on X_query of the net adapted as in :func:`adapt` (``lr`` and the errors
    raised as there): (n,) for one output, else (n, k) (raw values for mse, logits
    otherwise)."""
    net = _model(model)
    theta = _theta(model, theta)
    X = _rows("X_support", X_support, theta.dtype)
    y = _targets("y_support", y_support, theta.dtype)
    Xq = _rows("X_query", X_query, theta.dtype)
    steps, lr, rates = _rule(model, lr, steps, theta.dtype)
    out = _core.adapt_predict(net, theta, X, y, Xq, steps, lr, rates, bool(head_only))
    return out[:, 0] if out.shape[1] == 1 else out


def adapt_batch(model, theta, tasks, *, steps=5, lr=0.01, head_only=False, n_threads=None):
    """Adapt to every task of a TaskSet in parallel (each on its support rows); ``lr`` and the
    errors raised as in :func:`adapt`.

    Returns ``(thetas, predictions)``: thetas (T, P), the adapted θ of each task, and predictions
    on every task's query rows, task after task ((n_query,) for one output, else (n_query, k)).
    """
    return _batch(model, theta, tasks, steps, lr, head_only, n_threads, want_thetas=True)


def query_predictions(model, theta, tasks, *, steps=5, lr=0.01, head_only=False,
                      n_threads=None):
    """The predictions of :func:`adapt_batch` alone, without allocating the (T, P) adapted θs:
    what evaluation needs (600 episodes of a 242k-parameter net would hold 580 MB of them)."""
    return _batch(model, theta, tasks, steps, lr, head_only, n_threads, want_thetas=False)[1]


def _batch(model, theta, tasks, steps, lr, head_only, n_threads, want_thetas):
    net = _model(model)
    if not isinstance(tasks, TaskSet):
        raise TypeError(f"tasks must be a TaskSet, got {type(tasks).__name__}")
    theta = _validation.theta("theta", theta, model.n_params)
    if tasks.n_features != model.n_features:
        raise ValueError(f"tasks have {tasks.n_features} features but the model expects "
                         f"{model.n_features}")
    tasks.check_labels(model.loss, model.n_outputs)
    steps, lr, rates = _rule(model, lr, steps, theta.dtype)
    ts = tasks.astype(theta.dtype)
    phis, preds = _core.adapt_batch(net, theta, ts.X, ts.y, ts.offsets, ts.n_support, steps, lr,
                                    rates, bool(head_only), bool(want_thetas), True,
                                    _validation.n_threads(n_threads))
    return phis, (preds[:, 0] if preds.shape[1] == 1 else preds)
