// Bindings of meta-training: a trainer object that keeps the task buffers and its workspaces
// alive between chunks, and the core-generated sinusoid family.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "arrays.hpp"
#include "optim_choices.hpp"
#include "metacore/meta_train.hpp"
#include "task_arrays.hpp"

namespace metacore::bindings {

// Parsing of the meta-learner's name and settings lives with the meta bindings.
MetaConfig meta_config(const NetSpec& net, const std::string& learner, double inner_lr,
                       std::int64_t inner_steps, bool first_order);

namespace {

template <class V>
V get(const py::dict& d, const char* key, V fallback) {
    return d.contains(key) ? d[key].cast<V>() : fallback;
}

// The optimizer as plain data: {"kind": "sgd"|"adam"|"adamw", "lr", "momentum", "nesterov",
// "betas", "eps", "weight_decay", "clip_norm", "schedule": {...}}.
OptimizerConfig optimizer_config(const py::dict& d) {
    OptimizerConfig c;
    const std::string kind = get<std::string>(d, "kind", "adam");
    c.kind = parse_optimizer_kind(kind);
    c.lr = get<double>(d, "lr", c.lr);
    c.momentum = get<double>(d, "momentum", c.momentum);
    c.nesterov = get<bool>(d, "nesterov", c.nesterov);
    if (d.contains("betas")) {
        auto b = d["betas"].cast<std::pair<double, double>>();
        c.beta1 = b.first;
        c.beta2 = b.second;
    }
    c.eps = get<double>(d, "eps", c.eps);
    c.weight_decay = get<double>(d, "weight_decay", c.weight_decay);
    c.clip_norm = get<double>(d, "clip_norm", c.clip_norm);
    if (d.contains("schedule") && !d["schedule"].is_none()) {
        auto s = d["schedule"].cast<py::dict>();
        const std::string sk = get<std::string>(s, "kind", "constant");
        c.schedule.kind = parse_schedule_kind(sk);
        c.schedule.every = get<std::int64_t>(s, "every", c.schedule.every);
        c.schedule.gamma = get<double>(s, "gamma", c.schedule.gamma);
        c.schedule.period = get<std::int64_t>(s, "period", c.schedule.period);
        c.schedule.min_factor = get<double>(s, "min_factor", c.schedule.min_factor);
        c.schedule.warmup = get<std::int64_t>(s, "warmup", c.schedule.warmup);
        c.schedule.warmup_start = get<double>(s, "warmup_start", c.schedule.warmup_start);
    }
    try {
        c.validate();
    } catch (const std::invalid_argument& e) {
        throw py::value_error(std::string("optimizer: ") + e.what());
    }
    return c;
}

SinusoidSource sinusoid_source(std::int64_t k_support, std::int64_t k_query,
                               std::pair<double, double> amplitude, std::pair<double, double> phase,
                               std::pair<double, double> x_range) {
    if (k_support < 1 || k_query < 1)
        throw py::value_error("k_support and k_query must be >= 1 for meta-learning, got " +
                              std::to_string(k_support) + " and " + std::to_string(k_query));
    SinusoidSource s;
    s.k_support = k_support;
    s.k_query = k_query;
    s.amp_lo = amplitude.first;
    s.amp_hi = amplitude.second;
    s.phase_lo = phase.first;
    s.phase_hi = phase.second;
    s.x_lo = x_range.first;
    s.x_hi = x_range.second;
    return s;
}

template <class T>
class TrainerHandle {
   public:
    TrainerHandle(const NetSpec& net, const MetaConfig& cfg, const MetaFitConfig& fit,
                  int threads)
        : net_(net), cfg_(cfg), core_(net_, cfg, fit, threads) {}

    void sample_from(py::handle X, py::handle y, py::handle offsets, py::handle n_support) {
        X_ = checked<T>(X, "X", {-1, net_.n_features()});
        y_ = checked_targets<T>(y, "y", net_, X_.shape(0));
        offsets_ = checked<std::int64_t>(offsets, "offsets", {-1});
        ns_ = checked<std::int64_t>(n_support, "n_support", {offsets_.shape(0) - 1});
        core_.sample_from(checked_tasks<T>(X_, y_, offsets_, ns_));
    }

    void generate(const SinusoidSource& source) {
        if (net_.n_features() != 1 || net_.n_outputs() != 1 || net_.loss() != Loss::mse)
            throw py::value_error("tasks: the sinusoid family needs a model with 1 input, 1 output "
                                  "and loss 'mse'");
        core_.generate(source);
    }

