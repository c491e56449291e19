"""Every weighting strategy stays finite on degenerate tasks — losses at exactly 0, zero
gradients, identical and opposite tasks — in the core, in the reference and inside fit; CAGrad's
and MGDA's inner problems are solved to optimality, checked against independent oracles (duality
certificates and SciPy); and a strategy that still fails stops fit with an error naming it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import metacore as mc
from metacore import _core
from metacore import reference as ref
from metacore import weighting as W

GRADIENT = [W.GradNorm(), W.MGDA(), W.MGDA(normalization="l2"), W.MGDA(normalization="loss"),
            W.MGDA(normalization="loss+l2"), W.PCGrad(), W.CAGrad(), W.CAGrad(c=2.0), W.IMTLG(),
            W.NashMTL(), W.AlignedMTL(), W.GradVac(beta=0.3)]
LOSS = [W.DWA(), W.DWA(window=2), W.Uncertainty(), W.Uncertainty(classification=True), W.RLW(),
        W.FAMO()]
EVERY = [W.Uniform(), W.EvalDriven(eval_every=2), W.EvalDriven("dtp", eval_every=2)] + LOSS \
    + GRADIENT

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- generated degenerate gradient matrices ------------------------------------------------------
@st.composite
def degenerate_grads(draw):
    """(G (T, P), losses (T,)): rows zero, repeated, negated or scaled copies of a few directions,
    and losses with exact zeros."""
    T = draw(st.integers(1, 6))
    P = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(1, draw(st.integers(1, 3))), P)) * 10.0 ** draw(st.integers(-6, 6))
    rows = []
    for _ in range(T):
        kind = draw(st.sampled_from(["zero", "same", "opposite", "scaled", "fresh"]))
        b = base[draw(st.integers(0, base.shape[0] - 1))]
        rows.append({"zero": 0 * b, "same": b, "opposite": -b,
                     "scaled": b * draw(st.sampled_from([1e-3, 0.5, 2.0, 1e3])),
                     "fresh": rng.normal(size=P)}[kind])
    L = np.array([draw(st.sampled_from([0.0, 0.0, 1e-30, 0.5, 3.0])) for _ in range(T)])
    return np.array(rows), L


def combined(w, G, L, state=None, step=0, dtype=np.float64):
    cfg = w.core_config()
    s = w.initial_state(G.shape[0]) if state is None else state
    return _core.weighting_combine(cfg, np.ascontiguousarray(G, dtype), L.astype(dtype), s, 7,
                                   step)


@pytest.mark.parametrize("w", GRADIENT, ids=repr)
@SETTINGS
@given(problem=degenerate_grads())
def test_gradient_strategies_are_finite_on_degenerate_tasks(w, problem):
    G, L = problem
    state = w.initial_state(G.shape[0])
    for step in range(3):       # the stateful ones (GradNorm, GradVac) over a few steps
        beta, d = combined(w, G, L, state, step)
        assert np.isfinite(beta).all() and np.isfinite(d).all() and np.isfinite(state).all()


@pytest.mark.parametrize("w", [w for w in GRADIENT if not isinstance(w, W.GradNorm)], ids=repr)
@SETTINGS
@given(problem=degenerate_grads())
def test_core_and_reference_agree_on_the_direction_of_degenerate_tasks(w, problem):
    """The direction d = Σ β_i g_i (β itself is not unique where tasks coincide)."""
    G, L = problem
    # MGDA's loss normalisation turns a loss of 1e-30 into a gradient 1e30 times the others: the
    # min-norm problem's tolerance (relative to its largest point) then allows either answer
    assume(not (isinstance(w, W.MGDA) and "loss" in w.normalization and (L == 1e-30).any()))
    T = G.shape[0]
    s_core, s_ref = w.initial_state(T), w.initial_state(T)
    _, d = combined(w, G, L, s_core)
    beta_ref = ref.weighting.combine(w.to_dict(), G, L, s_ref, 7, 0)
    d_ref = ref.weighting.combined_grad(beta_ref, G)
    assert np.isfinite(beta_ref).all()
    scale = max(np.abs(G).max() * max(np.abs(beta_ref).max(), 1.0), 1e-300)
    np.testing.assert_allclose(d, d_ref, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("w", LOSS, ids=repr)
@SETTINGS
@given(losses=st.lists(st.lists(st.sampled_from([0.0, 0.0, 1e-300, 1e-8, 0.7, 5.0, 1e30]),
                                min_size=3, max_size=3), min_size=1, max_size=8))
def test_loss_strategies_are_finite_and_match_the_reference_on_zero_losses(w, losses):
    T = 3
    cfg, d = w.core_config(), w.to_dict()
    s_core, s_ref = w.initial_state(T), w.initial_state(T)
    cond = 1.0
    for step, L in enumerate(np.array(losses)):
        a = _core.weighting_before(cfg, s_core, 3, step, L)
        a_ref = ref.weighting.before_step(d, s_ref, 3, step, L)
        assert np.isfinite(a).all() and (a >= 0).all()
        # Rounding of log(ℓ + 1e-8) (|log| up to ~70) is amplified by the weights' conditioning,
        # (max ℓ + 1e-8)/(min ℓ + 1e-8) — 7e7 for losses 0.7 and 0, where FAMO's weights differ
        # by 2e-7 between two correct summation orders — and accumulates over the steps; 1e-7
        # where the losses are alike.
        cond = max(cond, (L.max() + 1e-8) / (L.min() + 1e-8))
        logs = 1.0 + np.abs(np.log(L + 1e-8)).max()
        rtol = max(1e-7, 16 * np.finfo(float).eps * (step + 1) * logs * cond)
        np.testing.assert_allclose(a, a_ref, rtol=rtol, atol=1e-300)
        _core.weighting_after(cfg, s_core, step, L)
        ref.weighting.after_step(d, s_ref, step, L)
        assert np.isfinite(s_core).all()


def test_dwa_on_a_loss_that_is_exactly_zero():
    """0/0 gave NaN weights: a loss that stays 0 keeps ratio 1; one that rises from 0 takes α."""
    cfg, T = W.DWA().core_config(), 3
    s = W.DWA().initial_state(T)
    for step, L in enumerate([[0.0, 1.0, 2.0], [0.0, 0.5, 2.0], [0.0, 0.5, 2.0]]):
        a = _core.weighting_before(cfg, s, 0, step, np.array(L))
        _core.weighting_after(cfg, s, step, np.array(L))
    np.testing.assert_allclose(a, ref.weighting._softmax(np.array([1.0, 0.5, 1.0]) / 2.0))
    _core.weighting_after(cfg, s, 3, np.array([1.0, 0.5, 2.0]))   # task 0 rises from 0
    np.testing.assert_array_equal(_core.weighting_before(cfg, s, 0, 4, np.ones(3)), [1, 0, 0])


# --- CAGrad and MGDA against independent oracles ----------------------------------------------
def _cagrad_direction(G, c):
    beta, _ = combined(W.CAGrad(c=c, max_iter=1000), G, np.ones(G.shape[0]))
    return (1 + c * c) * beta @ G         # the unscaled d = g0 + c‖g0‖ g_w/‖g_w‖


def _ball_tol(beta, G, c):
    """How far past the ball ‖d − g0‖ ≤ c‖g0‖ CAGrad's d may lie: ‖g_w‖ is known only through
    the Gram matrix, ‖g_w‖² to ±Tε·max‖g_i‖², so ‖g_w‖/t* to Tε(max‖g_i‖/t*)², with t* = c‖g0‖/λ
    read back from β = (1/T + λw)/(1 + c²), Σw = 1; capped at 1e-4 (a d that scales rounding noise,
    40–60 % outside, fails)."""
    T = G.shape[0]
    R = c * np.linalg.norm(G.mean(axis=0))
    lam = (1 + c * c) * beta.sum() - 1.0
    if not lam > 0 or R == 0:
        return 1e-9 * R
    tstar = R / lam
    gmax = np.sqrt(np.max(np.sum(G * G, axis=1)))
    return R * min(1e-4, 1e-9 + T * np.finfo(float).eps * (gmax / tstar) ** 2)


def _cagrad_primal_oracle(G, c):
    """The CAGrad primal max_d min_i g_i·d over ‖d − g0‖ ≤ c‖g0‖ by SLSQP on (d, z): max z with
    G d ≥ z and ‖d − g0‖² ≤ (c‖g0‖)², smooth constraints; the value of the (feasible) point found,
    a lower bound on the optimum."""
    from scipy.optimize import minimize
    T, P = G.shape
    g0 = G.mean(axis=0)
    R2 = (c * np.linalg.norm(g0)) ** 2
    x0 = np.append(g0, (G @ g0).min())
    res = minimize(lambda x: -x[-1], x0, jac=lambda x: np.append(np.zeros(P), -1.0),
                   method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000}, constraints=[
                       {"type": "ineq", "fun": lambda x: G @ x[:-1] - x[-1],
                        "jac": lambda x: np.hstack([G, -np.ones((T, 1))])},
                       {"type": "ineq", "fun": lambda x: R2 - (x[:-1] - g0) @ (x[:-1] - g0),
                        "jac": lambda x: np.append(-2 * (x[:-1] - g0), 0.0)}])
    d = res.x[:-1]
    if (d - g0) @ (d - g0) > R2:          # pull a slightly infeasible point back into the ball
        d = g0 + (d - g0) * math.sqrt(R2 / ((d - g0) @ (d - g0)))
    return (G @ d).min()


def _cagrad_dual_oracle(G, c):
    """min over the simplex of g_w·g0 + c‖g0‖‖g_w‖ by SLSQP from the centre, every vertex and the
    min-norm point of the hull (a SciPy QP: where the optimum has g_w ≈ 0, ‖g_w‖ is not smooth
    and SLSQP from the other starts stalls 1e-6 above it): the value of a point of the simplex, an
    upper bound on the optimum (weak duality)."""
    from scipy.optimize import minimize
    T = G.shape[0]
    g0 = G.mean(axis=0)
    R = c * np.linalg.norm(g0)
    dual = lambda w: w @ G @ g0 + R * np.linalg.norm(w @ G)   # noqa: E731
    on_simplex = [{"type": "eq", "fun": lambda w: w.sum() - 1}]
    K = G @ G.T
    hull = minimize(lambda w: w @ K @ w, np.full(T, 1.0 / T), jac=lambda w: 2 * K @ w,
                    method="SLSQP", bounds=[(0, 1)] * T, constraints=on_simplex,
                    options={"ftol": 1e-15, "maxiter": 1000}).x
    points = [np.clip(r.x, 0, None) for r in (
        minimize(dual, w0, method="SLSQP", bounds=[(0, 1)] * T, constraints=on_simplex,
                 options={"ftol": 1e-15, "maxiter": 1000})
        for w0 in [np.full(T, 1.0 / T), *np.eye(T), hull])]
    return min(dual(w / w.sum()) for w in [*points, np.clip(hull, 0, None)])


@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), T=st.integers(2, 6), P=st.integers(2, 8),
       c=st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0]))
def test_cagrad_direction_is_optimal_by_its_duality_certificate(seed, T, P, c):
    """CAGrad's d maximises min_i g_i·d over the ball ‖d − g0‖ ≤ c‖g0‖, whose dual is
    min_{w∈Δ} g_w·g0 + c‖g0‖‖g_w‖: d is in the ball and its primal value meets the dual value of
    a SciPy solve of the dual (the optimum lies between them). With T > P, 0 is often inside the
    tasks' hull (t* = ‖g_w*‖ = 0 for c ≥ 1: e.g. seed=0, T=3, P=2, c=2, where the bisection once
    ran below the Gram matrix's resolution and scaled noise by c‖g0‖/‖g_w‖, β ~ 1e7)."""
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(T, P)) * rng.uniform(0.1, 3, size=(T, 1))
    g0 = G.mean(axis=0)
    R = c * np.linalg.norm(g0)
    beta, _ = combined(W.CAGrad(c=c, max_iter=1000), G, np.ones(T))
    d = (1 + c * c) * beta @ G
    assert np.linalg.norm(d - g0) <= R + _ball_tol(beta, G, c) + 1e-12
    primal = (G @ d).min()
    best = _cagrad_dual_oracle(G, c)
    scale = np.abs(G).max() ** 2
    assert primal <= best + 1e-9 * scale          # weak duality: the oracle is sound
    assert primal >= best - 1e-7 * scale          # and CAGrad's d reaches the optimum
    assert primal >= _cagrad_primal_oracle(G, c) - 1e-9 * scale


