"""Richer heads started from a simpler fit: ``MLP.theta_from`` (the trunk copied, every task's
head set from the source's) and scikit-learn's ``warm_start`` across ``task_heads``/``head``
(bias-only heads, then a full head per task starting at the shared one: the two-stage school
model). Checked by the predictions, task by task, against the source model's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.sklearn import MultiTaskMLPClassifier, MultiTaskMLPRegressor

LAYOUTS = [(None, "full"), (3, "full"), (3, "bias")]
# (source, destination) pairs that keep every task's function; the others lose parameters
KEEPS = {((None, "full"), d) for d in LAYOUTS} | {((3, "bias"), (3, "full")),
                                                  ((3, "bias"), (3, "bias")),
                                                  ((3, "full"), (3, "full"))}


@settings(max_examples=60, deadline=None)
@given(src=st.sampled_from(LAYOUTS), dst=st.sampled_from(LAYOUTS),
       hidden=st.lists(st.integers(1, 9), min_size=0, max_size=2), k=st.integers(1, 3),
       norm=st.sampled_from([None, "layer"]), seed=st.integers(0, 2**16))
def test_theta_from_keeps_every_tasks_function_or_refuses(src, dst, hidden, k, norm, seed):
    if norm and not hidden:
        norm = None                                  # a norm needs a hidden layer
    sizes = [4, *hidden, k]
    source = mc.MLP(sizes, task_heads=src[0], head=src[1], norm=norm)
    target = mc.MLP(sizes, task_heads=dst[0], head=dst[1], norm=norm)
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=source.n_params)
    X = rng.normal(size=(7, 4))
    if (src, dst) not in KEEPS:
        with pytest.raises(ValueError, match="do not map onto"):
            target.theta_from(source, theta)
        return
    out = target.theta_from(source, theta)
    assert out.shape == (target.n_params,) and out.dtype == theta.dtype
    for t in range(target.task_heads or 1):
        expected = source.predict(theta, X, task=0 if source.task_heads is None else t)
        np.testing.assert_allclose(target.predict(out, X, task=t), expected, rtol=1e-12,
                                   atol=1e-12)


def test_theta_from_refuses_other_sizes_and_norms():
    theta = mc.MLP([3, 4, 1]).init(seed=0)
    with pytest.raises(ValueError, match="layer sizes"):
        mc.MLP([3, 5, 1], task_heads=2).theta_from(mc.MLP([3, 4, 1]), theta)
    with pytest.raises(ValueError, match="norm"):
        mc.MLP([3, 4, 1], norm="layer").theta_from(mc.MLP([3, 4, 1]), theta)
    with pytest.raises(ValueError, match="activation 'relu'"):
        mc.MLP([3, 4, 1], activation="tanh").theta_from(mc.MLP([3, 4, 1]), theta)
    with pytest.raises(ValueError, match="theta"):
        mc.MLP([3, 4, 1]).theta_from(mc.MLP([3, 4, 1]), theta[:-1])


def grouped(seed=0, n_tasks=4, n=40, d=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_tasks * n, d))
    g = np.repeat(np.arange(n_tasks), n)
    slopes = rng.normal(size=(n_tasks, d))       # each task its own slopes: full heads pay
    y = np.einsum("nd,nd->n", X, slopes[g]) + 3.0 * g + 0.1 * rng.normal(size=n_tasks * n)
    return X, y, g


def test_warm_start_from_bias_heads_to_full_heads_starts_where_it_stopped():
    X, y, g = grouped()
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(), task_heads=True, head="bias",
                                max_iter=300, learning_rate_init=0.05, random_state=0)
    before = est.fit(X, y, groups=g).predict(X, groups=g)
    est.set_params(head="full")
    # predict follows the fitted layout, not the parameter changed since
    np.testing.assert_array_equal(est.predict(X, groups=g), before)
    score_bias = est.score(X, y, groups=g)
    est.set_params(warm_start=True, max_iter=1, learning_rate_init=1e-30)
    np.testing.assert_allclose(est.fit(X, y, groups=g).predict(X, groups=g), before,
                               rtol=1e-5, atol=1e-5)
    assert est.head_layout_ == (4, "full")
    est.set_params(max_iter=300, learning_rate_init=0.05)
    assert est.fit(X, y, groups=g).score(X, y, groups=g) > score_bias + 0.05


def test_warm_start_refuses_heads_it_cannot_start():
    X, y, g = grouped()
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(4,), task_heads=True, max_iter=5,
                                random_state=0).fit(X, y, groups=g)
    est.set_params(head="bias", warm_start=True)
    with pytest.raises(ValueError, match=r"warm_start=True: the previous fit's heads "
                                         r"\(task_heads=True, head='full'\)"):
        est.fit(X, y, groups=g)
    est.set_params(head="full", task_heads=False)
    with pytest.raises(ValueError, match="warm_start=True"):
        est.fit(X, y, groups=g)


def test_classifier_warm_start_from_a_shared_head_to_task_heads():
    X, y, g = grouped()
    labels = (y > np.median(y)).astype(int)
    est = MultiTaskMLPClassifier(hidden_layer_sizes=(5,), max_iter=50, random_state=0)
    before = est.fit(X, labels, groups=g).predict_proba(X, groups=g)
    est.set_params(task_heads=True, warm_start=True, max_iter=1, learning_rate_init=1e-30)
    np.testing.assert_allclose(est.fit(X, labels, groups=g).predict_proba(X, groups=g), before,
                               rtol=1e-5, atol=1e-6)


def test_solver_sgd_takes_plain_gradient_steps():
    """solver="sgd": θ ← θ − r (∇ mean squared error + λθ), checked against the closed-form
    gradient of a linear model in NumPy (float64)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=50)
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(), solver="sgd", alpha=0.01, max_iter=1,
                                learning_rate_init=1e-300, dtype="float64", random_state=0)
    theta = est.fit(X, y).theta_.copy()          # the start (a step of 1e-300 changes nothing)
    est.set_params(warm_start=True, learning_rate_init=0.1, max_iter=3).fit(X, y)
    for _ in range(3):
        w, b = theta[:3], theta[3]
        r = X @ w + b - y
        grad = np.append(2.0 * X.T @ r / 50, 2.0 * r.mean()) + 0.01 * theta
        theta = theta - 0.1 * grad
    np.testing.assert_allclose(est.theta_, theta, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="solver"):
        MultiTaskMLPRegressor(solver="lbfgs").fit(X, y)


def test_a_refused_warm_start_leaves_the_fitted_estimator_as_it_was():
    X, y, g = grouped()
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(4,), task_heads=True, max_iter=5,
                                random_state=0).fit(X, y, groups=g)
    before = est.predict(X, groups=g)
    est.set_params(head="bias", warm_start=True)
    with pytest.raises(ValueError, match="warm_start=True"):
        est.fit(X, y, groups=g)
    np.testing.assert_array_equal(est.predict(X, groups=g), before)
    assert est.head_layout_ == (4, "full")
    est.set_params(head="full")
    with pytest.raises(ValueError, match="tasks differ"):
        est.fit(X[g < 2], y[g < 2], groups=g[g < 2])
    np.testing.assert_array_equal(est.predict(X, groups=g), before)
    assert list(est.tasks_) == [0, 1, 2, 3]
