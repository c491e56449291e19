// Prototypical networks (Snell et al., 2017): the net embeds every row of an episode; class k's
// prototype is the mean embedding of its support rows, c_k = (1/n_k) Σ_{y_s = k} e_s; a query
// row's logits are z_qk = −‖e_q − c_k‖²; the episode loss is the mean over the query rows of
// −log softmax(z_q)[y_q]. No inner loop. Its exact gradient: with g_qk = (softmax(z_q)_k −
// [k = y_q]) / n_q,
//   ∂L/∂e_q = −2 Σ_k g_qk (e_q − c_k),   ∂L/∂c_k = 2 Σ_q g_qk (e_q − c_k),
//   ∂L/∂e_s = ∂L/∂c_{y_s} / n_{y_s},
// then back through the net from ∂L/∂e (NetPass::backward_from). The net's loss head is unused.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/format.hpp"
#include "metacore/losses.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/tasks.hpp"
#include "metacore/simd.hpp"

namespace metacore {

// Scratch of one episode, kept per thread and grown on demand.
template <class T>
struct ProtoScratch {
    std::vector<T> emb, d_emb, protos, d_protos;
    std::vector<std::int64_t> counts;
    std::vector<double> z;
};

// The classes of an episode whose support rows have labels y[0..n_support) and query rows
// y[n_support..n_rows) (stride `stride`): N = 1 + the largest support label. Throws unless every
// label is an integer, every class 0..N−1 has a support row and every query label is below N.
template <class T>
std::int64_t episode_classes(const T* y, std::int64_t stride, std::int64_t n_support,
                             std::int64_t n_rows, const std::string& where,
                             const char* who = "ProtoNet") {
    std::vector<std::int64_t> seen(n_support, 0);
    std::int64_t N = 0;
    for (std::int64_t r = 0; r < n_rows; ++r) {
        const T v = y[r * stride];
        const std::int64_t top = r < n_support ? n_support : N;
        // Range first: converting NaN or a huge value to an integer is undefined behaviour.
        if (!(v >= T(0)) || !(v < static_cast<T>(top)) ||
            static_cast<T>(static_cast<std::int64_t>(v)) != v) {
            const std::string label = where + ": row " + std::to_string(r) + " has class label " +
                                      number_text(static_cast<double>(v)) + "; " + who;
            if (!(v >= T(0)) || std::floor(v) != v)
                throw std::invalid_argument(label + " needs integer class labels >= 0");
            // classes 0..N−1 each need a support row: n support rows hold at most n classes
            throw std::invalid_argument(
                r < n_support
                    ? label + " needs classes 0..N-1 with a support row each, and the " +
                          std::to_string(n_support) + " support rows can hold classes 0.." +
                          std::to_string(n_support - 1) + " at most"
                    : label + " needs query labels among the support rows' classes 0.." +
                          std::to_string(N - 1));
        }
        const auto c = static_cast<std::int64_t>(v);
        if (r < n_support) {
            seen[c] = 1;
            N = std::max(N, c + 1);
        }
        if (r + 1 == n_support)
            for (std::int64_t k = 0; k < N; ++k)
                if (!seen[k])
                    throw std::invalid_argument(where + ": class " + std::to_string(k) +
                                                " has no support row; " + who + " needs one per "
                                                "class 0.." + std::to_string(N - 1));
    }
    return N;
}

// protos (N × D) = mean of the rows of E (n × D) of each class; counts (N) = rows per class.
template <class T>
void class_means(const T* E, const T* y, std::int64_t stride, std::int64_t n, std::int64_t D,
                 std::int64_t N, T* protos, std::int64_t* counts) {
    std::fill(protos, protos + N * D, T(0));
    std::fill(counts, counts + N, std::int64_t{0});
    for (std::int64_t r = 0; r < n; ++r) {
        const std::int64_t c = static_cast<std::int64_t>(y[r * stride]);
        ++counts[c];
        axpy(T(1), E + r * D, protos + c * D, D);
    }
    for (std::int64_t c = 0; c < N; ++c) {
        const T inv = T(1) / static_cast<T>(std::max<std::int64_t>(counts[c], 1));
        for (std::int64_t j = 0; j < D; ++j) protos[c * D + j] *= inv;
    }
}

// z (N) = −‖e − c_k‖² for one row e, in double.
template <class T>
METACORE_INLINE void neg_sq_distances(const T* e, const T* protos, std::int64_t N,
                                      std::int64_t D, double* z) {
    for (std::int64_t k = 0; k < N; ++k) {
        const T* c = protos + k * D;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (std::int64_t j = 0; j < D; ++j) {
            const double d = static_cast<double>(e[j]) - static_cast<double>(c[j]);
            s += d * d;
        }
        z[k] = -s;
    }
}

// out (n × N) = the logits −‖e_r − c_k‖² of the rows of E (n × D).
template <class T>
void prototype_logits(const T* protos, std::int64_t N, std::int64_t D, const T* E, std::int64_t n,
                      T* out) {
    std::vector<double> z(N);
    for (std::int64_t r = 0; r < n; ++r) {
        neg_sq_distances(E + r * D, protos, N, D, z.data());
        for (std::int64_t k = 0; k < N; ++k) out[r * N + k] = static_cast<T>(z[k]);
    }
}

// Sum over the rows of E (n × D) with labels y of −log softmax(z_r)[y_r]. When dE is not null:
// dE (n × D) = ∂/∂E and d_protos (N × D) += ∂/∂c of `scale` times that sum.
template <class T>
double prototype_loss_grad(const T* protos, std::int64_t N, std::int64_t D, const T* E,
                           const T* y, std::int64_t stride, std::int64_t n, T scale,
                           std::vector<double>& z, T* dE, T* d_protos) {
    z.resize(N);
    double loss = 0.0;
    for (std::int64_t r = 0; r < n; ++r) {
        const T* e = E + r * D;
        neg_sq_distances(e, protos, N, D, z.data());
        const std::int64_t label = static_cast<std::int64_t>(y[r * stride]);
        const SoftmaxRow row = softmax_row_sum(z.data(), N);
        loss += softmax_nll(z[label], row);
        if (!dE) continue;
        T* de = dE + r * D;
        std::fill(de, de + D, T(0));
        for (std::int64_t k = 0; k < N; ++k) {
            const double p = softmax_p(z[k], row) - (k == label ? 1.0 : 0.0);
            const T g = static_cast<T>(2.0 * static_cast<double>(scale) * p);
            const T* c = protos + k * D;
            T* dc = d_protos + k * D;
            for (std::int64_t j = 0; j < D; ++j) {
                const T diff = e[j] - c[j];
                de[j] -= g * diff;
                dc[j] += g * diff;
            }
        }
    }
    return loss;
}

// The episode `task` of data (support rows first): its mean query loss; out (P) += scale · its
// gradient (when out is not null); *support_loss = the mean loss of its support rows against
// the same prototypes. Labels must have passed episode_classes. Cloned per instruction set like
// the other kernels, so the net passes inlined here run the wide vector code.
template <class T>
METACORE_INLINE double protonet_task_grad_body(NetPass<T>& pass, ProtoScratch<T>& s, const NetSpec& net,
                          const T* theta, const TaskData<T>& data, std::int64_t task, T scale,
                          T* out, double* support_loss) {
    const std::int64_t s0 = data.offsets[task], s1 = s0 + data.n_support[task];
    const std::int64_t q1 = data.offsets[task + 1];
    const std::int64_t B = pass.episode_rows(q1 - s0);
    const std::int64_t n = q1 - s0, ns = s1 - s0, nq = q1 - s1, D = net.n_outputs();
    const std::int64_t ys = data.y.cols;
    const T* y = data.y.data + s0 * ys;
    std::int64_t N = 0;
    for (std::int64_t r = 0; r < ns; ++r)
        N = std::max(N, static_cast<std::int64_t>(y[r * ys]) + 1);
    s.emb.resize(n * D);
    s.d_emb.resize(n * D);
    s.protos.resize(N * D);
    s.d_protos.assign(N * D, T(0));
    s.counts.resize(N);
    pass.prepare(theta, nullptr, true);
    for (std::int64_t r = 0; r < n; r += B) {
        const std::int64_t b = std::min(B, n - r);
        pass.forward(theta, data.X.row(s0 + r), b, 0);
        std::copy(pass.outputs(), pass.outputs() + b * D, s.emb.data() + r * D);
    }
    const T* Es = s.emb.data();
    const T* Eq = Es + ns * D;
    class_means(Es, y, ys, ns, D, N, s.protos.data(), s.counts.data());
    if (support_loss)
        *support_loss = prototype_loss_grad<T>(s.protos.data(), N, D, Es, y, ys, ns, T(1), s.z,
                                               nullptr, nullptr) / static_cast<double>(ns);
    const double loss =
        prototype_loss_grad(s.protos.data(), N, D, Eq, y + ns * ys, ys, nq,
                            scale / static_cast<T>(nq), s.z, s.d_emb.data() + ns * D,
                            s.d_protos.data());
    if (out) {
        for (std::int64_t r = 0; r < ns; ++r) {  // each support row's share of its prototype
            const std::int64_t c = static_cast<std::int64_t>(y[r * ys]);
            const T inv = T(1) / static_cast<T>(s.counts[c]);
            for (std::int64_t j = 0; j < D; ++j) s.d_emb[r * D + j] = s.d_protos[c * D + j] * inv;
        }
        for (std::int64_t r = 0; r < n; r += B) {
            const std::int64_t b = std::min(B, n - r);
            if (b < n) pass.forward(theta, data.X.row(s0 + r), b, 0);  // this block's are gone
            pass.backward_from(theta, data.X.row(s0 + r), b, 0, s.d_emb.data() + r * D, out);
        }
    }
    pass.release();
    return loss / static_cast<double>(nq);
}
METACORE_KERNEL(double, protonet_task_grad,
                (NetPass<T>& pass, ProtoScratch<T>& s, const NetSpec& net, const T* theta, const TaskData<T>& data, std::int64_t task, T scale, T* out, double* support_loss),
                (pass, s, net, theta, data, task, scale, out, support_loss))

}  // namespace metacore
