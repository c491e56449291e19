// Small dense linear algebra in double for the T × T problems of gradient-based weighting (T the
// number of tasks, so O(T³) is cheap next to the O(T²P) Gram matrix): the Gram matrix, a linear
// solve (least squares when singular), a symmetric eigen-decomposition and the min-norm point of
// a convex hull.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "metacore/simd.hpp"
#include "metacore/threading.hpp"

namespace metacore::linalg {

// Row i of K' below the diagonal: Ki[j] = Σ_k (g_ik r_i)(g_jk r_j) for j ≤ i over the first Ps
// columns (r null: every r = 1, the products unscaled), in double. Four rows j at a time, each sum
// in vector lanes of a fixed order: the same bits for any thread count (not across instruction
// sets). A sum in column order ran one multiply-add per four cycles, 0.4 s of a step at 512 tasks.
template <class T>
METACORE_INLINE void gram_row_body(const T* G, std::int64_t P, std::int64_t Ps, std::int64_t i,
                                   const double* r, double* Ki) {
    const T* gi = G + i * P;
    const double ri = r ? r[i] : 1.0;
    std::int64_t j = 0;
    for (; j + 4 <= i + 1; j += 4) {
        const T *b0 = G + j * P, *b1 = b0 + P, *b2 = b1 + P, *b3 = b2 + P;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        if (!r) {
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (std::int64_t k = 0; k < Ps; ++k) {
                const double a = static_cast<double>(gi[k]);
                s0 += a * static_cast<double>(b0[k]);
                s1 += a * static_cast<double>(b1[k]);
                s2 += a * static_cast<double>(b2[k]);
                s3 += a * static_cast<double>(b3[k]);
            }
        } else {
            const double r0 = r[j], r1 = r[j + 1], r2 = r[j + 2], r3 = r[j + 3];
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (std::int64_t k = 0; k < Ps; ++k) {
                const double a = static_cast<double>(gi[k]) * ri;
                s0 += a * (static_cast<double>(b0[k]) * r0);
                s1 += a * (static_cast<double>(b1[k]) * r1);
                s2 += a * (static_cast<double>(b2[k]) * r2);
                s3 += a * (static_cast<double>(b3[k]) * r3);
            }
        }
        Ki[j] = s0;
        Ki[j + 1] = s1;
        Ki[j + 2] = s2;
        Ki[j + 3] = s3;
    }
    for (; j <= i; ++j) {
        const T* gj = G + j * P;
        const double rj = r ? r[j] : 1.0;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (std::int64_t k = 0; k < Ps; ++k)
            s += (static_cast<double>(gi[k]) * ri) * (static_cast<double>(gj[k]) * rj);
        Ki[j] = s;
    }
}
METACORE_KERNEL(void, gram_row,
                (const T* G, std::int64_t P, std::int64_t Ps, std::int64_t i, const double* r, double* Ki),
                (G, P, Ps, i, r, Ki))

// K = G_s G_sᵀ over the first Ps columns of G (n × P), as K_ij = 2^(e_i + e_j) K'_ij: K' is
// returned and e (n) set. Rows of ordinary scale (K_ii in [2^-960, 2^960]) and zero rows keep e_i = 0,
// so K' is K itself, bit for bit; a row whose K_ii overflows (entries ≳ 1e154) or underflows
// (≲ 1e-146, where products lose bits or vanish) is scaled by 2^(−e_i), an exact power of two
// bringing its largest |entry| into [0.5, 1), and K' is summed again with those scales. A row
// with a non-finite entry keeps e_i = 0 (K' is then non-finite and the caller reports it).
// Rows in parallel (gram_row).
template <class T>
std::vector<double> gram(const T* G, std::int64_t n, std::int64_t P, std::int64_t Ps, int threads,
                         std::vector<int>& e) {
    std::vector<double> K(n * n), r(n, 1.0);
    e.assign(n, 0);
    auto fill = [&](bool scaled) {
        parallel_for(n, team_for(n * (n + 1) / 2 * Ps, threads, n), [&](std::int64_t i, int) {
            gram_row<T>(G, P, Ps, i, scaled ? r.data() : nullptr, K.data() + i * n);
        });
    };
    fill(false);
    bool rescale = false;
    for (std::int64_t i = 0; i < n; ++i) {
        const double d = K[i * n + i];
        if (d >= 0x1p-960 && d <= 0x1p960) continue;
        double mx = 0.0;  // a row out of range, zero or non-finite: its largest |entry|
        for (std::int64_t k = 0; k < Ps; ++k) mx = std::max(mx, std::abs(static_cast<double>(G[i * P + k])));
        if (!(mx > 0.0) || !std::isfinite(mx)) continue;
        std::frexp(mx, &e[i]);
        r[i] = std::ldexp(1.0, -e[i]);
        rescale = true;
    }
    if (rescale) fill(true);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = i + 1; j < n; ++j) K[i * n + j] = K[j * n + i];
    return K;
}

