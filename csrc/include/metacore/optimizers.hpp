// First-order optimizers on a flat θ: SGD (momentum, Nesterov), Adam, AdamW, with optional
// global gradient-norm clipping, a learning-rate schedule (constant, step, cosine, linear
// decay to 0, each after an optional linear warm-up) and parameter groups (ranges of θ with
// their own learning rate and weight decay, as torch.optim's param_groups). The update equations are PyTorch's
// (torch.optim.SGD/Adam/AdamW);
// python/metacore/optim.py documents them. Element-wise work is split into fixed chunks, so the
// gradient norm and the update are bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/reduction.hpp"
#include "metacore/simd.hpp"
#include "metacore/threading.hpp"

namespace metacore {

enum class OptimizerKind { sgd, adam, adamw };
enum class ScheduleKind { constant, step, cosine, linear };

// lr(t) = lr · factor(t) for the update of step t (0-based).
struct Schedule {
    ScheduleKind kind = ScheduleKind::constant;
    std::int64_t every = 1;       // step: lr is multiplied by gamma every `every` steps
    double gamma = 0.1;
    std::int64_t period = 1;      // cosine: steps from lr down to min_factor · lr, then held;
                                  // linear: steps from lr down to 0
    double min_factor = 0.0;
    std::int64_t warmup = 0;      // linear warm-up steps that come before the schedule
    double warmup_start = 0.0;    // the warm-up's factor at t = 0

    double factor(std::int64_t t) const {
        if (t < warmup)
            return warmup_start + (1.0 - warmup_start) * static_cast<double>(t) /
                                      static_cast<double>(warmup);
        const std::int64_t s = t - warmup;  // the schedule starts when the warm-up ends
        switch (kind) {
            case ScheduleKind::step:
                return std::pow(gamma, static_cast<double>(s / every));
            case ScheduleKind::cosine: {
                if (s >= period) return min_factor;
                const double c = std::cos(3.14159265358979323846 * static_cast<double>(s) /
                                          static_cast<double>(period));
                return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + c);
            }
            case ScheduleKind::linear:  // Reptile's annealing: 1 − s/period, then 0
                return s >= period ? 0.0
                                   : 1.0 - static_cast<double>(s) / static_cast<double>(period);
            default:
                return 1.0;
        }
    }
};

// A range [begin, end) of θ updated with its own base learning rate and weight decay (the
// schedule's factor and the global clipping apply to it as to the rest).
struct ParamGroup {
    std::int64_t begin = 0, end = 0;
    double lr = 0.01;
    double weight_decay = 0.0;
};

struct OptimizerConfig {
    OptimizerKind kind = OptimizerKind::sgd;
    double lr = 0.01;
    double momentum = 0.0;      // SGD
    bool nesterov = false;      // SGD
    double beta1 = 0.9;         // Adam, AdamW
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;  // SGD, Adam: added to the gradient; AdamW: decoupled
    double clip_norm = 0.0;     // 0: no clipping
    Schedule schedule;
    std::vector<ParamGroup> groups;  // sorted, disjoint; entries outside any use lr, weight_decay

    // The moment buffers the state needs: m (momentum / first moment), v (second moment).
    bool uses_m() const { return kind != OptimizerKind::sgd || momentum != 0.0; }
    bool uses_v() const { return kind != OptimizerKind::sgd; }

