// A meta-step split across machines (the Ray backend). The meta-batch of n tasks is cut into the
// fixed blocks MetaBatch uses (meta_blocks: block b = tasks [b·n/nb, (b+1)·n/nb)); a worker
// draws or generates the tasks of its consecutive blocks [b0, b1) from the step's counter-based
// keys and returns their partial sums; the driver adds all blocks' partials in block order and the
// task losses in task order — the sums one machine adds, in its order, so θ is bit-identical to a
// local run for any number of workers. The blocks are computed by the one loop a local step
// runs (MetaBatch::block_partials), so every learner and option the core knows splits the same way.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/batch.hpp"
#include "metacore/meta.hpp"
#include "metacore/meta_step.hpp"
#include "metacore/multitask_step.hpp"
#include "metacore/objective.hpp"
#include "metacore/reduction.hpp"
#include "metacore/train.hpp"

namespace metacore {

// Blocks of one meta-step of `step` (as MetaBatch cuts a meta-batch of that size).
template <class T>
std::int64_t meta_step_blocks(const MetaStep<T>& step) {
    return meta_blocks(step.meta_batch(), step.n_params(), sizeof(T));
}

// Blocks [b0, b1) of step s's meta-batch at `params` (MetaBatch::block_partials): parts
// ((b1 − b0) × G, zeroed by the caller), losses and support (one per task of the range). The
// TaskSet's tasks were checked for meta-learning when the problem was made (MetaObjective), and
// generated tasks are valid by construction.
template <class T>
void meta_block_partials(MetaStep<T>& step, const T* params, std::uint64_t seed, std::int64_t s,
                         std::int64_t b0, std::int64_t b1, T* parts, double* losses,
                         double* support) {
    const std::int64_t n = step.meta_batch();
    const std::int64_t nb = meta_step_blocks(step);
    if (b0 < 0 || b1 <= b0 || b1 > nb)
        throw std::invalid_argument("blocks must satisfy 0 <= b0 < b1 <= " + std::to_string(nb) +
                                    ", got [" + std::to_string(b0) + ", " + std::to_string(b1) +
                                    ")");
    std::vector<std::int64_t> tasks;
    const TaskData<T> data = step.draw(seed, s, b0 * n / nb, b1 * n / nb, tasks);
    step.batch().block_partials(params, data, tasks.data(), n, b0, b1, parts, losses, support, s);
}

// The driver's half: grad (G) = Σ_b parts[b] in block order; the step's value is the mean query
// loss and its support loss the mean support loss, summed in task order (as MetaBatch does).
template <class T>
StepValues<T> combine_meta_partials(const T* parts, std::int64_t nb, std::int64_t G,
                                    const double* losses, const double* support, std::int64_t n,
                                    T* grad, int threads) {
    sum_partials(parts, nb, G, grad, threads);
    double loss = 0.0, before = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
        loss += losses[i];
        before += support[i];
    }
    StepValues<T> v;
    v.value = loss / static_cast<double>(n);
    v.support_loss = before / static_cast<double>(n);
    return v;
}

// ---- multi-task steps ----------------------------------------------------------------------
// The driver runs the step of a local run (MultiTaskStep: batch draw, weighting, combination) and
// takes what the workers computed at θ in place of its own objective's passes: block partials and
// task losses (a shard of whole tasks per worker, or block ranges of a drawn batch) or per-task
// gradients, concatenated in worker order = block (task) order. The tail is the local loop's.

// A worker's share of a multi-task step over a drawn batch: it holds every task, draws step s's
// batch as the driver does (BatchSampler, counter-based keys) and computes worker k of K's blocks
// [k·nb/K, (k+1)·nb/K): parts ((b1 − b0) × P, or none) and the summed loss of each of their units.
template <class T>
class MultiTaskBlocks {
   public:
    MultiTaskBlocks(const Objective<T>& obj, BatchSpec batch)
        : obj_(obj), sampler_(obj.data(), obj.rows(), obj.n_params(), batch) {}

    std::vector<double> partials(const T* theta, const T* alpha, std::uint64_t seed,
                                 std::int64_t s, std::int64_t k, std::int64_t K, bool want_grad,
                                 std::vector<T>& parts, int n_threads) {
        if (K < 1 || k < 0 || k >= K)
            throw std::invalid_argument("worker must satisfy 0 <= worker < n_workers, got " +
                                        std::to_string(k) + " of " + std::to_string(K));
        sampler_.draw(seed, s, alpha);
        const WorkPlan& plan = sampler_.plan();
        const std::int64_t nb = plan.n_blocks(), b0 = k * nb / K, b1 = (k + 1) * nb / K;
        parts.assign(want_grad ? static_cast<std::size_t>((b1 - b0) * obj_.n_params()) : 0, T(0));
        if (b1 == b0) return {};
        return obj_.unit_partials(plan, b0, b1, theta, sampler_.weights(),
                                  want_grad ? parts.data() : nullptr, n_threads);
    }

   private:
    const Objective<T>& obj_;
    BatchSampler<T> sampler_;
};

// The run_steps tail of one step whose values came from the workers: finish_step, then the
// strategy learns from the applied step, or the step is undone.
template <class T>
bool finish_multitask_step(MultiTaskStep<T>& problem, ChunkResult& out, std::int64_t j,
                           const OptimizerConfig& config, TrainState<T>& state,
                           const StepValues<T>& v, const T* grad, int n_threads) {
    const std::int64_t t = state.step;
    UpdateBackup<T> backup;
    if (!finish_step(out, j, config, state, v, grad, n_threads, backup)) {
        problem.undo(state);
        return false;
    }
    problem.after_step(state, t);
    return true;
}

}  // namespace metacore
