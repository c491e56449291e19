// Gradient-based weighting: from the per-task gradient matrix G (T × P) of one parallel pass,
// restricted to the shared parameters, `combine` gives coefficients β with d_shared = Σ_i β_i g_i
// and `combine_grads` forms that direction. GradNorm learns loss weights from the gradient norms;
// the combining rules (MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, GradVac) solve a small
// problem on the T × T Gram matrix K = G Gᵀ in double (linalg.hpp). python/metacore/weighting.py
// documents each rule; metacore.reference mirrors it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "metacore/linalg.hpp"
#include "metacore/random.hpp"
#include "metacore/threading.hpp"
#include "metacore/weighting_config.hpp"

namespace metacore {

namespace weighting_detail {

constexpr std::uint64_t kOrderStream = 0x4F52445200000000ull;  // PCGrad / GradVac task orders

// A random order of the tasks other than i: CounterRng(seed, step, kOrderStream + i).
inline std::vector<std::int64_t> others_order(std::uint64_t seed, std::int64_t step,
                                              std::int64_t i, std::int64_t T) {
    CounterRng rng(seed, static_cast<std::uint64_t>(step), kOrderStream + static_cast<std::uint64_t>(i));
    std::vector<std::int64_t> p = rng.choose(T - 1, T - 1);
    for (auto& j : p) j += j >= i ? 1 : 0;
    return p;
}

// GradNorm: β = the current loss weights w; then w takes an Adam step on Σ_i |w_i‖g_i‖ − target_i|,
// target_i = mean_j w_j‖g_j‖ · (r_i / mean r)^α, r_i = L_i / L_i(0), and is renormalised to Σ w = n.
// Only the ratios n_i = ‖g_i‖ / max_j ‖g_j‖ enter (the sign of each term is scale-free, and the
// step's gradient sign·n_i is taken relative to the largest norm so Adam's ε neither stalls it
// for tiny gradients nor its second moment overflows for huge ones); each norm is summed with
// its row scaled by a power of two (exact) when its square leaves [2^-960, 2^960].
template <class T>
std::vector<double> gradnorm(const WeightingConfig& c, const T* G, std::int64_t n, std::int64_t P,
                             std::int64_t Ps, const std::vector<double>& L, double* state,
                             std::int64_t step, int threads) {
    double* w = state;
    double* L0 = state + n;
    std::vector<double> beta(w, w + n), gn(n), g(n);
    std::vector<int> e(n, 0);
    if (step == 0)
        for (std::int64_t i = 0; i < n; ++i) L0[i] = L[i];
    parallel_for(n, team_for(n * Ps, threads, n), [&](std::int64_t i, int) {
        const T* gi = G + i * P;
        double s = 0.0;
        for (std::int64_t k = 0; k < Ps; ++k) s += static_cast<double>(gi[k]) * gi[k];
        if (!(s >= 0x1p-960 && s <= 0x1p960)) {  // out of range or zero: scale the row
            double mx = 0.0;
            for (std::int64_t k = 0; k < Ps; ++k) mx = std::max(mx, std::abs(static_cast<double>(gi[k])));
            if (mx > 0.0 && std::isfinite(mx)) {
                std::frexp(mx, &e[i]);
                const double r = std::ldexp(1.0, -e[i]);
                s = 0.0;
                for (std::int64_t k = 0; k < Ps; ++k) {
                    const double x = static_cast<double>(gi[k]) * r;
                    s += x * x;
                }
            }
        }
        gn[i] = std::sqrt(s);
    });
    int E = std::numeric_limits<int>::min();
    for (std::int64_t i = 0; i < n; ++i)
        if (gn[i] > 0.0) E = std::max(E, e[i]);
    double top = 0.0;
    for (std::int64_t i = 0; i < n; ++i)
        top = std::max(top, gn[i] = gn[i] > 0.0 ? std::ldexp(gn[i], e[i] - E) : gn[i]);
    for (std::int64_t i = 0; i < n; ++i) gn[i] = top > 0.0 ? gn[i] / top : gn[i];
    double mean_gw = 0.0, mean_r = 0.0;
    std::vector<double> r(n);
    for (std::int64_t i = 0; i < n; ++i) {
        mean_gw += w[i] * gn[i] / n;
        r[i] = L0[i] > 0.0 ? L[i] / L0[i] : 1.0;  // 1: no progress to measure; +∞: see `ratios`
        mean_r += r[i] / n;
    }
    const bool ratios = mean_r > 0.0 && std::isfinite(mean_r);  // else every task is on target
    for (std::int64_t i = 0; i < n; ++i) {
        const double target = mean_gw * std::pow(ratios ? r[i] / mean_r : 1.0, c.asymmetry);
        const double diff = w[i] * gn[i] - target;
        g[i] = diff > 0.0 ? gn[i] : diff < 0.0 ? -gn[i] : 0.0;
    }
    strategy_adam(w, g.data(), state + 2 * n, state + 3 * n, n, c.lr, step + 1);
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) s += (w[i] = std::max(w[i], 0.0));
    for (std::int64_t i = 0; i < n; ++i) w[i] = s > 0.0 ? w[i] * n / s : 1.0;
    return beta;
}

// ---- the combining rules on K (T × T, double) --------------------------------------------------
// MGDA on K' and e (K_ij = 2^(e_i + e_j) K'_ij, linalg::gram): the points p_i = g_i / c_i are
// written m_i 2^(f_i) g'_i (g'_i = 2^(−e_i) g_i; c_i = 1, ‖g_i‖, L_i or L_i‖g_i‖, with L_i's
// mantissa and exponent taken apart), so their Gram matrix on a common scale, m_i m_j K'_ij
// 2^(f_i + f_j − 2F), and β_i = γ_i / c_i = γ_i m_i 2^(f_i − e_i) neither overflow nor underflow
// whatever the scales of the gradients and losses (s_i s_j K_ij did for norms ≲ 1e-160 or ≳ 1e160).
inline std::vector<double> mgda(const std::vector<double>& Kp, const std::vector<int>& e,
                                const double* L, std::int64_t T, MgdaNorm norm,
                                std::int64_t max_iter) {
    const bool by_norm = norm == MgdaNorm::l2 || norm == MgdaNorm::loss_l2;
    const bool by_loss = norm == MgdaNorm::loss || norm == MgdaNorm::loss_l2;
    // A task whose normaliser is 0 (a loss or gradient at exactly 0) is left out, not made a
    // zero vector of the hull (which would be its min-norm point and stop every task).
    std::vector<std::int64_t> on;
    std::vector<double> m(T, 1.0);
    std::vector<int> f(T, 0);
    int F = std::numeric_limits<int>::min();
    for (std::int64_t i = 0; i < T; ++i) {
        const double nk = std::sqrt(Kp[i * T + i]);
        if ((by_norm && !(nk > 0.0)) || (by_loss && !(L[i] > 0.0))) continue;
        int h = 0;
        const double l = by_loss ? std::frexp(L[i], &h) : 1.0;
        m[i] = 1.0 / ((by_norm ? nk : 1.0) * l);
        f[i] = (by_norm ? 0 : e[i]) - h;
        on.push_back(i);
        if (Kp[i * T + i] > 0.0) F = std::max(F, f[i]);
    }
    if (F == std::numeric_limits<int>::min()) F = 0;
    const auto n = static_cast<std::int64_t>(on.size());
    std::vector<double> Ks(n * n), beta(T, 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
            const std::int64_t a = on[i], b = on[j];
            const double x = m[a] * m[b] * Kp[a * T + b];
            Ks[i * n + j] = f[a] + f[b] == 2 * F ? x : std::ldexp(x, f[a] + f[b] - 2 * F);
        }
    if (n == 0) return beta;
    std::vector<double> g = linalg::min_norm_simplex(Ks, n, max_iter);
    for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t a = on[i];
        const double b = g[i] * m[a];
        beta[a] = f[a] == e[a] ? b : std::ldexp(b, f[a] - e[a]);
    }
    return beta;
}

