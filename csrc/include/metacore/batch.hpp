// The tasks and rows one training step uses: all of them, or k tasks drawn without replacement
// and/or m rows drawn without replacement from each drawn task's chosen rows. Every draw comes
// from CounterRng(seed, step, stream) — stream 0 for tasks, 1 + i for task i's rows — so a step's
// batch depends only on (seed, step), never on the thread count or on where a run was resumed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <unordered_set>
#include <vector>

#include "metacore/random.hpp"
#include "metacore/tasks.hpp"

namespace metacore {

struct BatchSpec {
    std::int64_t tasks = 0;  // tasks per step; 0 = all
    std::int64_t rows = 0;   // rows per task per step; 0 = all (a task with fewer gives all)

    bool full() const { return tasks == 0 && rows == 0; }
};

// m distinct integers from [0, n), each m-subset equally likely (Floyd's algorithm: m draws).
template <class Mark>
void floyd(const CounterRng& rng, std::int64_t n, std::int64_t m, Mark&& mark) {
    for (std::int64_t j = n - m; j < n; ++j) {
        const auto t = static_cast<std::int64_t>(rng.below(j, static_cast<std::uint64_t>(j + 1)));
        if (!mark(t)) mark(j);  // t taken already: j is new (it exceeds every earlier draw)
    }
}

// k distinct integers from [0, n), ascending, each k-subset equally likely. When k is not a tiny
// share of n, Floyd's draws (of the ones to leave out when k > n/2) mark a bitmap that is then
// read in order; else a hash set and a sort (O(k log k), whatever n).
constexpr std::int64_t kBitmapShare = 16;

inline std::vector<std::int64_t> sample_sorted(const CounterRng& rng, std::int64_t n,
                                               std::int64_t k) {
    std::vector<std::int64_t> out;
    out.reserve(k);
    if (n <= std::max<std::int64_t>(4096, kBitmapShare * k)) {
        const bool leave_out = 2 * k > n;
        std::vector<char> marked(n, 0);
        floyd(rng, n, leave_out ? n - k : k, [&](std::int64_t i) {
            if (marked[i]) return false;
            return static_cast<bool>(marked[i] = 1);
        });
        for (std::int64_t i = 0; i < n; ++i)
            if (static_cast<bool>(marked[i]) != leave_out) out.push_back(i);
        return out;
    }
    std::unordered_set<std::int64_t> seen;
    seen.reserve(static_cast<std::size_t>(2 * k));
    floyd(rng, n, k, [&](std::int64_t i) {
        if (!seen.insert(i).second) return false;
        out.push_back(i);
        return true;
    });
    std::sort(out.begin(), out.end());
    return out;
}

// Builds each step's work plan and the task weights that make it an unbiased estimate of
// Σ_i α_i f_i: α_i · T / k for the k drawn tasks.
template <class T>
class BatchSampler {
   public:
    BatchSampler(const TaskData<T>& data, Rows rows, std::int64_t n_params, BatchSpec spec)
        : data_(data), rows_(rows), n_params_(n_params), spec_(spec) {}

    // Draws step `step`'s batch; the plan and the weights stay valid until the next call.
    void draw(std::uint64_t seed, std::int64_t step, const T* alpha) {
        const std::int64_t n_tasks = data_.n_tasks;
        tasks_.clear();
        if (spec_.tasks > 0 && spec_.tasks < n_tasks) {
            tasks_ = sample_sorted(CounterRng(seed, static_cast<std::uint64_t>(step), 0), n_tasks,
                                   spec_.tasks);
        } else {
            for (std::int64_t i = 0; i < n_tasks; ++i) tasks_.push_back(i);
        }
        const T scale = static_cast<T>(n_tasks) / static_cast<T>(tasks_.size());
        weights_.assign(n_tasks, T(0));
        plan_ = WorkPlan();
        plan_.task_rows.assign(n_tasks, 0);
        // Reserve every index first: units keep pointers into row_index_.
        std::vector<std::vector<std::int64_t>> picks(tasks_.size());
        std::size_t total = 0;
        for (std::size_t j = 0; j < tasks_.size(); ++j) {
            const std::int64_t i = tasks_[j];
            const std::int64_t n = data_.end(i, rows_) - data_.begin(i, rows_);
            if (spec_.rows > 0 && spec_.rows < n) {
                CounterRng rng(seed, static_cast<std::uint64_t>(step),
                               1 + static_cast<std::uint64_t>(i));
                picks[j] = sample_sorted(rng, n, spec_.rows);
                total += picks[j].size();
            }
        }
        row_index_.resize(total);
        std::size_t at = 0;
        for (std::size_t j = 0; j < tasks_.size(); ++j) {
            const std::int64_t i = tasks_[j], b = data_.begin(i, rows_);
            weights_[i] = alpha[i] * scale;
            if (picks[j].empty()) {
                add_task_rows(plan_, i, b, data_.end(i, rows_));
                continue;
            }
            const auto start = static_cast<std::int64_t>(at);
            for (std::int64_t r : picks[j]) row_index_[at++] = b + r;
            add_task_rows(plan_, i, start, static_cast<std::int64_t>(at), row_index_.data());
        }
        assign_blocks(plan_, n_params_, static_cast<std::int64_t>(sizeof(T)));
    }

    const WorkPlan& plan() const { return plan_; }
    const std::vector<std::int64_t>& tasks() const { return tasks_; }
    const T* weights() const { return weights_.data(); }

   private:
    const TaskData<T>& data_;
    Rows rows_;
    std::int64_t n_params_;
    BatchSpec spec_;
    WorkPlan plan_;
    std::vector<std::int64_t> tasks_, row_index_;
    std::vector<T> weights_;
};

}  // namespace metacore
