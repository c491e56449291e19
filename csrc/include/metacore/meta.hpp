// Meta-gradients of MAML (exact second order or first order), Meta-SGD, ANIL and Reptile's
// direction over a meta-batch of tasks.
//
// For task i with inner loop φ_0 = θ, φ_{j+1} = φ_j − r ⊙ ∇L_s(φ_j) (inner_loop.hpp), the
// meta-loss is L_q(φ_k). Its exact gradient by reverse accumulation through the k steps:
//   g_k = ∇L_q(φ_k),   g_j = g_{j+1} − H_s(φ_j) (r ⊙ g_{j+1}),   ∂/∂θ = g_0,
// with H_s(φ_j) v an exact Hessian-vector product (forward-over-reverse through the net): no
// unrolled graph, memory O(k·P) per task (the trail φ_1..φ_k). First order keeps g_j = g_k and
// needs φ_k only: memory O(P) (two trail rows in turn), as for Reptile.
// Meta-SGD's learned rates r get ∂/∂r = −Σ_j g_{j+1} ⊙ ∇L_s(φ_j). ANIL is r = lr on the
// output layer and 0 on the trunk. Reptile's direction is θ − φ_k.
//
// MAML++ (Antoniou et al. 2019, "How to train your MAML", section 4) on top of MAML:
// - per-layer, per-step rates (LSLR): step j moves layer l's parameters with a learned rate
//   r_{j,l}; the k × L rates follow θ in the parameters, ∂/∂r_{j,l} = −Σ_{p∈l} g_{j+1,p} ∇L_s(φ_j)_p.
// - the multi-step loss (MSL): the meta-loss Σ_{j=1..k} w_j(s) L_q(φ_j), whose reverse pass adds
//   w_j ∇L_q(φ_j) to g_j: g_k = w_k ∇L_q(φ_k), g_j = g_{j+1} − H_s(φ_j)(r_j ⊙ g_{j+1}) + w_j ∇L_q(φ_j)
//   (the last term for j ≥ 1). The weights w(s) anneal with the global step s (msl_weights).
// - first order while s < first_order_until, exact second order from then on.
// Both schedules are functions of the global step, so a resumed run is bit-identical.
//
// Tasks run in parallel; each fixed block of tasks sums into its own partial, and the partials
// are added in block order (reduction.hpp): the result is bit-identical for any thread count.
// ProtoNet has no inner loop: its episode loss and gradient come from prototypes.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/format.hpp"
#include "metacore/imaml.hpp"
#include "metacore/inner_loop.hpp"
#include "metacore/interrupt.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/prototypes.hpp"
#include "metacore/reduction.hpp"
#include "metacore/ridge_head.hpp"
#include "metacore/sizes.hpp"
#include "metacore/tasks.hpp"
#include "metacore/threading.hpp"
#include "metacore/unit_kernels.hpp"

namespace metacore {

enum class Learner { maml, reptile, metasgd, anil, protonet, ridge, imaml };

// Learners that classify an episode by its own labels 0..N−1 (any number of net outputs: the
// net embeds), not through the model's loss head.
inline bool episode_learner(Learner l) { return l == Learner::protonet || l == Learner::ridge; }

struct MetaConfig {
    Learner learner = Learner::maml;
    std::int64_t inner_steps = 1;
    double inner_lr = 0.01;   // Meta-SGD: the rates live in the parameters instead
    bool first_order = false;
    // MAML++ (Learner::maml only): learned rates per layer and per inner step after θ,
    bool per_step_rates = false;
    // the multi-step loss with weights annealed over msl_anneal_steps outer steps (>= 1),
    bool multi_step_loss = false;
    std::int64_t msl_anneal_steps = 1;
    // and first order for the global steps s < first_order_until.
    std::int64_t first_order_until = 0;

