// Row losses on the net's outputs z (k values) with their gradient and Hessian-vector product
// with respect to z. Numerically stable forms: log1p(exp(-|z|)) and log-sum-exp.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "metacore/format.hpp"
#include "metacore/net.hpp"

namespace metacore {

template <class T>
inline T stable_sigmoid(T z) {
    if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
    const T e = std::exp(z);
    return e / (T(1) + e);
}

// Class label stored as a float. Labels are validated once when an objective is built
// (check_class_labels); here an invalid one is only clamped, because kernels must not throw.
template <class T>
inline std::int64_t class_label(T y, std::int64_t k) {
    const auto c = static_cast<std::int64_t>(y);
    return c < 0 ? 0 : (c >= k ? k - 1 : c);
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
// mse: mean_j (z_j − y_j)²; logistic: softplus(z) − y z; cross_entropy: lse(z) − z_y.
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
            // One exponential serves both: e = exp(−|z|), σ(z) and softplus(z) from e.
            const T m = z[0];
            const T e = std::exp(-std::fabs(m));
            const T sigma = m >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
            g[0] = scale * (sigma - y[0]);
            return static_cast<double>((m > T(0) ? m : T(0)) - y[0] * m + std::log1p(e));
        }
        case Loss::cross_entropy: {
            const std::int64_t c = class_label(y[0], k);
            T zmax = z[0];
            for (std::int64_t j = 1; j < k; ++j) zmax = z[j] > zmax ? z[j] : zmax;
            // p_j = e_j / Σe with e_j = exp(z_j − zmax): exp(z_j − lse) would carry lse's
            // rounding at |z| (|z|·ε relative, 6e-4 for logits of 1e4 in float32).
            T sum = T(0);
            for (std::int64_t j = 0; j < k; ++j) sum += (g[j] = std::exp(z[j] - zmax));
            const T inv = scale / sum;
            for (std::int64_t j = 0; j < k; ++j) g[j] *= inv;
            g[c] -= scale;
            return static_cast<double>(zmax - z[c]) + std::log(static_cast<double>(sum));
        }
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
            for (std::int64_t j = 0; j < k; ++j) sum += (out[j] = std::exp(z[j] - zmax));
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
