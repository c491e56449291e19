// Register-blocked products of a block of rows with a transposed weight matrix, for the narrow
// layers (tens to hundreds of units) meta-learning nets have: there a dot product per output
// spends more on its horizontal reduction than on its multiply-adds. Z tiles stay in registers
// while the inner dimension streams through: at the AVX-512 level 6 rows × up to 4 vectors of
// 64 bytes (24 of the 32 zmm registers), the columns past the last whole group of four in one
// tile whose last vector is masked; below it 4 rows × 2 vectors of 32 bytes, then one vector,
// then scalar columns. The vectors are GCC/Clang vector extensions, which
// each compilation of METACORE_KERNEL lowers to its own instruction set. Every entry of Z is
// one sequential sum over (term, k) in the same order in every tile shape, so the result does
// not depend on where a column or row falls in the tiling.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "metacore/simd.hpp"

#if METACORE_MULTIVERSION
#include <immintrin.h>
#endif

namespace metacore {

#if defined(__GNUC__)
#define METACORE_SMALL_GEMM 1

template <class T, int Bytes>
struct VecN {
    static constexpr std::int64_t lanes = Bytes / static_cast<int>(sizeof(T));
    typedef T type __attribute__((vector_size(Bytes)));
};
template <class T>
using Vec32 = VecN<T, 32>;

template <class T, int Bytes = 32>
METACORE_INLINE typename VecN<T, Bytes>::type vload(const T* p) {
    typename VecN<T, Bytes>::type v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <class T, int Bytes = 32>
METACORE_INLINE void vstore(T* p, typename VecN<T, Bytes>::type v) {
    std::memcpy(p, &v, sizeof v);
}

// The layers wide enough for the blocked kernels (a tail narrower than a vector runs scalar).
template <class T>
constexpr bool blocked_width(std::int64_t out) {
    return out >= Vec32<T>::lanes;
}

// One product operand: element (row, k) of A is A[row · rs + k · ks] (a row-major matrix, the
// transpose of one, or with rs = ks = 0 a constant), and B is row-major with k as its row index.
template <class T>
struct Operands {
    const T* A;
    std::int64_t rs, ks;
    const T* B;
};

// acc[r][:] += A[r · rs + kk] · w for the R rows of a tile: one inner step k (kk = k · ks).
template <class T, int Bytes, int R, int C>
METACORE_INLINE void rank_one(typename VecN<T, Bytes>::type (&acc)[R][C],
                              const typename VecN<T, Bytes>::type (&w)[C], const T* __restrict A,
                              std::int64_t rs, std::int64_t kk) {
    for (int r = 0; r < R; ++r) {
        const T a = A[r * rs + kk];
        for (int c = 0; c < C; ++c) acc[r][c] += a * w[c];
    }
}

// R rows × C vectors (of Bytes) of Z (ldz columns) at (r0, o0): Z = [Z if accumulate | bias | 0]
// + Σ_t Σ_k A_t(row, k) B_t[k, :] over `terms` operand pairs, each with K inner steps.
template <class T, int Bytes, int R, int C>
METACORE_INLINE void tile(const Operands<T>* ops, int terms, std::int64_t K, const T* bias,
                          bool accumulate, std::int64_t ldz, std::int64_t r0, std::int64_t o0,
                          T* __restrict Z) {
    using V = typename VecN<T, Bytes>::type;
    constexpr std::int64_t L = VecN<T, Bytes>::lanes;
    V acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c)
            acc[r][c] = accumulate ? vload<T, Bytes>(Z + (r0 + r) * ldz + o0 + c * L)
                                   : (bias ? vload<T, Bytes>(bias + o0 + c * L) : V{});
    for (int t = 0; t < terms; ++t) {
        const T* __restrict A = ops[t].A + r0 * ops[t].rs;
        const T* __restrict B = ops[t].B + o0;
        const std::int64_t rs = ops[t].rs, ks = ops[t].ks;
        for (std::int64_t k = 0; k < K; ++k) {
            V w[C];
            for (int c = 0; c < C; ++c) w[c] = vload<T, Bytes>(B + k * ldz + c * L);
            rank_one<T, Bytes, R, C>(acc, w, A, rs, k * ks);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) vstore<T, Bytes>(Z + (r0 + r) * ldz + o0 + c * L, acc[r][c]);
}

// Columns [o0, o0 + C·lanes) of every row, MR rows at a time.
template <class T, int Bytes, int MR, int C>
METACORE_INLINE void tile_rows(const Operands<T>* ops, int terms, std::int64_t rows,
                               std::int64_t K, const T* bias, bool accumulate, std::int64_t ldz,
                               std::int64_t o0, T* Z) {
    std::int64_t r = 0;
    for (; r + MR <= rows; r += MR) tile<T, Bytes, MR, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z);
    switch (rows - r) {
        case 5: if constexpr (MR > 5) tile<T, Bytes, 5, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        case 4: if constexpr (MR > 4) tile<T, Bytes, 4, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        case 3: tile<T, Bytes, 3, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        case 2: tile<T, Bytes, 2, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        case 1: tile<T, Bytes, 1, C>(ops, terms, K, bias, accumulate, ldz, r, o0, Z); break;
        default: break;
    }
}

// Columns [o0, ldz) narrower than a vector: one scalar sum per entry, in the tiles' order.
template <class T>
METACORE_INLINE void tail_columns(const Operands<T>* ops, int terms, std::int64_t rows,
                                  std::int64_t K, const T* bias, bool accumulate,
                                  std::int64_t ldz, std::int64_t o0, T* __restrict Z) {
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t o = o0; o < ldz; ++o) {
            T s = accumulate ? Z[r * ldz + o] : (bias ? bias[o] : T(0));
            for (int t = 0; t < terms; ++t) {
                const T* A = ops[t].A + r * ops[t].rs;
                const T* B = ops[t].B + o;
                const std::int64_t ks = ops[t].ks;
                for (std::int64_t k = 0; k < K; ++k) s += A[k * ks] * B[k * ldz];
            }
            Z[r * ldz + o] = s;
        }
}

