"""Bias-only per-task heads, ``mc.MLP(..., task_heads=T, head="bias")``: a shared net whose output
layer keeps one shared W and gives every task its own output bias (one level per task).

1. θ layout: the trunk, the shared output W, then one bias per head; one head = the full layout.
2. The core agrees with ``metacore.reference`` (values, gradients, per-task gradients, Hessian-
   vector products) and its gradient with central finite differences in float64.
3. Independent oracles: predictions against a direct NumPy forward pass; a linear model with
   bias heads is ridge regression with one-hot intercepts, whose minimiser the normal equations
   give in closed form (the core's gradient vanishes there).
4. Bad arguments raise ValueError naming ``head``; the spec round-trips through save and load.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metacore as mc
from metacore import reference as ref
from numerics import central_diff
from test_objective import (DTYPE_IDS, DTYPES, RTOL, assert_matches_reference, random_taskset,
                            random_theta, random_vector, rel_err)


# --- 1. layout --------------------------------------------------------------------------------------
def test_layout_is_trunk_then_shared_output_weights_then_one_bias_per_head():
    model = mc.MLP([3, 4, 2], task_heads=5, head="bias")
    trunk = 4 * 3 + 4
    assert model.n_trunk_params == trunk
    assert model.n_shared_params == trunk + 2 * 4
    assert model.n_head_params == 2
    assert model.n_params == trunk + 2 * 4 + 5 * 2 == mc.MLP([3, 4, 2], task_heads=5).n_params - 4 * 8
    assert model.core_net().n_params == model.n_params
    theta = np.arange(model.n_params, dtype=np.float64)
    (W1, b1), (W2, b2) = model.unpack(theta, task=3)
    np.testing.assert_array_equal(W2.ravel(), np.arange(trunk, trunk + 8))
    np.testing.assert_array_equal(b2, [trunk + 8 + 6, trunk + 8 + 7])
    for t in range(5):   # every task shares the output W
        assert model.layers(t)[-1][0] == trunk


def test_one_bias_head_is_the_full_layout():
    full, bias = mc.MLP([3, 4, 2]), mc.MLP([3, 4, 2], task_heads=1, head="bias")
    assert full.layers() == bias.layers() and full.n_params == bias.n_params
    theta = full.init(seed=1)
    X = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_array_equal(full.predict(theta, X), bias.predict(theta, X))


def test_init_draws_the_shared_output_weights_once_and_zero_biases():
    model = mc.MLP([3, 4, 1], task_heads=3, head="bias")
    theta = model.init(seed=2)
    assert np.all(theta[model.n_shared_params:] == 0)
    assert np.all(theta[model.n_trunk_params:model.n_shared_params] != 0)


# --- 2. core against the reference and finite differences ------------------------------------------
# (id, layer sizes, activation, loss, heads, task sizes, n_support, subset, rows, norm)
CASES = [
    ("linear-mse", [4, 1], "relu", "mse", 5, [6, 3, 5, 4, 7], [3, 1, 2, 2, 3], None, "all",
     None),
    ("linear-logistic-subset", [4, 1], "relu", "logistic", 5, [6, 3, 5, 4, 7], [3, 1, 2, 2, 3],
     [4, 1], "support", None),
    ("relu-h1-mse-2-outputs", [3, 5, 2], "relu", "mse", 4, [4, 6, 3], [2, 3, 1], None, "all",
     None),
    ("tanh-h2-ce-repeated-ids", [4, 6, 5, 3], "tanh", "cross_entropy", 6, [5, 3, 7, 4, 6, 2],
     [2, 1, 3, 2, 3, 1], [5, 2, 2, 0], "query", None),
    ("layer-norm-mse", [3, 4, 4, 1], "tanh", "mse", 3, [5, 2, 6], [2, 1, 3], None, "all",
     "layer"),
    ("batch-norm-mse", [3, 5, 1], "relu", "mse", 3, [5, 4, 6], None, None, "all", "batch"),
]


def build(case, dtype, seed=0):
    _, sizes_l, act, loss, heads, sizes, n_support, subset, rows, norm = case
    model = mc.MLP(sizes_l, activation=act, loss=loss, task_heads=heads, norm=norm, head="bias")
    ts = random_taskset(model, sizes, n_support, dtype=dtype, seed=seed)
    return model, (ts.subset(subset) if subset is not None else ts), rows


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_core_matches_reference(case, dtype):
    model, ts, rows = build(case, dtype)
    weights = np.random.default_rng(7).uniform(0.1, 2.0, size=ts.n_tasks)
    assert_matches_reference(model, ts, rows, dtype, weights, l2=0.05)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradient_and_hvp_match_central_differences(case):
    model, ts, rows = build(case, np.float64, seed=1)
    weights = np.random.default_rng(8).uniform(0.1, 2.0, size=ts.n_tasks)
    obj = mc.Objective(model, ts, weights=weights, l2=0.03, rows=rows)
    theta = random_theta(model, seed=1)
    v = random_vector(model.n_params, seed=1)
    assert rel_err(obj.grad(theta), central_diff(obj.value, theta, 1e-6)) < 1e-6
    fd_hv = (obj.grad(theta + 1e-5 * v) - obj.grad(theta - 1e-5 * v)) / 2e-5
    assert rel_err(obj.hvp(theta, v), fd_hv) < 1e-5
    grads = obj.task_grads(theta)
    for i, tid in enumerate(ts.task_ids):   # a task touches its own bias, no other task's
        used = np.zeros(model.n_params, dtype=bool)
        used[:model.n_shared_params] = True
        b = model.n_shared_params + tid * model.n_head_params
        used[b:b + model.n_head_params] = True
        assert np.all(grads[i, ~used] == 0)
        assert np.any(grads[i, b:b + model.n_head_params] != 0)


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 4), hidden=st.lists(st.integers(1, 5), max_size=2),
       k=st.integers(1, 3), n_heads=st.integers(1, 4),
       sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_generated_nets_match_reference_and_finite_differences(d, hidden, k, n_heads, sizes, seed):
    model = mc.MLP([d, *hidden, k], activation="tanh", task_heads=n_heads, head="bias")
    rng = np.random.default_rng(seed)
    packed = random_taskset(model, sizes, seed=seed)
    ts = mc.TaskSet(packed.X, packed.y, packed.offsets,
                    task_ids=rng.integers(0, n_heads, size=len(sizes)))
    obj = mc.Objective(model, ts, l2=0.01)
    theta = random_theta(model, seed=seed)
    _, ref_grad = ref.objective_value_and_grad(model, ts, theta, l2=0.01)
    assert rel_err(obj.grad(theta), ref_grad) < 1e-12
    assert rel_err(obj.grad(theta), central_diff(obj.value, theta, 1e-6)) < 1e-6


# --- 3. independent oracles ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_predict_is_the_shared_net_plus_the_task_bias(dtype):
    model = mc.MLP([3, 6, 5, 2], activation="relu", task_heads=4, head="bias")
    theta = random_theta(model, dtype=dtype, seed=3)
    X = np.random.default_rng(3).normal(size=(7, 3)).astype(dtype)
    t64 = theta.astype(np.float64)
    s, P = model.n_trunk_params, model.n_shared_params
    W1, b1 = t64[:18].reshape(6, 3), t64[18:24]
    W2, b2 = t64[24:54].reshape(5, 6), t64[54:59]
    W3 = t64[s:P].reshape(2, 5)
    h = np.maximum(0, np.maximum(0, X @ W1.T + b1) @ W2.T + b2) @ W3.T
    for t in range(4):
        expected = h + t64[P + 2 * t:P + 2 * t + 2]
        assert rel_err(model.predict(theta, X, task=t), expected) < RTOL[dtype]


def test_linear_bias_heads_minimum_is_ridge_with_one_hot_intercepts():
    # f(θ) = (1/N) Σ_rows (w·x + b_task − y)² + (λ/2)‖θ‖² (weights n_i / N) is minimised where
    # (2/N) AᵀA θ + λθ = (2/N) Aᵀy, A = [X, one-hot(task)]: the normal equations of ridge
    rng = np.random.default_rng(4)
    sizes, d, lam = [7, 3, 9, 5], 4, 0.2
    Xs = [rng.normal(size=(n, d)) for n in sizes]
    ys = [x @ rng.normal(size=d) + 3.0 * t + rng.normal(size=n)
          for t, (x, n) in enumerate(zip(Xs, sizes))]
    ts = mc.TaskSet.from_arrays(Xs, ys)
    N = sum(sizes)
    model = mc.Linear(d, task_heads=4, head="bias")
    obj = mc.Objective(model, ts, weights=np.array(sizes) / N, l2=lam)
    A = np.hstack([ts.X, np.eye(4)[np.repeat(np.arange(4), sizes)]])
    sol = np.linalg.solve(2 / N * A.T @ A + lam * np.eye(d + 4), 2 / N * A.T @ ts.y)
    theta = sol   # layout: W (1, d), then b_0..b_3 — the columns of A in order
    assert np.linalg.norm(obj.grad(theta)) < 1e-12 * np.linalg.norm(ts.y)
    res = mc.fit(obj, np.zeros(model.n_params), optimizer=mc.optim.Adam(lr=0.05), steps=3000,
                 progress=False)
    assert rel_err(res.theta, sol) < 1e-4


def test_training_with_heads_aware_weighting_runs_on_the_shared_prefix():
    # MGDA-style strategies combine per-task gradients on the shared prefix (trunk + output W)
    model = mc.MLP([3, 4, 1], activation="tanh", task_heads=3, head="bias")
    ts = random_taskset(model, [8, 6, 7], seed=5)
    obj = mc.Objective(model, ts)
    start = random_theta(model, seed=5)
    res = mc.fit(obj, start, optimizer=mc.optim.Adam(lr=0.01), steps=50,
                 weighting=mc.weighting.MGDA(), progress=False)
    assert obj.value(res.theta) < obj.value(start)


# --- 4. arguments and persistence ------------------------------------------------------------------------
def test_bad_head_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="head"):
        mc.MLP([3, 1], task_heads=2, head="output")
    with pytest.raises(ValueError, match="head='bias'.*task_heads"):
        mc.MLP([3, 1], head="bias")
    with pytest.raises(ValueError, match="head"):
        mc._core.Net([3, 1], "relu", "mse", 2, None, "weights")


def test_spec_and_checkpoint_round_trip(tmp_path):
    model = mc.MLP([3, 4, 1], task_heads=3, head="bias")
    assert mc.MLP.from_spec(model.spec()) == model
    assert "head='bias'" in repr(model)
    assert "head" not in mc.MLP([3, 4, 1], task_heads=3).spec()   # old specs stay identical
    ts = random_taskset(model, [5, 4, 6], seed=6)
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0), steps=5, progress=False)
    mc.save(tmp_path / "ck", res)
    back = mc.load(tmp_path / "ck")
    np.testing.assert_array_equal(back.theta, res.theta)