    // Whether the meta-gradient of global step s is first order.
    bool first_order_at(std::int64_t step) const {
        return first_order || step < first_order_until;
    }
    double reg = 1.0;             // iMAML: proximal strength λ
    std::int64_t cg_steps = 5;    // iMAML: conjugate-gradient iterations
};

// Parameters a learner optimises: θ, plus Meta-SGD's per-parameter rates packed after it.
inline std::int64_t meta_params(const NetSpec& net, Learner learner) {
    if (learner == Learner::ridge)  // the ridge head's log λ and scale
        return checked_add(net.n_params(), 2, "layer_sizes");
    return learner == Learner::metasgd ? checked_mul(2, net.n_params(), "layer_sizes")
                                       : net.n_params();
}

// ... and MAML++'s per-step, per-layer rates (inner_steps × n_layers, step-major) after θ.
inline std::int64_t meta_params(const NetSpec& net, const MetaConfig& cfg) {
    if (!cfg.per_step_rates) return meta_params(net, cfg.learner);
    return checked_add(net.n_params(), checked_mul(cfg.inner_steps, net.n_layers(), "inner_steps"),
                       "inner_steps");
}

// θ's parameters of layer l: [layer_begin(l), layer_begin(l + 1)) (everything from its weights
// to the next layer's weights).
inline std::int64_t layer_begin(const NetSpec& net, int l) {
    return l < net.n_layers() ? net.weight_offset(l, 0) : net.n_params();
}

// MAML++'s multi-step-loss weights at global step s (Antoniou et al. 2019, section 4, "multi-step
// loss optimisation"; the schedule of their code's per-step loss importance vector, with the
// epoch count replaced by t = s / anneal_steps): every step starts at 1/k; the first k − 1 decay
// linearly to a floor of 0.03/k and the last grows to 1 − 0.03(k − 1)/k, reached at t = 0.97:
//   w_j = max(1/k − t/k, 0.03/k) (j < k),   w_k = min(1/k + t(k − 1)/k, 1 − 0.03(k − 1)/k).
// The weights sum to 1. w has k entries (w[j − 1] weighs L_q(φ_j)).
inline void msl_weights(std::int64_t k, std::int64_t anneal_steps, std::int64_t step, double* w) {
    const double K = static_cast<double>(k);
    const double t = static_cast<double>(step) / static_cast<double>(anneal_steps);
    for (std::int64_t j = 0; j + 1 < k; ++j) w[j] = std::max(1.0 / K - t / K, 0.03 / K);
    w[k - 1] = std::min(1.0 / K + t * (K - 1.0) / K, 1.0 - 0.03 * (K - 1.0) / K);
}

// What a meta-step's global step decides: the order of the meta-gradient and the MSL weights.
struct StepPlan {
    bool first_order = false;
    const double* weights = nullptr;   // k multi-step-loss weights, or null: L_q(φ_k) alone
};

inline void check_meta_net(const NetSpec& net) {
    if (net.n_heads() != 1)
        throw std::invalid_argument(
            "model: meta-learning adapts one shared net to each task; per-task heads "
            "(task_heads) are not supported, got " + std::to_string(net.n_heads()) + " heads");
}

// Per-thread scratch of one meta-gradient: the net pass with tangents, the inner-loop trail.
template <class T>
struct MetaWorkspace {
    // Rows of the trail φ_1..φ_k the reverse pass reads: all k for a second-order meta-gradient
    // (at any global step) and MAML++'s multi-step loss. Reptile and first-order MAML, ANIL and
    // Meta-SGD read only φ_k, so their inner loop alternates between two rows: memory O(P), not
    // O(k·P), whatever the number of inner steps.
    static std::int64_t trail_rows(const MetaConfig& cfg) {
        const bool whole = !(cfg.learner == Learner::reptile ||
                             (cfg.first_order && !cfg.multi_step_loss));
        return whole ? cfg.inner_steps : std::min<std::int64_t>(cfg.inner_steps, 2);
    }
    // The trail: trail_rows × P, checked.
    static std::int64_t trail_size(const NetSpec& net, const MetaConfig& cfg) {
        if (cfg.learner == Learner::imaml || cfg.learner == Learner::ridge) return 0;  // no trail
        return checked_mul(trail_rows(cfg), net.n_params(), "inner_steps");
    }
    // Meta-SGD's and MAML++'s inner gradients: inner_steps × P, checked.
    static std::int64_t grads_size(const NetSpec& net, const MetaConfig& cfg) {
        return keeps_grads(cfg) ? checked_mul(cfg.inner_steps, net.n_params(), "inner_steps") : 0;
    }
    // Elements of one workspace, checked.
    static std::int64_t elements(const NetSpec& net, const MetaConfig& cfg) {
        const std::int64_t trails =
            checked_add(grads_size(net, cfg), trail_size(net, cfg), "inner_steps");
        return checked_add(checked_add(trails, checked_mul(3, net.n_params(), "layer_sizes"),
                                       "inner_steps"),
                           checked_add(NetPass<T>::elements(net, true),
                                       NetPass<T>::elements(net, false), "inner_steps"),
                           "inner_steps");
    }

