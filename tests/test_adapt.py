"""The adapt-and-predict path: against the reference, Meta-SGD rates and ANIL's head-only rule,
the batched form, many Python threads at once, and argument checks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref


def task(model, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, model.n_features))
    if model.loss == "mse":
        y = rng.normal(size=n) if model.n_outputs == 1 else rng.normal(size=(n, model.n_outputs))
    elif model.loss == "logistic":
        y = rng.integers(0, 2, size=n).astype(float)
    else:
        y = rng.integers(0, model.n_outputs, size=n).astype(float)
    return X, y


MODELS = [mc.MLP([1, 40, 40, 1], activation="relu"), mc.MLP([3, 7, 2], activation="tanh"),
          mc.MLP([4, 16, 3], loss="cross_entropy"), mc.Logistic(5), mc.Softmax(2, 4)]


@pytest.mark.parametrize("model", MODELS, ids=repr)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_adapt_and_predict_match_the_reference(model, dtype, tol):
    X, y = task(model, 10, 0)
    Xq, _ = task(model, 37, 1)
    theta = model.init(seed=0)
    phi = mc.adapt(model, theta.astype(dtype), X, y, steps=5, lr=0.05)
    phi_ref = ref.adapt(model, theta, X, y, steps=5, lr=0.05)
    assert phi.dtype == dtype
    np.testing.assert_allclose(phi, phi_ref, rtol=tol, atol=tol)
    out = mc.adapt_predict(model, theta.astype(dtype), X, y, Xq, steps=5, lr=0.05)
    expected = ref.predict(model, phi_ref, Xq)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=tol * 10, atol=tol * 10)


def test_zero_steps_is_plain_prediction():
    model = MODELS[0]
    X, y = task(model, 10, 0)
    theta = model.init(seed=0)
    np.testing.assert_array_equal(mc.adapt(model, theta, X, y, steps=0), theta)
    np.testing.assert_allclose(mc.adapt_predict(model, theta, X, y, X, steps=0),
                               model.predict(theta, X), rtol=1e-14)


def test_meta_sgd_rates_and_anil_head_only():
    model = mc.MLP([2, 6, 1], activation="tanh")
    X, y = task(model, 8, 0)
    theta = model.init(seed=1)
    rates = np.random.default_rng(2).uniform(0.0, 0.1, size=model.n_params)
    np.testing.assert_allclose(mc.adapt(model, theta, X, y, steps=3, lr=rates),
                               ref.adapt(model, theta, X, y, steps=3, lr=rates), rtol=1e-12)
    head = mc.adapt(model, theta, X, y, steps=3, lr=0.1, head_only=True)
    trunk = model.n_trunk_params
    np.testing.assert_array_equal(head[:trunk], theta[:trunk])
    head_rates = np.where(np.arange(model.n_params) >= trunk, 0.1, 0.0)
    np.testing.assert_allclose(head, ref.adapt(model, theta, X, y, steps=3, lr=head_rates),
                               rtol=1e-12)
    msgd = mc.MetaSGD(model, inner_steps=3)
    params = np.concatenate([theta, rates])
    np.testing.assert_allclose(msgd.adapt_predict(params, X, y, X),
                               ref.adapt_predict(model, theta, X, y, X, steps=3, lr=rates),
                               rtol=1e-12)


def test_batched_adapt_matches_one_task_at_a_time():
    model = mc.MLP([1, 40, 40, 1], activation="relu")
    ts = mc.tasks.SinusoidSource(k_support=10, k_query=15).sample(9, seed=4, dtype=np.float64)
    theta = model.init(seed=0)
    phis, preds = mc.adapt_batch(model, theta, ts, steps=3, lr=0.01, n_threads=2)
    assert phis.shape == (9, model.n_params) and preds.shape == (9 * 15,)
    for i in range(ts.n_tasks):
        (Xs, ys), (Xq, _) = ts.support(i), ts.query(i)
        np.testing.assert_array_equal(phis[i], mc.adapt(model, theta, Xs, ys, steps=3, lr=0.01))
        np.testing.assert_array_equal(preds[15 * i:15 * (i + 1)],
                                      mc.adapt_predict(model, theta, Xs, ys, Xq, steps=3, lr=0.01))


def test_many_python_threads_get_the_serial_results():
    model = mc.MLP([1, 40, 40, 1], activation="relu")
    theta = model.init(seed=0, dtype=np.float32)
    jobs = [task(model, 10, s) + (task(model, 100, 100 + s)[0],) for s in range(8)]
    serial = [mc.adapt_predict(model, theta, X, y, Xq, steps=5, lr=0.01) for X, y, Xq in jobs]
    results = [[None] * 50 for _ in jobs]
    start = threading.Barrier(len(jobs))

    def worker(i):
        X, y, Xq = jobs[i]
        start.wait()
        for r in range(50):
            results[i][r] = mc.adapt_predict(model, theta, X, y, Xq, steps=5, lr=0.01)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(jobs)):
        for out in results[i]:
            np.testing.assert_array_equal(out, serial[i])


def test_array_likes_and_read_only_inputs_are_accepted():
    model = mc.MLP([2, 5, 1], activation="tanh")
    X, y = task(model, 6, 0)
    theta = model.init(seed=0)
    X.flags.writeable = False
    expected = mc.adapt(model, theta, X, y, steps=2, lr=0.1)
    np.testing.assert_array_equal(mc.adapt(model, list(theta), X.tolist(), list(y), steps=2,
                                           lr=0.1), expected)
    np.testing.assert_array_equal(mc.adapt(model, theta, np.asfortranarray(X), y, steps=2,
                                           lr=0.1), expected)


def test_bad_arguments_are_rejected_with_their_names():
    model = mc.MLP([2, 5, 1], activation="tanh")
    X, y = task(model, 6, 0)
    theta = model.init(seed=0)
    with pytest.raises(ValueError, match="lr must be"):
        mc.adapt(model, theta, X, y, lr=-0.1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        mc.adapt(model, theta, X, y, steps=-1)
    with pytest.raises(ValueError, match="theta"):
        mc.adapt(model, theta[:-1], X, y)
    with pytest.raises(TypeError, match="theta"):
        mc.adapt(model, theta.astype(np.int32), X, y)
    with pytest.raises(ValueError, match="X_support"):
        mc.adapt(model, theta, X[:, :1], y)
    with pytest.raises(ValueError, match="X_support must have at least 1 row"):
        mc.adapt(model, theta, X[:0], y[:0])
    with pytest.raises(ValueError, match="y_support"):
        mc.adapt(model, theta, X, y[:-1])
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="X_support must be finite"):
        mc.adapt(model, theta, bad, y)
    with pytest.raises(ValueError, match="X_query"):
        mc.adapt_predict(model, theta, X, y, X[:, :1])
    with pytest.raises(ValueError, match="lr must be a scalar or one rate per parameter"):
        mc.adapt(model, theta, X, y, lr=np.ones(3))
    with pytest.raises(ValueError, match="task_heads"):
        mc.adapt(mc.MLP([2, 5, 1], task_heads=2), np.zeros(mc.MLP([2, 5, 1], task_heads=2)
                                                          .n_params), X, y)
