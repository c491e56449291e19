// Loss-based and evaluation-driven weighting: α from the task losses and the strategy's own state,
// never from gradients. DWA, Uncertainty, RLW and FAMO write the step's α in `before_step` and learn
// from its losses in `after_step`; EvalDriven sets α between chunks from evaluation results
// (`evaluate`). python/metacore/weighting.py documents each rule; metacore.reference mirrors it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "metacore/random.hpp"
#include "metacore/weighting_config.hpp"

namespace metacore {

namespace weighting_detail {

constexpr std::uint64_t kRlwStream = 0x524C5700000000ull;  // apart from the batch draws
constexpr double kLossEps = 1e-8;                          // FAMO: losses are logged
constexpr double kMaxLogVar = 30.0;  // Uncertainty: |s_i| bound, so α stays finite at f_i = 0
// Uncertainty: ∂/∂s_i = ½ − α_i f_i is bounded below by −1e100 (a loss ≳ 1e141 at s_i = 30
// makes it −∞ or its square +∞, and Adam's moments with it); Adam's step depends on g through
// m/√v only, so the bound keeps its sign and changes no step of a loss below 1e86.
constexpr double kMaxGrad = 1e100;

// out = softmax(z), shifted by max z so no exp overflows; entries at +∞ share all the weight.
inline void softmax(const double* z, std::int64_t n, double* out) {
    constexpr double inf = std::numeric_limits<double>::infinity();
    double mx = -inf;
    for (std::int64_t i = 0; i < n; ++i) mx = std::max(mx, z[i]);
    if (mx == inf) {
        const auto top = static_cast<double>(std::count(z, z + n, inf));
        for (std::int64_t i = 0; i < n; ++i) out[i] = z[i] == inf ? 1.0 / top : 0.0;
        return;
    }
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) s += (out[i] = std::exp(z[i] - mx));
    for (std::int64_t i = 0; i < n; ++i) out[i] /= s;
}

// DWA's L̄_i(k−1) / L̄_i(k−2); a loss at exactly 0 in window k−2 gives 1 if it stays 0 and +∞
// (the task takes the weight) if it rose.
inline double dwa_ratio(double prev1, double prev2) {
    if (prev2 > 0.0) return prev1 / prev2;
    return prev1 > 0.0 ? std::numeric_limits<double>::infinity() : 1.0;
}

}  // namespace weighting_detail

// Writes α for step `step` (losses: the step's f_i at θ_t, used only when needs_losses_first()).
template <class T>
void before_step(const WeightingConfig& c, double* state, std::int64_t n, std::uint64_t seed,
                 std::int64_t step, const T* losses, T* alpha) {
    using namespace weighting_detail;
    std::vector<double> a(n, 1.0 / n);
    switch (c.kind) {
        case WeightingKind::dwa: {
            const double* prev1 = state + n + 1;
            const double* prev2 = state + 2 * n + 1;
            if (state[3 * n + 1] >= 2.0) {
                std::vector<double> r(n);
                for (std::int64_t i = 0; i < n; ++i) r[i] = dwa_ratio(prev1[i], prev2[i]) / c.temperature;
                softmax(r.data(), n, a.data());
            }
            break;
        }
        case WeightingKind::uncertainty: {
            const double k = c.classification ? 1.0 : 0.5;
            for (std::int64_t i = 0; i < n; ++i) a[i] = k * std::exp(-state[i]);
            break;
        }
        case WeightingKind::rlw: {
            CounterRng rng(seed, static_cast<std::uint64_t>(step), kRlwStream);
            std::vector<double> z(n);
            for (std::int64_t i = 0; i < n; ++i) {
                const double u1 = rng.uniform(2 * static_cast<std::uint64_t>(i));
                const double u2 = rng.uniform(2 * static_cast<std::uint64_t>(i) + 1);
                z[i] = std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(6.283185307179586 * u2);
            }
            softmax(z.data(), n, a.data());
            break;
        }
        case WeightingKind::famo: {
            double* xi = state;
            double* m = state + n;
            double* v = state + 2 * n;
            double* prev = state + 3 * n;
            std::vector<double> z(n);
            softmax(xi, n, z.data());
            if (step > 0) {  // learn ξ from the last step's change of log-loss
                std::vector<double> d(n), g(n);
                double zd = 0.0;
                for (std::int64_t i = 0; i < n; ++i) {
                    d[i] = std::log(prev[i] + kLossEps) - std::log(static_cast<double>(losses[i]) + kLossEps);
                    zd += z[i] * d[i];
                }
                for (std::int64_t i = 0; i < n; ++i) g[i] = z[i] * (d[i] - zd) + c.gamma * xi[i];
                strategy_adam(xi, g.data(), m, v, n, c.lr, step);
                softmax(xi, n, z.data());
            }
            double s = 0.0;
            for (std::int64_t i = 0; i < n; ++i) s += z[i] / (static_cast<double>(losses[i]) + kLossEps);
            for (std::int64_t i = 0; i < n; ++i) {
                a[i] = z[i] / (static_cast<double>(losses[i]) + kLossEps) / s;
                prev[i] = static_cast<double>(losses[i]);
            }
            break;
        }
        default:
            return;  // fixed, eval_driven: α stays as it is
    }
    for (std::int64_t i = 0; i < n; ++i) alpha[i] = static_cast<T>(a[i]);
}

