"""mc.fit: it is the loop it describes, recovers known optima, draws its batches as documented,
is bit-identical across thread counts and chunkings, evaluates, stops early, calls back, handles
divergence, and rejects every bad argument by name."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref
from metacore.optim import SGD, Adam, AdamW, cosine, warmup


def linear_tasks(T=12, d=5, rows=(20, 40), noise=0.0, seed=0, n_support=None):
    """T regression tasks y = X w + b (+ noise) sharing θ* = (w, b) in mc.Linear's layout."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=d), 0.7
    Xs = [rng.normal(size=(int(rng.integers(*rows)), d)) for _ in range(T)]
    ys = [X @ w + b + noise * rng.normal(size=len(X)) for X in Xs]
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_support), np.r_[w, b]


def mlp_problem(T=40, seed=0, dtype=np.float64):
    """A problem big enough that the core uses several threads and reduction blocks."""
    ts = mc.tasks.linear_family(T, n_features=10, n_rows=(80, 120), seed=seed)
    model = mc.MLP([10, 16, 1], activation="tanh")
    return mc.Objective(model, ts.astype(dtype), l2=1e-3), model.init(seed=1, dtype=dtype)


def quiet_fit(obj, theta0, **kw):
    kw.setdefault("progress", False)
    return mc.fit(obj, theta0, **kw)


def same(a, b):
    return np.array_equal(a, b, equal_nan=True) and a.dtype == b.dtype


# --- what fit computes ------------------------------------------------------------------------
def test_fit_is_exactly_the_loop_it_describes():
    ts, _ = linear_tasks()
    obj = mc.Objective(mc.Linear(5), ts, l2=0.01)
    opt = Adam(lr=0.05, schedule=warmup(5, cosine(30)))
    res = quiet_fit(obj, np.zeros(6), optimizer=opt, steps=40, eval_every=7)
    theta, state = np.zeros(6), opt.init_state(np.zeros(6))
    values = []
    for t in range(40):
        value, grad = obj.value_and_grad(theta)
        values.append(value)
        opt.update(theta, grad, state, t)
    assert same(res.theta, theta)
    assert same(res.moments["m"], state["m"]) and same(res.moments["v"], state["v"])
    assert same(res.history.objective, np.array(values))
    np.testing.assert_array_equal(res.history.lr, [opt.lr_at(t) for t in range(40)])


def test_recovers_the_shared_theta_of_multitask_linear_regression():
    ts, theta_star = linear_tasks()
    obj = mc.Objective(mc.Linear(5), ts)
    res = quiet_fit(obj, np.zeros(6), optimizer=Adam(lr=0.05, schedule=cosine(2000)), steps=2000)
    np.testing.assert_allclose(res.theta, theta_star, atol=1e-9)
    # stochastic: every task's rows are fit exactly by θ*, so SGD on batches converges to it too
    res = quiet_fit(obj, np.zeros(6), optimizer=SGD(lr=0.05, momentum=0.9), steps=1000,
                    batch_tasks=4, batch_rows=8)
    np.testing.assert_allclose(res.theta, theta_star, atol=1e-9)


def test_recovers_theta_in_float32():
    ts, theta_star = linear_tasks()
    obj = mc.Objective(mc.Linear(5), ts)
    res = quiet_fit(obj, np.zeros(6, np.float32), optimizer=Adam(lr=0.05, schedule=cosine(1500)),
                    steps=1500)
    assert res.theta.dtype == np.float32
    np.testing.assert_allclose(res.theta, theta_star, atol=1e-4)