// PCGrad / GradVac: each g_i' = Σ_k C_ik g_k is adjusted against the other tasks in a random
// order, tracking v = K c_i and ‖g_i'‖²; β = (1/T) Σ_i c_i.
inline std::vector<double> surgery(const std::vector<double>& K, std::int64_t T, bool vaccine,
                                   double beta, double* target, std::uint64_t seed,
                                   std::int64_t step) {
    std::vector<double> out(T, 0.0), c(T), v(T);
    for (std::int64_t i = 0; i < T; ++i) {
        std::fill(c.begin(), c.end(), 0.0);
        c[i] = 1.0;
        for (std::int64_t k = 0; k < T; ++k) v[k] = K[k * T + i];
        double nn = K[i * T + i];
        for (std::int64_t j : others_order(seed, step, i, T)) {
            const double gj2 = K[j * T + j];
            if (gj2 <= 0.0) continue;
            double w = 0.0;
            if (!vaccine) {
                if (v[j] < 0.0) w = -v[j] / gj2;
            } else {
                const double ni = std::sqrt(std::max(nn, 0.0)), nj = std::sqrt(gj2);
                const double phi = ni > 0.0 ? v[j] / (ni * nj) : 0.0;
                double& ph = target[i * T + j];
                if (phi < ph) {
                    w = ni * (ph * std::sqrt(std::max(0.0, 1.0 - phi * phi)) -
                              phi * std::sqrt(std::max(0.0, 1.0 - ph * ph))) /
                        (nj * std::sqrt(std::max(1e-12, 1.0 - ph * ph)));
                }
                ph = (1.0 - beta) * ph + beta * phi;
            }
            if (w == 0.0) continue;
            c[j] += w;
            nn += 2.0 * w * v[j] + w * w * gj2;
            for (std::int64_t k = 0; k < T; ++k) v[k] += w * K[k * T + j];
        }
        for (std::int64_t k = 0; k < T; ++k) out[k] += c[k] / static_cast<double>(T);
    }
    return out;
}