    // Learned rates need the inner gradients ∇L_s(φ_j) in the reverse pass.
    static bool keeps_grads(const MetaConfig& cfg) {
        return cfg.learner == Learner::metasgd || cfg.per_step_rates;
    }

    MetaWorkspace(const NetSpec& net, const MetaConfig& cfg)
        : pass(net, true),
          qpass(net, false),
          trail(trail_size(net, cfg)),
          rows(trail_rows(cfg)),
          grads(grads_size(net, cfg)),
          g(net.n_params()),
          v(net.n_params()),
          hv(net.n_params()) {}
    // The support rows' pass, and the query rows' own, so that the support pass still holds the
    // last inner step's forward pass (and θ's transposes) when the reverse pass needs them.
    NetPass<T> pass, qpass;
    ScratchBuffer<T> trail;  // written before read: left uninitialised
    std::int64_t rows;  // of the trail: φ_j is its row (j − 1) mod rows
    ScratchBuffer<T> grads;
    std::vector<T> g, v, hv;
    ProtoScratch<T> proto;
    RidgeScratch<T> ridge;
    ImamlScratch<T> imaml;

    // Bytes held now (the passes and episode scratch grow to the largest task they have run).
    std::int64_t held_bytes() const {
        using metacore::held_bytes;
        return pass.held_bytes() + qpass.held_bytes() +
               (trail.size() + grads.size()) * static_cast<std::int64_t>(sizeof(T)) +
               held_bytes(g) + held_bytes(v) + held_bytes(hv) + held_bytes(proto.emb) +
               held_bytes(proto.d_emb) + held_bytes(proto.protos) + held_bytes(proto.d_protos) +
               held_bytes(proto.counts) + held_bytes(proto.z) + held_bytes(ridge.emb) +
               held_bytes(ridge.d_emb) + held_bytes(ridge.K) + held_bytes(ridge.A) +
               held_bytes(ridge.Q) + held_bytes(ridge.M) + held_bytes(ridge.G) +
               held_bytes(ridge.dQ) + held_bytes(ridge.dA) + held_bytes(imaml.phi) +
               held_bytes(imaml.x) + held_bytes(imaml.r) + held_bytes(imaml.p) +
               held_bytes(imaml.kept) + held_bytes(imaml.dir);
    }
};

// expanded: MAML++'s per-step rates expanded to one rate per parameter (inner_steps × P).
template <class T>
InnerRule<T> inner_rule(const NetSpec& net, const MetaConfig& cfg, const T* params,
                        const T* expanded = nullptr) {
    InnerRule<T> rule;
    rule.steps = cfg.inner_steps;
    rule.lr = static_cast<T>(cfg.inner_lr);
    if (cfg.learner == Learner::metasgd) rule.rates = params + net.n_params();
    if (cfg.per_step_rates) {
        rule.rates = expanded;
        rule.rate_rows = cfg.inner_steps;
    }
    if (cfg.learner == Learner::anil) rule.frozen = net.weight_offset(net.n_layers() - 1, 0);
    return rule;
}

// MAML++'s rates r (k × L, step-major) expanded to out (k × P): layer l's parameters get r_{j,l}.
template <class T>
void expand_layer_rates(const NetSpec& net, std::int64_t k, const T* r, T* out) {
    const std::int64_t P = net.n_params();
    const int L = net.n_layers();
    for (std::int64_t j = 0; j < k; ++j)
        for (int l = 0; l < L; ++l)
            std::fill(out + j * P + layer_begin(net, l), out + j * P + layer_begin(net, l + 1),
                      r[j * L + l]);
}

// What a global step asks of the meta-gradient: its order, MAML++'s multi-step-loss weights and
// its per-layer, per-step rates expanded to one per parameter (checked finite). One place, so the
// local meta-batch and the distributed block partials of a step use the same plan.
template <class T>
class StepSchedule {
   public:
    void reserve(const NetSpec& net, const MetaConfig& cfg) {
        if (cfg.per_step_rates)
            expanded_.resize(checked_mul(cfg.inner_steps, net.n_params(), "inner_steps"));
        if (cfg.multi_step_loss) weights_.resize(cfg.inner_steps);
    }
    StepPlan set(const NetSpec& net, const MetaConfig& cfg, const T* params, std::int64_t step) {
        reserve(net, cfg);
        StepPlan plan;
        plan.first_order = cfg.first_order_at(step);
        if (cfg.multi_step_loss) {
            msl_weights(cfg.inner_steps, cfg.msl_anneal_steps, step, weights_.data());
            plan.weights = weights_.data();
        }
        if (cfg.per_step_rates) {
            const T* r = params + net.n_params();
            if (!all_finite(r, cfg.inner_steps * net.n_layers()))
                throw std::invalid_argument("theta: MAML++'s inner rates must be finite");
            expand_layer_rates(net, cfg.inner_steps, r, expanded_.data());
        }
        return plan;
    }
    // The expanded rates of the last set(), or null without per-step rates.
    const T* rates() const { return expanded_.empty() ? nullptr : expanded_.data(); }