def test_each_step_draws_k_tasks_and_rescales_their_weights():
    ts, _ = linear_tasks(T=10, rows=(5, 9))
    obj = mc.Objective(mc.Linear(5), ts, l2=0.1)
    theta0 = np.linspace(-1, 1, 6)
    res = quiet_fit(obj, theta0, optimizer=SGD(lr=1e-9), steps=300, batch_tasks=3,
                    record_task_losses=True, seed=5)
    L = res.history.step_task_losses
    drawn = np.isfinite(L)
    assert L.shape == (300, 10) and (drawn.sum(axis=1) == 3).all()
    # f_B = (T/k) Σ_{i∈B} α_i f_i + (λ/2)‖θ‖² with all rows of the drawn tasks
    full = obj.task_losses(theta0)
    step0 = (10 / 3) * np.sum(0.1 * full[drawn[0]]) + 0.05 * theta0 @ theta0
    assert res.history.objective[0] == pytest.approx(step0, rel=1e-12)
    np.testing.assert_allclose(L[0][drawn[0]], full[drawn[0]], rtol=1e-12)
    counts = drawn.sum(axis=0)      # each task drawn about 300·3/10 = 90 times
    assert counts.min() > 60 and counts.max() < 120
    assert len({tuple(np.flatnonzero(r)) for r in drawn}) > 50


@pytest.mark.parametrize("m", [1, 2, 3])
def test_each_drawn_task_uses_m_distinct_rows(m):
    """With 4 rows per task, each step's loss of a task is the mean over some m distinct rows,
    and over 80 steps every m-subset of every task comes up."""
    ts, _ = linear_tasks(T=6, rows=(4, 5))        # every task has 4 rows
    model = mc.Linear(5)
    obj = mc.Objective(model, ts)
    theta0 = np.linspace(-1, 1, 6)
    res = quiet_fit(obj, theta0, optimizer=SGD(lr=1e-300), steps=80, batch_rows=m,
                    record_task_losses=True)
    for i in range(6):
        X, y = ts[i]
        row_loss = (model.predict(theta0, X) - y) ** 2
        means = {p: row_loss[list(p)].mean() for p in itertools.combinations(range(4), m)}
        seen = set()
        for t in range(80):
            got = res.history.step_task_losses[t, i]
            match = [p for p, v in means.items() if abs(v - got) <= 1e-12 * max(1, abs(v))]
            assert match, f"task {i} step {t}: {got} is no mean of {m} distinct rows"
            seen.add(match[0])
        assert seen == set(means)


def test_row_draws_from_a_large_task_are_unbiased():
    """Row r of a 5,000-row task has loss r at θ = 0: the mean of the batch losses over many steps
    approaches the task's mean loss, 2,499.5 (draws of 10 rows: the hash-set path)."""
    n = 5000
    ts = mc.TaskSet.from_arrays([np.ones((n, 1))], [np.sqrt(np.arange(n, dtype=np.float64))])
    obj = mc.Objective(mc.MLP([1, 1], loss="mse"), ts)
    res = quiet_fit(obj, np.zeros(2), optimizer=SGD(lr=1e-300), steps=400, batch_rows=10)
    assert abs(res.history.objective.mean() - 2499.5) < 150      # 5 standard errors


def test_rows_beyond_a_tasks_size_use_all_its_rows():
    ts, _ = linear_tasks(T=5, rows=(6, 12))
    obj = mc.Objective(mc.Linear(5), ts)
    theta0 = np.linspace(-1, 1, 6)
    a = quiet_fit(obj, theta0, optimizer=SGD(lr=0.01), steps=5, batch_rows=1000)
    b = quiet_fit(obj, theta0, optimizer=SGD(lr=0.01), steps=5)
    assert same(a.theta, b.theta)


@pytest.mark.parametrize("batch", [{}, {"batch_tasks": 25, "batch_rows": 48}])
def test_identical_results_for_1_2_3_threads(batch):
    obj, theta0 = mlp_problem()
    runs = [quiet_fit(obj, theta0, optimizer=Adam(lr=0.01), steps=25, n_threads=k, seed=3,
                      eval_every=10, **batch) for k in (1, 2, 3)]
    for r in runs[1:]:
        assert same(r.theta, runs[0].theta)
        assert same(r.history.objective, runs[0].history.objective)
        assert same(r.history.task_losses, runs[0].history.task_losses)


