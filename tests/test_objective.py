"""mc.Objective, computed by the compiled core: what it promises, checked on concrete values.

1. It agrees with the NumPy oracle ``metacore.reference`` on random ragged task sets of many shapes.
2. Its gradients, per-task gradients and Hessian-vector products agree with central finite
   differences of its own value / gradient (float64), independently of the reference.
3. Its results are bit-identical for any thread count and any number of repeated calls.
4. Bad arguments raise ValueError / TypeError naming the argument, never crash the interpreter.
5. Inputs are never modified; read-only and non-contiguous inputs work; results are the caller's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import metacore as mc
from metacore import _core
from metacore import reference as ref
from numerics import central_diff, random_targets, rel_err

# Relative L2 error allowed between the core and the float64 reference, per working dtype.
# The reference is always fed the very same (float32 or float64) inputs as the core.
RTOL = {np.float64: 1e-12, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]


# --- building random problems ---------------------------------------------------------------------
def random_taskset(model, sizes, n_support=None, *, dtype=np.float64, seed=0):
    """Ragged tasks of the given sizes: X ~ N(0, 1), targets fitting the model's loss head."""
    rng = np.random.default_rng(seed)
    Xs = [rng.normal(size=(n, model.n_features)) for n in sizes]
    ys = [random_targets(rng, model, n) for n in sizes]
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_support, dtype=dtype)


def random_theta(model, *, dtype=np.float64, seed=0, scale=0.3):
    """The model's init moved off its zero biases, so that every parameter matters."""
    rng = np.random.default_rng(seed + 1000)
    return (model.init(seed=seed) + scale * rng.normal(size=model.n_params)).astype(dtype)


def random_vector(n, *, dtype=np.float64, seed=0):
    return np.random.default_rng(seed + 2000).normal(size=n).astype(dtype)


def plan(obj, dtype):
    """How the core split the work (private, for checking that a test exercises what it says)."""
    return obj.core_handle(np.dtype(dtype)).plan_info()


# --- 1. the core agrees with the reference --------------------------------------------------------
# (id, layer sizes, activation, loss, task_heads, task sizes, n_support, subset of tasks, rows)
CASES = [
    ("one-task-linear-mse", [3, 1], "relu", "mse", None, [9], 4, None, "all"),
    ("one-task-of-one-row", [4, 5, 2], "tanh", "mse", None, [1], None, None, "all"),
    ("one-row-tasks-ragged", [3, 6, 1], "tanh", "mse", None, [1, 7, 1, 4], [1, 3, 1, 2], None,
     "support"),
    ("d1-tanh-mse-query", [1, 8, 1], "tanh", "mse", None, [5, 12, 3], 2, None, "query"),
    ("d1-relu-h2-mse", [1, 6, 6, 1], "relu", "mse", None, [4, 9], None, None, "all"),
    ("d1000-softmax", [1000, 4], "relu", "cross_entropy", None, [3, 6, 2], [1, 3, 1], None,
     "all"),
    ("d1000-tanh-logistic-query", [1000, 8, 1], "tanh", "logistic", None, [4, 2, 5], 1, None,
     "query"),
    ("mse-3-outputs-relu-h2", [5, 7, 6, 3], "relu", "mse", None, [8, 3, 11], [4, 1, 5], None,
     "all"),
    ("mse-2-outputs-tanh-h3", [3, 5, 4, 4, 2], "tanh", "mse", None, [6, 2, 9], [3, 1, 4], None,
     "query"),
    ("logistic-linear", [6, 1], "relu", "logistic", None, [10, 4, 7, 2], [5, 2, 3, 1], None,
     "support"),
    ("logistic-relu-h1", [6, 9, 1], "relu", "logistic", None, [10, 4, 7], [5, 2, 3], None, "all"),
    ("logistic-tanh-h3", [4, 5, 5, 5, 1], "tanh", "logistic", None, [7, 3, 8], [2, 1, 6], None,
     "query"),
    ("ce-2-classes-linear", [5, 2], "tanh", "cross_entropy", None, [6, 9], [3, 4], None, "all"),
    ("ce-3-classes-relu-h1", [4, 7, 3], "relu", "cross_entropy", None, [5, 1, 8], [2, 1, 3], None,
     "support"),
    ("ce-5-classes-tanh-h2", [5, 8, 6, 5], "tanh", "cross_entropy", None, [12, 4, 6], [6, 2, 3],
     None, "all"),
    ("ce-10-classes-relu-h3", [7, 6, 6, 6, 10], "relu", "cross_entropy", None, [15, 3, 9],
     [5, 1, 4], None, "query"),
    ("heads-mse-more-heads-than-tasks", [3, 5, 2], "relu", "mse", 4, [4, 6, 3], [2, 3, 1], None,
     "all"),
    ("heads-subset-ce-repeated-ids", [4, 6, 3], "tanh", "cross_entropy", 6,
     [5, 3, 7, 4, 6, 2], [2, 1, 3, 2, 3, 1], [5, 2, 2, 0], "query"),
    ("heads-subset-logistic-linear", [4, 1], "relu", "logistic", 5, [6, 3, 5, 4, 7],
     [3, 1, 2, 2, 3], [4, 1], "support"),
    ("heads-subset-tanh-h2-mse", [3, 4, 4, 1], "tanh", "mse", 7, [3, 5, 2, 6, 4, 3, 8],
     [1, 2, 1, 3, 2, 1, 4], [6, 3, 1], "all"),
]
CASE_IDS = [c[0] for c in CASES]


