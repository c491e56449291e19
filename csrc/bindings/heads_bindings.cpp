// Bindings of the closed-form ridge head (R2D2) and iMAML's adaptation: check the arguments with
// the GIL held, allocate the outputs, release the GIL around the core call. Their meta-gradients
// run through meta_value_and_grad and the meta-step like every learner's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>

#include "arrays.hpp"
#include "metacore/imaml.hpp"
#include "metacore/meta.hpp"
#include "metacore/ridge_head.hpp"
#include "signals.hpp"
#include "task_arrays.hpp"
#include "metacore/format.hpp"

namespace metacore::bindings {

namespace {

double checked_positive(double v, const char* name) {
    if (!std::isfinite(v) || !(v > 0.0))
        throw py::value_error(std::string(name) + " must be finite and > 0, got " +
                              metacore::number_text(v));
    return v;
}

template <class T>
py::array_t<T> ridge_weights_typed(const py::array& E_obj, const py::object& y_obj, double reg) {
    checked_positive(reg, "reg");
    auto E = checked<T>(E_obj, "embeddings", {-1, -1});
    require_finite(E, "embeddings");
    const std::int64_t n = E.shape(0), D = E.shape(1);
    if (n < 1 || D < 1)
        throw py::value_error("embeddings must have at least one row and one column, got shape " +
                              shape_str(E));
    auto y = checked<T>(y_obj, "y_support", {n});
    const std::int64_t N = episode_classes(y.data(), 1, n, n, "y_support", "RidgeHead");
    require_elements("embeddings", ridge_elements(n, 0, D, N, "embeddings"), sizeof(double),
                     "for the ridge head's support-row solve");
    auto out = output<T>("ridge head weights", {checked_add(D, 1, "embeddings"), N});
    T* o = out.mutable_data();
    bool ok = true;
    without_gil([&] { ok = ridge_weights(E.data(), n, D, y.data(), N, reg, o); });
    if (!ok)
        throw py::value_error("reg=" + metacore::number_text(reg) + " is too small for these embeddings: "
                              "X Xᵀ + reg·I is not numerically positive definite");
    return out;
}

template <class T>
py::array_t<T> ridge_logits_typed(const py::array& W_obj, const py::object& E_obj, double scale) {
    if (!std::isfinite(scale)) throw py::value_error("scale must be finite, got " + metacore::number_text(scale));
    auto W = checked<T>(W_obj, "weights", {-1, -1});
    require_finite(W, "weights");
    if (W.shape(0) < 2 || W.shape(1) < 1)
        throw py::value_error("weights must have shape (D + 1, N) with D, N >= 1, got " +
                              shape_str(W));
    const std::int64_t D = W.shape(0) - 1, N = W.shape(1);
    auto E = checked<T>(E_obj, "embeddings", {-1, D});
    require_finite(E, "embeddings");
    const std::int64_t n = E.shape(0);
    auto out = output<T>("ridge head logits", {n, N});
    T* o = out.mutable_data();
    without_gil([&] { ridge_logits(W.data(), D, N, E.data(), n, scale, o); });
    return out;
}

ImamlRule imaml_rule(std::int64_t steps, double lr, double reg) {
    if (steps < 0) throw py::value_error("steps must be >= 0, got " + std::to_string(steps));
    if (!std::isfinite(lr) || lr < 0.0)
        throw py::value_error("lr must be finite and >= 0, got " + metacore::number_text(lr));
    ImamlRule rule;
    rule.steps = steps;
    rule.lr = lr;
    rule.reg = checked_positive(reg, "reg");
    return rule;
}

template <class T>
py::array_t<T> imaml_adapt_typed(const NetSpec& net, const py::array& theta_obj,
                                 const py::object& Xs_obj, const py::object& ys_obj,
                                 const ImamlRule& rule) {
    check_meta_net(net);
    auto theta = checked<T>(theta_obj, "theta", {net.n_params()});
    require_finite(theta, "theta");
    auto Xs = checked_rows<T>(Xs_obj, "X_support", net, 1);
    auto ys = checked_targets<T>(ys_obj, "y_support", net, Xs.shape(0));
    auto out = output<T>("imaml_adapt", {net.n_params()});
    T* o = out.mutable_data();
    without_gil([&] { imaml_adapt<T>(net, rule, theta.data(), rows_view(Xs), rows_view(ys), o); });
    return out;
}

template <class T>
py::array_t<T> imaml_batch_typed(const NetSpec& net, const py::array& theta_obj,
                                 const py::object& X_obj, const py::object& y_obj,
                                 const py::object& offsets_obj, const py::object& ns_obj,
                                 const ImamlRule& rule, std::optional<int> n_threads) {
    check_meta_net(net);
    auto theta = checked<T>(theta_obj, "theta", {net.n_params()});
    require_finite(theta, "theta");
    auto X = checked<T>(X_obj, "X", {-1, net.n_features()});
    auto y = checked_targets<T>(y_obj, "y", net, X.shape(0));
    auto offsets = checked<std::int64_t>(offsets_obj, "offsets", {-1});
    auto ns = checked<std::int64_t>(ns_obj, "n_support", {offsets.shape(0) - 1});
    const TaskData<T> data = checked_tasks<T>(X, y, offsets, ns);
    std::int64_t n_query = 0;
    for (std::int64_t t = 0; t < data.n_tasks; ++t) {
        if (data.n_support[t] < 1)
            throw py::value_error("tasks: task " + std::to_string(t) +
                                  " has no support rows to adapt on");
        n_query += data.offsets[t + 1] - data.offsets[t] - data.n_support[t];
    }
    const int threads = threads_arg(n_threads);
    auto out = output<T>("imaml_adapt_batch", {n_query, net.n_outputs()});
    T* o = out.mutable_data();
    without_gil([&] { imaml_adapt_batch<T>(net, rule, theta.data(), data, o, threads); });
    return out;
}

}  // namespace

void register_heads(py::module_& m) {
    m.def(
        "ridge_head_weights",
        [](const py::array& E, const py::object& y, double reg) -> py::array {
            if (is_float32(E, "embeddings")) return ridge_weights_typed<float>(E, y, reg);
            return ridge_weights_typed<double>(E, y, reg);
        },
        py::arg("embeddings"), py::arg("y_support"), py::arg("reg"),
        "(D + 1, N) ridge weights X_s^T (X_s X_s^T + reg I)^-1 Y of support embeddings (n, D) "
        "with a bias column and one-hot labels 0..N-1; the last row is the bias.");
    m.def(
        "ridge_head_logits",
        [](const py::array& W, const py::object& E, double scale) -> py::array {
            if (is_float32(W, "weights")) return ridge_logits_typed<float>(W, E, scale);
            return ridge_logits_typed<double>(W, E, scale);
        },
        py::arg("weights"), py::arg("embeddings"), py::arg("scale"),
        "(n, N) logits scale * [E, 1] W of embedded rows under ridge weights W (D + 1, N).");
    m.def(
        "imaml_adapt",
        [](const NetSpec& net, const py::array& theta, const py::object& Xs, const py::object& ys,
           std::int64_t steps, double lr, double reg) -> py::array {
            const ImamlRule rule = imaml_rule(steps, lr, reg);
            if (is_float32(theta)) return imaml_adapt_typed<float>(net, theta, Xs, ys, rule);
            return imaml_adapt_typed<double>(net, theta, Xs, ys, rule);
        },
        py::arg("net"), py::arg("theta"), py::arg("X_support"), py::arg("y_support"),
        py::arg("steps"), py::arg("lr"), py::arg("reg"),
        "phi after `steps` steps phi <- phi - lr (grad L_s(phi) + reg (phi - theta)) from theta.");
    m.def(
        "imaml_adapt_batch",
        [](const NetSpec& net, const py::array& theta, const py::object& X, const py::object& y,
           const py::object& offsets, const py::object& n_support, std::int64_t steps, double lr,
           double reg, std::optional<int> n_threads) -> py::array {
            const ImamlRule rule = imaml_rule(steps, lr, reg);
            if (is_float32(theta))
                return imaml_batch_typed<float>(net, theta, X, y, offsets, n_support, rule,
                                                n_threads);
            return imaml_batch_typed<double>(net, theta, X, y, offsets, n_support, rule,
                                             n_threads);
        },
        py::arg("net"), py::arg("theta"), py::arg("X"), py::arg("y"), py::arg("offsets"),
        py::arg("n_support"), py::arg("steps"), py::arg("lr"), py::arg("reg"),
        py::arg("n_threads") = py::none(),
        "Every task's query outputs after iMAML's proximal inner loop on its support rows, task "
        "after task (query rows, k).");
}

}  // namespace metacore::bindings