// The largest e_i over rows with K'_ii > 0 (0 when there is none): K / 2^(2E) is the Gram
// matrix on a common scale that neither overflows nor loses the largest rows.
inline int gram_exponent(const std::vector<double>& Kp, const std::vector<int>& e) {
    const auto n = static_cast<std::int64_t>(e.size());
    int E = std::numeric_limits<int>::min();
    for (std::int64_t i = 0; i < n; ++i)
        if (Kp[i * n + i] > 0.0) E = std::max(E, e[i]);
    return E == std::numeric_limits<int>::min() ? 0 : E;
}

// K / 2^(2E) from K' and e: K'_ij · 2^(e_i + e_j − 2E) (entries of rows far below the largest
// underflow to what they are relative to it: 0).
inline std::vector<double> common_scale(const std::vector<double>& Kp, const std::vector<int>& e,
                                        int E) {
    const auto n = static_cast<std::int64_t>(e.size());
    std::vector<double> K(Kp);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j)
            if (e[i] + e[j] != 2 * E) K[i * n + j] = std::ldexp(Kp[i * n + j], e[i] + e[j] - 2 * E);
    return K;
}

// min over the simplex of γᵀ K γ (K the Gram matrix of points p_i: the minimum-norm point x of
// their convex hull, MGDA's direction), exactly, by Wolfe's minimum-norm-point algorithm
// (P. Wolfe, "Finding the nearest point in a polytope", Math. Programming 11, 1976) written on the
// Gram matrix. K is first divided by its largest diagonal entry (the answer does not change), so
// every tolerance is relative to max_i ‖p_i‖². A corral S (affinely independent points, x their
// affine minimiser with positive weights) grows by the point p_j minimising p_j·x while
// x·x − p_j·x > tol (the optimality condition (Kγ)_j ≥ γᵀKγ for all j, with equality on S, is then
// met to tol); the affine minimiser of S solves the normal equations of the differences p_a − p_o
// from a base point o of S, through a Cholesky factor extended by one row per added point; when
// it leaves the simplex the weights move toward it until one reaches 0 and that point leaves S
// (the minor cycle, at most |S| times). Degenerate
// points — duplicates, collinear, zero, or tiny and huge next to the others — meet the optimality
// condition to rounding and are never added. At most max_iter major cycles; each lowers x·x, and
// a step that raises it by more than rounding, a point that is affinely dependent on S to rounding
// (a pivot ≤ 0), or the iteration bound ends the solve with the best γ met (always on the
// simplex; also after T major cycles in a row that do not lower x·x), which at most
// min(max_iter, 100 + 10T) pairwise Frank–Wolfe steps then polish. All-zero K: uniform γ;
// a non-finite K: NaN (the caller reports it). Serial and deterministic. O(T·|S|) per major
// cycle plus O(|S|³) per dropped point.
// The lowest index i with in(i) whose sign·v[i] is within tol of the largest such value: values
// equal in exact arithmetic (duplicate or opposite points) are told apart by rounding, which
// depends on the order of summation; taking the first of them makes the choice independent of
// the kernel (ISA, tile) that formed the Gram matrix, and the reference makes the same one.
template <class In>
inline std::int64_t first_within(const std::vector<double>& v, double tol, In in, double sign) {
    double top = -std::numeric_limits<double>::infinity();
    const auto T = static_cast<std::int64_t>(v.size());
    for (std::int64_t i = 0; i < T; ++i)
        if (in(i)) top = std::max(top, sign * v[i]);
    for (std::int64_t i = 0; i < T; ++i)
        if (in(i) && sign * v[i] >= top - tol) return i;
    return -1;
}

