"""The task-weighting strategies of :mod:`metacore.weighting` in plain NumPy, float64: the test
oracle for the core's ``weighting.hpp``.

Each function takes a strategy's settings as a dict (``Weighting.to_dict()``), its state (a float64
array, updated in place like the core's) and returns α (loss-based) or β (gradient-based). The
random draws (RLW, the task orders of PCGrad and GradVac) use the same counter-based generator as
the core, written here with Python integers. Linear algebra uses NumPy's solvers where the core
has its own; converged answers agree.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CounterRng", "before_step", "after_step", "evaluate", "combine", "combined_grad",
           "min_norm_simplex"]

_M = (1 << 64) - 1
RLW_STREAM = 0x524C5700000000
ORDER_STREAM = 0x4F52445200000000
ADAM = (0.9, 0.999, 1e-8)
LOSS_EPS = 1e-8
MAX_LOG_VAR = 30.0      # Uncertainty: |s_i| bound, so α stays finite at f_i = 0
MAX_GRAD = 1e100        # Uncertainty: ∂/∂s_i ≥ −1e100, so Adam's g² stays finite


def _mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


class CounterRng:
    """metacore's counter-based generator (random.hpp): draws are pure functions of
    (seed, step, stream, index)."""

    def __init__(self, seed, step, stream=0):
        self.key = _mix64(_mix64(_mix64(seed) ^ step) ^ ((stream * 0xD1B54A32D192ED03) & _M))

    def bits(self, index):
        return _mix64(self.key ^ _mix64(index))

    def uniform(self, index):
        return (self.bits(index) >> 11) * 2.0 ** -53

    def below(self, index, n):
        return (self.bits(index) * n) >> 64

    def choose(self, n, k):
        pool = list(range(n))
        for i in range(k):
            j = i + self.below(i, n - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


def _softmax(z):
    top = z == np.inf
    if top.any():                       # entries at +∞ share all the weight
        return top / top.sum()
    e = np.exp(z - np.max(z))
    return e / e.sum()


def _dwa_ratio(prev1, prev2):
    """L̄(k−1)/L̄(k−2); a loss at exactly 0 in window k−2: 1 if it stays 0, +∞ if it rose."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = prev1 / prev2
    return np.where(prev2 > 0, r, np.where(prev1 > 0, np.inf, 1.0))


def _adam(x, g, m, v, lr, k):
    b1, b2, eps = ADAM
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    x -= lr / (1 - b1 ** k) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** k) + eps)


# --- loss-based ----------------------------------------------------------------------------------
def before_step(settings, state, seed, step, losses):
    """α for step ``step`` (losses: f_i(θ_t), used by FAMO); updates ``state`` (FAMO's logits)."""
    name, L = settings["name"], np.asarray(losses, np.float64)
    T = L.shape[0]
    if name == "DWA":
        if state[3 * T + 1] >= 2:
            r = _dwa_ratio(state[T + 1:2 * T + 1], state[2 * T + 1:3 * T + 1])
            return _softmax(r / settings["temperature"])
        return np.full(T, 1.0 / T)
    if name == "Uncertainty":
        return (1.0 if settings["classification"] else 0.5) * np.exp(-state[:T])
    if name == "RLW":
        rng = CounterRng(seed, step, RLW_STREAM)
        z = np.array([math.sqrt(-2 * math.log1p(-rng.uniform(2 * i)))
                      * math.cos(2 * math.pi * rng.uniform(2 * i + 1)) for i in range(T)])
        return _softmax(z)
    if name == "FAMO":
        xi, m, v, prev = (state[k * T:(k + 1) * T] for k in range(4))
        z = _softmax(xi)
        if step > 0:
            d = np.log(prev + LOSS_EPS) - np.log(L + LOSS_EPS)
            _adam(xi, z * (d - z @ d) + settings["gamma"] * xi, m, v, settings["lr"], step)
            z = _softmax(xi)
        a = z / (L + LOSS_EPS)
        prev[:] = L
        return a / a.sum()
    raise ValueError(f"{name} is not a loss-based strategy")


