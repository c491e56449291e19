"""Learning rates, as every public function takes them.

- A scalar rate (adapt's ``lr``, a learner's ``inner_lr``, an optimizer's ``lr``, a weighting's,
  the estimators') is a step size: a negative or non-finite one is a ValueError naming it.
- A per-parameter rate array (``lr`` of mc.adapt / adapt_predict / adapt_batch / evaluate) holds
  the rates Meta-SGD and MAML++ learn, which the papers leave unconstrained in sign: a negative
  entry is an ascent step on its parameter, computed exactly as the reference does, and
  mc.evaluate and ``metacore predict`` adapt a trained Meta-SGD through it. A non-finite entry is
  a ValueError naming ``lr`` and the entry's index.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore import reference as ref


def _task(seed, d=2, n=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=n)


@settings(max_examples=60, deadline=None)
@given(hidden=st.integers(1, 6), steps=st.integers(0, 3), rows=st.integers(0, 3),
       negative=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_signed_rate_arrays_adapt_exactly_as_the_reference(hidden, steps, rows, negative, seed):
    """(P,) rates when ``rows`` is 0, else (rows, P) rates per step; a share ``negative`` of
    the entries is negative."""
    model = mc.MLP([2, hidden, 1], activation="tanh")
    rng = np.random.default_rng(seed)
    theta = model.init(seed=seed % 1000, dtype=np.float64)
    shape = (model.n_params,) if rows == 0 else (rows, model.n_params)
    lr = rng.uniform(0.001, 0.05, shape) * np.where(rng.random(shape) < negative, -1.0, 1.0)
    X, y = _task(seed)
    Xq = rng.normal(size=(4, 2))
    want = ref.adapt(model, theta, X, y, steps=steps, lr=lr)
    np.testing.assert_allclose(mc.adapt(model, theta, X, y, steps=steps, lr=lr), want,
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mc.adapt_predict(model, theta, X, y, Xq, steps=steps, lr=lr),
                               ref.predict(model, want, Xq), rtol=1e-11, atol=1e-12)
    ts = mc.TaskSet.from_arrays([np.vstack([X, Xq])], [np.concatenate([y, np.zeros(4)])],
                                n_support=X.shape[0])
    phis, _ = mc.adapt_batch(model, theta, ts, steps=steps, lr=lr)
    np.testing.assert_allclose(phis[0], want, rtol=1e-12, atol=1e-13)


def test_a_trained_metasgd_with_negative_rates_is_evaluated_with_them():
    """The case the signed arrays are for: Meta-SGD's learned rates, some negative, reach
    mc.evaluate (and metacore predict) as the lr array of the latency path."""
    model = mc.MLP([1, 8, 1], activation="tanh")
    learner = mc.MetaSGD(model, inner_lr=0.01)
    params = learner.init(model.init(seed=0, dtype=np.float64))
    theta, rates = learner.split(params)
    rates[::3] = -0.02        # as a run may learn them (the paper: α sets the direction too)
    test = mc.tasks.sinusoid(6, k_support=5, k_query=5, seed=3, dtype=np.float64)
    by_learner = mc.evaluate(model, params, test, steps=(0, 1, 2), learner=learner,
                             progress=False)
    by_lr = mc.evaluate(model, theta, test, steps=(0, 1, 2), lr=rates, progress=False)
    np.testing.assert_array_equal(by_learner.losses, by_lr.losses)
    for i in range(test.n_tasks):
        Xs, ys = test.support(i)
        Xq, yq = test.query(i)
        phi = ref.adapt(model, theta, Xs, ys, steps=2, lr=rates)
        assert by_lr.losses[2, i] == pytest.approx(np.mean((ref.predict(model, phi, Xq) - yq)
                                                           ** 2), rel=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rows", [0, 1, 3])
@pytest.mark.parametrize("at", [0, 5, -1])
def test_a_non_finite_rate_is_refused_naming_lr_and_its_index(bad, rows, at):
    model = mc.MLP([2, 3, 1])
    theta = model.init(seed=0, dtype=np.float64)
    P = model.n_params
    lr = np.full((P,) if rows == 0 else (rows, P), 0.01)
    where = (at % P,) if rows == 0 else (rows - 1, at % P)
    lr[where] = bad
    X, y = _task(0)
    ts = mc.TaskSet.from_arrays([X], [y], n_support=3)
    calls = [lambda: mc.adapt(model, theta, X, y, steps=1, lr=lr),
             lambda: mc.adapt_predict(model, theta, X, y, X, steps=1, lr=lr),
             lambda: mc.adapt_batch(model, theta, ts, steps=1, lr=lr),
             lambda: mc.evaluate(model, theta, ts, steps=(0, 1), lr=lr, progress=False)]
    for call in calls:
        with pytest.raises(ValueError, match=rf"^lr must be finite, found {bad} at index "
                                             rf"\({', '.join(map(str, where))},?\)$"):
            call()


@pytest.mark.parametrize("lr", [-0.01, -1e-300, np.float32(-0.5), np.array(-0.01), np.nan,
                                np.inf])
def test_a_scalar_rate_must_be_a_finite_step_size(lr):
    model = mc.MLP([2, 3, 1])
    theta = model.init(seed=0, dtype=np.float64)
    X, y = _task(1)
    ts = mc.TaskSet.from_arrays([X], [y], n_support=3)
    for call in (lambda: mc.adapt(model, theta, X, y, steps=1, lr=lr),
                 lambda: mc.adapt_predict(model, theta, X, y, X, steps=1, lr=lr),
                 lambda: mc.adapt_batch(model, theta, ts, steps=1, lr=lr),
                 lambda: mc.evaluate(model, theta, ts, steps=(1,), lr=lr, progress=False)):
        with pytest.raises(ValueError, match=r"^lr must be (>= 0\.0|finite), got "):
            call()


def _every_scalar_rate(rate):
    """(name, call) for every public argument that is a learning rate or step size."""
    from metacore import sklearn as sk
    model = mc.MLP([1, 3, 1])
    ts = mc.tasks.sinusoid(3, k_support=3, k_query=3, seed=0, dtype=np.float64)
    theta = model.init(seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    X, y, g = rng.normal(size=(12, 1)), rng.normal(size=12), np.repeat([0, 1], 6)
    return [
        ("lr", lambda: mc.optim.SGD(lr=rate)), ("lr", lambda: mc.optim.Adam(lr=rate)),
        ("lr", lambda: mc.optim.AdamW(lr=rate)),
        ("groups", lambda: mc.optim.Adam(groups={"head": {"lr": rate}})),
        ("inner_lr", lambda: mc.MAML(model, inner_lr=rate)),
        ("inner_lr", lambda: mc.FOMAML(model, inner_lr=rate)),
        ("inner_lr", lambda: mc.ANIL(model, inner_lr=rate)),
        ("inner_lr", lambda: mc.MetaSGD(model, inner_lr=rate)),
        ("inner_lr", lambda: mc.Reptile(model, inner_lr=rate)),
        ("outer_lr", lambda: mc.Reptile(model, outer_lr=rate)),
        ("inner_lr", lambda: mc.IMAML(model, inner_lr=rate)),
        ("lr", lambda: mc.IMAML(model).query_outputs(theta, ts, steps=1, lr=rate)),
        ("lr", lambda: mc.weighting.FAMO(lr=rate)), ("lr", lambda: mc.weighting.GradNorm(lr=rate)),
        ("lr", lambda: mc.weighting.Uncertainty(lr=rate)),
        ("lr", lambda: mc.baselines.joint(model, ts, theta, steps=1, lr=rate)),
        ("lrs", lambda: mc.baselines.best_lr(model, theta, ts, [0.01, rate])),
        ("learning_rate_init", lambda: sk.MultiTaskMLPRegressor(
            learning_rate_init=rate, max_iter=1).fit(X, y, groups=g)),
        ("inner_lr", lambda: sk.MetaMLPRegressor(inner_lr=rate, max_iter=1).fit(X, y, groups=g)),
        ("outer_lr", lambda: sk.MetaMLPRegressor(learner="reptile", outer_lr=rate,
                                                 max_iter=1).fit(X, y, groups=g)),
    ]


@pytest.mark.parametrize("rate", [-0.01, -np.inf, np.nan, np.array(-1.0)])
def test_every_scalar_rate_refuses_a_negative_or_non_finite_value_naming_it(rate):
    for name, call in _every_scalar_rate(rate):
        with pytest.raises(ValueError, match=name):
            call()
