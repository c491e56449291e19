"""``MultiTaskMLPRegressor(task_heads=True, head="bias")``: one shared net and one learned output
bias per task. Checked against closed forms (with no hidden layer it is ridge regression with
one-hot task columns), scikit-learn's conventions and bad-input messages."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge

import metacore as mc
from metacore.sklearn import MultiTaskMLPClassifier, MultiTaskMLPRegressor


def grouped_data(seed=0, n_tasks=4, n=30, d=3):
    """Equal-size tasks sharing one slope, each with its own level."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_tasks * n, d))
    g = np.repeat(np.arange(n_tasks), n)
    levels = 4.0 * rng.normal(size=n_tasks)
    y = X @ rng.normal(size=d) + levels[g] + 0.1 * rng.normal(size=n_tasks * n)
    return X, y, g


def test_linear_bias_heads_converge_to_ridge_with_one_hot_task_columns():
    # equal task sizes: f = (1/N) Σ_rows r² + (λ/2)‖θ‖², the minimiser of the ridge problem
    # ‖y − Aθ‖² + (Nλ/2)‖θ‖² with A = [X, one-hot(task)] and no free intercept
    X, y, g = grouped_data()
    lam = 0.01
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(), task_heads=True, head="bias", alpha=lam,
                                learning_rate_init=0.05, max_iter=3000, dtype="float64",
                                random_state=0).fit(X, y, groups=g)
    A = np.hstack([X, np.eye(4)[g]])
    ridge = Ridge(alpha=len(y) * lam / 2, fit_intercept=False).fit(A, y)
    np.testing.assert_allclose(est.theta_, ridge.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.predict(X, groups=g), ridge.predict(A), rtol=1e-5, atol=1e-5)


def test_a_net_with_bias_heads_recovers_the_task_levels():
    X, y, g = grouped_data(seed=1)
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(8,), task_heads=True, head="bias",
                                max_iter=800, dtype="float64", random_state=0)
    est.fit(X, y, groups=g)
    model = est._model()
    assert model.head == "bias" and est.theta_.shape == (model.n_params,)
    assert model.n_params == 3 * 8 + 8 + 8 + 4
    shared = MultiTaskMLPRegressor(hidden_layer_sizes=(8,), max_iter=800, dtype="float64",
                                   random_state=0).fit(X, y, groups=g)
    assert est.score(X, y, groups=g) > 0.99 > shared.score(X, y, groups=g)


def test_parameters_follow_scikit_learn_conventions():
    est = MultiTaskMLPRegressor(task_heads=True, head="bias")
    assert est.get_params()["head"] == "bias" and clone(est).head == "bias"
    assert MultiTaskMLPRegressor().head == "full"
    X, y, g = grouped_data(seed=2)
    est.set_params(max_iter=20, random_state=0).fit(X, y, groups=g)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X, groups=g), est.predict(X, groups=g))
    with pytest.raises(ValueError, match="groups"):
        est.predict(X)
    with pytest.raises(ValueError, match="not seen in fit"):
        est.predict(X[:2], groups=[7, 7])


def test_classifier_takes_bias_heads_too():
    X, _, g = grouped_data(seed=3)
    y = (X[:, 0] + g > 1.5).astype(int)
    est = MultiTaskMLPClassifier(hidden_layer_sizes=(4,), task_heads=True, head="bias",
                                 max_iter=200, random_state=0).fit(X, y, groups=g)
    assert est.predict_proba(X, groups=g).shape == (len(y), 2)
    assert est.score(X, y, groups=g) > 0.9


@pytest.mark.parametrize("kw, match", [
    (dict(task_heads=True, head="weights"), "head must be one of"),
    (dict(head="bias"), "head='bias'.*needs task_heads=True"),
])
def test_bad_head_is_refused_by_name(kw, match):
    X, y, g = grouped_data(seed=4)
    with pytest.raises(ValueError, match=match):
        MultiTaskMLPRegressor(max_iter=2, **kw).fit(X, y, groups=g)
