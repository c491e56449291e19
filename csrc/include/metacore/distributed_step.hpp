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

#include "metacore/meta.hpp"
#include "metacore/meta_step.hpp"
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

}  // namespace metacore
