"""mc.evaluate and its confidence intervals; reports as table, JSON and plot."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.evaluation import statistics as stats
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
    rep = mc.evaluate(model, theta, ts, steps=(0, 30), lr=1e6)
    assert np.isfinite(rep.losses[0]).all() and np.isinf(rep.losses[1]).all()
    assert rep.summary()[1]["loss"] == math.inf
    assert "diverged" in mc.report.format_table([rep])
    # at lr=50 the losses blow up to 1e173..3e191 but stay finite: the summary is their mean
    # (it once said inf, from the squares of the spread overflowing), shown as a magnitude
    rep = mc.evaluate(model, theta, ts, steps=(0, 30), lr=50.0)
    assert np.isfinite(rep.losses[1]).all() and rep.losses[1].max() > 1e170
    assert rep.summary()[1]["loss"] == pytest.approx(np.mean(rep.losses[1]), rel=1e-12)
    assert f"{np.mean(rep.losses[1]):.1e}" in mc.report.format_table([rep])


def test_bad_arguments_are_named(sinusoids):
    model, theta, ts = sinusoids
    with pytest.raises(ValueError, match="steps"):
        mc.evaluate(model, theta, ts, steps=(-1,))
    with pytest.raises(ValueError, match="query rows"):
        mc.evaluate(model, theta, ts.with_support(13))
    with pytest.raises(TypeError, match="test_tasks"):
        mc.evaluate(model, theta, [1, 2])


def _covering(m, h, shown, digits):
    """The half-width shown next to the mean printed as ``shown``: the smallest multiple of
    10^-digits with shown ± it covering [m − h, m + h] (the oracle of honest rounding)."""
    need = h + abs(m - float(shown))
    k = math.ceil(round(need * 10 ** digits, 6))
    return f"{k / 10 ** digits:.{digits}f}"


# --- reports -------------------------------------------------------------------------------------
def test_table_json_and_plot(sinusoids, tmp_path):
    model, theta, ts = sinusoids
    a = mc.evaluate(model, theta, ts, steps=(0, 1), name="A")
    b = mc.evaluate(model, theta, ts, steps=(0, 1, 5), name="B")
    table = mc.report.format_table({"A": a, "B": b})
    lines = table.splitlines()
    assert lines[1].split()[:4] == ["method", "0", "steps", "1"] and len(lines) == 5
    m, h = a.at(1)
    shown = f"{m:.3f}"
    assert f"{shown} ± {_covering(m, h, shown, 3)}" in lines[3]
    path = tmp_path / "r.json"
    mc.report.save_json([a, b], path, extra={"note": 1})
    data = json.loads(path.read_text())
    assert data["note"] == 1 and data["reports"][1]["summary"][2]["steps"] == 5
    pytest.importorskip("matplotlib")
    assert mc.report.plot([a, b], tmp_path / "p.png") is not None
    assert (tmp_path / "p.png").stat().st_size > 1000


# --- diverged tasks, intervals, stable losses ---------------------------------------------------
def test_a_diverged_task_is_diverged_in_every_metric():
    """Adaptation that blows up gives NaN predictions; its accuracy is not the chance level an
    argmax over NaN would give, and the accuracy table says "diverged" like the loss table."""
    model = mc.Softmax(4, 5)
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(15, 4)) * 100 for _ in range(6)]
    ys = [np.arange(15) % 5 for _ in range(6)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=5)
    rep = mc.evaluate(model, model.init(seed=1), ts, steps=(0, 3), lr=1e306)
    assert np.isfinite(rep.losses[0]).all() and np.isfinite(rep.accuracies[0]).all()
    assert np.isinf(rep.losses[1]).all() and np.isnan(rep.accuracies[1]).all()
    row = rep.summary()[1]
    assert not math.isfinite(row["accuracy"]) and row["accuracy_interval"] is None
    table = mc.report.format_table([rep], metric="accuracy")
    assert table.splitlines()[3].split()[-1] == "diverged" and "20.0" not in table


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-1e300, 1e300), k=st.integers(2, 6), label=st.integers(0, 5))
def test_cross_entropy_is_exact_for_huge_equal_logits(a, k, label):
    """k equal logits of any size: the loss is log k (the old m + log Σ − z_y lost it at 1e16)."""
    from metacore.evaluation.protocol import _row_losses
    loss, _ = _row_losses("cross_entropy", np.full((1, k), a), np.array([label % k]))
    assert loss[0] == pytest.approx(math.log(k), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(z=st.lists(st.floats(-50, 50), min_size=2, max_size=5), shift=st.floats(-1e15, 1e15),
       label=st.integers(0, 4))
def test_cross_entropy_is_shift_invariant(z, shift, label):
    from metacore.evaluation.protocol import _row_losses
    z = np.array(z)
    y = np.array([label % z.shape[0]])
    base, _ = _row_losses("cross_entropy", z[None], y)
    moved, _ = _row_losses("cross_entropy", (z + shift)[None], y)
    top = int(np.argmax(z))
    exact = (z.max() - z[y[0]]) + math.log1p(math.fsum(math.exp(x - z.max())
                                                       for j, x in enumerate(z) if j != top))
    assert base[0] == pytest.approx(exact, rel=1e-12, abs=1e-12)
    assert moved[0] == pytest.approx(exact, rel=1e-6, abs=abs(shift) * 1e-15 * 8)


@settings(max_examples=200, deadline=None)
@given(v=st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_accuracy_intervals_stay_in_range_and_are_flagged_when_clipped(v):
    iv = stats.interval(v, bounds=(0.0, 1.0))
    mean, h = mc.mean_ci(v)
    assert iv.mean == mean and iv.n == len(v)
    if len(v) < stats.MIN_TASKS_FOR_CI:
        assert iv.too_few and math.isnan(iv.half_width) and math.isnan(iv.low)
        return
    assert 0.0 <= iv.low <= iv.mean <= iv.high <= 1.0
    assert iv.clipped == (mean - h < 0.0 or mean + h > 1.0)


def test_too_few_tasks_for_an_interval_is_said_not_printed():
    model = mc.Softmax(4, 3)
    rng = np.random.default_rng(0)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(9, 4)) for _ in range(2)],
                                [np.tile([0, 1, 2], 3)] * 2, n_support=3)
    rep = mc.evaluate(model, model.init(seed=1), ts, steps=(0,), name="two")
    table = mc.report.format_table([rep], metric="accuracy")
    assert "±" not in table.splitlines()[3] and "too few tasks for a 95% CI (two: 2" in table
    assert rep.summary()[0]["too_few_tasks"] and math.isnan(rep.summary()[0]["accuracy_ci"])


def test_a_clipped_interval_shows_its_ends_and_a_note():
    accs = np.array([[1.0, 1.0, 1.0, 1.0, 0.2]])
    rep = mc.EvalReport("c", (0,), np.full((1, 5), 0.5), accs)
    row = rep.summary()[0]
    assert row["accuracy_clipped"] and row["accuracy_interval"][1] == 1.0
    table = mc.report.format_table([rep], metric="accuracy")
    assert "100.0]*" in table and "clipped to the metric's range [0, 100]" in table


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_best_lr_never_picks_a_rate_under_which_a_task_diverged(metric):
    """One of six tasks diverges at the huge rate (NaN accuracy, inf loss); an argmax over
    accuracies would have returned it, as the first NaN wins there."""
    model = mc.Softmax(4, 5)
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(15, 4)) * (1e150 if i == 2 else 1.0) for i in range(6)]
    ys = [np.arange(15) % 5 for _ in range(6)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=5)
    theta = model.init(seed=1)
    huge = mc.evaluate(model, theta, ts, steps=(3,), lr=1e150)
    assert np.isnan(huge.accuracies[0, 2]) and np.isinf(huge.losses[0, 2])
    assert np.isfinite(huge.accuracies[0, [0, 1, 3, 4, 5]]).all()
    for lrs in ((1e150, 0.01, 0.1), (0.01, 1e150), (0.1, 1e150, 0.01)):
        lr = mc.evaluation.baselines.best_lr(model, theta, ts, lrs, steps=3, metric=metric)
        assert lr != 1e150
        scores = {r: mc.evaluate(model, theta, ts, steps=(3,), lr=r) for r in lrs if r != 1e150}
        if metric == "accuracy":
            assert lr == max(scores, key=lambda r: scores[r].accuracies.mean())
        else:
            assert lr == min(scores, key=lambda r: scores[r].losses.mean())


def test_best_lr_names_a_bad_metric():
    model = mc.MLP([1, 3, 1])
    ts = mc.TaskSet.from_arrays([np.ones((4, 1))], [np.ones(4)], n_support=2)
    with pytest.raises(ValueError, match="metric must be 'loss' or 'accuracy'"):
        mc.evaluation.baselines.best_lr(model, model.init(seed=0), ts, (0.1,), metric="acc")
    with pytest.raises(ValueError, match="metric='accuracy' needs a classifier"):
        mc.evaluation.baselines.best_lr(model, model.init(seed=0), ts, (0.1,), metric="accuracy")


def test_steps_must_increase_and_at_names_what_the_report_has(sinusoids):
    model, theta, ts = sinusoids
    for steps in [(5, 0), (0, 5, 5), (1, 1)]:
        with pytest.raises(ValueError, match=r"steps must be increasing, each step count once"):
            mc.evaluate(model, theta, ts, steps=steps, lr=0.01, progress=False)
    rep = mc.evaluate(model, theta, ts, steps=(0, 5), lr=0.01, progress=False)
    with pytest.raises(ValueError, match=r"this report has step counts \(0, 5\), not 2"):
        rep.at(2)
    with pytest.raises(ValueError, match=r"metric must be 'loss' for this report, got "
                                         r"'accuracy'"):
        rep.at(5, "accuracy")
    assert rep.at(5)[0] == rep.summary()[1]["loss"]


def test_best_lr_warns_when_every_rate_diverges():
    model = mc.Softmax(4, 5)
    rng = np.random.default_rng(0)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(15, 4)) * 1e150], [np.arange(15) % 5],
                                n_support=5)
    with pytest.warns(RuntimeWarning, match="diverged under every rate"):
        lr = mc.evaluation.baselines.best_lr(model, model.init(seed=1), ts, (1e150, 1e151),
                                             steps=3, metric="accuracy")
    assert lr == 1e150
