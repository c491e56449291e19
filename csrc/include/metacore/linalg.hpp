// Small dense linear algebra in double for the T × T problems of gradient-based weighting (T the
// number of tasks, so O(T³) is cheap next to the O(T²P) Gram matrix): the Gram matrix, a linear
// solve (least squares when singular), a symmetric eigen-decomposition and the min-norm point of
// a convex hull.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "metacore/threading.hpp"

namespace metacore::linalg {

// K = G_s G_sᵀ over the first Ps columns of G (n × P); rows in parallel, each entry summed in
// column order.
template <class T>
std::vector<double> gram(const T* G, std::int64_t n, std::int64_t P, std::int64_t Ps, int threads) {
    std::vector<double> K(n * n);
    parallel_for(n, team_for(n * (n + 1) / 2 * Ps, threads, n), [&](std::int64_t i, int) {
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

// min over the simplex of γᵀ K γ (K the Gram matrix of vectors g_i: the min-norm point of their
// convex hull, MGDA's direction) by pairwise Frank–Wolfe
// (mass moves from the worst support vertex to the best vertex, exact line search; linear
// convergence on the simplex) from γ = 1/T; stops when the duality gap falls below tol·max diag.
inline std::vector<double> min_norm_simplex(const std::vector<double>& K, std::int64_t T,
                                            std::int64_t max_iter, double tol = 1e-12) {
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
        if (gKg - Kg[s] <= tol * scale || s == v) break;
        const double denom = K[s * T + s] + K[v * T + v] - 2.0 * K[s * T + v];
        const double eta = denom > 0.0 ? std::min(g[v], (Kg[v] - Kg[s]) / denom) : g[v];
        g[s] += eta;
        g[v] -= eta;
        for (std::int64_t i = 0; i < T; ++i) Kg[i] += eta * (K[i * T + s] - K[i * T + v]);
    }
    return g;
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

}  // namespace metacore::linalg
