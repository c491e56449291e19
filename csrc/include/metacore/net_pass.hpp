// Forward, backward and forward-over-reverse (R-operator) passes of the net over a block of at
// most kBlock rows. One NetPass per thread holds the block's activations, so a block's rows and
// everything computed from them stay in cache between the forward and the backward pass.
//
// Normalised hidden layers (NetSpec::norm): z = a Wᵀ + b, x̂ = (z − μ)·s with s = 1/√(σ² + ε),
// h = γ ⊙ x̂ + β, a' = σ(h); μ, σ² are means over the group — a unit's column over the block's
// rows (batch) or a row's units (layer). With batch statistics every forward pass must take all
// the rows that share statistics in one block: callers size blocks with block_rows(n), and the
// buffers grow to fit. With P(u) = u − mean(u) − x̂·mean(x̂ u) (means per group):
//   backward  ∂z = s·P(γ ⊙ g),  ∂γ = Σ g ⊙ x̂,  ∂β = Σ g            (g = ∂L/∂h)
//   tangents  x̂' = s·P(ż),  ḣ = γ̇ ⊙ x̂ + γ ⊙ x̂' + β̇,  ṡ = −s²·mean(x̂ ż)
//             (∂z)' = ṡ·P(γg) + s·(ġx − mean(ġx) − x̂'·mean(x̂ γg) − x̂·mean(x̂' γg + x̂ ġx)),
//             ġx = γ̇ ⊙ g + γ ⊙ ġ,  (∂γ)' = Σ ġ ⊙ x̂ + g ⊙ x̂',  (∂β)' = Σ ġ.
// A group of one element (batch norm of one row, layer norm of width 1) has x̂ = 0: h = β.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "metacore/losses.hpp"
#include "metacore/net.hpp"
#include "metacore/sizes.hpp"
#include "metacore/simd.hpp"
#include "metacore/small_gemm.hpp"
#include "metacore/vector_math.hpp"

namespace metacore {

template <class T>
class NetPass {
   public:
    static constexpr std::int64_t kBlock = 32;

    // Elements one pass holds (activations of a block, transposed weights), checked: the widths
    // come from the user's layer sizes.
    static std::int64_t elements(const NetSpec& net, bool with_tangents) {
        const char* what = "hidden (layer widths)";
        std::int64_t widths = checked_mul(2, net.max_width(), what);
        for (int l = 0; l < net.n_layers(); ++l)
            widths = checked_add(widths, checked_add(net.fan_out(l), net.fan_in(l), what), what);
        const std::int64_t n = checked_add(checked_mul(kBlock, widths, what), net.n_params(), what);
        return with_tangents ? checked_mul(2, n, what) : n;
    }

    // `threads` passes, after checking that they fit in memory together. forward_only passes
    // (prediction; forward() and outputs() only) hold two layers' activations and no backward
    // buffers (x̂, δ): under batch statistics a pass holds every row, and the other layers' and
    // the backward pass's buffers were most of its memory (at 20,000 rows of a 64-64-64-5 net,
    // 84 MB in float64 and 42 MB in float32 before, 21 and 11 MB now).
    static void make(std::vector<NetPass>& passes, const NetSpec& net, bool with_tangents,
                     int threads, bool forward_only = false) {
        require_elements("hidden (layer widths)",
                         checked_mul(threads, elements(net, with_tangents), "hidden (layer widths)"),
                         sizeof(T), "for the threads' activation buffers");
        passes.reserve(threads);
        for (int t = 0; t < threads; ++t) passes.emplace_back(net, with_tangents, forward_only);
    }

    NetPass(const NetSpec& net, bool with_tangents, bool forward_only = false)
        : net_(net), tangents_(with_tangents && !forward_only), forward_only_(forward_only) {
        require_elements("hidden (layer widths)", elements(net, with_tangents), sizeof(T),
                         "for one thread's activation buffers");
        const int L = net.n_layers();
        z_.resize(L);
        a_.resize(L);
        xh_.resize(L);
        xt_.resize(L);
        ht_.resize(L);
        s_.resize(L);
        mt_.resize(L);
        wt_.resize(L);
        vt_.resize(L);
        if (with_tangents) u_.assign(net.max_width(), T(0));
        grow(kBlock);
    }

