// The inner loop every meta-learner shares: k SGD steps on one task's support rows,
//   φ_{j+1} = φ_j − r ⊙ ∇L_s(φ_j),
// where the rate vector r is a scalar lr (MAML, Reptile), learned per-parameter rates (Meta-SGD),
// lr on the output layer and 0 on the trunk (ANIL), or learned rates that differ by step
// (MAML++'s per-layer, per-step rates, expanded to one row of P rates per step: step j uses row
// min(j, rate_rows − 1), so a loop longer than the one trained repeats the last step's rates).
// No L2 in the inner loop.
#pragma once

#include <cstdint>

#include "metacore/interrupt.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/simd.hpp"
#include "metacore/tasks.hpp"
#include "metacore/unit_kernels.hpp"

namespace metacore {

template <class T>
struct InnerRule {
    std::int64_t steps = 1;
    T lr = T(0);                 // the rate when `rates` is null
    const T* rates = nullptr;    // per-parameter rates (rate_rows × P), or null
    std::int64_t rate_rows = 1;  // rows of `rates`: step j uses row min(j, rate_rows − 1)
    std::int64_t frozen = 0;     // θ[0:frozen] stays fixed in the inner loop (ANIL: the trunk)

    // The rates of step j (null when the scalar lr applies).
    const T* rates_at(std::int64_t j, std::int64_t P) const {
        if (!rates) return nullptr;
        return rates + (j < rate_rows ? j : rate_rows - 1) * P;
    }
};

// φ_out[p] = φ[p] − r_p · g[p] for the adapted parameters, φ[p] for the frozen ones; r the
// rates of inner step j.
template <class T>
METACORE_INLINE void inner_update(const InnerRule<T>& rule, const T* __restrict phi,
                                  const T* __restrict g, std::int64_t P, T* __restrict out,
                                  std::int64_t j = 0) {
    const std::int64_t f = rule.frozen;
    for (std::int64_t p = 0; p < f; ++p) out[p] = phi[p];
    const T* r = rule.rates_at(j, P);
    sgd_step(phi + f, rule.lr, r ? r + f : nullptr, g + f, P - f, out + f);
}

// v = r ⊙ g on the adapted parameters, 0 on the frozen ones (r the rates of inner step j): the
// direction (∂φ_{j+1}/∂φ_j)ᵀ needs the Hessian applied to.
template <class T>
METACORE_INLINE void scale_by_rates(const InnerRule<T>& rule, const T* __restrict g,
                                    std::int64_t P, T* __restrict v, std::int64_t j = 0) {
    const std::int64_t f = rule.frozen;
    for (std::int64_t p = 0; p < f; ++p) v[p] = T(0);
    const T* r = rule.rates_at(j, P);
    scaled(rule.lr, r ? r + f : nullptr, g + f, P - f, v + f);
}

// Mean loss over rows [begin, end) of X, y at θ; grad (when not null) = its gradient.
template <class T>
METACORE_INLINE double rows_value_grad(NetPass<T>& pass, const T* theta, const TaskData<T>& data,
                                       std::int64_t begin, std::int64_t end, std::int64_t P,
                                       T* grad, bool same_theta = false) {
    const std::int64_t n = end - begin;
    if (grad)
        for (std::int64_t p = 0; p < P; ++p) grad[p] = T(0);
    const WorkUnit unit{0, begin, end};
    pass.prepare(theta, nullptr, same_theta);
    const double loss = unit_value_grad(pass, theta, data, unit, 0, T(1) / static_cast<T>(n), grad);
    pass.release();
    return loss / static_cast<double>(n);
}

// One block's H·v after its forward pass at θ: the tangent pass, the loss head and its tangent,
// the backward tangent — unit_hvp without its forward pass, for a pass that still holds it.
template <class T>
METACORE_INLINE void block_hvp_kept_body(NetPass<T>& pass, const T* theta, const T* v,
                                         const TaskData<T>& data, std::int64_t begin,
                                         std::int64_t end, T scale, T* hv) {
    const std::int64_t b = end - begin;
    const T* X = data.X.row(begin);
    pass.forward_tangent(theta, v, X, b, 0);
    pass.loss_grad(data.y.row(begin), data.y.cols, b, scale);
    pass.loss_tangent(b, scale);
    pass.backward_tangent(theta, v, X, b, 0, hv);
}
METACORE_KERNEL(void, block_hvp_kept,
                (NetPass<T>& pass, const T* theta, const T* v, const TaskData<T>& data, std::int64_t begin, std::int64_t end, T scale, T* hv),
                (pass, theta, v, data, begin, end, scale, hv))

// Whether rows_value_grad over `rows` rows leaves the pass holding their whole forward pass (one
// block through the general path, not the one-layer logistic kernel), so that an HVP at the same
// θ on the same rows can start from it (rows_hvp's forward_kept).
template <class T>
bool keeps_forward(const NetPass<T>& pass, std::int64_t rows) {
    return rows <= pass.block_rows(rows) && !is_logistic_regression(pass.net());
}

// hv = ∇²L(θ) v of the mean loss over rows [begin, end). forward_kept: the pass's last forward
// pass was rows_value_grad's at this θ over these rows, and keeps_forward holds: it is reused,
// as are θ's transposes. Its values equal the HVP's own forward pass only to rounding (float32
// meta-gradients differ by up to ~3e-6 of their largest entry, measured): the result is still
// bit-identical for any thread count, but not to a build without this reuse.
template <class T>
METACORE_INLINE void rows_hvp(NetPass<T>& pass, const T* theta, const T* v,
                              const TaskData<T>& data, std::int64_t begin, std::int64_t end,
                              std::int64_t P, T* hv, bool same_theta = false,
                              bool forward_kept = false) {
    for (std::int64_t p = 0; p < P; ++p) hv[p] = T(0);
    const T scale = T(1) / static_cast<T>(end - begin);
    pass.prepare(theta, v, same_theta || forward_kept);
    if (forward_kept) {
        block_hvp_kept(pass, theta, v, data, begin, end, scale, hv);
    } else {
        const WorkUnit unit{0, begin, end};
        unit_hvp(pass, theta, v, data, unit, 0, scale, hv);
    }
    pass.release();
}

// Runs the inner loop from θ on rows [begin, end). Writes φ_j to row (j − 1) mod `rows` of
// `trail` (rows × P: all of φ_1..φ_k when rows = k; two rows in turn when only φ_k is wanted)
// and, when `grads` is not null, ∇L_s(φ_0..φ_{k−1}) to `grads` (k × P). Returns L_s(θ) (before
// adapting). same_theta: θ is unchanged since the pass last saw it (see NetPass::prepare).
template <class T>
double run_inner_loop(NetPass<T>& pass, const InnerRule<T>& rule, const T* theta,
                      const TaskData<T>& data, std::int64_t begin, std::int64_t end,
                      std::int64_t P, T* trail, T* grads, T* scratch, bool same_theta,
                      std::int64_t rows) {
    double first = 0.0;
    const T* phi = theta;
    for (std::int64_t j = 0; j < rule.steps; ++j) {
        check_interrupt();
        T* g = grads ? grads + j * P : scratch;
        const double loss = rows_value_grad(pass, phi, data, begin, end, P, g, j == 0 && same_theta);
        if (j == 0) first = loss;
        T* next = trail + j % rows * P;
        inner_update(rule, phi, g, P, next, j);
        phi = next;
    }
    return first;
}

}  // namespace metacore