inline std::vector<double> min_norm_simplex(const std::vector<double>& K, std::int64_t T,
                                            std::int64_t max_iter, double tol = 1e-12) {
    constexpr double eps = std::numeric_limits<double>::epsilon();
    std::vector<double> gamma(T, T > 0 ? 1.0 / static_cast<double>(T) : 0.0);
    if (T <= 1) return gamma;
    double scale = 0.0;
    for (std::int64_t i = 0; i < T * T; ++i)
        if (!std::isfinite(K[i]))
            return std::vector<double>(T, std::numeric_limits<double>::quiet_NaN());
    for (std::int64_t i = 0; i < T; ++i) scale = std::max(scale, K[i * T + i]);
    if (!(scale > 0.0)) return gamma;  // every point is 0: any γ gives x = 0
    std::vector<double> A(T * T);
    for (std::int64_t i = 0; i < T * T; ++i) A[i] = K[i] / scale;
    const double gap_tol = std::max(tol, 8.0 * static_cast<double>(T) * eps);
    const double noise = 4.0 * static_cast<double>(T) * eps;  // the rounding of γᵀAγ

    std::vector<std::int64_t> S;  // the corral; S[0] is the base point o
    std::vector<double> lam;      // its weights (positive, Σ = 1)
    // L: Cholesky factor of M over S[1..], M_ab = (p_a − p_o)·(p_b − p_o) — differences, whose
    // rounding follows the points' own norms — row-major with stride T
    std::vector<double> L(T * T, 0.0);
    auto M = [&](std::int64_t a, std::int64_t b) {
        const std::int64_t o = S[0];
        return A[a * T + b] - A[a * T + o] - A[o * T + b] + A[o * T + o];
    };
    auto refactor = [&]() {       // L from scratch for the current S; false if not positive
        const auto n = static_cast<std::int64_t>(S.size()) - 1;
        for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t j = 0; j <= i; ++j) {
                double s = M(S[i + 1], S[j + 1]);
                for (std::int64_t k = 0; k < j; ++k) s -= L[i * T + k] * L[j * T + k];
                if (i == j) {
                    if (!(s > 0.0)) return false;
                    L[i * T + i] = std::sqrt(s);
                } else {
                    L[i * T + j] = s / L[j * T + j];
                }
            }
        return true;
    };
    // The affine minimiser of S: p_o + Σ c_a (p_a − p_o) with M c = −((p_a − p_o)·p_o)_a, so
    // μ_o = 1 − Σ c, μ_a = c_a.
    auto affine_minimiser = [&](std::vector<double>& mu) {
        const auto n = static_cast<std::int64_t>(S.size()) - 1;
        const std::int64_t o = S[0];
        std::vector<double> c(n);
        for (std::int64_t i = 0; i < n; ++i) {
            c[i] = A[o * T + o] - A[S[i + 1] * T + o];
            for (std::int64_t k = 0; k < i; ++k) c[i] -= L[i * T + k] * c[k];
            c[i] /= L[i * T + i];
        }
        for (std::int64_t i = n - 1; i >= 0; --i) {
            for (std::int64_t k = i + 1; k < n; ++k) c[i] -= L[k * T + i] * c[k];
            c[i] /= L[i * T + i];
        }
        mu.assign(n + 1, 0.0);
        double s = 0.0;
        for (std::int64_t i = 0; i < n; ++i) s += (mu[i + 1] = c[i]);
        mu[0] = 1.0 - s;
    };

    std::int64_t j0 = 0;  // start at the shortest point
    for (std::int64_t i = 1; i < T; ++i)
        if (A[i * T + i] < A[j0 * T + j0]) j0 = i;
    S.push_back(j0);
    lam.push_back(1.0);
    std::vector<double> v(T), mu, best_lam(lam);
    std::vector<std::int64_t> best_S(S);
    double best_xx = std::numeric_limits<double>::infinity();
    std::int64_t stalls = 0;  // major cycles in a row that did not lower x·x
    for (std::int64_t it = 0; it <= max_iter; ++it) {
        std::fill(v.begin(), v.end(), 0.0);  // v = A γ, x·x = γᵀ v
        for (std::size_t k = 0; k < S.size(); ++k)
            for (std::int64_t i = 0; i < T; ++i) v[i] += lam[k] * A[i * T + S[k]];
        double xx = 0.0;
        for (std::size_t k = 0; k < S.size(); ++k) xx += lam[k] * v[S[k]];
        if (!(xx <= best_xx + noise)) break;  // worse than the best met (rounding): keep that
        stalls = xx < best_xx ? 0 : stalls + 1;
        best_xx = std::min(best_xx, xx);
        best_S = S;
        best_lam = lam;
        if (it == max_iter || stalls > T) break;  // the iteration bound; no cycling in rounding
        const std::int64_t j = first_within(v, noise, [](std::int64_t) { return true; }, -1.0);
        if (xx - v[j] <= gap_tol) break;  // optimal
        if (std::find(S.begin(), S.end(), j) != S.end()) break;
        // add p_j: one more row of the Cholesky factor
        const auto n = static_cast<std::int64_t>(S.size()) - 1;
        double d = M(j, j);
        for (std::int64_t i = 0; i < n; ++i) {
            double s = M(S[i + 1], j);
            for (std::int64_t k = 0; k < i; ++k) s -= L[i * T + k] * L[n * T + k];
            L[n * T + i] = s / L[i * T + i];
            d -= L[n * T + i] * L[n * T + i];
        }
        if (!(d > 0.0)) break;  // p_j affinely dependent on S to rounding
        L[n * T + n] = std::sqrt(d);
        S.push_back(j);
        lam.push_back(0.0);
        bool stuck = false;
        for (std::size_t minor = 0; minor <= S.size() + 1; ++minor) {
            affine_minimiser(mu);
            bool inside = true, finite = true;
            for (double u : mu) inside = inside && u > 0.0, finite = finite && std::isfinite(u);
            if (!finite) {
                stuck = true;
                break;
            }
            if (inside) {
                lam = mu;
                break;
            }
            double theta = std::numeric_limits<double>::infinity();  // the largest step toward μ
            // that keeps every weight ≥ 0 (≤ 1, as λ ≥ 0 ≥ μ_k)
            std::size_t hit = 0;
            for (std::size_t k = 0; k < S.size(); ++k)
                if (mu[k] <= 0.0) {
                    const double den = lam[k] - mu[k];
                    const double r = den > 0.0 ? lam[k] / den : 0.0;
                    if (r < theta) theta = r, hit = k;
                }
            if (theta <= 0.0 && S[hit] == j) {  // p_j would leave at once: no progress
                stuck = true;
                break;
            }
            for (std::size_t k = 0; k < S.size(); ++k) lam[k] += theta * (mu[k] - lam[k]);
            lam[hit] = 0.0;
            std::vector<std::int64_t> S2;
            std::vector<double> lam2;
            double sum = 0.0;
            for (std::size_t k = 0; k < S.size(); ++k)
                if (lam[k] > 0.0) S2.push_back(S[k]), lam2.push_back(lam[k]), sum += lam[k];
            for (double& l : lam2) l /= sum;
            S.swap(S2);
            lam.swap(lam2);
            if (!refactor()) {
                stuck = true;
                break;
            }
        }
        if (stuck) break;
    }
    std::fill(gamma.begin(), gamma.end(), 0.0);
    for (std::size_t k = 0; k < best_S.size(); ++k) gamma[best_S[k]] = best_lam[k];
    // Polish: where the corral stopped on a point that the Gram matrix cannot tell from its affine
    // hull (squared distances resolve only √ε of a length; the gap p_j·x resolves ε), pairwise
    // Frank–Wolfe steps (mass from the support point with the largest p·x to the point with the
    // smallest, exact line search) close the gap; each lowers x·x. At most min(max_iter, 100 + 10T).
    std::fill(v.begin(), v.end(), 0.0);
    for (std::int64_t k = 0; k < T; ++k)
        if (gamma[k] > 0.0)
            for (std::int64_t i = 0; i < T; ++i) v[i] += gamma[k] * A[i * T + k];
    const std::int64_t polish = std::min<std::int64_t>(max_iter, 100 + 10 * T);
    for (std::int64_t it = 0; it < polish; ++it) {
        const std::int64_t s = first_within(v, noise, [](std::int64_t) { return true; }, -1.0);
        const std::int64_t w =
            first_within(v, noise, [&](std::int64_t i) { return gamma[i] > 0.0; }, 1.0);
        double xx = 0.0;
        for (std::int64_t i = 0; i < T; ++i) xx += gamma[i] * v[i];
        if (xx - v[s] <= gap_tol || s == w) break;
        const double den = A[s * T + s] + A[w * T + w] - 2.0 * A[s * T + w];
        const double eta = den > 0.0 ? std::min(gamma[w], (v[w] - v[s]) / den) : gamma[w];
        if (!(eta > 0.0)) break;
        gamma[s] += eta;
        gamma[w] = eta == gamma[w] ? 0.0 : gamma[w] - eta;
        for (std::int64_t i = 0; i < T; ++i) v[i] += eta * (A[i * T + s] - A[i * T + w]);
    }
    return gamma;
}

