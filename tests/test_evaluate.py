"""mc.evaluate and its confidence intervals; reports as table, JSON and plot."""

import json
import math

import numpy as np
import pytest

import metacore as mc
from metacore.evaluation.statistics import t_quantile


# --- the interval --------------------------------------------------------------------------------
@pytest.mark.parametrize("p, nu, expected", [
    (0.975, 1, 12.706204736174698), (0.975, 2, 4.302652729749464),
    (0.975, 9, 2.262157162798205), (0.975, 599, 1.9639322489452784),
    (0.995, 30, 2.749995653567071), (0.975, 10 ** 6, 1.959966356814107)])
def test_t_quantile_matches_tables(p, nu, expected):
    assert t_quantile(p, nu) == pytest.approx(expected, rel=1e-9)


def test_mean_ci_on_a_known_case():
    # 1..10: mean 5.5, s = √(55/6), h = t_{0.975,9} · s / √10
    mean, h = mc.mean_ci(np.arange(1, 11))
    assert mean == 5.5
    assert h == pytest.approx(2.262157162798205 * math.sqrt(55 / 6) / math.sqrt(10), rel=1e-12)
    assert mc.mean_ci([3.0])[0] == 3.0 and math.isnan(mc.mean_ci([3.0])[1])
    assert mc.mean_ci([1.0, np.inf])[0] == math.inf


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        m, h = mc.mean_ci(rng.normal(1.0, 2.0, size=8))
        hits += abs(m - 1.0) <= h
    assert 0.92 <= hits / 400 <= 0.98


# --- evaluation ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sinusoids():
    model = mc.MLP([1, 16, 1], activation="tanh", loss="mse")
    return model, model.init(seed=0), mc.tasks.sinusoid(30, k_support=5, k_query=8, seed=1,
                                                        dtype=np.float64)


def test_zero_steps_scores_theta_itself(sinusoids):
    model, theta, ts = sinusoids
    rep = mc.evaluate(model, theta, ts, steps=(0,))
    expected = mc.Objective(model, ts, rows="query").task_losses(theta)
    np.testing.assert_allclose(rep.losses[0], expected, rtol=1e-12)
    assert rep.accuracies is None and rep.n_tasks == 30


def test_k_steps_score_the_adapted_theta(sinusoids):
    model, theta, ts = sinusoids
    rep = mc.evaluate(model, theta, ts, steps=(0, 3), lr=0.05)
    for i in (0, 17):
        Xs, ys = ts.support(i)
        Xq, yq = ts.query(i)
        pred = mc.adapt_predict(model, theta, Xs, ys, Xq, steps=3, lr=0.05)
        assert rep.losses[1, i] == pytest.approx(np.mean((pred - yq) ** 2), rel=1e-10)
    row = rep.summary()[1]
    assert (row["loss"], row["loss_ci"]) == pytest.approx(mc.mean_ci(rep.losses[1]))


def test_learner_rules_apply(sinusoids):
    model, theta, ts = sinusoids
    sgd = mc.MetaSGD(model, inner_lr=0.05)
    params = sgd.init(theta)
    params[model.n_params:] *= np.linspace(0.5, 1.5, model.n_params)
    rep = mc.evaluate(model, params, ts, steps=(2,), learner=sgd)
    manual = mc.evaluate(model, theta, ts, steps=(2,), lr=params[model.n_params:].copy())
    np.testing.assert_allclose(rep.losses, manual.losses, rtol=1e-12)
    anil = mc.evaluate(model, theta, ts, steps=(2,), learner=mc.ANIL(model, inner_lr=0.05))
    assert not np.allclose(anil.losses, mc.evaluate(model, theta, ts, steps=(2,),
                                                    lr=0.05).losses)


def test_classifiers_get_accuracy():
    model = mc.Softmax(4, 3)
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(9, 4)) for _ in range(5)]
    ys = [np.tile([0, 1, 2], 3) for _ in range(5)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=3)
    theta = model.init(seed=1)
    rep = mc.evaluate(model, theta, ts, steps=(0,))
    for i in range(5):
        Xq, yq = ts.query(i)
        acc = np.mean(model.predict(theta, Xq).argmax(axis=1) == yq)
        assert rep.accuracies[0, i] == pytest.approx(acc)
    assert "accuracy" in rep.summary()[0]


def test_diverged_tasks_are_reported_not_raised(sinusoids):
    model, theta, ts = sinusoids
    rep = mc.evaluate(model, theta, ts, steps=(0, 30), lr=50.0)
    assert np.isfinite(rep.losses[0]).all()
    assert rep.summary()[1]["loss"] == math.inf
    assert "diverged" in mc.report.format_table([rep])


def test_bad_arguments_are_named(sinusoids):
    model, theta, ts = sinusoids
    with pytest.raises(ValueError, match="steps"):
        mc.evaluate(model, theta, ts, steps=(-1,))
    with pytest.raises(ValueError, match="query rows"):
        mc.evaluate(model, theta, ts.with_support(13))
    with pytest.raises(TypeError, match="test_tasks"):
        mc.evaluate(model, theta, [1, 2])


# --- reports -------------------------------------------------------------------------------------
def test_table_json_and_plot(sinusoids, tmp_path):
    model, theta, ts = sinusoids
    a = mc.evaluate(model, theta, ts, steps=(0, 1), name="A")
    b = mc.evaluate(model, theta, ts, steps=(0, 1, 5), name="B")
    table = mc.report.format_table({"A": a, "B": b})
    lines = table.splitlines()
    assert lines[1].split()[:4] == ["method", "0", "steps", "1"] and len(lines) == 5
    m, h = a.at(1)
    assert f"{m:.3f} ± {h:.3f}" in lines[3]
    path = tmp_path / "r.json"
    mc.report.save_json([a, b], path, extra={"note": 1})
    data = json.loads(path.read_text())
    assert data["note"] == 1 and data["reports"][1]["summary"][2]["steps"] == 5
    pytest.importorskip("matplotlib")
    assert mc.report.plot([a, b], tmp_path / "p.png") is not None
    assert (tmp_path / "p.png").stat().st_size > 1000