    py::tuple run(py::handle params_obj, py::handle m_obj, py::handle v_obj, std::int64_t step0,
                  std::int64_t n) {
        const std::int64_t G = meta_params(net_, cfg_.learner);
        auto params = checked<T>(params_obj, "theta", {G});
        if (!params.writeable()) throw py::value_error("theta must be writeable");
        OptimizerMoments<T> moments;
        py::array_t<T> m, v;
        if (!m_obj.is_none()) {
            m = checked<T>(m_obj, "m", {G});
            moments.m = m.mutable_data();
        }
        if (!v_obj.is_none()) {
            v = checked<T>(v_obj, "v", {G});
            moments.v = v.mutable_data();
        }
        py::array_t<T> losses(n), before(n);
        T* p = params.mutable_data();
        T* l = losses.mutable_data();
        T* b = before.mutable_data();
        std::int64_t done;
        {
            py::gil_scoped_release release;
            done = core_.run(p, moments, step0, n, l, b);
        }
        return py::make_tuple(done, losses, before);
    }

   private:
    NetSpec net_;
    MetaConfig cfg_;
    MetaTrainer<T> core_;
    py::array_t<T> X_, y_;
    py::array_t<std::int64_t> offsets_, ns_;
};

template <class T>
void register_trainer(py::module_& m, const char* name) {
    using H = TrainerHandle<T>;
    py::class_<H>(m, name)
        .def(py::init([](const NetSpec& net, const std::string& learner, double inner_lr,
                         std::int64_t inner_steps, bool first_order, std::int64_t meta_batch,
                         std::uint64_t seed, const std::optional<py::dict>& optimizer,
                         double outer_lr, std::int64_t total_steps, std::optional<int> n_threads) {
                 MetaFitConfig fit;
                 fit.meta_batch = meta_batch;
                 fit.seed = seed;
                 fit.plain_outer_step = !optimizer;
                 if (optimizer) fit.optimizer = optimizer_config(*optimizer);
                 fit.outer_lr = outer_lr;
                 fit.total_steps = total_steps < 1 ? 1 : total_steps;
                 return new H(net, meta_config(net, learner, inner_lr, inner_steps, first_order),
                              fit, threads_arg(n_threads));
             }),
             py::arg("net"), py::arg("learner"), py::arg("inner_lr"), py::arg("inner_steps"),
             py::arg("first_order"), py::arg("meta_batch"), py::arg("seed"),
             py::arg("optimizer"), py::arg("outer_lr"), py::arg("total_steps"),
             py::arg("n_threads") = py::none())
        .def("sample_from", &H::sample_from, py::arg("X"), py::arg("y"), py::arg("offsets"),
             py::arg("n_support"))
        .def("generate", [](H& h, std::int64_t ks, std::int64_t kq, std::pair<double, double> a,
                            std::pair<double, double> p, std::pair<double, double> x) {
                 h.generate(sinusoid_source(ks, kq, a, p, x));
             })
        .def("run", &H::run, py::arg("theta"), py::arg("m"), py::arg("v"), py::arg("step0"),
             py::arg("n_steps"));
}

template <class T>
py::tuple sinusoid_typed(const SinusoidSource& src, std::uint64_t seed, std::int64_t step,
                         std::int64_t n_tasks) {
    const std::int64_t n = src.rows_per_task();
    py::array_t<T> X({n_tasks * n, std::int64_t{1}}), y(n_tasks * n);
    py::array_t<std::int64_t> offsets(n_tasks + 1), ns(n_tasks);
    T* Xp = X.mutable_data();
    T* yp = y.mutable_data();
    for (std::int64_t i = 0; i <= n_tasks; ++i) offsets.mutable_data()[i] = i * n;
    for (std::int64_t i = 0; i < n_tasks; ++i) ns.mutable_data()[i] = src.k_support;
    {
        py::gil_scoped_release release;
        for (std::int64_t i = 0; i < n_tasks; ++i) src.task(seed, step, i, Xp + i * n, yp + i * n);
    }
    return py::make_tuple(X, y, offsets, ns);
}

}  // namespace

void register_meta_train(py::module_& m) {
    register_trainer<float>(m, "MetaTrainer32");
    register_trainer<double>(m, "MetaTrainer64");
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
}

}  // namespace metacore::bindings
