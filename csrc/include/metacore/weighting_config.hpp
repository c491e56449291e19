// The weighting configuration shared by every strategy (weighting.hpp lists the families), and
// the one thing the strategies share: how they step their own parameters.
#pragma once

#include <cstdint>

#include "metacore/optimizers.hpp"

namespace metacore {

enum class WeightingKind {
    fixed, eval_driven, dwa, uncertainty, rlw, famo,  // no gradient matrix
    gradnorm, mgda, pcgrad, cagrad, imtlg, nashmtl, aligned_mtl, gradvac
};
enum class MgdaNorm { none, l2, loss, loss_l2 };

struct WeightingConfig {
    WeightingKind kind = WeightingKind::fixed;
    double temperature = 2.0;   // DWA, EvalDriven (softmax rule)
    std::int64_t window = 1;    // DWA: steps per loss window
    bool classification = false;  // Uncertainty: 1/σ² form instead of 1/(2σ²)
    double lr = 0.01;           // Uncertainty, GradNorm, FAMO: Adam lr of the strategy's parameters
    double asymmetry = 1.5;     // GradNorm α
    double c = 0.5;             // CAGrad
    MgdaNorm norm = MgdaNorm::none;
    double beta = 0.01;         // GradVac EMA rate; EvalDriven EMA rate of κ̄
    double gamma = 2.0;         // EvalDriven DTP focusing γ; FAMO: weight decay of its logits
    bool dtp = false;           // EvalDriven: the dynamic-task-prioritisation rule
    std::int64_t max_iter = 250;  // MGDA, CAGrad (Wolfe min-norm), Nash-MTL (Newton)

    bool uses_grads() const { return kind >= WeightingKind::gradnorm; }
    bool needs_gram() const { return uses_grads() && kind != WeightingKind::gradnorm; }
    // Loss-based strategies that need the step's losses before its gradient (a forward pass).
    bool needs_losses_first() const { return kind == WeightingKind::famo; }
    // The combining strategies train task heads on the plain mean; GradNorm's α weighs them too.
    bool weights_heads() const { return !needs_gram(); }

    std::int64_t state_size(std::int64_t T) const {
        switch (kind) {
            case WeightingKind::eval_driven: return T + 1;
            case WeightingKind::dwa: return 3 * T + 2;
            case WeightingKind::uncertainty: return 3 * T;
            case WeightingKind::famo: return 4 * T;
            case WeightingKind::gradnorm: return 4 * T;
            case WeightingKind::gradvac: return T * T;
            default: return 0;
        }
    }
};

namespace weighting_detail {

// Uncertainty, GradNorm and FAMO learn their parameters with the core's Adam (optimizers.hpp) at
// WeightingConfig::lr and torch's default betas and eps; k is the 1-based update count.
inline void strategy_adam(double* x, const double* g, double* m, double* v, std::int64_t n,
                          double lr, std::int64_t k) {
    adam_update(x, g, m, v, n, AdamCoefficients<double>(lr, 0.9, 0.999, 1e-8, k));
}

}  // namespace weighting_detail

}  // namespace metacore
