"""benchmarks/school.py: its metrics are the explained variance computed directly, and a short
multi-task run (shared trunk + per-school heads started from the pooled net) beats one ridge
per school on 20 schools of the real data (skipped, naming the file, when the data is absent).
The mean-regularised rows (Evgeniou & Pontil 2004): the per-school proximal adaptation equals
the dense float64 solve of each school's penalised normal equations and the reference inner
loop; the iMAML initialisation starts at the bias-head model and its first meta-step is Adam's
first step on the reference implicit meta-gradient; on 20 real schools both rows beat pooled
ridge and one ridge per school."""

import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metacore as mc

import scripts

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("METACORE_DATA", ROOT.parent / "shared" / "data"))
SCHOOL = DATA / "school" / "school.mat"


def load_benchmark():
    return scripts.load("benchmarks/school.py", "school_bench")


bench = load_benchmark()


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(2, 9), min_size=1, max_size=6), seed=st.integers(0, 2**31))
def test_scores_are_one_minus_sse_over_sst_pooled_and_per_school(sizes, seed):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    y = rng.normal(50.0, 10.0, n)
    pred = y + rng.normal(0.0, 5.0, n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    pooled, per_school = bench.scores(y, pred, offsets)
    direct = 1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    each = [1.0 - ((y[a:b] - pred[a:b]) ** 2).sum() / ((y[a:b] - y[a:b].mean()) ** 2).sum()
            for a, b in zip(offsets[:-1], offsets[1:])]
    assert pooled == pytest.approx(direct, rel=1e-12, abs=1e-12)
    assert per_school == pytest.approx(np.mean(each), rel=1e-12, abs=1e-12)


def test_scores_of_a_perfect_and_of_a_mean_prediction():
    y = np.array([1.0, 2.0, 4.0, 3.0, 7.0, 5.0])
    offsets = np.array([0, 3, 6])
    assert bench.scores(y, y, offsets) == (1.0, 1.0)
    pooled, _ = bench.scores(y, np.full(6, y.mean()), offsets)
    assert pooled == pytest.approx(0.0, abs=1e-15)


def test_a_setting_whose_predictions_are_not_finite_never_wins_a_choice():
    val = mc.TaskSet(np.ones((4, 1)), np.array([1.0, 2.0, 3.0, 4.0]), [0, 4])
    good, bad = np.array([1.0, 2.0, 3.0, 3.5]), np.array([1.0, np.nan, 3.0, 4.0])
    assert bench.val_score(val, bad) == -np.inf
    for order in (("bad", "good"), ("good", "bad")):     # either order: it loses
        preds = {"bad": bad, "good": good}
        assert max(order, key=lambda k: bench.val_score(val, preds[k])) == "good"


def test_scaling_is_undone_by_back():
    rng = np.random.default_rng(0)
    train = mc.TaskSet(np.hstack([rng.normal(3, 2, (12, 3)), np.ones((12, 1))]),
                       rng.normal(40, 8, 12), [0, 5, 12])
    s = bench.Scaled(train, train)
    assert np.allclose(s.train.X.mean(axis=0), 0.0) and np.allclose(s.train.X.std(axis=0), 1.0)
    assert s.train.n_features == 3                     # the constant column is dropped
    assert np.allclose(s.back(s.train.y), train.y)


def twenty_schools():
    """The first 20 real schools, the protocol's first split, scaled, and the inner fit/validation
    split of its training rows (skips naming the file when the data is absent)."""
    if not SCHOOL.is_file():
        pytest.skip(f"{SCHOOL} is missing (the real school data is not on this machine)")
    ts = mc.datasets.school(SCHOOL).subset(np.arange(20))
    train, test = next(mc.datasets.school_splits(ts, repetitions=1, seed=0))
    s = bench.Scaled(train, test)
    fit, val = bench.inner_split(s.train, seed=1000)
    return s, fit, val


def test_short_multitask_run_beats_one_ridge_per_school_on_20_schools():
    # the benchmark's own procedure: head steps chosen on an inner split of the training rows
    s, fit, val = twenty_schools()
    alpha = bench.ridge_per_school(fit, val)
    ridge = bench.scores(s.y_test, s.back(bench.ridge_per_school(s.train, s.test, alpha)),
                         s.offsets_test)[0]
    pooled = mc.MLP([s.train.n_features, 16, 16, 1])
    uniform = mc.weighting.Uniform()
    _, head_steps = bench.multitask(fit, val, 16, 100, 0, uniform,
                                    bench.train_pooled(pooled, fit, 100, seed=0))
    theta = bench.train_pooled(pooled, s.train, 100, seed=0)
    pred = bench.multitask(s.train, s.test, 16, 100, 0, uniform, theta, chosen=head_steps)
    multitask = bench.scores(s.y_test, s.back(pred), s.offsets_test)[0]
    assert multitask > ridge + 0.01, (multitask, ridge)


# --- the mean-regularised (Evgeniou & Pontil 2004) rows -----------------------------------------
def synthetic_schools(rng, sizes):
    """A TaskSet laid out like the scaled school data (27 columns: years, school × year,
    student, school-level) with a school effect, slopes that differ by school and noise."""
    d = 27
    X, y = [], []
    w0 = rng.normal(0.0, 0.5, d)
    for n in sizes:
        Xi = rng.normal(0.0, 1.0, (n, d))
        Xi[:, bench.SCHOOL] = rng.normal(0.0, 1.0, len(bench.SCHOOL))   # constant in a school
        wi = w0 + rng.normal(0.0, 0.2, d)
        X.append(Xi)
        y.append(Xi @ wi + rng.normal(0.0, 1.0) + rng.normal(0.0, 0.5, n))
    return mc.TaskSet.from_arrays(X, y)


def dense_mean_regularised(fit, val, theta_bias, lb, ly, lx):
    """The oracle: per school, in the original units and float64, the deviation v_i from the
    bias-head model minimising SSE + lb·v_b² + ly‖v_year‖² + lx‖v_student‖², by one dense solve
    of its normal equations."""
    d, out = fit.n_features, []
    pen = np.diag([lb] + [ly] * len(bench.YEAR) + [lx] * len(bench.STUDENT))
    for i in range(fit.n_tasks):
        (Xf, yf), (Xv, _) = fit[i], val[i]
        Z = np.hstack([np.ones((len(yf), 1)), Xf[:, bench.ADAPTED]])
        Zv = np.hstack([np.ones((len(Xv), 1)), Xv[:, bench.ADAPTED]])
        w, b = theta_bias[:d], theta_bias[d + i]
        base_f, base_v = Xf @ w + b, Xv @ w + b
        v = np.linalg.solve(Z.T @ Z + pen, Z.T @ (yf - base_f))
        out.append(base_v + Zv @ v)
    return np.concatenate(out)


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(25, 60), min_size=1, max_size=4), seed=st.integers(0, 2**31),
       lb=st.sampled_from([3.0, 10.0, 100.0]), ly=st.sampled_from([10.0, 100.0]),
       lx=st.sampled_from([10.0, 300.0]))
