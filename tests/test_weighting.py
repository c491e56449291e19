"""mc.weighting: every strategy's core update equals metacore.reference's on α and on the
combined gradient, keeps the property its paper promises, sums as documented, runs inside fit's
loop (α per step in the history, state resumed bit-identically) and rejects bad settings."""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import _core
from metacore import reference as ref
from metacore import weighting as W

GRADIENT = [W.GradNorm(), W.MGDA(), W.MGDA(normalization="l2"), W.MGDA(normalization="loss"),
            W.MGDA(normalization="loss+l2"), W.PCGrad(), W.CAGrad(), W.IMTLG(), W.NashMTL(),
            W.AlignedMTL(), W.GradVac(beta=0.3)]
LOSS = [W.DWA(window=2), W.DWA(temperature=0.5), W.Uncertainty(), W.Uncertainty(classification=True),
        W.RLW(), W.FAMO()]
ADAPTIVE = LOSS + GRADIENT + [W.EvalDriven(), W.EvalDriven("dtp", eval_every=3)]


def grads_problem(T=5, P=30, seed=0, conflict=True):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(T, P)) * rng.uniform(0.1, 10, size=(T, 1))
    if conflict:
        G[1] = -0.7 * G[0] + 0.3 * G[1]
    return G, rng.uniform(0.1, 5, size=T)


def heads_problem(T=4, seed=0, dtype=np.float64):
    """Regression tasks of very different scales on a shared trunk with per-task heads."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=3)
    Xs = [rng.normal(size=(12 + 3 * i, 3)) for i in range(T)]
    ys = [np.tanh(X @ w) * 10.0 ** (i % 3) + 0.1 * rng.normal(size=len(X)) for i, X in enumerate(Xs)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=6)
    model = mc.MLP([3, 8, 1], activation="tanh", task_heads=T)
    return mc.Objective(model, ts.astype(dtype), l2=1e-3), model.init(seed=1, dtype=dtype)


def conflict_problem(T=4, seed=0, signs=(1, -1, 1, -1)):
    """Tasks of different scales on one shared net, with targets of alternating sign (their
    gradients conflict: IMTL-G's closed-form weights go negative) or of one sign (Aligned-MTL's
    go negative)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=3)
    Xs = [rng.normal(size=(12 + 3 * i, 3)) for i in range(T)]
    ys = [signs[i] * np.tanh(X @ w) * 10.0 ** (i % 3) for i, X in enumerate(Xs)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=6)
    model = mc.MLP([3, 8, 1], activation="tanh")
    return mc.Objective(model, ts, l2=1e-3), model.init(seed=1)


