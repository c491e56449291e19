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