def after_step(settings, state, step, losses):
    """What the strategy learns from step ``step``'s losses once its update is applied."""
    name, L = settings["name"], np.asarray(losses, np.float64)
    T = L.shape[0]
    if name == "DWA":
        state[:T] += L
        state[T] += 1
        if state[T] >= settings["window"]:
            state[2 * T + 1:3 * T + 1] = state[T + 1:2 * T + 1]
            state[T + 1:2 * T + 1] = state[:T] / state[T]
            state[:T] = 0
            state[T] = 0
            state[3 * T + 1] += 1
    elif name == "Uncertainty":
        k = 1.0 if settings["classification"] else 0.5
        s = state[:T]
        with np.errstate(over="ignore"):    # bounded so that Adam's g² stays finite
            g = np.maximum(0.5 - k * np.exp(-s) * L, -MAX_GRAD)
        _adam(s, g, state[T:2 * T], state[2 * T:], settings["lr"], step + 1)
        np.clip(s, -MAX_LOG_VAR, MAX_LOG_VAR, out=s)


def evaluate(settings, state, losses, scores):
    """EvalDriven's α from evaluation losses and scores κ ∈ [0, 1]."""
    L = np.asarray(losses, np.float64)
    T = L.shape[0]
    if settings["rule"] == "softmax":
        return _softmax(L / settings["temperature"])
    k = np.clip(scores, 0, 1)
    state[:T] = k if state[T] == 0 else (1 - settings["beta"]) * state[:T] + settings["beta"] * k
    state[T] = 1
    kb = np.clip(state[:T], 1e-12, 1 - 1e-12)
    w = -(1 - kb) ** settings["gamma"] * np.log(kb)
    return w / w.sum() if w.sum() > 0 else np.full(T, 1.0 / T)


# --- gradient-based ------------------------------------------------------------------------------
def _first_within(u, tol):
    """The first index whose u is within tol of max(u): ties in exact arithmetic go to the lowest
    index whatever the rounding, as the core's ``linalg::first_within``."""
    return int(np.flatnonzero(u >= u.max() - tol)[0])