# --- core == reference ---------------------------------------------------------------------------
@pytest.mark.parametrize("w", GRADIENT, ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradient_strategies_match_reference_on_beta_and_combined_grad(w, dtype):
    G, L = grads_problem()
    n_shared = 22
    cfg, d = w.core_config(), w.to_dict()
    s_core, s_ref = w.initial_state(5), w.initial_state(5)
    tol = 1e-9 if dtype == np.float64 else 2e-4
    for step in range(3):     # stateful strategies (GradNorm, GradVac) carry their state on
        Gt, Lt = (G * (1 + 0.2 * step)).astype(dtype), (L / (1 + step)).astype(dtype)
        beta, grad = _core.weighting_combine(cfg, Gt, Lt, s_core, 7, step, n_shared, 1)
        beta_ref = ref.weighting.combine(d, Gt, Lt, s_ref, 7, step, n_shared)
        np.testing.assert_allclose(beta, beta_ref, rtol=tol * 100, atol=tol * 100)
        expect = ref.weighting.combined_grad(beta_ref, Gt, n_shared,
                                             heads_weighted=isinstance(w, W.GradNorm))
        np.testing.assert_allclose(grad, expect, rtol=tol * 100, atol=tol * 100 * np.abs(expect).max())
        np.testing.assert_allclose(s_core, s_ref, rtol=tol * 100, atol=tol * 100)


@pytest.mark.parametrize("w", LOSS, ids=repr)
def test_loss_strategies_match_reference_over_steps(w):
    rng = np.random.default_rng(1)
    cfg, d = w.core_config(), w.to_dict()
    s_core, s_ref = w.initial_state(6), w.initial_state(6)
    for step in range(8):
        L = rng.uniform(0.1, 3.0, size=6)
        a = _core.weighting_before(cfg, s_core, 3, step, L)
        a_ref = ref.weighting.before_step(d, s_ref, 3, step, L)
        np.testing.assert_allclose(a, a_ref, rtol=1e-12, atol=1e-15)
        _core.weighting_after(cfg, s_core, step, L)
        ref.weighting.after_step(d, s_ref, step, L)
        np.testing.assert_allclose(s_core, s_ref, rtol=1e-12, atol=1e-15)
        if not isinstance(w, W.Uncertainty):
            assert a.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("w", [W.EvalDriven(temperature=0.5), W.EvalDriven("dtp", gamma=1.0)],
                         ids=repr)
def test_eval_driven_matches_reference_and_sums_to_one(w):
    rng = np.random.default_rng(2)
    s_core, s_ref = w.initial_state(4), w.initial_state(4)
    for _ in range(4):
        L = rng.uniform(0.01, 4.0, size=4)
        a = _core.weighting_evaluate(w.core_config(), s_core, L, np.exp(-L))
        a_ref = ref.weighting.evaluate(w.to_dict(), s_ref, L, np.exp(-L))
        np.testing.assert_allclose(a, a_ref, rtol=1e-12)
        assert a.sum() == pytest.approx(1.0)
        assert np.argmax(a) == np.argmax(L)     # both rules favour the worst task


def test_rlw_draws_are_reproducible_and_fresh_every_step():
    cfg = W.RLW().core_config()
    a0 = _core.weighting_before(cfg, np.zeros(0), 5, 0, np.ones(4))
    assert np.array_equal(a0, _core.weighting_before(cfg, np.zeros(0), 5, 0, np.ones(4)))
    assert not np.allclose(a0, _core.weighting_before(cfg, np.zeros(0), 5, 1, np.ones(4)))


# --- the properties each paper promises ----------------------------------------------------------
def test_mgda_direction_has_minimal_norm_over_the_simplex():
    G, L = grads_problem(T=6, P=40, seed=3)
    beta, d = _core.weighting_combine(W.MGDA().core_config(), G, L, np.zeros(0), 0, 0)
    assert beta.min() >= 0 and beta.sum() == pytest.approx(1.0)
    K = G @ G.T
    # KKT on the simplex: every vertex's directional gain is at least the current norm²
    assert (K @ beta).min() >= beta @ K @ beta - 1e-9 * np.trace(K)
    rng = np.random.default_rng(0)
    others = np.vstack([np.eye(6), rng.dirichlet(np.ones(6), size=2000)])
    assert np.linalg.norm(d) ** 2 <= (np.einsum("ij,jk,ik->i", others, K, others)).min() + 1e-9


def test_pcgrad_projected_gradients_do_not_conflict():
    rng = np.random.default_rng(4)
    g1 = rng.normal(size=10)
    g2 = -0.8 * g1 + 0.4 * rng.normal(size=10)            # a conflicting pair
    G = np.vstack([g1, g2])
    beta, d = _core.weighting_combine(W.PCGrad().core_config(), G, np.ones(2), np.zeros(0), 0, 0)
    dot = g1 @ g2
    assert dot < 0
    p1 = g1 - dot / (g2 @ g2) * g2
    p2 = g2 - dot / (g1 @ g1) * g1
    assert p1 @ g2 >= -1e-12 and p2 @ g1 >= -1e-12       # no conflict after projection
    np.testing.assert_allclose(d, (p1 + p2) / 2, rtol=1e-12)
    G[1] = np.abs(G[1]) * np.sign(g1)                    # no conflict: the plain mean
    beta, _ = _core.weighting_combine(W.PCGrad().core_config(), G, np.ones(2), np.zeros(0), 0, 0)
    np.testing.assert_array_equal(beta, [0.5, 0.5])


def test_imtlg_direction_projects_equally_on_every_task():
    G, L = grads_problem(T=5, P=12, seed=5)
    beta, d = _core.weighting_combine(W.IMTLG().core_config(), G, L, np.zeros(0), 0, 0)
    proj = G @ d / np.linalg.norm(G, axis=1)
    np.testing.assert_allclose(proj, proj[0], rtol=1e-9)
    assert beta.sum() == pytest.approx(1.0)


def test_nashmtl_solves_the_bargaining_equations():
    G, L = grads_problem(T=6, P=20, seed=6)
    alpha, d = _core.weighting_combine(W.NashMTL().core_config(), G, L, np.zeros(0), 0, 0)
    assert alpha.min() > 0
    ridge = 1e-8 * np.trace(G @ G.T) / 6                       # documented
    np.testing.assert_allclose(alpha * (G @ d) + ridge * alpha ** 2, 1.0, rtol=1e-9)  # (Kα)_i = 1/α_i


def test_cagrad_improves_the_worst_task_over_the_mean_gradient():
    G, L = grads_problem(T=5, P=20, seed=7)
    c = 0.5
    _, d = _core.weighting_combine(W.CAGrad(c=c, max_iter=2000).core_config(), G, L,
                                   np.zeros(0), 0, 0)
    g0 = G.mean(axis=0)
    d = d * (1 + c * c)
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-9)   # in the ball
    assert (G @ d).min() >= (G @ g0).min() - 1e-9