@st.composite
def cagrad_degenerate(draw):
    """(G (T, P), c, zero_inside): 0 in the tasks' hull ("pair": g and −g; "inside": g_T =
    −Σ a_i g_i, a_i > 0, 0 in the relative interior), 0 at 1e-9…1e-12 from it ("near"), or none
    ("fresh"); zero rows; the whole set scaled by 10^-150 … 10^150."""
    T = draw(st.integers(2, 6))
    P = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(["pair", "inside", "near", "fresh"]))
    G = rng.normal(size=(T, P)) * rng.uniform(0.1, 3, size=(T, 1))
    if kind == "pair":
        G[-1] = -G[0]
    elif kind in ("inside", "near"):
        G[-1] = -rng.uniform(0.2, 1.0, size=T - 1) @ G[:-1]
        if kind == "near":
            G[-1] += draw(st.sampled_from([1e-9, 1e-12])) * rng.normal(size=P)
    if draw(st.booleans()) and T > 2:
        G[1] = 0.0                        # a task with no gradient: 0 is a vertex of the hull
    c = draw(st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0]))
    zero_inside = kind == "pair" or (T > 2 and not G[1].any()) or kind == "inside"
    return G, c, zero_inside, 10.0 ** draw(st.sampled_from([-150, -20, 0, 20, 150]))


