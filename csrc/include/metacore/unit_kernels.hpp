// The hot loops: one work unit (a run of one task's rows) pushed through the net block by block.
// These are the functions compiled once per instruction set (METACORE_KERNEL, simd.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "metacore/net_pass.hpp"
#include "metacore/simd.hpp"
#include "metacore/small_gemm.hpp"
#include "metacore/tasks.hpp"
#include "metacore/vector_math.hpp"

namespace metacore {

// How many rows after `next` the forward pass should prefetch (the following block, which is
// usually the next task's first rows when this unit ends).
template <class T>
METACORE_INLINE std::int64_t rows_ahead(const TaskData<T>& data, std::int64_t next) {
    constexpr std::int64_t B = NetPass<T>::kBlock;
    return next + B < data.X.rows ? B : (next < data.X.rows ? data.X.rows - next : 0);
}

#if METACORE_SMALL_GEMM
// z[r] = bias + acc[r][0] + acc[r][1] + … in lane order, for R accumulators of L lanes. Eight
// rows of 8-lane vectors (64-bit lanes at AVX-512, 32-bit at AVX2) are transposed in registers
// (and 16-lane vectors as two halves), so that one vector add serves all R rows at each lane:
// the same sums in the same order as the row-by-row loop, which the other shapes keep.
template <class T, int Bytes, int R>
METACORE_INLINE void lane_sums(const typename VecN<T, Bytes>::type* acc, T bias, T* z) {
    constexpr std::int64_t L = VecN<T, Bytes>::lanes;
    using V8 = typename VecN<T, 8 * sizeof(T)>::type;
    if constexpr (R == 8 && (L == 8 || L == 16)) {
        V8 sum;
        for (int r = 0; r < 8; ++r) sum[r] = bias;
        for (std::int64_t h = 0; h < L; h += 8) {  // one half of every row at a time
            V8 t[8];
            for (int r = 0; r < 8; ++r) std::memcpy(&t[r], reinterpret_cast<const T*>(&acc[r]) + h, sizeof(V8));
            transpose8<T>(t);  // t[l][r] = acc[r][h + l]
            for (int l = 0; l < 8; ++l) sum += t[l];
        }
        std::memcpy(z, &sum, sizeof sum);
    } else {
        for (int r = 0; r < R; ++r) {
            T s = bias;
            for (std::int64_t l = 0; l < L; ++l) s += acc[r][l];
            z[r] = s;
        }
    }
}

// R rows of the one-layer logistic model in one pass over their features: z_r = b + w·x_r with
// one vector accumulator per row (summed across lanes at the end, in lane order), the loss and
// δ_r = scale (σ(z_r) − y_r) from logistic_row, then gW += Σ_r δ_r x_r and gb += Σ_r δ_r while the rows are still in L1.
// ahead (or null): R rows to prefetch, a line of each per step of the dot products — a separate
// prefetch loop cost more instructions than the rows' arithmetic when X is already in cache.
template <class T, int Bytes, int R>
METACORE_INLINE double logistic_rows(const T* __restrict w, T bias, const T* __restrict X,
                                     const T* __restrict y, std::int64_t d, T scale,
                                     T* __restrict gW, T* __restrict gb, const T* ahead = nullptr) {
    using V = typename VecN<T, Bytes>::type;
    constexpr std::int64_t L = VecN<T, Bytes>::lanes;
    const std::int64_t dv = d - d % L;
    V acc[R];
    for (int r = 0; r < R; ++r) acc[r] = V{};
    for (std::int64_t j = 0; j < dv; j += L) {
        const V wj = vload<T, Bytes>(w + j);
        if (ahead)  // the same columns of R rows further on, into L2: no loop of its own
            for (int r = 0; r < R; ++r) prefetch(ahead + r * d + j, 1);
        for (int r = 0; r < R; ++r) acc[r] += vload<T, Bytes>(X + r * d + j) * wj;
    }
    T z[R], delta[R];
    lane_sums<T, Bytes, R>(acc, bias, z);
    for (int r = 0; r < R; ++r)
        for (std::int64_t j = dv; j < d; ++j) z[r] += X[r * d + j] * w[j];
    // The head across the R rows at once (one exp and one log1p per row, in vector lanes); the
    // row losses are then added in row order, as one row at a time would.
    double row_loss[R];
    const double c = static_cast<double>(scale);
#pragma omp simd
    for (int r = 0; r < R; ++r) {
        double dz;
        row_loss[r] = logistic_row(z[r], y[r], &dz);
        delta[r] = static_cast<T>(c * dz);
    }
    double loss = 0.0;
    for (int r = 0; r < R; ++r) loss += row_loss[r];
    if (gW) {
        for (std::int64_t j = 0; j < dv; j += L) {
            V g = vload<T, Bytes>(gW + j);
            for (int r = 0; r < R; ++r) g += delta[r] * vload<T, Bytes>(X + r * d + j);
            vstore<T, Bytes>(gW + j, g);
        }
        for (std::int64_t j = dv; j < d; ++j) {
            T g = gW[j];
            for (int r = 0; r < R; ++r) g += delta[r] * X[r * d + j];
            gW[j] = g;
        }
        T sb = *gb;
        for (int r = 0; r < R; ++r) sb += delta[r];
        *gb = sb;
    }
    return loss;
}

// The one-layer logistic model (logistic regression) over rows [begin, end): Σ of the row
// losses; grad (when not null) += scale · Σ ∇θ ℓ_row. Eight rows at a time, then the rest.
template <class T, int Bytes>
METACORE_INLINE double logistic_unit(const T* w, T bias, const TaskData<T>& data,
                                     std::int64_t begin, std::int64_t end, T scale, T* gW,
                                     T* gb) {
    constexpr int R = 8;
    const std::int64_t d = data.X.cols;
    const std::int64_t y_cols = data.y.cols;
    double loss = 0.0;
    std::int64_t r = begin;
    T yb[R];
    for (; r + R <= end; r += R) {
        for (int i = 0; i < R; ++i) yb[i] = data.y.row(r + i)[0];
        // the group after next: contiguous rows, but far enough ahead to hide L3/DRAM latency
        const T* ahead = r + 3 * R <= data.X.rows ? data.X.row(r + 2 * R) : nullptr;
        loss += logistic_rows<T, Bytes, R>(w, bias, data.X.row(r), y_cols == 1 ? data.y.row(r) : yb,
                                           d, scale, gW, gb, ahead);
    }
    for (; r < end; ++r)
        loss += logistic_rows<T, Bytes, 1>(w, bias, data.X.row(r), data.y.row(r), d, scale, gW, gb);
    return loss;
}
#endif

// True when the net is one dense layer with one output and the logistic head.
inline bool is_logistic_regression(const NetSpec& net) {
    return net.n_layers() == 1 && net.loss() == Loss::logistic && net.n_outputs() == 1;
}

// Σ of the unit's row losses; grad (when not null) += scale · Σ ∇θ ℓ_row.
template <class T>
METACORE_INLINE double unit_value_grad_body(NetPass<T>& pass, const T* theta, const TaskData<T>& data,
                                       const WorkUnit& unit, std::int64_t head, T scale, T* grad) {
    const std::int64_t B = pass.block_rows(unit.end - unit.begin);
#if METACORE_SMALL_GEMM
    if (is_logistic_regression(pass.net())) {
        const NetSpec& net = pass.net();
        const T* w = theta + net.weight_offset(0, head);
        const T bias = theta[net.bias_offset(0, head)];
        T* gW = grad ? grad + net.weight_offset(0, head) : nullptr;
        T* gb = grad ? grad + net.bias_offset(0, head) : nullptr;
        return isa_level() >= 2
                   ? logistic_unit<T, 64>(w, bias, data, unit.begin, unit.end, scale, gW, gb)
                   : logistic_unit<T, 32>(w, bias, data, unit.begin, unit.end, scale, gW, gb);
    }
#endif
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
METACORE_KERNEL(double, unit_value_grad,
                (NetPass<T>& pass, const T* theta, const TaskData<T>& data, const WorkUnit& unit, std::int64_t head, T scale, T* grad),
                (pass, theta, data, unit, head, scale, grad))

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
METACORE_INLINE double unit_value_grad_gathered_body(NetPass<T>& pass, const T* theta,
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
METACORE_KERNEL(double, unit_value_grad_gathered,
                (NetPass<T>& pass, const T* theta, const TaskData<T>& data, const WorkUnit& unit, const WorkUnit* next, std::int64_t head, T scale, T* grad, RowGather<T>& buf),
                (pass, theta, data, unit, next, head, scale, grad, buf))

// hv += scale · Σ H_row v over the unit's rows (forward-over-reverse).
template <class T>
METACORE_INLINE void unit_hvp_body(NetPass<T>& pass, const T* theta, const T* v,
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
METACORE_KERNEL(void, unit_hvp,
                (NetPass<T>& pass, const T* theta, const T* v, const TaskData<T>& data, const WorkUnit& unit, std::int64_t head, T scale, T* hv),
                (pass, theta, v, data, unit, head, scale, hv))

}  // namespace metacore
