"""The table of metacore's public calls, shared by the reliability tests (threads, processes,
memory) and ``benchmarks/memory_soak.py``.

``PUBLIC_CALLS`` maps a name to ``call(problem) -> result``; ``LONG_CALLS`` names those that run in
the compiled core with the GIL released. A new public operation (``mc.fit``, ``mc.adapt_predict``,
``learner.meta_value_and_grad``, ...) gets one line here and is then covered by every test that
walks the table. ``Problem`` holds small ready inputs; ``problem(...)`` builds one deterministically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

import metacore as mc


@dataclass
class Problem:
    model: mc.MLP
    ts: mc.TaskSet
    obj: mc.Objective
    theta: np.ndarray
    v: np.ndarray
    X: np.ndarray
    Xs: list
    ys: list
    groups: np.ndarray


def problem(*, loss="cross_entropy", dtype=np.float64, n_tasks=6, rows=(3, 9), n_features=4,
            hidden=(8,), l2=1e-3, n_threads=None, seed=0) -> Problem:
    """A small ragged task set with a fitting model, objective, θ, a direction v and query rows X."""
    rng = np.random.default_rng(seed)
    k = {"mse": 2, "logistic": 1, "cross_entropy": 3}[loss]
    model = mc.MLP([n_features, *hidden, k], activation="tanh", loss=loss)
    sizes = rng.integers(rows[0], rows[1] + 1, size=n_tasks)
    Xs = [rng.normal(size=(n, n_features)) for n in sizes]
    if loss == "mse":
        ys = [rng.normal(size=(n, k)) for n in sizes]
    else:
        ys = [rng.integers(0, max(k, 2), size=n).astype(np.float64) for n in sizes]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=rows[0] // 2 + 1, dtype=dtype)
    theta = (model.init(seed=seed) + 0.3 * rng.normal(size=model.n_params)).astype(dtype)
    v = rng.normal(size=model.n_params).astype(dtype)
    obj = mc.Objective(model, ts, weights=rng.uniform(0.5, 2.0, size=n_tasks), l2=l2,
                       n_threads=n_threads)
    groups = np.repeat(np.arange(n_tasks), sizes)
    return Problem(model, ts, obj, theta, v, rng.normal(size=(17, n_features)).astype(dtype),
                   Xs, ys, groups)


# name -> call(problem). Results are NumPy arrays, floats, tuples of them or metacore objects.
PUBLIC_CALLS = {
    # tasks
    "TaskSet": lambda p: mc.TaskSet(p.ts.X, p.ts.y, p.ts.offsets, p.ts.n_support),
    "TaskSet.from_arrays": lambda p: mc.TaskSet.from_arrays(p.Xs, p.ys, n_support=2),
    "TaskSet.from_groups": lambda p: mc.TaskSet.from_groups(p.ts.X, p.ts.y, p.groups),
    "TaskSet.subset": lambda p: p.ts.subset([2, 0, -1]),
    "TaskSet.split_tasks": lambda p: p.ts.split_tasks(test_fraction=0.3, seed=1),
    "TaskSet.with_support": lambda p: p.ts.with_support(1),
    # models
    "MLP": lambda p: mc.MLP([4, 8, 3], activation="relu", loss="cross_entropy"),
    "MLP.init": lambda p: p.model.init(seed=1, dtype=p.theta.dtype),
    "MLP.predict": lambda p: p.model.predict(p.theta, p.X),
    # the objective
    "Objective": lambda p: mc.Objective(p.model, p.ts, l2=1e-3),
    "Objective.value": lambda p: p.obj.value(p.theta),
    "Objective.grad": lambda p: p.obj.grad(p.theta),
    "Objective.value_and_grad": lambda p: p.obj.value_and_grad(p.theta),
    "Objective.task_losses": lambda p: p.obj.task_losses(p.theta),
    "Objective.task_grads": lambda p: p.obj.task_grads(p.theta),
    "Objective.task_losses_and_grads": lambda p: p.obj.task_losses_and_grads(p.theta),
    "Objective.hvp": lambda p: p.obj.hvp(p.theta, p.v),
    "Objective(...).value_and_grad": lambda p: mc.Objective(p.model, p.ts).value_and_grad(p.theta),
    # training and meta-learning
    "fit": lambda p: mc.fit(p.obj, p.theta, steps=3, progress=False).theta,
    "adapt": lambda p: mc.adapt(p.model, p.theta, *p.ts.support(0), steps=2, lr=0.01),
    "adapt_predict": lambda p: mc.adapt_predict(p.model, p.theta, *p.ts.support(0),
                                                p.ts.query(0)[0], steps=2, lr=0.01),
    "adapt_batch": lambda p: mc.adapt_batch(p.model, p.theta, p.ts, steps=2, lr=0.01),
    "MAML.meta_value_and_grad": lambda p: mc.MAML(p.model).meta_value_and_grad(p.theta, p.ts),
    "FOMAML.meta_value_and_grad": lambda p: mc.MAML(p.model, first_order=True)
    .meta_value_and_grad(p.theta, p.ts),
    "ANIL.meta_value_and_grad": lambda p: mc.ANIL(p.model).meta_value_and_grad(p.theta, p.ts),
    "MetaSGD.meta_value_and_grad": lambda p: (lambda l: l.meta_value_and_grad(
        l.init(p.theta), p.ts))(mc.MetaSGD(p.model)),
    "fit(MetaObjective)": lambda p: mc.fit(
        mc.MetaObjective(mc.MAML(p.model), p.ts, meta_batch=p.ts.n_tasks // 2), p.theta, steps=3,
        progress=False).theta,
}

# The calls that run in the compiled core with the GIL released (and may use OpenMP threads).
LONG_CALLS = ("MLP.predict", "Objective.value", "Objective.grad", "Objective.value_and_grad",
              "Objective.task_losses", "Objective.task_grads", "Objective.task_losses_and_grads",
              "Objective.hvp", "fit", "adapt_batch", "MAML.meta_value_and_grad",
              "FOMAML.meta_value_and_grad", "ANIL.meta_value_and_grad",
              "MetaSGD.meta_value_and_grad", "fit(MetaObjective)")


def flatten(result) -> list:
    """A call's result as a list of NumPy arrays (TaskSets and models as their defining data), for
    exact comparison of two runs."""
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in flatten(r)]
    if isinstance(result, mc.TaskSet):
        return [result.X, result.y, result.offsets, result.n_support, result.task_ids]
    if isinstance(result, mc.MLP):
        return [np.array(result.layer_sizes), np.array(result.n_params)]
    if isinstance(result, mc.Objective):
        return [result.weights, np.array(result.l2)]
    return [np.asarray(result)]


def same(a, b) -> bool:
    """Bit-identical results (NaNs included)."""
    fa, fb = flatten(a), flatten(b)
    return len(fa) == len(fb) and all(
        x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
        for x, y in zip(fa, fb))


# Error paths: a refused call must not leak either (the binding-level ones throw C++ exceptions).
def _refused(call):
    def run(p):
        try:
            call(p)
        except (ValueError, TypeError):
            return None
        raise AssertionError("the bad call was accepted")
    return run


ERROR_CALLS = {
    "Objective.value(bad theta)": _refused(lambda p: p.obj.value(p.theta[:-1])),
    "MLP.predict(bad X)": _refused(lambda p: p.model.predict(p.theta, p.X[:, :-1])),
    "_core.Net.predict(bad dtype)": _refused(
        lambda p: p.model.core_net().predict(p.theta.astype(np.float32), p.X, 0, None)),
    "TaskSet(bad offsets)": _refused(lambda p: mc.TaskSet(p.ts.X, p.ts.y, [0, 1])),
}


# --- resident memory ------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident set size of this process (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def soak(name, p, n_calls, *, warmup=None):
    """Call ``name`` n_calls times on problem p after a warm-up; returns
    (rss_before, rss_after, seconds) around the measured calls."""
    call = {**PUBLIC_CALLS, **ERROR_CALLS}[name]
    for _ in range(warmup if warmup is not None else max(200, n_calls // 10)):
        call(p)
    before = rss_bytes()
    t0 = time.perf_counter()
    for _ in range(n_calls):
        call(p)
    return before, rss_bytes(), time.perf_counter() - t0
