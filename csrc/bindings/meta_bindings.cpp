// Bindings of the meta-learners and the adapt-and-predict path. Each entry point: check the
// arguments with the GIL held, allocate the outputs, release the GIL around the core call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>

#include "arrays.hpp"
#include "metacore/adapt.hpp"
#include "metacore/meta.hpp"
#include "metacore/prototypes.hpp"
#include "signals.hpp"
#include "task_arrays.hpp"
#include "metacore/format.hpp"

namespace metacore::bindings {

namespace {

Learner parse_learner(const std::string& s) {
    return parse_choice<Learner>("learner", s,
                                 {{"maml", Learner::maml}, {"reptile", Learner::reptile},
                                  {"metasgd", Learner::metasgd}, {"anil", Learner::anil},
                                  {"protonet", Learner::protonet}, {"ridge", Learner::ridge},
                                  {"imaml", Learner::imaml}});
}

// The inner-loop rule of the adapt path: a scalar lr, per-parameter rates (Meta-SGD), or one row
// of per-parameter rates per step (MAML++; step j uses row min(j, rows − 1)); ANIL's head_only
// freezes the trunk.
template <class T>
InnerRule<T> adapt_rule(const NetSpec& net, std::int64_t steps, double lr,
                        const std::optional<py::array_t<T>>& rates, bool head_only) {
    check_meta_net(net);
    if (steps < 0) throw py::value_error("steps must be >= 0, got " + std::to_string(steps));
    InnerRule<T> rule;
    rule.steps = steps;
    if (rates) {
        rule.rates = rates->data();
        rule.rate_rows = rates->ndim() == 2 ? rates->shape(0) : 1;
    } else {
        if (!std::isfinite(lr) || lr < 0.0)
            throw py::value_error("lr must be finite and >= 0, got " + metacore::number_text(lr));
        rule.lr = static_cast<T>(lr);
    }
    if (head_only) rule.frozen = net.weight_offset(net.n_layers() - 1, 0);
    return rule;
}

template <class T>
std::optional<py::array_t<T>> checked_rates(const NetSpec& net, const py::object& obj) {
    if (obj.is_none()) return std::nullopt;
    const bool per_step = py::isinstance<py::array>(obj) && py::array(obj.cast<py::array>()).ndim() == 2;
    auto r = per_step ? checked<T>(obj, "lr", {-1, net.n_params()})
                      : checked<T>(obj, "lr", {net.n_params()});
    if (per_step && r.shape(0) < 1)
        throw py::value_error("lr: per-step rates need at least one row, got shape " +
                              shape_str(r));
    require_finite(r, "lr");
    return r;
}

template <class T>
py::tuple meta_typed(const NetSpec& net, const MetaConfig& cfg, const py::array& params_obj,
                     const py::object& X_obj, const py::object& y_obj,
                     const py::object& offsets_obj, const py::object& ns_obj,
                     std::optional<int> n_threads, std::int64_t step) {
    const std::int64_t G = meta_params(net, cfg);
    auto params = checked<T>(params_obj, "theta", {G});
    require_finite(params, "theta");
    auto X = checked<T>(X_obj, "X", {-1, net.n_features()});
    auto y = checked_meta_targets<T>(y_obj, "y", net, X.shape(0), episode_learner(cfg.learner));
    auto offsets = checked<std::int64_t>(offsets_obj, "offsets", {-1});
    auto ns = checked<std::int64_t>(ns_obj, "n_support", {offsets.shape(0) - 1});
    const TaskData<T> data = checked_tasks<T>(X, y, offsets, ns);
    const int threads = threads_arg(n_threads);
    const std::int64_t n = data.n_tasks;
    auto grad = output<T>("meta gradient", {G});
    auto losses = output<T>("task_losses", {n});
    T* g = grad.mutable_data();
    T* l = losses.mutable_data();
    double loss = 0.0, before = 0.0;
    without_gil([&] {
        std::vector<std::int64_t> tasks(n);
        for (std::int64_t i = 0; i < n; ++i) tasks[i] = i;
        loss = with_meta_batch<T>(net, cfg, threads, [&](MetaBatch<T>& batch) {
            return batch.value_and_grad(params.data(), data, tasks.data(), n, g, l, &before, step);
        });
    });
    return py::make_tuple(loss, grad, losses, before);
}

template <class T>
py::array_t<T> adapt_typed(const NetSpec& net, const py::array& theta_obj, const py::object& Xs_obj,
                           const py::object& ys_obj, const py::object* Xq_obj, std::int64_t steps,
                           double lr, const py::object& rates_obj, bool head_only) {
    auto theta = checked<T>(theta_obj, "theta", {net.n_params()});
    require_finite(theta, "theta");
    auto Xs = checked_rows<T>(Xs_obj, "X_support", net, 1);
    auto ys = checked_targets<T>(ys_obj, "y_support", net, Xs.shape(0));
    auto rates = checked_rates<T>(net, rates_obj);
    const InnerRule<T> rule = adapt_rule<T>(net, steps, lr, rates, head_only);
    if (!Xq_obj) {
        auto out = output<T>("adapt", {net.n_params()});
        T* o = out.mutable_data();
        without_gil([&] { adapt<T>(net, rule, theta.data(), rows_view(Xs), rows_view(ys), o); });
        return out;
    }
    auto Xq = checked_rows<T>(*Xq_obj, "X_query", net, 0);
    auto out = output<T>("adapt_predict", {static_cast<py::ssize_t>(Xq.shape(0)),
                                           static_cast<py::ssize_t>(net.n_outputs())});
    T* o = out.mutable_data();
    without_gil([&] {
        adapt_predict<T>(net, rule, theta.data(), rows_view(Xs), rows_view(ys), rows_view(Xq), o);
    });
    return out;
}

template <class T>
py::tuple adapt_batch_typed(const NetSpec& net, const py::array& theta_obj,
                            const py::object& X_obj, const py::object& y_obj,
                            const py::object& offsets_obj, const py::object& ns_obj,
                            std::int64_t steps, double lr, const py::object& rates_obj,
                            bool head_only, bool want_theta, bool want_pred,
                            std::optional<int> n_threads) {
    auto theta = checked<T>(theta_obj, "theta", {net.n_params()});
    require_finite(theta, "theta");
    auto X = checked<T>(X_obj, "X", {-1, net.n_features()});
    auto y = checked_targets<T>(y_obj, "y", net, X.shape(0));
    auto offsets = checked<std::int64_t>(offsets_obj, "offsets", {-1});
    auto ns = checked<std::int64_t>(ns_obj, "n_support", {offsets.shape(0) - 1});
    const TaskData<T> data = checked_tasks<T>(X, y, offsets, ns);
    for (std::int64_t t = 0; t < data.n_tasks; ++t)
        if (data.n_support[t] < 1)
            throw py::value_error("tasks: task " + std::to_string(t) +
                                  " has no support rows to adapt on");
    auto rates = checked_rates<T>(net, rates_obj);
    const InnerRule<T> rule = adapt_rule<T>(net, steps, lr, rates, head_only);
    const int threads = threads_arg(n_threads);
    std::int64_t n_query = 0;
    for (std::int64_t t = 0; t < data.n_tasks; ++t)
        n_query += data.offsets[t + 1] - data.offsets[t] - data.n_support[t];
    py::object phis_obj = py::none(), preds_obj = py::none();
    T *phis = nullptr, *preds = nullptr;
    if (want_theta) {
        auto a = output<T>("adapt_batch", {data.n_tasks, net.n_params()});
        phis = a.mutable_data();
        phis_obj = a;
    }
    if (want_pred) {
        auto a = output<T>("adapt_batch", {n_query, net.n_outputs()});
        preds = a.mutable_data();
        preds_obj = a;
    }
    without_gil([&] { adapt_batch<T>(net, rule, theta.data(), data, phis, preds, threads); });
    return py::make_tuple(phis_obj, preds_obj);
}

template <class T>
py::array_t<T> prototypes_typed(const py::array& E_obj, const py::object& y_obj) {
    auto E = checked<T>(E_obj, "embeddings", {-1, -1});
    require_finite(E, "embeddings");
    const std::int64_t n = E.shape(0), D = E.shape(1);
    if (n < 1 || D < 1)
        throw py::value_error("embeddings must have at least one row and one column, got shape " +
                              shape_str(E));
    auto y = checked<T>(y_obj, "y_support", {n});
    const std::int64_t N = episode_classes(y.data(), 1, n, n, "y_support");
    auto out = output<T>("prototypes", {N, D});
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    std::vector<std::int64_t> counts(N);
    class_means(E.data(), y.data(), 1, n, D, N, o, counts.data());
    return out;
}

template <class T>
py::array_t<T> prototype_logits_typed(const py::array& P_obj, const py::object& E_obj) {
    auto protos = checked<T>(P_obj, "prototypes", {-1, -1});
    require_finite(protos, "prototypes");
    if (protos.shape(0) < 1)
        throw py::value_error("prototypes must have at least one row, got shape " +
                              shape_str(protos));
    auto E = checked<T>(E_obj, "embeddings", {-1, protos.shape(1)});
    require_finite(E, "embeddings");
    const std::int64_t N = protos.shape(0), D = protos.shape(1), n = E.shape(0);
    auto out = output<T>("prototype logits", {n, N});
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    prototype_logits(protos.data(), N, D, E.data(), n, o);
    return out;
}

template <class T>
py::tuple sinusoid_typed(const SinusoidSource& src, std::uint64_t seed, std::int64_t step,
                         std::int64_t n_tasks) {
    const std::int64_t n = src.rows_per_task();
    const std::int64_t rows = src.batch_rows(n_tasks, "n_tasks", sizeof(T));
    auto X = output<T>("n_tasks", {rows, 1});
    auto y = output<T>("n_tasks", {rows});
    auto offsets = output<std::int64_t>("n_tasks", {checked_add(n_tasks, 1, "n_tasks")});
    auto ns = output<std::int64_t>("n_tasks", {n_tasks});
    T* Xp = X.mutable_data();
    T* yp = y.mutable_data();
    for (std::int64_t i = 0; i <= n_tasks; ++i) offsets.mutable_data()[i] = i * n;
    for (std::int64_t i = 0; i < n_tasks; ++i) ns.mutable_data()[i] = src.k_support;
    without_gil([&] {
        for (std::int64_t i = 0; i < n_tasks; ++i) {
            if (i % 1024 == 0) check_interrupt();
            src.task(seed, step, i, Xp + i * n, yp + i * n);
        }
    });
    return py::make_tuple(X, y, offsets, ns);
}

template <class T>
py::tuple episodes_typed(const py::handle& X_obj, const py::handle& offsets_obj,
                         std::int64_t n_way, std::int64_t k_shot, std::int64_t q_query,
                         std::uint64_t seed, std::int64_t step, std::int64_t n_tasks) {
    auto Xp = checked<T>(X_obj, "X", {-1, -1});
    auto op = checked<std::int64_t>(offsets_obj, "class_offsets", {-1});
    const EpisodePool<T> pool = episode_pool<T>(Xp, op, n_way, k_shot, q_query);
    const std::int64_t n = pool.rows_per_task(), d = Xp.shape(1);
    const std::int64_t rows = pool.batch_rows(n_tasks, "n_tasks", sizeof(T));
    auto X = output<T>("n_tasks", {rows, d});
    auto y = output<T>("n_tasks", {rows});
    auto offsets = output<std::int64_t>("n_tasks", {checked_add(n_tasks, 1, "n_tasks")});
    auto ns = output<std::int64_t>("n_tasks", {n_tasks});
    for (std::int64_t i = 0; i <= n_tasks; ++i) offsets.mutable_data()[i] = i * n;
    for (std::int64_t i = 0; i < n_tasks; ++i) ns.mutable_data()[i] = n_way * k_shot;
    T* xo = X.mutable_data();
    T* yo = y.mutable_data();
    without_gil([&] {
        for (std::int64_t i = 0; i < n_tasks; ++i) {
            if (i % 1024 == 0) check_interrupt();
            pool.task(seed, step, i, xo + i * n * d, yo + i * n);
        }
    });
    return py::make_tuple(X, y, offsets, ns);
}

}  // namespace

MetaConfig meta_config(const NetSpec& net, const std::string& learner, double inner_lr,
                       std::int64_t inner_steps, bool first_order, bool per_step_rates,
                       bool multi_step_loss, std::int64_t msl_anneal_steps,
                       std::int64_t first_order_until) {
    check_meta_net(net);
    MetaConfig cfg;
    cfg.learner = parse_learner(learner);
    if (inner_steps < 1)
        throw py::value_error("inner_steps must be >= 1, got " + std::to_string(inner_steps));
    if (!std::isfinite(inner_lr) || inner_lr < 0.0)
        throw py::value_error("inner_lr must be finite and >= 0, got " + metacore::number_text(inner_lr));
    cfg.inner_steps = inner_steps;
    cfg.inner_lr = inner_lr;
    cfg.first_order = first_order;
    if ((per_step_rates || multi_step_loss) && cfg.learner != Learner::maml)
        throw py::value_error("per_step_rates and multi_step_loss (MAML++) apply to learner "
                              "'maml' only, got '" + learner + "'");
    if (multi_step_loss && msl_anneal_steps < 1)
        throw py::value_error("msl_anneal_steps must be >= 1, got " +
                              std::to_string(msl_anneal_steps));
    if (first_order_until < 0)
        throw py::value_error("first_order_until must be >= 0, got " +
                              std::to_string(first_order_until));
    cfg.per_step_rates = per_step_rates;
    cfg.multi_step_loss = multi_step_loss;
    cfg.msl_anneal_steps = msl_anneal_steps;
    cfg.first_order_until = first_order_until;
    return cfg;
}

// iMAML's settings (the other learners ignore them): λ finite and > 0, cg_steps >= 1.
MetaConfig with_imaml_options(MetaConfig cfg, double reg, std::int64_t cg_steps) {
    if (!std::isfinite(reg) || !(reg > 0.0))
        throw py::value_error("reg must be finite and > 0, got " + metacore::number_text(reg));
    if (cg_steps < 1)
        throw py::value_error("cg_steps must be >= 1, got " + std::to_string(cg_steps));
    cfg.reg = reg;
    cfg.cg_steps = cg_steps;
    return cfg;
}

void register_meta(py::module_& m) {
    m.def(
        "meta_value_and_grad",
        [](const NetSpec& net, const std::string& learner, double inner_lr,
           std::int64_t inner_steps, bool first_order, const py::array& params,
           const py::object& X, const py::object& y, const py::object& offsets,
           const py::object& n_support, std::optional<int> n_threads, bool per_step_rates,
           bool multi_step_loss, std::int64_t msl_anneal_steps, std::int64_t first_order_until,
           double reg, std::int64_t cg_steps, std::int64_t step) {
            const MetaConfig cfg = with_imaml_options(
                meta_config(net, learner, inner_lr, inner_steps, first_order, per_step_rates,
                            multi_step_loss, msl_anneal_steps, first_order_until),
                reg, cg_steps);
            if (step < 0) throw py::value_error("step must be >= 0, got " + std::to_string(step));
            if (is_float32(params))
                return meta_typed<float>(net, cfg, params, X, y, offsets, n_support, n_threads,
                                         step);
            return meta_typed<double>(net, cfg, params, X, y, offsets, n_support, n_threads, step);
        },
        py::arg("net"), py::arg("learner"), py::arg("inner_lr"), py::arg("inner_steps"),
        py::arg("first_order"), py::arg("theta"), py::arg("X"), py::arg("y"), py::arg("offsets"),
        py::arg("n_support"), py::arg("n_threads") = py::none(),
        py::arg("per_step_rates") = false, py::arg("multi_step_loss") = false,
        py::arg("msl_anneal_steps") = 1, py::arg("first_order_until") = 0, py::arg("reg") = 1.0,
        py::arg("cg_steps") = 5, py::arg("step") = 0,
        "(mean query loss after adaptation, meta-gradient, per-task query losses, mean support "
        "loss before adaptation); MAML++'s options, iMAML's λ (reg) and conjugate-gradient steps, "
        "and the global step `step` that sets MAML++'s order and multi-step-loss weights");
    m.def(
        "msl_weights",
        [](std::int64_t inner_steps, std::int64_t anneal_steps, std::int64_t step) {
            if (inner_steps < 1)
                throw py::value_error("inner_steps must be >= 1, got " + std::to_string(inner_steps));
            if (anneal_steps < 1)
                throw py::value_error("msl_anneal_steps must be >= 1, got " +
                                      std::to_string(anneal_steps));
            if (step < 0) throw py::value_error("step must be >= 0, got " + std::to_string(step));
            py::array_t<double> w(inner_steps);
            msl_weights(inner_steps, anneal_steps, step, w.mutable_data());
            return w;
        },
        py::arg("inner_steps"), py::arg("msl_anneal_steps"), py::arg("step"),
        "(inner_steps,) MAML++'s multi-step-loss weights at global step `step` (Antoniou et al. "
        "2019): w[j-1] weighs the query loss after inner step j.");
    m.def(
        "adapt",
        [](const NetSpec& net, const py::array& theta, const py::object& Xs, const py::object& ys,
           std::int64_t steps, double lr, const py::object& rates, bool head_only) -> py::array {
            if (is_float32(theta))
                return adapt_typed<float>(net, theta, Xs, ys, nullptr, steps, lr, rates, head_only);
            return adapt_typed<double>(net, theta, Xs, ys, nullptr, steps, lr, rates, head_only);
        },
        py::arg("net"), py::arg("theta"), py::arg("X_support"), py::arg("y_support"),
        py::arg("steps"), py::arg("lr"), py::arg("rates") = py::none(),
        py::arg("head_only") = false);
    m.def(
        "adapt_predict",
        [](const NetSpec& net, const py::array& theta, const py::object& Xs, const py::object& ys,
           const py::object& Xq, std::int64_t steps, double lr, const py::object& rates,
           bool head_only) -> py::array {
            if (is_float32(theta))
                return adapt_typed<float>(net, theta, Xs, ys, &Xq, steps, lr, rates, head_only);
            return adapt_typed<double>(net, theta, Xs, ys, &Xq, steps, lr, rates, head_only);
        },
        py::arg("net"), py::arg("theta"), py::arg("X_support"), py::arg("y_support"),
        py::arg("X_query"), py::arg("steps"), py::arg("lr"), py::arg("rates") = py::none(),
        py::arg("head_only") = false);
    m.def(
        "adapt_batch",
        [](const NetSpec& net, const py::array& theta, const py::object& X, const py::object& y,
           const py::object& offsets, const py::object& n_support, std::int64_t steps, double lr,
           const py::object& rates, bool head_only, bool want_theta, bool want_pred,
           std::optional<int> n_threads) {
            if (is_float32(theta))
                return adapt_batch_typed<float>(net, theta, X, y, offsets, n_support, steps, lr,
                                                rates, head_only, want_theta, want_pred,
                                                n_threads);
            return adapt_batch_typed<double>(net, theta, X, y, offsets, n_support, steps, lr,
                                             rates, head_only, want_theta, want_pred, n_threads);
        },
        py::arg("net"), py::arg("theta"), py::arg("X"), py::arg("y"), py::arg("offsets"),
        py::arg("n_support"), py::arg("steps"), py::arg("lr"), py::arg("rates") = py::none(),
        py::arg("head_only") = false, py::arg("want_theta") = true, py::arg("want_pred") = true,
        py::arg("n_threads") = py::none());
    m.def(
        "prototypes",
        [](const py::array& E, const py::object& y) -> py::array {
            if (is_float32(E, "embeddings")) return prototypes_typed<float>(E, y);
            return prototypes_typed<double>(E, y);
        },
        py::arg("embeddings"), py::arg("y_support"),
        "(N, D) class prototypes: the mean embedding of the support rows of each class 0..N-1 "
        "(N = 1 + the largest label; every class needs a row).");
    m.def(
        "prototype_logits",
        [](const py::array& protos, const py::object& E) -> py::array {
            if (is_float32(protos, "prototypes")) return prototype_logits_typed<float>(protos, E);
            return prototype_logits_typed<double>(protos, E);
        },
        py::arg("prototypes"), py::arg("embeddings"),
        "(n, N) logits -||e_r - c_k||^2 of embedded rows against the prototypes.");
    m.def(
        "sinusoid_tasks",
        [](std::int64_t k_support, std::int64_t k_query, std::pair<double, double> amplitude,
           std::pair<double, double> phase, std::pair<double, double> x_range, std::uint64_t seed,
           std::int64_t step, std::int64_t n_tasks, bool float32) {
            if (n_tasks < 1) throw py::value_error("n_tasks must be >= 1, got " + std::to_string(n_tasks));
            const SinusoidSource src = sinusoid_source(k_support, k_query, amplitude, phase, x_range);
            return float32 ? sinusoid_typed<float>(src, seed, step, n_tasks)
                           : sinusoid_typed<double>(src, seed, step, n_tasks);
        },
        py::arg("k_support"), py::arg("k_query"), py::arg("amplitude"), py::arg("phase"),
        py::arg("x_range"), py::arg("seed"), py::arg("step"), py::arg("n_tasks"),
        py::arg("float32"));
    m.def(
        "episode_tasks",
        [](const py::array& X, const py::handle& class_offsets, std::int64_t n_way,
           std::int64_t k_shot, std::int64_t q_query, std::uint64_t seed, std::int64_t step,
           std::int64_t n_tasks) {
            if (n_tasks < 1) throw py::value_error("n_tasks must be >= 1, got " + std::to_string(n_tasks));
            if (is_float32(X, "X"))
                return episodes_typed<float>(X, class_offsets, n_way, k_shot, q_query, seed, step,
                                             n_tasks);
            return episodes_typed<double>(X, class_offsets, n_way, k_shot, q_query, seed, step,
                                          n_tasks);
        },
        py::arg("X"), py::arg("class_offsets"), py::arg("n_way"), py::arg("k_shot"),
        py::arg("q_query"), py::arg("seed"), py::arg("step"), py::arg("n_tasks"),
        "n_tasks N-way K-shot episodes of step `step` from a pool of rows grouped by class: the "
        "tasks a meta-step over this pool draws.");
}

}  // namespace metacore::bindings