    // The same ranges the Python layer checks, for callers that build configs in C++.
    void validate() const {
        auto require = [](bool ok, const std::string& what) {
            if (!ok) throw std::invalid_argument(what);
        };
        require(std::isfinite(lr) && lr > 0.0, "lr must be > 0");
        require(momentum >= 0.0 && momentum < 1.0, "momentum must be in [0, 1)");
        require(!nesterov || momentum > 0.0, "nesterov needs momentum > 0");
        require(beta1 >= 0.0 && beta1 < 1.0, "betas[0] must be in [0, 1)");
        require(beta2 >= 0.0 && beta2 < 1.0, "betas[1] must be in [0, 1)");
        require(std::isfinite(eps) && eps > 0.0, "eps must be > 0");
        require(std::isfinite(weight_decay) && weight_decay >= 0.0, "weight_decay must be >= 0");
        require(std::isfinite(clip_norm) && clip_norm >= 0.0, "clip_norm must be > 0 or off");
        const Schedule& s = schedule;
        require(s.every >= 1, "schedule every must be >= 1");
        require(s.gamma > 0.0 && s.gamma <= 1.0, "schedule gamma must be in (0, 1]");
        require(s.period >= 1, "schedule steps must be >= 1");
        require(s.min_factor >= 0.0 && s.min_factor <= 1.0,
                "schedule min_factor must be in [0, 1]");
        require(s.warmup >= 0, "warmup steps must be >= 0");
        require(s.warmup_start >= 0.0 && s.warmup_start <= 1.0,
                "warmup start_factor must be in [0, 1]");
        std::int64_t previous_end = 0;
        for (const ParamGroup& g : groups) {
            require(g.begin >= previous_end && g.end > g.begin,
                    "parameter groups must be non-empty, sorted and disjoint ranges of theta");
            require(std::isfinite(g.lr) && g.lr > 0.0, "a parameter group's lr must be > 0");
            require(std::isfinite(g.weight_decay) && g.weight_decay >= 0.0,
                    "a parameter group's weight_decay must be >= 0");
            previous_end = g.end;
        }
    }

    // [begin, end, lr, weight_decay] runs covering [0, P): the groups, and the base settings
    // between them. Throws when a group reaches past θ's P entries.
    std::vector<ParamGroup> runs(std::int64_t P) const {
        std::vector<ParamGroup> out;
        std::int64_t at = 0;
        for (const ParamGroup& g : groups) {
            if (g.end > P)
                throw std::invalid_argument("a parameter group ends at entry " +
                                            std::to_string(g.end) + " of theta, which has " +
                                            std::to_string(P));
            if (g.begin > at) out.push_back({at, g.begin, lr, weight_decay});
            out.push_back(g);
            at = g.end;
        }
        if (at < P || out.empty()) out.push_back({at, P, lr, weight_decay});
        return out;
    }
};

// Views of the moment buffers (null when the optimizer does not use one).
template <class T>
struct OptimizerMoments {
    T* m = nullptr;
    T* v = nullptr;
};

// Moment buffers owned, zero-initialised: the state before step 0.
template <class T>
struct OptimizerState {
    std::vector<T> m, v;

    OptimizerState() = default;
    OptimizerState(const OptimizerConfig& c, std::int64_t P)
        : m(c.uses_m() ? P : 0, T(0)), v(c.uses_v() ? P : 0, T(0)) {
        c.runs(P);  // a parameter group beyond θ is refused before training starts
    }

    OptimizerMoments<T> view() {
        return {m.empty() ? nullptr : m.data(), v.empty() ? nullptr : v.data()};
    }
};

struct StepReport {
    double grad_norm = 0.0;  // ‖g‖₂ before clipping
    double lr = 0.0;         // the scheduled learning rate used
    bool finite = true;      // false: the gradient or the updated state holds NaN/Inf
};

// Adam's constants for update k (1-based), bias corrections folded in: with c₁ = 1 − β₁ᵏ and
// c₂ = 1 − β₂ᵏ, θ ← θ − (lr / c₁) · m / (√v / √c₂ + ε). Computed in double, then cast to T.
template <class T>
struct AdamCoefficients {
    T b1, b2, eps, step_size, c2_sqrt;
    AdamCoefficients(double lr, double beta1, double beta2, double epsilon, std::int64_t k)
        : b1(static_cast<T>(beta1)),
          b2(static_cast<T>(beta2)),
          eps(static_cast<T>(epsilon)),
          step_size(static_cast<T>(lr / (1.0 - std::pow(beta1, static_cast<double>(k))))),
          c2_sqrt(static_cast<T>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(k))))) {}
};

// √x as a builtin, so that it compiles inside a kernel's instruction set (std::sqrt is a
// function of the default target, which a kernel cannot inline).
template <class T>
METACORE_INLINE T square_root(T x) {
#if defined(__GNUC__)
    if constexpr (sizeof(T) == sizeof(float)) return __builtin_sqrtf(x);
    else return __builtin_sqrt(x);
#else
    return std::sqrt(x);
#endif
}