// Z (rows × ldz) = [Z | bias | 0] + Σ_t A_t · B_t, each A_t (rows × K) and B_t (K × ldz), in
// 256-bit tiles (the AVX2 and baseline levels).
template <class T>
METACORE_INLINE void small_gemm_tiles(const Operands<T>* ops, int terms, std::int64_t rows,
                                      std::int64_t K, const T* bias, bool accumulate,
                                      std::int64_t ldz, T* Z) {
    constexpr std::int64_t L = Vec32<T>::lanes;
    std::int64_t o = 0;
    for (; o + 2 * L <= ldz; o += 2 * L)
        tile_rows<T, 32, 4, 2>(ops, terms, rows, K, bias, accumulate, ldz, o, Z);
    if (o + L <= ldz) {
        tile_rows<T, 32, 4, 1>(ops, terms, rows, K, bias, accumulate, ldz, o, Z);
        o += L;
    }
    if (o < ldz) tail_columns(ops, terms, rows, K, bias, accumulate, ldz, o, Z);
}

#if METACORE_MULTIVERSION
#define METACORE_V4_INLINE __attribute__((target("arch=x86-64-v4"), always_inline)) inline

// The first n lanes of a 64-byte vector at p (the others zero), and their store: AVX-512's masked
// moves, which touch no memory past the n elements.
template <class T>
METACORE_V4_INLINE typename VecN<T, 64>::type masked_load(const T* p, std::int64_t n) {
    using V = typename VecN<T, 64>::type;
    if constexpr (sizeof(T) == 4)
        return (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
    else
        return (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p);
}
template <class T>
METACORE_V4_INLINE void masked_store(T* p, std::int64_t n, typename VecN<T, 64>::type v) {
    if constexpr (sizeof(T) == 4)
        _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), (__m512)v);
    else
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), (__m512d)v);
}