// CAGrad when its dual's optimum is g_w = 0: every d in the ball with g_i·d ≥ 0 is optimal; the
// one nearest g0 is g0 + Σ μ_i g_i with μ = argmin_{μ ≥ 0} ‖g0 + Σ μ_i g_i‖² (Moreau), solved
// exactly (linalg::nnls_gram: cyclic coordinate descent stalled on nearly opposite tasks, leaving
// min_i g_i·d at −2.6e-3 where the optimum is 0). β = (1/T + μ) / (1 + c²), the official rescaling.
inline std::vector<double> cagrad_flat(const std::vector<double>& K, const std::vector<double>& b,
                                       std::int64_t T, double c, std::int64_t max_iter) {
    const std::vector<double> mu = linalg::nnls_gram(K, b, T, max_iter);
    std::vector<double> beta(T);
    for (std::int64_t i = 0; i < T; ++i) beta[i] = (1.0 / T + mu[i]) / (1.0 + c * c);
    return beta;
}

// β = (1/T + λ w) / (1 + c²): d = Σ β_i g_i is (g0 + λ g_w) / (1 + c²), the official rescaling.
inline std::vector<double> cagrad_beta(const std::vector<double>& w, double lambda, double c) {
    std::vector<double> beta(w.size());
    for (std::size_t i = 0; i < w.size(); ++i)
        beta[i] = (1.0 / static_cast<double>(w.size()) + lambda * w[i]) / (1.0 + c * c);
    return beta;
}