def test_proximal_adaptation_is_the_mean_regularised_solution(sizes, seed, lb, ly, lx):
    rng = np.random.default_rng(seed)
    fit, val = synthetic_schools(rng, sizes), synthetic_schools(rng, [5] * len(sizes))
    theta_bias = rng.normal(0.0, 0.5, fit.n_features + fit.n_tasks)
    got = bench.prox_heads(fit, val, theta_bias, lb, ly, lx, steps=3000)
    oracle = dense_mean_regularised(fit, val, theta_bias, lb, ly, lx)
    assert np.allclose(got, oracle, rtol=1e-7, atol=1e-7), np.abs(got - oracle).max()


def test_proximal_adaptation_matches_the_reference_inner_loop():
    # the same 40 proximal steps in NumPy (metacore.reference), on the scaled residual problem
    rng = np.random.default_rng(3)
    fit, val = synthetic_schools(rng, [30, 45]), synthetic_schools(rng, [6, 6])
    theta_bias = rng.normal(0.0, 0.5, fit.n_features + fit.n_tasks)
    lb, ly, lx, d = 10.0, 100.0, 300.0, fit.n_features
    got = bench.prox_heads(fit, val, theta_bias, lb, ly, lx, steps=40)
    model, scale = mc.Linear(len(bench.ADAPTED)), bench.slope_scales(lb, ly, lx)
    for i in range(fit.n_tasks):
        (Xf, yf), (Xv, _) = fit[i], val[i]
        Zf, Zv = Xf[:, bench.ADAPTED] * scale, Xv[:, bench.ADAPTED] * scale
        learner = bench.prox_learner(model, Zf, lb, 40)
        w, b = theta_bias[:d], theta_bias[d + i]
        base_f, base_v = Xf @ w + b, Xv @ w + b
        ref = base_v + mc.reference.imaml_adapt_predict(model, np.zeros(model.n_params), Zf,
                                                        yf - base_f, Zv, steps=40,
                                                        lr=learner.inner_lr, reg=learner.reg)
        rows = slice(val.offsets[i], val.offsets[i + 1])
        assert np.allclose(got[rows], ref, rtol=1e-12, atol=1e-12)
    assert learner.reg == pytest.approx(2.0 * lb / 45) and learner.inner_lr * learner.reg < 2.0