   private:
    std::vector<T> expanded_;      // one rate per parameter and step
    std::vector<double> weights_;  // the multi-step-loss weights of the step
};

// One task's query loss after adaptation; out (meta_params) += scale · its meta-gradient.
// Also returns the support loss before adaptation in *support_loss.
// With MAML++'s multi-step loss the returned loss is Σ_j w_j L_q(φ_j), the value the gradient
// belongs to. plan: the order and MSL weights of this global step; expanded: MAML++'s rates, one
// per parameter and step (or null).
template <class T>
double task_meta_grad(MetaWorkspace<T>& ws, const NetSpec& net, const MetaConfig& cfg,
                      const T* params, const TaskData<T>& data, std::int64_t task, T scale,
                      T* out, double* support_loss, const StepPlan& plan,
                      const T* expanded = nullptr) {
    if (cfg.learner == Learner::protonet)
        return protonet_task_grad(ws.pass, ws.proto, net, params, data, task, scale, out,
                                  support_loss);
    if (cfg.learner == Learner::ridge)
        return ridge_task_grad(ws.pass, ws.ridge, net, params, data, task, scale, out,
                               support_loss);
    if (cfg.learner == Learner::imaml)
        return imaml_task_grad(ws.pass, ws.imaml, net,
                               ImamlRule{cfg.inner_steps, cfg.inner_lr, cfg.reg, cfg.cg_steps},
                               params, data, task, scale, out, support_loss, ws.g.data(),
                               ws.hv.data());
    const std::int64_t P = net.n_params();
    const std::int64_t s0 = data.offsets[task], s1 = s0 + data.n_support[task];
    const std::int64_t q1 = data.offsets[task + 1];
    const InnerRule<T> rule = inner_rule(net, cfg, params, expanded);
    const std::int64_t k = rule.steps;
    T* trail = ws.trail.data();
    T* grads = ws.grads.empty() ? nullptr : ws.grads.data();
    *support_loss = run_inner_loop(ws.pass, rule, params, data, s0, s1, P, trail, grads,
                                   ws.hv.data(), true, ws.rows);
    const T* phi_k = trail + (k - 1) % ws.rows * P;
    T* g = ws.g.data();
    if (cfg.learner == Learner::reptile) {
        const double loss = rows_value_grad<T>(ws.qpass, phi_k, data, s1, q1, P, nullptr);
#pragma omp simd
        for (std::int64_t p = 0; p < P; ++p) out[p] += scale * (params[p] - phi_k[p]);
        return loss;
    }
    double loss = rows_value_grad(ws.qpass, phi_k, data, s1, q1, P, g);
    // The support pass still holds φ_{k−1}'s forward pass: the first HVP below starts from it.
    const bool kept = keeps_forward(ws.pass, s1 - s0);
    const double* w = plan.weights;
    if (w) {
        loss *= w[k - 1];
        const T wk = static_cast<T>(w[k - 1]);
#pragma omp simd
        for (std::int64_t p = 0; p < P; ++p) g[p] *= wk;
    }
    const int L = net.n_layers();
    for (std::int64_t j = k - 1; j >= 0; --j) {
        check_interrupt();
        if (grads && cfg.per_step_rates) {  // ∂L/∂r_{j,l} = −Σ_{p∈l} g_{j+1,p} ∇L_s(φ_j)_p
            const T* gs = grads + j * P;
            for (int l = 0; l < L; ++l) {
                T acc = T(0);
                for (std::int64_t p = layer_begin(net, l); p < layer_begin(net, l + 1); ++p)
                    acc += g[p] * gs[p];
                out[P + j * L + l] -= scale * acc;
            }
        } else if (grads) {  // ∂L/∂r += −g_{j+1} ⊙ ∇L_s(φ_j)
            const T* gs = grads + j * P;
            T* out_r = out + P;
#pragma omp simd
            for (std::int64_t p = 0; p < P; ++p) out_r[p] -= scale * g[p] * gs[p];
        }
        // (read only by the HVP and the multi-step loss: the trail then holds every φ_j)
        const T* phi_j = j == 0 ? params : trail + (j - 1) % ws.rows * P;
        if (!plan.first_order) {
            scale_by_rates(rule, g, P, ws.v.data(), j);
            rows_hvp(ws.pass, phi_j, ws.v.data(), data, s0, s1, P, ws.hv.data(), j == 0,
                     kept && j == k - 1);
            subtract(ws.hv.data(), P, g);  // g −= H v
        }
        if (w && j >= 1) {  // the multi-step loss's term w_j L_q(φ_j)
            T* gq = ws.hv.data();
            loss += w[j - 1] * rows_value_grad(ws.qpass, phi_j, data, s1, q1, P, gq);
            const T wj = static_cast<T>(w[j - 1]);
#pragma omp simd
            for (std::int64_t p = 0; p < P; ++p) g[p] += wj * gq[p];
        }
    }
    add_scaled(scale, g, P, out);
    return loss;
}

// Tasks a meta-batch is split into, fixed by the batch size alone (never the thread count).
inline std::int64_t meta_blocks(std::int64_t n_tasks, std::int64_t n_params, std::size_t elem) {
    constexpr std::int64_t kMaxMetaBlocks = 64;
    constexpr std::int64_t kMetaPartialBytes = 64ll << 20;
    std::int64_t cap = kMetaPartialBytes / static_cast<std::int64_t>(elem) /
                       std::max<std::int64_t>(1, n_params);
    cap = std::max<std::int64_t>(1, std::min(cap, kMaxMetaBlocks));
    return std::min(n_tasks, cap);
}

// Thread-owned workspaces, made once and reused across the steps of a chunk.
template <class T>
class MetaBatch {
   public:
    MetaBatch(const NetSpec& net, const MetaConfig& cfg, int n_threads)
        : net_(net), cfg_(cfg), threads_(resolve_threads(n_threads)) {
        check_meta_net(net_);
        if (cfg_.inner_steps < 1)
            throw std::invalid_argument("inner_steps must be >= 1, got " +
                                        std::to_string(cfg_.inner_steps));
        if (cfg_.learner == Learner::imaml && !(cfg_.reg > 0.0 && std::isfinite(cfg_.reg)))
            throw std::invalid_argument("reg must be finite and > 0, got " +
                                        number_text(cfg_.reg));
        if (cfg_.learner == Learner::imaml && cfg_.cg_steps < 1)
            throw std::invalid_argument("cg_steps must be >= 1, got " +
                                        std::to_string(cfg_.cg_steps));
        if ((cfg_.per_step_rates || cfg_.multi_step_loss) && cfg_.learner != Learner::maml)
            throw std::invalid_argument(
                "per_step_rates and multi_step_loss (MAML++) apply to MAML only");
        if (cfg_.multi_step_loss && cfg_.msl_anneal_steps < 1)
            throw std::invalid_argument("msl_anneal_steps must be >= 1, got " +
                                        std::to_string(cfg_.msl_anneal_steps));
        if (cfg_.first_order_until < 0)
            throw std::invalid_argument("first_order_until must be >= 0, got " +
                                        std::to_string(cfg_.first_order_until));
        meta_params(net_, cfg_);
        schedule_.reserve(net_, cfg_);
        ensure_workspaces(1);
    }
    MetaBatch(const MetaBatch&) = delete;  // the workspaces point at net_
    MetaBatch& operator=(const MetaBatch&) = delete;

