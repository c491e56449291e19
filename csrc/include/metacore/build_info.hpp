// How this core was compiled: reported by metacore.build_info().
#pragma once

#include <string>

#include "metacore/simd.hpp"
#include "metacore/threading.hpp"

namespace metacore {

inline std::string compiler_name() {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc " + std::to_string(_MSC_VER);
#else
    return "unknown";
#endif
}

inline int openmp_version() {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

// The instruction sets the hot loops were compiled for.
inline std::string simd_targets() {
#if METACORE_MULTIVERSION
    return "avx512 (x86-64-v4), avx2 (x86-64-v3, AVX2+FMA), baseline (x86-64); picked at load time";
#elif defined(METACORE_NATIVE)
    return "native (-march=native)";
#elif defined(__AVX2__)
    return "AVX2";
#elif defined(__SSE2__)
    return "SSE2 baseline";
#elif defined(__ARM_NEON)
    return "NEON";
#else
    return "compiler default";
#endif
}

inline const char* isa_name(int level) {
    return level >= 2 ? "avx512" : level == 1 ? "avx2" : "baseline";
}

// Which of the kernel compilations runs (the CPU's best, or the lower level METACORE_ISA names).
inline std::string simd_active() {
#if METACORE_MULTIVERSION
    return isa_name(isa_level());
#else
    return simd_targets();
#endif
}

// The best level this CPU supports (what runs without METACORE_ISA).
inline std::string simd_cpu() {
#if METACORE_MULTIVERSION
    return isa_name(cpu_isa_level());
#else
    return simd_targets();
#endif
}

}  // namespace metacore