def test_aligned_mtl_equalises_orthogonal_gradients():
    G = np.diag([1.0, 3.0, 10.0])        # orthogonal, norms 1, 3, 10
    beta, d = _core.weighting_combine(W.AlignedMTL().core_config(), G, np.ones(3), np.zeros(0), 0, 0)
    np.testing.assert_allclose(d, np.full(3, 1 / 3), rtol=1e-12)      # every one scaled to norm 1


def test_uncertainty_optimum_variance_equals_the_task_loss():
    L = np.array([0.3, 2.0, 7.0])
    for classification, factor in ((False, 1.0), (True, 2.0)):
        w = W.Uncertainty(classification=classification, lr=0.05)
        s = w.initial_state(3)
        for step in range(3000):
            _core.weighting_after(w.core_config(), s, step, L)
        np.testing.assert_allclose(np.exp(s[:3]), factor * L, rtol=1e-3)


def test_gradnorm_weights_sum_to_the_number_of_tasks():
    G, L = grads_problem(T=4, P=16, seed=8)
    w = W.GradNorm()
    s = w.initial_state(4)
    for step in range(5):
        beta, _ = _core.weighting_combine(w.core_config(), G, L * (1 - 0.1 * step), s, 0, step)
        assert beta.sum() == pytest.approx(4.0)
    assert s[:4].sum() == pytest.approx(4.0)


# --- inside fit's loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("w", [W.MGDA(), W.PCGrad(), W.GradNorm(), W.CAGrad()], ids=repr)
def test_one_fit_step_is_the_reference_combined_update(w):
    obj, theta0 = heads_problem()
    lr = 0.01
    res = mc.fit(obj, theta0, weighting=w, optimizer=mc.optim.SGD(lr=lr), steps=1, progress=False,
                 seed=3)
    losses, G = obj.task_losses_and_grads(theta0)
    beta = ref.weighting.combine(w.to_dict(), G, losses, w.initial_state(4), 3, 0,
                                 obj.model.n_trunk_params)
    g = ref.weighting.combined_grad(beta, G, obj.model.n_trunk_params,
                                    heads_weighted=isinstance(w, W.GradNorm)) + obj.l2 * theta0
    np.testing.assert_allclose(res.theta, theta0 - lr * g, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.history.weights[-1], beta, rtol=1e-7, atol=1e-9)