// tile() for the last C vectors of the columns, the last of them holding only n < lanes columns
// (masked): the columns past a whole number of 512-bit vectors in one tile, the same sums in the
// same order as every other tile.
template <class T, int R, int C>
METACORE_V4_INLINE void masked_tile(const Operands<T>* ops, int terms, std::int64_t K,
                                    const T* bias, bool accumulate, std::int64_t ldz,
                                    std::int64_t r0, std::int64_t o0, std::int64_t n,
                                    T* __restrict Z) {
    using V = typename VecN<T, 64>::type;
    constexpr std::int64_t L = VecN<T, 64>::lanes;
    constexpr int F = C - 1;  // full vectors before the masked one
    using Lane = typename std::conditional<sizeof(T) == 4, std::int32_t, std::int64_t>::type;
    typedef Lane I __attribute__((vector_size(64)));
    I keep;  // all ones in the first n lanes
    for (std::int64_t j = 0; j < L; ++j) keep[j] = j < n ? Lane(-1) : Lane(0);
    V acc[R][C];
    for (int r = 0; r < R; ++r) {
        T* z = Z + (r0 + r) * ldz + o0;
        for (int c = 0; c < F; ++c)
            acc[r][c] = accumulate ? vload<T, 64>(z + c * L) : (bias ? vload<T, 64>(bias + o0 + c * L) : V{});
        acc[r][F] = accumulate ? masked_load(z + F * L, n)
                               : (bias ? masked_load(bias + o0 + F * L, n) : V{});
    }
    for (int t = 0; t < terms; ++t) {
        const T* __restrict A = ops[t].A + r0 * ops[t].rs;
        const T* __restrict B = ops[t].B + o0;
        const std::int64_t rs = ops[t].rs, ks = ops[t].ks;
        // B's row k is followed by row k + 1, so for k < K − 1 its last vector is read whole and
        // the lanes past the n columns cleared in registers. Only the last row needs the masked
        // load: GCC treats that builtin as reading any memory, so inside the loop it would keep
        // every accumulator in memory (one store per accumulator per step, measured).
        // (Every caller's rows hold at least L − n elements — blocked_width — checked anyway.)
        const std::int64_t whole = L - n <= ldz ? K - 1 : 0;
        std::int64_t k = 0;
        for (; k < whole; ++k) {
            V w[C];
            for (int c = 0; c < F; ++c) w[c] = vload<T, 64>(B + k * ldz + c * L);
            w[F] = (V)((I)vload<T, 64>(B + k * ldz + F * L) & keep);
            rank_one<T, 64, R, C>(acc, w, A, rs, k * ks);
        }
        for (; k < K; ++k) {
            V w[C];
            for (int c = 0; c < F; ++c) w[c] = vload<T, 64>(B + k * ldz + c * L);
            w[F] = masked_load(B + k * ldz + F * L, n);
            rank_one<T, 64, R, C>(acc, w, A, rs, k * ks);
        }
    }
    for (int r = 0; r < R; ++r) {
        T* z = Z + (r0 + r) * ldz + o0;
        for (int c = 0; c < F; ++c) vstore<T, 64>(z + c * L, acc[r][c]);
        masked_store(z + F * L, n, acc[r][F]);
    }
}

template <class T, int C>
METACORE_V4_INLINE void masked_tile_rows(const Operands<T>* ops, int terms, std::int64_t rows,
                                         std::int64_t K, const T* bias, bool accumulate,
                                         std::int64_t ldz, std::int64_t o0, std::int64_t n,
                                         T* Z) {
    std::int64_t r = 0;
    for (; r + 6 <= rows; r += 6) masked_tile<T, 6, C>(ops, terms, K, bias, accumulate, ldz, r, o0, n, Z);
    switch (rows - r) {
        case 5: masked_tile<T, 5, C>(ops, terms, K, bias, accumulate, ldz, r, o0, n, Z); break;
        case 4: masked_tile<T, 4, C>(ops, terms, K, bias, accumulate, ldz, r, o0, n, Z); break;
        case 3: masked_tile<T, 3, C>(ops, terms, K, bias, accumulate, ldz, r, o0, n, Z); break;
        case 2: masked_tile<T, 2, C>(ops, terms, K, bias, accumulate, ldz, r, o0, n, Z); break;
        case 1: masked_tile<T, 1, C>(ops, terms, K, bias, accumulate, ldz, r, o0, n, Z); break;
        default: break;
    }
}