@SETTINGS
@given(problem=cagrad_degenerate())
def test_cagrad_is_optimal_when_zero_is_in_or_near_the_tasks_hull(problem):
    """0 in the tasks' hull, near it or not, at any scale: d is in the ball, its primal value
    min_i g_i·d is at least that of a SciPy solve of the primal (smooth SLSQP on (d, z)) and at
    most that of the dual; with 0 in the hull and c ≥ 1 the optimum is 0 exactly (the dual value
    g_w·g0 + c‖g0‖‖g_w‖ ≥ (c − 1)‖g0‖‖g_w‖ ≥ 0, and 0 at g_w = 0); the core and the reference
    agree. All at the unit scale max‖g_i‖ = 1."""
    G, c, zero_inside, scale = problem
    T = G.shape[0]
    G = G / np.sqrt(np.max(np.sum(G * G, axis=1)))
    Gs = G * scale
    w = W.CAGrad(c=c, max_iter=1000)
    beta, ds = combined(w, Gs, np.ones(T))
    beta_ref = ref.weighting.combine(w.to_dict(), Gs, np.ones(T), w.initial_state(T), 7, 0)
    assert np.isfinite(beta).all() and np.isfinite(ds).all()
    d, d_ref = (1 + c * c) * beta @ G, (1 + c * c) * beta_ref @ G
    np.testing.assert_allclose(ds / scale, beta @ G, rtol=1e-12, atol=1e-12 * np.abs(beta).sum())
    np.testing.assert_allclose(d, d_ref, rtol=0, atol=1e-6)
    g0 = G.mean(axis=0)
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) + _ball_tol(beta, G, c) + 1e-12
    primal = (G @ d).min()
    assert primal <= _cagrad_dual_oracle(G, c) + 1e-9
    assert primal >= _cagrad_primal_oracle(G, c) - 1e-9
    if zero_inside and c >= 1:
        assert abs(primal) <= 1e-9
    if zero_inside and c > 1:                     # t* = 0: the flat solution, no noise scaled up
        assert np.abs(beta).max() <= 1e3