    const NetSpec& net() const { return net_; }
    const MetaConfig& config() const { return cfg_; }
    int threads() const { return threads_; }
    std::int64_t n_meta_params() const { return meta_params(net_, cfg_); }

    // Mean over the chosen tasks of the query loss after adaptation; grad (meta_params) = the
    // mean meta-gradient (Reptile: mean of θ − φ_k). tasks (n) index data's tasks; each needs
    // support and query rows. task_losses (n, optional) gets each task's query loss. step: the
    // global step, which sets MAML++'s order and multi-step-loss weights.
    double value_and_grad(const T* params, const TaskData<T>& data, const std::int64_t* tasks,
                          std::int64_t n, T* grad, T* task_losses = nullptr,
                          double* support_loss = nullptr, std::int64_t step = 0) {
        const std::int64_t G = n_meta_params();
        for (std::int64_t i = 0; i < n; ++i) {
            const std::int64_t t = tasks[i];
            if (data.n_support[t] < 1 || data.offsets[t + 1] - data.offsets[t] - data.n_support[t] < 1)
                throw std::invalid_argument(
                    "batch: task " + std::to_string(t) + " has " +
                    std::to_string(data.n_support[t]) + " support and " +
                    std::to_string(data.offsets[t + 1] - data.offsets[t] - data.n_support[t]) +
                    " query rows; meta-learning needs at least one of each");
            if (episode_learner(cfg_.learner)) {
                const std::int64_t rows = data.offsets[t + 1] - data.offsets[t];
                const std::int64_t N = episode_classes(
                    data.y.data + data.offsets[t] * data.y.cols, data.y.cols, data.n_support[t],
                    rows, "batch: task " + std::to_string(t),
                    cfg_.learner == Learner::ridge ? "RidgeHead" : "ProtoNet");
                if (cfg_.learner == Learner::ridge)
                    require_elements("batch", ridge_elements(data.n_support[t],
                                                             rows - data.n_support[t],
                                                             net_.n_outputs(), N, "batch"),
                                     sizeof(double), "for a ridge head's support-row solve");
            }
        }
        const std::int64_t nb = meta_blocks(n, G, sizeof(T));
        losses_.assign(n, 0.0);
        before_.assign(n, 0.0);
        run_blocks(params, data, tasks, n, 0, nb, losses_.data(), before_.data(), step,
                   [&](std::int64_t count, int team, auto&& block) {
                       ordered_reduce(count, G, team, parts_, grad, block);
                   });
        double loss = 0.0, before = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
            loss += losses_[i];
            before += before_[i];
            if (task_losses) task_losses[i] = static_cast<T>(losses_[i]);
        }
        if (support_loss) *support_loss = before / static_cast<double>(n);
        return loss / static_cast<double>(n);
    }

