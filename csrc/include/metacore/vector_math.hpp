// Branch-free exp and log1p on the ranges the loss heads need, written so that a
// `#pragma omp simd` loop vectorises them (libm's scalar calls would not). Accurate to a few ulp
// in double precision; float work goes through double.
#pragma once

#include <cstdint>
#include <cstring>

#include "metacore/simd.hpp"

namespace metacore {

METACORE_INLINE double pow2_int(std::int64_t n) {  // 2^n for n in [-1022, 1023]
    const std::uint64_t bits = static_cast<std::uint64_t>(n + 1023) << 52;
#if defined(__GNUC__)
    return __builtin_bit_cast(double, bits);
#else
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
#endif
}

// Σ_{k=1..13} x^k / k!: the Taylor series of exp(x) − 1, with truncation below 2^-53 for
// |x| <= ln2/2.
METACORE_INLINE double expm1_series(double x) {
    double p = 1.0 / 6227020800.0;  // 1/13!
    p = p * x + 1.0 / 479001600.0;
    p = p * x + 1.0 / 39916800.0;
    p = p * x + 1.0 / 3628800.0;
    p = p * x + 1.0 / 362880.0;
    p = p * x + 1.0 / 40320.0;
    p = p * x + 1.0 / 5040.0;
    p = p * x + 1.0 / 720.0;
    p = p * x + 1.0 / 120.0;
    p = p * x + 1.0 / 24.0;
    p = p * x + 1.0 / 6.0;
    p = p * x + 0.5;
    p = p * x + 1.0;
    return p * x;
}

// exp(x) for x <= 0: x = n·ln2 + r with |r| <= ln2/2, exp(r) = 1 + expm1_series(r), scaled by
// 2^n. Below -708 it returns 0 (exp is subnormal there); NaN gives NaN.
METACORE_INLINE double exp_nonpositive(double x) {
    constexpr double kLog2e = 1.4426950408889634;
    constexpr double kLn2Hi = 6.93147180369123816490e-01;
    constexpr double kLn2Lo = 1.90821492927058770002e-10;
    constexpr double kRound = 6755399441055744.0;  // 1.5·2^52: adding it rounds to an integer
    // NaN fails both comparisons and is clamped too: converting a NaN n to an integer below is
    // undefined behaviour (UBSan's float-cast-overflow found it on a diverged adaptation).
    const double xc = x >= -708.0 ? (x <= 0.0 ? x : 0.0) : -708.0;
    const double n = (xc * kLog2e + kRound) - kRound;
    const double r = (xc - n * kLn2Hi) - n * kLn2Lo;
    const double e = (1.0 + expm1_series(r)) * pow2_int(static_cast<std::int64_t>(n));
    return x >= -708.0 ? e : (x < -708.0 ? 0.0 : x);
}

// exp(x) − 1 for x <= 0 without cancellation near 0: the series where |x| <= ln2/2, and
// exp(x) − 1 below that, where the subtraction loses nothing.
METACORE_INLINE double expm1_nonpositive(double x) {
    return x >= -0.34657359027997264 ? expm1_series(x) : exp_nonpositive(x) - 1.0;
}

// tanh(x) = −expm1(−2|x|) / (2 + expm1(−2|x|)) with the sign of x.
METACORE_INLINE double tanh_vec(double x) {
    const double m = expm1_nonpositive(-2.0 * (x < 0.0 ? -x : x));
    const double t = -m / (2.0 + m);
    return x < 0.0 ? -t : t;
}

// log(1 + e) for e in [0, 1]: 2·atanh(s) with s = e / (2 + e) <= 1/3, no cancellation for small e;
// the odd series s + s³/3 + s⁵/5 + ... to s³³ (truncation below 2^-53).
METACORE_INLINE double log1p_unit(double e) {
    const double s = e / (2.0 + e);
    const double s2 = s * s;
    double p = 1.0 / 33.0;
    p = p * s2 + 1.0 / 31.0;
    p = p * s2 + 1.0 / 29.0;
    p = p * s2 + 1.0 / 27.0;
    p = p * s2 + 1.0 / 25.0;
    p = p * s2 + 1.0 / 23.0;
    p = p * s2 + 1.0 / 21.0;
    p = p * s2 + 1.0 / 19.0;
    p = p * s2 + 1.0 / 17.0;
    p = p * s2 + 1.0 / 15.0;
    p = p * s2 + 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0 / 1.0;
    return 2.0 * s * p;
}

}  // namespace metacore