@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), T=st.integers(3, 7), P=st.integers(1, 4),
       c=st.sampled_from([1.0, 2.0, 5.0]), spread=st.sampled_from([1.0, 1e-3, 1e-6]))
def test_cagrad_flat_direction_is_scipys_nnls_projection(seed, T, P, c, spread):
    """With 0 strictly inside the tasks' hull and c ≥ 1, CAGrad's d is the point nearest g0 of
    the cone G d ≥ 0: d = g0 + Σ μ_i g_i, μ = argmin_{μ ≥ 0} ‖g0 + Gᵀμ‖ — here from SciPy's
    NNLS (scipy.optimize.nnls on Gᵀ, an independent active-set code). Nearly opposite pairs
    (spread 1e-3, 1e-6) made the former coordinate descent stall 2.6e-3 short of the cone; the
    Gram matrix's rounding (ε·max‖g_i‖²) leaves d known to √(16Tε)·(1 + Σμ)·max‖g_i‖ where
    tasks are nearly dependent, as CAGrad's resolution floor."""
    from scipy.optimize import nnls
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(T, P))
    G[1] = -G[0] * rng.uniform(0.5, 2.0) + spread * rng.normal(size=P)
    G[-1] = -rng.uniform(0.2, 1.0, size=T - 1) @ G[:-1]            # 0 inside the hull
    G /= np.sqrt(np.max(np.sum(G * G, axis=1)))
    g0 = G.mean(axis=0)
    mu, _ = nnls(G.T, -g0, maxiter=50 * T)
    want = g0 + mu @ G
    w = W.CAGrad(c=c, max_iter=1000)
    beta, _ = combined(w, G, np.ones(T))
    beta_ref = ref.weighting.combine(w.to_dict(), G, np.ones(T), w.initial_state(T), 7, 0)
    d, d_ref = (1 + c * c) * beta @ G, (1 + c * c) * beta_ref @ G
    # ‖d‖² = μᵀKμ + 2bᵀμ + ‖g0‖² is known to Tε·max‖g_i‖²·(1 + Σμ)² from K's rounding: d to
    # √(16Tε)·(1 + Σμ)·max‖g_i‖, no finer, where tasks are nearly dependent
    floor = np.sqrt(16 * T * np.finfo(float).eps) * (1 + mu.sum())
    np.testing.assert_allclose(d, want, rtol=0, atol=floor)
    np.testing.assert_allclose(d_ref, want, rtol=0, atol=floor)
    assert (G @ d).min() >= -floor


