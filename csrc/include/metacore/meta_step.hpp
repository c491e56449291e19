// One meta-step as a problem of the one θ-update loop (train.hpp): draw the step's meta-batch —
// `meta_batch` distinct tasks of a TaskSet chosen by CounterRng(seed, step), or fresh tasks
// generated from (seed, step) by a task source (sinusoids, N-way K-shot episodes of a labelled
// pool) — and compute the learner's meta-loss and
// meta-gradient over it (meta.hpp). The draw is keyed on the global step, so a resumed run draws
// the tasks the uninterrupted one drew. Reptile's outer step θ ← θ − ε_s · mean(θ − φ_i) is the
// outer optimizer (SGD with a linear-decay schedule), not a rule of its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/meta.hpp"
#include "metacore/random.hpp"
#include "metacore/task_sources.hpp"
#include "metacore/train.hpp"

namespace metacore {

template <class T>
class MetaStep {
   public:
    MetaStep(const NetSpec& net, const MetaConfig& cfg, std::int64_t meta_batch, int n_threads)
        : batch_(net, cfg, n_threads), meta_batch_(meta_batch) {
        if (meta_batch_ < 1)
            throw std::invalid_argument("meta_batch must be >= 1, got " +
                                        std::to_string(meta_batch_));
    }

    std::int64_t n_params() const { return batch_.n_meta_params(); }
    std::int64_t meta_batch() const { return meta_batch_; }

    // Sample meta-batches from these tasks (the caller keeps the buffers alive).
    void sample_from(const TaskData<T>& data) {
        if (meta_batch_ > data.n_tasks)
            throw std::invalid_argument("meta_batch (" + std::to_string(meta_batch_) +
                                        ") must be <= the number of tasks (" +
                                        std::to_string(data.n_tasks) + ")");
        data_ = data;
        mode_ = Mode::sampled;
    }
    // Generate fresh sinusoid tasks at every step.
    void generate(const SinusoidSource& source) {
        source_ = source;
        mode_ = Mode::sinusoid;
    }
    // Draw fresh N-way K-shot episodes from a labelled pool at every step (the caller keeps the
    // pool's buffers alive).
    void episodes_from(const EpisodePool<T>& pool) {
        pool_ = pool;
        mode_ = Mode::episodes;
    }

    // Tasks [lo, hi) of step s's meta-batch: the data they are in and, in `tasks`, their
    // indices there (a generated batch holds only these tasks). A task source generates task i
    // from (seed, s, i) alone, so any range draws what the whole batch would.
    TaskData<T> draw(std::uint64_t seed, std::int64_t s, std::int64_t lo, std::int64_t hi,
                     std::vector<std::int64_t>& tasks) {
        if (mode_ == Mode::sampled) {
            tasks.resize(hi - lo);
            const std::vector<std::int64_t> all =
                CounterRng(seed, static_cast<std::uint64_t>(s)).choose(data_.n_tasks, meta_batch_);
            std::copy(all.begin() + lo, all.begin() + hi, tasks.begin());
            return data_;
        }
        // fill checks the batch's size against memory, naming meta_batch, before anything of
        // meta_batch's size is allocated (the task indices included)
        const TaskData<T> data =
            mode_ == Mode::sinusoid
                ? buffers_.fill(source_, 1, source_.k_support, seed, s, hi - lo, lo)
                : buffers_.fill(pool_, pool_.X.cols, pool_.n_way * pool_.k_shot, seed, s, hi - lo,
                                lo);
        tasks.resize(hi - lo);
        for (std::int64_t t = 0; t < hi - lo; ++t) tasks[t] = t;
        return data;
    }
    MetaBatch<T>& batch() { return batch_; }

    StepValues<T> value_and_grad(TrainState<T>& state, T* grad, int) {
        const std::int64_t s = state.step;
        const TaskData<T> data = draw(state.seed, s, 0, meta_batch_, tasks_);
        StepValues<T> v;
        double support = 0.0;
        v.value = batch_.value_and_grad(state.theta.data(), data, tasks_.data(), meta_batch_, grad,
                                        nullptr, &support, state.step);  // the step sets MAML++'s plan
        v.support_loss = support;
        return v;
    }

    void undo(TrainState<T>&) {}
    void after_step(TrainState<T>&, std::int64_t) {}

   private:
    MetaBatch<T> batch_;
    std::int64_t meta_batch_;
    std::vector<std::int64_t> tasks_;
    enum class Mode { sampled, sinusoid, episodes };
    Mode mode_ = Mode::sampled;
    TaskData<T> data_;
    SinusoidSource source_;
    EpisodePool<T> pool_;
    GeneratedTasks<T> buffers_;
};

}  // namespace metacore