// Whether the flat direction's primal value min_i g_i·d is at least the bisection's, to the
// rounding of (Kβ)_i. For c ≥ 1 the dual can be flat in t (c = 1 and g_w antiparallel to g0 over a
// range of w, e.g. two opposite tasks): the bisection's sign tests are then rounding, it stops at
// any t in the range, and φ/t multiplies whatever ‖g_w(t)‖ deviates from antiparallel (1e-9 became
// 1e-4 in d). The flat direction divides by nothing, so it wins the tie.
inline bool cagrad_flat_ties(const std::vector<double>& K, std::int64_t T,
                             const std::vector<double>& flat, const std::vector<double>& beta) {
    double kmax = 0.0, mass = 0.0, v_flat = 0.0, v_beta = 0.0;
    for (std::int64_t i = 0; i < T; ++i) {
        kmax = std::max(kmax, K[i * T + i]);
        mass += std::abs(flat[i]) + std::abs(beta[i]);
        double f = 0.0, g = 0.0;
        for (std::int64_t j = 0; j < T; ++j) {
            f += K[i * T + j] * flat[j];
            g += K[i * T + j] * beta[j];
        }
        v_flat = i == 0 ? f : std::min(v_flat, f);
        v_beta = i == 0 ? g : std::min(v_beta, g);
    }
    const double tol =
        16.0 * static_cast<double>(T) * std::numeric_limits<double>::epsilon() * kmax * mass;
    return v_flat >= v_beta - tol;
}

// CAGrad: w* = argmin over the simplex of F(w) = wᵀb + φ‖G w‖ (b = K1/T, φ = c‖g0‖), solved
// exactly: F = min over t > 0 of wᵀb + φ(‖Gw‖²/t + t)/2, whose inner problem for fixed t is the
// min-norm point x(t) of the points g_i + (t/φ) g0 (min_norm_simplex), and the optimal t = ‖G w(t)‖
// is found by bisection (‖G w(t)‖ − t changes sign once). At t*, d = (g0 + φ/t* · g_w) / (1 + c²)
// (= φ x(t*)/t*, unscaled; t* the bracket's upper end, where ‖g_w‖ ≤ t*, so d stays in the ball).
// Resolution floor: ‖g_w‖ is known only through K, and Wolfe's stopping rule (gap 8Tε relative to
// max‖p_i‖², p_i = g_i + (t/φ) g0, ≈ max‖g_i‖² for small t) leaves ‖x‖² up to 2·8Tε·max‖g_i‖²
// above its minimum, over the ε-relative rounding of K itself: ‖g_w‖ — and with it t* — cannot be
// told from 0 below t_min = √(16Tε)·max‖g_i‖ (1.2e-7·max‖g_i‖ for T = 3). The bisection stops
// there: a bracket below t_min means t* = 0 (0 in the tasks' hull and c ≥ 1), and cagrad_flat
// gives d; dividing φ by a t* at rounding level instead scaled noise (β ~ 1e7). For c ≥ 1 the flat
// direction is always feasible, and it is also taken whenever its primal value ties the
// bisection's to rounding (cagrad_flat_ties).
inline std::vector<double> cagrad(const std::vector<double>& K, std::int64_t T, double c,
                                  std::int64_t max_iter) {
    std::vector<double> b(T, 0.0), w(T, 1.0 / T), Kt(T * T);
    double g0sq = 0.0, hi = 0.0;
    for (std::int64_t i = 0; i < T; ++i) {
        for (std::int64_t j = 0; j < T; ++j) b[i] += K[i * T + j] / T;
        g0sq += b[i] / T;
        hi = std::max(hi, K[i * T + i]);
    }
    g0sq = std::max(g0sq, 0.0);
    const double phi = c * std::sqrt(g0sq);
    auto norm_w = [&](const std::vector<double>& x) {
        double q = 0.0;
        for (std::int64_t i = 0; i < T; ++i)
            for (std::int64_t j = 0; j < T; ++j) q += x[i] * K[i * T + j] * x[j];
        return std::sqrt(std::max(q, 0.0));
    };
    auto solve_at = [&](double t) {  // w(t), the min-norm point of g_i + (t/φ) g0
        const double s = t / phi;
        for (std::int64_t i = 0; i < T; ++i)
            for (std::int64_t j = 0; j < T; ++j)
                Kt[i * T + j] = K[i * T + j] + s * (b[i] + b[j]) + s * s * g0sq;
        return linalg::min_norm_simplex(Kt, T, max_iter, 1e-15);
    };
    double nw = 0.0;
    if (phi > 0.0) {  // else F = 0 on the simplex (g0 = 0) and d = 0
        double lo = 0.0;
        hi = std::sqrt(hi);  // ‖G w‖ ≤ max ‖g_i‖
        const double t_min =
            std::sqrt(16.0 * static_cast<double>(T) * std::numeric_limits<double>::epsilon()) * hi;
        for (int it = 0; it < 200 && hi - lo > 1e-13 * hi && hi > t_min; ++it) {
            const double t = 0.5 * (lo + hi);
            (norm_w(solve_at(t)) > t ? lo : hi) = t;
        }
        if (hi <= t_min)  // g_w* = 0 to resolution: d = the point nearest g0 with G d ≥ 0,
            return cagrad_flat(K, b, T, c, max_iter);  // g0 + Σ μ_i g_i
        w = solve_at(hi);
        nw = hi;  // ‖G w(t*)‖ = t*, not the Gram's rounded ‖g_w‖
        std::vector<double> beta = cagrad_beta(w, phi / nw, c);
        if (c >= 1.0) {  // the flat d is feasible (‖d − g0‖ ≤ ‖g0‖): it wins a tie
            std::vector<double> flat = cagrad_flat(K, b, T, c, max_iter);
            if (cagrad_flat_ties(K, T, flat, beta)) return flat;
        }
        return beta;
    }
    return cagrad_beta(w, 0.0, c);
}