// The AVX-512 level: 6 rows × 4 vectors of 64 bytes, then the remaining columns (fewer than four
// vectors) in one tile of 6 rows whose last vector is masked — no 256-bit or scalar tail.
template <class T>
METACORE_V4_INLINE void small_gemm_tiles_wide(const Operands<T>* ops, int terms,
                                              std::int64_t rows, std::int64_t K, const T* bias,
                                              bool accumulate, std::int64_t ldz, T* Z) {
    constexpr std::int64_t W = VecN<T, 64>::lanes;
    std::int64_t o = 0;
    for (; o + 4 * W <= ldz; o += 4 * W)
        tile_rows<T, 64, 6, 4>(ops, terms, rows, K, bias, accumulate, ldz, o, Z);
    const std::int64_t rest = ldz - o;
    if (rest == 0) return;
    const std::int64_t n = rest - (rest - 1) / W * W;  // columns of the last (masked) vector
    switch ((rest + W - 1) / W) {
        case 4: masked_tile_rows<T, 4>(ops, terms, rows, K, bias, accumulate, ldz, o, n, Z); break;
        case 3: masked_tile_rows<T, 3>(ops, terms, rows, K, bias, accumulate, ldz, o, n, Z); break;
        case 2: masked_tile_rows<T, 2>(ops, terms, rows, K, bias, accumulate, ldz, o, n, Z); break;
        default: masked_tile_rows<T, 1>(ops, terms, rows, K, bias, accumulate, ldz, o, n, Z); break;
    }
}
#endif

// The product compiled once per instruction-set level (not inlined into the kernels that call
// it: one copy per level, not one per call site).
#if METACORE_MULTIVERSION
template <class T>
__attribute__((target("arch=x86-64-v4"), noinline)) void small_gemm_v4(
    const Operands<T>* ops, int terms, std::int64_t rows, std::int64_t K, const T* bias,
    bool accumulate, std::int64_t ldz, T* Z) {
    small_gemm_tiles_wide<T>(ops, terms, rows, K, bias, accumulate, ldz, Z);
}
template <class T>
__attribute__((target("arch=x86-64-v3"), noinline)) void small_gemm_v3(
    const Operands<T>* ops, int terms, std::int64_t rows, std::int64_t K, const T* bias,
    bool accumulate, std::int64_t ldz, T* Z) {
    small_gemm_tiles<T>(ops, terms, rows, K, bias, accumulate, ldz, Z);
}
#endif
template <class T>
__attribute__((noinline)) void small_gemm_v1(const Operands<T>* ops, int terms, std::int64_t rows,
                                             std::int64_t K, const T* bias, bool accumulate,
                                             std::int64_t ldz, T* Z) {
    small_gemm_tiles<T>(ops, terms, rows, K, bias, accumulate, ldz, Z);
}

// Z (rows × ldz) = [Z | bias | 0] + Σ_t A_t · B_t, each A_t (rows × K) and B_t (K × ldz).
template <class T>
METACORE_INLINE void small_gemm(const Operands<T>* ops, int terms, std::int64_t rows,
                                std::int64_t K, const T* bias, bool accumulate, std::int64_t ldz,
                                T* Z) {
#if METACORE_MULTIVERSION
    switch (isa_level()) {
        case 2: small_gemm_v4<T>(ops, terms, rows, K, bias, accumulate, ldz, Z); return;
        case 1: small_gemm_v3<T>(ops, terms, rows, K, bias, accumulate, ldz, Z); return;
        default: break;
    }
#endif
    small_gemm_v1<T>(ops, terms, rows, K, bias, accumulate, ldz, Z);
}

