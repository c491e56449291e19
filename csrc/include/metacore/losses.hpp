// Row losses on the net's outputs z (k values) with their gradient and Hessian-vector product
// with respect to z. Numerically stable forms: log1p(exp(-|z|)) and log-sum-exp.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "metacore/format.hpp"
#include "metacore/net.hpp"
#include "metacore/vector_math.hpp"

namespace metacore {

template <class T>
inline T stable_sigmoid(T z) {
    if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
    const T e = std::exp(z);
    return e / (T(1) + e);
}

// The logistic head's row: returns ℓ = softplus(−s·m), s = +1 for the label 1 and −1 for 0, and
// writes σ(m) − y to *dz, from one e = exp(−|m|) in vector-friendly arithmetic (every kernel
// with a logistic head calls this, inside `omp simd` loops). Written on t = −s·m, not as
// softplus(m) − y·m: the latter is inf − inf = NaN for an overflowed logit m = ±inf whose label
// it agrees with (the loss there is 0). Labels are 0 or 1 (checked when the objective is built).
METACORE_INLINE double logistic_row(double m, double label, double* dz) {
    const double e = exp_nonpositive(-(m < 0.0 ? -m : m));
    const double sigma = (m >= 0.0 ? 1.0 : e) / (1.0 + e);
    *dz = sigma - label;
    const double t = label > 0.5 ? -m : m;
    return (t > 0.0 ? t : 0.0) + log1p_unit(e);
}

// Class label stored as a float. Labels are validated once when an objective is built
// (check_class_labels); here an invalid one is only clamped, because kernels must not throw.
template <class T>
inline std::int64_t class_label(T y, std::int64_t k) {
    const auto c = static_cast<std::int64_t>(y);
    return c < 0 ? 0 : (c >= k ? k - 1 : c);
}

// z_j − max z, with 0 where z_j is the maximum: an overflowed logit z_j = max z = +inf gives
// exp(0) = 1 (its limit), where inf − inf would give NaN.
METACORE_INLINE double shifted_logit(double zj, double zmax) { return zj == zmax ? 0.0 : zj - zmax; }

// Σ_j exp(z_j − max z) over a row of N double logits, with its maximum: what the softmax heads
// of the prototype and ridge learners need for softmax_p and softmax_nll.
struct SoftmaxRow {
    double zmax, sum;
};

inline SoftmaxRow softmax_row_sum(const double* z, std::int64_t N) {
    double zmax = z[0];
    for (std::int64_t k = 1; k < N; ++k) zmax = z[k] > zmax ? z[k] : zmax;
    double sum = 0.0;
    for (std::int64_t k = 0; k < N; ++k) sum += std::exp(shifted_logit(z[k], zmax));
    return {zmax, sum};
}

// softmax(z)_k, and −log softmax(z)_c with (max − z_c) first: max + log Σ would round log Σ
// away at |z| ~ 1e16.
inline double softmax_p(double zk, SoftmaxRow s) { return std::exp(shifted_logit(zk, s.zmax)) / s.sum; }
inline double softmax_nll(double zc, SoftmaxRow s) { return -shifted_logit(zc, s.zmax) + std::log(s.sum); }

// The cross-entropy head's row: returns ℓ = log Σ_j exp(z_j) − z_c and writes
// g = scale · (softmax(z) − onehot(c)), c the row's class label. e_j = exp(z_j − max z) is
// vectorised over the classes, one log per row.
template <class T>
METACORE_INLINE double softmax_row(const T* z, T label, std::int64_t k, T scale, T* g) {
    double zmax = z[0];
    for (std::int64_t j = 1; j < k; ++j) zmax = z[j] > zmax ? z[j] : zmax;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t j = 0; j < k; ++j) {
        const double e = exp_nonpositive(shifted_logit(z[j], zmax));
        g[j] = static_cast<T>(e);
        sum += e;
    }
    const std::int64_t c = class_label(label, k);
    // (max − z_c) first: at |z| ~ 1e16, max + log Σ would round log Σ away.
    const double loss = -shifted_logit(z[c], zmax) + std::log(sum);
    const double inv = static_cast<double>(scale) / sum;
#pragma omp simd
    for (std::int64_t j = 0; j < k; ++j) g[j] = static_cast<T>(g[j] * inv);
    g[c] -= scale;
    return loss;
}

// Throws unless every label is an integer in [0, k).
template <class T>
inline void check_class_labels(const T* y, std::int64_t n, std::int64_t stride, std::int64_t k) {
    for (std::int64_t r = 0; r < n; ++r) {
        const T v = y[r * stride];
        // Range first: converting NaN or a value past int64 to an integer is undefined behaviour.
        if (!(v >= T(0)) || !(v < static_cast<T>(k)) ||
            static_cast<T>(static_cast<std::int64_t>(v)) != v)
            throw std::invalid_argument("y: row " + std::to_string(r) + " has class label " +
                                        number_text(static_cast<double>(v)) +
                                        ", not an integer in [0, " + std::to_string(k) + ")");
    }
}

// Returns the row loss ℓ(z, y) and writes g = scale · ∂ℓ/∂z.
// mse: mean_j (z_j − y_j)²; logistic: logistic_row; cross_entropy: lse(z) − z_y.
template <class T>
inline double loss_value_grad(Loss loss, const T* z, const T* y, std::int64_t k, T scale, T* g) {
    switch (loss) {
        case Loss::mse: {
            double l = 0.0;
            const T two_over_k = T(2) / static_cast<T>(k);
            for (std::int64_t j = 0; j < k; ++j) {
                const T r = z[j] - y[j];
                l += static_cast<double>(r) * r;
                g[j] = scale * two_over_k * r;
            }
            return l / static_cast<double>(k);
        }
        case Loss::logistic: {
            double dz;
            const double l = logistic_row(static_cast<double>(z[0]), static_cast<double>(y[0]), &dz);
            g[0] = static_cast<T>(static_cast<double>(scale) * dz);
            return l;
        }
        case Loss::cross_entropy:
            return softmax_row(z, y[0], k, scale, g);
    }
    return 0.0;
}

// Writes out = scale · (∂²ℓ/∂z²) · zdot.  mse: 2/k·zdot; logistic: s(1−s)·zdot;
// cross_entropy: p⊙zdot − p (p·zdot).
template <class T>
inline void loss_hess_vec(Loss loss, const T* z, std::int64_t k, const T* zdot, T scale, T* out) {
    switch (loss) {
        case Loss::mse: {
            const T c = scale * T(2) / static_cast<T>(k);
            for (std::int64_t j = 0; j < k; ++j) out[j] = c * zdot[j];
            return;
        }
        case Loss::logistic: {
            const T s = stable_sigmoid(z[0]);
            out[0] = scale * s * (T(1) - s) * zdot[0];
            return;
        }
        case Loss::cross_entropy: {
            T zmax = z[0];
            for (std::int64_t j = 1; j < k; ++j) zmax = z[j] > zmax ? z[j] : zmax;
            T sum = T(0);
            for (std::int64_t j = 0; j < k; ++j)
                sum += (out[j] = std::exp(static_cast<T>(shifted_logit(z[j], zmax))));
            const T inv = T(1) / sum;
            T pz = T(0);
            for (std::int64_t j = 0; j < k; ++j) {
                out[j] *= inv;  // p_j, scaled below
                pz += out[j] * zdot[j];
            }
            for (std::int64_t j = 0; j < k; ++j) out[j] = scale * out[j] * (zdot[j] - pz);
            return;
        }
    }
}

}  // namespace metacore
