// Packed tasks as the core sees them, and the fixed partition of their rows into work units and
// reduction blocks. The partition depends only on the data and θ's size, never on the thread
// count, which is what makes every result bit-identical for any number of threads.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/view.hpp"

namespace metacore {

enum class Rows { all, support, query };

// Task i is rows offsets[i]:offsets[i+1] of X and y; its first n_support[i] rows are support
// rows; it uses output head heads[i] when the net has per-task heads.
template <class T>
struct TaskData {
    MatrixView<const T> X;
    MatrixView<const T> y;
    const std::int64_t* offsets = nullptr;
    const std::int64_t* n_support = nullptr;
    const std::int64_t* heads = nullptr;
    std::int64_t n_tasks = 0;

    std::int64_t begin(std::int64_t i, Rows rows) const {
        return rows == Rows::query ? offsets[i] + n_support[i] : offsets[i];
    }
    std::int64_t end(std::int64_t i, Rows rows) const {
        return rows == Rows::support ? offsets[i] + n_support[i] : offsets[i + 1];
    }
};

// Rows begin:end of X; or, when `rows` is set, the rows rows[begin:end] (a sampled subset).
struct WorkUnit {
    std::int64_t task, begin, end;
    const std::int64_t* rows = nullptr;
};

struct WorkPlan {
    std::vector<WorkUnit> units;             // in task order, then row order
    std::vector<std::int64_t> block_start;   // block b = units[block_start[b]:block_start[b+1]]
    std::vector<std::int64_t> task_rows;     // chosen rows per task
    std::int64_t total_rows = 0;

    std::int64_t n_blocks() const { return static_cast<std::int64_t>(block_start.size()) - 1; }
};

constexpr std::int64_t kUnitRows = 1024;              // a large task is split into such chunks
constexpr std::int64_t kMaxBlocks = 128;              // partial sums kept per reduction
constexpr std::int64_t kPartialBytes = 128ll << 20;   // memory cap on those partial sums

// Groups plan.units (already in task order) into reduction blocks of about equal row counts:
// at most kMaxBlocks, fewer when P is so large that their partial sums would pass kPartialBytes.
inline void assign_blocks(WorkPlan& plan, std::int64_t n_params, std::int64_t elem_bytes) {
    // kPartialBytes / (n_params · elem_bytes), without forming the product (it may pass int64).
    std::int64_t max_blocks = kPartialBytes / elem_bytes / (n_params < 1 ? 1 : n_params);
    max_blocks = max_blocks < 1 ? 1 : (max_blocks > kMaxBlocks ? kMaxBlocks : max_blocks);
    const std::int64_t target = (plan.total_rows + max_blocks - 1) / max_blocks;
    plan.block_start.assign(1, 0);
    std::int64_t acc = 0;
    for (std::int64_t u = 0; u < static_cast<std::int64_t>(plan.units.size()); ++u) {
        acc += plan.units[u].end - plan.units[u].begin;
        if (acc >= target) {
            plan.block_start.push_back(u + 1);
            acc = 0;
        }
    }
    if (plan.block_start.back() != static_cast<std::int64_t>(plan.units.size()))
        plan.block_start.push_back(static_cast<std::int64_t>(plan.units.size()));
}

// Appends task i's rows [b, e) (positions into `rows` when it is set) as units of kUnitRows.
inline void add_task_rows(WorkPlan& plan, std::int64_t i, std::int64_t b, std::int64_t e,
                          const std::int64_t* rows = nullptr) {
    plan.task_rows[i] += e - b;
    plan.total_rows += e - b;
    for (std::int64_t s = b; s < e; s += kUnitRows)
        plan.units.push_back({i, s, s + kUnitRows < e ? s + kUnitRows : e, rows});
}

template <class T>
WorkPlan plan_work(const TaskData<T>& data, Rows rows, std::int64_t n_params) {
    WorkPlan plan;
    plan.task_rows.assign(data.n_tasks, 0);
    for (std::int64_t i = 0; i < data.n_tasks; ++i) {
        const std::int64_t b = data.begin(i, rows), e = data.end(i, rows);
        if (e <= b)
            throw std::invalid_argument("rows: task " + std::to_string(i) +
                                        " has no rows of the chosen kind");
        add_task_rows(plan, i, b, e);
    }
    assign_blocks(plan, n_params, static_cast<std::int64_t>(sizeof(T)));
    return plan;
}

}  // namespace metacore