def test_chunking_does_not_change_results():
    obj, theta0 = mlp_problem(T=10)
    runs = [quiet_fit(obj, theta0, optimizer=SGD(lr=0.05, momentum=0.9), steps=30, seed=1,
                      batch_tasks=4, batch_rows=16, chunk_size=c) for c in (1, 7, None)]
    for r in runs[1:]:
        assert same(r.theta, runs[0].theta) and same(r.history.grad_norm, runs[0].history.grad_norm)


def test_seed_decides_the_draws():
    obj, theta0 = mlp_problem(T=10)
    kw = dict(optimizer=SGD(lr=0.05), steps=5, batch_tasks=3)
    assert same(quiet_fit(obj, theta0, seed=4, **kw).theta, quiet_fit(obj, theta0, seed=4, **kw).theta)
    assert not same(quiet_fit(obj, theta0, seed=4, **kw).theta,
                    quiet_fit(obj, theta0, seed=5, **kw).theta)


# --- weighting ---------------------------------------------------------------------------------
def test_fixed_weighting_is_the_weighted_objective():
    ts, _ = linear_tasks(T=4)
    alpha = np.array([0.1, 0.5, 0.2, 0.2])
    theta0 = np.ones(6)
    a = quiet_fit(mc.Objective(mc.Linear(5), ts), theta0, weighting=mc.weighting.Fixed(alpha),
                  optimizer=SGD(lr=0.1), steps=20)
    b = quiet_fit(mc.Objective(mc.Linear(5), ts, weights=alpha), theta0, optimizer=SGD(lr=0.1),
                  steps=20)
    assert same(a.theta, b.theta)
    np.testing.assert_array_equal(a.history.weights, np.tile(alpha, (a.history.weights.shape[0], 1)))
    np.testing.assert_array_equal(a.weights, alpha)
    u = quiet_fit(mc.Objective(mc.Linear(5), ts, weights=alpha), theta0, optimizer=SGD(lr=0.1),
                  steps=20, weighting=mc.weighting.Uniform())
    np.testing.assert_array_equal(u.weights, np.full(4, 0.25))
    with pytest.raises(ValueError, match="Fixed\\(alpha\\) has 3 weights but the objective has 4"):
        quiet_fit(mc.Objective(mc.Linear(5), ts), theta0, weighting=mc.weighting.Fixed([1, 1, 1]))


@pytest.mark.parametrize("alpha, match", [
    ([-1.0, 1.0], "alpha must be non-negative"), ([0.0, 0.0], "positive sum"),
    ([1.0, np.nan], "alpha must be finite"), ([[1.0]], "alpha must be 1-D")])
def test_fixed_weighting_rejects_bad_alpha(alpha, match):
    with pytest.raises(ValueError, match=match):
        mc.weighting.Fixed(alpha)


# --- history, validation, early stopping, callbacks ------------------------------------------
def test_history_records_steps_and_evaluations():
    ts, _ = linear_tasks(T=6, n_support=5)
    train, val = ts.split_tasks(test_fraction=0.5, seed=0)
    obj = mc.Objective(mc.Linear(5), train, l2=0.01)
    theta0 = np.ones(6)
    res = quiet_fit(obj, theta0, optimizer=SGD(lr=0.05, schedule=cosine(25)), steps=25,
                    eval_every=10, validation=val)
    h = res.history
    assert h.step.tolist() == list(range(25))
    assert h.eval_step.tolist() == [0, 10, 20, 25]
    assert h.task_losses.shape == (4, 3) and h.weights.shape == (4, 3)
    assert h.train_loss[0] == pytest.approx(obj.value(theta0), rel=1e-14)
    np.testing.assert_allclose(h.task_losses[0], obj.task_losses(theta0), rtol=1e-14)
    val_query = mc.Objective(mc.Linear(5), val, rows="query").task_losses(theta0)
    assert h.val_loss[0] == pytest.approx(val_query.mean(), rel=1e-14)
    np.testing.assert_allclose(h.val_task_losses[0], val_query, rtol=1e-14)
    np.testing.assert_allclose(h.lr, [SGD(lr=0.05, schedule=cosine(25)).lr_at(t) for t in range(25)])
    assert (np.diff(h.val_loss) < 0).all()
    assert res.best_step == 25 and same(res.best_theta, res.theta)
    assert res.steps_run == 25 and res.step == 25 and res.stop_reason == "steps"
    assert res.wall_time >= res.core_time > 0 and res.steps_per_sec > 0