def min_norm_simplex(K, max_iter=1000, tol=1e-12):
    """argmin over the simplex of γᵀKγ (the min-norm point of the convex hull of the points whose
    Gram matrix is K) by Wolfe's minimum-norm-point algorithm (Wolfe 1976), as the core's
    ``linalg::min_norm_simplex``: K scaled to a largest diagonal of 1; the corral S grows by the
    point j minimising (Kγ)_j (ties within rounding to the lowest index) while γᵀKγ − (Kγ)_j > max(tol, 8Tε); the affine minimiser of S solves
    the normal equations of the differences p_a − p_o from a base point o ∈ S (a Cholesky factor
    grown by one row per point); minor cycles
    step toward it and drop the point whose weight reaches 0. Ends, keeping the best γ met, when a
    major cycle raises γᵀKγ by more than rounding, a point is affinely dependent on S to rounding
    (a pivot ≤ 0), after ``max_iter`` major cycles or T in a row that do not lower γᵀKγ; then at
    most min(max_iter, 100 + 10T) pairwise Frank–Wolfe steps close a gap left by points K cannot
    tell from S's affine hull. All-zero K:
    uniform; non-finite K: NaN."""
    K = np.asarray(K, np.float64)
    T = K.shape[0]
    eps = np.finfo(np.float64).eps
    if T <= 1:
        return np.ones(T)
    if not np.isfinite(K).all():
        return np.full(T, np.nan)
    scale = np.max(np.diag(K))
    if not scale > 0:
        return np.full(T, 1.0 / T)
    A = K / scale
    gap_tol = max(tol, 8.0 * T * eps)
    noise = 4.0 * T * eps               # the rounding of γᵀAγ

    def M(S, a, b):           # (p_a − p_o)·(p_b − p_o), o = S[0] the base point
        o = S[0]
        return A[a, b] - A[a, o] - A[o, b] + A[o, o]

    def cholesky(S):          # of M over S[1:], or None when not positive to rounding
        n = len(S) - 1
        L = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1):
                s = M(S, S[i + 1], S[j + 1]) - L[i, :j] @ L[j, :j]
                if i == j:
                    if not s > 0:
                        return None
                    L[i, i] = math.sqrt(s)
                else:
                    L[i, j] = s / L[j, j]
        return L

    def affine_minimiser(S, L):   # p_o + Σ c_a (p_a − p_o), M c = −((p_a − p_o)·p_o)_a
        n, o = len(S) - 1, S[0]
        c = A[o, o] - A[S[1:], o]
        for i in range(n):
            c[i] = (c[i] - L[i, :i] @ c[:i]) / L[i, i]
        for i in range(n - 1, -1, -1):
            c[i] = (c[i] - L[i + 1:, i] @ c[i + 1:]) / L[i, i]
        return np.concatenate([[1.0 - c.sum()], c])

    S = [int(np.argmin(np.diag(A)))]
    lam = np.ones(1)
    L = np.zeros((0, 0))
    best = (math.inf, list(S), lam.copy())
    stalls = 0
    for it in range(max_iter + 1):
        v = A[:, S] @ lam
        xx = lam @ v[S]
        if not xx <= best[0] + noise:
            break                         # worse than the best met (rounding): keep that one
        stalls = 0 if xx < best[0] else stalls + 1
        best = (min(xx, best[0]), list(S), lam.copy())
        if it == max_iter or stalls > T:
            break
        j = _first_within(-v, noise)
        if xx - v[j] <= gap_tol or j in S:
            break                         # optimal (or rounding)
        n = len(S) - 1
        row = np.zeros(n + 1)
        for i in range(n):
            row[i] = (M(S, S[i + 1], j) - L[i, :i] @ row[:i]) / L[i, i]
        d = M(S, j, j) - row[:n] @ row[:n]
        if not d > 0:
            break                         # p_j affinely dependent on S to rounding
        row[n] = math.sqrt(d)
        L = np.block([[L, np.zeros((n, 1))], [row[None, :]]])
        S.append(j)
        lam = np.append(lam, 0.0)
        stuck = False
        for _ in range(len(S) + 2):
            mu = affine_minimiser(S, L)
            if not np.isfinite(mu).all():
                stuck = True
                break
            if (mu > 0).all():
                lam = mu
                break
            theta, hit = math.inf, 0      # the largest step toward μ keeping weights ≥ 0
            for k in range(len(S)):
                if mu[k] <= 0:
                    den = lam[k] - mu[k]
                    r = lam[k] / den if den > 0 else 0.0
                    if r < theta:
                        theta, hit = r, k
            if theta <= 0 and S[hit] == j:
                stuck = True              # p_j would leave at once: no progress
                break
            lam = lam + theta * (mu - lam)
            lam[hit] = 0.0
            keep = lam > 0
            S = [s for s, k in zip(S, keep) if k]
            lam = lam[keep] / lam[keep].sum()
            L = cholesky(S)
            if L is None:
                stuck = True
                break
        if stuck:
            break
    gamma = np.zeros(T)
    gamma[best[1]] = best[2]
    v = A @ gamma
    for _ in range(min(max_iter, 100 + 10 * T)):   # pairwise Frank–Wolfe polish
        s = _first_within(-v, noise)
        support = np.flatnonzero(gamma > 0)
        w = int(support[_first_within(v[support], noise)])
        if gamma @ v - v[s] <= gap_tol or s == w:
            break
        den = A[s, s] + A[w, w] - 2.0 * A[s, w]
        eta = min(gamma[w], (v[w] - v[s]) / den) if den > 0 else gamma[w]
        if not eta > 0:
            break
        gamma[s] += eta
        gamma[w] = 0.0 if eta == gamma[w] else gamma[w] - eta
        v += eta * (A[:, s] - A[:, w])
    return gamma


