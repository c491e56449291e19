// Vector kernels shared by every pass, and the machinery that lets the hot loops run with the
// widest SIMD the CPU has without -march=native. Each top-level kernel is written once as an
// always-inlined body and compiled three times (METACORE_KERNEL): for x86-64-v4 (AVX-512F/BW/DQ/VL),
// x86-64-v3 (AVX2+FMA) and the x86-64 baseline (SSE2), each with `flatten` so that everything it
// calls is inlined and compiled for that instruction set. isa_level() picks one when the module
// loads: the best the CPU supports, or a lower one named by the environment variable
// METACORE_ISA=avx512|avx2|baseline (for tests and comparisons; a level above the CPU's is ignored).
// Small helpers are force-inlined so they take the caller's instruction set.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__)
#define METACORE_INLINE inline __attribute__((always_inline))
#else
#define METACORE_INLINE inline
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(METACORE_NATIVE)
#define METACORE_MULTIVERSION 1
// noinline: a kernel called from inside another one stays one call (flatten would otherwise
// inline all three compilations of it into the caller).
#define METACORE_TARGET_V4 __attribute__((target("arch=x86-64-v4"), flatten, noinline))
#define METACORE_TARGET_V3 __attribute__((target("arch=x86-64-v3"), flatten, noinline))
#define METACORE_TARGET_V1 __attribute__((flatten, noinline))
// Element-wise kernels whose every level must round as the baseline does (a multiply, then an
// add: no fused multiply-add), so that moving a loop into a kernel changes no bit of any result.
// GCC takes it as an option of the compiled function; Clang from METACORE_NO_CONTRACT in the body.
#if defined(__clang__)
#define METACORE_EXACT_V4 METACORE_TARGET_V4
#define METACORE_EXACT_V3 METACORE_TARGET_V3
#define METACORE_EXACT_V1 METACORE_TARGET_V1
#else
#define METACORE_EXACT_V4 __attribute__((target("arch=x86-64-v4"), optimize("fp-contract=off"), noinline))
#define METACORE_EXACT_V3 __attribute__((target("arch=x86-64-v3"), optimize("fp-contract=off"), noinline))
#define METACORE_EXACT_V1 __attribute__((optimize("fp-contract=off"), noinline))
#endif
#else
#define METACORE_MULTIVERSION 0
#endif
// Kept for kernels not yet moved to METACORE_KERNEL: compiled for the build's default target.
#define METACORE_CLONES

namespace metacore {

// Instruction-set levels of the kernels: 0 baseline (SSE2), 1 AVX2+FMA, 2 AVX-512.
inline int cpu_isa_level() {
#if METACORE_MULTIVERSION
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("movbe"))
        return 1;
    return 0;
#else
    return 0;
#endif
}

// The level asked for by METACORE_ISA (-1: none, or not understood).
inline int requested_isa_level() {
    const char* s = std::getenv("METACORE_ISA");
    if (!s || !*s) return -1;
    if (!std::strcmp(s, "avx512") || !std::strcmp(s, "x86-64-v4")) return 2;
    if (!std::strcmp(s, "avx2") || !std::strcmp(s, "x86-64-v3")) return 1;
    if (!std::strcmp(s, "baseline") || !std::strcmp(s, "x86-64") || !std::strcmp(s, "sse2")) return 0;
    return -1;
}

inline int choose_isa_level() {
    const int cpu = cpu_isa_level(), asked = requested_isa_level();
    return asked >= 0 && asked < cpu ? asked : cpu;
}

// The level every kernel runs at, fixed when the module loads.
inline const int g_isa_level = choose_isa_level();
METACORE_INLINE int isa_level() { return g_isa_level; }

}  // namespace metacore

// Declares `name` (template <class T>, returning `ret`, taking `params`) as a dispatcher over
// three compilations of the always-inlined body `name##_body` (passing `args`).
#if METACORE_MULTIVERSION
#define METACORE_KERNEL(ret, name, params, args) \
    METACORE_KERNEL_AT(METACORE_TARGET_V4, METACORE_TARGET_V3, METACORE_TARGET_V1, ret, name, params, args)
