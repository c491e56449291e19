// The meta-training loop for a chunk of steps, run without Python: at step s draw a meta-batch
// (sampled from a TaskSet or generated fresh), compute the meta-gradient, update the parameters
// with the outer optimizer (or Reptile's plain step θ ← θ − ε_s · mean(θ − φ_i) with
// ε_s = outer_lr · (1 − s / total_steps), linearly annealed to 0).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/meta.hpp"
#include "metacore/optimizers.hpp"
#include "metacore/random.hpp"
#include "metacore/task_sources.hpp"

namespace metacore {

struct MetaFitConfig {
    std::int64_t meta_batch = 25;
    std::uint64_t seed = 0;
    bool plain_outer_step = false;  // Reptile's annealed step instead of the optimizer
    OptimizerConfig optimizer;
    double outer_lr = 0.1;
    std::int64_t total_steps = 1;
};

template <class T>
class MetaTrainer {
   public:
    MetaTrainer(const NetSpec& net, const MetaConfig& cfg, const MetaFitConfig& fit, int n_threads)
        : batch_(net, cfg, n_threads), fit_(fit), grad_(batch_.n_meta_params()) {
        if (fit_.meta_batch < 1)
            throw std::invalid_argument("meta_batch must be >= 1, got " +
                                        std::to_string(fit_.meta_batch));
        if (!fit_.plain_outer_step) fit_.optimizer.validate();
    }

    // Sample meta-batches from these tasks (meta_batch distinct tasks per step).
    void sample_from(const TaskData<T>& data) {
        if (fit_.meta_batch > data.n_tasks)
            throw std::invalid_argument("meta_batch (" + std::to_string(fit_.meta_batch) +
                                        ") must be <= the number of tasks (" +
                                        std::to_string(data.n_tasks) + ")");
        data_ = data;
        generated_ = false;
    }
    // Draw fresh sinusoid tasks every step.
    void generate(const SinusoidSource& source) {
        source_ = source;
        generated_ = true;
    }

    // Runs steps [step0, step0 + n). losses[i] (and before[i]) get step i's mean query loss after
    // adaptation (and mean support loss before it). Returns the number of steps completed:
    // fewer than n when a loss or meta-gradient turned non-finite (the parameters are then left
    // as they were before that step).
    std::int64_t run(T* params, OptimizerMoments<T> moments, std::int64_t step0, std::int64_t n,
                     T* losses, T* before) {
        const std::int64_t G = batch_.n_meta_params(), mb = fit_.meta_batch;
        for (std::int64_t i = 0; i < n; ++i) {
            const std::int64_t s = step0 + i;
            TaskData<T> data;
            if (generated_) {
                data = buffers_.fill(source_, fit_.seed, s, mb);
                tasks_.resize(mb);
                for (std::int64_t t = 0; t < mb; ++t) tasks_[t] = t;
            } else {
                data = data_;
                tasks_ = CounterRng(fit_.seed, static_cast<std::uint64_t>(s)).choose(data.n_tasks, mb);
            }
            double support = 0.0;
            const double loss =
                batch_.value_and_grad(params, data, tasks_.data(), mb, grad_.data(), nullptr, &support);
            losses[i] = static_cast<T>(loss);
            before[i] = static_cast<T>(support);
            if (!std::isfinite(loss) || !all_finite(grad_.data(), G)) return i;
            if (fit_.plain_outer_step) {
                const double left = 1.0 - static_cast<double>(s) /
                                              static_cast<double>(fit_.total_steps);
                const T eps = static_cast<T>(fit_.outer_lr * (left > 0.0 ? left : 0.0));
                const T* g = grad_.data();
#pragma omp simd
                for (std::int64_t p = 0; p < G; ++p) params[p] -= eps * g[p];
            } else {
                step(fit_.optimizer, s, params, grad_.data(), moments, G, 1);
            }
        }
        return n;
    }

   private:
    static bool all_finite(const T* x, std::int64_t n) {
        T check = T(0);
        for (std::int64_t p = 0; p < n; ++p) check += x[p] - x[p];
        return check == T(0);
    }

    MetaBatch<T> batch_;
    MetaFitConfig fit_;
    std::vector<T> grad_;
    std::vector<std::int64_t> tasks_;
    TaskData<T> data_;
    bool generated_ = false;
    SinusoidSource source_;
    GeneratedTasks<T> buffers_;
};

}  // namespace metacore