def _surgery(K, vaccine, beta, target, seed, step):
    T = K.shape[0]
    out = np.zeros(T)
    for i in range(T):
        c = np.zeros(T)
        c[i] = 1.0
        order = [j + (j >= i) for j in CounterRng(seed, step, ORDER_STREAM + i).choose(T - 1, T - 1)]
        for j in order:
            if K[j, j] <= 0:
                continue
            dot, nn = c @ K[:, j], c @ K @ c
            w = 0.0
            if not vaccine:
                if dot < 0:
                    w = -dot / K[j, j]
            else:
                ni, nj = math.sqrt(max(nn, 0)), math.sqrt(K[j, j])
                phi = dot / (ni * nj) if ni > 0 else 0.0
                ph = target[i, j]
                if phi < ph:
                    w = ni * (ph * math.sqrt(max(0, 1 - phi ** 2)) - phi * math.sqrt(max(0, 1 - ph ** 2))) \
                        / (nj * math.sqrt(max(1e-12, 1 - ph ** 2)))
                target[i, j] = (1 - beta) * ph + beta * phi
            c[j] += w
        out += c / T
    return out


def _nnls_mu(K, b, max_iter):
    """argmin_{μ ≥ 0} ‖g0 + Σ μ_i g_i‖² (K = G Gᵀ, b = G g0) exactly, by Lawson and Hanson's NNLS
    active-set algorithm (1974, ch. 23) on the Gram matrix, as the core's ``linalg::nnls_gram``:
    the passive set grows by the most negative gradient (Kμ + b)_j (ties within rounding to the
    lowest index), μ_P solves K_PP μ_P = −b_P, steps back to the boundary drop tasks; a column
    dependent on the passive ones (no Cholesky pivot above 1e-13·K_jj) waits until μ moves."""
    T = K.shape[0]
    eps = np.finfo(np.float64).eps
    mu = np.zeros(T)
    kmax = np.max(np.diag(K))
    if not kmax > 0:
        return mu
    passive, blocked = np.zeros(T, bool), np.zeros(T, bool)

    def solve(P):
        A = K[np.ix_(P, P)]
        try:
            L = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            return None
        if not (np.diag(L) ** 2 > 1e-13 * np.diag(A)).all():
            return None
        return np.linalg.solve(A, -b[P])

    for _ in range(max(max_iter, 3 * T)):
        grad = K @ mu + b
        tol = 16.0 * T * eps * kmax * (1.0 + mu.sum())
        open_ = ~passive & ~blocked & (grad < -tol)
        if not open_.any():
            break
        j = _first_within(np.where(open_, -grad, -np.inf), tol)
        passive[j] = True
        moved = False
        for _ in range(T + 1):
            P = np.flatnonzero(passive)
            if P.size == 0:
                break
            zP = solve(P)
            if zP is None:                    # j dependent on the passive columns: out for now
                passive[j], blocked[j] = False, True
                break
            z = np.zeros(T)
            z[P] = zP
            alpha, hit = 1.0, -1
            for i in P:
                if z[i] > 0:
                    continue
                den = mu[i] - z[i]
                a = mu[i] / den if den > 0 else 0.0
                if a < alpha or hit < 0:
                    alpha, hit = min(alpha, a), i
            mu[P] += alpha * (z[P] - mu[P])
            moved = moved or alpha > 0
            if hit < 0:
                break
            mu[hit] = 0.0
            drop = P[mu[P] <= 0]
            mu[drop], passive[drop] = 0.0, False
        if moved:
            blocked[:] = False
        elif not blocked[j]:
            passive[j], blocked[j] = False, True
    return mu


