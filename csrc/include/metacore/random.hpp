// A counter-based random generator: every draw is a pure function of (seed, step, stream, index),
// so what a step samples does not depend on the thread count or on the order threads run in,
// and a run resumed at step s draws exactly what the uninterrupted run drew.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace metacore {

// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
inline std::uint64_t mix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

class CounterRng {
   public:
    CounterRng(std::uint64_t seed, std::uint64_t step, std::uint64_t stream = 0)
        : key_(mix64(mix64(mix64(seed) ^ step) ^ (stream * 0xD1B54A32D192ED03ull))) {}

    std::uint64_t bits(std::uint64_t index) const { return mix64(key_ ^ mix64(index)); }

    // Uniform in [0, 1) with 53 random bits.
    double uniform(std::uint64_t index) const {
        return static_cast<double>(bits(index) >> 11) * 0x1.0p-53;
    }

    // Uniform integer in [0, n) (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
    std::uint64_t below(std::uint64_t index, std::uint64_t n) const {
        return static_cast<std::uint64_t>((static_cast<unsigned __int128>(bits(index)) * n) >> 64);
    }

    // k distinct integers from [0, n), k <= n, in sampled order (partial Fisher–Yates).
    std::vector<std::int64_t> choose(std::int64_t n, std::int64_t k) const {
        std::vector<std::int64_t> pool(n);
        for (std::int64_t i = 0; i < n; ++i) pool[i] = i;
        for (std::int64_t i = 0; i < k; ++i) {
            const auto j = i + static_cast<std::int64_t>(below(i, static_cast<std::uint64_t>(n - i)));
            std::swap(pool[i], pool[j]);
        }
        pool.resize(k);
        return pool;
    }

   private:
    std::uint64_t key_;
};

}  // namespace metacore
