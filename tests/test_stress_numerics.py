"""Numerics under stress: logits of ±1e4, targets of 1e8, one-row tasks and a task of a million
rows. Losses, gradients, per-task gradients and Hessian-vector products stay finite wherever the
mathematics is finite and agree with the float64 reference (fed the same inputs).
"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref

DTYPES = [np.float64, np.float32]
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-4}


def rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300)


def check_everything(model, ts, theta, *, weights=None, l2=0.0, rows="all", rtol=None,
                     n_threads=None):
    """Every objective method finite and equal to the reference (relative L2 error)."""
    dtype = np.dtype(theta.dtype)
    rtol = rtol or RTOL[dtype]
    ts = ts.astype(dtype)
    v = np.random.default_rng(0).normal(size=model.n_params).astype(dtype)
    obj = mc.Objective(model, ts, weights=weights, l2=l2, rows=rows, n_threads=n_threads)
    th64, v64 = theta.astype(np.float64), v.astype(np.float64)
    kw = dict(weights=obj.weights, l2=l2, rows=rows)

    value, grad = obj.value_and_grad(theta)
    losses, grads = obj.task_losses_and_grads(theta)
    hv = obj.hvp(theta, v)
    ev, eg = ref.objective_value_and_grad(model, ts, th64, **kw)
    expected = {
        "value": (value, ev), "grad": (grad, eg),
        "task_losses": (losses, ref.task_losses(model, ts, th64, rows=rows)),
        "task_grads": (grads, ref.task_grads(model, ts, th64, rows=rows)),
        "hvp": (hv, ref.objective_hvp(model, ts, th64, v64, **kw)),
    }
    for name, (got, want) in expected.items():
        assert np.all(np.isfinite(want)), f"{name}: the reference itself is not finite"
        assert np.all(np.isfinite(got)), f"{name} is not finite: {got}"
        assert rel_err(got, want) <= rtol, (name, rel_err(got, want))
    return obj


# --- logits of ±1e4 -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_logistic_logits_of_1e4_give_finite_exact_losses_and_gradients(dtype, scale):
    # z = scale·x with x = ±1: the loss is 0 (right side) or |z| = 1e4 (wrong side), never inf
    model = mc.Logistic(1)
    X = np.array([[1.0], [-1.0], [1.0], [-1.0], [0.5]])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    ts = mc.TaskSet(X, y, [0, 2, 5], n_support=1)
    theta = np.array([scale, 0.0], dtype=dtype)
    obj = check_everything(model, ts, theta)
    losses = obj.task_losses(theta)
    z = scale * X[:, 0]
    exact = np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(losses, [exact[:2].mean(), exact[2:].mean()], rtol=1e-6)
    for rows in ("support", "query"):
        check_everything(model, ts, theta, rows=rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_logits_of_1e4_give_finite_exact_losses_and_gradients(dtype):
    model = mc.Softmax(2, 3)
    # logits for x = (1, 0): (1e4, −1e4, 0); for x = (0, 1): (−1e4, 1e4, 1e4)
    W = np.array([[1e4, -1e4], [-1e4, 1e4], [0.0, 1e4]])
    theta = np.concatenate([W.ravel(), np.zeros(3)]).astype(dtype)
    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    y = np.array([0.0, 1.0, 0.0, 1.0, 2.0])
    ts = mc.TaskSet(X, y, [0, 2, 5])
    obj = check_everything(model, ts, theta)
    # row losses: 0, 2e4 | 2e4 + log 2, log 2, log 2
    want = [(0 + 2e4) / 2, (2e4 + 3 * np.log(2)) / 3]
    np.testing.assert_allclose(obj.task_losses(theta), want, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["logistic", "cross_entropy"])
def test_a_deep_net_driven_to_logits_of_1e4_stays_finite(dtype, loss):
    rng = np.random.default_rng(1)
    k = 1 if loss == "logistic" else 4
    model = mc.MLP([3, 8, 8, k], activation="relu", loss=loss)
    sizes = [1, 5, 40]
    Xs = [rng.normal(size=(n, 3)) for n in sizes]
    ys = [rng.integers(0, max(k, 2), size=n).astype(float) for n in sizes]
    ts = mc.TaskSet.from_arrays(Xs, ys)
    theta = model.init(seed=0)
    last = model.layers()[-1]
    theta[last[0]:] *= 1e4 / max(np.abs(model.predict(theta, ts.X)).max(), 1e-12)
    theta = theta.astype(dtype)
    out = model.predict(theta, ts.X)
    assert 5e3 < np.abs(out).max() < 2e4
    check_everything(model, ts, theta, l2=1e-3)


# --- targets of 1e8 -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3])
def test_mse_targets_of_1e8_give_finite_losses_and_gradients(dtype, k):
    rng = np.random.default_rng(2)
    model = mc.MLP([2, 6, k], activation="tanh", loss="mse")
    sizes = [1, 3, 50]
    Xs = [rng.normal(size=(n, 2)) for n in sizes]
    ys = [1e8 * np.sign(rng.normal(size=(n, k))) for n in sizes]
    ts = mc.TaskSet.from_arrays(Xs, [y[:, 0] if k == 1 else y for y in ys])
    theta = model.init(seed=0).astype(dtype)
    obj = check_everything(model, ts, theta, l2=0.5)
    assert 0.9e16 < obj.value(theta) < 1.1e16                  # ≈ mean (1e8)²


# --- one-row tasks --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["mse", "logistic", "cross_entropy"])
def test_many_one_row_tasks(dtype, loss):
    rng = np.random.default_rng(3)
    k = {"mse": 2, "logistic": 1, "cross_entropy": 3}[loss]
    model = mc.MLP([4, 5, k], activation="tanh", loss=loss, task_heads=None)
    T = 400                                                    # more tasks than blocks
    X = rng.normal(size=(T, 4))
    y = (rng.normal(size=(T, k)) if loss == "mse"
         else rng.integers(0, max(k, 2), size=T).astype(float))
    ts = mc.TaskSet(X, y, np.arange(T + 1))
    theta = (model.init(seed=0) + 0.1).astype(dtype)
    w = rng.uniform(0, 2, size=T)
    check_everything(model, ts, theta, weights=w, l2=1e-2)
    check_everything(model, ts.subset([7]), theta)             # a single task of one row
    if loss == "cross_entropy":                                # per-task heads, one row each
        heads = mc.MLP([4, 5, k], activation="tanh", loss=loss, task_heads=T)
        check_everything(heads, ts, (heads.init(seed=0) + 0.1).astype(dtype))


# --- a task of a million rows ---------------------------------------------------------------
@pytest.fixture(scope="module")
def million_rows():
    rng = np.random.default_rng(4)
    N = 1_000_000
    X = rng.normal(size=(N, 2))
    z = X @ np.array([1.5, -2.0]) + 0.3
    y_reg = z + 0.1 * rng.normal(size=N)
    y_cls = (rng.uniform(size=N) < 1 / (1 + np.exp(-z))).astype(float)
    return X, y_reg, y_cls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_one_task_of_a_million_rows_next_to_small_ones(dtype, loss, million_rows):
    X, y_reg, y_cls = million_rows
    y = y_reg if loss == "mse" else y_cls
    N = X.shape[0]
    offsets = [0, 1, N - 3, N]                                 # 1 row, ~1e6 rows, 3 rows
    ts = mc.TaskSet(X, y, offsets, n_support=[1, 500_000, 1])
    model = mc.MLP([2, 1], loss=loss)                          # no hidden layer: a fast reference
    theta = np.array([0.7, -0.4, 0.1], dtype=dtype)
    obj = check_everything(model, ts, theta, rows="support" if dtype == np.float64 else "all",
                           l2=1e-4, n_threads=2)
    # the sums over a million rows are thread-count independent, bit for bit
    one = mc.Objective(model, ts, rows=obj.rows, l2=1e-4, n_threads=1)
    assert np.array_equal(one.grad(theta), obj.grad(theta))
    assert np.array_equal(one.task_grads(theta), obj.task_grads(theta))
