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

    // What a step needs computed at θ once begin() has run: the per-task gradients (a
    // gradient-combining strategy), the task losses first and then the gradient (FAMO), or the
    // gradient's block partials and the task losses.
    enum class Need { partials, losses_first, task_grads };

    StepValues<T> value_and_grad(TrainState<T>& state, T* grad, int n_threads) {
        const Need need = begin(state);
        const T* theta = state.theta.data();
        if (need == Need::task_grads) {
            obj_.task_grads(theta, G_.data(), losses_.data(), n_threads);
            return from_task_grads(state, G_.data(), grad, n_threads);
        }
        if (need == Need::losses_first) {
            obj_.value_and_grad(plan(), theta, weights(state), l2_, nullptr, losses_.data(),
                                n_threads);
            losses_first(state);
        }
        StepValues<T> v = values();
        v.value = obj_.value_and_grad(plan(), theta, weights(state), l2_, grad, losses_.data(),
                                      n_threads);
        return v;
    }

    // The phases of value_and_grad, for a driver whose workers compute at θ (distributed_step.hpp):
    // begin → [losses_first] → from_partials or from_task_grads, with the same arithmetic.

    // Saves what a step that is not applied must restore, draws the step's batch and, for a
    // strategy that needs no losses of this step, sets α.
    Need begin(TrainState<T>& state) {
        // A step that is not applied leaves the strategy's state and α as they were (undo).
        weighting_backup_.assign(state.weighting.begin(), state.weighting.end());
        std::copy(state.alpha.begin(), state.alpha.end(), alpha_backup_.begin());
        if (!batch_.full()) sampler_.draw(state.seed, state.step, state.alpha.data());
        if (wcfg_.uses_grads()) return Need::task_grads;
        if (wcfg_.needs_losses_first()) return Need::losses_first;
        before_step(wcfg_, state.weighting.data(), obj_.n_tasks(), state.seed, state.step,
                    losses_.data(), state.alpha.data());
        return Need::partials;
    }

    // FAMO: α from the step's task losses, held in task_losses() (f_i at θ).
    void losses_first(TrainState<T>& state) {
        if (all_finite(losses_.data(), obj_.n_tasks()))
            before_step(wcfg_, state.weighting.data(), obj_.n_tasks(), state.seed, state.step,
                        losses_.data(), state.alpha.data());
    }

    // f and ∇f from all blocks' partials (nb × P, in block order) and the mean loss per task.
    StepValues<T> from_partials(TrainState<T>& state, const T* parts, std::int64_t nb,
                                const double* task_loss, T* grad, int threads) {
        StepValues<T> v = values();
        v.value = Objective<T>::combine(parts, nb, obj_.n_params(), task_loss,
                                        plan().task_rows.data(), weights(state), obj_.n_tasks(),
                                        state.theta.data(), l2_, grad, losses_.data(), threads);
        return v;
    }

    // A gradient-combining strategy's step from the per-task gradients G (T × P; their losses in
    // task_losses()): β, the combined direction and Σ β_i f_i + (λ/2)‖θ‖².
    StepValues<T> from_task_grads(TrainState<T>& state, const T* G, T* grad, int n_threads) {
        const std::int64_t P = obj_.n_params(), n = obj_.n_tasks(), t = state.step;
        const T* losses = losses_.data();
        StepValues<T> v = values();
        v.value = std::numeric_limits<double>::quiet_NaN();
        if (!all_finite(losses, n)) return v;
        const std::vector<double> beta = combine(wcfg_, G, n, P, n_shared_, losses,
                                                 state.weighting.data(), state.seed, t, n_threads);
        combine_grads(G, n, P, n_shared_, beta, wcfg_.weights_heads(), grad, n_threads);
        double value = 0.0, sq = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
            state.alpha[i] = static_cast<T>(beta[i]);
            value += beta[i] * static_cast<double>(losses[i]);
        }
        for (std::int64_t k = 0; k < P; ++k) {
            sq += static_cast<double>(state.theta[k]) * state.theta[k];
            if (l2_ != T(0)) grad[k] += l2_ * state.theta[k];
        }
        // no penalty at λ = 0: 0 × ‖θ‖² is NaN once ‖θ‖² overflows
        v.value = l2_ != T(0) ? value + 0.5 * static_cast<double>(l2_) * sq : value;
        return v;
    }

    // The step's plan of tasks and rows (drawn by begin), its task weights and f_i (T,).
    const WorkPlan& plan() const { return batch_.full() ? obj_.plan() : sampler_.plan(); }
    const T* weights(const TrainState<T>& state) const {
        return batch_.full() ? state.alpha.data() : sampler_.weights();
    }
    T* task_losses() { return losses_.data(); }
    std::int64_t n_shared() const { return n_shared_; }

    void undo(TrainState<T>& state) {
        std::copy(weighting_backup_.begin(), weighting_backup_.end(), state.weighting.begin());
        std::copy(alpha_backup_.begin(), alpha_backup_.end(), state.alpha.begin());
    }

    void after_step(TrainState<T>& state, std::int64_t t) {
        metacore::after_step(wcfg_, state.weighting.data(), obj_.n_tasks(), t, losses_.data());
    }

   private:
    StepValues<T> values() {
        StepValues<T> v;
        v.task_losses = losses_.data();
        v.counted = plan().task_rows.data();
        return v;
    }

    // T × P per-task gradients for a gradient-combining strategy, checked against memory.
    static std::size_t task_grads_size(const Objective<T>& obj, const WeightingConfig& wcfg) {
        if (!wcfg.uses_grads()) return 0;
        const std::int64_t n = checked_mul(obj.n_tasks(), obj.n_params(), "n_tasks");
        require_elements("n_tasks", n, sizeof(T),
                         "for the weighting's per-task gradients (n_tasks × n_params)");
        return static_cast<std::size_t>(n);
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
