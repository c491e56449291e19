// Forward, backward and forward-over-reverse (R-operator) passes of the net over a block of at
// most kBlock rows. One NetPass per thread holds the block's activations, so a block's rows and
// everything computed from them stay in cache between the forward and the backward pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "metacore/losses.hpp"
#include "metacore/net.hpp"
#include "metacore/simd.hpp"
#include "metacore/vector_math.hpp"

namespace metacore {

template <class T>
class NetPass {
   public:
    static constexpr std::int64_t kBlock = 32;

    NetPass(const NetSpec& net, bool with_tangents) : net_(net) {
        const int L = net.n_layers();
        z_.resize(L);
        a_.resize(L);
        for (int l = 0; l < L; ++l) {
            z_[l].assign(kBlock * net.fan_out(l), T(0));
            if (l > 0) a_[l].assign(kBlock * net.fan_in(l), T(0));
        }
        wt_.resize(L);
        wt_of_.assign(L, nullptr);
        delta_.assign(kBlock * net.max_width(), T(0));
        delta_prev_.assign(kBlock * net.max_width(), T(0));
        if (with_tangents) {
            zt_ = z_;
            at_ = a_;
            dt_ = delta_;
            dt_prev_ = delta_;
            u_.assign(net.max_width(), T(0));
            ut_.assign(net.max_width(), T(0));
        }
    }

    const T* outputs() const { return z_.back().data(); }

    // z_l = in · W_lᵀ + b_l, a_{l+1} = σ(z_l) for hidden layers; rows of X have stride fan_in(0).
    // The first layer also prefetches `next_rows` rows at `next` (the next block), a row per row
    // it reads, so the memory system works ahead without a burst of requests.
    METACORE_INLINE void forward(const T* theta, const T* X, std::int64_t b, std::int64_t head,
                                 const T* next = nullptr, std::int64_t next_rows = 0) {
        const int L = net_.n_layers();
        for (int l = 0; l < L; ++l) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            const T* W = theta + net_.weight_offset(l, head);
            const T* bias = theta + net_.bias_offset(l, head);
            const T* A = l == 0 ? X : a_[l].data();
            T* Z = z_[l].data();
            const T* ahead = l == 0 ? next : nullptr;
            if (out >= kWide)
                affine_wide(A, transposed(l, W), bias, b, in, out, Z, ahead, next_rows);
            else
                affine(A, W, bias, b, in, out, Z, ahead, next_rows);
            if (l + 1 < L) activate(Z, a_[l + 1].data(), b * out);
        }
    }

    // Sum of the block's row losses; leaves δ = scale · ∂ℓ/∂z_out for the backward pass.
    METACORE_INLINE double loss_grad(const T* y, std::int64_t y_cols, std::int64_t b, T scale) {
        const std::int64_t k = net_.n_outputs();
        const T* Z = z_.back().data();
        if (net_.loss() == Loss::logistic) return logistic_block(Z, y, b, scale, delta_.data());
        if (net_.loss() == Loss::cross_entropy) return softmax_block(Z, y, b, k, scale, delta_.data());
        double sum = 0.0;
        for (std::int64_t r = 0; r < b; ++r)
            sum += loss_value_grad(net_.loss(), Z + r * k, y + r * y_cols, k, scale,
                                   delta_.data() + r * k);
        return sum;
    }