def build_case(case, dtype, seed=0):
    _, sizes_l, act, loss, heads, sizes, n_support, subset, rows = case
    model = mc.MLP(sizes_l, activation=act, loss=loss, task_heads=heads)
    ts = random_taskset(model, sizes, n_support, dtype=dtype, seed=seed)
    if subset is not None:
        ts = ts.subset(subset)
    return model, ts, rows


def assert_matches_reference(model, ts, rows, dtype, weights, l2, seed=0):
    """Every quantity of the core against the reference, to the dtype's relative tolerance."""
    obj = mc.Objective(model, ts, weights=weights, l2=l2, rows=rows)
    theta = random_theta(model, dtype=dtype, seed=seed)
    v = random_vector(model.n_params, dtype=dtype, seed=seed)
    tol = RTOL[dtype]
    kw = dict(weights=weights, l2=l2, rows=rows)

    value = obj.value(theta)
    grad = obj.grad(theta)
    vg_value, vg_grad = obj.value_and_grad(theta)
    losses = obj.task_losses(theta)
    grads = obj.task_grads(theta)
    hv = obj.hvp(theta, v)

    # shapes and dtypes: θ's dtype decides
    assert isinstance(value, float) and isinstance(vg_value, float)
    assert grad.shape == (model.n_params,) and grad.dtype == dtype
    assert losses.shape == (ts.n_tasks,) and losses.dtype == dtype
    assert grads.shape == (ts.n_tasks, model.n_params) and grads.dtype == dtype
    assert hv.shape == (model.n_params,) and hv.dtype == dtype

    ref_value, ref_grad = ref.objective_value_and_grad(model, ts, theta, **kw)
    assert rel_err(value, ref.objective_value(model, ts, theta, **kw)) < tol
    assert rel_err(grad, ref_grad) < tol
    assert rel_err(vg_value, ref_value) < tol
    assert rel_err(vg_grad, ref_grad) < tol
    assert rel_err(losses, ref.task_losses(model, ts, theta, rows=rows)) < tol
    assert rel_err(grads, ref.task_grads(model, ts, theta, rows=rows)) < tol
    assert rel_err(hv, ref.objective_hvp(model, ts, theta, v, **kw)) < tol

    # the one-pass entry points give the very same numbers as the separate ones
    assert vg_value == value
    np.testing.assert_array_equal(vg_grad, grad)
    v3, g3, l3 = obj.value_grad_and_task_losses(theta)
    assert v3 == value
    np.testing.assert_array_equal(g3, grad)
    np.testing.assert_array_equal(l3, losses)
    l4, g4 = obj.task_losses_and_grads(theta)
    np.testing.assert_array_equal(l4, losses)
    np.testing.assert_array_equal(g4, grads)
    return obj, theta


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_core_matches_reference(case, dtype):
    # non-uniform weights and l2 > 0 everywhere
    model, ts, rows = build_case(case, dtype)
    weights = np.random.default_rng(7).uniform(0.1, 2.0, size=ts.n_tasks)
    assert_matches_reference(model, ts, rows, dtype, weights, l2=0.05)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("rows", ["all", "support", "query"])
