// Bindings of the one θ-update loop: the train state, the problems it steps (the multi-task
// objective, a meta-learner's meta-step) and the typed chunk result every chunk returns.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "metacore/distributed_step.hpp"
#include "metacore/meta_step.hpp"
#include "metacore/multitask_step.hpp"
#include "metacore/train.hpp"
#include "objective_handle.hpp"
#include "signals.hpp"
#include "task_arrays.hpp"

namespace metacore::bindings {

// Parsing of the meta-learner's name and settings lives with the meta bindings.
MetaConfig meta_config(const NetSpec& net, const std::string& learner, double inner_lr,
                       std::int64_t inner_steps, bool first_order, bool per_step_rates,
                       bool multi_step_loss, std::int64_t msl_anneal_steps,
                       std::int64_t first_order_until);
MetaConfig with_imaml_options(MetaConfig cfg, double reg, std::int64_t cg_steps);

// The Ray backend's share of a meta-step: blocks [b0, b1) (distributed_bindings.cpp).
template <class T>
py::tuple meta_block_partials(MetaStep<T>& step, const py::handle& theta, std::uint64_t seed,
                              std::int64_t s, std::int64_t b0, std::int64_t b1);

namespace {

// A read-only NumPy view of a buffer owned by `owner` (which the view keeps alive).
template <class T>
py::array view_of(std::vector<T>& buf, py::handle owner, py::ssize_t rows = -1) {
    const auto n = static_cast<py::ssize_t>(buf.size());
    std::vector<py::ssize_t> shape{n}, strides{static_cast<py::ssize_t>(sizeof(T))};
    if (rows >= 0) {
        const py::ssize_t cols = rows > 0 ? n / rows : 0;
        shape = {rows, cols};
        strides = {static_cast<py::ssize_t>(cols * sizeof(T)), static_cast<py::ssize_t>(sizeof(T))};
    }
    py::array_t<T> a(shape, strides, buf.data(), owner);
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
        case StepStatus::weighting_failed: return "weighting_failed";
        default: return "ok";
    }
}

void check_moments(const OptimizerConfig& config, bool has_m, bool has_v) {
    if (has_m != config.uses_m() || has_v != config.uses_v())
        throw py::value_error("the optimizer does not match the train state's moment buffers");
}

// A meta-learner's step with the task buffers it samples from kept alive.
template <class T>
class MetaStepHandle {
   public:
    MetaStepHandle(const NetSpec& net, const MetaConfig& cfg, std::int64_t meta_batch,
                   int threads)
        : net_(net), protonet_(episode_learner(cfg.learner)),
          core_(net_, cfg, meta_batch, threads) {}

    // Every array is checked, and the core switched to them, before the handle lets go of the
    // old ones: a refused call leaves the handle as it was (it used to free the old X while the
    // core still read it).
    void sample_from(py::handle X, py::handle y, py::handle offsets, py::handle n_support) {
        auto x = checked<T>(X, "X", {-1, net_.n_features()});
        auto yy = checked_meta_targets<T>(y, "y", net_, x.shape(0), protonet_);
        auto off = checked<std::int64_t>(offsets, "offsets", {-1});
        auto ns = checked<std::int64_t>(n_support, "n_support", {off.shape(0) - 1});
        core_.sample_from(checked_tasks<T>(x, yy, off, ns));
        X_ = std::move(x);
        y_ = std::move(yy);
        offsets_ = std::move(off);
        ns_ = std::move(ns);
    }

    void generate(const SinusoidSource& source) {
        if (net_.n_features() != 1 || net_.n_outputs() != 1 || net_.loss() != Loss::mse)
            throw py::value_error("tasks: the sinusoid family needs a model with 1 input, 1 output "
                                  "and loss 'mse'");
        source.batch_rows(core_.meta_batch(), "meta_batch", sizeof(T));
        core_.generate(source);
    }

