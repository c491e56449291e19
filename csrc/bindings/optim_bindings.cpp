// Bindings of the optimizers and the θ-update loop: the optimizer configuration, one optimizer
// step on caller-owned arrays, schedule factors, and the train state that runs chunks of steps.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "optim_choices.hpp"
#include "metacore/optimizers.hpp"
#include "metacore/train.hpp"
#include "objective_handle.hpp"

namespace metacore::bindings {

namespace {

OptimizerConfig make_config(const std::string& kind, double lr, double momentum, bool nesterov,
                            double beta1, double beta2, double eps, double weight_decay,
                            double clip_norm, const std::string& schedule, std::int64_t every,
                            double gamma, std::int64_t period, double min_factor,
                            std::int64_t warmup, double warmup_start) {
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

// A read-only NumPy view of a buffer owned by `owner` (which the view keeps alive).
template <class T>
py::array view_of(std::vector<T>& buf, py::handle owner) {
    py::array_t<T> a({static_cast<py::ssize_t>(buf.size())}, {static_cast<py::ssize_t>(sizeof(T))},
                     buf.data(), owner);
    a.attr("flags").attr("writeable") = false;
    return std::move(a);
}

template <class T>
void copy_into(std::vector<T>& dst, const py::handle& src, const char* name) {
    auto a = checked<T>(src, name, {static_cast<py::ssize_t>(dst.size())});
    std::copy(a.data(), a.data() + dst.size(), dst.begin());
}

const char* status_name(StepStatus s) {
    switch (s) {
        case StepStatus::nonfinite_loss: return "nonfinite_loss";
        case StepStatus::nonfinite_grad: return "nonfinite_grad";
        case StepStatus::nonfinite_update: return "nonfinite_update";
        default: return "ok";
    }
}

template <class T>
py::dict run_chunk(TrainState<T>& state, const ObjectiveHandle<T>& objective,
                   const OptimizerConfig& config, std::int64_t batch_tasks,
                   std::int64_t batch_rows, double l2, std::int64_t n_steps,
                   std::optional<int> n_threads, bool record_task_losses,
                   const std::optional<WeightingConfig>& weighting, std::int64_t n_shared) {
    const WeightingConfig wcfg = weighting ? *weighting : WeightingConfig();
    const Objective<T>& obj = objective.core();
    if (obj.n_params() != static_cast<std::int64_t>(state.theta.size()))
        throw py::value_error("the objective has " + std::to_string(obj.n_params()) +
                              " parameters but the train state's theta has " +
                              std::to_string(state.theta.size()));
    if (obj.n_tasks() != static_cast<std::int64_t>(state.alpha.size()))
        throw py::value_error("the objective has " + std::to_string(obj.n_tasks()) +
                              " tasks but the train state's alpha has " +
                              std::to_string(state.alpha.size()));
    if (state.optimizer.m.empty() == config.uses_m() ||
        state.optimizer.v.empty() == config.uses_v())
        throw py::value_error("the optimizer does not match the train state's moment buffers");
    if (n_steps < 0) throw py::value_error("n_steps must be >= 0");
    if (batch_tasks < 0 || batch_tasks > obj.n_tasks())
        throw py::value_error("batch_tasks must be in [0, n_tasks], got " +
                              std::to_string(batch_tasks));
    if (batch_rows < 0) throw py::value_error("batch_rows must be >= 0");
    if (static_cast<std::int64_t>(state.weighting.size()) != wcfg.state_size(obj.n_tasks()))
        throw py::value_error("the weighting needs a state of " +
                              std::to_string(wcfg.state_size(obj.n_tasks())) +
                              " entries, the train state has " +
                              std::to_string(state.weighting.size()));
    if (wcfg.kind != WeightingKind::fixed && wcfg.kind != WeightingKind::eval_driven &&
        (batch_tasks != 0 || batch_rows != 0))
        throw py::value_error("adaptive weighting strategies need every task and row at each "
                              "step: leave batch_tasks and batch_rows None");
    if (n_shared > obj.n_params()) throw py::value_error("n_shared must be <= n_params");
    const int threads = threads_arg(n_threads);
    py::array_t<double> objective_out(n_steps), grad_norm(n_steps), lr(n_steps);
    py::object losses_obj = py::none(), alpha_obj = py::none();
    ChunkMetrics<T> out{objective_out.mutable_data(), grad_norm.mutable_data(), lr.mutable_data(),
                        nullptr};
    if (record_task_losses) {
        py::array_t<T> losses(
            {static_cast<py::ssize_t>(n_steps), static_cast<py::ssize_t>(obj.n_tasks())});
        out.task_losses = losses.mutable_data();
        losses_obj = losses;
        py::array_t<T> alphas(
            {static_cast<py::ssize_t>(n_steps), static_cast<py::ssize_t>(obj.n_tasks())});
        out.alpha = alphas.mutable_data();
        alpha_obj = alphas;
    }
    ChunkOutcome r;
    {
        py::gil_scoped_release release;
        r = run_steps(obj, config, BatchSpec{batch_tasks, batch_rows}, static_cast<T>(l2), state,
                      n_steps, threads, out, wcfg, n_shared);
    }
    py::dict d;
    d["steps_done"] = r.steps_done;
    d["status"] = status_name(r.status);
    d["bad_task"] = r.bad_task;
    d["n_bad_tasks"] = r.n_bad_tasks;
    d["objective"] = objective_out;
    d["grad_norm"] = grad_norm;
    d["lr"] = lr;
    d["task_losses"] = losses_obj;
    d["alpha"] = alpha_obj;
    return d;
}

template <class T>
void register_state(py::module_& m, const char* name) {
    using S = TrainState<T>;
    py::class_<S>(m, name)
        .def(py::init([](const py::handle& theta, const OptimizerConfig& config,
                         const py::handle& alpha, std::size_t weighting_size, std::uint64_t seed) {
                 auto th = checked<T>(theta, "theta", {-1});
                 auto al = checked<T>(alpha, "alpha", {-1});
                 return S(std::vector<T>(th.data(), th.data() + th.shape(0)), config,
                          std::vector<T>(al.data(), al.data() + al.shape(0)), weighting_size,
                          seed);
             }),
             py::arg("theta"), py::arg("config"), py::arg("alpha"), py::arg("weighting_size"),
             py::arg("seed"))
        .def_property_readonly("theta",
                               [](py::object self) { return view_of(self.cast<S&>().theta, self); })
        .def_property_readonly("m", [](py::object self) -> py::object {
            S& s = self.cast<S&>();
            return s.optimizer.m.empty() ? py::object(py::none()) : view_of(s.optimizer.m, self);
        })
        .def_property_readonly("v", [](py::object self) -> py::object {
            S& s = self.cast<S&>();
            return s.optimizer.v.empty() ? py::object(py::none()) : view_of(s.optimizer.v, self);
        })
        .def_property_readonly("alpha",
                               [](py::object self) { return view_of(self.cast<S&>().alpha, self); })
        .def_property_readonly("weighting", [](py::object self) {
            return view_of(self.cast<S&>().weighting, self);
        })
        .def_readonly("step", &S::step)
        .def_readonly("seed", &S::seed)
        .def("set_alpha", [](S& s, const py::handle& a) { copy_into(s.alpha, a, "alpha"); },
             py::arg("alpha"))
        .def(
            "restore",
            [](S& s, const py::handle& theta, const py::object& m_obj, const py::object& v_obj,
               const py::handle& alpha, const py::handle& weighting, std::int64_t step) {
                if (step < 0) throw py::value_error("step must be >= 0");
                if (m_obj.is_none() != s.optimizer.m.empty() ||
                    v_obj.is_none() != s.optimizer.v.empty())
                    throw py::value_error("the saved moments do not match the optimizer");
                // Check everything before writing anything.
                auto extent = [](const auto& v) { return static_cast<py::ssize_t>(v.size()); };
                checked<T>(theta, "theta", {extent(s.theta)});
                if (!m_obj.is_none()) checked<T>(m_obj, "m", {extent(s.optimizer.m)});
                if (!v_obj.is_none()) checked<T>(v_obj, "v", {extent(s.optimizer.v)});
                checked<T>(alpha, "alpha", {extent(s.alpha)});
                checked<double>(weighting, "weighting", {extent(s.weighting)});
                copy_into(s.theta, theta, "theta");
                if (!m_obj.is_none()) copy_into(s.optimizer.m, m_obj, "m");
                if (!v_obj.is_none()) copy_into(s.optimizer.v, v_obj, "v");
                copy_into(s.alpha, alpha, "alpha");
                copy_into(s.weighting, weighting, "weighting");
                s.step = step;
            },
            py::arg("theta"), py::arg("m"), py::arg("v"), py::arg("alpha"), py::arg("weighting"),
            py::arg("step"))
        .def(
            "apply_step",
            [](S& s, const OptimizerConfig& config, const py::handle& grad_obj,
               std::optional<int> n_threads) {
                if (s.optimizer.m.empty() == config.uses_m() ||
                    s.optimizer.v.empty() == config.uses_v())
                    throw py::value_error(
                        "the optimizer does not match the train state's moment buffers");
                auto grad = checked<T>(grad_obj, "grad", {static_cast<py::ssize_t>(s.theta.size())});
                const int threads = threads_arg(n_threads);
                UpdateBackup<T> backup;
                double norm = 0.0;
                StepStatus status;
                {
                    py::gil_scoped_release release;
                    status = apply_update(config, s, grad.data(), threads, backup, norm);
                }
                return py::make_tuple(norm, status_name(status));
            },
            py::arg("config"), py::arg("grad"), py::arg("n_threads") = py::none(),
            "The update of step `step` from a gradient computed elsewhere, exactly as run() "
            "applies it; returns (gradient norm, status).")
        .def("run", &run_chunk<T>, py::arg("objective"), py::arg("config"), py::arg("batch_tasks"),
             py::arg("batch_rows"), py::arg("l2"), py::arg("n_steps"),
             py::arg("n_threads") = py::none(), py::arg("record_task_losses") = false,
             py::arg("weighting") = py::none(), py::arg("n_shared") = -1)
        .def("set_weighting",
             [](S& s, const py::handle& w) { copy_into(s.weighting, w, "weighting"); },
             py::arg("weighting"))
        .def(
            "evaluate_weighting",
            [](S& s, const WeightingConfig& c, const py::handle& losses, const py::handle& scores) {
                const auto n = static_cast<py::ssize_t>(s.alpha.size());
                auto L = checked<double>(losses, "losses", {n});
                auto K = checked<double>(scores, "scores", {n});
                if (static_cast<std::int64_t>(s.weighting.size()) != c.state_size(n))
                    throw py::value_error("the weighting state does not fit this strategy");
                std::vector<double> a(n);
                evaluate(c, s.weighting.data(), n, L.data(), K.data(), a.data());
                for (py::ssize_t i = 0; i < n; ++i) s.alpha[i] = static_cast<T>(a[i]);
            },
            py::arg("config"), py::arg("losses"), py::arg("scores"));
}

}  // namespace

void register_optim(py::module_& m) {
    py::class_<OptimizerConfig>(m, "OptimizerConfig")
        .def(py::init(&make_config), py::kw_only(), py::arg("kind"), py::arg("lr"),
             py::arg("momentum") = 0.0, py::arg("nesterov") = false, py::arg("beta1") = 0.9,
             py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0,
             py::arg("clip_norm") = 0.0, py::arg("schedule") = "constant", py::arg("every") = 1,
             py::arg("gamma") = 0.1, py::arg("period") = 1, py::arg("min_factor") = 0.0,
             py::arg("warmup") = 0, py::arg("warmup_start") = 0.0)
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
            if (theta.dtype().is(py::dtype::of<float>()))
                return optimizer_step_typed<float>(c, t, theta, grad, m_buf, v_buf, n_threads);
            return optimizer_step_typed<double>(c, t, theta, grad, m_buf, v_buf, n_threads);
        },
        py::arg("config"), py::arg("step"), py::arg("theta"), py::arg("grad"), py::arg("m"),
        py::arg("v"), py::arg("n_threads") = py::none());

    register_state<float>(m, "TrainState32");
    register_state<double>(m, "TrainState64");
}

}  // namespace metacore::bindings