// IMTL-G: α with Σα = 1 such that d = Σ α_i g_i has equal projections on every unit u_i = g_i/‖g_i‖:
// α_{2..T} = g_1 Uᵀ (D Uᵀ)⁻¹ with D rows g_1 − g_i, U rows u_1 − u_i; α_1 = 1 − Σ α_{2..T}. Tasks
// with a zero gradient have no direction: they get α_i = 0 and the rest share Σα = 1. When the
// system is singular (tasks in the same direction) α is the solution nearest to uniform.
inline std::vector<double> imtlg(const std::vector<double>& K, std::int64_t T) {
    std::vector<std::int64_t> on;  // tasks with a direction
    for (std::int64_t i = 0; i < T; ++i)
        if (K[i * T + i] > 0.0) on.push_back(i);
    const auto Ta = static_cast<std::int64_t>(on.size());
    if (Ta == 0) return std::vector<double>(T, 1.0 / T);
    std::vector<double> alpha(T, 0.0);
    if (Ta == 1) {
        alpha[on[0]] = 1.0;
        return alpha;
    }
    std::vector<double> n(Ta);
    for (std::int64_t i = 0; i < Ta; ++i) n[i] = std::sqrt(K[on[i] * T + on[i]]);
    auto gu = [&](std::int64_t a, std::int64_t b) { return K[on[a] * T + on[b]] / n[b]; };  // g_a · u_b
    const std::int64_t m = Ta - 1;
    std::vector<double> A(m * m), rhs(m);
    // Solve x (D Uᵀ) = g_1 Uᵀ, i.e. (D Uᵀ)ᵀ xᵀ = (g_1 Uᵀ)ᵀ.
    for (std::int64_t j = 1; j < Ta; ++j) {
        rhs[j - 1] = gu(0, 0) - gu(0, j);
        for (std::int64_t i = 1; i < Ta; ++i)  // (D Uᵀ)_{i j} = (g_1 − g_i)·(u_1 − u_j)
            A[(j - 1) * m + (i - 1)] = gu(0, 0) - gu(0, j) - gu(i, 0) + gu(i, j);
    }
    // A's entries are differences of projections of size up to max ‖g_i‖: singular relative to it
    const double scale = *std::max_element(n.begin(), n.end());
    std::vector<double> x = linalg::solve(A, rhs, m, std::vector<double>(m, 1.0 / Ta), scale);
    double s = 0.0;
    for (std::int64_t i = 1; i < Ta; ++i) s += (alpha[on[i]] = x[i - 1]);
    alpha[on[0]] = 1.0 - s;
    return alpha;
}