// Eigen-decomposition of a symmetric n × n matrix (defined below).
inline void symmetric_eigen(std::vector<double> A, std::int64_t n, std::vector<double>& w,
                            std::vector<double>& V);

// The least-squares solution of A x = b (n × n) nearest to x0: x0 + (AᵀA)⁺ Aᵀ (b − A x0), the
// pseudo-inverse keeping eigenvalues of AᵀA above n·ε·their maximum and above tiny² (singular
// values below tiny are rounding noise).
inline std::vector<double> least_squares(const std::vector<double>& A, const std::vector<double>& b,
                                         std::int64_t n, const std::vector<double>& x0,
                                         double tiny = 0.0) {
    std::vector<double> r(b), AtA(n * n, 0.0), Atr(n, 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) r[i] -= A[i * n + j] * x0[j];
    for (std::int64_t k = 0; k < n; ++k)
        for (std::int64_t i = 0; i < n; ++i) {
            Atr[i] += A[k * n + i] * r[k];
            for (std::int64_t j = 0; j < n; ++j) AtA[i * n + j] += A[k * n + i] * A[k * n + j];
        }
    std::vector<double> w, V;
    symmetric_eigen(AtA, n, w, V);
    const double wmax = n > 0 ? *std::max_element(w.begin(), w.end()) : 0.0;
    const double tol = std::max(wmax * static_cast<double>(n) *
                                std::numeric_limits<double>::epsilon(), tiny * tiny);
    std::vector<double> x(x0);
    if (!(wmax > 0.0)) return x;
    for (std::int64_t k = 0; k < n; ++k) {
        if (!(w[k] > tol)) continue;
        double c = 0.0;
        for (std::int64_t i = 0; i < n; ++i) c += V[i * n + k] * Atr[i];
        c /= w[k];
        for (std::int64_t i = 0; i < n; ++i) x[i] += c * V[i * n + k];
    }
    return x;
}

