"""Shared fixtures for the metacore benchmark suite (pytest-benchmark).

The suite lives outside the default test run (pyproject's ``testpaths`` is ``tests/``)::

    PYTHONPATH=python python -m pytest benchmarks/ --benchmark-only

Workloads (data built once per session, on first use, from fixed seeds):

- ``a``: weighted logistic regression, float64, 256 tasks x 200 rows x 64 features, L2 1e-3,
  random non-uniform task weights;
- ``b``: the same with 4,096 tasks (X is 419 MB, far larger than the cache);
- ``c``: an MLP 64-64-10 (relu) with a softmax / cross-entropy head, 256 tasks x 200 rows,
  per-task losses and per-task gradients.

Thread counts: the ``threads`` fixture is parametrised over ``THREAD_COUNTS`` with ids
``1thread`` / ``2threads`` (so ``-k "not 2threads"`` keeps the one-thread runs, e.g. under
``taskset -c 0``).

JAX fixes the size of its CPU thread pool when it is first imported, so one process can only
measure JAX at one thread count: ``--jax-threads=1`` (the default) sets
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` before JAX is
imported; ``--jax-threads=2`` leaves XLA's default pool (one thread per CPU the process may run
on). The JAX benchmark whose ``threads`` differs from ``--jax-threads`` is skipped with that reason;
``benchmarks/report.py`` runs a second, JAX-only pass for the other thread count.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

THREAD_COUNTS = (1, 2)
THREAD_IDS = {1: "1thread", 2: "2threads"}

L2 = 1e-3
ROWS_PER_TASK = 200
N_FEATURES = 64
MLP_SIZES = (64, 64, 10)
N_CLASSES = MLP_SIZES[-1]

_JAX_SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


# --- command-line options ------------------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("metacore benchmarks")
    group.addoption("--jax-threads", type=int, choices=THREAD_COUNTS, default=1,
                    help="thread count of JAX's CPU backend in this process (fixed at import; "
                         "default 1). The JAX benchmark for the other count is skipped.")
    group.addoption("--bench-budget", type=float, default=1.0,
                    help="seconds of timed rounds per benchmark (at least --bench-min-rounds "
                         "rounds, at most 200); default 1.0")
    group.addoption("--bench-min-rounds", type=int, default=3,
                    help="fewest timed rounds per benchmark; default 3")


def pytest_configure(config):
    jax_threads = config.getoption("--jax-threads", default=1)
    if jax_threads == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " " + _JAX_SINGLE_THREAD_FLAGS).strip()


# --- data sets -----------------------------------------------------------------------------------
@dataclass
class Workload:
    """One benchmark workload: model, tasks, θ, task weights, L2 and the reference result."""

    name: str
    description: str
    model: object
    ts: object
    theta: np.ndarray
    weights: np.ndarray | None
    l2: float
    kind: str  # "objective" (value and gradient) or "task_grads" (per-task losses and gradients)
    _reference: tuple | None = field(default=None, repr=False)
    _padded: tuple | None = field(default=None, repr=False)

    @property
    def n_tasks(self) -> int:
        return int(self.ts.n_tasks)

    @property
    def x_bytes(self) -> int:
        return int(self.ts.X.nbytes)

    @property
    def reference(self):
        """The reference result, computed once: (value, grad) for "objective" workloads with the
        per-task NumPy loop ``mc.reference.objective_value_and_grad``; (losses (T,), grads (T, P))
        for "task_grads" with ``mc.reference.task_losses`` / ``mc.reference.task_grads``."""
        if self._reference is None:
            import metacore as mc
            if self.kind == "objective":
                self._reference = mc.reference.objective_value_and_grad(
                    self.model, self.ts, self.theta, weights=self.weights, l2=self.l2)
            else:
                self._reference = (mc.reference.task_losses(self.model, self.ts, self.theta),
                                   mc.reference.task_grads(self.model, self.ts, self.theta))
        return self._reference

    @property
    def row_weights(self) -> np.ndarray:
        """α_i / n_i for every row: Σ_r w_r ℓ_r = Σ_i α_i f_i (the vectorised formulation)."""
        sizes = np.diff(self.ts.offsets)
        alpha = (np.full(self.n_tasks, 1.0 / self.n_tasks) if self.weights is None
                 else self.weights)
        return np.repeat(alpha / sizes, sizes)

    def padded(self):
        """Tasks stacked into (T, m, d) / (T, m) arrays padded to the largest task m, with a
        (T, m) 0/1 row mask: what vmap-style contenders (JAX, torch.func, batched NumPy) need.
        Every task here has the same size, so nothing is actually padded."""
        if self._padded is None:
            offsets = np.asarray(self.ts.offsets)
            sizes = np.diff(offsets)
            T, m, d = self.n_tasks, int(sizes.max()), self.ts.n_features
            X = np.zeros((T, m, d))
            y = np.zeros((T, m))
            mask = np.zeros((T, m))
            for i in range(T):
                n = sizes[i]
                X[i, :n] = self.ts.X[offsets[i]:offsets[i + 1]]
                y[i, :n] = self.ts.y[offsets[i]:offsets[i + 1]]
                mask[i, :n] = 1.0
            self._padded = (X, y, mask)
        return self._padded

    def info(self) -> dict:
        return {"workload": self.name, "description": self.description,
                "n_tasks": self.n_tasks, "rows_per_task": ROWS_PER_TASK,
                "n_features": int(self.ts.n_features), "n_params": int(self.model.n_params),
                "x_bytes": self.x_bytes, "dtype": str(self.ts.X.dtype)}


def _logistic_workload(name, n_tasks, seed):
    import metacore as mc
    rng = np.random.default_rng(seed)
    N, d = n_tasks * ROWS_PER_TASK, N_FEATURES
    X = np.empty((N, d))
    chunk = 1 << 20  # fill in slices: no float64 temporary the size of X
    for lo in range(0, N, chunk // d):
        hi = min(N, lo + chunk // d)
        rng.standard_normal(out=X[lo:hi])
    # labels from a planted model per task (shared direction + task-specific shift) plus noise
    w_true = rng.standard_normal(d) / np.sqrt(d)
    shifts = np.repeat(0.5 * rng.standard_normal(n_tasks), ROWS_PER_TASK)
    logits = X @ w_true + shifts + 0.5 * rng.standard_normal(N)
    y = (logits > 0).astype(np.float64)
    offsets = np.arange(n_tasks + 1, dtype=np.int64) * ROWS_PER_TASK
    ts = mc.TaskSet(X, y, offsets)
    del X
    weights = rng.uniform(0.1, 1.0, n_tasks)  # random, non-uniform
    weights /= weights.sum()
    model = mc.Logistic(d)
    theta = 0.1 * rng.standard_normal(model.n_params)
    desc = (f"weighted logistic, f64, {n_tasks} tasks x {ROWS_PER_TASK} rows x {d} features, "
            f"L2 {L2:g}")
    return Workload(name, desc, model, ts, theta, weights, L2, "objective")


def _mlp_workload(name, n_tasks, seed):
    import metacore as mc
    rng = np.random.default_rng(seed)
    N, d = n_tasks * ROWS_PER_TASK, MLP_SIZES[0]
    X = rng.standard_normal((N, d))
    # labels from a random teacher net so the loss has structure
    W_t = rng.standard_normal((N_CLASSES, d))
    y = np.argmax(X @ W_t.T + rng.standard_normal((N, N_CLASSES)), axis=1).astype(np.float64)
    offsets = np.arange(n_tasks + 1, dtype=np.int64) * ROWS_PER_TASK
    ts = mc.TaskSet(X, y, offsets)
    model = mc.MLP(list(MLP_SIZES), activation="relu", loss="cross_entropy")
    theta = model.init(seed=seed, dtype=np.float64)
    theta += 0.01 * rng.standard_normal(model.n_params)  # non-zero biases too
    desc = (f"MLP {'-'.join(map(str, MLP_SIZES))} relu softmax, f64, {n_tasks} tasks x "
            f"{ROWS_PER_TASK} rows: per-task losses + per-task grads")
    return Workload(name, desc, model, ts, theta, None, 0.0, "task_grads")


@pytest.fixture(scope="session")
def data_a():
    return _logistic_workload("a", 256, seed=1)


@pytest.fixture(scope="session")
def data_b():
    return _logistic_workload("b", 4096, seed=2)


@pytest.fixture(scope="session")
def data_c():
    return _mlp_workload("c", 256, seed=3)


@pytest.fixture(params=["a", "b"])
def logistic(request):
    """Workloads (a) and (b): the weighted logistic objective's value and gradient."""
    return request.getfixturevalue(f"data_{request.param}")