@pytest.mark.parametrize("c", [1.0, 1.5])
@pytest.mark.parametrize("seed", range(40))
def test_cagrad_picks_the_flat_direction_where_the_dual_is_flat(seed, c):
    """Two tasks opposite up to δ = 1e-9 (g2 = −a·g1 + δ·z): the optimum d* is O(δ) (the ball
    ‖d − g0‖ ≤ c‖g0‖ touches the wedge G d ≥ 0 only near 0). At c = 1 the dual g_w·g0 + ‖g0‖‖g_w‖
    is 0 (to δ²) for every g_w antiparallel to g0, so the bisection on t stops at a t set by
    rounding and φ/t multiplied δ into d (|d| = 1e-4 drawn by CI); the flat direction wins that
    tie. Oracle: |d| = O(δ) and min_i g_i·d ≥ −1e-12, core = reference."""
    rng = np.random.default_rng(seed)
    P = 2 + seed % 4
    G = rng.normal(size=(2, P))
    G[1] = -rng.uniform(0.2, 1.0) * G[0] + 1e-9 * rng.normal(size=P)
    G /= np.sqrt(np.max(np.sum(G * G, axis=1)))
    w = W.CAGrad(c=c, max_iter=1000)
    beta, _ = combined(w, G, np.ones(2))
    beta_ref = ref.weighting.combine(w.to_dict(), G, np.ones(2), w.initial_state(2), 7, 0)
    d, d_ref = (1 + c * c) * beta @ G, (1 + c * c) * beta_ref @ G
    assert np.linalg.norm(d) <= 1e-7 and np.linalg.norm(d_ref) <= 1e-7
    assert (G @ d).min() >= -1e-12
    np.testing.assert_allclose(d, d_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_cagrad_with_zero_in_the_hull_is_bit_identical_for_any_thread_count(c):
    rng = np.random.default_rng(4)
    G = rng.normal(size=(5, 30000))
    G[4] = -(0.3 * G[0] + 0.5 * G[1] + 0.9 * G[2] + 0.4 * G[3])     # 0 inside the hull
    w, L = W.CAGrad(c=c), np.ones(5)
    runs = [_core.weighting_combine(w.core_config(), G, L, w.initial_state(5), 7, 0,
                                    n_threads=k) for k in (1, 2, 3, 4)]
    for beta, d in runs[1:]:
        np.testing.assert_array_equal(beta, runs[0][0])
        np.testing.assert_array_equal(d, runs[0][1])


@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), P=st.integers(2, 8),
       c=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_cagrad_direction_matches_a_one_dimensional_brute_force_for_two_tasks(seed, P, c):
    """Two tasks: w = (u, 1 − u) minimises the convex F(u) = g_u·g0 + R‖g_u‖, found as the root
    of F′ by bracketing (to 1e-15; a minimisation on F's values resolves u only to √ε, which
    moves d by 1e-5 where ‖g_u‖ is small) — the direction agrees to 1e-6 (the old fixed 250
    Frank–Wolfe steps were off by up to 10 % at c = 2)."""
    from scipy.optimize import brentq
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(2, P)) * rng.uniform(0.1, 3, size=(2, 1))
    G[1] = -0.8 * G[0] + 0.4 * G[1]               # conflicting
    g0 = G.mean(axis=0)
    R = c * np.linalg.norm(g0)
    D = G[0] - G[1]
    dF = lambda u: D @ g0 + R * (D @ (G[1] + u * D)) / np.linalg.norm(G[1] + u * D)  # noqa: E731
    u = 0.0 if dF(0.0) >= 0 else 1.0 if dF(1.0) <= 0 else brentq(dF, 0, 1, xtol=1e-15,
                                                                    rtol=1e-15)
    gw = u * G[0] + (1 - u) * G[1]
    want = g0 + R * gw / np.linalg.norm(gw)
    d = _cagrad_direction(G, c)
    assert np.linalg.norm(d - want) <= 1e-6 * np.linalg.norm(want)