    // Bytes its workspaces and partial sums hold now.
    std::int64_t held_bytes() const {
        std::int64_t b = metacore::held_bytes(parts_) + metacore::held_bytes(losses_) +
                         metacore::held_bytes(before_);
        for (const auto& ws : workspaces_) b += ws.held_bytes();
        return b;
    }

    // Blocks [b0, b1) of the nb = meta_blocks(n, G) fixed blocks of a meta-batch of n tasks
    // (block b: tasks [b·n/nb, (b+1)·n/nb)) — one machine's share of value_and_grad's work
    // (distributed_step.hpp). parts ((b1 − b0) × G, zeroed): row k += Σ over block b0 + k's
    // tasks of (1/n)·their meta-gradient, in task order. tasks, losses and support are indexed
    // from the range's first task b0·n/nb: its tasks in data, their query losses after
    // adaptation and support losses before it. The tasks are the caller's to check.
    void block_partials(const T* params, const TaskData<T>& data, const std::int64_t* tasks,
                        std::int64_t n, std::int64_t b0, std::int64_t b1, T* parts,
                        double* losses, double* support, std::int64_t step) {
        run_blocks(params, data, tasks, n, b0, b1, losses, support, step,
                   [&](std::int64_t count, int team, auto&& block) {
                       accumulate_blocks(count, n_meta_params(), parts, team, block);
                   });
    }

