// Implicit MAML (Rajeswaran et al. 2019, "Meta-Learning with Implicit Gradients", eq. 3–7).
// The inner loop approximately solves the proximal problem
//   φ*(θ) = argmin_φ L_s(φ) + (λ/2)‖φ − θ‖²
// by k gradient steps from θ: φ_{j+1} = φ_j − α (∇L_s(φ_j) + λ (φ_j − θ)). At a stationary point
// dφ*/dθ = (I + H_s(φ*)/λ)⁻¹, so the meta-gradient of L_q(φ) is
//   g = (I + H_s(φ)/λ)⁻¹ ∇L_q(φ),
// solved by `cg_steps` steps of conjugate gradient from 0 on exact Hessian-vector products of the
// support loss at φ (forward-over-reverse through the net). Memory: a few vectors of P per task,
// independent of k — no trail of inner iterates. CG stops early on an exact solve (zero residual)
// or a non-positive curvature pᵀ(I + H/λ)p (the system is then not positive definite at φ).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "metacore/adapt.hpp"
#include "metacore/inner_loop.hpp"
#include "metacore/interrupt.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/tasks.hpp"
#include "metacore/threading.hpp"

namespace metacore {

struct ImamlRule {
    std::int64_t steps = 1;     // inner gradient steps k
    double lr = 0.01;           // inner rate α
    double reg = 1.0;           // proximal strength λ > 0
    std::int64_t cg_steps = 5;  // conjugate-gradient iterations
};

// Per-thread vectors of one task's meta-gradient (P each).
template <class T>
struct ImamlScratch {
    std::vector<T> phi, x, r, p, kept, dir;
};

// φ (P) = the proximal inner loop from θ on rows [begin, end); g, kept, dir (P each) scratch.
// Returns L_s(θ) (0 when rule.steps is 0). Each step must not increase the proximal objective
// F(φ) = L_s(φ) + (λ/2)‖φ − θ‖² (beyond rounding): a step that does, or whose loss is not finite,
// is undone and the rate halved for the rest of the loop. Gradient descent with a fixed rate α
// diverges once α > 2/(σ_max(H_s) + λ), and meta-training sharpens H_s until it does (the K = 20
// sinusoid); the implicit gradient assumes φ near the minimiser, which a monotone loop keeps.
// Every one of the k steps costs one gradient; one more loss checks the last step.
template <class T>
double imaml_inner(NetPass<T>& pass, const ImamlRule& rule, const T* theta,
                   const TaskData<T>& data, std::int64_t begin, std::int64_t end, std::int64_t P,
                   T* phi, T* g, T* kept, T* dir) {
    std::copy(theta, theta + P, phi);
    if (rule.steps == 0) return 0.0;
    const T reg = static_cast<T>(rule.reg);
    const double slack = 16.0 * static_cast<double>(std::numeric_limits<T>::epsilon());
    double rate = rule.lr, first = 0.0, f_kept = 0.0;
    for (std::int64_t j = 0;; ++j) {
        check_interrupt();
        const bool last = j == rule.steps;       // the check of the last step: no gradient
        const double loss = rows_value_grad(pass, phi, data, begin, end, P, last ? nullptr : g);
        double dist = 0.0;
        for (std::int64_t p = 0; p < P; ++p) {
            const double d = static_cast<double>(phi[p]) - static_cast<double>(theta[p]);
            dist += d * d;
        }
        const double f = loss + 0.5 * rule.reg * dist;
        if (j == 0) first = loss;
        if (j > 0 && !(f <= f_kept + slack * std::abs(f_kept))) {
            std::copy(kept, kept + P, phi);      // undo: back to the kept point, half the rate
            rate *= 0.5;
        } else if (!last) {
            f_kept = f;
            std::copy(phi, phi + P, kept);
#pragma omp simd
            for (std::int64_t p = 0; p < P; ++p) dir[p] = g[p] + reg * (phi[p] - theta[p]);
        }
        if (last) return first;
        const T a = static_cast<T>(rate);
#pragma omp simd
        for (std::int64_t p = 0; p < P; ++p) phi[p] = kept[p] - a * dir[p];
    }
}

template <class T>
double dot_double(const T* a, const T* b, std::int64_t n) {
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
    return s;
}

// x (P) = cg_steps of conjugate gradient from 0 on (I + H_s(φ)/λ) x = v, H_s the Hessian of the
// mean loss over rows [begin, end) at φ (the pass last prepared at φ). r, p, hv: scratch (P).
template <class T>
void imaml_cg(NetPass<T>& pass, const ImamlRule& rule, const T* phi, const TaskData<T>& data,
              std::int64_t begin, std::int64_t end, std::int64_t P, const T* v, T* x, T* r, T* p,
              T* hv) {
    std::fill(x, x + P, T(0));
    std::copy(v, v + P, r);
    std::copy(v, v + P, p);
    double rr = dot_double(r, r, P);
    const T inv_reg = static_cast<T>(1.0 / rule.reg);
    for (std::int64_t i = 0; i < rule.cg_steps && rr > 0.0; ++i) {
        check_interrupt();
        rows_hvp(pass, phi, p, data, begin, end, P, hv, true);
#pragma omp simd
        for (std::int64_t k = 0; k < P; ++k) hv[k] = p[k] + inv_reg * hv[k];  // (I + H/λ) p
        const double pAp = dot_double(p, hv, P);
        if (!(pAp > 0.0)) break;
        const T alpha = static_cast<T>(rr / pAp);
#pragma omp simd
        for (std::int64_t k = 0; k < P; ++k) {
            x[k] += alpha * p[k];
            r[k] -= alpha * hv[k];
        }
        const double rr_next = dot_double(r, r, P);
        const T beta = static_cast<T>(rr_next / rr);
#pragma omp simd
        for (std::int64_t k = 0; k < P; ++k) p[k] = r[k] + beta * p[k];
        rr = rr_next;
    }
}

// One task's query loss L_q(φ); out (P) += scale · (I + H_s(φ)/λ)⁻¹ ∇L_q(φ) by CG;
// *support_loss = L_s(θ). v, hv: scratch (P).
template <class T>
double imaml_task_grad(NetPass<T>& pass, ImamlScratch<T>& s, const NetSpec& net,
                       const ImamlRule& rule, const T* theta, const TaskData<T>& data,
                       std::int64_t task, T scale, T* out, double* support_loss, T* v, T* hv) {
    const std::int64_t P = net.n_params();
    const std::int64_t s0 = data.offsets[task], s1 = s0 + data.n_support[task];
    const std::int64_t q1 = data.offsets[task + 1];
    s.phi.resize(P);
    s.x.resize(P);
    s.r.resize(P);
    s.p.resize(P);
    s.kept.resize(P);
    s.dir.resize(P);
    T* phi = s.phi.data();
    *support_loss = imaml_inner(pass, rule, theta, data, s0, s1, P, phi, hv, s.kept.data(),
                                s.dir.data());
    const double loss = rows_value_grad(pass, phi, data, s1, q1, P, v);
    if (!out) return loss;
    imaml_cg(pass, rule, phi, data, s0, s1, P, v, s.x.data(), s.r.data(), s.p.data(), hv);
    const T* x = s.x.data();
#pragma omp simd
    for (std::int64_t p = 0; p < P; ++p) out[p] += scale * x[p];
    return loss;
}

// --- adapting to a new task: the proximal inner loop alone --------------------------------------

// out (P) = φ after the proximal inner loop on the support rows (Xs, ys).
template <class T>
void imaml_adapt(const NetSpec& net, const ImamlRule& rule, const T* theta, MatrixView<const T> Xs,
                 MatrixView<const T> ys, T* out) {
    AdaptLease<T> lease(net);
    AdaptWorkspace<T>& ws = *lease;
    imaml_inner(ws.pass, rule, theta, one_task(Xs, ys), 0, Xs.rows, net.n_params(), out,
                ws.grad.data(), ws.next.data(), ws.extra(net.n_params()));
}

// Many new tasks in parallel: `preds` (query rows × k) gets each task's outputs on its query rows
// after the proximal inner loop on its support rows, task after task.
template <class T>
void imaml_adapt_batch(const NetSpec& net, const ImamlRule& rule, const T* theta,
                       const TaskData<T>& data, T* preds, int n_threads) {
    const std::int64_t T_ = data.n_tasks, P = net.n_params(), k = net.n_outputs();
    std::vector<std::int64_t> qstart(T_ + 1, 0);
    for (std::int64_t t = 0; t < T_; ++t)
        qstart[t + 1] = qstart[t] + data.offsets[t + 1] - data.offsets[t] - data.n_support[t];
    const std::int64_t rows = data.offsets[T_] - data.offsets[0];
    const int threads =
        team_for(saturating_mul(saturating_mul(rows, P), saturating_add(rule.steps, 1)),
                 n_threads, T_);
    parallel_for(T_, threads, [&](std::int64_t t, int) {
        AdaptLease<T> lease(net);
        AdaptWorkspace<T>& ws = *lease;
        const std::int64_t s0 = data.offsets[t], s1 = s0 + data.n_support[t];
        imaml_inner(ws.pass, rule, theta, data, s0, s1, P, ws.phi.data(), ws.grad.data(),
                    ws.next.data(), ws.extra(P));
        const std::int64_t nq = data.offsets[t + 1] - s1;
        if (nq > 0)
            predict_rows(ws, ws.phi.data(), MatrixView<const T>{data.X.row(s1), nq, data.X.cols},
                         preds + qstart[t] * k);
    });
}

}  // namespace metacore