// The longest of t = 1, 1/2, 1/4, ... above the damped step whose end α + t d is inside α > 0
// with slope d·∇φ(α + t d) <= 0, else the damped step: φ is convex on the line, so it falls all
// the way to t (at least the damped step's decrease), decided on a gradient. The damped step
// alone grows α by only about 1 + 1/√T a step where it must grow (rank-deficient K).
inline double nash_step(const std::vector<double>& K, std::int64_t T, const std::vector<double>& a,
                        const std::vector<double>& d, double damped, std::vector<double>& b) {
    for (double t = 1.0; t > damped; t *= 0.5) {
        bool inside = true;
        for (std::int64_t i = 0; i < T; ++i) inside = inside && (b[i] = a[i] + t * d[i]) > 0.0;
        if (!inside) continue;
        double slope = 0.0;
        for (std::int64_t i = 0; i < T; ++i) {
            double r = 0.0;
            for (std::int64_t j = 0; j < T; ++j) r += K[i * T + j] * b[j];
            slope += (r - 1.0 / b[i]) * d[i];
        }
        if (slope <= 0.0) return t;
    }
    return damped;
}

// Nash-MTL: α > 0 with (Kα)_i = 1/α_i, the minimiser of the self-concordant ½αᵀKα − Σ log α_i
// (strictly convex with a ridge of 1e-8·mean diag), by damped Newton: while the Newton decrement
// λ = √(−g·d) ≥ 1/4 the step nash_step picks (at least 1/(1+λ)), else the full step, stopping
// once λ < 1e-7. Decisions are
// on g and d only: near the optimum a difference of objective values is below their rounding.
inline std::vector<double> nashmtl(std::vector<double> K, std::int64_t T, std::int64_t max_iter) {
    double tr = 0.0;
    for (std::int64_t i = 0; i < T; ++i) tr += K[i * T + i];
    if (!(tr > 0.0)) return std::vector<double>(T, 1.0 / T);
    for (std::int64_t i = 0; i < T; ++i) K[i * T + i] += 1e-8 * tr / T;
    std::vector<double> a(T), g(T), H(T * T), neg(T);
    for (std::int64_t i = 0; i < T; ++i) a[i] = 1.0 / std::sqrt(K[i * T + i]);
    for (std::int64_t it = 0; it < max_iter; ++it) {
        double gnorm = 0.0;
        for (std::int64_t i = 0; i < T; ++i) {
            double r = 0.0;
            for (std::int64_t j = 0; j < T; ++j) r += K[i * T + j] * a[j];
            g[i] = r - 1.0 / a[i];
            neg[i] = -g[i];
            gnorm = std::max(gnorm, std::abs(g[i] * a[i]));
            for (std::int64_t j = 0; j < T; ++j) H[i * T + j] = K[i * T + j];
            H[i * T + i] += 1.0 / (a[i] * a[i]);
        }
        if (gnorm < 1e-12) break;
        const std::vector<double> d = linalg::solve(H, neg, T);
        double lam2 = 0.0;
        for (std::int64_t i = 0; i < T; ++i) lam2 -= g[i] * d[i];
        if (!(lam2 > 0.0)) break;  // no descent left at rounding
        const double lam = std::sqrt(lam2);
        // |d_i|/α_i ≤ λ: the full step (λ < 1/4) and the damped one stay inside α > 0
        const double t = lam < 0.25 ? 1.0 : nash_step(K, T, a, d, 1.0 / (1.0 + lam), neg);
        for (std::int64_t i = 0; i < T; ++i) a[i] += t * d[i];
        if (lam < 1e-7) break;
    }
    return a;
}