// Z (b × out) = bias + A (b × in) · Bt (in × out) [+ A2 (b × in) · B2t (in × out) when A2].
template <class T>
METACORE_INLINE void rows_times_t(const T* A, const T* Bt, const T* A2, const T* B2t,
                                  const T* bias, std::int64_t b, std::int64_t in,
                                  std::int64_t out, T* Z) {
    const Operands<T> ops[2] = {{A, in, 1, Bt}, {A2, in, 1, B2t}};
    small_gemm(ops, A2 ? 2 : 1, b, in, bias, false, out, Z);
}

// gW (out × in) += Dᵀ A and gb (out) += Σ_r D[r, :] for D (b × out), A (b × in), when a blocked
// product fits: rows of A wide enough (gW += Dᵀ A with in as the vector dimension), or one input
// (gW is then a column, laid out like a row: gW += Aᵀ D with out as the vector dimension).
// The bias sum is the product of a row of ones with D. Returns false when neither fits.
// With D2, A2: gW also += D2ᵀ A2 after Dᵀ A in the same pass (no bias sum for it) — the same
// sums in the same order as a second call.
template <class T>
METACORE_INLINE bool outer_product_accumulate(const T* D, const T* A, std::int64_t b,
                                              std::int64_t in, std::int64_t out, T* gW, T* gb,
                                              const T* D2 = nullptr, const T* A2 = nullptr) {
    static const T one = T(1);
    const bool wide_in = blocked_width<T>(in), wide_out = blocked_width<T>(out);
    if (!wide_in && !(in == 1 && wide_out)) return false;
    const int terms = D2 ? 2 : 1;
    if (wide_in) {
        const Operands<T> ops[2] = {{D, 1, out, A}, {D2, 1, out, A2}};
        small_gemm(ops, terms, out, b, static_cast<const T*>(nullptr), true, in, gW);
    } else {
        const Operands<T> ops[2] = {{A, 1, 1, D}, {A2, 1, 1, D2}};
        small_gemm(ops, terms, 1, b, static_cast<const T*>(nullptr), true, out, gW);
    }
    if (wide_out) {
        const Operands<T> ones{&one, 0, 0, D};
        small_gemm(&ones, 1, 1, b, static_cast<const T*>(nullptr), true, out, gb);
    } else {
        for (std::int64_t r = 0; r < b; ++r)
            for (std::int64_t o = 0; o < out; ++o) gb[o] += D[r * out + o];
    }
    return true;
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
template <class T>
inline bool outer_product_accumulate(const T*, const T*, std::int64_t, std::int64_t,
                                     std::int64_t, T*, T*, const T* = nullptr,
                                     const T* = nullptr) {
    return false;
}
#endif

#if METACORE_SMALL_GEMM
// An 8 × 8 block: rows v[0..7] in, columns out, by the three interleaving stages of the usual
// AVX sequence (unpack, 64-bit shuffle, 128-bit permute) written as generic shuffles, which each
// instruction-set level lowers to its own instructions. Pure data movement: no rounding.
template <class T>
METACORE_INLINE void transpose8(typename VecN<T, 8 * sizeof(T)>::type* v) {
    using V = typename VecN<T, 8 * sizeof(T)>::type;
    using I = typename std::conditional<sizeof(T) == 4, std::int32_t, std::int64_t>::type;
    typedef I M __attribute__((vector_size(8 * sizeof(T))));
    const M lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const M s44 = {0, 1, 8, 9, 4, 5, 12, 13}, sEE = {2, 3, 10, 11, 6, 7, 14, 15};
    const M p20 = {0, 1, 2, 3, 8, 9, 10, 11}, p31 = {4, 5, 6, 7, 12, 13, 14, 15};
    V t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], lo);
        t[2 * i + 1] = __builtin_shuffle(v[2 * i], v[2 * i + 1], hi);
    }
    for (int h = 0; h < 2; ++h)  // rows 0-3 (h = 0) and 4-7 (h = 1)
        for (int i = 0; i < 2; ++i) {
            u[4 * h + 2 * i] = __builtin_shuffle(t[4 * h + i], t[4 * h + i + 2], s44);
            u[4 * h + 2 * i + 1] = __builtin_shuffle(t[4 * h + i], t[4 * h + i + 2], sEE);
        }
    for (int c = 0; c < 4; ++c) {
        v[c] = __builtin_shuffle(u[c], u[c + 4], p20);
        v[c + 4] = __builtin_shuffle(u[c], u[c + 4], p31);
    }
}
#endif

