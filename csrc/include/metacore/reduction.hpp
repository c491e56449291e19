// The one reduction scheme for every parallel sum in the core. Work is cut into blocks fixed by the
// problem (never by the thread count); block b adds its share into its own row of a partials
// buffer, and the rows are summed in block order. Floating-point addition is not associative, so
// this, not locks or atomics, is what makes results bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "metacore/simd.hpp"
#include "metacore/threading.hpp"

namespace metacore {

// out[begin, end) = Σ_b parts[b][begin, end), b in order (parts: n_blocks rows of n entries).
template <class T>
METACORE_INLINE void sum_blocks_body(const T* parts, std::int64_t n_blocks, std::int64_t n,
                                std::int64_t begin, std::int64_t end, T* out) {
    for (std::int64_t j = begin; j < end; ++j) out[j] = T(0);
    for (std::int64_t b = 0; b < n_blocks; ++b) {
        const T* p = parts + b * n;
#pragma omp simd
        for (std::int64_t j = begin; j < end; ++j) out[j] += p[j];
    }
}
METACORE_KERNEL(void, sum_blocks,
                (const T* parts, std::int64_t n_blocks, std::int64_t n, std::int64_t begin, std::int64_t end, T* out),
                (parts, n_blocks, n, begin, end, out))

// The parallel half: body(b, thread, row) adds block b's share into row = parts + b·n (parts:
// n_blocks × n, zeroed by the caller; null when only the body's side outputs are wanted, and then
// row is null). Blocks run on `threads` threads, a team the caller sized for the body's work.
template <class T, class Body>
void accumulate_blocks(std::int64_t n_blocks, std::int64_t n, T* parts, int threads, Body&& body) {
    parallel_for(n_blocks, threads, [&](std::int64_t b, int tid) {
        body(b, tid, parts ? parts + b * n : nullptr);
    });
}

// The ordered half: out (n) = Σ_b parts[b] in block order. Column chunks run in parallel (at most
// `threads`); each entry is still summed over the blocks in order, so chunking changes no bit.
template <class T>
void sum_partials(const T* parts, std::int64_t n_blocks, std::int64_t n, T* out, int threads) {
    constexpr std::int64_t kCols = 4096;
    const std::int64_t chunks = (n + kCols - 1) / kCols;
    parallel_for(chunks, team_for(n_blocks * n, threads, chunks), [&](std::int64_t c, int) {
        sum_blocks(parts, n_blocks, n, c * kCols, std::min(n, (c + 1) * kCols), out);
    });
}

// Both halves: out (n) = Σ_b (what body adds for block b), summed in block order; `parts` is
// scratch the caller may keep between calls. On one thread the blocks take turns in one row,
// added into out as each block ends: the same additions in the same order as a row per block,
// without n_blocks rows to zero and read back (26 MB per MAML meta-step at hidden width 512).
template <class T, class Body>
void ordered_reduce(std::int64_t n_blocks, std::int64_t n, int threads, std::vector<T>& parts,
                    T* out, Body&& body) {
    if (threads <= 1) {
        parts.resize(n);
        std::fill(out, out + n, T(0));
        for (std::int64_t b = 0; b < n_blocks; ++b) {
            check_interrupt();  // between blocks, as parallel_for does
            std::fill(parts.begin(), parts.end(), T(0));
            body(b, 0, parts.data());
            add_scaled(T(1), parts.data(), n, out);  // 1·x is x: out += row, entry by entry
        }
        return;
    }
    parts.assign(n_blocks * n, T(0));
    accumulate_blocks(n_blocks, n, parts.data(), threads, body);
    sum_partials(parts.data(), n_blocks, n, out, threads);
}

// The scalar case: Σ_b term(b) in double, the terms computed in parallel and added in block order.
template <class Term>
double ordered_sum(std::int64_t n_blocks, int threads, Term&& term) {
    std::vector<double> parts;
    double sum = 0.0;
    ordered_reduce<double>(n_blocks, 1, threads, parts, &sum,
                           [&](std::int64_t b, int, double* row) { row[0] += term(b); });
    return sum;
}

}  // namespace metacore