def test_imaml_init_starts_at_the_bias_head_model_and_takes_an_adam_step():
    rng = np.random.default_rng(5)
    fit = synthetic_schools(rng, [int(n) for n in rng.integers(20, 40, 20)])
    d, T = fit.n_features, fit.n_tasks
    theta_bias = rng.normal(0.0, 0.5, d + T)
    penalties = (10.0, 100.0, 300.0)
    scale = bench.imaml_scales(*penalties)
    start = bench.imaml_init(fit, theta_bias, *penalties, 0, seed=0)
    # at 0 meta-steps: the bias-head slopes, the students' mean intercept, on the scaled columns
    base = mc.Linear(d, task_heads=T, head="bias")
    mean_b = (fit.task_sizes * theta_bias[d:]).sum() / fit.task_sizes.sum()
    direct = base.predict(theta_bias, fit.X, task=0) - theta_bias[d] + mean_b
    assert np.allclose(mc.Linear(d).predict(start, fit.X * scale), direct, rtol=1e-12, atol=1e-12)
    # one meta-step with the whole set as meta-batch: Adam's first step, −lr·g/(|g| + ε), with g
    # the reference iMAML meta-gradient on the benchmark's shuffled support/query halves
    one = bench.imaml_init(fit, theta_bias, *penalties, 1, seed=0)
    draw = np.random.default_rng(0)
    order = np.concatenate([a + draw.permutation(b - a)
                            for a, b in zip(fit.offsets[:-1], fit.offsets[1:])])
    meta = mc.TaskSet(fit.X[order] * scale, fit.y[order], fit.offsets,
                      n_support=fit.task_sizes // 2)
    reg = 2.0 * penalties[0] / float(np.median(fit.task_sizes // 2))
    curv = max(2.0 * np.linalg.norm(np.hstack([meta.support(i)[0],
                                               np.ones((meta.n_support[i], 1))]), 2) ** 2
               / meta.n_support[i] for i in range(T))
    _, g = mc.reference.imaml_value_and_grad(mc.Linear(d), start, meta, reg=reg,
                                             inner_lr=1.0 / (curv + reg), inner_steps=100,
                                             cg_steps=5)
    assert np.allclose(one, start - 1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-9, atol=1e-9)


def test_proximal_rows_beat_pooled_ridge_and_one_ridge_per_school_on_20_schools():
    # the benchmark's own procedure (every choice on the inner split of the training rows)
    s, fit, val = twenty_schools()
    out, chosen = {}, {}

    def record(name, pred):
        out[name] = bench.scores(s.y_test, s.back(pred), s.offsets_test)[0]

    for name, f in (("pooled", bench.ridge_pooled), ("per school", bench.ridge_per_school)):
        record(name, f(s.train, s.test, f(fit, val)))
    lin = bench.linear_bias_heads(fit, val, s, 0)
    penalties = bench.prox(fit, val, s, lin, record, chosen)
    bench.imaml(fit, val, s, lin, penalties, 0, record, chosen)
    # measured: pooled 0.429, per school 0.368, prox 0.435, iMAML 0.439
    for name in ("metacore linear, bias-only heads, then proximal adaptation per school",
                 "metacore iMAML init (meta-trained), proximal adaptation per school"):
        assert out[name] > out["pooled"] and out[name] > out["per school"] + 0.05, (out, chosen)