def test_early_stopping_keeps_the_best_theta():
    """Training moves θ away from the validation optimum θ₀: the best θ is the first one."""
    ts, _ = linear_tasks(T=4, seed=0)
    val, theta_val = linear_tasks(T=4, seed=1)
    obj = mc.Objective(mc.Linear(5), ts)
    res = quiet_fit(obj, theta_val, optimizer=SGD(lr=0.05), steps=500, eval_every=10,
                    validation=val, early_stopping=2)
    assert res.stop_reason == "early_stopping" and res.step == 20
    assert res.best_step == 0 and same(res.best_theta, theta_val)
    assert res.history.eval_step.tolist() == [0, 10, 20]
    res = quiet_fit(obj, theta_val, optimizer=SGD(lr=0.05), steps=500, eval_every=10,
                    validation=val, early_stopping=mc.EarlyStopping(patience=3, min_delta=1e9))
    assert res.step == 30


def test_early_stopping_without_validation_monitors_the_training_objective():
    ts, _ = linear_tasks(T=4)
    obj = mc.Objective(mc.Linear(5), ts)
    # a learning rate so large that SGD oscillates without diverging fast: no improvement
    res = quiet_fit(obj, np.zeros(6), optimizer=SGD(lr=1e-6), steps=200, eval_every=10,
                    early_stopping=mc.EarlyStopping(patience=2, min_delta=1.0))
    assert res.stop_reason == "early_stopping" and res.step == 20 and res.best_step == 0


def test_callbacks_see_each_evaluation_and_may_stop():
    ts, _ = linear_tasks(T=3)
    obj = mc.Objective(mc.Linear(5), ts)
    events = []

    def watch(event):
        events.append(event)
        return event.step >= 30

    res = quiet_fit(obj, np.zeros(6), optimizer=SGD(lr=0.01), steps=100, eval_every=10,
                    callbacks=[watch, lambda e: None])
    assert res.stop_reason == "callback" and res.step == 30
    assert [e.step for e in events] == [0, 10, 20, 30]
    e = events[-1]
    assert e.theta.shape == (6,) and e.task_losses.shape == (3,) and np.isnan(e.val_loss)
    assert same(e.theta, res.theta) and e.train_loss == pytest.approx(obj.value(res.theta))


def test_progress_bar_is_optional():
    ts, _ = linear_tasks(T=3)
    res = mc.fit(mc.Objective(mc.Linear(5), ts), np.zeros(6), optimizer=SGD(lr=0.01), steps=5,
                 progress=True)
    assert res.steps_run == 5


class RecordingBar:
    """Stands in for an open tqdm bar: records what a run shows on it."""

    def __init__(self):
        self.n, self.postfix, self.closed = 0, [], False

    def update(self, k):
        self.n += k

    def set_postfix(self, refresh=True, **kw):
        self.postfix.append(kw)

    def close(self):
        self.closed = True