def test_default_weights_are_uniform_and_l2_defaults_to_zero(rows, dtype):
    # f = (1/T) Σ f_i, ∇f = (1/T) Σ ∇f_i and H v = (1/T) Σ H_i v
    model = mc.MLP([4, 6, 3], activation="tanh", loss="cross_entropy")
    ts = random_taskset(model, [6, 3, 8, 5], [2, 1, 4, 3], dtype=dtype, seed=3)
    obj, theta = assert_matches_reference(model, ts, rows, dtype, None, 0.0, seed=3)
    assert obj.l2 == 0.0
    np.testing.assert_array_equal(obj.weights, np.full(4, 0.25))
    losses, grads = obj.task_losses_and_grads(theta)
    tol = RTOL[dtype]
    assert rel_err(obj.value(theta), losses.astype(np.float64).mean()) < tol
    assert rel_err(obj.grad(theta), grads.astype(np.float64).mean(axis=0)) < tol


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_objective_is_the_weighted_sum_of_task_terms_plus_l2(dtype):
    # f = Σ α_i f_i + λ/2 ‖θ‖²,  ∇f = Σ α_i ∇f_i + λ θ: the core agrees with itself
    model = mc.MLP([3, 5, 2], activation="relu", loss="mse", task_heads=3)
    ts = random_taskset(model, [4, 7, 2], [2, 3, 1], dtype=dtype, seed=4)
    alpha = np.array([0.2, 1.5, 0.0])
    lam = 0.3
    obj = mc.Objective(model, ts, weights=alpha, l2=lam)
    theta = random_theta(model, dtype=dtype, seed=4)
    losses, grads = obj.task_losses_and_grads(theta)
    t64 = theta.astype(np.float64)
    tol = RTOL[dtype]
    assert rel_err(obj.value(theta), alpha @ losses + 0.5 * lam * t64 @ t64) < tol
    assert rel_err(obj.grad(theta), alpha @ grads.astype(np.float64) + lam * t64) < tol


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_task_grads_are_zero_outside_the_head_a_task_uses(dtype):
    # hard parameter sharing: task i touches the trunk and head ts.task_ids[i], nothing else
    model = mc.MLP([3, 4, 2], activation="tanh", loss="mse", task_heads=5)
    ts = random_taskset(model, [3, 4, 5, 6, 2], 2, dtype=dtype, seed=5).subset([4, 1, 1])
    obj = mc.Objective(model, ts)
    grads = obj.task_grads(random_theta(model, dtype=dtype, seed=5))
    trunk, head = model.n_trunk_params, model.n_head_params
    for i, tid in enumerate(ts.task_ids):
        used = np.zeros(model.n_params, dtype=bool)
        used[:trunk] = True
        used[trunk + tid * head:trunk + (tid + 1) * head] = True
        assert np.all(grads[i, ~used] == 0)
        assert np.all(grads[i, used] != 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("rows", ["all", "query"])
def test_tasks_larger_than_one_work_unit(rows, dtype):
    # a task of more than 1024 chosen rows is split into several work units whose partial sums
    # (and, for task_grads, per-unit rows) are added back together
    model = mc.MLP([5, 8, 1], activation="tanh", loss="logistic", task_heads=4)
    packed = random_taskset(model, [2500, 3, 1100, 1025, 2049], [100, 1, 50, 0, 1024],
                            dtype=dtype, seed=6)
    ts = mc.TaskSet(packed.X, packed.y, packed.offsets, packed.n_support,
                    task_ids=[2, 0, 3, 1, 2])
    weights = np.array([0.5, 2.0, 1.0, 0.25, 1.5])
    obj, _ = assert_matches_reference(model, ts, rows, dtype, weights, l2=0.01, seed=6)
    info = plan(obj, dtype)
    # 2500 -> 3 units, 1100 -> 2, 1025 -> 2, 2049 -> 3 (all) or 1025 -> 2 (query)
    assert info["n_units"] == (3 + 1 + 2 + 2 + 3 if rows == "all" else 3 + 1 + 2 + 2 + 2)
    assert info["n_units"] > ts.n_tasks


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_more_tasks_than_reduction_blocks(dtype):
    # 200 ragged tasks (1 to 9 rows) are grouped into at most 128 reduction blocks
    model = mc.MLP([2, 5, 4], activation="tanh", loss="cross_entropy")
    sizes = np.random.default_rng(8).integers(1, 10, size=200)
    ts = random_taskset(model, sizes, None, dtype=dtype, seed=8)
    weights = np.random.default_rng(9).uniform(0.0, 1.0, size=200)
    obj, _ = assert_matches_reference(model, ts, "all", dtype, weights, l2=0.02, seed=8)
    info = plan(obj, dtype)
    assert 1 < info["n_blocks"] <= 128 < ts.n_tasks
    assert info["n_units"] == ts.n_tasks and info["total_rows"] == sizes.sum()


# --- 2. the core against central finite differences (float64, no reference involved) -------------
FD_MODELS = {
    "linear-mse-2-outputs": mc.MLP([3, 2], loss="mse"),
    "tanh-h1-mse": mc.MLP([3, 5, 1], activation="tanh", loss="mse"),
    "relu-h2-mse-3-outputs": mc.MLP([3, 4, 4, 3], activation="relu", loss="mse"),
    "tanh-h2-logistic": mc.MLP([4, 4, 3, 1], activation="tanh", loss="logistic"),
    "relu-h1-logistic": mc.MLP([4, 6, 1], activation="relu", loss="logistic"),
    "tanh-h3-ce-4": mc.MLP([3, 4, 3, 3, 4], activation="tanh", loss="cross_entropy"),
    "relu-h1-ce-3": mc.MLP([3, 5, 3], activation="relu", loss="cross_entropy"),
    "heads-tanh-ce": mc.MLP([3, 4, 3], activation="tanh", loss="cross_entropy", task_heads=3),
    "heads-relu-mse": mc.MLP([3, 4, 2], activation="relu", loss="mse", task_heads=4),
}
FD_STEP = 1e-6      # for derivatives of values: truncation O(h²), rounding O(ε/h)
HVP_STEP = 1e-5     # for derivatives of gradients
FD_RTOL = 1e-6


def fd_problem(name, rows="all"):
    model = FD_MODELS[name]
    ts = random_taskset(model, [5, 2, 8], [2, 1, 5], seed=11)
    if model.task_heads:
        ts = mc.TaskSet(ts.X, ts.y, ts.offsets, ts.n_support, task_ids=[2, 0, 2])
    obj = mc.Objective(model, ts, weights=[0.7, 1.3, 0.4], l2=0.1, rows=rows)
    return model, obj, random_theta(model, seed=11)


def fd(f, theta, h=FD_STEP):
    return central_diff(f, theta, h)


def assert_fd_close(actual, expected, rtol=FD_RTOL):
    """Entrywise, with an absolute floor at rtol × the largest entry."""
    scale = np.max(np.abs(expected))
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("rows", ["all", "query"])
@pytest.mark.parametrize("name", list(FD_MODELS))
def test_grad_matches_finite_differences_of_value(name, rows):
    model, obj, theta = fd_problem(name, rows)
    assert_fd_close(obj.grad(theta), fd(obj.value, theta))


@pytest.mark.parametrize("name", list(FD_MODELS))
def test_task_grads_match_finite_differences_of_task_losses(name):
    model, obj, theta = fd_problem(name, "support")
    expected = fd(obj.task_losses, theta)            # (T, P)
    assert_fd_close(obj.task_grads(theta), expected)


@pytest.mark.parametrize("name", list(FD_MODELS))
def test_hvp_matches_finite_differences_of_grad(name):
    model, obj, theta = fd_problem(name)
    v = random_vector(model.n_params, seed=12)
    expected = (obj.grad(theta + HVP_STEP * v) - obj.grad(theta - HVP_STEP * v)) / (2 * HVP_STEP)
    assert_fd_close(obj.hvp(theta, v), expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(FD_MODELS))
def test_hvp_is_symmetric_and_linear(name):
    # u·(Hv) = v·(Hu) and H(a u + b v) = a Hu + b Hv
    model, obj, theta = fd_problem(name, "query")
    u = random_vector(model.n_params, seed=13)
    v = random_vector(model.n_params, seed=14)
    hu, hv = obj.hvp(theta, u), obj.hvp(theta, v)
    assert u @ hv == pytest.approx(v @ hu, rel=1e-12)
    np.testing.assert_allclose(obj.hvp(theta, 2.0 * u - 3.0 * v), 2.0 * hu - 3.0 * hv,
                               rtol=1e-12, atol=1e-12 * np.abs(hu).max())


def test_hessian_of_linear_mse_has_a_closed_form():
    # one task, one output: f = (1/n) Σ (w·x + b − y)² + λ/2 ‖θ‖²,
    # so H = (2/n) AᵀA + λ I with A = [X 1]
    model = mc.Linear(3)
    ts = random_taskset(model, [7], seed=15)
    obj = mc.Objective(model, ts, l2=0.5)
    A = np.hstack([ts.X, np.ones((7, 1))])
    H = 2.0 / 7 * A.T @ A + 0.5 * np.eye(4)
    theta = random_theta(model, seed=15)
    columns = np.stack([obj.hvp(theta, e) for e in np.eye(4)], axis=1)
    np.testing.assert_allclose(columns, H, rtol=1e-13, atol=1e-13)


# --- 3. determinism: bit-identical for any thread count and repeated calls ------------------------
THREADS = [1, 2, 3, 8]


@pytest.fixture(scope="module")
def big_problem():
    """300 tasks × 50 rows and 3 tasks × 5000 rows, 20 features, an MLP with two hidden layers."""
    model = mc.MLP([20, 24, 16, 3], activation="tanh", loss="cross_entropy")
    sizes = [50] * 300 + [5000] * 3
    ts = random_taskset(model, sizes, 10, seed=21)
    weights = np.random.default_rng(22).uniform(0.1, 1.0, size=ts.n_tasks)
    return model, ts, weights


def all_results(obj, theta, v):
    value, grad = obj.value_and_grad(theta)
    losses, grads = obj.task_losses_and_grads(theta)
    return {"value": obj.value(theta), "value_and_grad.value": value, "grad": obj.grad(theta),
            "value_and_grad.grad": grad, "task_losses": obj.task_losses(theta),
            "task_losses_and_grads.losses": losses, "task_grads": obj.task_grads(theta),
            "task_losses_and_grads.grads": grads, "hvp": obj.hvp(theta, v)}


def assert_identical(a, b, context):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key} differs ({context})"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_results_are_bit_identical_for_any_thread_count(big_problem, dtype):
    model, ts, weights = big_problem
    theta = random_theta(model, dtype=dtype, seed=23, scale=0.1)
    v = random_vector(model.n_params, dtype=dtype, seed=23)
    results = {}
    for n in THREADS + [-1, None]:
        obj = mc.Objective(model, ts, weights=weights, l2=0.01, n_threads=n)
        results[n] = all_results(obj, theta, v)
    info = plan(obj, dtype)
    # the problem really is split: several reduction blocks, large tasks in several units
    assert info["n_blocks"] > 8 and info["n_units"] > ts.n_tasks
    for n in results:
        assert_identical(results[1], results[n], f"n_threads=1 vs {n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_results_are_bit_identical_for_any_thread_count_with_task_heads(dtype):
    model = mc.MLP([10, 16, 2], activation="relu", loss="mse", task_heads=150)
    ts = random_taskset(model, [40] * 150 + [3000, 1500], 5, dtype=dtype, seed=24)
    ts = mc.TaskSet(ts.X, ts.y, ts.offsets, ts.n_support,
                    task_ids=list(range(150)) + [7, 149])
    theta = random_theta(model, dtype=dtype, seed=24)
    v = random_vector(model.n_params, dtype=dtype, seed=24)
    results = {n: all_results(mc.Objective(model, ts, l2=0.1, rows="query", n_threads=n),
                              theta, v) for n in THREADS}
    for n in THREADS:
        assert_identical(results[1], results[n], f"n_threads=1 vs {n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_repeated_calls_are_bit_identical(big_problem, dtype):
    model, ts, weights = big_problem
    obj = mc.Objective(model, ts, weights=weights, n_threads=3)
    theta = random_theta(model, dtype=dtype, seed=25, scale=0.1)
    v = random_vector(model.n_params, dtype=dtype, seed=25)
    first = all_results(obj, theta, v)
    for _ in range(2):
        assert_identical(first, all_results(obj, theta, v), "repeated call")


def test_float32_and_float64_handles_coexist(big_problem):
    # one Objective serves both dtypes; switching back and forth changes nothing
    model, ts, _ = big_problem
    obj = mc.Objective(model, ts, n_threads=2)
    t64 = random_theta(model, seed=26, scale=0.1)
    t32 = t64.astype(np.float32)
    g64, g32 = obj.grad(t64), obj.grad(t32)
    assert g64.dtype == np.float64 and g32.dtype == np.float32
    np.testing.assert_array_equal(obj.grad(t64), g64)
    np.testing.assert_array_equal(obj.grad(t32), g32)
    assert rel_err(g32, g64) < RTOL[np.float32]


# --- 4. bad arguments: a clear ValueError / TypeError naming the argument -------------------------
def small_problem(loss="cross_entropy"):
    k = {"mse": 1, "logistic": 1, "cross_entropy": 3}[loss]
    model = mc.MLP([3, 4, k], activation="tanh", loss=loss)
    ts = random_taskset(model, [4, 3], [2, 3], seed=31)   # task 1 has no query rows
    return model, ts


MODEL, TS = small_problem()
P = MODEL.n_params
OBJ = mc.Objective(MODEL, TS)
THETA = random_theta(MODEL, seed=31)


def labelled(loss, k, y):
    model = mc.MLP([2, k], loss=loss)
    ts = mc.TaskSet.from_arrays([np.ones((len(y), 2))], [np.asarray(y, dtype=float)])
    return model, ts


BAD_CALLS = {
    "model-not-a-model": (lambda: mc.Objective("mlp", TS), TypeError, "model must be"),
    "model-is-a-core-net": (lambda: mc.Objective(MODEL.core_net(), TS), TypeError, "model must be"),
    "ts-not-a-taskset": (lambda: mc.Objective(MODEL, (TS.X, TS.y)), TypeError, "ts must be"),
    "feature-mismatch": (lambda: mc.Objective(mc.MLP([4, 3], loss="cross_entropy"), TS),
                         ValueError, "features"),
    "weights-too-long": (lambda: mc.Objective(MODEL, TS, weights=[1.0, 2.0, 3.0]), ValueError,
                         "weights.*one entry per task"),
    "weights-too-short": (lambda: mc.Objective(MODEL, TS, weights=[1.0]), ValueError,
                          "weights.*one entry per task"),
    "weights-2d": (lambda: mc.Objective(MODEL, TS, weights=[[1.0, 2.0]]), ValueError,
                   "weights must be 1-D"),
    "weights-negative": (lambda: mc.Objective(MODEL, TS, weights=[1.0, -0.5]), ValueError,
                         "weights must be non-negative"),
    "weights-nan": (lambda: mc.Objective(MODEL, TS, weights=[np.nan, 1.0]), ValueError,
                    "weights must be finite"),
    "weights-inf": (lambda: mc.Objective(MODEL, TS, weights=[1.0, np.inf]), ValueError,
                    "weights must be finite"),
    "weights-strings": (lambda: mc.Objective(MODEL, TS, weights=["a", "b"]), TypeError,
                        "weights"),
    "l2-negative": (lambda: mc.Objective(MODEL, TS, l2=-0.1), ValueError, "l2 must be >= 0"),
    "l2-nan": (lambda: mc.Objective(MODEL, TS, l2=float("nan")), ValueError,
               "l2 must be finite"),
    "l2-inf": (lambda: mc.Objective(MODEL, TS, l2=float("inf")), ValueError,
               "l2 must be finite"),
    "l2-string": (lambda: mc.Objective(MODEL, TS, l2="0.1"), TypeError, "l2 must be a real"),
    "rows-unknown": (lambda: mc.Objective(MODEL, TS, rows="train"), ValueError,
                     "rows must be one of 'all', 'support', 'query'"),
    "rows-not-a-string": (lambda: mc.Objective(MODEL, TS, rows=None), ValueError, "rows must be"),
    "rows-query-but-a-task-has-none": (lambda: mc.Objective(MODEL, TS, rows="query"), ValueError,
                                       "rows='query': task 1 has no query rows"),
    "rows-support-but-a-task-has-none": (
        lambda: mc.Objective(MODEL, TS.with_support([0, 2]), rows="support"), ValueError,
        "rows='support': task 0 has no support rows"),
    "n_threads-zero": (lambda: mc.Objective(MODEL, TS, n_threads=0), ValueError, "n_threads"),
    "n_threads-minus-two": (lambda: mc.Objective(MODEL, TS, n_threads=-2), ValueError,
                            "n_threads"),
    "n_threads-float": (lambda: mc.Objective(MODEL, TS, n_threads=1.5), TypeError, "n_threads"),
    "n_threads-bool": (lambda: mc.Objective(MODEL, TS, n_threads=True), TypeError, "n_threads"),
    "theta-too-long": (lambda: OBJ.value(np.zeros(P + 1)), ValueError,
                       f"theta must have length {P}"),
    "theta-too-short": (lambda: OBJ.grad(np.zeros(P - 1)), ValueError,
                        f"theta must have length {P}"),
    "theta-int-dtype": (lambda: OBJ.value(np.zeros(P, dtype=np.int64)), TypeError,
                        "theta must be a float32 or float64 array"),
    "theta-2d": (lambda: OBJ.value_and_grad(np.zeros((1, P))), ValueError, "theta must be 1-D"),
    "theta-nan": (lambda: OBJ.task_losses(np.full(P, np.nan)), ValueError,
                  "theta must be finite"),
    "theta-inf-task-grads": (lambda: OBJ.task_grads(np.r_[np.zeros(P - 1), np.inf]), ValueError,
                             "theta must be finite"),
    "theta-nan-hvp": (lambda: OBJ.hvp(np.full(P, np.nan), np.zeros(P)), ValueError,
                      "theta must be finite"),
    "v-too-long": (lambda: OBJ.hvp(THETA, np.zeros(P + 1)), ValueError, f"v must have length {P}"),
    "v-2d": (lambda: OBJ.hvp(THETA, np.zeros((P, 1))), ValueError, "v must be 1-D"),
    "v-nan": (lambda: OBJ.hvp(THETA, np.full(P, np.nan)), ValueError, "v must be finite"),
    "ce-label-too-large": (lambda: mc.Objective(*labelled("cross_entropy", 3, [0, 3, 1])),
                           ValueError, r"y must hold integer labels in \[0, 3\)"),
    "ce-label-negative": (lambda: mc.Objective(*labelled("cross_entropy", 3, [0, -1])),
                          ValueError, "y must hold integer labels"),
    "ce-label-fractional": (lambda: mc.Objective(*labelled("cross_entropy", 3, [0.5, 1])),
                            ValueError, "y must hold integer labels"),
    "logistic-label-two": (lambda: mc.Objective(*labelled("logistic", 1, [0, 1, 2])), ValueError,
                           r"y must hold labels in \{0, 1\}"),
    "logistic-label-half": (lambda: mc.Objective(*labelled("logistic", 1, [0.5, 1])), ValueError,
                            r"y must hold labels in \{0, 1\}"),
    "logistic-label-minus-one": (lambda: mc.Objective(*labelled("logistic", 1, [-1, 1])),
                                 ValueError, r"y must hold labels in \{0, 1\}"),
    "task_heads-smaller-than-task-ids": (
        lambda: mc.Objective(mc.MLP([3, 4, 3], loss="cross_entropy", task_heads=1), TS),
        ValueError, "task_heads"),
    "task_heads-smaller-than-subset-ids": (
        lambda: mc.Objective(mc.MLP([3, 3], loss="cross_entropy", task_heads=1), TS.subset([1])),
        ValueError, "task_heads=1"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_argument_raises_naming_it(name):
    call, exc, match = BAD_CALLS[name]
    with pytest.raises(exc, match=match):
        call()


def test_subset_ids_beyond_task_heads_is_rejected():
    # task_ids [2] need 3 heads even though the subset has only one task
    model = mc.MLP([3, 3], loss="cross_entropy", task_heads=2)
    ts = random_taskset(MODEL, [2, 2, 2], seed=32).subset([2])
    assert ts.task_ids.tolist() == [2]
    with pytest.raises(ValueError, match="task_heads=2"):
        mc.Objective(model, ts)
    mc.Objective(mc.MLP([3, 3], loss="cross_entropy", task_heads=3), ts)   # enough heads: fine


def run_python(code, **env_extra):
    """Run code in a fresh interpreter that imports this very metacore."""
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(mc.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_bad_arguments_leave_the_interpreter_alive():
    proc = run_python("""
        import numpy as np, metacore as mc
        model = mc.MLP([3, 4, 3], loss="cross_entropy")
        ts = mc.TaskSet.from_arrays([np.ones((3, 3)), np.ones((2, 3))],
                                    [np.array([0., 1, 2]), np.array([1., 2])], n_support=1)
        obj = mc.Objective(model, ts)
        P = model.n_params
        calls = [lambda: mc.Objective(model, ts, n_threads=0),
                 lambda: mc.Objective(model, ts, weights=[1.0, np.nan]),
                 lambda: obj.value(np.zeros(P + 3)),
                 lambda: obj.hvp(np.zeros(P), np.zeros(P - 1)),
                 lambda: obj.grad(np.zeros(P, dtype=np.int32)),
                 lambda: model.predict(np.zeros(P), np.zeros((2, 5)))]
        for call in calls:
            try:
                call()
            except (ValueError, TypeError) as e:
                print(type(e).__name__, e)
        print("alive", obj.value(np.zeros(P)))
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ValueError n_threads")
    assert lines[1].startswith("ValueError weights must be finite")
    assert lines[2].startswith("ValueError theta must have length")
    assert lines[3].startswith("ValueError v must have length")
    assert lines[4].startswith("TypeError theta must be a float32 or float64 array")
    assert lines[5].startswith("ValueError X must have 3 columns")
    # θ = 0 gives a uniform softmax: every row loses log 3
    assert lines[6].split()[0] == "alive"
    assert float(lines[6].split()[1]) == pytest.approx(np.log(3.0), rel=1e-15)


# the private handles: wrong dtypes and layouts are errors, never a crash nor a silent copy
NET = MODEL.core_net()
Y2 = TS.y.reshape(-1, 1)
ARGS = (TS.X, Y2, TS.offsets, TS.n_support, TS.task_ids)


def core_handle(**change):
    names = ["X", "y", "offsets", "n_support", "task_ids"]
    args = dict(zip(names, ARGS))
    args.update(change)
    rows = args.pop("rows", "all")
    cls = args.pop("cls", _core.Objective64)
    return cls(args.pop("net", NET), args["X"], args["y"], args["offsets"], args["n_support"],
               args["task_ids"], rows)


H64 = core_handle()
W2 = np.full(2, 0.5)
CORE_BAD_CALLS = {
    "X-float32-into-Objective64": (lambda: core_handle(X=TS.X.astype(np.float32)), TypeError,
                                   "X must have dtype float64"),
    "X-float64-into-Objective32": (lambda: core_handle(cls=_core.Objective32), TypeError,
                                   "X must have dtype float32"),
    "X-fortran-order": (lambda: core_handle(X=np.asfortranarray(TS.X)), ValueError,
                        "X must be C-contiguous"),
    "X-not-an-array": (lambda: core_handle(X=TS.X.tolist()), TypeError, "X must be a numpy array"),
    "X-wrong-width": (lambda: core_handle(X=np.ascontiguousarray(TS.X[:, :2])), ValueError,
                      "features"),
    "y-1d": (lambda: core_handle(y=TS.y), ValueError, "y must be 2-D"),
    "y-wrong-rows": (lambda: core_handle(y=Y2[:-1].copy()), ValueError, "y has shape"),
    "offsets-int32": (lambda: core_handle(offsets=TS.offsets.astype(np.int32)), TypeError,
                      "offsets must have dtype int64"),
    "offsets-wrong-end": (lambda: core_handle(offsets=np.array([0, 4, 6])), ValueError,
                          "offsets"),
    "offsets-empty-task": (lambda: core_handle(offsets=np.array([0, 7, 7]),
                                               n_support=np.array([0, 0])), ValueError,
                           "offsets"),
    "n_support-too-large": (lambda: core_handle(n_support=np.array([2, 9])), ValueError,
                            "n_support"),
    "n_support-float": (lambda: core_handle(n_support=np.array([2.0, 3.0])), TypeError,
                        "n_support must have dtype int64"),
    "task_ids-wrong-length": (lambda: core_handle(task_ids=np.array([0, 1, 2])), ValueError,
                              "task_ids"),
    "task_ids-beyond-heads": (
        lambda: core_handle(net=mc.MLP([3, 4, 3], loss="cross_entropy", task_heads=2).core_net(),
                            task_ids=np.array([0, 5])), ValueError, "task_ids"),
    "rows-unknown": (lambda: core_handle(rows="train"), ValueError, "rows must be"),
    "rows-query-empty": (lambda: core_handle(rows="query"), ValueError, "rows"),
    "theta-float32": (lambda: H64.value_and_grad(THETA.astype(np.float32), W2, 0.0, True),
                      TypeError, "theta must have dtype float64"),
    "theta-non-contiguous": (lambda: H64.value_and_grad(np.repeat(THETA, 2)[::2], W2, 0.0, True),
                             ValueError, "theta must be C-contiguous"),
    "theta-a-list": (lambda: H64.task_grads(THETA.tolist()), TypeError,
                     "theta must be a numpy array"),
    "theta-wrong-length": (lambda: H64.task_grads(np.zeros(P + 1)), ValueError, "theta has shape"),
    "theta-2d": (lambda: H64.hvp(THETA[None, :], THETA, W2, 0.0), ValueError, "theta must be 1-D"),
    "v-float32": (lambda: H64.hvp(THETA, THETA.astype(np.float32), W2, 0.0), TypeError,
                  "v must have dtype float64"),
    "v-non-contiguous": (lambda: H64.hvp(THETA, np.repeat(THETA, 2)[1::2], W2, 0.0), ValueError,
                         "v must be C-contiguous"),
    "weights-float32": (lambda: H64.hvp(THETA, THETA, W2.astype(np.float32), 0.0), TypeError,
                        "weights must have dtype float64"),
    "weights-wrong-length": (lambda: H64.value_and_grad(THETA, W2[:1].copy(), 0.0, False),
                             ValueError, "weights has shape"),
    "n_threads-zero": (lambda: H64.value_and_grad(THETA, W2, 0.0, True, 0), ValueError,
                       "n_threads"),
    "n_threads-minus-five": (lambda: H64.task_grads(THETA, -5), ValueError, "n_threads"),
    "n_threads-float": (lambda: H64.hvp(THETA, THETA, W2, 0.0, 1.5), TypeError,
                        "incompatible function arguments"),
    "net-predict-X-float32": (lambda: NET.predict(THETA, TS.X.astype(np.float32)), TypeError,
                              "X must have dtype float64"),
    "net-predict-X-transposed": (lambda: NET.predict(THETA, np.ones((3, 5)).T), ValueError,
                                 "X must be C-contiguous"),
    "net-predict-head": (lambda: NET.predict(THETA, TS.X, 1), ValueError, "task must be in"),
    "net-bad-activation": (lambda: _core.Net([3, 2], "sigmoid", "mse", 1), ValueError,
                           "activation"),
    "net-bad-loss": (lambda: _core.Net([3, 2], "relu", "hinge", 1), ValueError, "loss"),
    "net-zero-heads": (lambda: _core.Net([3, 2], "relu", "mse", 0), ValueError, "task_heads"),
    "net-zero-width": (lambda: _core.Net([3, 0, 2], "relu", "mse", 1), ValueError,
                       "layer_sizes"),
    "net-logistic-two-outputs": (lambda: _core.Net([3, 2], "relu", "logistic", 1), ValueError,
                                 "logistic"),
}


@pytest.mark.parametrize("name", list(CORE_BAD_CALLS))
def test_private_core_rejects_bad_arrays_without_crashing(name):
    call, exc, match = CORE_BAD_CALLS[name]
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("method", ["value_and_grad", "task_grads", "hvp"])
def test_private_core_with_an_out_of_range_class_label_raises_instead_of_aborting(method,
                                                                                  n_threads):
    # the public Objective checks labels up front; the core checks them too, when the objective
    # is built, and must turn that into a ValueError rather than abort inside a kernel
    proc = run_python(f"""
        import numpy as np, metacore as mc
        from metacore import _core
        model = mc.MLP([3, 8, 2], loss="cross_entropy")
        rng = np.random.default_rng(0)
        N = 4000                      # large enough for the parallel path
        X = rng.normal(size=(N, 3))
        y = rng.integers(0, 2, size=(N, 1)).astype(float)
        y[1234, 0] = 5.0              # not in [0, 2)
        offsets = np.arange(0, N + 1, 100, dtype=np.int64)
        T = len(offsets) - 1
        theta, w = np.zeros(model.n_params), np.full(T, 1.0 / T)
        try:
            # the core validates labels when the objective is built, before any kernel runs
            h = _core.Objective64(model.core_net(), X, y, offsets, np.zeros(T, dtype=np.int64),
                                  np.arange(T, dtype=np.int64), "all")
            calls = {{"value_and_grad": lambda: h.value_and_grad(theta, w, 0.0, True, {n_threads}),
                      "task_grads": lambda: h.task_grads(theta, {n_threads}),
                      "hvp": lambda: h.hvp(theta, theta, w, 0.0, {n_threads})}}
            calls["{method}"]()
        except ValueError as e:
            print("ValueError", e)
        print("alive")
    """)
    assert proc.returncode == 0, f"interpreter died (rc {proc.returncode}): {proc.stderr[-500:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "alive"
    assert lines[0].startswith("ValueError y") and "label 5" in lines[0]


# --- 5. read-only and non-contiguous inputs; nothing modified; results owned by the caller -------
@pytest.fixture(scope="module")
def rw_problem():
    model = mc.MLP([4, 6, 3], activation="tanh", loss="cross_entropy", task_heads=3)
    ts = random_taskset(model, [6, 2, 9], [3, 1, 4], seed=41)
    return model, mc.Objective(model, ts, weights=[0.2, 0.5, 1.0], l2=0.1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_read_only_and_strided_theta_and_v_give_the_same_results(rw_problem, dtype):
    model, obj = rw_problem
    theta = random_theta(model, dtype=dtype, seed=42)
    v = random_vector(model.n_params, dtype=dtype, seed=42)
    expected = all_results(obj, theta, v)

    ro_theta, ro_v = theta.copy(), v.copy()
    ro_theta.setflags(write=False)
    ro_v.setflags(write=False)
    assert_identical(expected, all_results(obj, ro_theta, ro_v), "read-only")

    st_theta = np.repeat(theta, 3)[1::3]       # every third element of a larger buffer
    st_v = np.repeat(v, 2)[::2]
    assert not st_theta.flags.c_contiguous and not st_v.flags.c_contiguous
    assert_identical(expected, all_results(obj, st_theta, st_v), "strided")

    ro_st = np.repeat(theta, 2)[1::2]
    ro_st.setflags(write=False)
    assert_identical(expected, all_results(obj, ro_st, ro_v), "read-only strided")

    # lists are array-likes too (float64)
    if dtype == np.float64:
        assert_identical(expected, all_results(obj, theta.tolist(), v.tolist()), "lists")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_objective_never_modifies_theta_or_v(rw_problem, dtype):
    model, obj = rw_problem
    theta = random_theta(model, dtype=dtype, seed=43)
    v = random_vector(model.n_params, dtype=dtype, seed=43)
    theta0, v0 = theta.copy(), v.copy()
    all_results(obj, theta, v)
    np.testing.assert_array_equal(theta, theta0)
    np.testing.assert_array_equal(v, v0)
    assert theta.flags.writeable and v.flags.writeable


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_results_are_fresh_writable_arrays_owned_by_the_caller(rw_problem, dtype):
    model, obj = rw_problem
    theta = random_theta(model, dtype=dtype, seed=44)
    v = random_vector(model.n_params, dtype=dtype, seed=44)
    first = all_results(obj, theta, v)
    arrays = [first[k] for k in ("grad", "value_and_grad.grad", "task_losses", "task_grads",
                                 "task_losses_and_grads.losses", "task_losses_and_grads.grads",
                                 "hvp")]
    for a in arrays:
        assert isinstance(a, np.ndarray) and a.flags.writeable and a.flags.c_contiguous
        assert not np.shares_memory(a, theta) and not np.shares_memory(a, v)
    for a, b in [(x, y) for i, x in enumerate(arrays) for y in arrays[i + 1:]]:
        assert not np.shares_memory(a, b)
    # scribbling on a result changes neither θ nor what the next call returns
    expected = {k: np.copy(val) for k, val in first.items()}
    for a in arrays:
        a[...] = 12345
    np.testing.assert_array_equal(theta, random_theta(model, dtype=dtype, seed=44))
    assert_identical(expected, all_results(obj, theta, v), "after writing into results")


def test_weights_passed_by_the_caller_are_neither_frozen_nor_aliased():
    # Objective keeps its own copy of α: the caller's array stays writable, and writing into it
    # afterwards changes neither obj.weights nor the objective
    model = mc.MLP([3, 4, 1])
    ts = random_taskset(model, [4, 3], seed=45)
    w = np.array([0.3, 0.7])
    obj = mc.Objective(model, ts, weights=w)
    assert w.flags.writeable
    theta = random_theta(model, seed=45)
    before = obj.value(theta)
    w[0] = 100.0
    np.testing.assert_array_equal(obj.weights, [0.3, 0.7])
    assert obj.value(theta) == before
    assert not obj.weights.flags.writeable


def test_setting_weights_changes_the_objective(rw_problem):
    model, obj = rw_problem
    obj = mc.Objective(model, obj.ts, weights=[0.2, 0.5, 1.0], l2=0.1)
    theta = random_theta(model, seed=46)
    losses = obj.task_losses(theta)
    obj.weights = [1.0, 0.0, 0.0]
    assert obj.value(theta) == pytest.approx(losses[0] + 0.05 * theta @ theta, rel=1e-13)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        obj.weights = [1.0, -1.0, 0.0]
    assert obj.weights.tolist() == [1.0, 0.0, 0.0]
