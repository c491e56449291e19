// Bindings of the optimizers: the optimizer configuration, schedule factors and one optimizer
// step on caller-owned arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "arrays.hpp"
#include "optim_choices.hpp"
#include "metacore/optimizers.hpp"

namespace metacore::bindings {

namespace {

OptimizerConfig make_config(const std::string& kind, double lr, double momentum, bool nesterov,
                            double beta1, double beta2, double eps, double weight_decay,
                            double clip_norm, const std::string& schedule, std::int64_t every,
                            double gamma, std::int64_t period, double min_factor,
                            std::int64_t warmup, double warmup_start,
                            const std::vector<std::tuple<std::int64_t, std::int64_t, double, double>>&
                                groups) {
    OptimizerConfig c;
    c.kind = parse_optimizer_kind(kind);
    c.schedule.kind = parse_schedule_kind(schedule);
    c.lr = lr;
    c.momentum = momentum;
    c.nesterov = nesterov;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.clip_norm = clip_norm;
    c.schedule.every = every;
    c.schedule.gamma = gamma;
    c.schedule.period = period;
    c.schedule.min_factor = min_factor;
    c.schedule.warmup = warmup;
    c.schedule.warmup_start = warmup_start;
    for (const auto& [begin, end, lr_g, wd_g] : groups) c.groups.push_back({begin, end, lr_g, wd_g});
    c.validate();
    return c;
}

// A moment buffer the optimizer writes: exactly (P,) of dtype T, or None when not used.
template <class T>
T* moment_arg(const py::object& obj, const char* name, bool used, std::int64_t P) {
    if (!used) {
        if (!obj.is_none())
            throw py::value_error(std::string(name) + " must be None for this optimizer");
        return nullptr;
    }
    if (obj.is_none()) throw py::value_error(std::string(name) + " is needed by this optimizer");
    auto a = checked<T>(obj, name, {P});
    if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
    return a.mutable_data();
}

template <class T>
py::tuple optimizer_step_typed(const OptimizerConfig& c, std::int64_t t, const py::array& theta_obj,
                               const py::handle& grad_obj, const py::object& m_obj,
                               const py::object& v_obj, std::optional<int> n_threads) {
    auto theta = checked<T>(theta_obj, "theta", {-1});
    if (!theta.writeable())
        throw py::value_error("theta must be writeable (it is updated in place)");
    const std::int64_t P = theta.shape(0);
    auto grad = checked<T>(grad_obj, "grad", {P});
    if (t < 0) throw py::value_error("step must be >= 0, got " + std::to_string(t));
    OptimizerMoments<T> moments{moment_arg<T>(m_obj, "m", c.uses_m(), P),
                                moment_arg<T>(v_obj, "v", c.uses_v(), P)};
    const int threads = threads_arg(n_threads);
    T* th = theta.mutable_data();
    StepReport r;
    {
        py::gil_scoped_release release;
        r = step(c, t, th, grad.data(), moments, P, threads);
    }
    return py::make_tuple(r.grad_norm, r.lr, r.finite);
}

}  // namespace

void register_optim(py::module_& m) {
    py::class_<OptimizerConfig>(m, "OptimizerConfig")
        .def(py::init(&make_config), py::kw_only(), py::arg("kind"), py::arg("lr"),
             py::arg("momentum") = 0.0, py::arg("nesterov") = false, py::arg("beta1") = 0.9,
             py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0,
             py::arg("clip_norm") = 0.0, py::arg("schedule") = "constant", py::arg("every") = 1,
             py::arg("gamma") = 0.1, py::arg("period") = 1, py::arg("min_factor") = 0.0,
             py::arg("warmup") = 0, py::arg("warmup_start") = 0.0,
             py::arg("groups") =
                 std::vector<std::tuple<std::int64_t, std::int64_t, double, double>>{})
        .def_property_readonly("uses_m", &OptimizerConfig::uses_m)
        .def_property_readonly("uses_v", &OptimizerConfig::uses_v)
        .def("lr_at", [](const OptimizerConfig& c, std::int64_t t) {
            if (t < 0) throw py::value_error("step must be >= 0, got " + std::to_string(t));
            return c.lr * c.schedule.factor(t);
        }, py::arg("step"));

    m.def(
        "optimizer_step",
        [](const OptimizerConfig& c, std::int64_t t, const py::array& theta,
           const py::handle& grad, const py::object& m_buf, const py::object& v_buf,
           std::optional<int> n_threads) {
            if (is_float32(theta, "theta"))
                return optimizer_step_typed<float>(c, t, theta, grad, m_buf, v_buf, n_threads);
            return optimizer_step_typed<double>(c, t, theta, grad, m_buf, v_buf, n_threads);
        },
        py::arg("config"), py::arg("step"), py::arg("theta"), py::arg("grad"), py::arg("m"),
        py::arg("v"), py::arg("n_threads") = py::none());
}

}  // namespace metacore::bindings