    const T* outputs() const {
        return forward_only_ ? z_[(net_.n_layers() - 1) & 1].data() : z_.back().data();
    }
    // Bytes the pass's buffers hold (they grow to the largest block it has run).
    std::int64_t held_bytes() const {
        using metacore::held_bytes;
        return held_bytes(z_) + held_bytes(a_) + held_bytes(zt_) + held_bytes(at_) +
               held_bytes(wt_) + held_bytes(vt_) + held_bytes(xh_) + held_bytes(xt_) +
               held_bytes(ht_) + held_bytes(s_) + held_bytes(mt_) + held_bytes(gm_) +
               held_bytes(delta_) + held_bytes(delta_prev_) + held_bytes(dt_) +
               held_bytes(dt_prev_) + held_bytes(u_);
    }
    const NetSpec& net() const { return net_; }

    // Rows one forward pass must take at once out of a run of n rows that share statistics: all
    // of them under batch normalisation (at least one), else any block of kBlock.
    std::int64_t block_rows(std::int64_t n) const {
        return net_.rows_coupled() ? std::max<std::int64_t>(n, 1) : kBlock;
    }

    // Rows of one pass over an episode of n rows whose embeddings are all needed before the
    // backward pass (ProtoNet, ridge head): every row at once when they share statistics or are
    // at most kEpisodeRows, so that the backward pass finds the forward pass's activations still
    // there; else kBlock, and the blocks' forward passes are run again. Either way each gradient
    // entry is the same sum in the same row order (the blocked products add row after row).
    static constexpr std::int64_t kEpisodeRows = 1024;
    std::int64_t episode_rows(std::int64_t n) const {
        return net_.rows_coupled() || n <= kEpisodeRows ? std::max<std::int64_t>(n, 1) : kBlock;
    }

    // Keeps transposed copies of θ's (and v's) weights so that the forward passes over the next
    // blocks at this θ (and v) run the register-blocked kernels; the copy pays for itself after a
    // few rows. The caller must call release() before θ's memory changes.
    // With same_theta the caller promises θ has not changed since the last prepare(θ) on this
    // pass (while forget() was not called), so its transposes are reused.
    void prepare(const T* theta, const T* v = nullptr, bool same_theta = false) {
        const bool keep_w = same_theta && theta == transposed_;
        // Nothing counts as prepared until every transpose below is done: an allocation that
        // fails part-way must not leave transposes of two θs looking like one.
        prepared_ = prepared_v_ = nullptr;
        if (!keep_w) transposed_ = nullptr;
        for (int l = 0; l < net_.n_layers(); ++l) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            if (!blocked_width<T>(out)) continue;
            wt_[l].resize(in * out);
            if (!keep_w) transpose(theta + net_.weight_offset(l, 0), out, in, wt_[l].data());
            if (v) {
                vt_[l].resize(in * out);
                transpose(v + net_.weight_offset(l, 0), out, in, vt_[l].data());
            }
        }
        prepared_ = transposed_ = theta;
        prepared_v_ = v;
    }
    void release() { prepared_ = prepared_v_ = nullptr; }
    void forget() { transposed_ = nullptr; }