@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), T=st.integers(2, 7), P=st.integers(1, 8),
       dup=st.booleans())
def test_mgda_is_the_min_norm_point_of_a_direct_qp(seed, T, P, dup):
    """MGDA's d is the min-norm point x of the tasks' convex hull: x·g_i ≥ ‖x‖² for every task
    (its optimality condition), and ‖x‖² matches a SciPy QP over the simplex."""
    from scipy.optimize import minimize
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(T, P))
    if dup:
        G[-1] = G[0]
    beta, x = combined(W.MGDA(), G, np.ones(T))
    scale = np.max(np.sum(G * G, axis=1))
    assert beta.sum() == pytest.approx(1.0) and (beta >= 0).all()
    assert (G @ x).min() >= x @ x - 1e-9 * scale
    K = G @ G.T
    qp = minimize(lambda w: w @ K @ w, np.full(T, 1.0 / T), jac=lambda w: 2 * K @ w,
                  method="SLSQP", bounds=[(0, 1)] * T,
                  constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                  options={"ftol": 1e-15, "maxiter": 1000})
    assert x @ x <= qp.fun + 1e-9 * scale


# --- the min-norm point of a convex hull (MGDA's, and CAGrad's inner, problem) exactly ---------
@st.composite
def hulls(draw):
    """G (T, P): points that are zero, repeated, negated, collinear (scaled by 1e-3 … 1e3),
    1e-7 apart or fresh, the whole set scaled by 10^-150 … 10^150."""
    T = draw(st.integers(1, 6))
    P = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    base = rng.normal(size=(draw(st.integers(1, 3)), P))
    rows = []
    for _ in range(T):
        kind = draw(st.sampled_from(["zero", "same", "opposite", "scaled", "near", "fresh"]))
        b = base[draw(st.integers(0, base.shape[0] - 1))]
        rows.append({"zero": 0 * b, "same": b, "opposite": -b,
                     "scaled": b * draw(st.sampled_from([1e-3, 0.5, 2.0, 1e3])),
                     "near": b + 1e-7 * rng.normal(size=P), "fresh": rng.normal(size=P)}[kind])
    return np.array(rows) * 10.0 ** draw(st.sampled_from([-150, -20, 0, 20, 150]))


