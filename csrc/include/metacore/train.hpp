// The θ-update loop — one for every problem. A train state and the function that advances it by
// a chunk of steps: each step asks the problem for its value and gradient at θ (a multi-task
// objective over a drawn batch, multitask_step.hpp; a meta-batch's meta-gradient, meta_step.hpp),
// then applies the optimizer (optimizers.hpp). A step is a pure function of (state, seed, step
// index), so a chunked, resumed or multi-threaded run is bit-identical to one uninterrupted run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "metacore/interrupt.hpp"
#include "metacore/optimizers.hpp"
#include "metacore/sizes.hpp"

namespace metacore {

// Everything a run needs to continue exactly where it stopped. Buffers keep their size for the
// state's lifetime (Python holds views of them). An adaptive weighting strategy keeps what it
// learns between steps (loss history, log-variances, ...) in `weighting` and writes α in `alpha`;
// a meta-learning problem has no α (both empty).
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

enum class StepStatus { ok, nonfinite_loss, nonfinite_grad, nonfinite_update, weighting_failed };

// What a chunk of steps reports, built in this one place for every problem and backend. Per-step
// series have n_steps entries (NaN where a step did not get that far); with `record`, task_losses
// and alpha are n_steps × n_tasks (NaN for tasks a step did not draw).
struct ChunkResult {
    std::int64_t n_steps = 0, n_tasks = 0;
    bool record = false;
    std::int64_t steps_done = 0;          // updates applied
    StepStatus status = StepStatus::ok;   // why the chunk stopped early, if it did
    std::int64_t bad_task = -1;           // first task whose loss is not finite
    std::int64_t n_bad_tasks = 0;
    std::vector<double> objective, grad_norm, lr;
    std::vector<double> support_loss;     // meta-learning: mean support loss before adaptation
    std::vector<double> task_losses, alpha;

    ChunkResult(std::int64_t steps, std::int64_t tasks, bool record_tasks)
        : n_steps(steps), n_tasks(tasks), record(record_tasks) {
        const std::int64_t per_step = record ? checked_add(4, checked_mul(2, tasks, "n_tasks"),
                                                           "n_tasks")
                                             : 4;
        require_elements("n_steps", checked_mul(steps, per_step, "n_steps"), sizeof(double),
                         "for the chunk's per-step records");
        const double nan = std::numeric_limits<double>::quiet_NaN();
        objective.assign(steps, nan);
        grad_norm.assign(steps, nan);
        lr.assign(steps, nan);
        support_loss.assign(steps, nan);
        if (record) {
            task_losses.assign(steps * tasks, nan);
            alpha.assign(steps * tasks, nan);
        }
    }
};

// What the problem measured at step j, handed to finish_step.
template <class T>
struct StepValues {
    double value = 0.0;                    // the loss the gradient belongs to
    double support_loss = std::numeric_limits<double>::quiet_NaN();
    const T* task_losses = nullptr;        // (n_tasks,) or null
    const std::int64_t* counted = nullptr; // (n_tasks,): tasks with rows > 0 this step; null = all
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

// The tail of step j of a chunk, the same for every problem and backend: record the step's
// metrics, refuse non-finite task weights or loss, apply the update. Returns false when the chunk must stop
// (out.status says why); the state is then the last finite one.
template <class T>
bool finish_step(ChunkResult& out, std::int64_t j, const OptimizerConfig& config,
                 TrainState<T>& state, const StepValues<T>& v, const T* grad, int n_threads,
                 UpdateBackup<T>& backup) {
    const std::int64_t n = out.n_tasks;
    out.objective[j] = v.value;
    out.support_loss[j] = v.support_loss;
    out.lr[j] = config.lr * config.schedule.factor(state.step);
    if (out.record) {
        for (std::int64_t i = 0; i < n; ++i) {
            const bool drawn = v.counted == nullptr || v.counted[i] > 0;
            if (drawn && v.task_losses) out.task_losses[j * n + i] = v.task_losses[i];
            if (!state.alpha.empty()) out.alpha[j * n + i] = state.alpha[i];
        }
    }
    // Checked first: non-finite weights would show up as a non-finite loss the data did not cause.
    for (const T& a : state.alpha)
        if (!std::isfinite(a)) {
            out.status = StepStatus::weighting_failed;
            return false;
        }
    if (!std::isfinite(v.value)) {
        out.status = StepStatus::nonfinite_loss;
        if (v.task_losses)
            for (std::int64_t i = 0; i < n; ++i)
                if ((v.counted == nullptr || v.counted[i] > 0) && !std::isfinite(v.task_losses[i])) {
                    if (out.bad_task < 0) out.bad_task = i;
                    ++out.n_bad_tasks;
                }
        return false;
    }
    out.status = apply_update(config, state, grad, n_threads, backup, out.grad_norm[j]);
    if (out.status != StepStatus::ok) return false;
    ++out.steps_done;
    return true;
}

// Runs up to out.n_steps steps of `problem` from state.step. The problem provides
//   StepValues<T> value_and_grad(TrainState<T>&, T* grad, int n_threads)   the step's f and ∇f
//   void undo(TrainState<T>&)                     restore what value_and_grad changed in the state
//   void after_step(TrainState<T>&, std::int64_t t)   learn from applied step t (weighting state)
// A step whose loss or gradient is not finite is not applied; an update that would leave a
// non-finite θ or moment is undone. Either way the chunk stops with the last finite state.
// The chunk may be interrupted (interrupt.hpp) between steps and while a step computes its
// gradient, never while it updates the state: Interrupted leaves the state at its last finished
// step and out.steps_done says how many steps the chunk finished.
template <class T, class Problem>
void run_steps(Problem& problem, const OptimizerConfig& config, TrainState<T>& state,
               int n_threads, ChunkResult& out) {
    std::vector<T> grad(state.theta.size());
    UpdateBackup<T> backup;
    for (std::int64_t j = 0; j < out.n_steps; ++j) {
        const std::int64_t t = state.step;
        StepValues<T> v;
        try {
            check_interrupt();
            v = problem.value_and_grad(state, grad.data(), n_threads);
        } catch (const Interrupted&) {
            problem.undo(state);
            throw;
        }
        const InterruptScope uninterrupted(nullptr);  // the update runs to its end
        if (!finish_step(out, j, config, state, v, grad.data(), n_threads, backup)) {
            problem.undo(state);
            return;
        }
        problem.after_step(state, t);
    }
}

}  // namespace metacore