// Aligned-MTL: K = V Λ Vᵀ (rank r: eigenvalues above max λ · T · 1e-15... kept), B = √λ_min V Λ^{-½} Vᵀ,
// β = B 1 / T: the aligned task gradients B G are orthogonal with equal norms √λ_min.
inline std::vector<double> aligned_mtl(const std::vector<double>& K, std::int64_t T) {
    std::vector<double> w, V;
    linalg::symmetric_eigen(K, T, w, V);
    const double wmax = *std::max_element(w.begin(), w.end());
    std::vector<double> beta(T, 0.0);
    if (!(wmax > 0.0)) return std::vector<double>(T, 1.0 / T);
    const double tol = wmax * static_cast<double>(T) * std::numeric_limits<double>::epsilon();
    double wmin = wmax;
    for (double x : w)
        if (x > tol) wmin = std::min(wmin, x);
    for (std::int64_t k = 0; k < T; ++k) {
        if (!(w[k] > tol)) continue;
        double vs = 0.0;  // Σ_j V_jk
        for (std::int64_t j = 0; j < T; ++j) vs += V[j * T + k];
        const double f = std::sqrt(wmin / w[k]) * vs / static_cast<double>(T);
        for (std::int64_t i = 0; i < T; ++i) beta[i] += V[i * T + k] * f;
    }
    return beta;
}

}  // namespace weighting_detail

// β from G (n × P; its first Ps columns the shared parameters) and the losses; updates the state.
template <class T>
std::vector<double> combine(const WeightingConfig& c, const T* G, std::int64_t n, std::int64_t P,
                            std::int64_t Ps, const T* losses, double* state, std::uint64_t seed,
                            std::int64_t step, int threads) {
    using namespace weighting_detail;
    std::vector<double> L(n);
    for (std::int64_t i = 0; i < n; ++i) L[i] = static_cast<double>(losses[i]);
    if (c.kind == WeightingKind::gradnorm) return gradnorm(c, G, n, P, Ps, L, state, step, threads);
    // The Gram matrix K / 2^(2E), on a common scale: every rule but MGDA's normalisations (which
    // take K' itself) and Nash-MTL (α ∝ 1/scale) is unchanged by a common scale of the gradients.
    std::vector<int> e;
    const std::vector<double> Kp = linalg::gram(G, n, P, Ps, threads, e);
    if (c.kind == WeightingKind::mgda) return mgda(Kp, e, L.data(), n, c.norm, c.max_iter);
    const int E = linalg::gram_exponent(Kp, e);
    const std::vector<double> K = linalg::common_scale(Kp, e, E);
    switch (c.kind) {
        case WeightingKind::pcgrad: return surgery(K, n, false, 0.0, nullptr, seed, step);
        case WeightingKind::gradvac: return surgery(K, n, true, c.beta, state, seed, step);
        case WeightingKind::cagrad: return cagrad(K, n, c.c, c.max_iter);
        case WeightingKind::imtlg: return imtlg(K, n);
        case WeightingKind::nashmtl: {
            std::vector<double> a = nashmtl(K, n, c.max_iter);
            if (E != 0)
                for (double& x : a) x = std::ldexp(x, -E);
            return a;
        }
        case WeightingKind::aligned_mtl: return aligned_mtl(K, n);
        default: throw std::invalid_argument("not a gradient-based weighting");
    }
}

// grad = Σ_i β_i g_i on the shared columns, Σ_i h_i g_i on the rest (h = β, or 1/n for the
// combining strategies); column chunks in parallel, rows summed in order.
template <class T>
void combine_grads(const T* G, std::int64_t n, std::int64_t P, std::int64_t Ps,
                   const std::vector<double>& beta, bool heads_weighted, T* grad, int threads) {
    constexpr std::int64_t kCols = 2048;
    const std::int64_t chunks = (P + kCols - 1) / kCols;
    parallel_for(chunks, team_for(n * P, threads, chunks), [&](std::int64_t ch, int) {
        const std::int64_t b = ch * kCols, e = std::min(P, b + kCols);
        std::fill(grad + b, grad + e, T(0));
        for (std::int64_t i = 0; i < n; ++i) {
            const T* gi = G + i * P;
            const T wi = static_cast<T>(beta[i]);
            const T hi = static_cast<T>(heads_weighted ? beta[i] : 1.0 / n);
            for (std::int64_t k = b; k < std::min(e, Ps); ++k) grad[k] += wi * gi[k];
            for (std::int64_t k = std::max(b, Ps); k < e; ++k) grad[k] += hi * gi[k];
        }
    });
}

}  // namespace metacore
