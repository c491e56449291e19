// Register-blocked products of a block of rows with a transposed weight matrix, for the narrow
// layers (tens of units) meta-learning nets have: there a dot product per output spends more
// on its horizontal reduction than on its multiply-adds. Z tiles of up to 4 rows × 2 vectors stay
// in registers while the inner dimension streams through; vectors are 32 bytes (GCC/Clang vector
// extensions), which every clone of METACORE_CLONES lowers to its own instruction set.
#pragma once

#include <cstdint>
#include <cstring>

#include "metacore/simd.hpp"

namespace metacore {

#if defined(__GNUC__)
#define METACORE_SMALL_GEMM 1

template <class T>
struct Vec32 {
    static constexpr std::int64_t lanes = 32 / sizeof(T);
    typedef T type __attribute__((vector_size(32)));
};

template <class T>
METACORE_INLINE typename Vec32<T>::type vload(const T* p) {
    typename Vec32<T>::type v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <class T>
METACORE_INLINE void vstore(T* p, typename Vec32<T>::type v) {
    std::memcpy(p, &v, sizeof v);
}

// The layers whose outputs fill whole vectors use the blocked kernels.
template <class T>
constexpr bool blocked_width(std::int64_t out) {
    return out % Vec32<T>::lanes == 0;
}

// One product operand: element (row, k) of A is A[row · rs + k · ks] (a row-major matrix, or
// the transpose of one), and B is row-major with k as its row index.
template <class T>
struct Operands {
    const T* A;
    std::int64_t rs, ks;
    const T* B;
};

// R rows × C vectors of Z (ldz columns) at (r0, o0): Z = [Z if accumulate | bias | 0]
// + Σ_k A(row, k) B[k, :] over `terms` operand pairs, each with K inner steps.
template <class T, int R, int C>
METACORE_INLINE void tile(const Operands<T>* ops, int terms, std::int64_t K, const T* bias,
                          bool accumulate, std::int64_t ldz, std::int64_t r0, std::int64_t o0,
                          T* __restrict Z) {
    using V = typename Vec32<T>::type;
    constexpr std::int64_t L = Vec32<T>::lanes;
    V acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c)
            acc[r][c] = accumulate ? vload(Z + (r0 + r) * ldz + o0 + c * L)
                                   : (bias ? vload(bias + o0 + c * L) : V{});
    for (int t = 0; t < terms; ++t) {
        const T* __restrict A = ops[t].A + r0 * ops[t].rs;
        const T* __restrict B = ops[t].B + o0;
        const std::int64_t rs = ops[t].rs, ks = ops[t].ks;
        for (std::int64_t k = 0; k < K; ++k) {
            V w[C];
            for (int c = 0; c < C; ++c) w[c] = vload(B + k * ldz + c * L);
            for (int r = 0; r < R; ++r) {
                const T a = A[r * rs + k * ks];
                for (int c = 0; c < C; ++c) acc[r][c] += a * w[c];
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) vstore(Z + (r0 + r) * ldz + o0 + c * L, acc[r][c]);
}

template <class T, int C>
METACORE_INLINE void tile_rows(const Operands<T>* ops, int terms, std::int64_t rows,
                               std::int64_t K, const T* bias, bool accumulate, std::int64_t ldz,
                               std::int64_t o0, T* Z) {
    std::int64_t r = 0;
    for (; r + 4 <= rows; r += 4) tile<T, 4, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z);
    switch (rows - r) {
        case 3: tile<T, 3, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        case 2: tile<T, 2, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        case 1: tile<T, 1, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        default: break;
    }
}

// Z (rows × ldz) = [Z | bias | 0] + Σ_t A_t · B_t, each A_t (rows × K) and B_t (K × ldz).
// ldz must be a multiple of Vec32<T>::lanes.
template <class T>
METACORE_INLINE void small_gemm(const Operands<T>* ops, int terms, std::int64_t rows,
                                std::int64_t K, const T* bias, bool accumulate, std::int64_t ldz,
                                T* Z) {
    constexpr std::int64_t L = Vec32<T>::lanes;
    std::int64_t o = 0;
    for (; o + 2 * L <= ldz; o += 2 * L)
        tile_rows<T, 2>(ops, terms, rows, K, bias, accumulate, ldz, o, Z);
    if (o < ldz) tile_rows<T, 1>(ops, terms, rows, K, bias, accumulate, ldz, o, Z);
}

// Z (b × out) = bias + A (b × in) · Bt (in × out) [+ A2 (b × in) · B2t (in × out) when A2].
template <class T>
METACORE_INLINE void rows_times_t(const T* A, const T* Bt, const T* A2, const T* B2t,
                                  const T* bias, std::int64_t b, std::int64_t in,
                                  std::int64_t out, T* Z) {
    const Operands<T> ops[2] = {{A, in, 1, Bt}, {A2, in, 1, B2t}};
    small_gemm(ops, A2 ? 2 : 1, b, in, bias, false, out, Z);
}

#else
#define METACORE_SMALL_GEMM 0
// Without vector extensions the callers keep their dot/axpy loops (blocked_width is false).
template <class T>
constexpr bool blocked_width(std::int64_t) {
    return false;
}
template <class T>
struct Operands {
    const T* A;
    std::int64_t rs, ks;
    const T* B;
};
template <class T>
inline void small_gemm(const Operands<T>*, int, std::int64_t, std::int64_t, const T*, bool,
                       std::int64_t, T*) {}
template <class T>
inline void rows_times_t(const T*, const T*, const T*, const T*, const T*, std::int64_t,
                         std::int64_t, std::int64_t, T*) {}
#endif

// Wt (in × out) = Wᵀ for W (out × in).
template <class T>
METACORE_INLINE void transpose(const T* W, std::int64_t out, std::int64_t in, T* Wt) {
    for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t i = 0; i < in; ++i) Wt[i * out + o] = W[o * in + i];
}

}  // namespace metacore