// The one Adam rule (torch.optim.Adam's), on one entry x with gradient d and moments m, v.
template <class T>
METACORE_INLINE void adam_update(T& x, T d, T& m, T& v, const AdamCoefficients<T>& a) {
    m = a.b1 * m + (T(1) - a.b1) * d;
    v = a.b2 * v + (T(1) - a.b2) * d * d;
    x -= a.step_size * m / (square_root(v) / a.c2_sqrt + a.eps);
}

// The same over n entries with explicit moments: for small parameter sets kept outside an
// optimizer state (a weighting strategy's log-variances, loss weights, logits).
template <class T>
void adam_update(T* x, const T* g, T* m, T* v, std::int64_t n, const AdamCoefficients<T>& a) {
    for (std::int64_t i = 0; i < n; ++i) adam_update(x[i], g[i], m[i], v[i], a);
}

// The update of one run of entries, vectorised per instruction-set level but rounded as the
// baseline rounds it (METACORE_EXACT_KERNEL: no fused multiply-add; √ and ÷ are exact at every
// level), so θ and the moments are the same bits at every level. d = clip·g, then AdamW shrinks
// x by `shrink` first, Adam adds wd·x to d.
template <class T>
METACORE_INLINE void adam_run_body(T* __restrict x, const T* __restrict g, T* __restrict m,
                                   T* __restrict v, std::int64_t n, T clip, T wd, T shrink,
                                   bool decoupled, AdamCoefficients<T> a) {
    METACORE_NO_CONTRACT
    if (decoupled) {
#pragma omp simd
        for (std::int64_t j = 0; j < n; ++j) {
            x[j] *= shrink;
            adam_update(x[j], clip * g[j], m[j], v[j], a);
        }
    } else {
#pragma omp simd
        for (std::int64_t j = 0; j < n; ++j) adam_update(x[j], clip * g[j] + wd * x[j], m[j], v[j], a);
    }
}
METACORE_EXACT_KERNEL(void, adam_run,
                      (T* x, const T* g, T* m, T* v, std::int64_t n, T clip, T wd, T shrink,
                       bool decoupled, AdamCoefficients<T> a),
                      (x, g, m, v, n, clip, wd, shrink, decoupled, a))

// SGD over one run: d = clip·g + wd·x; with momentum m = μm + d and d = d + μm (Nesterov) or m;
// x −= lr·d. m is null without momentum.
template <class T>
METACORE_INLINE void sgd_run_body(T* __restrict x, const T* __restrict g, T* __restrict m,
                                  std::int64_t n, T clip, T wd, T lr, T mu, bool nesterov) {
    METACORE_NO_CONTRACT
    if (!m) {
#pragma omp simd
        for (std::int64_t j = 0; j < n; ++j) x[j] -= lr * (clip * g[j] + wd * x[j]);
    } else if (nesterov) {
#pragma omp simd
        for (std::int64_t j = 0; j < n; ++j) {
            const T d = clip * g[j] + wd * x[j];
            m[j] = mu * m[j] + d;  // m starts at 0, so step 0 gives m = d as in torch
            x[j] -= lr * (d + mu * m[j]);
        }
    } else {
#pragma omp simd
        for (std::int64_t j = 0; j < n; ++j) {
            m[j] = mu * m[j] + (clip * g[j] + wd * x[j]);
            x[j] -= lr * m[j];
        }
    }
}
METACORE_EXACT_KERNEL(void, sgd_run,
                      (T* x, const T* g, T* m, std::int64_t n, T clip, T wd, T lr, T mu,
                       bool nesterov),
                      (x, g, m, n, clip, wd, lr, mu, nesterov))

