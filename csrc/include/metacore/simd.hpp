// Vector kernels shared by every pass, and the attributes that let the hot loops run with the
// widest SIMD the CPU has without -march=native: the top-level kernels are compiled several times
// (AVX-512, AVX2+FMA, baseline) and the loader picks one at start-up (GCC/Clang function
// multi-versioning). Small helpers are force-inlined so they take the caller's instruction set.
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

}  // namespace metacore
