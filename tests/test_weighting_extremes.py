"""Weighting strategies at the edges of floating point: gradients scaled by up to 2^±950 (and
10^±150), with zero, identical and opposite tasks among them, and losses from 1e-300 to 1e300.

The property is scale-correctness, an exact oracle: multiplying every task gradient by 2^k
(exact in binary floating point) leaves β unchanged — or divides it by 2^k where the rule
normalises by the gradients' size (MGDA "l2"/"loss+l2", Nash-MTL) — bit for bit, because the
Gram matrix and the norms are formed on rows scaled by powers of two when their squares would
leave the exponent range (before, s_i s_j K_ij overflowed for ‖g‖ ≳ 1e154 and vanished for
‖g‖ ≲ 1e-162). MGDA with ``normalization="l2"`` only sees directions: scaling each task by its
own 2^(k_i) gives the same direction d bit for bit. At 10^±150 (not exact) the directions agree
with the unscaled ones and with ``metacore.reference`` to rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from metacore import _core
from metacore import reference as ref
from metacore import weighting as W

GRADIENT = [W.GradNorm(), W.MGDA(), W.MGDA(normalization="l2"), W.MGDA(normalization="loss"),
            W.MGDA(normalization="loss+l2"), W.PCGrad(), W.CAGrad(), W.CAGrad(c=2.0), W.IMTLG(),
            W.NashMTL(), W.AlignedMTL(), W.GradVac(beta=0.3)]
# β ∝ 1/(gradient scale) for these; the others' β does not depend on it
INVERSE = (lambda w: isinstance(w, W.NashMTL)
           or (isinstance(w, W.MGDA) and w.normalization in ("l2", "loss+l2")))
LOSS = [W.DWA(), W.DWA(window=2), W.Uncertainty(), W.Uncertainty(classification=True), W.RLW(),
        W.FAMO(), W.EvalDriven(), W.EvalDriven("dtp")]

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tasks(draw):
    """(G (T, P), losses (T,)): rows zero, repeated, negated, scaled or fresh; positive losses
    (MGDA's loss normalisations need them) with some exact zeros elsewhere."""
    T = draw(st.integers(1, 5))
    P = draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    base = rng.normal(size=(draw(st.integers(1, 3)), P))
    rows = []
    for _ in range(T):
        kind = draw(st.sampled_from(["zero", "same", "opposite", "scaled", "fresh", "fresh"]))
        b = base[draw(st.integers(0, base.shape[0] - 1))]
        rows.append({"zero": 0 * b, "same": b, "opposite": -b,
                     "scaled": b * draw(st.sampled_from([1e-3, 0.5, 2.0, 1e3])),
                     "fresh": rng.normal(size=P)}[kind])
    L = np.array([draw(st.sampled_from([0.0, 1e-3, 0.5, 3.0, 40.0])) for _ in range(T)])
    return np.array(rows), L


def combined(w, G, L, step_states=1):
    """(β, d, state) after ``step_states`` steps on the same G and losses."""
    T = G.shape[0]
    s = w.initial_state(T)
    for step in range(step_states):
        beta, d = _core.weighting_combine(w.core_config(), np.ascontiguousarray(G), L, s, 7, step)
    return beta, d, s


def _exact_range(G, k):
    """2^k G has no subnormal or infinite entry (the scaling is exact)."""
    a = np.abs(G[G != 0])
    return a.size == 0 or (a.min() * 2.0 ** k >= 2.0 ** -1000 and a.max() * 2.0 ** k <= 2.0 ** 1000)


@pytest.mark.parametrize("w", GRADIENT, ids=repr)
@SETTINGS
@given(problem=tasks(), k=st.one_of(st.integers(600, 960), st.integers(-980, -600)))
def test_a_power_of_two_scale_of_the_gradients_scales_beta_exactly(w, problem, k):
    G, L = problem
    assume(_exact_range(G, k))
    if isinstance(w, W.MGDA) and "loss" in w.normalization:
        L = L + 0.25                      # every task kept: a positive normaliser
    beta, d, s = combined(w, G, L, step_states=3)
    beta_k, d_k, s_k = combined(w, G * 2.0 ** k, L, step_states=3)
    assert np.isfinite(beta_k).all() and np.isfinite(d_k).all() and np.isfinite(s_k).all()
    want = np.ldexp(beta, -k) if INVERSE(w) and G.any() else beta   # all zero: uniform
    np.testing.assert_array_equal(beta_k, want)
    np.testing.assert_array_equal(s_k, s)   # GradNorm's weights, GradVac's targets
    np.testing.assert_array_equal(d_k, d if INVERSE(w) else np.ldexp(d, k))


@pytest.mark.parametrize("norm", ["l2", "loss+l2"])
@SETTINGS
@given(problem=tasks(), ks=st.lists(st.sampled_from([0, 0, 620, 900, -620, -990]),
                                    min_size=5, max_size=5))
def test_mgda_l2_sees_only_directions_whatever_each_tasks_scale(norm, problem, ks):
    """Each task scaled by its own 2^(k_i) — one at 1e-298, another at 1e271, others as they were
    — gives the same d bit for bit, and β_i divided by 2^(k_i)."""
    G, L = problem
    T = G.shape[0]
    k = np.array(ks[:T])
    assume(all(_exact_range(G[i:i + 1], k[i]) for i in range(T)))
    w = W.MGDA(normalization=norm)
    beta, d, _ = combined(w, G, L + 0.25)
    beta_k, d_k, _ = combined(w, G * np.ldexp(1.0, k)[:, None], L + 0.25)
    np.testing.assert_array_equal(beta_k, np.ldexp(beta, -k))
    np.testing.assert_array_equal(d_k, d)


@pytest.mark.parametrize("w", [W.MGDA(normalization="loss"), W.MGDA(normalization="loss+l2"),
                               W.GradNorm()], ids=repr)
@SETTINGS
@given(problem=tasks(), j=st.integers(-1000, 1000))
def test_a_power_of_two_scale_of_the_losses_changes_nothing_but_the_normaliser(w, problem, j):
    """Losses times 2^j (1e-301 … 1e301): MGDA's β by 2^(−j), exactly; GradNorm (which sees only
    loss ratios) not at all."""
    G, L = problem
    L = L + 0.25
    beta, d, s = combined(w, G, L, step_states=2)
    beta_j, d_j, s_j = combined(w, G, np.ldexp(L, j), step_states=2)
    if isinstance(w, W.GradNorm):
        np.testing.assert_array_equal(beta_j, beta)
        T = G.shape[0]
        np.testing.assert_array_equal(s_j[:T], s[:T])     # the weights w
        return
    np.testing.assert_array_equal(beta_j, np.ldexp(beta, -j))
    assert not np.isnan(d_j).any()


@pytest.mark.parametrize("w", GRADIENT, ids=repr)
@SETTINGS
@given(problem=tasks(), p=st.sampled_from([-150, 150]))
def test_gradients_at_ten_to_the_150_match_unscaled_and_the_reference(w, problem, p):
    """At 10^±150 (an inexact scale) d/10^p agrees with the unscaled direction and with the
    reference's to the rounding of the Gram matrix; β stays finite."""
    G, L = problem
    if isinstance(w, W.MGDA) and "loss" in w.normalization:
        L = L + 0.25
    Gp = G * 10.0 ** p
    T = G.shape[0]
    beta, d, _ = combined(w, G, L)
    beta_p, d_p, s_p = combined(w, Gp, L)
    assert np.isfinite(beta_p).all() and np.isfinite(d_p).all() and np.isfinite(s_p).all()
    back = 1.0 if INVERSE(w) else 10.0 ** -p          # d at the unscaled size
    tol = 1e-6 * max(np.abs(G).max() * max(np.abs(beta).max(), 1.0), 1e-300)
    np.testing.assert_allclose(d_p * back, d, rtol=1e-6, atol=tol)
    s_ref = w.initial_state(T)
    beta_ref = ref.weighting.combine(w.to_dict(), Gp, L, s_ref, 7, 0)
    assert np.isfinite(beta_ref).all()
    d_ref = ref.weighting.combined_grad(beta_ref, Gp)
    np.testing.assert_allclose(d_ref * back, d_p * back, rtol=1e-6, atol=tol)


@pytest.mark.parametrize("w", LOSS, ids=repr)
@SETTINGS
@given(losses=st.lists(st.lists(st.sampled_from([0.0, 1e-300, 1e-150, 1e-8, 0.7, 1e150, 1e300]),
                                min_size=3, max_size=3), min_size=1, max_size=6))
def test_loss_strategies_stay_finite_from_1e_minus_300_to_1e300(w, losses):
    """α and the state stay finite and non-negative and agree with the reference."""
    T = 3
    cfg, d = w.core_config(), w.to_dict()
    s_core, s_ref = w.initial_state(T), w.initial_state(T)
    for step, L in enumerate(np.array(losses)):
        if isinstance(w, W.EvalDriven):
            scores = np.exp(-np.minimum(L, 700.0))
            a = _core.weighting_evaluate(cfg, s_core, L, scores)
            a_ref = ref.weighting.evaluate(d, s_ref, L, scores)
        else:
            a = _core.weighting_before(cfg, s_core, 3, step, L)
            a_ref = ref.weighting.before_step(d, s_ref, 3, step, L)
            _core.weighting_after(cfg, s_core, step, L)
            ref.weighting.after_step(d, s_ref, step, L)
        assert np.isfinite(a).all() and (a >= 0).all() and a.sum() > 0
        assert np.isfinite(s_core).all()
        np.testing.assert_allclose(a, a_ref, rtol=1e-7, atol=1e-300)


@SETTINGS
@given(problem=tasks(), k=st.integers(-900, 900))
def test_dwa_depends_only_on_loss_ratios(problem, k):
    """DWA's α is a function of L̄(k−1)/L̄(k−2): losses times 2^k give the same α bit for bit."""
    _, L = problem
    assume(_exact_range(L[None, :] + 0.25, k))
    w = W.DWA()
    cfg, T = w.core_config(), L.shape[0]
    runs = []
    for scale in (1.0, 2.0 ** k):
        s = w.initial_state(T)
        for step, Ls in enumerate([L + 0.25, 2 * L + 0.25, L + 1.0, L + 0.5]):
            a = _core.weighting_before(cfg, s, 0, step, Ls * scale)
            _core.weighting_after(cfg, s, step, Ls * scale)
        runs.append(a)
    np.testing.assert_array_equal(runs[0], runs[1])
