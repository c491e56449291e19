// The hot loops: one work unit (a run of one task's rows) pushed through the net block by block.
// These are the functions compiled once per instruction set (METACORE_CLONES).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "metacore/net_pass.hpp"
#include "metacore/simd.hpp"
#include "metacore/tasks.hpp"

namespace metacore {

// How many rows after `next` the forward pass should prefetch (the following block, which is
// usually the next task's first rows when this unit ends).
template <class T>
METACORE_INLINE std::int64_t rows_ahead(const TaskData<T>& data, std::int64_t next) {
    constexpr std::int64_t B = NetPass<T>::kBlock;
    return next + B < data.X.rows ? B : (next < data.X.rows ? data.X.rows - next : 0);
}

// Σ of the unit's row losses; grad (when not null) += scale · Σ ∇θ ℓ_row.
template <class T>
METACORE_CLONES double unit_value_grad(NetPass<T>& pass, const T* theta, const TaskData<T>& data,
                                       const WorkUnit& unit, std::int64_t head, T scale, T* grad) {
    constexpr std::int64_t B = NetPass<T>::kBlock;
    double loss = 0.0;
    for (std::int64_t r = unit.begin; r < unit.end; r += B) {
        const std::int64_t b = unit.end - r < B ? unit.end - r : B;
        const T* X = data.X.row(r);
        const std::int64_t ahead = rows_ahead(data, r + b);
        pass.forward(theta, X, b, head, ahead ? data.X.row(r + b) : nullptr, ahead);
        loss += pass.loss_grad(data.y.row(r), data.y.cols, b, scale);
        if (grad) pass.backward(theta, X, b, head, grad);
    }
    return loss;
}

// A thread's copy of one block of sampled rows: sampled rows are scattered in X, and the passes
// want a block's rows contiguous.
template <class T>
struct RowGather {
    std::vector<T> X, y;
    RowGather(std::int64_t x_cols, std::int64_t y_cols)
        : X(NetPass<T>::kBlock * x_cols), y(NetPass<T>::kBlock * y_cols) {}
};

// unit_value_grad for a unit of sampled rows (unit.rows set): each block is gathered first.
template <class T>
METACORE_CLONES double unit_value_grad_gathered(NetPass<T>& pass, const T* theta,
                                                const TaskData<T>& data, const WorkUnit& unit,
                                                std::int64_t head, T scale, T* grad,
                                                RowGather<T>& buf) {
    constexpr std::int64_t B = NetPass<T>::kBlock;
    const std::int64_t d = data.X.cols, k = data.y.cols;
    double loss = 0.0;
    for (std::int64_t r = unit.begin; r < unit.end; r += B) {
        const std::int64_t b = unit.end - r < B ? unit.end - r : B;
        for (std::int64_t j = 0; j < b; ++j) {
            const std::int64_t row = unit.rows[r + j];
            std::copy(data.X.row(row), data.X.row(row) + d, buf.X.data() + j * d);
            std::copy(data.y.row(row), data.y.row(row) + k, buf.y.data() + j * k);
        }
        pass.forward(theta, buf.X.data(), b, head);
        loss += pass.loss_grad(buf.y.data(), k, b, scale);
        if (grad) pass.backward(theta, buf.X.data(), b, head, grad);
    }
    return loss;
}

// hv += scale · Σ H_row v over the unit's rows (forward-over-reverse).
template <class T>
METACORE_CLONES void unit_hvp(NetPass<T>& pass, const T* theta, const T* v,
                              const TaskData<T>& data, const WorkUnit& unit, std::int64_t head,
                              T scale, T* hv) {
    constexpr std::int64_t B = NetPass<T>::kBlock;
    for (std::int64_t r = unit.begin; r < unit.end; r += B) {
        const std::int64_t b = unit.end - r < B ? unit.end - r : B;
        const T* X = data.X.row(r);
        pass.forward(theta, X, b, head);
        pass.forward_tangent(theta, v, X, b, head);
        pass.loss_grad(data.y.row(r), data.y.cols, b, scale);
        pass.loss_tangent(b, scale);
        pass.backward_tangent(theta, v, X, b, head, hv);
    }
}

// out = Σ_b parts[b] (in block order) for each of n entries.
template <class T>
METACORE_CLONES void sum_blocks(const T* parts, std::int64_t n_blocks, std::int64_t n,
                                std::int64_t begin, std::int64_t end, T* out) {
    for (std::int64_t j = begin; j < end; ++j) out[j] = T(0);
    for (std::int64_t b = 0; b < n_blocks; ++b) {
        const T* p = parts + b * n;
#pragma omp simd
        for (std::int64_t j = begin; j < end; ++j) out[j] += p[j];
    }
}

}  // namespace metacore