namespace optim_detail {

constexpr std::int64_t kChunk = 1 << 14;          // fixed element chunks: thread-count independent

// Σ g_j² over chunks, summed in chunk order (double accumulation).
template <class T>
double squared_norm(const T* g, std::int64_t P, int threads) {
    return ordered_sum((P + kChunk - 1) / kChunk, threads, [&](std::int64_t c) {
        const std::int64_t e = std::min(P, (c + 1) * kChunk);
        double s = 0.0;
        for (std::int64_t j = c * kChunk; j < e; ++j) s += static_cast<double>(g[j]) * g[j];
        return s;
    });
}

// Runs body(begin, end) over fixed chunks of [0, P); returns false if any chunk saw a
// non-finite result (each body returns whether everything it wrote is finite).
template <class Body>
bool for_chunks(std::int64_t P, int threads, Body&& body) {
    const std::int64_t n_chunks = (P + kChunk - 1) / kChunk;
    std::vector<char> ok(n_chunks, 1);
    parallel_for(n_chunks, threads, [&](std::int64_t c, int) {
        ok[c] = body(c * kChunk, std::min(P, (c + 1) * kChunk));
    });
    return std::all_of(ok.begin(), ok.end(), [](char x) { return x != 0; });
}

// for_chunks, with each chunk cut where the runs of settings change: body(run, begin, end).
template <class Body>
bool for_runs(const std::vector<ParamGroup>& runs, int threads, Body&& body) {
    const std::int64_t P = runs.back().end;
    return for_chunks(P, threads, [&](std::int64_t b, std::int64_t e) {
        bool finite = true;
        for (const ParamGroup& run : runs) {
            const std::int64_t rb = std::max(b, run.begin), re = std::min(e, run.end);
            if (rb < re) finite &= body(run, rb, re);
        }
        return finite;
    });
}

}  // namespace optim_detail

// One update of θ in place from the gradient g at step t (0-based): clip, schedule, then the
// optimizer's rule. Returns without touching anything when g is not finite.
template <class T>
StepReport step(const OptimizerConfig& c, std::int64_t t, T* theta, const T* g,
                OptimizerMoments<T> state, std::int64_t P, int n_threads = 1) {
    using namespace optim_detail;
    const int threads = team_for(P, n_threads);  // one "multiply-add" per element
    StepReport r;
    r.grad_norm = std::sqrt(squared_norm(g, P, threads));
    const double factor = c.schedule.factor(t);
    r.lr = c.lr * factor;
    if (!std::isfinite(r.grad_norm)) {
        r.finite = false;
        return r;
    }
    const T clip = static_cast<T>(c.clip_norm > 0.0 && r.grad_norm > c.clip_norm
                                      ? c.clip_norm / r.grad_norm
                                      : 1.0);
    // One rule per run of θ with the same settings; without groups that is all of θ.
    const std::vector<ParamGroup> runs = c.runs(P);
    T* m = state.m;
    T* v = state.v;
    if (c.kind == OptimizerKind::sgd) {
        const T mu = static_cast<T>(c.momentum);
        const bool nesterov = c.nesterov;
        r.finite = for_runs(runs, threads, [&](const ParamGroup& run, std::int64_t b,
                                               std::int64_t e) {
            sgd_run(theta + b, g + b, m ? m + b : nullptr, e - b, clip,
                    static_cast<T>(run.weight_decay), static_cast<T>(run.lr * factor), mu, nesterov);
            return all_finite(theta + b, e - b) && (!m || all_finite(m + b, e - b));
        });
        return r;
    }
    // Adam / AdamW with bias correction (adam_update); AdamW shrinks θ before the update.
    const bool decoupled = c.kind == OptimizerKind::adamw;
    r.finite = for_runs(runs, threads, [&](const ParamGroup& run, std::int64_t b,
                                           std::int64_t e) {
        const double lr_t = run.lr * factor;
        const AdamCoefficients<T> adam(lr_t, c.beta1, c.beta2, c.eps, t + 1);
        const T wd = static_cast<T>(run.weight_decay);
        const T shrink = T(1) - static_cast<T>(lr_t) * wd;
        adam_run(theta + b, g + b, m + b, v + b, e - b, clip, wd, shrink, decoupled, adam);
        return all_finite(theta + b, e - b) && all_finite(v + b, e - b);
    });
    return r;
}

}  // namespace metacore