   private:
    // The work of blocks [b0, b1) (block_partials), handed to reduce(count, team, block) with
    // block(k, tid, row): row += block b0 + k's share, on workspace tid.
    template <class Reduce>
    void run_blocks(const T* params, const TaskData<T>& data, const std::int64_t* tasks,
                    std::int64_t n, std::int64_t b0, std::int64_t b1, double* losses,
                    double* support, std::int64_t step, Reduce&& reduce) {
        const std::int64_t nb = meta_blocks(n, n_meta_params(), sizeof(T));
        if (b0 < 0 || b1 <= b0 || b1 > nb)
            throw std::invalid_argument("blocks must satisfy 0 <= b0 < b1 <= " +
                                        std::to_string(nb) + ", got [" + std::to_string(b0) +
                                        ", " + std::to_string(b1) + ")");
        const std::int64_t lo = b0 * n / nb;
        for (auto& ws : workspaces_) {  // params may have changed in place
            ws.pass.release();
            ws.pass.forget();
            ws.qpass.release();
            ws.qpass.forget();
        }
        const StepPlan plan = schedule_.set(net_, cfg_, params, step);
        const T* expanded = schedule_.rates();
        const T scale = T(1) / static_cast<T>(n);
        const int team = team_for(work(data, tasks, b1 * n / nb - lo), threads_, b1 - b0);
        ensure_workspaces(team);
        reduce(b1 - b0, team, [&](std::int64_t k, int tid, T* row) {
            const std::int64_t b = b0 + k;
            for (std::int64_t i = b * n / nb; i < (b + 1) * n / nb; ++i)
                losses[i - lo] = task_meta_grad(workspaces_[tid], net_, cfg_, params, data,
                                                tasks[i - lo], scale, row, &support[i - lo],
                                                plan, expanded);
        });
    }