def test_a_caller_bar_is_advanced_by_every_chunk_with_the_loss_and_left_open():
    ts, _ = linear_tasks(T=3)
    obj = mc.Objective(mc.Linear(5), ts)
    bar = RecordingBar()
    first = mc.fit(obj, np.zeros(6), optimizer=SGD(lr=0.01), steps=7, progress=bar,
                   chunk_size=2)
    second = mc.fit(obj, first, steps=5, progress=bar, chunk_size=2)
    assert bar.n == 12 and not bar.closed          # one bar over both runs
    assert len(bar.postfix) == 4 + 3               # every chunk shows its last loss
    assert float(bar.postfix[3]["loss"]) == pytest.approx(first.history.objective[-1], rel=1e-3)
    assert float(bar.postfix[-1]["loss"]) == pytest.approx(second.history.objective[-1],
                                                           rel=1e-3)
    with pytest.raises(TypeError, match="progress"):
        mc.fit(obj, np.zeros(6), steps=1, progress="yes")


# --- divergence --------------------------------------------------------------------------------
def test_divergence_names_the_step_and_keeps_the_last_finite_state():
    ts, _ = linear_tasks(T=4)
    obj = mc.Objective(mc.Linear(5), ts)
    with pytest.raises(mc.FitDivergedError) as info:
        quiet_fit(obj, np.ones(6), optimizer=SGD(lr=50.0), steps=1000)
    err = info.value
    assert f"at step {err.step}" in str(err) and 0 < err.step < 1000
    res = err.result
    assert res.step == err.step and res.stop_reason == "diverged"
    assert np.isfinite(res.theta).all() and len(res.history.objective) == err.step
    before = quiet_fit(obj, np.ones(6), optimizer=SGD(lr=50.0), steps=err.step)
    assert same(res.theta, before.theta)


def test_divergence_names_the_task_that_caused_it():
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(6, 3)) for _ in range(5)]
    Xs[3] = Xs[3] * 1e200                   # finite data whose squared error overflows
    ts = mc.TaskSet.from_arrays(Xs, [np.zeros(6)] * 5)
    obj = mc.Objective(mc.Linear(3), ts)
    with pytest.raises(mc.FitDivergedError, match="at step 0, caused by task 3's loss") as info:
        quiet_fit(obj, np.ones(4), optimizer=SGD(lr=0.1), steps=10)
    assert info.value.task == 3 and info.value.step == 0
    assert same(info.value.result.theta, np.ones(4))


def test_an_overflowing_update_is_undone():
    rng = np.random.default_rng(0)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(5, 5)) for _ in range(3)], [np.full(5, 100.0)] * 3)
    obj = mc.Objective(mc.Linear(5), ts)
    theta0 = np.zeros(6, np.float32)        # the gradient's bias entry is −200: lr · 200 > 3.4e38
    with pytest.raises(mc.FitDivergedError, match="update of step 0") as info:
        quiet_fit(obj, theta0, optimizer=SGD(lr=1e38, momentum=0.5), steps=10)
    res = info.value.result
    assert same(res.theta, theta0) and not res.moments["m"].any()


def test_divergence_saves_the_last_finite_state(tmp_path):
    ts, _ = linear_tasks(T=4)
    obj = mc.Objective(mc.Linear(5), ts)
    path = tmp_path / "run.npz"
    with pytest.raises(mc.FitDivergedError) as info:
        quiet_fit(obj, np.ones(6), optimizer=SGD(lr=50.0), steps=1000, checkpoint=path)
    ck = mc.load(path)
    assert ck.step == info.value.step and same(ck.theta, info.value.result.theta)
    assert np.isfinite(ck.theta).all()


