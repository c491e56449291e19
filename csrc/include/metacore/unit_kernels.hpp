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
    const std::int64_t B = pass.block_rows(unit.end - unit.begin);
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
// `next` (may be null) is the unit that comes after, whose first rows the last block prefetches.
template <class T>
METACORE_CLONES double unit_value_grad_gathered(NetPass<T>& pass, const T* theta,
                                                const TaskData<T>& data, const WorkUnit& unit,
                                                const WorkUnit* next, std::int64_t head, T scale,
                                                T* grad, RowGather<T>& buf) {
    const std::int64_t B = pass.block_rows(unit.end - unit.begin);
    const std::int64_t d = data.X.cols, k = data.y.cols;
    if (static_cast<std::int64_t>(buf.X.size()) < B * d) {  // batch statistics: one block
        buf.X.resize(B * d);
        buf.y.resize(B * k);
    }
    const std::int64_t row_bytes = d * static_cast<std::int64_t>(sizeof(T));
    double loss = 0.0;
    for (std::int64_t r = unit.begin; r < unit.end; r += B) {
        const std::int64_t b = unit.end - r < B ? unit.end - r : B;
        // Scattered rows defeat the hardware prefetcher: ask for the next block's rows (this
        // unit's, or the next unit's), one per row copied, so that few requests are in flight.
        const WorkUnit* ahead = r + B < unit.end ? &unit : (next && next->rows ? next : nullptr);
        const std::int64_t ahead_at = ahead == &unit ? r + B : (ahead ? ahead->begin : 0);
        for (std::int64_t j = 0; j < b; ++j) {
            if (ahead && ahead_at + j < ahead->end)
                prefetch(data.X.row(ahead->rows[ahead_at + j]), row_bytes);
            const std::int64_t row = unit.rows[r + j];
            const T* __restrict x = data.X.row(row);
            T* __restrict to = buf.X.data() + j * d;
            for (std::int64_t c = 0; c < d; ++c) to[c] = x[c];
            for (std::int64_t c = 0; c < k; ++c) buf.y[j * k + c] = data.y.row(row)[c];
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
    const std::int64_t B = pass.block_rows(unit.end - unit.begin);
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

}  // namespace metacore
