// The closed-form ridge head of R2D2 (Bertinetto et al. 2019, "Meta-learning with differentiable
// closed-form solvers", eq. 3–5): the net embeds an episode's rows; with X_s = [E_s, 1] (n_s ×
// (D+1), a bias column), one-hot support labels Y (n_s × N) and regulariser λ > 0, the ridge
// weights in the Woodbury form are W = X_sᵀ A, A = (X_s X_sᵀ + λI)⁻¹ Y — an n_s × n_s solve, by
// Cholesky in double. Query logits Z = s · X_q W = s · Q A with Q = X_q X_sᵀ; the episode loss is
// the mean over the query rows of −log softmax(Z_q)[y_q]. Exact gradient (K = X_s X_sᵀ + λI,
// G = ∂L/∂Z):
//   ∂s = ⟨G, QA⟩,  ∂Q = s G Aᵀ,  ∂A = s Qᵀ G,  B = K⁻¹ ∂A,  ∂K = −B Aᵀ,  ∂λ = tr ∂K,
//   ∂E_q = ∂Q E_s,  ∂E_s = ∂Qᵀ E_q + (∂K + ∂Kᵀ) E_s,
// then back through the net from ∂E (NetPass::backward_from). The meta-parameters are θ, then
// log λ and s (log λ keeps λ positive: ∂/∂log λ = λ ∂λ).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "metacore/interrupt.hpp"
#include "metacore/linalg.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/prototypes.hpp"
#include "metacore/sizes.hpp"
#include "metacore/tasks.hpp"