def _min_norm_by_supports(G):
    """(‖x*‖², x*) for the min-norm point x* of the convex hull of G's rows, by enumeration: for
    every subset S, the affine minimiser of S (least squares on the system K_SS γ = λ1, Σγ = 1)
    where its weights are ≥ 0; the smallest norm among them. Exact (some affinely independent
    support holds x*, Carathéodory) and independent of any iterative solver."""
    T = G.shape[0]
    best, xbest = math.inf, None
    for r in range(1, T + 1):
        for S in itertools.combinations(range(T), r):
            S = list(S)
            M = np.zeros((r + 1, r + 1))
            M[:r, :r] = G[S] @ G[S].T
            M[:r, r] = M[r, :r] = 1.0
            rhs = np.zeros(r + 1)
            rhs[r] = 1.0
            gam = np.linalg.lstsq(M, rhs, rcond=None)[0][:r]
            if (gam >= -1e-12).all() and abs(gam.sum() - 1) <= 1e-9:
                x = np.clip(gam, 0, None) / np.clip(gam, 0, None).sum() @ G[S]
                if x @ x < best:
                    best, xbest = x @ x, x
    return best, xbest


def _check_min_norm(gamma, G, x=None):
    """γ on the simplex; x = γG meets the optimality condition x·g_i ≥ ‖x‖² for every i and has
    the norm of the enumerated minimum (all relative to max‖g_i‖² = 1 after scaling)."""
    assert np.isfinite(gamma).all() and (gamma >= 0).all()
    assert abs(gamma.sum() - 1) <= 1e-12
    c = np.sqrt(np.max(np.sum(G * G, axis=1)))
    if c == 0:
        return
    Gn = G / c
    xn = gamma @ Gn if x is None else x / c
    assert (Gn @ xn).min() >= xn @ xn - 1e-11
    best, xstar = _min_norm_by_supports(Gn)
    assert xn @ xn <= best + 1e-11
    assert np.linalg.norm(xn - xstar) <= 1e-5     # ‖x − x*‖² ≤ ‖x‖² − ‖x*‖² on a convex set


@SETTINGS
@given(G=hulls())
def test_min_norm_point_is_exact_on_degenerate_hulls(G):
    """MGDA (no normalisation: β = γ, d = x) in the core and the reference's solver give the
    min-norm point of the hull to 1e-11·max‖g_i‖², whatever the degeneracy or the scale."""
    T = G.shape[0]
    beta, d = combined(W.MGDA(), G, np.ones(T))
    _check_min_norm(beta, G, d)
    _check_min_norm(ref.weighting.min_norm_simplex(G @ G.T), G)


@SETTINGS
@given(G=hulls(), max_iter=st.integers(1, 3))
def test_min_norm_iteration_bound_falls_back_to_the_best_point_met(G, max_iter):
    """Cut short, the solver returns the best point met: on the simplex, and no longer than the
    shortest g_i it starts from; the core and the reference stop at the same point."""
    T = G.shape[0]
    beta, d = combined(W.MGDA(max_iter=max_iter), G, np.ones(T))
    assert np.isfinite(beta).all() and (beta >= 0).all() and abs(beta.sum() - 1) <= 1e-12
    n2 = np.sum(G * G, axis=1)
    assert d @ d <= n2.min() * (1 + 1e-12) + 1e-300
    gamma = ref.weighting.min_norm_simplex(G @ G.T, max_iter)
    scale = max(np.sqrt(n2.max()), 1e-300)
    np.testing.assert_allclose(d / scale, gamma @ G / scale, rtol=0, atol=1e-9)