def test_one_fit_step_with_a_loss_strategy_uses_its_alpha():
    obj, theta0 = heads_problem()
    res = mc.fit(obj, theta0, weighting=W.RLW(), optimizer=mc.optim.SGD(lr=0.01), steps=1,
                 progress=False, seed=5, record_task_losses=True)
    alpha = ref.weighting.before_step({"name": "RLW"}, None, 5, 0, np.ones(4))
    _, g = ref.objective_value_and_grad(obj.model, obj.ts, theta0, weights=alpha, l2=obj.l2)
    np.testing.assert_allclose(res.theta, theta0 - 0.01 * g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.history.step_weights[0], alpha, rtol=1e-12)


def same_sign_problem():
    return conflict_problem(signs=(1, 1, 1, 1))


@pytest.mark.parametrize("problem", [heads_problem, conflict_problem, same_sign_problem],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("w", ADAPTIVE, ids=repr)
def test_resumed_runs_are_bit_identical(w, problem, tmp_path):
    # whatever α a strategy writes into a checkpoint, loading it takes it back (IMTL-G's
    # negative weights were once refused as a corrupt file)
    obj, theta0 = problem()
    kw = dict(weighting=w, optimizer=mc.optim.Adam(lr=0.01), progress=False, seed=2, eval_every=5,
              record_task_losses=True)
    whole = mc.fit(obj, theta0, steps=12, **kw)
    assert whole.history.step_weights.shape == (12, 4)
    assert np.isfinite(whole.history.step_weights).all()
    first = mc.fit(obj, theta0, steps=7, **kw)
    if (isinstance(w, W.IMTLG) and problem is conflict_problem
            or isinstance(w, W.AlignedMTL) and problem is same_sign_problem):
        assert first.weights.min() < 0          # the cases these problems are here for
    mc.save(tmp_path / "ck.npz", first)
    kw.pop("weighting")
    rest = mc.fit(obj, mc.load(tmp_path / "ck.npz"), steps=5, **kw)
    assert np.array_equal(rest.theta, whole.theta)
    assert np.array_equal(rest.weights, whole.weights)
    assert np.array_equal(rest.weighting_state, whole.weighting_state)
    assert mc.load(tmp_path / "ck.npz").weighting == w


@pytest.mark.parametrize("w", [W.MGDA(), W.GradVac(), W.Uncertainty()], ids=repr)
def test_thread_count_does_not_change_the_run(w):
    obj, theta0 = heads_problem(T=6)
    runs = [mc.fit(obj, theta0, weighting=w, steps=5, progress=False, n_threads=k).theta
            for k in (1, 2)]
    assert np.array_equal(runs[0], runs[1])


def test_float32_runs():
    obj, theta0 = heads_problem(dtype=np.float32)
    res = mc.fit(obj, theta0, weighting=W.NashMTL(), steps=5, progress=False)
    assert res.theta.dtype == np.float32 and np.isfinite(res.theta).all()


# --- bad input -----------------------------------------------------------------------------------
def test_adaptive_weighting_with_batches_is_rejected_by_name():
    obj, theta0 = heads_problem()
    with pytest.raises(ValueError, match="batch_tasks"):
        mc.fit(obj, theta0, weighting=W.MGDA(), batch_tasks=2, steps=2, progress=False)
    mc.fit(obj, theta0, weighting=W.EvalDriven(eval_every=1), batch_tasks=2, steps=2,
           progress=False)


@pytest.mark.parametrize("make, what", [
    (lambda: W.DWA(temperature=0), "temperature"), (lambda: W.MGDA(normalization="max"),
                                                    "normalization"),
    (lambda: W.GradVac(beta=2), "beta"), (lambda: W.CAGrad(c=-1), "c"),
    (lambda: W.EvalDriven("best"), "rule"), (lambda: W.FAMO(lr=0), "lr")])
def test_bad_settings_name_the_setting(make, what):
    with pytest.raises(ValueError, match=what):
        make()


def test_settings_round_trip_through_plain_data():
    for w in ADAPTIVE:
        assert W.from_dict(w.to_dict()) == w