    // N-way K-shot episodes from a pool of rows grouped by class (class_offsets (C + 1,)).
    void episodes_from(py::handle X, py::handle class_offsets, std::int64_t n_way,
                       std::int64_t k_shot, std::int64_t q_query) {
        // ProtoNet's and the ridge head's net embeds: any number of outputs, labels name classes.
        if (!protonet_ && (net_.loss() != Loss::cross_entropy || net_.n_outputs() != n_way))
            throw py::value_error("tasks: N-way episodes need a cross-entropy model with n_way = " +
                                  std::to_string(n_way) + " outputs");
        auto x = checked<T>(X, "X", {-1, net_.n_features()});   // kept once all is checked
        auto off = checked<std::int64_t>(class_offsets, "class_offsets", {-1});
        const EpisodePool<T> pool = episode_pool<T>(x, off, n_way, k_shot, q_query);
        pool.batch_rows(core_.meta_batch(), "meta_batch", sizeof(T));   // as generate() does
        core_.episodes_from(pool);
        X_ = std::move(x);
        offsets_ = std::move(off);
    }

    MetaStep<T>& core() { return core_; }

   private:
    NetSpec net_;
    bool protonet_;
    MetaStep<T> core_;
    py::array_t<T> X_, y_;
    py::array_t<std::int64_t> offsets_, ns_;
};

template <class T>
ChunkResult run_objective(TrainState<T>& state, const ObjectiveHandle<T>& objective,
                          const OptimizerConfig& config, std::int64_t batch_tasks,
                          std::int64_t batch_rows, double l2, std::int64_t n_steps,
                          std::optional<int> n_threads, bool record,
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
    check_moments(config, !state.optimizer.m.empty(), !state.optimizer.v.empty());
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
    ChunkResult out(n_steps, obj.n_tasks(), record);
    without_gil(
        [&] {
            MultiTaskStep<T> problem(obj, BatchSpec{batch_tasks, batch_rows}, static_cast<T>(l2),
                                     wcfg, n_shared);
            run_steps(problem, config, state, threads, out);
        },
        [&](py::error_already_set& e) { e.value().attr("chunk") = py::cast(out); });
    return out;
}

template <class T>
ChunkResult run_meta(TrainState<T>& state, MetaStepHandle<T>& meta, const OptimizerConfig& config,
                     std::int64_t n_steps, std::optional<int> n_threads) {
    if (meta.core().n_params() != static_cast<std::int64_t>(state.theta.size()))
        throw py::value_error("the learner has " + std::to_string(meta.core().n_params()) +
                              " parameters but the train state's theta has " +
                              std::to_string(state.theta.size()));
    check_moments(config, !state.optimizer.m.empty(), !state.optimizer.v.empty());
    if (n_steps < 0) throw py::value_error("n_steps must be >= 0");
    const int threads = threads_arg(n_threads);
    ChunkResult out(n_steps, 0, false);
    without_gil([&] { run_steps(meta.core(), config, state, threads, out); },
                [&](py::error_already_set& e) { e.value().attr("chunk") = py::cast(out); });
    return out;
}

// Step j of a chunk whose value and gradient were computed elsewhere (the Ray backend): the
// same tail as every local step. Returns False when the chunk must stop.
template <class T>
bool take_step(TrainState<T>& state, ChunkResult& out, std::int64_t j,
               const OptimizerConfig& config, double value, const py::object& grad_obj,
               const py::handle& losses_obj, const py::handle& counted_obj,
               std::optional<int> n_threads) {
    if (j < 0 || j >= out.n_steps)
        throw py::value_error("j must be in [0, " + std::to_string(out.n_steps) + ")");
    check_moments(config, !state.optimizer.m.empty(), !state.optimizer.v.empty());
    const auto P = static_cast<py::ssize_t>(state.theta.size());
    auto losses = checked<T>(losses_obj, "task_losses", {out.n_tasks});
    auto counted = checked<std::int64_t>(counted_obj, "counted", {out.n_tasks});
    py::array_t<T> grad;
    if (!grad_obj.is_none()) grad = checked<T>(grad_obj, "grad", {P});
    else if (std::isfinite(value)) throw py::value_error("grad is needed for a finite value");
    const int threads = threads_arg(n_threads);
    StepValues<T> v;
    v.value = value;
    v.task_losses = losses.data();
    v.counted = counted.data();
    UpdateBackup<T> backup;
    py::gil_scoped_release release;
    return finish_step(out, j, config, state, v, grad_obj.is_none() ? nullptr : grad.data(),
                       threads, backup);
}

template <class T>
void register_meta_step(py::module_& m, const char* name) {
    using H = MetaStepHandle<T>;
    py::class_<H>(m, name)
        .def(py::init([](const NetSpec& net, const std::string& learner, double inner_lr,
                         std::int64_t inner_steps, bool first_order, std::int64_t meta_batch,
                         std::optional<int> n_threads, bool per_step_rates, bool multi_step_loss,
                         std::int64_t msl_anneal_steps, std::int64_t first_order_until, double reg,
                         std::int64_t cg_steps) {
                 if (meta_batch < 1)
                     throw py::value_error("meta_batch must be >= 1, got " +
                                           std::to_string(meta_batch));
                 return new H(net,
                              with_imaml_options(
                                  meta_config(net, learner, inner_lr, inner_steps, first_order,
                                              per_step_rates, multi_step_loss, msl_anneal_steps,
                                              first_order_until),
                                  reg, cg_steps),
                              meta_batch, threads_arg(n_threads));
             }),
             py::arg("net"), py::arg("learner"), py::arg("inner_lr"), py::arg("inner_steps"),
             py::arg("first_order"), py::arg("meta_batch"), py::arg("n_threads") = py::none(),
             py::arg("per_step_rates") = false, py::arg("multi_step_loss") = false,
             py::arg("msl_anneal_steps") = 1, py::arg("first_order_until") = 0,
             py::arg("reg") = 1.0, py::arg("cg_steps") = 5)
        .def_property_readonly("n_params", [](H& h) { return h.core().n_params(); })
        .def_property_readonly("meta_batch", [](H& h) { return h.core().meta_batch(); })
        .def_property_readonly("n_blocks", [](H& h) { return meta_step_blocks(h.core()); })
        .def(
            "block_partials",
            [](H& h, const py::handle& theta, std::uint64_t seed, std::int64_t step,
               std::int64_t b0, std::int64_t b1) {
                return meta_block_partials<T>(h.core(), theta, seed, step, b0, b1);
            },
            py::arg("theta"), py::arg("seed"), py::arg("step"), py::arg("b0"), py::arg("b1"),
            "Blocks [b0, b1) of step `step`'s meta-batch at theta, on the step's own threads: "
            "(partials (b1-b0, n_params), query losses, support losses) of their tasks "
            "(float64).")
        .def("sample_from", &H::sample_from, py::arg("X"), py::arg("y"), py::arg("offsets"),
             py::arg("n_support"))
        .def("generate", [](H& h, std::int64_t ks, std::int64_t kq, std::pair<double, double> a,
                            std::pair<double, double> p, std::pair<double, double> x) {
                 h.generate(sinusoid_source(ks, kq, a, p, x));
             })
        .def("episodes_from", &H::episodes_from, py::arg("X"), py::arg("class_offsets"),
             py::arg("n_way"), py::arg("k_shot"), py::arg("q_query"));
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
        .def("run_objective", &run_objective<T>, py::arg("objective"), py::arg("config"),
             py::arg("batch_tasks"), py::arg("batch_rows"), py::arg("l2"), py::arg("n_steps"),
             py::arg("n_threads") = py::none(), py::arg("record_task_losses") = false,
             py::arg("weighting") = py::none(), py::arg("n_shared") = -1)
        .def("run_meta", &run_meta<T>, py::arg("meta_step"), py::arg("config"),
             py::arg("n_steps"), py::arg("n_threads") = py::none())
        .def("take_step", &take_step<T>, py::arg("result"), py::arg("j"), py::arg("config"),
             py::arg("value"), py::arg("grad"), py::arg("task_losses"), py::arg("counted"),
             py::arg("n_threads") = py::none(),
             "Step j of `result` from a value and gradient computed elsewhere, exactly as the "
             "core's own loop finishes a step; False when the chunk must stop.")
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

void register_train(py::module_& m) {
    py::class_<ChunkResult>(m, "ChunkResult")
        .def(py::init([](std::int64_t n_steps, std::int64_t n_tasks, bool record) {
                 if (n_steps < 0 || n_tasks < 0)
                     throw py::value_error("n_steps and n_tasks must be >= 0");
                 return ChunkResult(n_steps, n_tasks, record);
             }),
             py::arg("n_steps"), py::arg("n_tasks"), py::arg("record_task_losses") = false)
        .def_readonly("n_steps", &ChunkResult::n_steps)
        .def_readonly("n_tasks", &ChunkResult::n_tasks)
        .def_readonly("steps_done", &ChunkResult::steps_done)
        .def_property_readonly("status", [](const ChunkResult& r) { return status_name(r.status); })
        .def_readonly("bad_task", &ChunkResult::bad_task)
        .def_readonly("n_bad_tasks", &ChunkResult::n_bad_tasks)
        .def_property_readonly("objective", [](py::object self) {
            return view_of(self.cast<ChunkResult&>().objective, self);
        })
        .def_property_readonly("grad_norm", [](py::object self) {
            return view_of(self.cast<ChunkResult&>().grad_norm, self);
        })
        .def_property_readonly("lr", [](py::object self) {
            return view_of(self.cast<ChunkResult&>().lr, self);
        })
        .def_property_readonly("support_loss", [](py::object self) {
            return view_of(self.cast<ChunkResult&>().support_loss, self);
        })
        .def_property_readonly("task_losses", [](py::object self) -> py::object {
            ChunkResult& r = self.cast<ChunkResult&>();
            return r.record ? view_of(r.task_losses, self, r.n_steps) : py::object(py::none());
        })
        .def_property_readonly("alpha", [](py::object self) -> py::object {
            ChunkResult& r = self.cast<ChunkResult&>();
            return r.record ? view_of(r.alpha, self, r.n_steps) : py::object(py::none());
        })
        // A chunk run by a Ray actor comes back to the driver pickled (backends.py).
        .def(py::pickle(
            [](const ChunkResult& r) {
                return py::make_tuple(r.n_steps, r.n_tasks, r.record, r.steps_done,
                                      static_cast<int>(r.status), r.bad_task, r.n_bad_tasks,
                                      r.objective, r.grad_norm, r.lr, r.support_loss,
                                      r.task_losses, r.alpha);
            },
            [](const py::tuple& t) {
                if (t.size() != 13) throw py::value_error("not a pickled ChunkResult");
                ChunkResult r(t[0].cast<std::int64_t>(), t[1].cast<std::int64_t>(),
                              t[2].cast<bool>());
                r.steps_done = t[3].cast<std::int64_t>();
                const int status = t[4].cast<int>();
                if (status < 0 || status > static_cast<int>(StepStatus::weighting_failed))
                    throw py::value_error("not a pickled ChunkResult");
                r.status = static_cast<StepStatus>(status);
                r.bad_task = t[5].cast<std::int64_t>();
                r.n_bad_tasks = t[6].cast<std::int64_t>();
                std::vector<double>* series[] = {&r.objective, &r.grad_norm, &r.lr,
                                                 &r.support_loss, &r.task_losses, &r.alpha};
                for (int k = 0; k < 6; ++k) {
                    auto v = t[7 + k].cast<std::vector<double>>();
                    if (v.size() != series[k]->size())
                        throw py::value_error("not a pickled ChunkResult");
                    *series[k] = std::move(v);
                }
                return r;
            }));
    register_meta_step<float>(m, "MetaStep32");
    register_meta_step<double>(m, "MetaStep64");
    register_state<float>(m, "TrainState32");
    register_state<double>(m, "TrainState64");
}

}  // namespace metacore::bindings
