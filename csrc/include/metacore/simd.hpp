// Vector kernels shared by every pass, and the attributes that let the hot loops run with the
// widest SIMD the CPU has without -march=native: the top-level kernels are compiled several times
// (AVX-512, AVX2+FMA, baseline) and the loader picks one at start-up (GCC/Clang function
// multi-versioning). Small helpers are force-inlined so they take the caller's instruction set.
// A cloned function must not throw: GCC's clone dispatch does not unwind (std::terminate).
#pragma once

#include <cstdint>

#if defined(__GNUC__)
#define METACORE_INLINE inline __attribute__((always_inline))
#else
#define METACORE_INLINE inline
#endif

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(METACORE_NATIVE)
#define METACORE_MULTIVERSION 1
#define METACORE_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define METACORE_MULTIVERSION 0
#define METACORE_CLONES
#endif

namespace metacore {

// Σ a_i b_i in a fixed, thread-independent order (the vector lanes are fixed at compile time).
template <class T>
METACORE_INLINE T dot(const T* __restrict a, const T* __restrict b, std::int64_t n) {
    T s = T(0);
#pragma omp simd reduction(+ : s)
    for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// y += alpha · x
template <class T>
METACORE_INLINE void axpy(T alpha, const T* __restrict x, T* __restrict y, std::int64_t n) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Asks the memory system for [p, p + bytes) ahead of use: streaming over X with arithmetic in
// between leaves the hardware prefetcher behind.
METACORE_INLINE void prefetch(const void* p, std::int64_t bytes) {  // into L2: L1 has too few miss buffers
#if defined(__GNUC__)
    const char* c = static_cast<const char*>(p);
    for (std::int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 2);
#else
    (void)p;
    (void)bytes;
#endif
}

// Four dot products of a with b0..b3: independent accumulators keep the FMA pipes busy and a is
// loaded once for all four.
template <class T>
METACORE_INLINE void dot4(const T* __restrict a, const T* __restrict b0, const T* __restrict b1,
                          const T* __restrict b2, const T* __restrict b3, std::int64_t n,
                          T* out) {
    T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (std::int64_t i = 0; i < n; ++i) {
        s0 += a[i] * b0[i];
        s1 += a[i] * b1[i];
        s2 += a[i] * b2[i];
        s3 += a[i] * b3[i];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

// y += c0·x0 + c1·x1 + c2·x2 + c3·x3: y is loaded and stored once for four updates.
template <class T>
METACORE_INLINE void axpy4(const T* c, const T* __restrict x0, const T* __restrict x1,
                           const T* __restrict x2, const T* __restrict x3, T* __restrict y,
                           std::int64_t n) {
    const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) y[i] += (c0 * x0[i] + c1 * x1[i]) + (c2 * x2[i] + c3 * x3[i]);
}

}  // namespace metacore
