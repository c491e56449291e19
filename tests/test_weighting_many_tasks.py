"""Aligned-MTL with many tasks (T up to 400): its eigen-decomposition of the T × T Gram matrix is
O(T³) and must stay exact there — against a direct computation from the SVD of G (independent of
both the core's Householder/QL solver and the reference's ``numpy.linalg.eigh``) and against the
reference, on generated gradients of any rank, with repeated singular values and any scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from interrupts import interrupt_lag
from metacore import _core
from metacore import reference as ref
from metacore import weighting as W

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def gradients(draw):
    """G = U diag(s) Wᵀ (T × P) of rank r: s from a few distinct values in [1, 10] (repeated
    eigenvalues of K = GGᵀ), the rest of K's spectrum exactly zero (T > r), times 2^e."""
    T = draw(st.integers(2, 400))
    P = draw(st.integers(1, 300))
    r = draw(st.integers(1, min(T, P)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    levels = rng.uniform(1.0, 10.0, size=draw(st.integers(1, 4)))
    s = rng.choice(levels, size=r)
    U = np.linalg.qr(rng.normal(size=(T, r)))[0]
    V = np.linalg.qr(rng.normal(size=(P, r)))[0]
    return (U * s) @ V.T * 2.0 ** draw(st.integers(-30, 30)), r


def aligned_beta_from_svd(G, rank):
    """β = (σ_min / T) U_r diag(1/σ) U_rᵀ 1: Aligned-MTL's B = √λ_min V Λ^{-1/2} Vᵀ with K = GGᵀ
    written through G's singular vectors (Senushkin et al. 2023, eq. 10)."""
    U, s, _ = np.linalg.svd(G, full_matrices=False)
    U, s = U[:, :rank], s[:rank]
    return s.min() / G.shape[0] * U @ (U.sum(axis=0) / s)


@st.composite
def repeated_gradients(draw):
    """T tasks sharing k distinct gradients (duplicated tasks, the commonest low-rank case: a
    Gram matrix of rank k with T − k zero eigenvalues, which stalled a QL solver that split on
    the diagonal neighbours instead of the norm)."""
    T = draw(st.integers(16, 300))
    k = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = rng.normal(size=(k, draw(st.integers(k, 60))))
    which = np.concatenate([np.arange(k), rng.integers(0, k, T - k)])
    return base[rng.permutation(which)] * 2.0 ** draw(st.integers(-30, 30)), k


@SETTINGS
@given(problem=st.one_of(gradients(), repeated_gradients()))
def test_aligned_mtl_weights_match_the_svd_formula_and_the_reference(problem):
    G, rank = problem
    T = G.shape[0]
    w = W.AlignedMTL()
    beta, d = _core.weighting_combine(w.core_config(), np.ascontiguousarray(G), np.ones(T),
                                      np.zeros(0), 0, 0)
    oracle = aligned_beta_from_svd(G, rank)
    tol = 1e-9 * np.abs(oracle).max()
    np.testing.assert_allclose(beta, oracle, rtol=1e-8, atol=tol)
    np.testing.assert_allclose(beta, ref.weighting.combine(w.to_dict(), G, np.ones(T),
                                                           w.initial_state(T), 0, 0),
                               rtol=1e-8, atol=tol)
    np.testing.assert_allclose(d, oracle @ G, rtol=1e-8, atol=1e-9 * np.abs(G).max())


def test_aligned_mtl_of_identical_tasks_is_uniform():
    """128 identical tasks: K is all ones (times ‖g‖²), one eigenvalue T, the rest zero."""
    G = np.ones((128, 10))
    beta, d = _core.weighting_combine(W.AlignedMTL().core_config(), G, np.ones(128),
                                      np.zeros(0), 0, 0)
    np.testing.assert_allclose(beta, np.full(128, 1 / 128), rtol=1e-10)
    np.testing.assert_allclose(d, np.full(10, 1.0), rtol=1e-10)


def test_aligned_mtl_on_512_tasks_is_exact():
    """The size of the weighting benchmark's largest case: 512 tasks of 4,785 parameters."""
    rng = np.random.default_rng(0)
    G = rng.normal(size=(512, 4785))
    beta, _ = _core.weighting_combine(W.AlignedMTL().core_config(), G, np.ones(512),
                                      np.zeros(0), 0, 0)
    np.testing.assert_allclose(beta, aligned_beta_from_svd(G, 512), rtol=1e-8,
                               atol=1e-12 * np.abs(beta).max())


ALIGNED_SETUP = """
import numpy as np
import pytest
import metacore as mc
rng = np.random.default_rng(0)
T = 2500        # Aligned-MTL's 2,500 x 2,500 eigen-decomposition: about 20 s of one step
ts = mc.TaskSet.from_arrays([rng.normal(size=(3, 1)) for _ in range(T)],
                            [rng.normal(size=3) for _ in range(T)])
model = mc.Linear(1)
obj = mc.Objective(model, ts)
"""


def test_ctrl_c_interrupts_a_large_eigen_decomposition():
    lag = interrupt_lag(ALIGNED_SETUP, "mc.fit(obj, model.init(seed=0), steps=1, "
                        "weighting=mc.weighting.AlignedMTL(), progress=False, n_threads=1)",
                        delay=1.0)
    assert lag < 1.0      # seconds after SIGINT, on a busy machine


@pytest.mark.parametrize("w", [W.MGDA(), W.PCGrad(), W.CAGrad(), W.IMTLG(), W.NashMTL(),
                               W.AlignedMTL(), W.GradVac(beta=0.3)], ids=repr)
@pytest.mark.parametrize("k, T", [(1, 64), (2, 128), (3, 256)])
def test_gradient_strategies_match_the_reference_on_many_duplicated_tasks(w, k, T):
    """k distinct gradients shared by T tasks: singular systems (IMTL-G, Nash-MTL, CAGrad fall
    back to least squares through the eigen solver) and a Gram matrix of rank k. The combined
    direction is unique even where β is not."""
    rng = np.random.default_rng(k * 1000 + T)
    G = rng.normal(size=(k, 50))[rng.permutation(np.arange(T) % k)]
    L = np.ones(T)
    _, d = _core.weighting_combine(w.core_config(), G, L, w.initial_state(T), 7, 0)
    d_ref = ref.weighting.combine(w.to_dict(), G, L, w.initial_state(T), 7, 0) @ G
    np.testing.assert_allclose(d, d_ref, rtol=1e-8, atol=1e-10 * np.abs(d_ref).max())