def _cagrad(K, c, max_iter):
    """w* = argmin_Δ wᵀb + φ‖Gw‖ as min over t of the min-norm point of g_i + (t/φ) g0, t by
    bisection on ‖G w(t)‖ = t down to the resolution floor t_min = √(16Tε)·max‖g_i‖ (below it,
    t* = 0: the flat solution); at t* = ‖g_w*‖, d = g0 + φ g_w/t*. For c ≥ 1 the flat solution
    (always feasible there) also wins a tie in min_i g_i·d to rounding. As the core's ``cagrad``."""
    T = K.shape[0]
    b = K.mean(axis=1)
    g0sq = max(b.mean(), 0.0)
    phi = c * math.sqrt(g0sq)
    w = np.full(T, 1.0 / T)
    norm = lambda x: math.sqrt(max(x @ K @ x, 0.0))    # noqa: E731
    lam = 0.0
    if phi > 0:
        def solve_at(t):
            s = t / phi
            return min_norm_simplex(K + s * (b[:, None] + b[None, :]) + s * s * g0sq,
                                    max_iter, 1e-15)
        lo, hi = 0.0, math.sqrt(np.max(np.diag(K)))
        t_min = math.sqrt(16.0 * T * np.finfo(np.float64).eps) * hi
        for _ in range(200):
            if hi - lo <= 1e-13 * hi or hi <= t_min:
                break
            t = 0.5 * (lo + hi)
            if norm(solve_at(t)) > t:
                lo = t
            else:
                hi = t

        def flat_solution():     # computed only where it is used
            return (1.0 / T + _nnls_mu(K, b, max_iter)) / (1 + c * c)
        if hi <= t_min:               # g_w* = 0 to resolution: the d nearest g0 with G d ≥ 0
            return flat_solution()
        w = solve_at(hi)
        lam = phi / hi
        beta = (1.0 / T + lam * w) / (1 + c * c)
        if c >= 1:                    # flat is feasible: a tie in min_i g_i·d to rounding is its
            flat = flat_solution()
            tol = 16.0 * T * np.finfo(np.float64).eps * np.max(np.diag(K)) * (
                np.abs(beta).sum() + np.abs(flat).sum())
            if (K @ flat).min() >= (K @ beta).min() - tol:
                return flat
        return beta
    return (1.0 / T + lam * w) / (1 + c * c)


def _imtlg(K):
    T = K.shape[0]
    on = np.flatnonzero(np.diag(K) > 0)           # tasks with a direction
    alpha = np.zeros(T)
    if on.size == 0:
        return np.full(T, 1.0 / T)
    if on.size == 1:
        alpha[on] = 1.0
        return alpha
    Ka = K[np.ix_(on, on)]
    n = np.sqrt(np.diag(Ka))
    GU = Ka / n[None, :]                      # GU[a, b] = g_a · u_b
    D_U = GU[0, 0] - GU[0, 1:][None, :] - GU[1:, 0][:, None] + GU[1:, 1:]   # (D Uᵀ)[i, j]
    rhs = GU[0, 0] - GU[0, 1:]                # g_1 Uᵀ
    A = D_U.T
    x0 = np.full(on.size - 1, 1.0 / on.size)
    tiny = 1e-12 * max(np.abs(A).max(), n.max())
    try:
        x = np.linalg.solve(A, rhs)
        ok = np.isfinite(x).all() and np.abs(np.linalg.svd(A, compute_uv=False)).min() > tiny
    except np.linalg.LinAlgError:
        ok = False
    if not ok:                                # singular: the solution nearest to uniform
        U, sv, Vt = np.linalg.svd(A)
        keep = sv > max(tiny, sv.max() * A.shape[0] * np.finfo(float).eps)
        x = x0 + Vt[keep].T @ ((U[:, keep].T @ (rhs - A @ x0)) / sv[keep])
    alpha[on[1:]] = x
    alpha[on[0]] = 1 - x.sum()
    return alpha


