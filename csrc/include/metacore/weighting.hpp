// Task weighting strategies: the rules that set α in Σ_i α_i f_i(θ) at every step of the θ-update
// loop (train.hpp). Three families:
//   - loss-based (DWA, Uncertainty, RLW, FAMO): α from the task losses and the strategy's state;
//     `before_step` writes the step's α, `after_step` learns from the step's losses;
//   - evaluation-driven (EvalDriven): α set between chunks from evaluation scores (`evaluate`);
//   - gradient-based (GradNorm, MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, GradVac):
//     from the per-task gradient matrix G (T × P) of one parallel pass, restricted to the shared
//     parameters, `combine` gives coefficients β with d_shared = Σ_i β_i g_i.
// Every solver runs in double on the T × T Gram matrix K = G Gᵀ (O(T²P) to form, O(T³) at most to
// solve); python/metacore/weighting.py documents each update rule and metacore.reference mirrors it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/random.hpp"
#include "metacore/threading.hpp"

namespace metacore {

enum class WeightingKind {
    fixed, eval_driven, dwa, uncertainty, rlw, famo,  // no gradient matrix
    gradnorm, mgda, pcgrad, cagrad, imtlg, nashmtl, aligned_mtl, gradvac
};
enum class MgdaNorm { none, l2, loss, loss_l2 };

struct WeightingConfig {
    WeightingKind kind = WeightingKind::fixed;
    double temperature = 2.0;   // DWA, EvalDriven (softmax rule)
    std::int64_t window = 1;    // DWA: steps per loss window
    bool classification = false;  // Uncertainty: 1/σ² form instead of 1/(2σ²)
    double lr = 0.01;           // Uncertainty, GradNorm, FAMO: Adam lr of the strategy's parameters
    double asymmetry = 1.5;     // GradNorm α
    double c = 0.5;             // CAGrad
    MgdaNorm norm = MgdaNorm::none;
    double beta = 0.01;         // GradVac EMA rate; EvalDriven EMA rate of κ̄
    double gamma = 2.0;         // EvalDriven DTP focusing γ; FAMO: weight decay of its logits
    bool dtp = false;           // EvalDriven: the dynamic-task-prioritisation rule
    std::int64_t max_iter = 250;  // MGDA, CAGrad (Frank–Wolfe), Nash-MTL (Newton)

    bool uses_grads() const { return kind >= WeightingKind::gradnorm; }
    bool needs_gram() const { return uses_grads() && kind != WeightingKind::gradnorm; }
    // Loss-based strategies that need the step's losses before its gradient (a forward pass).
    bool needs_losses_first() const { return kind == WeightingKind::famo; }
    // The combining strategies train task heads on the plain mean; GradNorm's α weighs them too.
    bool weights_heads() const { return !needs_gram(); }

    std::int64_t state_size(std::int64_t T) const {
        switch (kind) {
            case WeightingKind::eval_driven: return T + 1;
            case WeightingKind::dwa: return 3 * T + 2;
            case WeightingKind::uncertainty: return 3 * T;
            case WeightingKind::famo: return 4 * T;
            case WeightingKind::gradnorm: return 4 * T;
            case WeightingKind::gradvac: return T * T;
            default: return 0;
        }
    }
};

namespace weighting_detail {

constexpr std::uint64_t kRlwStream = 0x524C5700000000ull;     // streams apart from batch draws
constexpr std::uint64_t kOrderStream = 0x4F52445200000000ull;  // PCGrad / GradVac task orders
constexpr double kAdamB1 = 0.9, kAdamB2 = 0.999, kAdamEps = 1e-8, kLossEps = 1e-8;

inline void softmax(const double* z, std::int64_t n, double* out) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::int64_t i = 0; i < n; ++i) mx = std::max(mx, z[i]);
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) s += (out[i] = std::exp(z[i] - mx));
    for (std::int64_t i = 0; i < n; ++i) out[i] /= s;
}

