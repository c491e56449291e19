"""EvalDriven(metric="accuracy"): α follows each task's held-out accuracy (the seed's "adjust α
from the evaluation"); metric="loss" keeps scoring by exp(−loss)."""

import numpy as np
import pytest

import metacore as mc
from metacore import weighting as W


def two_tasks(seed=0):
    """Task 0 separable by x_0 (easy), task 1 random labels (hard): 40 support + 40 query rows."""
    rng = np.random.default_rng(seed)
    X0, X1 = rng.normal(size=(80, 2)), rng.normal(size=(80, 2))
    y0 = (X0[:, 0] > 0).astype(float)
    y1 = rng.integers(0, 2, 80).astype(float)
    return mc.TaskSet.from_arrays([X0, X1], [y0, y1], n_support=40)


def test_accuracy_metric_weights_the_less_accurate_task_more():
    ts = two_tasks()
    model = mc.Softmax(2, 2)
    obj = mc.Objective(model, ts, rows="support")
    w = W.EvalDriven(metric="accuracy", eval_every=5, temperature=0.1)
    res = mc.fit(obj, model.init(0), weighting=w, steps=50, eval_every=5, progress=False,
                 optimizer=mc.optim.Adam(lr=0.05))
    alpha = res.history.weights[-1]
    assert alpha[1] > alpha[0]
    np.testing.assert_allclose(alpha.sum(), 1.0)
    # α = softmax((1 − accuracy) / τ) from the query accuracies at θ of the last α update
    theta = res.theta
    acc = [np.mean(np.argmax(model.predict(theta, ts.query(i)[0]), 1) == ts.query(i)[1])
           for i in range(2)]
    assert acc[0] > acc[1]


def test_accuracy_metric_needs_a_classifier_and_survives_to_dict():
    ts = mc.TaskSet.from_arrays([np.ones((4, 1)), np.zeros((4, 1))], [np.ones(4), np.zeros(4)],
                                n_support=2)
    obj = mc.Objective(mc.Linear(1), ts, rows="support")
    with pytest.raises(ValueError, match="metric='accuracy'.*mse"):
        mc.fit(obj, np.zeros(2), weighting=W.EvalDriven(metric="accuracy"), steps=2,
               progress=False)
    w = W.EvalDriven("dtp", metric="accuracy", eval_every=3)
    assert W.from_dict(w.to_dict()) == w and w.metric == "accuracy"
    assert W.EvalDriven().metric == "loss"
    with pytest.raises(ValueError, match="metric"):
        W.EvalDriven(metric="f1")


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_a_task_without_query_rows_does_not_move_the_others_onto_their_training_rows(metric):
    """One task too small to hold a row out (all support) is scored on its rows; every other
    task still on its held-out query rows — not all of them on their training rows."""
    rng = np.random.default_rng(1)
    Xs = [rng.normal(size=(80, 2)), rng.normal(size=(80, 2)), rng.normal(size=(1, 2))]
    ys = [(Xs[0][:, 0] > 0).astype(float), rng.integers(0, 2, 80).astype(float), np.zeros(1)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=[40, 40, 1])
    model = mc.Softmax(2, 2)
    obj = mc.Objective(model, ts, rows="support")
    w = W.EvalDriven(metric=metric, eval_every=5, temperature=0.1)
    res = mc.fit(obj, model.init(0), weighting=w, steps=20, eval_every=5, progress=False,
                 optimizer=mc.optim.Adam(lr=0.05))
    # the direct computation at the θ of the last α update (step 15): the rows each task is
    # scored on — query rows of tasks 0 and 1, the single row of task 2
    theta = mc.fit(obj, model.init(0), weighting=W.EvalDriven(metric=metric, eval_every=5,
                                                              temperature=0.1),
                   steps=15, eval_every=5, progress=False,
                   optimizer=mc.optim.Adam(lr=0.05)).theta
    scored = [ts.query(0), ts.query(1), ts.support(2)]
    ell = []     # ℓ_i: the error rate (accuracy) or the mean cross-entropy (loss)
    for X, y in scored:
        z = model.predict(theta, X).astype(np.float64)
        if metric == "accuracy":
            ell.append(1.0 - np.mean(z.argmax(axis=1) == y))
        else:
            m = z.max(axis=1)
            lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
            ell.append(np.mean(lse - z[np.arange(len(y)), y.astype(int)]))
    expected = np.exp(np.array(ell) / 0.1)       # α = softmax(ℓ / τ)
    np.testing.assert_allclose(res.history.weights[-1], expected / expected.sum(), rtol=1e-4)