// Learns from the step's losses f_i(θ_t) once its update is applied.
template <class T>
void after_step(const WeightingConfig& c, double* state, std::int64_t n, std::int64_t step,
                const T* losses) {
    using namespace weighting_detail;
    if (c.kind == WeightingKind::dwa) {
        double* sum = state;
        double& count = state[n];
        double* prev1 = state + n + 1;
        double* prev2 = state + 2 * n + 1;
        for (std::int64_t i = 0; i < n; ++i) sum[i] += static_cast<double>(losses[i]);
        if (++count >= static_cast<double>(c.window)) {
            for (std::int64_t i = 0; i < n; ++i) {
                prev2[i] = prev1[i];
                prev1[i] = sum[i] / count;
                sum[i] = 0.0;
            }
            count = 0.0;
            state[3 * n + 1] += 1.0;
        }
    } else if (c.kind == WeightingKind::uncertainty) {
        const double k = c.classification ? 1.0 : 0.5;
        std::vector<double> g(n);
        for (std::int64_t i = 0; i < n; ++i)  // bounded so Adam's g² stays finite (see kMaxGrad)
            g[i] = std::max(0.5 - k * std::exp(-state[i]) * static_cast<double>(losses[i]), -kMaxGrad);
        strategy_adam(state, g.data(), state + n, state + 2 * n, n, c.lr, step + 1);
        for (std::int64_t i = 0; i < n; ++i) state[i] = std::clamp(state[i], -kMaxLogVar, kMaxLogVar);
    }
}

// EvalDriven: α from per-task evaluation losses (and scores κ in [0, 1] for the DTP rule).
inline void evaluate(const WeightingConfig& c, double* state, std::int64_t n, const double* losses,
                     const double* scores, double* alpha) {
    using namespace weighting_detail;
    std::vector<double> z(n);
    if (!c.dtp) {
        for (std::int64_t i = 0; i < n; ++i) z[i] = losses[i] / c.temperature;
        softmax(z.data(), n, alpha);
        return;
    }
    double* kbar = state;
    const bool first = state[n] == 0.0;
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
        const double k = std::clamp(scores[i], 0.0, 1.0);
        kbar[i] = first ? k : (1.0 - c.beta) * kbar[i] + c.beta * k;
        const double kb = std::clamp(kbar[i], 1e-12, 1.0 - 1e-12);
        s += (alpha[i] = -std::pow(1.0 - kb, c.gamma) * std::log(kb));
    }
    state[n] = 1.0;
    for (std::int64_t i = 0; i < n; ++i) alpha[i] = s > 0.0 ? alpha[i] / s : 1.0 / n;
}

}  // namespace metacore