// Solves A x = b (n × n, row-major, copied) by Gaussian elimination with partial pivoting. A
// (numerically) singular system — a pivot at most 1e-12·max(max|A|, scale), scale the size of
// the numbers A was computed from (its rounding is a few ε of that) — has no unique solution: it gets the least-squares solution
// nearest to x0 (zero when x0 is empty) instead of an error.
inline std::vector<double> solve(std::vector<double> A, std::vector<double> b, std::int64_t n,
                                 std::vector<double> x0 = {}, double scale = 0.0) {
    if (x0.empty()) x0.assign(n, 0.0);
    const std::vector<double> A0(A), b0(b);
    double amax = scale;
    for (double a : A) amax = std::max(amax, std::abs(a));
    const double tiny = 1e-12 * amax;
    for (std::int64_t k = 0; k < n; ++k) {
        std::int64_t p = k;
        for (std::int64_t i = k + 1; i < n; ++i)
            if (std::abs(A[i * n + k]) > std::abs(A[p * n + k])) p = i;
        if (!(std::abs(A[p * n + k]) > tiny)) return least_squares(A0, b0, n, x0, tiny);
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
    for (double v : x)
        if (!std::isfinite(v)) return least_squares(A0, b0, n, x0, tiny);
    return x;
}

// Cholesky factor of a symmetric positive definite n × n matrix, in place: the lower triangle of
// A becomes L with A = L Lᵀ (the strict upper triangle is left as it was). False when a pivot is
// not positive and finite (A not numerically positive definite); A is then partly overwritten.
inline bool cholesky(double* A, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j) {
        check_interrupt();  // O(n³) in all: Ctrl-C between columns
        double d = A[j * n + j];
        for (std::int64_t k = 0; k < j; ++k) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0.0) || !std::isfinite(d)) return false;
        const double ljj = std::sqrt(d);
        A[j * n + j] = ljj;
        for (std::int64_t i = j + 1; i < n; ++i) {
            double s = A[i * n + j];
            for (std::int64_t k = 0; k < j; ++k) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s / ljj;
        }
    }
    return true;
}