// One Adam step (torch's rule, k = 1-based update count) on x with gradient g.
inline void adam(double* x, const double* g, double* m, double* v, std::int64_t n, double lr,
                 std::int64_t k) {
    const double c1 = 1.0 - std::pow(kAdamB1, static_cast<double>(k));
    const double c2 = 1.0 - std::pow(kAdamB2, static_cast<double>(k));
    for (std::int64_t i = 0; i < n; ++i) {
        m[i] = kAdamB1 * m[i] + (1.0 - kAdamB1) * g[i];
        v[i] = kAdamB2 * v[i] + (1.0 - kAdamB2) * g[i] * g[i];
        x[i] -= lr / c1 * m[i] / (std::sqrt(v[i]) / std::sqrt(c2) + kAdamEps);
    }
}

// A random order of the tasks other than i: CounterRng(seed, step, kOrderStream + i).
inline std::vector<std::int64_t> others_order(std::uint64_t seed, std::int64_t step,
                                              std::int64_t i, std::int64_t T) {
    CounterRng rng(seed, static_cast<std::uint64_t>(step), kOrderStream + static_cast<std::uint64_t>(i));
    std::vector<std::int64_t> p = rng.choose(T - 1, T - 1);
    for (auto& j : p) j += j >= i ? 1 : 0;
    return p;
}

// min over the simplex of ‖Σ γ_i s_i g_i‖² = γᵀ K' γ, K'_ij = s_i s_j K_ij, by pairwise Frank–Wolfe
// (mass moves from the worst support vertex to the best vertex, exact line search; linear
// convergence on the simplex) from γ = 1/T; stops when the duality gap falls below 1e-12·max diag.
inline std::vector<double> min_norm_simplex(const std::vector<double>& K, std::int64_t T,
                                            std::int64_t max_iter) {
    std::vector<double> g(T, 1.0 / T), Kg(T, 0.0);
    double scale = 0.0;
    for (std::int64_t i = 0; i < T; ++i) scale = std::max(scale, K[i * T + i]);
    for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = 0; j < T; ++j) Kg[i] += K[i * T + j] * g[j];
    for (std::int64_t it = 0; it < max_iter; ++it) {
        std::int64_t s = 0, v = -1;
        for (std::int64_t i = 0; i < T; ++i) {
            if (Kg[i] < Kg[s]) s = i;
            if (g[i] > 0.0 && (v < 0 || Kg[i] > Kg[v])) v = i;
        }
        double gKg = 0.0;
        for (std::int64_t i = 0; i < T; ++i) gKg += g[i] * Kg[i];
        if (gKg - Kg[s] <= 1e-12 * scale || s == v) break;
        const double denom = K[s * T + s] + K[v * T + v] - 2.0 * K[s * T + v];
        const double eta = denom > 0.0 ? std::min(g[v], (Kg[v] - Kg[s]) / denom) : g[v];
        g[s] += eta;
        g[v] -= eta;
        for (std::int64_t i = 0; i < T; ++i) Kg[i] += eta * (K[i * T + s] - K[i * T + v]);
    }
    return g;
}

// Solves A x = b (n × n, row-major, copied) by Gaussian elimination with partial pivoting.
inline std::vector<double> solve(std::vector<double> A, std::vector<double> b, std::int64_t n) {
    for (std::int64_t k = 0; k < n; ++k) {
        std::int64_t p = k;
        for (std::int64_t i = k + 1; i < n; ++i)
            if (std::abs(A[i * n + k]) > std::abs(A[p * n + k])) p = i;
        if (A[p * n + k] == 0.0) throw std::runtime_error("singular system in a weighting solver");
        if (p != k) {
            for (std::int64_t j = 0; j < n; ++j) std::swap(A[k * n + j], A[p * n + j]);
            std::swap(b[k], b[p]);
        }
        for (std::int64_t i = k + 1; i < n; ++i) {
            const double f = A[i * n + k] / A[k * n + k];
            if (f == 0.0) continue;
            for (std::int64_t j = k; j < n; ++j) A[i * n + j] -= f * A[k * n + j];
            b[i] -= f * b[k];
        }
    }
    std::vector<double> x(n);
    for (std::int64_t i = n - 1; i >= 0; --i) {
        double s = b[i];
        for (std::int64_t j = i + 1; j < n; ++j) s -= A[i * n + j] * x[j];
        x[i] = s / A[i * n + i];
    }
    return x;
}