# --- bad arguments -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    ts, _ = linear_tasks(T=4, rows=(5, 8), n_support=3)
    return mc.Objective(mc.Linear(5), ts), ts


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(steps=2.5), TypeError, "steps must be an integer"),
    (dict(batch_tasks=0), ValueError, "batch_tasks must be >= 1"),
    (dict(batch_tasks=5), ValueError, r"batch_tasks must be <= the number of tasks \(4\), got 5"),
    (dict(batch_rows=0), ValueError, "batch_rows must be >= 1"),
    (dict(eval_every=0), ValueError, "eval_every must be >= 1"),
    (dict(early_stopping=0), ValueError, "patience must be >= 1"),
    (dict(early_stopping="soon"), TypeError, "early_stopping must be None, a patience"),
    (dict(callbacks=[print, 3]), TypeError, r"callbacks\[1\] must be callable"),
    (dict(callbacks=3), TypeError, "callbacks must be a sequence of callables"),
    (dict(progress="yes"), TypeError, "progress must be True or False"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(n_threads=0), ValueError, "n_threads must be None, -1"),
    (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
    (dict(checkpoint=3), TypeError, "checkpoint must be a path or None"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every must be >= 1"),
    (dict(optimizer="adam"), TypeError, "optimizer must be a metacore.optim optimizer"),
    (dict(weighting=[0.5, 0.5]), TypeError, "weighting must be a metacore.weighting strategy"),
    (dict(validation=np.zeros(3)), TypeError, "validation must be None, a TaskSet or an Objective"),
    (dict(record_task_losses=1), TypeError, "record_task_losses must be True or False"),
])
def test_bad_arguments_are_rejected_by_name(small, kwargs, exc, match):
    obj, _ = small
    with pytest.raises(exc, match=match):
        quiet_fit(obj, np.zeros(6), **kwargs)


def test_bad_objective_and_theta0_are_rejected(small):
    obj, ts = small
    with pytest.raises(TypeError, match="problem must be a metacore Objective"):
        quiet_fit(ts, np.zeros(6))
    with pytest.raises(ValueError, match="start must have length 6"):
        quiet_fit(obj, np.zeros(7))
    with pytest.raises(TypeError, match="start must be a float32 or float64 array"):
        quiet_fit(obj, np.zeros(6, dtype=np.int64))
    with pytest.raises(ValueError, match="start must be finite"):
        quiet_fit(obj, np.full(6, np.nan))
    other = linear_tasks(T=2, d=3)[0]
    with pytest.raises(ValueError, match="features but the model expects 5"):
        quiet_fit(obj, np.zeros(6), validation=other)


def test_fit_leaves_theta0_alone(small):
    obj, _ = small
    theta0 = np.ones(6)
    quiet_fit(obj, theta0, optimizer=SGD(lr=0.1), steps=3)
    assert same(theta0, np.ones(6))


# --- the core's train state --------------------------------------------------------------------
def test_train_state_shows_its_buffers_as_read_only_views():
    from metacore import _core
    ts, _ = linear_tasks(T=3)
    obj = mc.Objective(mc.Linear(5), ts)
    opt = Adam(lr=0.1)
    state = _core.TrainState64(np.zeros(6), opt.core_config(), np.full(3, 1 / 3), 0, 7)
    theta, m = state.theta, state.m
    assert not theta.flags.writeable and not m.flags.writeable
    with pytest.raises(ValueError):
        theta[0] = 1.0
    out = state.run_objective(obj.core_handle(np.dtype(np.float64)), opt.core_config(), 0, 0, 0.0, 3)
    assert out.steps_done == 3 and state.step == 3
    assert theta.any() and np.array_equal(theta, state.theta)     # the view sees the updates
    assert SGD(lr=0.1).core_config().uses_m is False
    with pytest.raises(ValueError, match="optimizer does not match the train state"):
        state.run_objective(obj.core_handle(np.dtype(np.float64)), SGD(lr=0.1).core_config(), 0, 0, 0.0, 1)
    with pytest.raises(ValueError, match="batch_tasks must be in"):
        state.run_objective(obj.core_handle(np.dtype(np.float64)), opt.core_config(), 4, 0, 0.0, 1)
    with pytest.raises(TypeError, match="theta must have dtype float64"):
        state.restore(np.zeros(6, np.float32), state.m, state.v, state.alpha, state.weighting, 0)
    assert state.step == 3
