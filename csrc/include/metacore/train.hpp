// The θ-update loop: a train state and the function that advances it by a chunk of steps.
// Each step draws its batch (batch.hpp), computes f and ∇f on it (objective.hpp) and applies the
// optimizer (optimizers.hpp). A step is a pure function of (state, seed, step index), so a chunked,
// resumed or multi-threaded run is bit-identical to one uninterrupted serial run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "metacore/batch.hpp"
#include "metacore/objective.hpp"
#include "metacore/optimizers.hpp"
#include "metacore/weighting.hpp"

namespace metacore {

// Everything a run needs to continue exactly where it stopped. Buffers keep their size for the
// state's lifetime (Python holds views of them). An adaptive weighting strategy keeps what it
// learns between steps (loss history, log-variances, ...) in `weighting` and writes α in `alpha`.
template <class T>
struct TrainState {
    std::vector<T> theta;
    OptimizerState<T> optimizer;
    std::vector<T> alpha;               // task weights α (T,)
    std::vector<double> weighting;      // a weighting strategy's own state; empty for fixed α
    std::int64_t step = 0;              // updates done so far: the next step's index
    std::uint64_t seed = 0;             // with the step index, decides every random draw

    TrainState(std::vector<T> theta0, const OptimizerConfig& config, std::vector<T> alpha0,
               std::size_t weighting_size, std::uint64_t seed0)
        : theta(std::move(theta0)),
          optimizer(config, static_cast<std::int64_t>(theta.size())),
          alpha(std::move(alpha0)),
          weighting(weighting_size, 0.0),
          seed(seed0) {}
};

enum class StepStatus { ok, nonfinite_loss, nonfinite_grad, nonfinite_update };

// Per-step outputs of a chunk, caller-allocated with n_steps entries (task_losses: n_steps × T,
// NaN for tasks a step did not draw; may be null).
template <class T>
struct ChunkMetrics {
    double* objective = nullptr;
    double* grad_norm = nullptr;
    double* lr = nullptr;
    T* task_losses = nullptr;
    T* alpha = nullptr;  // n_steps × T: the α each step used (may be null)
};

struct ChunkOutcome {
    std::int64_t steps_done = 0;         // updates applied
    StepStatus status = StepStatus::ok;  // why the chunk stopped early, if it did
    std::int64_t bad_task = -1;          // first drawn task whose loss is not finite
    std::int64_t n_bad_tasks = 0;
};

// Buffers that let a rejected update be undone, kept across steps to avoid reallocating.
template <class T>
struct UpdateBackup {
    std::vector<T> theta;
    OptimizerState<T> optimizer;
};

// Applies the optimizer's update for step state.step from grad. A non-finite gradient changes
// nothing (nonfinite_grad); an update that would leave θ or a moment non-finite is undone
// (nonfinite_update); otherwise the step counter advances (ok). grad_norm gets ‖grad‖₂.
template <class T>
StepStatus apply_update(const OptimizerConfig& config, TrainState<T>& state, const T* grad,
                        int n_threads, UpdateBackup<T>& backup, double& grad_norm) {
    const auto P = static_cast<std::int64_t>(state.theta.size());
    // Copies, never reassignments: Python holds views of the state's buffers.
    backup.theta.resize(state.theta.size());
    backup.optimizer.m.resize(state.optimizer.m.size());
    backup.optimizer.v.resize(state.optimizer.v.size());
    std::copy(state.theta.begin(), state.theta.end(), backup.theta.begin());
    std::copy(state.optimizer.m.begin(), state.optimizer.m.end(), backup.optimizer.m.begin());
    std::copy(state.optimizer.v.begin(), state.optimizer.v.end(), backup.optimizer.v.begin());
    const StepReport r =
        step(config, state.step, state.theta.data(), grad, state.optimizer.view(), P, n_threads);
    grad_norm = r.grad_norm;
    if (!r.finite) {
        if (!std::isfinite(r.grad_norm)) return StepStatus::nonfinite_grad;
        std::copy(backup.theta.begin(), backup.theta.end(), state.theta.begin());
        std::copy(backup.optimizer.m.begin(), backup.optimizer.m.end(), state.optimizer.m.begin());
        std::copy(backup.optimizer.v.begin(), backup.optimizer.v.end(), state.optimizer.v.begin());
        return StepStatus::nonfinite_update;
    }
    ++state.step;
    return StepStatus::ok;
}

// Runs up to n_steps steps from state.step. A step whose loss or gradient is not finite is not
// applied; an update that would leave a non-finite θ or moment is undone. Either way the chunk
// stops there and the state is the last finite one (state.step = that step's index).
// The weighting strategy (weighting.hpp) sets state.alpha before each step's gradient and learns
// from its losses after; a gradient-based one replaces the step's gradient by its combination
// of the per-task gradients (one task_grads pass): β on the first n_shared parameters.
template <class T>
ChunkOutcome run_steps(const Objective<T>& obj, const OptimizerConfig& config, BatchSpec batch,
                       T l2, TrainState<T>& state, std::int64_t n_steps, int n_threads,
                       ChunkMetrics<T> out, const WeightingConfig& wcfg = WeightingConfig(),
                       std::int64_t n_shared = -1) {
    const std::int64_t P = obj.n_params(), n_tasks = obj.n_tasks();
    if (n_shared < 0) n_shared = P;
    if (wcfg.kind != WeightingKind::fixed && wcfg.kind != WeightingKind::eval_driven &&
        !batch.full())
        throw std::invalid_argument("adaptive weighting needs every task and row at each step");
    BatchSampler<T> sampler(obj.data(), obj.rows(), P, batch);
    std::vector<T> grad(P), losses(n_tasks);
    std::vector<T> G(wcfg.uses_grads() ? n_tasks * P : 0);
    std::vector<double> weighting_backup(state.weighting.size());
    std::vector<T> alpha_backup(n_tasks);
    UpdateBackup<T> backup;
    ChunkOutcome outcome;
    for (std::int64_t j = 0; j < n_steps; ++j) {
        const std::int64_t t = state.step;
        const WorkPlan* plan = &obj.plan();
        const T* weights = state.alpha.data();
        if (!batch.full()) {
            sampler.draw(state.seed, t, state.alpha.data());
            plan = &sampler.plan();
            weights = sampler.weights();
        }
        T* task_losses = out.task_losses ? out.task_losses + j * n_tasks : losses.data();
        // A step that is not applied leaves the strategy's state and α as they were.
        std::copy(state.weighting.begin(), state.weighting.end(), weighting_backup.begin());
        std::copy(state.alpha.begin(), state.alpha.end(), alpha_backup.begin());
        auto undo_weighting = [&] {
            std::copy(weighting_backup.begin(), weighting_backup.end(), state.weighting.begin());
            std::copy(alpha_backup.begin(), alpha_backup.end(), state.alpha.begin());
        };
        double* ws = state.weighting.data();
        double value;
        if (wcfg.uses_grads()) {
            obj.task_grads(state.theta.data(), G.data(), task_losses, n_threads);
            bool finite = true;
            for (std::int64_t i = 0; i < n_tasks; ++i) finite = finite && std::isfinite(task_losses[i]);
            value = std::numeric_limits<double>::quiet_NaN();
            if (finite) {
                const std::vector<double> beta = combine(wcfg, G.data(), n_tasks, P, n_shared,
                                                         task_losses, ws, state.seed, t, n_threads);
                combine_grads(G.data(), n_tasks, P, n_shared, beta, wcfg.weights_heads(),
                              grad.data(), n_threads);
                value = 0.0;
                for (std::int64_t i = 0; i < n_tasks; ++i) {
                    state.alpha[i] = static_cast<T>(beta[i]);
                    value += beta[i] * static_cast<double>(task_losses[i]);
                }
                double sq = 0.0;
                for (std::int64_t k = 0; k < P; ++k) {
                    sq += static_cast<double>(state.theta[k]) * state.theta[k];
                    if (l2 != T(0)) grad[k] += l2 * state.theta[k];
                }
                value += 0.5 * static_cast<double>(l2) * sq;
            }
        } else {
            if (wcfg.needs_losses_first()) {
                obj.value_and_grad(*plan, state.theta.data(), weights, l2, nullptr, task_losses,
                                   n_threads);
                bool finite = true;
                for (std::int64_t i = 0; i < n_tasks; ++i)
                    finite = finite && std::isfinite(task_losses[i]);
                if (finite)
                    before_step(wcfg, ws, n_tasks, state.seed, t, task_losses, state.alpha.data());
            } else {
                before_step(wcfg, ws, n_tasks, state.seed, t, task_losses, state.alpha.data());
            }
            value = obj.value_and_grad(*plan, state.theta.data(), weights, l2, grad.data(),
                                       task_losses, n_threads);
        }
        if (out.alpha) std::copy(state.alpha.begin(), state.alpha.end(), out.alpha + j * n_tasks);
        out.objective[j] = value;
        out.grad_norm[j] = std::numeric_limits<double>::quiet_NaN();
        out.lr[j] = config.lr * config.schedule.factor(t);
        if (!std::isfinite(value)) {
            outcome.status = StepStatus::nonfinite_loss;
            for (std::int64_t i = 0; i < n_tasks; ++i)
                if (plan->task_rows[i] > 0 && !std::isfinite(task_losses[i])) {
                    if (outcome.bad_task < 0) outcome.bad_task = i;
                    ++outcome.n_bad_tasks;
                }
            undo_weighting();
            return outcome;
        }
        const StepStatus status =
            apply_update(config, state, grad.data(), n_threads, backup, out.grad_norm[j]);
        if (status != StepStatus::ok) {
            outcome.status = status;
            undo_weighting();
            return outcome;
        }
        after_step(wcfg, ws, n_tasks, t, task_losses);
        ++outcome.steps_done;
    }
    return outcome;
}

}  // namespace metacore