namespace metacore {

// Scratch of one episode, kept per thread and grown on demand (all n_s², n_q·n_s or n·D sized).
template <class T>
struct RidgeScratch {
    std::vector<T> emb, d_emb;
    std::vector<double> K, A, Q, M, G, dQ, dA;
};

// Elements of an episode's scratch (n_s support rows, n_q query rows, D outputs, N classes),
// checked against overflow, naming `what`.
inline std::int64_t ridge_elements(std::int64_t ns, std::int64_t nq, std::int64_t D,
                                   std::int64_t N, const char* what) {
    const std::int64_t n = checked_add(ns, nq, what);
    std::int64_t e = checked_mul(2, checked_mul(n, D, what), what);
    e = checked_add(e, checked_mul(ns, ns, what), what);
    e = checked_add(e, checked_mul(2, checked_mul(nq, ns, what), what), what);
    e = checked_add(e, checked_mul(4, checked_mul(n, N, what), what), what);
    return e;
}

// The ridge head on double embeddings. Es (ns × D) with class labels ys (stride ystride, classes
// 0..N−1), Eq (nq × D) with labels yq. Returns the mean query loss (NaN when K is not
// numerically positive definite). *support_loss (when not null) = the mean loss of the support
// rows' own fit, Z_s = s (Y − λA). When dEs is not null: dEs (ns × D), dEq (nq × D), *d_reg =
// ∂/∂λ and *d_scale = ∂/∂s of `weight` times the mean query loss.
template <class T, class E>
double ridge_episode(RidgeScratch<T>& s, const E* Es, std::int64_t ns, const E* Eq,
                     std::int64_t nq, std::int64_t D, const T* ys, const T* yq,
                     std::int64_t ystride, std::int64_t N, double lam, double scale,
                     double weight, double* support_loss, E* dEs, E* dEq, double* d_reg,
                     double* d_scale) {
    s.K.assign(ns * ns, 0.0);
    for (std::int64_t i = 0; i < ns; ++i) {
        check_interrupt();  // each O(n_s·D) row: Ctrl-C stays prompt on large episodes
        for (std::int64_t j = 0; j <= i; ++j) {
            double v = 1.0;  // the bias column
            for (std::int64_t d = 0; d < D; ++d)
                v += static_cast<double>(Es[i * D + d]) * static_cast<double>(Es[j * D + d]);
            s.K[i * ns + j] = s.K[j * ns + i] = v;
        }
    }
    for (std::int64_t i = 0; i < ns; ++i) s.K[i * ns + i] += lam;
    if (!linalg::cholesky(s.K.data(), ns)) return std::numeric_limits<double>::quiet_NaN();
    s.A.assign(ns * N, 0.0);
    for (std::int64_t i = 0; i < ns; ++i) s.A[i * N + static_cast<std::int64_t>(ys[i * ystride])] = 1.0;
    linalg::cholesky_solve(s.K.data(), ns, s.A.data(), N);
    const double* A = s.A.data();
    if (support_loss) {  // Z_s = s · X_s W = s (K − λI) A = s (Y − λA)
        double total = 0.0;
        std::vector<double>& z = s.M;
        z.resize(N);
        for (std::int64_t i = 0; i < ns; ++i) {
            const auto label = static_cast<std::int64_t>(ys[i * ystride]);
            for (std::int64_t k = 0; k < N; ++k)
                z[k] = scale * ((k == label ? 1.0 : 0.0) - lam * A[i * N + k]);
            total += softmax_nll(z[label], softmax_row_sum(z.data(), N));
        }
        *support_loss = total / static_cast<double>(ns);
    }
    s.Q.resize(nq * ns);
    for (std::int64_t q = 0; q < nq; ++q) {
        check_interrupt();
        for (std::int64_t i = 0; i < ns; ++i) {
            double v = 1.0;
            for (std::int64_t d = 0; d < D; ++d)
                v += static_cast<double>(Eq[q * D + d]) * static_cast<double>(Es[i * D + d]);
            s.Q[q * ns + i] = v;
        }
    }
    s.M.assign(nq * N, 0.0);  // M = Q A, Z = s M
    for (std::int64_t q = 0; q < nq; ++q)
        for (std::int64_t i = 0; i < ns; ++i) {
            const double qi = s.Q[q * ns + i];
            for (std::int64_t k = 0; k < N; ++k) s.M[q * N + k] += qi * A[i * N + k];
        }
    s.G.resize(nq * N);
    double loss = 0.0;
    for (std::int64_t q = 0; q < nq; ++q) {
        const double* m = s.M.data() + q * N;
        const auto label = static_cast<std::int64_t>(yq[q * ystride]);
        // The logits z = s·M stored once: recomputed inside exp(z − max), a contracted
        // multiply-add would not cancel the largest term exactly, and at large s every term
        // would underflow (log 0).
        double* z = s.G.data() + q * N;
        for (std::int64_t k = 0; k < N; ++k) z[k] = scale * m[k];
        const SoftmaxRow row = softmax_row_sum(z, N);
        loss += softmax_nll(z[label], row);
        for (std::int64_t k = 0; k < N; ++k)
            z[k] = weight * (softmax_p(z[k], row) - (k == label ? 1.0 : 0.0)) /
                   static_cast<double>(nq);
    }
    loss /= static_cast<double>(nq);
    if (!dEs) return loss;
    double ds = 0.0;
    for (std::int64_t e = 0; e < nq * N; ++e) ds += s.G[e] * s.M[e];
    *d_scale = ds;
    // ∂Q = s G Aᵀ (nq × ns); ∂A = s Qᵀ G (ns × N)
    s.dQ.assign(nq * ns, 0.0);
    s.dA.assign(ns * N, 0.0);
    for (std::int64_t q = 0; q < nq; ++q)
        for (std::int64_t i = 0; i < ns; ++i) {
            double v = 0.0;
            for (std::int64_t k = 0; k < N; ++k) v += s.G[q * N + k] * A[i * N + k];
            s.dQ[q * ns + i] = scale * v;
            const double qi = scale * s.Q[q * ns + i];
            for (std::int64_t k = 0; k < N; ++k) s.dA[i * N + k] += qi * s.G[q * N + k];
        }
    linalg::cholesky_solve(s.K.data(), ns, s.dA.data(), N);  // B = K⁻¹ ∂A, in place
    const double* B = s.dA.data();
    double dl = 0.0;
    for (std::int64_t e = 0; e < ns * N; ++e) dl -= B[e] * A[e];
    *d_reg = dl;
    // ∂E_q = ∂Q E_s first; then Q's buffer holds (∂K + ∂Kᵀ)_ij = −Σ_k (B_ik A_jk + A_ik B_jk).
    std::vector<double>& acc = s.M;  // M is no longer needed: a row accumulator in double
    acc.resize(D);
    for (std::int64_t q = 0; q < nq; ++q) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::int64_t i = 0; i < ns; ++i) {
            const double c = s.dQ[q * ns + i];
            for (std::int64_t d = 0; d < D; ++d) acc[d] += c * static_cast<double>(Es[i * D + d]);
        }
        for (std::int64_t d = 0; d < D; ++d) dEq[q * D + d] = static_cast<E>(acc[d]);
    }
    std::vector<double>& S = s.Q;
    S.resize(ns * ns);
    for (std::int64_t i = 0; i < ns; ++i) {
        check_interrupt();
        for (std::int64_t j = 0; j <= i; ++j) {
            double v = 0.0;
            for (std::int64_t k = 0; k < N; ++k)
                v -= B[i * N + k] * A[j * N + k] + A[i * N + k] * B[j * N + k];
            S[i * ns + j] = S[j * ns + i] = v;
        }
    }
    for (std::int64_t i = 0; i < ns; ++i) {
        check_interrupt();
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::int64_t q = 0; q < nq; ++q) {
            const double c = s.dQ[q * ns + i];
            for (std::int64_t d = 0; d < D; ++d) acc[d] += c * static_cast<double>(Eq[q * D + d]);
        }
        for (std::int64_t j = 0; j < ns; ++j) {
            const double c = S[i * ns + j];
            for (std::int64_t d = 0; d < D; ++d) acc[d] += c * static_cast<double>(Es[j * D + d]);
        }
        for (std::int64_t d = 0; d < D; ++d) dEs[i * D + d] = static_cast<E>(acc[d]);
    }
    return loss;
}