def _nashmtl(K, max_iter):
    """Damped Newton on ½αᵀKα − Σ log α_i (self-concordant): step 1/(1+λ) while the Newton
    decrement λ = √(−g·d) ≥ 1/4, else the full step; stop once λ < 1e-7 (the next λ would be
    below 1e-14). Every decision is on g and d, never on a difference of objective values, which
    near the optimum is below the values' rounding (Nesterov, Introductory Lectures, §4.1.5)."""
    T = K.shape[0]
    tr = np.trace(K)
    if not tr > 0:
        return np.full(T, 1.0 / T)
    K = K + 1e-8 * tr / T * np.eye(T)
    a = 1 / np.sqrt(np.diag(K))
    for _ in range(max_iter):
        g = K @ a - 1 / a
        if np.max(np.abs(g * a)) < 1e-12:
            break
        d = np.linalg.solve(K + np.diag(1 / a ** 2), -g)
        lam2 = -(g @ d)
        if not lam2 > 0:                  # no descent left at rounding
            break
        lam = math.sqrt(lam2)
        # |d_i|/α_i ≤ λ: the full step (λ < 1/4) and the damped one stay inside α > 0
        t = 1.0 if lam < 0.25 else _nash_step(K, a, d, 1 / (1 + lam))
        a = a + t * d
        if lam < 1e-7:
            break
    return a


def _nash_step(K, a, d, damped):
    """The longest of t = 1, 1/2, 1/4, ... above the damped step whose end α + t d is inside
    α > 0 with slope d·∇φ(α + t d) <= 0, else the damped step. φ is convex on the line, so a
    non-positive slope at t means φ falls all the way to t: at least the damped step's decrease
    (the guarantee kept), decided on a gradient, never on a difference of values. The damped
    step alone multiplies α by only about 1 + 1/√T a step where α must grow (rank-deficient K)."""
    t = 1.0
    while t > damped:
        b = a + t * d
        if (b > 0).all() and (K @ b - 1 / b) @ d <= 0:
            return t
        t *= 0.5
    return damped


def _aligned_mtl(K):
    T = K.shape[0]
    w, V = np.linalg.eigh(K)
    if not w.max() > 0:
        return np.full(T, 1.0 / T)
    keep = w > w.max() * T * np.finfo(float).eps
    w, V = w[keep], V[:, keep]
    B = math.sqrt(w.min()) * V @ np.diag(1 / np.sqrt(w)) @ V.T
    return B.sum(axis=0) / T


# --- gradient scales ------------------------------------------------------------------------------
_LO, _HI = 2.0 ** -960, 2.0 ** 960      # squared norms summed without scaling


def _row_exponents(Gs, sq):
    """e_i with max_k |2^(−e_i) g_ik| in [0.5, 1) for the rows whose squared norm ``sq`` leaves
    [2^-960, 2^960] (overflows, underflows or is 0), else 0, as the core's ``linalg::gram``."""
    e = np.zeros(Gs.shape[0], dtype=np.int64)
    for i in np.flatnonzero(~((sq >= _LO) & (sq <= _HI))):
        mx = np.abs(Gs[i]).max() if Gs.shape[1] else 0.0
        if mx > 0 and np.isfinite(mx):
            e[i] = math.frexp(mx)[1]
    return e


def _gram(Gs):
    """(K', e) with K = G_s G_sᵀ = 2^(e_i + e_j) K'_ij: rows of ordinary scale unscaled, the others
    scaled by a power of two (exact) to a largest |entry| in [0.5, 1) before the products."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        K = Gs @ Gs.T
        e = _row_exponents(Gs, np.diag(K))
        if e.any():
            Gp = np.ldexp(Gs, -e[:, None])
            K = Gp @ Gp.T
    return K, e


def _gram_exponent(Kp, e):
    """The largest e_i over rows with K'_ii > 0 (0 when none)."""
    on = np.diag(Kp) > 0
    return int(e[on].max()) if on.any() else 0