#if METACORE_SMALL_GEMM
// The 8 × 8 block of Wt at rows i0.., columns o0.. from W's rows o0.., columns i0...
template <class T>
METACORE_INLINE void transpose_block(const T* __restrict W, std::int64_t out, std::int64_t in,
                                     T* __restrict Wt, std::int64_t o0, std::int64_t i0) {
    using V = typename VecN<T, 8 * sizeof(T)>::type;
    V v[8];
    for (int r = 0; r < 8; ++r) std::memcpy(&v[r], W + (o0 + r) * in + i0, sizeof(V));
    transpose8<T>(v);
    for (int c = 0; c < 8; ++c) std::memcpy(Wt + (i0 + c) * out + o0, &v[c], sizeof(V));
}
#endif

// Wt (in × out) = Wᵀ for W (out × in): full 8 × 8 blocks in registers, the edges one by one.
constexpr std::int64_t kTransposeInL1Bytes = 32 << 10;   // a W this small stays in L1 either way
template <class T>
METACORE_INLINE void transpose_body(const T* __restrict W, std::int64_t out, std::int64_t in,
                                    T* __restrict Wt) {
    constexpr std::int64_t S = 8;
    std::int64_t o8 = 0, i8 = 0;
#if METACORE_SMALL_GEMM
    o8 = out - out % S;
    i8 = in - in % S;
    if (out * in * static_cast<std::int64_t>(sizeof(T)) <= kTransposeInL1Bytes) {
        for (std::int64_t o0 = 0; o0 < o8; o0 += S)   // all in L1: row by row of W
            for (std::int64_t i0 = 0; i0 < i8; i0 += S) transpose_block(W, out, in, Wt, o0, i0);
    } else {
        // Down a strip of W's columns, so that Wt's rows fill in order (whole cache lines, no
        // line written half and evicted before its other half comes: at width 512 the row-by-row
        // order made the transposes 37 % of the MAML meta-step); two blocks per row where the
        // strip is 2S wide, so every line of W read is used whole.
        for (std::int64_t i0 = 0; i0 < i8; i0 += 2 * S) {
            if (i0 + 2 * S <= i8)
                for (std::int64_t o0 = 0; o0 < o8; o0 += S) {
                    transpose_block(W, out, in, Wt, o0, i0);
                    transpose_block(W, out, in, Wt, o0, i0 + S);
                }
            else
                for (std::int64_t o0 = 0; o0 < o8; o0 += S) transpose_block(W, out, in, Wt, o0, i0);
        }
    }
#endif
    // the edges: columns i >= i8 of every row, and rows o >= o8 of the first i8 columns
    for (std::int64_t i = i8; i < in; ++i)
        for (std::int64_t o = 0; o < out; ++o) Wt[i * out + o] = W[o * in + i];
    for (std::int64_t i = 0; i < i8; ++i)
        for (std::int64_t o = o8; o < out; ++o) Wt[i * out + o] = W[o * in + i];
}
METACORE_KERNEL(void, transpose, (const T* W, std::int64_t out, std::int64_t in, T* Wt),
                (W, out, in, Wt))

}  // namespace metacore