    // grad += ∂/∂θ of the block's scaled loss (δ from loss_grad).
    METACORE_INLINE void backward(const T* theta, const T* X, std::int64_t b, std::int64_t head,
                                  T* grad) {
        for (int l = net_.n_layers() - 1; l >= 0; --l) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            const T* A = l == 0 ? X : a_[l].data();
            T* gW = grad + net_.weight_offset(l, head);
            T* gb = grad + net_.bias_offset(l, head);
            outer_accumulate(delta_.data(), A, b, in, out, gW, gb);
            if (l > 0) {
                back_through(theta + net_.weight_offset(l, head), b, in, out, delta_.data(),
                             delta_prev_.data());
                scale_by_derivative(a_[l].data(), delta_prev_.data(), b * in);
                delta_.swap(delta_prev_);
            }
        }
    }

    // Tangents ż_l = V_l·in + W_l·ȧ_in + v_b,l of the forward pass in direction v (ȧ_0 = 0).
    METACORE_INLINE void forward_tangent(const T* theta, const T* v, const T* X, std::int64_t b,
                                         std::int64_t head) {
        const int L = net_.n_layers();
        for (int l = 0; l < L; ++l) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            const T* W = theta + net_.weight_offset(l, head);
            const T* V = v + net_.weight_offset(l, head);
            const T* vb = v + net_.bias_offset(l, head);
            const T* A = l == 0 ? X : a_[l].data();
            T* Zt = zt_[l].data();
            for (std::int64_t r = 0; r < b; ++r)
                for (std::int64_t o = 0; o < out; ++o) {
                    T s = vb[o] + dot(A + r * in, V + o * in, in);
                    if (l > 0) s += dot(at_[l].data() + r * in, W + o * in, in);
                    Zt[r * out + o] = s;
                }
            if (l + 1 < L) {
                const T* Anext = a_[l + 1].data();
                T* At = at_[l + 1].data();
                for (std::int64_t i = 0; i < b * out; ++i) At[i] = derivative(Anext[i]) * Zt[i];
            }
        }
    }

    // After loss_grad: δ̇ = scale · H_ℓ · ż_out.
    METACORE_INLINE void loss_tangent(std::int64_t b, T scale) {
        const std::int64_t k = net_.n_outputs();
        for (std::int64_t r = 0; r < b; ++r)
            loss_hess_vec(net_.loss(), z_.back().data() + r * k, k, zt_.back().data() + r * k,
                          scale, dt_.data() + r * k);
    }

    // hv += the tangent of the backward pass: the block's contribution to H·v.
    METACORE_INLINE void backward_tangent(const T* theta, const T* v, const T* X, std::int64_t b,
                                          std::int64_t head, T* hv) {
        for (int l = net_.n_layers() - 1; l >= 0; --l) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            const T* A = l == 0 ? X : a_[l].data();
            T* hW = hv + net_.weight_offset(l, head);
            T* hb = hv + net_.bias_offset(l, head);
            for (std::int64_t r = 0; r < b; ++r)
                for (std::int64_t o = 0; o < out; ++o) {
                    axpy(dt_[r * out + o], A + r * in, hW + o * in, in);
                    if (l > 0) axpy(delta_[r * out + o], at_[l].data() + r * in, hW + o * in, in);
                    hb[o] += dt_[r * out + o];
                }
            if (l == 0) break;
            const T* W = theta + net_.weight_offset(l, head);
            const T* V = v + net_.weight_offset(l, head);
            const T* Ain = a_[l].data();
            const T* Zt = zt_[l - 1].data();
            for (std::int64_t r = 0; r < b; ++r) {
                // u = Wᵀδ, u̇ = Wᵀδ̇ + Vᵀδ; δ_prev = u⊙σ', δ̇_prev = u̇⊙σ' + u⊙σ''⊙ż
                std::fill(u_.begin(), u_.begin() + in, T(0));
                std::fill(ut_.begin(), ut_.begin() + in, T(0));
                for (std::int64_t o = 0; o < out; ++o) {
                    axpy(delta_[r * out + o], W + o * in, u_.data(), in);
                    axpy(dt_[r * out + o], W + o * in, ut_.data(), in);
                    axpy(delta_[r * out + o], V + o * in, ut_.data(), in);
                }
                for (std::int64_t i = 0; i < in; ++i) {
                    const T a = Ain[r * in + i];
                    delta_prev_[r * in + i] = u_[i] * derivative(a);
                    dt_prev_[r * in + i] =
                        ut_[i] * derivative(a) + u_[i] * second_derivative(a) * Zt[r * in + i];
                }
            }
            delta_.swap(delta_prev_);
            dt_.swap(dt_prev_);
        }
    }

   private:
    // The logistic head over a whole block in one vectorised loop: softplus(z) − y z and
    // σ(z) − y from one e = exp(−|z|) per row (same formulas as loss_value_grad). One output
    // and one label column, so Z, y and δ are contiguous.
    METACORE_INLINE static double logistic_block(const T* __restrict Z, const T* __restrict y,
                                                 std::int64_t b, T scale, T* __restrict D) {
        double sum = 0.0;
        const double c = static_cast<double>(scale);
#pragma omp simd reduction(+ : sum)
        for (std::int64_t r = 0; r < b; ++r) {
            const double m = Z[r], label = y[r];
            const double e = exp_nonpositive(-std::fabs(m));
            const double sigma = (m >= 0.0 ? 1.0 : e) / (1.0 + e);
            D[r] = static_cast<T>(c * (sigma - label));
            sum += (m > 0.0 ? m : 0.0) - label * m + log1p_unit(e);
        }
        return sum;
    }

    // The cross-entropy head row by row: e_j = exp(z_j − max z) vectorised over the classes, one
    // log per row; δ = scale · (softmax(z) − onehot(y)).
    METACORE_INLINE static double softmax_block(const T* Z, const T* y, std::int64_t b,
                                                std::int64_t k, T scale, T* D) {
        double loss = 0.0;
        for (std::int64_t r = 0; r < b; ++r) {
            const T* z = Z + r * k;
            T* d = D + r * k;
            double zmax = z[0];
            for (std::int64_t j = 1; j < k; ++j) zmax = z[j] > zmax ? z[j] : zmax;
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (std::int64_t j = 0; j < k; ++j) {
                const double e = exp_nonpositive(static_cast<double>(z[j]) - zmax);
                d[j] = static_cast<T>(e);
                sum += e;
            }
            const std::int64_t c = class_label(y[r], k);
            loss += zmax + std::log(sum) - static_cast<double>(z[c]);
            const double inv = static_cast<double>(scale) / sum;
#pragma omp simd
            for (std::int64_t j = 0; j < k; ++j) d[j] = static_cast<T>(d[j] * inv);
            d[c] -= scale;
        }
        return loss;
    }

    // σ and its derivatives written in terms of a = σ(z), which the pass keeps.
    METACORE_INLINE void activate(const T* Z, T* A, std::int64_t n) const {
        if (net_.activation() == Activation::relu) {
#pragma omp simd
            for (std::int64_t i = 0; i < n; ++i) A[i] = Z[i] > T(0) ? Z[i] : T(0);
        } else {
#pragma omp simd
            for (std::int64_t i = 0; i < n; ++i) A[i] = static_cast<T>(tanh_vec(Z[i]));
        }
    }

    // Wᵀ of layer l (in × out), transposed once per θ slice and kept for the pass's lifetime: a
    // NetPass lives for one call, during which θ does not change.
    METACORE_INLINE const T* transposed(int l, const T* W) {
        if (wt_of_[l] != W) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            wt_[l].resize(in * out);
            for (std::int64_t o = 0; o < out; ++o)
                for (std::int64_t i = 0; i < in; ++i) wt_[l][i * out + o] = W[o * in + i];
            wt_of_[l] = W;
        }
        return wt_[l].data();
    }

    // Z[r] = bias + Σ_i A[r, i] · Wᵀ[i] for b rows: vectorised over the outputs, no horizontal sums.
    METACORE_INLINE static void affine_wide(const T* A, const T* WT, const T* bias, std::int64_t b,
                                            std::int64_t in, std::int64_t out, T* Z,
                                            const T* ahead, std::int64_t ahead_rows) {
        const std::int64_t row_bytes = in * static_cast<std::int64_t>(sizeof(T));
        if (!ahead) ahead_rows = 0;
        for (std::int64_t r = 0; r < b; ++r) {
            if (r < ahead_rows) prefetch(ahead + r * in, row_bytes);
            T* z = Z + r * out;
            for (std::int64_t o = 0; o < out; ++o) z[o] = bias[o];
            combine_rows(A + r * in, 1, WT, out, in, out, z);
        }
    }
    METACORE_INLINE T derivative(T a) const {
        if (net_.activation() == Activation::relu) return a > T(0) ? T(1) : T(0);
        return T(1) - a * a;
    }
    METACORE_INLINE T second_derivative(T a) const {
        if (net_.activation() == Activation::relu) return T(0);
        return T(-2) * a * (T(1) - a * a);
    }
    METACORE_INLINE void scale_by_derivative(const T* A, T* D, std::int64_t n) const {
        for (std::int64_t i = 0; i < n; ++i) D[i] *= derivative(A[i]);
    }
    // Z[r, o] = bias[o] + A_r · W_o for b rows. Four dot products at a time: four outputs of one
    // row, or, for narrow layers, one output of four rows.
    METACORE_INLINE static void affine(const T* A, const T* W, const T* bias, std::int64_t b,
                                       std::int64_t in, std::int64_t out, T* Z, const T* ahead,
                                       std::int64_t ahead_rows) {
        T s[4];
        const std::int64_t row_bytes = in * static_cast<std::int64_t>(sizeof(T));
        if (!ahead) ahead_rows = 0;
        if (out >= 4) {
            for (std::int64_t r = 0; r < b; ++r) {
                if (r < ahead_rows) prefetch(ahead + r * in, row_bytes);
                const T* a = A + r * in;
                std::int64_t o = 0;
                for (; o + 4 <= out; o += 4) {
                    const T* w = W + o * in;
                    dot4(a, w, w + in, w + 2 * in, w + 3 * in, in, s);
                    for (int j = 0; j < 4; ++j) Z[r * out + o + j] = bias[o + j] + s[j];
                }
                for (; o < out; ++o) Z[r * out + o] = bias[o] + dot(a, W + o * in, in);
            }
            return;
        }
        for (std::int64_t o = 0; o < out; ++o) {
            const T* w = W + o * in;
            std::int64_t r = 0;
            for (; r + 4 <= b; r += 4) {
                if (o == 0 && r < ahead_rows)
                    prefetch(ahead + r * in, std::min<std::int64_t>(4, ahead_rows - r) * row_bytes);
                const T* a = A + r * in;
                dot4(w, a, a + in, a + 2 * in, a + 3 * in, in, s);
                for (int j = 0; j < 4; ++j) Z[(r + j) * out + o] = bias[o] + s[j];
            }
            for (; r < b; ++r) Z[r * out + o] = bias[o] + dot(A + r * in, w, in);
        }
    }

    // gW_o += Σ_r D[r, o] · A_r and gb_o += Σ_r D[r, o] over the block's rows.
    METACORE_INLINE static void outer_accumulate(const T* D, const T* A, std::int64_t b,
                                                 std::int64_t in, std::int64_t out, T* gW,
                                                 T* gb) {
        for (std::int64_t o = 0; o < out; ++o) {
            T sb = T(0);
            for (std::int64_t r = 0; r < b; ++r) sb += D[r * out + o];
            gb[o] += sb;
            combine_rows(D + o, out, A, in, b, in, gW + o * in);
        }
    }

    // D_prev[r] = Σ_o D[r, o] · W_o  (Wᵀδ for each row).
    METACORE_INLINE static void back_through(const T* W, std::int64_t b, std::int64_t in,
                                             std::int64_t out, const T* D, T* D_prev) {
        for (std::int64_t r = 0; r < b; ++r) {
            T* dp = D_prev + r * in;
            for (std::int64_t i = 0; i < in; ++i) dp[i] = T(0);
            combine_rows(D + r * out, 1, W, in, out, in, dp);
        }
    }

    // y[0:n] += Σ_j c[j·c_stride] · M[j·m_stride : j·m_stride + n] for j < rows. Chunks of y stay in
    // registers while all rows are added into them, so y is loaded and stored once.
    METACORE_INLINE static void combine_rows(const T* c, std::int64_t c_stride, const T* M,
                                             std::int64_t m_stride, std::int64_t rows,
                                             std::int64_t n, T* y) {
        constexpr std::int64_t C = 32;
        std::int64_t i0 = 0;
        for (; i0 + C <= n; i0 += C) {
            T acc[C];
            for (std::int64_t i = 0; i < C; ++i) acc[i] = y[i0 + i];
            for (std::int64_t j = 0; j < rows; ++j) {
                const T cj = c[j * c_stride];
                const T* m = M + j * m_stride + i0;
#pragma omp simd
                for (std::int64_t i = 0; i < C; ++i) acc[i] += cj * m[i];
            }
            for (std::int64_t i = 0; i < C; ++i) y[i0 + i] = acc[i];
        }
        if (i0 < n)
            for (std::int64_t j = 0; j < rows; ++j)
                axpy(c[j * c_stride], M + j * m_stride + i0, y + i0, n - i0);
    }

    // Layers at least this wide take the transposed-weights forward path.
    static constexpr std::int64_t kWide = 8;

    const NetSpec& net_;
    std::vector<std::vector<T>> wt_;
    std::vector<const T*> wt_of_;
    std::vector<std::vector<T>> z_, a_, zt_, at_;
    std::vector<T> delta_, delta_prev_, dt_, dt_prev_, u_, ut_;
};

}  // namespace metacore