def _relative_norms(Gs):
    """‖g_i‖ / max_j ‖g_j‖, each norm summed on its row scaled as in :func:`_gram`."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", Gs, Gs)
        e = _row_exponents(Gs, sq)
        if e.any():
            Gp = np.ldexp(Gs, -e[:, None])
            sq = np.where(e != 0, np.einsum("ij,ij->i", Gp, Gp), sq)
    n = np.sqrt(sq)
    on = n > 0
    if on.any():
        n = np.where(on, np.ldexp(n, e - int(e[on].max())), n)
        n = n / n.max()
    return n


def _mgda(Kp, e, L, normalization, max_iter):
    """MGDA on K' and e: points p_i = g_i / c_i written m_i 2^(f_i) g'_i, their Gram matrix on a
    common scale, β_i = γ_i m_i 2^(f_i − e_i), as the core's ``mgda``."""
    T = Kp.shape[0]
    by_norm = normalization in ("l2", "loss+l2")
    by_loss = normalization in ("loss", "loss+l2")
    nk = np.sqrt(np.maximum(np.diag(Kp), 0.0))
    on = np.ones(T, bool)
    if by_norm:
        on &= nk > 0
    if by_loss:
        on &= L > 0              # a task with a normaliser of 0 is left out
    l, h = np.frexp(np.where(L > 0, L, 1.0)) if by_loss else (np.ones(T), np.zeros(T, int))
    with np.errstate(divide="ignore"):
        m = 1.0 / ((nk if by_norm else 1.0) * l)
    f = (0 if by_norm else e) - h
    idx = np.flatnonzero(on)
    beta = np.zeros(T)
    if idx.size == 0:
        return beta
    pos = idx[np.diag(Kp)[idx] > 0]
    F = int(f[pos].max()) if pos.size else 0
    mi, fi = m[idx], f[idx]
    Ks = np.ldexp(np.outer(mi, mi) * Kp[np.ix_(idx, idx)], fi[:, None] + fi[None, :] - 2 * F)
    beta[idx] = np.ldexp(min_norm_simplex(Ks, max_iter) * mi, fi - e[idx])
    return beta


def combine(settings, grads, losses, state, seed, step, n_shared=None):
    """β from the per-task gradients (T, P) (first ``n_shared`` columns shared) and losses."""
    name = settings["name"]
    G = np.asarray(grads, np.float64)
    T = G.shape[0]
    Gs = G[:, :n_shared if n_shared is not None else G.shape[1]]
    L = np.asarray(losses, np.float64)
    if name == "GradNorm":
        w, L0, m, v = (state[k * T:(k + 1) * T] for k in range(4))
        beta = w.copy()
        if step == 0:
            L0[:] = L
        gn = _relative_norms(Gs)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            r = np.where(L0 > 0, L / np.where(L0 > 0, L0, 1.0), 1.0)
        ratio = r / r.mean() if 0 < r.mean() < np.inf else np.ones(T)
        target = np.mean(w * gn) * ratio ** settings["alpha"]
        _adam(w, np.sign(w * gn - target) * gn, m, v, settings["lr"], step + 1)
        w[:] = np.maximum(w, 0)
        w[:] = w * T / w.sum() if w.sum() > 0 else 1.0
        return beta
    Kp, e = _gram(Gs)
    if name == "MGDA":
        return _mgda(Kp, e, L, settings["normalization"], settings["max_iter"])
    E = _gram_exponent(Kp, e)
    K = np.ldexp(Kp, e[:, None] + e[None, :] - 2 * E)           # K / 2^(2E)
    if name == "PCGrad":
        return _surgery(K, False, 0.0, None, seed, step)
    if name == "GradVac":
        return _surgery(K, True, settings["beta"], state.reshape(T, T), seed, step)
    if name == "CAGrad":
        return _cagrad(K, settings["c"], settings["max_iter"])
    if name == "IMTLG":
        return _imtlg(K)
    if name == "NashMTL":
        return np.ldexp(_nashmtl(K, settings["max_iter"]), -E)      # α ∝ 1/scale
    if name == "AlignedMTL":
        return _aligned_mtl(K)
    raise ValueError(f"{name} is not a gradient-based strategy")


def combined_grad(beta, grads, n_shared=None, heads_weighted=False):
    """The step's gradient (without λθ): Σ β_i g_i on the shared columns, (1/T) Σ g_i (or
    Σ β_i g_i when ``heads_weighted``, GradNorm) on the head columns."""
    G = np.asarray(grads, np.float64)
    T, P = G.shape
    ns = P if n_shared is None else n_shared
    out = np.asarray(beta) @ G
    if not heads_weighted:
        out[ns:] = G[:, ns:].mean(axis=0)
    return out
