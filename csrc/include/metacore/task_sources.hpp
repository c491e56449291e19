// Infinite task families generated in the core — sinusoids, and classification episodes from a
// labelled pool — so a meta-training chunk draws fresh tasks every step without returning to
// Python. Every draw is a pure function of (seed, step, task, row):
// the same tasks for any thread count, and a resumed run draws what the uninterrupted one drew.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "metacore/interrupt.hpp"
#include "metacore/random.hpp"
#include "metacore/sizes.hpp"
#include "metacore/tasks.hpp"

namespace metacore {

// Sinusoid regression (Finn et al., 2017): y = A sin(x − φ), A ~ U(amplitude), φ ~ U(phase),
// x ~ U(x_range); k_support support rows then k_query query rows per task.
// Rows a generated task writes between two interrupt checks.
inline constexpr std::int64_t kRowsPerInterruptCheck = 65536;

struct SinusoidSource {
    std::int64_t k_support = 10, k_query = 10;
    double amp_lo = 0.1, amp_hi = 5.0;
    double phase_lo = 0.0, phase_hi = 3.141592653589793;
    double x_lo = -5.0, x_hi = 5.0;

    std::int64_t rows_per_task() const { return checked_add(k_support, k_query, "k_support + k_query"); }

    // Rows of a batch of n_tasks tasks, checked against overflow and memory (X and y: 2 values a
    // row of `elem` bytes). `what` names the argument that sets n_tasks.
    std::int64_t batch_rows(std::int64_t n_tasks, const char* what, std::size_t elem) const {
        const std::int64_t n = checked_mul(n_tasks, rows_per_task(), what);
        require_elements(what, checked_mul(n, 2, what), elem, "for the generated tasks' rows");
        return n;
    }

    // Task i of step `step`: stream i + 1 of CounterRng(seed, step); draws 0 and 1 are A and φ,
    // draw 2 + r is row r's x. X and y get rows_per_task() rows.
    template <class T>
    void task(std::uint64_t seed, std::int64_t step, std::int64_t i, T* X, T* y) const {
        const CounterRng rng(seed, static_cast<std::uint64_t>(step),
                             static_cast<std::uint64_t>(i) + 1);
        const double A = amp_lo + (amp_hi - amp_lo) * rng.uniform(0);
        const double phi = phase_lo + (phase_hi - phase_lo) * rng.uniform(1);
        for (std::int64_t r = 0; r < rows_per_task(); ++r) {
            // one task may hold billions of rows (k_support is the caller's): Ctrl-C between
            // bounded runs of them, not only between tasks
            if (r != 0 && r % kRowsPerInterruptCheck == 0) check_interrupt();
            const double x = x_lo + (x_hi - x_lo) * rng.uniform(2 + static_cast<std::uint64_t>(r));
            X[r] = static_cast<T>(x);
            y[r] = static_cast<T>(A * std::sin(x - phi));
        }
    }
};

// N-way K-shot classification episodes drawn from a labelled pool (Vinyals et al., 2016; the
// protocol of Finn et al., 2017 on Omniglot): the rows of class c are pool rows
// [class_offsets[c], class_offsets[c + 1]). Episode i of step `step` takes n_way distinct classes
// (stream 1 + i of CounterRng(seed, step)) and, for its j-th class, k_shot + q_query distinct
// rows (stream 1 + n_tasks_max + i·n_way + j); the first k_shot are support rows. Labels are the
// class's position j in the episode; support rows of every class come first, then the queries.
template <class T>
struct EpisodePool {
    MatrixView<const T> X;                     // (N, d) pool rows, grouped by class
    const std::int64_t* class_offsets = nullptr;   // (n_classes + 1,)
    std::int64_t n_classes = 0;
    std::int64_t n_way = 5, k_shot = 1, q_query = 15;

    std::int64_t rows_per_task() const { return n_way * (k_shot + q_query); }

    // Rows of a batch of n_tasks episodes, checked against overflow and memory (X: d values a
    // row, y: one, of `elem` bytes) before anything is allocated. `what` names the argument
    // that sets n_tasks (meta_batch, n_tasks).
    std::int64_t batch_rows(std::int64_t n_tasks, const char* what, std::size_t elem) const {
        const std::int64_t n = checked_mul(n_tasks, rows_per_task(), what);
        require_elements(what, checked_mul(n, checked_add(X.cols, 1, what), what), elem,
                         "for the generated tasks' rows");
        return n;
    }

    // Episode i of `step`: X (rows_per_task × d) and y (rows_per_task) in caller buffers.
    void task(std::uint64_t seed, std::int64_t step, std::int64_t i, T* Xo, T* yo) const {
        const std::int64_t d = X.cols, per = k_shot + q_query;
        const CounterRng pick(seed, static_cast<std::uint64_t>(step),
                              1 + static_cast<std::uint64_t>(i));
        const std::vector<std::int64_t> classes = pick.choose(n_classes, n_way);
        for (std::int64_t j = 0; j < n_way; ++j) {
            const std::int64_t c = classes[j], lo = class_offsets[c];
            const CounterRng draw(seed, static_cast<std::uint64_t>(step),
                                  (std::uint64_t{1} << 40) + static_cast<std::uint64_t>(i * n_way + j));
            const std::vector<std::int64_t> rows = draw.choose(class_offsets[c + 1] - lo, per);
            for (std::int64_t r = 0; r < per; ++r) {
                // support rows of all classes first, then the query rows
                const std::int64_t out = r < k_shot ? j * k_shot + r
                                                    : n_way * k_shot + j * q_query + (r - k_shot);
                std::copy(X.data + (lo + rows[r]) * d, X.data + (lo + rows[r] + 1) * d,
                          Xo + out * d);
                yo[out] = static_cast<T>(j);
            }
        }
    }
};

// Owned buffers of a generated meta-batch, viewed as TaskData.
template <class T>
struct GeneratedTasks {
    std::vector<T> X, y;
    std::vector<std::int64_t> offsets, n_support;

    // A meta-batch of n_tasks tasks of a source (SinusoidSource, EpisodePool) for (seed, step):
    // each task has rows_per_task() rows of d features, the first n_support of them support rows.
    // Task i of the buffers is the source's task first + i.
    template <class Source>
    TaskData<T> fill(const Source& src, std::int64_t d, std::int64_t support, std::uint64_t seed,
                     std::int64_t step, std::int64_t n_tasks, std::int64_t first = 0) {
        const std::int64_t n = src.rows_per_task();
        const std::int64_t rows = checked_mul(n_tasks, n, "meta_batch");
        require_elements("meta_batch", checked_mul(rows, checked_add(d, 1, "meta_batch"),
                                                   "meta_batch"),
                         sizeof(T), "for the generated tasks' rows");
        X.resize(rows * d);
        y.resize(rows);
        offsets.resize(n_tasks + 1);
        n_support.assign(n_tasks, support);
        for (std::int64_t i = 0; i <= n_tasks; ++i) offsets[i] = i * n;
        for (std::int64_t i = 0; i < n_tasks; ++i) {
            if (i % 1024 == 0) check_interrupt();
            src.task(seed, step, first + i, X.data() + i * n * d, y.data() + i * n);
        }
        TaskData<T> data;
        data.X = {X.data(), rows, d};
        data.y = {y.data(), rows, 1};
        data.offsets = offsets.data();
        data.n_support = n_support.data();
        data.n_tasks = n_tasks;
        return data;
    }
};

}  // namespace metacore