@pytest.mark.parametrize("w", [W.MGDA(), W.MGDA(normalization="l2"), W.CAGrad(c=2.0)], ids=repr)
def test_min_norm_strategies_are_bit_identical_for_any_thread_count(w):
    rng = np.random.default_rng(3)
    G = rng.normal(size=(7, 30000))
    G[3], G[5], G[6] = G[0], -1e-3 * G[1], 0.0
    L = np.ones(7)
    runs = [_core.weighting_combine(w.core_config(), G, L, w.initial_state(7), 7, 0,
                                    n_threads=k) for k in (1, 2, 3, 4)]
    for beta, d in runs[1:]:
        np.testing.assert_array_equal(beta, runs[0][0])
        np.testing.assert_array_equal(d, runs[0][1])


def test_imtlg_on_identical_tasks_is_uniform_not_a_singular_error():
    g = np.array([[1.0, 2.0, -1.0]] * 3)
    beta, d = combined(W.IMTLG(), g, np.ones(3))
    np.testing.assert_allclose(beta, [1 / 3] * 3)
    np.testing.assert_allclose(d, g[0])


def test_imtlg_leaves_out_a_task_with_no_gradient():
    G = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    beta, d = combined(W.IMTLG(), G, np.ones(3))
    assert beta[1] == 0.0 and beta.sum() == pytest.approx(1.0)
    u = G[[0, 2]] / np.linalg.norm(G[[0, 2]], axis=1, keepdims=True)
    assert (u @ d)[0] == pytest.approx((u @ d)[1])


# --- inside fit ----------------------------------------------------------------------------------
def _tasks(kind, T=3):
    """Linear regression tasks that are all exactly solved at θ = 0 ("zero": losses and
    gradients 0), copies of one task ("identical") or pairs with negated targets ("opposite")."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 2))
    y = X @ np.array([1.0, -2.0])
    ys = {"zero": [0 * y] * T, "identical": [y] * T,
          "opposite": [y if i % 2 == 0 else -y for i in range(T)]}[kind]
    ts = mc.TaskSet.from_arrays([X] * T, ys, n_support=4)
    model = mc.MLP([2, 1])
    return mc.Objective(model, ts), np.zeros(model.n_params)


@pytest.mark.parametrize("kind", ["zero", "identical", "opposite"])
@pytest.mark.parametrize("w", EVERY, ids=repr)
def test_every_strategy_trains_on_degenerate_tasks(w, kind):
    obj, theta = _tasks(kind)
    res = mc.fit(obj, theta, steps=12, weighting=w, eval_every=4, progress=False,
                 optimizer=mc.optim.SGD(lr=0.05), record_task_losses=True)
    assert res.step == 12 and np.isfinite(res.theta).all()
    assert np.isfinite(res.history.step_weights).all()
    if kind == "zero":
        np.testing.assert_array_equal(res.theta, theta)


def test_non_finite_weights_stop_fit_with_an_error_naming_the_strategy():
    """A strategy whose state is already broken (here Uncertainty's log-variances, NaN) gives
    non-finite α: fit stops before applying that step and says which strategy, not 'lr'."""
    from metacore.train.fit import _diverged

    class Out:      # the core's ChunkResult, as _diverged reads it
        status, steps_done, bad_task, n_bad_tasks = "weighting_failed", 0, -1, 0
        objective, lr, grad_norm = [math.nan], [0.1], [math.nan]

    err = _diverged(Out(), 5, None, W.DWA())
    assert isinstance(err, mc.FitDivergedError) and err.step == 5
    assert "DWA(temperature=2.0, window=1)" in str(err) and "step 5" in str(err)
    assert "learning rate" not in str(err)