// B (n × m, row-major) ← A⁻¹ B for A = L Lᵀ, L from cholesky(): forward then back substitution,
// every column of B at once.
inline void cholesky_solve(const double* L, std::int64_t n, double* B, std::int64_t m) {
    for (std::int64_t i = 0; i < n; ++i) {
        check_interrupt();
        for (std::int64_t k = 0; k < i; ++k) {
            const double l = L[i * n + k];
            for (std::int64_t c = 0; c < m; ++c) B[i * m + c] -= l * B[k * m + c];
        }
        for (std::int64_t c = 0; c < m; ++c) B[i * m + c] /= L[i * n + i];
    }
    for (std::int64_t i = n - 1; i >= 0; --i) {
        for (std::int64_t k = i + 1; k < n; ++k) {
            const double l = L[k * n + i];
            for (std::int64_t c = 0; c < m; ++c) B[i * m + c] -= l * B[k * m + c];
        }
        for (std::int64_t c = 0; c < m; ++c) B[i * m + c] /= L[i * n + i];
    }
}

// μ = argmin_{μ ≥ 0} ½ μᵀKμ + bᵀμ for a positive semidefinite Gram matrix K = G Gᵀ (T × T) and
// b = G a: the non-negative least-squares problem min_{μ ≥ 0} ‖a + Σ μ_i g_i‖², solved exactly by
// Lawson and Hanson's active-set algorithm (Solving Least Squares Problems, 1974, ch. 23, NNLS) on
// the Gram matrix. The passive set P grows by the task whose gradient (Kμ + b)_j is most negative
// (ties within rounding to the lowest index, as first_within); μ_P solves K_PP μ_P = −b_P
// (Cholesky), stepping back to the boundary and dropping tasks whose μ would turn ≤ 0. A task
// whose column is dependent on P's to rounding (no Cholesky pivot) is kept out until μ next
// changes. Stops when no gradient is below −tol (tol: the rounding of g_j·(a + Σ μ_i g_i),
// 16Tε·max K_ii·(1 + Σμ)) or after max(max_iter, 3T) additions. Serial and deterministic; O(T⁴) at most.
inline std::vector<double> nnls_gram(const std::vector<double>& K, const std::vector<double>& b,
                                     std::int64_t T, std::int64_t max_iter) {
    constexpr double eps = std::numeric_limits<double>::epsilon();
    std::vector<double> mu(T, 0.0), grad(T), z(T), L;
    std::vector<char> passive(T, 0), blocked(T, 0);
    double kmax = 0.0;
    for (std::int64_t i = 0; i < T; ++i) kmax = std::max(kmax, K[i * T + i]);
    if (!(kmax > 0.0)) return mu;
    auto solve_passive = [&](std::vector<std::int64_t>& P) {  // z_P = −K_PP⁻¹ b_P; false if singular
        const auto n = static_cast<std::int64_t>(P.size());
        L.assign(n * n, 0.0);
        std::vector<double> rhs(n);
        for (std::int64_t r = 0; r < n; ++r) {
            rhs[r] = -b[P[r]];
            for (std::int64_t c = 0; c < n; ++c) L[r * n + c] = K[P[r] * T + P[c]];
        }
        if (!cholesky(L.data(), n)) return false;
        for (std::int64_t r = 0; r < n; ++r)  // a pivot at rounding level is a dependent column
            if (!(L[r * n + r] * L[r * n + r] > 1e-13 * K[P[r] * T + P[r]])) return false;
        cholesky_solve(L.data(), n, rhs.data(), 1);
        for (std::int64_t r = 0; r < n; ++r) z[P[r]] = rhs[r];
        return true;
    };
    const std::int64_t additions = std::max<std::int64_t>(max_iter, 3 * T);
    for (std::int64_t it = 0; it < additions; ++it) {
        check_interrupt();
        double mass = 0.0;
        for (std::int64_t i = 0; i < T; ++i) {
            double g = b[i];
            for (std::int64_t k = 0; k < T; ++k) g += K[i * T + k] * mu[k];
            grad[i] = g;
            mass += mu[i];
        }
        const double tol = 16.0 * static_cast<double>(T) * eps * kmax * (1.0 + mass);
        auto open = [&](std::int64_t i) { return !passive[i] && !blocked[i] && grad[i] < -tol; };
        const std::int64_t j = first_within(grad, tol, open, -1.0);
        if (j < 0) break;
        passive[j] = 1;
        bool moved = false;
        for (std::int64_t inner = 0; inner <= T; ++inner) {
            std::vector<std::int64_t> P;
            for (std::int64_t i = 0; i < T; ++i)
                if (passive[i]) P.push_back(i);
            if (P.empty()) break;
            if (!solve_passive(P)) {  // j's column is dependent on P's: keep it out for now
                passive[j] = 0;
                blocked[j] = 1;
                break;
            }
            double alpha = 1.0;  // the longest step from μ toward z that keeps μ ≥ 0
            std::int64_t hit = -1;
            for (std::int64_t i : P) {
                if (z[i] > 0.0) continue;
                const double den = mu[i] - z[i];
                const double a = den > 0.0 ? mu[i] / den : 0.0;
                if (a < alpha || hit < 0) {
                    alpha = std::min(alpha, a);
                    hit = i;
                }
            }
            for (std::int64_t i : P) mu[i] += alpha * (z[i] - mu[i]);
            moved = moved || alpha > 0.0;
            if (hit < 0) break;  // every z_i > 0: μ_P = z_P
            mu[hit] = 0.0;       // the task that reached the boundary (exactly, not by rounding)
            for (std::int64_t i : P)
                if (mu[i] <= 0.0) {
                    mu[i] = 0.0;
                    passive[i] = 0;
                }
        }
        if (moved) std::fill(blocked.begin(), blocked.end(), 0);
        else if (!blocked[j]) {  // j entered and left at once (z_j ≤ 0 by rounding): keep it out
            passive[j] = 0;
            blocked[j] = 1;
        }
    }
    return mu;
}