    // At least `team` workspaces (made when first needed: a team is sized by the work, and is
    // often smaller than the threads allowed), all checked against memory first.
    void ensure_workspaces(int team) {
        if (static_cast<int>(workspaces_.size()) >= team) return;
        require_elements("hidden (layer widths)",
                         checked_mul(team, NetPass<T>::elements(net_, true), "hidden (layer widths)"),
                         sizeof(T), "for the threads' activation buffers");
        require_elements("inner_steps",
                         checked_mul(team, MetaWorkspace<T>::elements(net_, cfg_), "inner_steps"),
                         sizeof(T),
                         ("for " + std::to_string(team) + " thread(s)' inner-loop trails of " +
                          std::to_string(cfg_.inner_steps) + " steps × " +
                          std::to_string(net_.n_params()) + " parameters").c_str());
        workspaces_.reserve(team);
        while (static_cast<int>(workspaces_.size()) < team) workspaces_.emplace_back(net_, cfg_);
    }

    // Multiply-adds of a meta-batch, roughly: every inner step and the outer pass touch each
    // parameter once per row (the backward pass and HVPs add a constant factor, ignored here).
    std::int64_t work(const TaskData<T>& data, const std::int64_t* tasks, std::int64_t n) const {
        std::int64_t rows = 0;
        for (std::int64_t i = 0; i < n; ++i)
            rows += data.offsets[tasks[i] + 1] - data.offsets[tasks[i]];
        return saturating_mul(saturating_mul(rows, net_.n_params()),
                              saturating_add(cfg_.inner_steps, 1));
    }

    NetSpec net_;
    MetaConfig cfg_;
    int threads_;
    std::vector<MetaWorkspace<T>> workspaces_;
    std::vector<T> parts_;
    std::vector<double> losses_, before_;
    StepSchedule<T> schedule_;  // MAML++'s plan of the current step
};

inline bool same_config(const MetaConfig& a, const MetaConfig& b) {
    return a.learner == b.learner && a.inner_steps == b.inner_steps && a.inner_lr == b.inner_lr &&
           a.first_order == b.first_order && a.per_step_rates == b.per_step_rates &&
           a.multi_step_loss == b.multi_step_loss && a.msl_anneal_steps == b.msl_anneal_steps &&
           a.first_order_until == b.first_order_until && a.reg == b.reg &&
           a.cg_steps == b.cg_steps;
}

template <class T>
bool reusable(const MetaBatch<T>& batch, const NetSpec& net, const MetaConfig& cfg, int n_threads) {
    return same_net(batch.net(), net) && same_config(batch.config(), cfg) &&
           batch.threads() == resolve_threads(n_threads);
}

// f(batch) on a MetaBatch for (net, cfg, n_threads) that the calling thread keeps between calls,
// so that a meta-step called again and again (from Python, one step per call) does not rebuild
// its workspaces: a rebuilt workspace is fresh memory from the system, paid for by a page fault
// on every page at every call (for the Omniglot-minimal ProtoNet step, ≈ 8 MB per thread: 2–3 ms
// of a 7.6 ms call). The batch is kept after the call only while everything it holds — every
// thread's workspace, grown to the call's largest task, and the partial sums — is at most
// kKeepBytes, and never after a call that threw (a failed allocation may have left it part
// grown). The batch resets what it remembers of θ at every call (block_partials).
template <class T, class F>
auto with_meta_batch(const NetSpec& net, const MetaConfig& cfg, int n_threads, F&& f) {
    constexpr std::int64_t kKeepBytes = 64ll << 20;
    thread_local std::unique_ptr<MetaBatch<T>> kept;
    if (!kept || !reusable(*kept, net, cfg, n_threads)) {
        kept.reset();
        kept = std::make_unique<MetaBatch<T>>(net, cfg, n_threads);
    }
    std::unique_ptr<MetaBatch<T>> batch = std::move(kept);  // back only if all went well
    auto result = f(*batch);
    if (batch->held_bytes() <= kKeepBytes) kept = std::move(batch);
    return result;
}

}  // namespace metacore