// The episode `task` of data (support rows first): its mean query loss under the ridge head;
// out (P + 2) += scale · its gradient with respect to [θ, log λ, s] (when out is not null);
// *support_loss = the support rows' own fit loss. params = [θ (P), log λ, s]. Labels must have
// passed episode_classes.
template <class T>
METACORE_INLINE double ridge_task_grad_body(NetPass<T>& pass, RidgeScratch<T>& s,
                                            const NetSpec& net, const T* params,
                                            const TaskData<T>& data, std::int64_t task, T scale,
                                            T* out, double* support_loss) {
    const std::int64_t P = net.n_params();
    const std::int64_t s0 = data.offsets[task], s1 = s0 + data.n_support[task];
    const std::int64_t q1 = data.offsets[task + 1];
    const std::int64_t B = pass.episode_rows(q1 - s0);
    const std::int64_t n = q1 - s0, ns = s1 - s0, nq = q1 - s1, D = net.n_outputs();
    const std::int64_t ys = data.y.cols;
    const T* y = data.y.data + s0 * ys;
    std::int64_t N = 0;
    for (std::int64_t r = 0; r < ns; ++r)
        N = std::max(N, static_cast<std::int64_t>(y[r * ys]) + 1);
    const double lam = std::exp(static_cast<double>(params[P]));
    const double sc = static_cast<double>(params[P + 1]);
    s.emb.resize(n * D);
    s.d_emb.resize(n * D);
    pass.prepare(params, nullptr, true);
    for (std::int64_t r = 0; r < n; r += B) {
        const std::int64_t b = std::min(B, n - r);
        pass.forward(params, data.X.row(s0 + r), b, 0);
        std::copy(pass.outputs(), pass.outputs() + b * D, s.emb.data() + r * D);
    }
    check_interrupt();
    double d_reg = 0.0, d_scale = 0.0;
    const double loss = ridge_episode<T, T>(
        s, s.emb.data(), ns, s.emb.data() + ns * D, nq, D, y, y + ns * ys, ys, N, lam, sc,
        static_cast<double>(scale), support_loss, out ? s.d_emb.data() : nullptr,
        s.d_emb.data() + ns * D, &d_reg, &d_scale);
    if (out && std::isfinite(loss)) {
        out[P] += static_cast<T>(d_reg * lam);
        out[P + 1] += static_cast<T>(d_scale);
        for (std::int64_t r = 0; r < n; r += B) {
            const std::int64_t b = std::min(B, n - r);
            if (b < n) pass.forward(params, data.X.row(s0 + r), b, 0);  // this block's are gone
            pass.backward_from(params, data.X.row(s0 + r), b, 0, s.d_emb.data() + r * D, out);
        }
    }
    pass.release();
    return loss;
}

METACORE_KERNEL(double, ridge_task_grad,
                (NetPass<T>& pass, RidgeScratch<T>& s, const NetSpec& net, const T* params, const TaskData<T>& data, std::int64_t task, T scale, T* out, double* support_loss),
                (pass, s, net, params, data, task, scale, out, support_loss))

// The adapted head of one episode: W ((D+1) × N) = X_sᵀ (X_s X_sᵀ + λI)⁻¹ Y from embeddings Es
// (ns × D) with class labels y (classes 0..N−1); the last row of W is the bias. False (W
// untouched) when the matrix is not numerically positive definite.
template <class T>
bool ridge_weights(const T* Es, std::int64_t ns, std::int64_t D, const T* y, std::int64_t N,
                   double lam, T* W) {
    std::vector<double> K(ns * ns), A(ns * N, 0.0);
    for (std::int64_t i = 0; i < ns; ++i) {
        check_interrupt();
        for (std::int64_t j = 0; j <= i; ++j) {
            double v = 1.0;
            for (std::int64_t d = 0; d < D; ++d)
                v += static_cast<double>(Es[i * D + d]) * static_cast<double>(Es[j * D + d]);
            K[i * ns + j] = K[j * ns + i] = v + (i == j ? lam : 0.0);
        }
    }
    if (!linalg::cholesky(K.data(), ns)) return false;
    for (std::int64_t i = 0; i < ns; ++i) A[i * N + static_cast<std::int64_t>(y[i])] = 1.0;
    linalg::cholesky_solve(K.data(), ns, A.data(), N);
    for (std::int64_t d = 0; d <= D; ++d)
        for (std::int64_t k = 0; k < N; ++k) {
            double v = 0.0;
            for (std::int64_t i = 0; i < ns; ++i)
                v += (d < D ? static_cast<double>(Es[i * D + d]) : 1.0) * A[i * N + k];
            W[d * N + k] = static_cast<T>(v);
        }
    return true;
}

// out (n × N) = s · [E, 1] W: the logits of embedded rows E (n × D) under the head W.
template <class T>
void ridge_logits(const T* W, std::int64_t D, std::int64_t N, const T* E, std::int64_t n,
                  double scale, T* out) {
    for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t k = 0; k < N; ++k) {
            double v = static_cast<double>(W[D * N + k]);
            for (std::int64_t d = 0; d < D; ++d)
                v += static_cast<double>(E[r * D + d]) * static_cast<double>(W[d * N + k]);
            out[r * N + k] = static_cast<T>(scale * v);
        }
}

}  // namespace metacore