// Eigen-decomposition of a symmetric n × n matrix by cyclic Jacobi rotations: A = V diag(w) Vᵀ,
// V's columns the eigenvectors (V row-major: V[i*n+k] = component i of eigenvector k).
inline void symmetric_eigen(std::vector<double> A, std::int64_t n, std::vector<double>& w,
                            std::vector<double>& V) {
    V.assign(n * n, 0.0);
    for (std::int64_t i = 0; i < n; ++i) V[i * n + i] = 1.0;
    for (int sweep = 0; sweep < 100; ++sweep) {
        double off = 0.0, diag = 0.0;
        for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t j = 0; j < n; ++j)
                (i == j ? diag : off) += A[i * n + j] * A[i * n + j];
        if (off <= 1e-30 * diag || off == 0.0) break;
        for (std::int64_t p = 0; p < n; ++p)
            for (std::int64_t q = p + 1; q < n; ++q) {
                const double apq = A[p * n + q];
                if (apq == 0.0) continue;
                const double theta = (A[q * n + q] - A[p * n + p]) / (2.0 * apq);
                const double t = (theta >= 0 ? 1.0 : -1.0) /
                                 (std::abs(theta) + std::sqrt(theta * theta + 1.0));
                const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
                for (std::int64_t k = 0; k < n; ++k) {  // columns p, q
                    const double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = c * akp - s * akq;
                    A[k * n + q] = s * akp + c * akq;
                }
                for (std::int64_t k = 0; k < n; ++k) {  // rows p, q
                    const double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = c * apk - s * aqk;
                    A[q * n + k] = s * apk + c * aqk;
                }
                for (std::int64_t k = 0; k < n; ++k) {
                    const double vkp = V[k * n + p], vkq = V[k * n + q];
                    V[k * n + p] = c * vkp - s * vkq;
                    V[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    w.resize(n);
    for (std::int64_t i = 0; i < n; ++i) w[i] = A[i * n + i];
}

// ---- the combining rules on K (T × T, double) --------------------------------------------------
inline std::vector<double> mgda(const std::vector<double>& K, const double* L, std::int64_t T,
                                MgdaNorm norm, std::int64_t max_iter) {
    std::vector<double> s(T, 1.0);
    for (std::int64_t i = 0; i < T; ++i) {
        const double gn = std::sqrt(K[i * T + i]);
        const double d = norm == MgdaNorm::l2 ? gn
                         : norm == MgdaNorm::loss ? L[i]
                         : norm == MgdaNorm::loss_l2 ? L[i] * gn : 1.0;
        s[i] = d > 0.0 ? 1.0 / d : 0.0;
    }
    std::vector<double> Ks(T * T);
    for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = 0; j < T; ++j) Ks[i * T + j] = s[i] * s[j] * K[i * T + j];
    std::vector<double> g = min_norm_simplex(Ks, T, max_iter);
    for (std::int64_t i = 0; i < T; ++i) g[i] *= s[i];
    return g;
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

// CAGrad: w* = argmin over the simplex of F(w) = wᵀK1/T + c‖g0‖·‖G w‖ (Frank–Wolfe, step 2/(k+2)),
// d = (g0 + c‖g0‖/‖g_w‖ · g_w) / (1 + c²).
inline std::vector<double> cagrad(const std::vector<double>& K, std::int64_t T, double c,
                                  std::int64_t max_iter) {
    std::vector<double> b(T, 0.0), w(T, 1.0 / T), Kw(T, 0.0);
    double g0sq = 0.0;
    for (std::int64_t i = 0; i < T; ++i) {
        for (std::int64_t j = 0; j < T; ++j) b[i] += K[i * T + j] / T;
        g0sq += b[i] / T;
    }
    const double phi = c * std::sqrt(std::max(g0sq, 0.0));
    for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = 0; j < T; ++j) Kw[i] += K[i * T + j] * w[j];
    for (std::int64_t it = 0; it < max_iter; ++it) {
        double wKw = 0.0;
        for (std::int64_t i = 0; i < T; ++i) wKw += w[i] * Kw[i];
        const double nw = std::sqrt(std::max(wKw, 1e-300));
        std::int64_t t = 0;
        double best = std::numeric_limits<double>::infinity();
        for (std::int64_t i = 0; i < T; ++i) {
            const double gi = b[i] + phi * Kw[i] / nw;
            if (gi < best) best = gi, t = i;
        }
        const double eta = 2.0 / (static_cast<double>(it) + 2.0);
        for (std::int64_t i = 0; i < T; ++i) {
            w[i] *= 1.0 - eta;
            Kw[i] = (1.0 - eta) * Kw[i] + eta * K[i * T + t];
        }
        w[t] += eta;
    }
    double wKw = 0.0;
    for (std::int64_t i = 0; i < T; ++i) wKw += w[i] * Kw[i];
    const double lambda = wKw > 0.0 ? phi / std::sqrt(wKw) : 0.0;
    std::vector<double> beta(T);
    for (std::int64_t i = 0; i < T; ++i) beta[i] = (1.0 / T + lambda * w[i]) / (1.0 + c * c);
    return beta;
}

// IMTL-G: α with Σα = 1 such that d = Σ α_i g_i has equal projections on every unit u_i = g_i/‖g_i‖:
// α_{2..T} = g_1 Uᵀ (D Uᵀ)⁻¹ with D rows g_1 − g_i, U rows u_1 − u_i; α_1 = 1 − Σ α_{2..T}.
inline std::vector<double> imtlg(const std::vector<double>& K, std::int64_t T) {
    std::vector<double> alpha(T, 1.0 / T);
    if (T == 1) return alpha;
    std::vector<double> n(T);
    for (std::int64_t i = 0; i < T; ++i) n[i] = std::sqrt(std::max(K[i * T + i], 1e-300));
    auto gu = [&](std::int64_t a, std::int64_t b) { return K[a * T + b] / n[b]; };  // g_a · u_b
    const std::int64_t m = T - 1;
    std::vector<double> A(m * m), rhs(m);
    // Solve x (D Uᵀ) = g_1 Uᵀ, i.e. (D Uᵀ)ᵀ xᵀ = (g_1 Uᵀ)ᵀ.
    for (std::int64_t j = 1; j < T; ++j) {
        rhs[j - 1] = gu(0, 0) - gu(0, j);
        for (std::int64_t i = 1; i < T; ++i)  // (D Uᵀ)_{i j} = (g_1 − g_i)·(u_1 − u_j)
            A[(j - 1) * m + (i - 1)] = gu(0, 0) - gu(0, j) - gu(i, 0) + gu(i, j);
    }
    std::vector<double> x = solve(A, rhs, m);
    double s = 0.0;
    for (std::int64_t i = 1; i < T; ++i) s += (alpha[i] = x[i - 1]);
    alpha[0] = 1.0 - s;
    return alpha;
}

// Nash-MTL: α > 0 with (Kα)_i = 1/α_i, the minimiser of ½αᵀKα − Σ log α_i (strictly convex with
// a ridge of 1e-8·mean diag), by Newton's method with a backtracking line search.
inline std::vector<double> nashmtl(std::vector<double> K, std::int64_t T, std::int64_t max_iter) {
    double tr = 0.0;
    for (std::int64_t i = 0; i < T; ++i) tr += K[i * T + i];
    if (!(tr > 0.0)) return std::vector<double>(T, 1.0 / T);
    for (std::int64_t i = 0; i < T; ++i) K[i * T + i] += 1e-8 * tr / T;
    auto phi = [&](const std::vector<double>& a) {
        double q = 0.0, lg = 0.0;
        for (std::int64_t i = 0; i < T; ++i) {
            double r = 0.0;
            for (std::int64_t j = 0; j < T; ++j) r += K[i * T + j] * a[j];
            q += a[i] * r;
            lg += std::log(a[i]);
        }
        return 0.5 * q - lg;
    };
    std::vector<double> a(T), g(T), H(T * T), trial(T);
    for (std::int64_t i = 0; i < T; ++i) a[i] = 1.0 / std::sqrt(K[i * T + i]);
    double f = phi(a);
    for (std::int64_t it = 0; it < max_iter; ++it) {
        double gnorm = 0.0;
        for (std::int64_t i = 0; i < T; ++i) {
            double r = 0.0;
            for (std::int64_t j = 0; j < T; ++j) r += K[i * T + j] * a[j];
            g[i] = r - 1.0 / a[i];
            gnorm = std::max(gnorm, std::abs(g[i] * a[i]));
            for (std::int64_t j = 0; j < T; ++j) H[i * T + j] = K[i * T + j];
            H[i * T + i] += 1.0 / (a[i] * a[i]);
        }
        if (gnorm < 1e-12) break;
        std::vector<double> neg(T);
        for (std::int64_t i = 0; i < T; ++i) neg[i] = -g[i];
        std::vector<double> d = solve(H, neg, T);
        double slope = 0.0, t = 1.0;
        for (std::int64_t i = 0; i < T; ++i) slope += g[i] * d[i];
        for (std::int64_t i = 0; i < T; ++i)  // stay inside α > 0
            if (d[i] < 0.0) t = std::min(t, -0.99 * a[i] / d[i]);
        bool moved = false;
        for (int ls = 0; ls < 60; ++ls, t *= 0.5) {
            for (std::int64_t i = 0; i < T; ++i) trial[i] = a[i] + t * d[i];
            const double ft = phi(trial);
            if (ft <= f + 1e-4 * t * slope) {
                a.swap(trial), f = ft, moved = true;
                break;
            }
        }
        if (!moved) break;
    }
    return a;
}

// Aligned-MTL: K = V Λ Vᵀ (rank r: eigenvalues above max λ · T · 1e-15... kept), B = √λ_min V Λ^{-½} Vᵀ,
// β = B 1 / T: the aligned task gradients B G are orthogonal with equal norms √λ_min.
inline std::vector<double> aligned_mtl(const std::vector<double>& K, std::int64_t T) {
    std::vector<double> w, V;
    symmetric_eigen(K, T, w, V);
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

// ---- loss-based strategies -----------------------------------------------------------------------
// Writes α for step `step` (losses: the step's f_i at θ_t, used only when needs_losses_first()).
template <class T>
void before_step(const WeightingConfig& c, double* state, std::int64_t n, std::uint64_t seed,
                 std::int64_t step, const T* losses, T* alpha) {
    using namespace weighting_detail;
    std::vector<double> a(n, 1.0 / n);
    switch (c.kind) {
        case WeightingKind::dwa: {
            const double* prev1 = state + n + 1;
            const double* prev2 = state + 2 * n + 1;
            if (state[3 * n + 1] >= 2.0) {
                std::vector<double> r(n);
                for (std::int64_t i = 0; i < n; ++i) r[i] = prev1[i] / prev2[i] / c.temperature;
                softmax(r.data(), n, a.data());
            }
            break;
        }
        case WeightingKind::uncertainty: {
            const double k = c.classification ? 1.0 : 0.5;
            for (std::int64_t i = 0; i < n; ++i) a[i] = k * std::exp(-state[i]);
            break;
        }
        case WeightingKind::rlw: {
            CounterRng rng(seed, static_cast<std::uint64_t>(step), kRlwStream);
            std::vector<double> z(n);
            for (std::int64_t i = 0; i < n; ++i) {
                const double u1 = rng.uniform(2 * static_cast<std::uint64_t>(i));
                const double u2 = rng.uniform(2 * static_cast<std::uint64_t>(i) + 1);
                z[i] = std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(6.283185307179586 * u2);
            }
            softmax(z.data(), n, a.data());
            break;
        }
        case WeightingKind::famo: {
            double* xi = state;
            double* m = state + n;
            double* v = state + 2 * n;
            double* prev = state + 3 * n;
            std::vector<double> z(n);
            softmax(xi, n, z.data());
            if (step > 0) {  // learn ξ from the last step's change of log-loss
                std::vector<double> d(n), g(n);
                double zd = 0.0;
                for (std::int64_t i = 0; i < n; ++i) {
                    d[i] = std::log(prev[i] + kLossEps) - std::log(static_cast<double>(losses[i]) + kLossEps);
                    zd += z[i] * d[i];
                }
                for (std::int64_t i = 0; i < n; ++i) g[i] = z[i] * (d[i] - zd) + c.gamma * xi[i];
                adam(xi, g.data(), m, v, n, c.lr, step);
                softmax(xi, n, z.data());
            }
            double s = 0.0;
            for (std::int64_t i = 0; i < n; ++i) s += z[i] / (static_cast<double>(losses[i]) + kLossEps);
            for (std::int64_t i = 0; i < n; ++i) {
                a[i] = z[i] / (static_cast<double>(losses[i]) + kLossEps) / s;
                prev[i] = static_cast<double>(losses[i]);
            }
            break;
        }
        default:
            return;  // fixed, eval_driven: α stays as it is
    }
    for (std::int64_t i = 0; i < n; ++i) alpha[i] = static_cast<T>(a[i]);
}

// Learns from the step's losses f_i(θ_t) once its update is applied.
template <class T>
void after_step(const WeightingConfig& c, double* state, std::int64_t n, std::int64_t step,
                const T* losses) {
    using namespace weighting_detail;
    if (c.kind == WeightingKind::dwa) {
        double* sum = state;
        double& count = state[n];
        double* prev1 = state + n + 1;
        double* prev2 = state + 2 * n + 1;
        for (std::int64_t i = 0; i < n; ++i) sum[i] += static_cast<double>(losses[i]);
        if (++count >= static_cast<double>(c.window)) {
            for (std::int64_t i = 0; i < n; ++i) {
                prev2[i] = prev1[i];
                prev1[i] = sum[i] / count;
                sum[i] = 0.0;
            }
            count = 0.0;
            state[3 * n + 1] += 1.0;
        }
    } else if (c.kind == WeightingKind::uncertainty) {
        const double k = c.classification ? 1.0 : 0.5;
        std::vector<double> g(n);
        for (std::int64_t i = 0; i < n; ++i)
            g[i] = 0.5 - k * std::exp(-state[i]) * static_cast<double>(losses[i]);
        adam(state, g.data(), state + n, state + 2 * n, n, c.lr, step + 1);
    }
}

// EvalDriven: α from per-task evaluation losses (and scores κ in [0, 1] for the DTP rule).
inline void evaluate(const WeightingConfig& c, double* state, std::int64_t n, const double* losses,
                     const double* scores, double* alpha) {
    using namespace weighting_detail;
    std::vector<double> z(n);
    if (!c.dtp) {
        for (std::int64_t i = 0; i < n; ++i) z[i] = losses[i] / c.temperature;
        softmax(z.data(), n, alpha);
        return;
    }
    double* kbar = state;
    const bool first = state[n] == 0.0;
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
        const double k = std::clamp(scores[i], 0.0, 1.0);
        kbar[i] = first ? k : (1.0 - c.beta) * kbar[i] + c.beta * k;
        const double kb = std::clamp(kbar[i], 1e-12, 1.0 - 1e-12);
        s += (alpha[i] = -std::pow(1.0 - kb, c.gamma) * std::log(kb));
    }
    state[n] = 1.0;
    for (std::int64_t i = 0; i < n; ++i) alpha[i] = s > 0.0 ? alpha[i] / s : 1.0 / n;
}

// ---- gradient-based strategies -------------------------------------------------------------------
// K = G_s G_sᵀ over the first Ps columns (rows in parallel; each entry summed in column order).
template <class T>
std::vector<double> gram(const T* G, std::int64_t n, std::int64_t P, std::int64_t Ps, int threads) {
    std::vector<double> K(n * n);
    parallel_for(n, n * n * Ps > (1 << 16) ? threads : 1, [&](std::int64_t i, int) {
        const T* gi = G + i * P;
        for (std::int64_t j = 0; j <= i; ++j) {
            const T* gj = G + j * P;
            double s = 0.0;
            for (std::int64_t k = 0; k < Ps; ++k) s += static_cast<double>(gi[k]) * gj[k];
            K[i * n + j] = s;
        }
    });
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = i + 1; j < n; ++j) K[i * n + j] = K[j * n + i];
    return K;
}

// β from G (n × P; its first Ps columns the shared parameters) and the losses; updates the state.
template <class T>
std::vector<double> combine(const WeightingConfig& c, const T* G, std::int64_t n, std::int64_t P,
                            std::int64_t Ps, const T* losses, double* state, std::uint64_t seed,
                            std::int64_t step, int threads) {
    using namespace weighting_detail;
    std::vector<double> L(n);
    for (std::int64_t i = 0; i < n; ++i) L[i] = static_cast<double>(losses[i]);
    if (c.kind == WeightingKind::gradnorm) {
        double* w = state;
        double* L0 = state + n;
        std::vector<double> beta(w, w + n), gn(n), g(n);
        if (step == 0)
            for (std::int64_t i = 0; i < n; ++i) L0[i] = L[i];
        parallel_for(n, n * Ps > (1 << 16) ? threads : 1, [&](std::int64_t i, int) {
            double s = 0.0;
            for (std::int64_t k = 0; k < Ps; ++k) s += static_cast<double>(G[i * P + k]) * G[i * P + k];
            gn[i] = std::sqrt(s);
        });
        double mean_gw = 0.0, mean_r = 0.0;
        std::vector<double> r(n);
        for (std::int64_t i = 0; i < n; ++i) {
            mean_gw += w[i] * gn[i] / n;
            r[i] = L[i] / std::max(L0[i], 1e-300);
            mean_r += r[i] / n;
        }
        for (std::int64_t i = 0; i < n; ++i) {
            const double target = mean_gw * std::pow(r[i] / mean_r, c.asymmetry);
            const double diff = w[i] * gn[i] - target;
            g[i] = diff > 0.0 ? gn[i] : diff < 0.0 ? -gn[i] : 0.0;
        }
        adam(w, g.data(), state + 2 * n, state + 3 * n, n, c.lr, step + 1);
        double s = 0.0;
        for (std::int64_t i = 0; i < n; ++i) s += (w[i] = std::max(w[i], 0.0));
        for (std::int64_t i = 0; i < n; ++i) w[i] = s > 0.0 ? w[i] * n / s : 1.0;
        return beta;
    }
    const std::vector<double> K = gram(G, n, P, Ps, threads);
    switch (c.kind) {
        case WeightingKind::mgda: return mgda(K, L.data(), n, c.norm, c.max_iter);
        case WeightingKind::pcgrad: return surgery(K, n, false, 0.0, nullptr, seed, step);
        case WeightingKind::gradvac: return surgery(K, n, true, c.beta, state, seed, step);
        case WeightingKind::cagrad: return cagrad(K, n, c.c, c.max_iter);
        case WeightingKind::imtlg: return imtlg(K, n);
        case WeightingKind::nashmtl: return nashmtl(K, n, c.max_iter);
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
    parallel_for(chunks, n * P > (1 << 16) ? threads : 1, [&](std::int64_t ch, int) {
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