#define METACORE_EXACT_KERNEL(ret, name, params, args) \
    METACORE_KERNEL_AT(METACORE_EXACT_V4, METACORE_EXACT_V3, METACORE_EXACT_V1, ret, name, params, args)
#define METACORE_KERNEL_AT(V4, V3, V1, ret, name, params, args)                   \
    template <class T>                                                            \
    V4 ret name##_v4 params { return name##_body<T> args; }                       \
    template <class T>                                                            \
    V3 ret name##_v3 params { return name##_body<T> args; }                       \
    template <class T>                                                            \
    V1 ret name##_v1 params { return name##_body<T> args; }                       \
    template <class T>                                                            \
    inline ret name params {                                                      \
        switch (::metacore::isa_level()) {                                        \
            case 2: return name##_v4<T> args;                                     \
            case 1: return name##_v3<T> args;                                     \
            default: return name##_v1<T> args;                                    \
        }                                                                         \
    }
#else
#define METACORE_KERNEL(ret, name, params, args) \
    template <class T>                           \
    inline ret name params { return name##_body<T> args; }
#define METACORE_EXACT_KERNEL METACORE_KERNEL
#endif
#if defined(__clang__) && METACORE_MULTIVERSION
#define METACORE_NO_CONTRACT _Pragma("clang fp contract(off)")
#else
#define METACORE_NO_CONTRACT
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

// Whether every x[i] is finite. The exponent bits are tested as integers, with no early exit, so
// the loop vectorises (a floating-point test folded into a bool does not: it ran one element per
// cycle, 2 µs of an adapt-and-predict call on θ alone).
template <class T>
METACORE_INLINE bool all_finite_body(const T* __restrict x, std::int64_t n) {
    using U = typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type;
    constexpr U exponent = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    U bad = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        U bits;
        std::memcpy(&bits, x + i, sizeof bits);
        bad |= static_cast<U>((bits & exponent) == exponent);
    }
    return bad == 0;
}
METACORE_KERNEL(bool, all_finite, (const T* x, std::int64_t n), (x, n))

// The element-wise updates of the inner and outer loops, rounded as the baseline rounds them
// (METACORE_EXACT_KERNEL): out = x − r ⊙ g with r = rates or the scalar a when rates is null,
// v = r ⊙ g, y += a · x and y −= x.
template <class T>
METACORE_INLINE void sgd_step_body(const T* __restrict x, T a, const T* __restrict rates,
                                   const T* __restrict g, std::int64_t n, T* __restrict out) {
    METACORE_NO_CONTRACT
    if (rates) {
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] - rates[i] * g[i];
    } else {
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] - a * g[i];
    }
}
METACORE_EXACT_KERNEL(void, sgd_step,
                      (const T* x, T a, const T* rates, const T* g, std::int64_t n, T* out),
                      (x, a, rates, g, n, out))

template <class T>
METACORE_INLINE void scaled_body(T a, const T* __restrict rates, const T* __restrict g,
                                 std::int64_t n, T* __restrict v) {
    if (rates) {
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) v[i] = rates[i] * g[i];
    } else {
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) v[i] = a * g[i];
    }
}
METACORE_EXACT_KERNEL(void, scaled, (T a, const T* rates, const T* g, std::int64_t n, T* v),
                      (a, rates, g, n, v))

template <class T>
METACORE_INLINE void add_scaled_body(T a, const T* __restrict x, std::int64_t n,
                                     T* __restrict y) {
    METACORE_NO_CONTRACT
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
METACORE_EXACT_KERNEL(void, add_scaled, (T a, const T* x, std::int64_t n, T* y), (a, x, n, y))

template <class T>
METACORE_INLINE void subtract_body(const T* __restrict x, std::int64_t n, T* __restrict y) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) y[i] -= x[i];
}
METACORE_EXACT_KERNEL(void, subtract, (const T* x, std::int64_t n, T* y), (x, n, y))

}  // namespace metacore
