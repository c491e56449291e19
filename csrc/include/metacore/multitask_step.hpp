// One step of the weighted multi-task objective f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖², as a problem
// of the one θ-update loop (train.hpp): draw the step's batch (batch.hpp), let the weighting
// strategy set α (weighting.hpp), compute f and ∇f (objective.hpp). A gradient-combining strategy
// replaces ∇f by its combination of the per-task gradients (one task_grads pass): β on the first
// n_shared parameters.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "metacore/batch.hpp"
#include "metacore/objective.hpp"
#include "metacore/train.hpp"
#include "metacore/weighting.hpp"

namespace metacore {

template <class T>
class MultiTaskStep {
   public:
    MultiTaskStep(const Objective<T>& obj, BatchSpec batch, T l2, const WeightingConfig& wcfg,
                  std::int64_t n_shared)
        : obj_(obj),
          batch_(batch),
          l2_(l2),
          wcfg_(wcfg),
          n_shared_(n_shared < 0 ? obj.n_params() : n_shared),
          sampler_(obj.data(), obj.rows(), obj.n_params(), batch),
          losses_(obj.n_tasks()),
          G_(task_grads_size(obj, wcfg)),
          alpha_backup_(obj.n_tasks()) {
        if (wcfg.kind != WeightingKind::fixed && wcfg.kind != WeightingKind::eval_driven &&
            !batch.full())
            throw std::invalid_argument("adaptive weighting needs every task and row at each step");
    }

    StepValues<T> value_and_grad(TrainState<T>& state, T* grad, int n_threads) {
        const std::int64_t P = obj_.n_params(), n = obj_.n_tasks(), t = state.step;
        // A step that is not applied leaves the strategy's state and α as they were (undo).
        weighting_backup_.assign(state.weighting.begin(), state.weighting.end());
        std::copy(state.alpha.begin(), state.alpha.end(), alpha_backup_.begin());
        const WorkPlan* plan = &obj_.plan();
        const T* weights = state.alpha.data();
        if (!batch_.full()) {
            sampler_.draw(state.seed, t, state.alpha.data());
            plan = &sampler_.plan();
            weights = sampler_.weights();
        }
        T* losses = losses_.data();
        double* ws = state.weighting.data();
        StepValues<T> v;
        v.task_losses = losses;
        v.counted = plan->task_rows.data();
        if (wcfg_.uses_grads()) {
            obj_.task_grads(state.theta.data(), G_.data(), losses, n_threads);
            v.value = std::numeric_limits<double>::quiet_NaN();
            if (!all_finite(losses, n)) return v;
            const std::vector<double> beta = combine(wcfg_, G_.data(), n, P, n_shared_, losses,
                                                     ws, state.seed, t, n_threads);
            combine_grads(G_.data(), n, P, n_shared_, beta, wcfg_.weights_heads(), grad, n_threads);
            double value = 0.0, sq = 0.0;
            for (std::int64_t i = 0; i < n; ++i) {
                state.alpha[i] = static_cast<T>(beta[i]);
                value += beta[i] * static_cast<double>(losses[i]);
            }
            for (std::int64_t k = 0; k < P; ++k) {
                sq += static_cast<double>(state.theta[k]) * state.theta[k];
                if (l2_ != T(0)) grad[k] += l2_ * state.theta[k];
            }
            v.value = value + 0.5 * static_cast<double>(l2_) * sq;
            return v;
        }
        if (wcfg_.needs_losses_first()) {
            obj_.value_and_grad(*plan, state.theta.data(), weights, l2_, nullptr, losses, n_threads);
            if (all_finite(losses, n))
                before_step(wcfg_, ws, n, state.seed, t, losses, state.alpha.data());
        } else {
            before_step(wcfg_, ws, n, state.seed, t, losses, state.alpha.data());
        }
        v.value = obj_.value_and_grad(*plan, state.theta.data(), weights, l2_, grad, losses,
                                      n_threads);
        return v;
    }

    void undo(TrainState<T>& state) {
        std::copy(weighting_backup_.begin(), weighting_backup_.end(), state.weighting.begin());
        std::copy(alpha_backup_.begin(), alpha_backup_.end(), state.alpha.begin());
    }

    void after_step(TrainState<T>& state, std::int64_t t) {
        metacore::after_step(wcfg_, state.weighting.data(), obj_.n_tasks(), t, losses_.data());
    }

   private:
    // T × P per-task gradients for a gradient-combining strategy, checked against memory.
    static std::size_t task_grads_size(const Objective<T>& obj, const WeightingConfig& wcfg) {
        if (!wcfg.uses_grads()) return 0;
        const std::int64_t n = checked_mul(obj.n_tasks(), obj.n_params(), "n_tasks");
        require_elements("n_tasks", n, sizeof(T),
                         "for the weighting's per-task gradients (n_tasks × n_params)");
        return static_cast<std::size_t>(n);
    }

    static bool all_finite(const T* x, std::int64_t n) {
        for (std::int64_t i = 0; i < n; ++i)
            if (!std::isfinite(x[i])) return false;
        return true;
    }

    const Objective<T>& obj_;
    BatchSpec batch_;
    T l2_;
    WeightingConfig wcfg_;
    std::int64_t n_shared_;
    BatchSampler<T> sampler_;
    std::vector<T> losses_, G_;
    std::vector<double> weighting_backup_;
    std::vector<T> alpha_backup_;
};

}  // namespace metacore