// Eigen-decomposition of a symmetric n × n matrix: A = V diag(w) Vᵀ, V's columns the eigenvectors
// (V row-major: V[i*n+k] = component i of eigenvector k). Householder reduction to a tridiagonal
// T = Q A Qᵀ, then QL iterations with implicit Wilkinson shifts on T (Golub & Van Loan, Matrix
// Computations, §8.3; the classic tred2/tql2 pair): O(n³) with about 9n³ flops in all. Q and the
// rotations are kept as rows (Vᵀ), so every inner loop runs along contiguous memory; cyclic
// Jacobi, used before, read columns of row-major arrays and took 18 s at n = 512.
inline void symmetric_eigen(std::vector<double> A, std::int64_t n, std::vector<double>& w,
                            std::vector<double>& V) {
    w.assign(n, 0.0);
    V.assign(n * n, 0.0);
    if (n == 0) return;
    // A scaled by a power of two (exact) to a largest |entry| in [0.5, 1): the sums of squares
    // below neither overflow (entries ≳ 1e154) nor underflow into a tail taken for zero (≲ 1e-154).
    double amax = 0.0;
    for (double a : A) {
        if (!std::isfinite(a)) {  // no decomposition: NaN eigenvalues, which callers test for
            w.assign(n, std::numeric_limits<double>::quiet_NaN());
            V.assign(n * n, std::numeric_limits<double>::quiet_NaN());
            return;
        }
        amax = std::max(amax, std::abs(a));
    }
    int scale = 0;
    if (amax > 0.0) {
        std::frexp(amax, &scale);
        for (double& a : A) a = std::ldexp(a, -scale);
    }
    std::vector<double> e(n, 0.0), Y(n * n, 0.0), v(n), q(n);  // Y = Qᵀ-products: rows of Vᵀ
    for (std::int64_t i = 0; i < n; ++i) Y[i * n + i] = 1.0;
    // Householder step k zeroes A[k][k+2..]: H = I - 2uuᵀ on coordinates k+1..n-1 maps row k's
    // tail x to (α, 0, ...), and A's trailing block becomes H A H = A - 2(uqᵀ + quᵀ), q = Au - (uᵀAu)u.
    for (std::int64_t k = 0; k + 2 < n; ++k) {
        check_interrupt();  // O(n³) in all (20 s at n = 2,500): Ctrl-C between reflections
        const std::int64_t m = n - k - 1, o = k + 1;
        const double* x = &A[k * n + o];
        double xx = 0.0;
        for (std::int64_t i = 0; i < m; ++i) xx += x[i] * x[i];
        w[k] = A[k * n + k];
        const double alpha = x[0] >= 0.0 ? -std::sqrt(xx) : std::sqrt(xx);
        e[k] = alpha;
        for (std::int64_t i = 0; i < m; ++i) v[i] = x[i];
        v[0] -= alpha;
        double vv = 0.0;
        for (std::int64_t i = 0; i < m; ++i) vv += v[i] * v[i];
        if (!(vv > 0.0)) {  // the tail is already zero: no reflection
            e[k] = x[0];
            continue;
        }
        const double inv = 1.0 / std::sqrt(vv);
        for (std::int64_t i = 0; i < m; ++i) v[i] *= inv;
        double K = 0.0;
        for (std::int64_t i = 0; i < m; ++i) {
            const double* row = &A[(o + i) * n + o];
            double r = 0.0;
            for (std::int64_t j = 0; j < m; ++j) r += row[j] * v[j];
            q[i] = r;
            K += v[i] * r;
        }
        for (std::int64_t i = 0; i < m; ++i) q[i] -= K * v[i];
        for (std::int64_t i = 0; i < m; ++i) {
            double* row = &A[(o + i) * n + o];
            const double vi = 2.0 * v[i], qi = 2.0 * q[i];
            for (std::int64_t j = 0; j < m; ++j) row[j] -= vi * q[j] + qi * v[j];
        }
        // Y ← H Y: rows o.. of Y lose 2u(uᵀY)
        std::fill(q.begin(), q.end(), 0.0);
        for (std::int64_t i = 0; i < m; ++i) {
            const double* row = &Y[(o + i) * n];
            for (std::int64_t j = 0; j < n; ++j) q[j] += v[i] * row[j];
        }
        for (std::int64_t i = 0; i < m; ++i) {
            double* row = &Y[(o + i) * n];
            const double vi = 2.0 * v[i];
            for (std::int64_t j = 0; j < n; ++j) row[j] -= vi * q[j];
        }
    }
    if (n >= 2) {
        w[n - 2] = A[(n - 2) * n + n - 2];
        e[n - 2] = A[(n - 2) * n + n - 1];
    }
    w[n - 1] = A[(n - 1) * n + n - 1];
    // T: diagonal w, e[i] couples i and i+1 (e[n-1] = 0). QL from the top: split where a coupling
    // is negligible against T's norm, else chase a Wilkinson-shifted bulge up. The norm, not the
    // coupling's diagonal neighbours (Numerical Recipes' tqli): a Gram matrix of low rank leaves a
    // run of near-zero diagonal entries joined by rounding-level couplings, which against
    // neighbours of about 0 never count as negligible — the shift then stalled and the iteration
    // cap returned wrong eigenvalues (all-ones 200 × 200: 199 for 200).
    const double eps = std::numeric_limits<double>::epsilon();
    double tnorm = 0.0;
    for (std::int64_t i = 0; i < n; ++i) tnorm = std::max(tnorm, std::abs(w[i]) + std::abs(e[i]));
    for (std::int64_t l = 0; l < n; ++l) {
        check_interrupt();
        for (int iter = 0;; ++iter) {
            std::int64_t m = l;
            for (; m + 1 < n; ++m)
                if (std::abs(e[m]) <= eps * tnorm) break;
            if (m == l) break;
            if (iter == 100)  // not seen since the split is on the norm (30 per eigenvalue: LAPACK)
                throw std::runtime_error("symmetric eigen-decomposition: the QL iterations did "
                                         "not converge");
            double g = (w[l + 1] - w[l]) / (2.0 * e[l]);
            double r = std::hypot(g, 1.0);
            g = w[m] - w[l] + e[l] / (g + (g >= 0.0 ? r : -r));
            double s = 1.0, c = 1.0, p = 0.0;
            std::int64_t i = m - 1;
            for (; i >= l; --i) {
                const double f = s * e[i], b = c * e[i];
                r = std::hypot(f, g);
                e[i + 1] = r;
                if (r == 0.0) {  // underflow: the coupling vanished, restart from l
                    w[i + 1] -= p;
                    e[m] = 0.0;
                    break;
                }
                s = f / r;
                c = g / r;
                g = w[i + 1] - p;
                r = (w[i] - g) * s + 2.0 * c * b;
                p = s * r;
                w[i + 1] = g + p;
                g = c * r - b;
                double* yi = &Y[i * n];
                double* yj = &Y[(i + 1) * n];
                for (std::int64_t k = 0; k < n; ++k) {
                    const double a = yi[k], bk = yj[k];
                    yj[k] = s * a + c * bk;
                    yi[k] = c * a - s * bk;
                }
            }
            if (r == 0.0 && i >= l) continue;
            w[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    for (std::int64_t k = 0; k < n; ++k) {
        w[k] = std::ldexp(w[k], scale);
        for (std::int64_t i = 0; i < n; ++i) V[i * n + k] = Y[k * n + i];
    }
}

}  // namespace metacore::linalg