    // z_l = in · W_lᵀ + b_l, a_{l+1} = σ(z_l) for hidden layers; rows of X have stride fan_in(0).
    // The first layer also prefetches `next_rows` rows at `next` (the next block), a row per row
    // it reads, so the memory system works ahead without a burst of requests.
    METACORE_INLINE void forward(const T* theta, const T* X, std::int64_t b, std::int64_t head,
                                 const T* next = nullptr, std::int64_t next_rows = 0) {
        if (b > rows_) grow(b);
        const int L = net_.n_layers();
        for (int l = 0; l < L; ++l) {
            const std::int64_t in = net_.fan_in(l), out = net_.fan_out(l);
            const T* W = theta + net_.weight_offset(l, head);
            const T* bias = theta + net_.bias_offset(l, head);
            const T* A = l == 0 ? X : input_of(l);
            T* Z = z_of(l);
            if (theta == prepared_ && head == 0 && blocked_width<T>(out))
                rows_times_t<T>(A, wt_[l].data(), nullptr, nullptr, bias, b, in, out, Z);
            else
                affine(A, W, bias, b, in, out, Z, l == 0 ? next : nullptr, next_rows);
            if (l + 1 < L && net_.normalised(l)) {
                normalise(l, theta, b);  // a_{l+1} = γ x̂ + β, activated in place
                activate(input_of(l + 1), input_of(l + 1), b * out);
            } else if (l + 1 < L) {
                activate(Z, input_of(l + 1), b * out);
            }
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
                if (net_.normalised(l - 1)) norm_backward(l - 1, theta, b, delta_prev_.data(), grad);
                delta_.swap(delta_prev_);
            }
        }
    }

    // grad += ∂/∂θ of Σ_r dout_r · z_out,r for the block of the last forward pass, from given
    // output gradients dout (b × n_outputs) instead of a loss head's.
    METACORE_INLINE void backward_from(const T* theta, const T* X, std::int64_t b,
                                       std::int64_t head, const T* dout, T* grad) {
        std::copy(dout, dout + b * net_.n_outputs(), delta_.begin());
        backward(theta, X, b, head, grad);
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
            if (theta == prepared_ && v == prepared_v_ && head == 0 && blocked_width<T>(out))
                rows_times_t<T>(A, vt_[l].data(), l > 0 ? at_[l].data() : nullptr, wt_[l].data(),
                                vb, b, in, out, Zt);
            else
            for (std::int64_t r = 0; r < b; ++r)
                for (std::int64_t o = 0; o < out; ++o) {
                    T s = vb[o] + dot(A + r * in, V + o * in, in);
                    if (l > 0) s += dot(at_[l].data() + r * in, W + o * in, in);
                    Zt[r * out + o] = s;
                }
            if (l + 1 < L) {
                const T* Anext = a_[l + 1].data();
                T* At = at_[l + 1].data();
                const T* Ht = Zt;  // the activation's input tangent: ż, or ḣ when normalised
                if (net_.normalised(l)) {
                    norm_tangent(l, theta, v, b);
                    Ht = ht_[l].data();
                }
                for (std::int64_t i = 0; i < b * out; ++i) At[i] = derivative(Anext[i]) * Ht[i];
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
            // (Hv)_W += δ̇ᵀ a + δᵀ ȧ, (Hv)_b += Σ_r δ̇ (the second product's bias sum is dropped);
            // both products in one pass over hW where the widths allow (same sums, same order)
            if (l == 0) {
                outer_accumulate(dt_.data(), A, b, in, out, hW, hb);
                break;
            }
            if (!outer_product_accumulate(dt_.data(), A, b, in, out, hW, hb, delta_.data(),
                                          at_[l].data())) {
                outer_accumulate(dt_.data(), A, b, in, out, hW, hb);
                outer_accumulate(delta_.data(), at_[l].data(), b, in, out, hW, u_.data());
            }
            const T* W = theta + net_.weight_offset(l, head);
            const T* V = v + net_.weight_offset(l, head);
            const T* Ain = a_[l].data();
            const T* Zt = net_.normalised(l - 1) ? ht_[l - 1].data() : zt_[l - 1].data();
            // u = δ W, u̇ = δ̇ W + δ V; δ_prev = u⊙σ', δ̇_prev = u̇⊙σ' + u⊙σ''⊙ż
            back_through(W, b, in, out, delta_.data(), delta_prev_.data());
            back_through(W, b, in, out, dt_.data(), dt_prev_.data(), false, V, delta_.data());
            for (std::int64_t i = 0; i < b * in; ++i) {
                const T a = Ain[i], u = delta_prev_[i];
                dt_prev_[i] = dt_prev_[i] * derivative(a) + u * second_derivative(a) * Zt[i];
                delta_prev_[i] = u * derivative(a);
            }
            if (net_.normalised(l - 1))
                norm_backward_tangent(l - 1, theta, v, b, delta_prev_.data(), dt_prev_.data(), hv);
            delta_.swap(delta_prev_);
            dt_.swap(dt_prev_);
        }
    }

   private:
    // Per-row buffers for b rows (b > the current capacity), memory checked first.
    void grow(std::int64_t b) {
        const int L = net_.n_layers();
        const char* what = "rows of one forward pass";
        // Elements per row, rounded up (s and the group-mean scratch are doubles): training
        // passes 4 widths (δ, δ', scratch) and 5 per unit (z, a, x̂, s); forward_only 6 widths
        // (two layers' z, scratch) and 2 per unit (s).
        std::int64_t width = checked_mul(forward_only_ ? 6 : 4, net_.max_width(), what);
        const std::int64_t per_unit = forward_only_ ? 2 : 5;
        for (int l = 0; l < L; ++l)
            width = checked_add(width, checked_mul(per_unit, net_.fan_out(l), what), what);
        require_elements(what, checked_mul(checked_mul(b, width, what), tangents_ ? 2 : 1, what),
                         sizeof(T), "for the activations of a forward pass over all its rows");
        for (int l = 0; l < L; ++l) {
            const std::int64_t out = net_.fan_out(l);
            if (forward_only_) {
                // Two buffers in turn: layer l writes z_[l % 2] and reads layer l − 1's, which
                // its activation (and normalisation) overwrote in place.
                if (l < 2) z_[l].assign(b * net_.max_width(), T(0));
            } else {
                z_[l].assign(b * out, T(0));
                if (l > 0) a_[l].assign(b * net_.fan_in(l), T(0));
            }
            if (net_.normalised(l)) {
                if (!forward_only_) xh_[l].assign(b * out, T(0));
                s_[l].assign(std::max(b, out), 0.0);
                if (tangents_) {
                    xt_[l].assign(b * out, T(0));
                    ht_[l].assign(b * out, T(0));
                    mt_[l].assign(std::max(b, out), 0.0);
                }
            }
        }
        if (!forward_only_) {
            delta_.assign(b * net_.max_width(), T(0));
            delta_prev_.assign(b * net_.max_width(), T(0));
        }
        gm_.assign(4 * std::max(b, net_.max_width()), 0.0);
        if (tangents_) {
            zt_ = z_;
            at_ = a_;
            dt_ = delta_;
            dt_prev_ = delta_;
        }
        // Only now: an allocation that fails above leaves every buffer at least the old size,
        // and the pass (which callers keep between calls) still sized for its old rows.
        rows_ = b;
    }

    // out[g] = the mean of f(r, j) over normalisation group g of a b × m block: per unit j over
    // the rows (batch), per row r over the units (layer). Summed in double, in a fixed order.
    template <class F>
    METACORE_INLINE void group_means(std::int64_t b, std::int64_t m, F&& f, double* out) const {
        if (net_.norm() == Norm::batch) {
            for (std::int64_t j = 0; j < m; ++j) out[j] = 0.0;
            for (std::int64_t r = 0; r < b; ++r)
                for (std::int64_t j = 0; j < m; ++j) out[j] += f(r, j);
            for (std::int64_t j = 0; j < m; ++j) out[j] /= static_cast<double>(b);
        } else {
            for (std::int64_t r = 0; r < b; ++r) {
                double sum = 0.0;
                for (std::int64_t j = 0; j < m; ++j) sum += f(r, j);
                out[r] = sum / static_cast<double>(m);
            }
        }
    }
    METACORE_INLINE std::int64_t group(std::int64_t r, std::int64_t j) const {
        return net_.norm() == Norm::batch ? j : r;
    }
    METACORE_INLINE std::int64_t n_groups(std::int64_t b, std::int64_t m) const {
        return net_.norm() == Norm::batch ? m : b;
    }

    // Layer l's pre-activations, and its input a_l (l ≥ 1).
    METACORE_INLINE T* z_of(int l) { return forward_only_ ? z_[l & 1].data() : z_[l].data(); }
    METACORE_INLINE T* input_of(int l) {
        return forward_only_ ? z_[(l - 1) & 1].data() : a_[l].data();
    }

    // x̂ (kept for the backward pass unless forward_only) and s of layer l from z_l;
    // a_{l+1} = γ x̂ + β (not yet activated).
    void normalise(int l, const T* theta, std::int64_t b) {
        if (forward_only_)
            normalise_into<false>(l, theta, b);
        else
            normalise_into<true>(l, theta, b);
    }
    template <bool keep_xh>
    void normalise_into(int l, const T* theta, std::int64_t b) {
        const std::int64_t m = net_.fan_out(l);
        const T* Z = z_of(l);
        T* Xh = keep_xh ? xh_[l].data() : nullptr;
        double* s = s_[l].data();
        double* mu = gm_.data();
        group_means(b, m, [&](std::int64_t r, std::int64_t j) { return static_cast<double>(Z[r * m + j]); }, mu);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) {
            const double c = Z[r * m + j] - mu[group(r, j)];
            return c * c;
        }, s);
        for (std::int64_t g = 0; g < n_groups(b, m); ++g) s[g] = 1.0 / std::sqrt(s[g] + kNormEps);
        const T* gamma = theta + net_.gamma_offset(l);
        const T* beta = theta + net_.beta_offset(l);
        T* H = input_of(l + 1);  // Z itself when forward_only: each element read before written
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t j = 0; j < m; ++j) {
                const std::int64_t g = group(r, j), i = r * m + j;
                const T xh = static_cast<T>((Z[i] - mu[g]) * s[g]);
                if constexpr (keep_xh) Xh[i] = xh;
                H[i] = gamma[j] * xh + beta[j];
            }
    }

    // D: g = ∂L/∂h of layer l in, ∂L/∂z out; grad's γ, β of layer l += Σ g x̂, Σ g.
    void norm_backward(int l, const T* theta, std::int64_t b, T* D, T* grad) {
        const std::int64_t m = net_.fan_out(l);
        const T* Xh = xh_[l].data();
        const double* s = s_[l].data();
        const T* gamma = theta + net_.gamma_offset(l);
        T* g_gamma = grad + net_.gamma_offset(l);
        T* g_beta = grad + net_.beta_offset(l);
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t j = 0; j < m; ++j) {
                const std::int64_t i = r * m + j;
                g_gamma[j] += D[i] * Xh[i];
                g_beta[j] += D[i];
                D[i] *= gamma[j];  // now γ g
            }
        double* mg = gm_.data();
        double* mgx = mg + std::max(b, m);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) { return static_cast<double>(D[r * m + j]); }, mg);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) {
            return static_cast<double>(D[r * m + j]) * Xh[r * m + j];
        }, mgx);
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t j = 0; j < m; ++j) {
                const std::int64_t g = group(r, j), i = r * m + j;
                D[i] = static_cast<T>(s[g] * (D[i] - mg[g] - Xh[i] * mgx[g]));
            }
    }

    // After forward_tangent's ż_l: x̂', ḣ and mean(x̂ ż) of layer l.
    void norm_tangent(int l, const T* theta, const T* v, std::int64_t b) {
        const std::int64_t m = net_.fan_out(l);
        const T* Zt = zt_[l].data();
        const T* Xh = xh_[l].data();
        const double* s = s_[l].data();
        double* mz = gm_.data();
        double* mt = mt_[l].data();
        group_means(b, m, [&](std::int64_t r, std::int64_t j) { return static_cast<double>(Zt[r * m + j]); }, mz);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) {
            return static_cast<double>(Xh[r * m + j]) * Zt[r * m + j];
        }, mt);
        const T* gamma = theta + net_.gamma_offset(l);
        const T* gdot = v + net_.gamma_offset(l);
        const T* bdot = v + net_.beta_offset(l);
        T* Xt = xt_[l].data();
        T* Ht = ht_[l].data();
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t j = 0; j < m; ++j) {
                const std::int64_t g = group(r, j), i = r * m + j;
                Xt[i] = static_cast<T>(s[g] * (Zt[i] - mz[g] - Xh[i] * mt[g]));
                Ht[i] = gdot[j] * Xh[i] + gamma[j] * Xt[i] + bdot[j];
            }
    }

    // The tangent of norm_backward: D = g, Dt = ġ of layer l in; ∂z and (∂z)' out; hv's γ, β
    // of layer l += Σ ġ x̂ + g x̂', Σ ġ.
    void norm_backward_tangent(int l, const T* theta, const T* v, std::int64_t b, T* D, T* Dt,
                               T* hv) {
        const std::int64_t m = net_.fan_out(l);
        const T* Xh = xh_[l].data();
        const T* Xt = xt_[l].data();
        const double* s = s_[l].data();
        const double* mt = mt_[l].data();
        const T* gamma = theta + net_.gamma_offset(l);
        const T* gdot = v + net_.gamma_offset(l);
        T* h_gamma = hv + net_.gamma_offset(l);
        T* h_beta = hv + net_.beta_offset(l);
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t j = 0; j < m; ++j) {
                const std::int64_t i = r * m + j;
                h_gamma[j] += Dt[i] * Xh[i] + D[i] * Xt[i];
                h_beta[j] += Dt[i];
                Dt[i] = gdot[j] * D[i] + gamma[j] * Dt[i];  // ġx
                D[i] *= gamma[j];                           // gx
            }
        const std::int64_t G = std::max(b, m);
        double* mg = gm_.data();
        double* mgx = mg + G;
        double* mdot = mgx + G;
        double* mx = mdot + G;
        group_means(b, m, [&](std::int64_t r, std::int64_t j) { return static_cast<double>(D[r * m + j]); }, mg);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) {
            return static_cast<double>(D[r * m + j]) * Xh[r * m + j];
        }, mgx);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) { return static_cast<double>(Dt[r * m + j]); }, mdot);
        group_means(b, m, [&](std::int64_t r, std::int64_t j) {
            const std::int64_t i = r * m + j;
            return static_cast<double>(Xt[i]) * D[i] + static_cast<double>(Xh[i]) * Dt[i];
        }, mx);
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t j = 0; j < m; ++j) {
                const std::int64_t g = group(r, j), i = r * m + j;
                const double p = D[i] - mg[g] - Xh[i] * mgx[g];
                const double sdot = -s[g] * s[g] * mt[g];
                Dt[i] = static_cast<T>(sdot * p +
                                       s[g] * (Dt[i] - mdot[g] - Xt[i] * mgx[g] - Xh[i] * mx[g]));
                D[i] = static_cast<T>(s[g] * p);
            }
    }

    // The logistic head over a whole block in one vectorised loop (logistic_row). One output
    // and one label column, so Z, y and δ are contiguous.
    METACORE_INLINE static double logistic_block(const T* __restrict Z, const T* __restrict y,
                                                 std::int64_t b, T scale, T* __restrict D) {
        double sum = 0.0;
        const double c = static_cast<double>(scale);
#pragma omp simd reduction(+ : sum)
        for (std::int64_t r = 0; r < b; ++r) {
            double dz;
            sum += logistic_row(Z[r], y[r], &dz);
            D[r] = static_cast<T>(c * dz);
        }
        return sum;
    }

    // The cross-entropy head row by row (softmax_row).
    METACORE_INLINE static double softmax_block(const T* Z, const T* y, std::int64_t b,
                                                std::int64_t k, T scale, T* D) {
        double loss = 0.0;
        for (std::int64_t r = 0; r < b; ++r) loss += softmax_row(Z + r * k, y[r], k, scale, D + r * k);
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

    // gW_o += Σ_r D[r, o] · A_r and gb_o += Σ_r D[r, o], four rows at a time.
    METACORE_INLINE static void outer_accumulate(const T* D, const T* A, std::int64_t b,
                                                 std::int64_t in, std::int64_t out, T* gW,
                                                 T* gb) {
        // gW += Dᵀ A as a register-blocked product (small_gemm.hpp) when the widths allow
        if (outer_product_accumulate(D, A, b, in, out, gW, gb)) return;
        for (std::int64_t o = 0; o < out; ++o) {
            T* g = gW + o * in;
            std::int64_t r = 0;
            for (; r + 4 <= b; r += 4) {
                const T c[4] = {D[r * out + o], D[(r + 1) * out + o], D[(r + 2) * out + o],
                                D[(r + 3) * out + o]};
                if (c[0] == T(0) && c[1] == T(0) && c[2] == T(0) && c[3] == T(0))
                    continue;  // dead relu units: nothing to add
                const T* a = A + r * in;
                axpy4(c, a, a + in, a + 2 * in, a + 3 * in, g, in);
                gb[o] += (c[0] + c[1]) + (c[2] + c[3]);
            }
            for (; r < b; ++r) {
                axpy(D[r * out + o], A + r * in, g, in);
                gb[o] += D[r * out + o];
            }
        }
    }

    // D_prev[r] = Σ_o D[r, o] · W_o  (Wᵀδ for each row), four outputs at a time; with W2, D2
    // also + Σ_o D2[r, o] · W2_o after it (one pass of the blocked product: the same sums in the
    // same order as a second, accumulating call).
    METACORE_INLINE static void back_through(const T* W, std::int64_t b, std::int64_t in,
                                             std::int64_t out, const T* D, T* D_prev,
                                             bool accumulate = false, const T* W2 = nullptr,
                                             const T* D2 = nullptr) {
        if (blocked_width<T>(in)) {  // D_prev (+)= D W [+ D2 W2] as a register-blocked product
            const Operands<T> ops[2] = {{D, out, 1, W}, {D2, out, 1, W2}};
            small_gemm(ops, W2 ? 2 : 1, b, out, static_cast<const T*>(nullptr), accumulate, in,
                       D_prev);
            return;
        }
        if (W2) {
            back_through(W, b, in, out, D, D_prev, accumulate);
            back_through(W2, b, in, out, D2, D_prev, true);
            return;
        }
        for (std::int64_t r = 0; r < b; ++r) {
            T* dp = D_prev + r * in;
            const T* d = D + r * out;
            if (!accumulate)
                for (std::int64_t i = 0; i < in; ++i) dp[i] = T(0);
            std::int64_t o = 0;
            for (; o + 4 <= out; o += 4) {
                const T* w = W + o * in;
                axpy4(d + o, w, w + in, w + 2 * in, w + 3 * in, dp, in);
            }
            for (; o < out; ++o) axpy(d[o], W + o * in, dp, in);
        }
    }

    const NetSpec& net_;
    bool tangents_ = false;
    bool forward_only_ = false;  // no backward buffers: forward() only (prediction)
    std::int64_t rows_ = 0;  // rows the per-row buffers hold
    std::vector<std::vector<T>> z_, a_, zt_, at_, wt_, vt_;
    std::vector<std::vector<T>> xh_, xt_, ht_;   // x̂, x̂', ḣ of normalised layers
    std::vector<std::vector<double>> s_, mt_;    // s and mean(x̂ ż) per group
    std::vector<double> gm_;                     // group means scratch (4 × groups)
    const T* prepared_ = nullptr;
    const T* prepared_v_ = nullptr;
    const T* transposed_ = nullptr;  // whose weights wt_ holds
    std::vector<T> delta_, delta_prev_, dt_, dt_prev_, u_;
};

}  // namespace metacore
