// A meta-step split across machines (the Ray backend). The meta-batch of n tasks is cut into the
// fixed blocks MetaBatch uses (meta_blocks: block b = tasks [b·n/nb, (b+1)·n/nb)); a worker
// draws or generates the tasks of its consecutive blocks [b0, b1) from the step's counter-based
// keys and returns their partial sums; the driver adds all blocks' partials in block order and the
// task losses in task order — the sums one machine adds, in its order, so θ is bit-identical to a
// local run for any number of workers. Each task's meta-gradient is the learner's own
// task_meta_grad (meta.hpp), so every learner the core knows splits the same way.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/meta.hpp"
#include "metacore/meta_step.hpp"
#include "metacore/reduction.hpp"
#include "metacore/sizes.hpp"
#include "metacore/threading.hpp"
#include "metacore/train.hpp"

namespace metacore {

// Blocks of one meta-step of `step` (as MetaBatch cuts a meta-batch of that size).
template <class T>
std::int64_t meta_step_blocks(const MetaStep<T>& step) {
    return meta_blocks(step.meta_batch(), step.n_params(), sizeof(T));
}

// Blocks [b0, b1) of step s's meta-batch at `params`: parts ((b1 − b0) × G, zeroed by the caller)
// row k gets Σ over block b0 + k's tasks of (1/n)·g_i, in task order; losses and support
// (task_hi − task_lo, tasks [b0·n/nb, b1·n/nb)) get each task's query loss after adaptation and
// support loss before it. The TaskSet's tasks were checked for meta-learning when the problem
// was made (MetaObjective), and generated tasks are valid by construction.
template <class T>
void meta_block_partials(MetaStep<T>& step, const T* params, std::uint64_t seed, std::int64_t s,
                         std::int64_t b0, std::int64_t b1, T* parts, double* losses,
                         double* support, int threads) {
    const std::int64_t n = step.meta_batch(), G = step.n_params();
    const std::int64_t nb = meta_step_blocks(step);
    if (b0 < 0 || b1 <= b0 || b1 > nb)
        throw std::invalid_argument("blocks must satisfy 0 <= b0 < b1 <= " + std::to_string(nb) +
                                    ", got [" + std::to_string(b0) + ", " + std::to_string(b1) +
                                    ")");
    const std::int64_t lo = b0 * n / nb, hi = b1 * n / nb;
    std::vector<std::int64_t> tasks;
    const TaskData<T> data = step.draw(seed, s, lo, hi, tasks);
    const NetSpec& net = step.batch().net();
    const MetaConfig& cfg = step.batch().config();
    std::int64_t rows = 0;
    for (const std::int64_t t : tasks) rows += data.offsets[t + 1] - data.offsets[t];
    const int team = team_for(saturating_mul(saturating_mul(rows, net.n_params()),
                                             saturating_add(cfg.inner_steps, 1)),
                              threads, b1 - b0);
    require_elements("inner_steps",
                     checked_mul(team, MetaWorkspace<T>::elements(net, cfg), "inner_steps"),
                     sizeof(T), "for the threads' inner-loop workspaces");
    std::vector<MetaWorkspace<T>> ws;
    ws.reserve(team);
    for (int k = 0; k < team; ++k) ws.emplace_back(net, cfg);
    StepSchedule<T> schedule;
    const StepPlan plan = schedule.set(net, cfg, params, s);
    const T scale = T(1) / static_cast<T>(n);
    accumulate_blocks(b1 - b0, G, parts, team, [&](std::int64_t k, int tid, T* row) {
        const std::int64_t b = b0 + k;
        for (std::int64_t i = b * n / nb; i < (b + 1) * n / nb; ++i)
            losses[i - lo] = task_meta_grad(ws[tid], net, cfg, params, data, tasks[i - lo], scale,
                                            row, &support[i - lo], plan, schedule.rates());
    });
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

}  // namespace metacore