@pytest.fixture(params=THREAD_COUNTS, ids=[THREAD_IDS[k] for k in THREAD_COUNTS])
def threads(request):
    """The thread count a contender runs with (the core's n_threads, torch.set_num_threads,
    JAX's XLA pool)."""
    return request.param


# --- optional competitors ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def jax_mod(pytestconfig):
    """JAX on CPU in float64, or skip when not installed."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.fixture
def jax_threads(pytestconfig, jax_mod, threads):
    """The JAX thread count for this benchmark: skip when this process's XLA pool differs."""
    configured = pytestconfig.getoption("--jax-threads")
    if threads != configured:
        pytest.skip(f"JAX's CPU thread pool is fixed at import; this process runs JAX with "
                    f"{configured} thread(s): rerun with --jax-threads={threads}")
    return threads


@pytest.fixture
def torch_threads(threads):
    """PyTorch (CPU) with torch.set_num_threads(threads), restored afterwards; skip when absent."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield torch
    torch.set_num_threads(before)


@pytest.fixture
def blas_one_thread():
    """Limit NumPy's BLAS to one thread for the NumPy contenders when threadpoolctl is installed
    (they are recorded as one-thread runs); yields the BLAS thread setting as text."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "default (threadpoolctl not installed)"
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield "1"


# --- timing --------------------------------------------------------------------------------------
def machine_info() -> dict:
    return {"affinity_cpus": len(os.sched_getaffinity(0)), "os_cpu_count": os.cpu_count()}


@pytest.fixture
def seconds(benchmark):
    """``seconds(stat="mean")``: that statistic ("mean", "min", ...) of the timed rounds in
    seconds; NaN under ``--benchmark-disable``, where each benchmark runs its function once,
    untimed (the smoke run of ``tests/test_benchmarks_run.py``)."""
    def stat(name="mean"):
        if benchmark.disabled:
            return float("nan")
        return float(getattr(benchmark.stats.stats, name))
    return stat


@pytest.fixture
def timed(benchmark, pytestconfig):
    """``timed(fn, **extra)``: time ``fn`` with pytest-benchmark after one warm-up call, for about
    --bench-budget seconds (at least --bench-min-rounds rounds, at most 200); ``extra`` and the
    machine facts go into ``benchmark.extra_info``."""
    budget = pytestconfig.getoption("--bench-budget")
    min_rounds = pytestconfig.getoption("--bench-min-rounds")

    def run(fn, **extra):
        t0 = time.perf_counter()
        fn()
        dt = max(time.perf_counter() - t0, 1e-6)
        rounds = int(min(200, max(min_rounds, round(budget / dt))))
        benchmark.extra_info.update(machine_info())
        benchmark.extra_info.update(extra)
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return run
