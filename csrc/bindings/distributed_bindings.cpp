// Bindings for a distributed objective (python/metacore/distributed.py): the driver plans the
// reduction blocks of all tasks, each worker computes the partial sums of its consecutive blocks
// over its shard, and the driver combines them in block order -- the sums one machine would add,
// in the same order, so the result is bit-identical to the local objective.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "metacore/distributed_step.hpp"
#include "metacore/objective.hpp"
#include "metacore/tasks.hpp"
#include "objective_handle.hpp"
#include "signals.hpp"

namespace metacore::bindings {

// A worker's share of a meta-step (bound as MetaStep32/64.block_partials in train_bindings.cpp).
template <class T>
py::tuple meta_block_partials(MetaStep<T>& step, const py::handle& theta_obj, std::uint64_t seed,
                              std::int64_t s, std::int64_t b0, std::int64_t b1) {
    auto theta = checked<T>(theta_obj, "theta", {step.n_params()});
    if (s < 0) throw py::value_error("step must be >= 0, got " + std::to_string(s));
    const std::int64_t nb = meta_step_blocks(step), n = step.meta_batch();
    if (b0 < 0 || b1 <= b0 || b1 > nb)
        throw py::value_error("blocks must satisfy 0 <= b0 < b1 <= n_blocks (" +
                              std::to_string(nb) + "), got b0=" + std::to_string(b0) +
                              ", b1=" + std::to_string(b1));
    const py::ssize_t m = static_cast<py::ssize_t>(b1 * n / nb - b0 * n / nb);
    auto parts = output<T>("block_partials", {static_cast<py::ssize_t>(b1 - b0),
                                              static_cast<py::ssize_t>(step.n_params())});
    py::array_t<double> losses(m), support(m);
    T* p = parts.mutable_data();
    double* l = losses.mutable_data();
    double* sl = support.mutable_data();
    std::fill(p, p + parts.size(), T(0));
    without_gil([&] {
        meta_block_partials(step, theta.data(), seed, s, b0, b1, p, l, sl);
    });
    return py::make_tuple(parts, losses, support);
}

template py::tuple meta_block_partials<float>(MetaStep<float>&, const py::handle&, std::uint64_t,
                                              std::int64_t, std::int64_t, std::int64_t);
template py::tuple meta_block_partials<double>(MetaStep<double>&, const py::handle&,
                                               std::uint64_t, std::int64_t, std::int64_t,
                                               std::int64_t);

namespace {

// Step j of a meta-learning chunk from all blocks' partials (nb × G, in block order) and the
// meta-batch's per-task losses: the one step tail (train.hpp) after the sums a local step adds.
template <class T>
bool take_meta_step(TrainState<T>& state, ChunkResult& out, std::int64_t j,
                    const OptimizerConfig& config, const py::handle& parts_obj,
                    const py::handle& losses_obj, const py::handle& support_obj,
                    std::optional<int> n_threads) {
    if (j < 0 || j >= out.n_steps)
        throw py::value_error("j must be in [0, " + std::to_string(out.n_steps) + ")");
    if (config.uses_m() == state.optimizer.m.empty() ||
        config.uses_v() == state.optimizer.v.empty())
        throw py::value_error("the optimizer does not match the train state's moment buffers");
    const auto G = static_cast<py::ssize_t>(state.theta.size());
    auto parts = checked<T>(parts_obj, "parts", {-1, G});
    auto losses = checked<double>(losses_obj, "task_losses", {-1});
    auto support = checked<double>(support_obj, "support_losses", {losses.shape(0)});
    if (parts.shape(0) < 1 || losses.shape(0) < 1)
        throw py::value_error("parts and task_losses must not be empty");
    const int threads = resolve_threads(threads_arg(n_threads));
    py::gil_scoped_release release;
    std::vector<T> grad(state.theta.size());
    const StepValues<T> v = combine_meta_partials(parts.data(), parts.shape(0), G, losses.data(),
                                                  support.data(), losses.shape(0), grad.data(),
                                                  threads);
    UpdateBackup<T> backup;
    return finish_step(out, j, config, state, v, grad.data(), threads, backup);
}

// The objective's own plan of units regrouped into the given blocks (unit indices, 0 .. n_units).
template <class T>
WorkPlan block_plan(const ObjectiveHandle<T>& h, const py::handle& block_start_obj) {
    auto bs = checked<std::int64_t>(block_start_obj, "block_start", {-1});
    WorkPlan plan = h.core().plan();
    const auto n_units = static_cast<std::int64_t>(plan.units.size());
    const std::int64_t n = bs.shape(0);
    const std::int64_t* b = bs.data();
    if (n < 2 || b[0] != 0 || b[n - 1] != n_units)
        throw py::value_error("block_start must run from 0 to the shard's number of work units (" +
                              std::to_string(n_units) + ")");
    for (std::int64_t k = 1; k < n; ++k)
        if (b[k] <= b[k - 1]) throw py::value_error("block_start must be strictly increasing");
    plan.block_start.assign(b, b + n);
    return plan;
}

template <class T>
py::tuple block_partials(const ObjectiveHandle<T>& h, const WorkPlan& plan,
                         const py::handle& theta_obj, const py::handle& weights_obj,
                         bool want_grad, std::optional<int> n_threads) {
    const Objective<T>& obj = h.core();
    if (plan.units.size() != obj.plan().units.size())
        throw py::value_error("the block plan was made for another objective");
    auto theta = checked<T>(theta_obj, "theta", {obj.n_params()});
    auto weights = checked<T>(weights_obj, "weights", {obj.n_tasks()});
    const int threads = threads_arg(n_threads);
    const auto nb = static_cast<py::ssize_t>(plan.n_blocks());
    py::object parts_obj = py::none();
    T* parts = nullptr;
    if (want_grad) {
        auto p = output<T>("block_partials", {nb, static_cast<py::ssize_t>(obj.n_params())});
        parts = p.mutable_data();
        std::fill(parts, parts + p.size(), T(0));
        parts_obj = p;
    }
    py::array_t<double> losses(obj.n_tasks());
    double* l = losses.mutable_data();
    without_gil([&] {
        const std::vector<double> task_loss =
            obj.block_partials(plan, theta.data(), weights.data(), parts, threads);
        std::copy(task_loss.begin(), task_loss.end(), l);
    });
    return py::make_tuple(parts_obj, losses);
}

template <class T>
py::tuple combine_partials(const py::object& parts_obj, const py::handle& task_loss_obj,
                           const py::handle& task_rows_obj, const py::handle& weights_obj,
                           const py::array& theta_obj, double l2, std::optional<int> n_threads) {
    auto theta = checked<T>(theta_obj, "theta", {-1});
    const std::int64_t P = theta.shape(0);
    auto task_loss = checked<double>(task_loss_obj, "task_loss", {-1});
    const std::int64_t n_tasks = task_loss.shape(0);
    auto task_rows = checked<std::int64_t>(task_rows_obj, "task_rows", {n_tasks});
    auto weights = checked<T>(weights_obj, "weights", {n_tasks});
    const int threads = threads_arg(n_threads);
    const T* parts = nullptr;
    std::int64_t nb = 0;
    py::array_t<T> parts_arr;
    py::object grad_obj = py::none();
    T* grad = nullptr;
    if (!parts_obj.is_none()) {
        parts_arr = checked<T>(parts_obj, "parts", {-1, P});
        parts = parts_arr.data();
        nb = parts_arr.shape(0);
        py::array_t<T> g(P);
        grad = g.mutable_data();
        grad_obj = g;
    }
    py::array_t<T> losses(n_tasks);
    T* l = losses.mutable_data();
    double value;
    {
        py::gil_scoped_release release;
        value = Objective<T>::combine(parts, nb, P, task_loss.data(), task_rows.data(),
                                      weights.data(), n_tasks, theta.data(), static_cast<T>(l2),
                                      grad, l, resolve_threads(threads));
    }
    return py::make_tuple(value, grad_obj, losses);
}

// The driver's multi-task step (MultiTaskStep over the driver's own objective, which draws the
// batch and keeps the weighting), fed with what the workers computed at θ.
template <class T>
class MultiTaskDriver {
   public:
    MultiTaskDriver(py::object objective, std::int64_t batch_tasks, std::int64_t batch_rows,
                    double l2, const std::optional<WeightingConfig>& weighting,
                    std::int64_t n_shared)
        : objective_(std::move(objective)),
          obj_(objective_.cast<const ObjectiveHandle<T>&>().core()),
          wcfg_(weighting ? *weighting : WeightingConfig()) {
        if (batch_tasks < 0 || batch_tasks > obj_.n_tasks())
            throw py::value_error("batch_tasks must be in [0, n_tasks], got " +
                                  std::to_string(batch_tasks));
        if (batch_rows < 0) throw py::value_error("batch_rows must be >= 0");
        if (n_shared > obj_.n_params()) throw py::value_error("n_shared must be <= n_params");
        step_ = std::make_unique<MultiTaskStep<T>>(obj_, BatchSpec{batch_tasks, batch_rows},
                                                   static_cast<T>(l2), wcfg_, n_shared);
    }

    std::string begin(TrainState<T>& state) {
        if (static_cast<std::int64_t>(state.theta.size()) != obj_.n_params() ||
            static_cast<std::int64_t>(state.alpha.size()) != obj_.n_tasks() ||
            static_cast<std::int64_t>(state.weighting.size()) != wcfg_.state_size(obj_.n_tasks()))
            throw py::value_error("the train state does not fit this objective and weighting");
        switch (step_->begin(state)) {
            case MultiTaskStep<T>::Need::task_grads: return "task_grads";
            case MultiTaskStep<T>::Need::losses_first: return "losses_first";
            default: return "partials";
        }
    }

    void losses_first(TrainState<T>& state, const py::handle& task_loss_obj) {
        auto tl = checked<double>(task_loss_obj, "task_loss", {obj_.n_tasks()});
        T* l = step_->task_losses();
        for (std::int64_t i = 0; i < obj_.n_tasks(); ++i) l[i] = static_cast<T>(tl.data()[i]);
        step_->losses_first(state);
    }

    // parts (nb, P) in block order; losses: the mean loss per task (T,) or, by_unit, every
    // unit's summed loss in unit order (a drawn batch's blocks split across workers).
    bool finish_partials(TrainState<T>& state, ChunkResult& out, std::int64_t j,
                         const OptimizerConfig& config, const py::handle& parts_obj,
                         const py::handle& losses_obj, bool by_unit,
                         std::optional<int> n_threads) {
        check(state, out, j, config);
        const WorkPlan& plan = step_->plan();
        const auto P = static_cast<py::ssize_t>(obj_.n_params());
        auto parts = checked<T>(parts_obj, "parts", {static_cast<py::ssize_t>(plan.n_blocks()), P});
        const auto n_loss = static_cast<py::ssize_t>(by_unit ? plan.units.size()
                                                             : static_cast<std::size_t>(obj_.n_tasks()));
        auto losses = checked<double>(losses_obj, "task_losses", {n_loss});
        const int threads = threads_arg(n_threads);
        py::gil_scoped_release release;
        std::vector<double> task_loss(losses.data(), losses.data() + n_loss);
        if (by_unit) task_loss = Objective<T>::task_means(plan, task_loss);
        std::vector<T> grad(obj_.n_params());
        const StepValues<T> v = step_->from_partials(state, parts.data(), plan.n_blocks(),
                                                     task_loss.data(), grad.data(),
                                                     resolve_threads(threads));
        return finish_multitask_step(*step_, out, j, config, state, v, grad.data(), threads);
    }

    bool finish_task_grads(TrainState<T>& state, ChunkResult& out, std::int64_t j,
                           const OptimizerConfig& config, const py::handle& G_obj,
                           const py::handle& losses_obj, std::optional<int> n_threads) {
        check(state, out, j, config);
        const auto n = static_cast<py::ssize_t>(obj_.n_tasks());
        auto G = checked<T>(G_obj, "task_grads", {n, static_cast<py::ssize_t>(obj_.n_params())});
        auto losses = checked<T>(losses_obj, "task_losses", {n});
        const int threads = threads_arg(n_threads);
        py::gil_scoped_release release;
        std::copy(losses.data(), losses.data() + n, step_->task_losses());
        std::vector<T> grad(obj_.n_params());
        const StepValues<T> v = step_->from_task_grads(state, G.data(), grad.data(), threads);
        return finish_multitask_step(*step_, out, j, config, state, v, grad.data(), threads);
    }

    void undo(TrainState<T>& state) { step_->undo(state); }
    std::int64_t n_blocks() const { return step_->plan().n_blocks(); }

   private:
    void check(const TrainState<T>& state, const ChunkResult& out, std::int64_t j,
               const OptimizerConfig& config) const {
        if (j < 0 || j >= out.n_steps)
            throw py::value_error("j must be in [0, " + std::to_string(out.n_steps) + ")");
        if (out.n_tasks != obj_.n_tasks())
            throw py::value_error("the chunk result was made for another number of tasks");
        if (config.uses_m() == state.optimizer.m.empty() ||
            config.uses_v() == state.optimizer.v.empty())
            throw py::value_error("the optimizer does not match the train state's moment buffers");
    }

    py::object objective_;     // keeps the objective (and its task arrays) alive
    const Objective<T>& obj_;
    WeightingConfig wcfg_;
    std::unique_ptr<MultiTaskStep<T>> step_;
};

// A worker's share of a drawn batch's blocks (MultiTaskBlocks over the worker's objective).
template <class T>
class MultiTaskBlocksHandle {
   public:
    MultiTaskBlocksHandle(py::object objective, std::int64_t batch_tasks, std::int64_t batch_rows)
        : objective_(std::move(objective)),
          obj_(objective_.cast<const ObjectiveHandle<T>&>().core()),
          blocks_(obj_, BatchSpec{batch_tasks, batch_rows}) {
        if (batch_tasks < 0 || batch_tasks > obj_.n_tasks() || batch_rows < 0)
            throw py::value_error("batch_tasks must be in [0, n_tasks] and batch_rows >= 0");
    }

    py::tuple partials(const py::handle& theta_obj, const py::handle& alpha_obj,
                       std::uint64_t seed, std::int64_t step, std::int64_t worker,
                       std::int64_t n_workers, bool want_grad, std::optional<int> n_threads) {
        auto theta = checked<T>(theta_obj, "theta", {obj_.n_params()});
        auto alpha = checked<T>(alpha_obj, "alpha", {obj_.n_tasks()});
        if (step < 0) throw py::value_error("step must be >= 0, got " + std::to_string(step));
        if (n_workers < 1 || worker < 0 || worker >= n_workers)
            throw py::value_error("worker must be in [0, n_workers)");
        const int threads = threads_arg(n_threads);
        std::vector<T> parts;
        std::vector<double> unit_loss;
        without_gil([&] {
            unit_loss = blocks_.partials(theta.data(), alpha.data(), seed, step, worker,
                                         n_workers, want_grad, parts, threads);
        });
        const auto P = static_cast<py::ssize_t>(obj_.n_params());
        py::object parts_out = py::none();
        if (want_grad) {
            py::array_t<T> a({static_cast<py::ssize_t>(parts.size()) / P, P});
            std::copy(parts.begin(), parts.end(), a.mutable_data());
            parts_out = a;
        }
        py::array_t<double> l(static_cast<py::ssize_t>(unit_loss.size()));
        std::copy(unit_loss.begin(), unit_loss.end(), l.mutable_data());
        return py::make_tuple(parts_out, l);
    }

   private:
    py::object objective_;
    const Objective<T>& obj_;
    MultiTaskBlocks<T> blocks_;
};

template <class T>
void register_multitask(py::module_& m, const std::string& suffix) {
    using D = MultiTaskDriver<T>;
    py::class_<D>(m, ("MultiTaskDriver" + suffix).c_str())
        .def(py::init<py::object, std::int64_t, std::int64_t, double,
                      const std::optional<WeightingConfig>&, std::int64_t>(),
             py::arg("objective"), py::arg("batch_tasks"), py::arg("batch_rows"), py::arg("l2"),
             py::arg("weighting"), py::arg("n_shared"))
        .def("begin", &D::begin, py::arg("state"))
        .def("losses_first", &D::losses_first, py::arg("state"), py::arg("task_loss"))
        .def("finish_partials", &D::finish_partials, py::arg("state"), py::arg("result"),
             py::arg("j"), py::arg("config"), py::arg("parts"), py::arg("losses"),
             py::arg("by_unit"), py::arg("n_threads") = py::none())
        .def("finish_task_grads", &D::finish_task_grads, py::arg("state"), py::arg("result"),
             py::arg("j"), py::arg("config"), py::arg("task_grads"), py::arg("task_losses"),
             py::arg("n_threads") = py::none())
        .def("undo", &D::undo, py::arg("state"))
        .def_property_readonly("n_blocks", &D::n_blocks);
    using B = MultiTaskBlocksHandle<T>;
    py::class_<B>(m, ("MultiTaskBlocks" + suffix).c_str())
        .def(py::init<py::object, std::int64_t, std::int64_t>(), py::arg("objective"),
             py::arg("batch_tasks"), py::arg("batch_rows"))
        .def("partials", &B::partials, py::arg("theta"), py::arg("alpha"), py::arg("seed"),
             py::arg("step"), py::arg("worker"), py::arg("n_workers"), py::arg("want_grad"),
             py::arg("n_threads") = py::none());
}

template <class T>
void register_typed(py::module_& m) {
    m.def("block_plan", &block_plan<T>, py::arg("objective"), py::arg("block_start"));
    m.def("block_partials", &block_partials<T>, py::arg("objective"), py::arg("plan"),
          py::arg("theta"), py::arg("weights"), py::arg("want_grad"),
          py::arg("n_threads") = py::none());
}

}  // namespace

void register_distributed(py::module_& m) {
    py::class_<WorkPlan>(m, "BlockPlan")
        .def_property_readonly("n_blocks", &WorkPlan::n_blocks)
        .def_property_readonly("n_units",
                               [](const WorkPlan& p) { return p.units.size(); });
    register_typed<float>(m);
    register_typed<double>(m);
    register_multitask<float>(m, "32");
    register_multitask<double>(m, "64");

    m.def(
        "assign_blocks",
        [](const py::handle& unit_rows_obj, std::int64_t n_params, std::int64_t itemsize) {
            auto rows = checked<std::int64_t>(unit_rows_obj, "unit_rows", {-1});
            if (n_params < 1 || (itemsize != 4 && itemsize != 8))
                throw py::value_error("n_params must be >= 1 and itemsize 4 or 8");
            WorkPlan plan;
            for (py::ssize_t u = 0; u < rows.shape(0); ++u) {
                if (rows.data()[u] < 1) throw py::value_error("unit_rows must be >= 1");
                plan.units.push_back({0, 0, rows.data()[u]});
                plan.total_rows += rows.data()[u];
            }
            assign_blocks(plan, n_params, itemsize);
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(plan.block_start.size()));
            std::copy(plan.block_start.begin(), plan.block_start.end(), out.mutable_data());
            return out;
        },
        py::arg("unit_rows"), py::arg("n_params"), py::arg("itemsize"));

    m.def("take_meta_step", &take_meta_step<float>, py::arg("state"), py::arg("result"),
          py::arg("j"), py::arg("config"), py::arg("parts"), py::arg("task_losses"),
          py::arg("support_losses"), py::arg("n_threads") = py::none());
    m.def("take_meta_step", &take_meta_step<double>, py::arg("state"), py::arg("result"),
          py::arg("j"), py::arg("config"), py::arg("parts"), py::arg("task_losses"),
          py::arg("support_losses"), py::arg("n_threads") = py::none(),
          "Step j of `result` from a meta-step's block partials (n_blocks, n_params) in block "
          "order and its tasks' query and support losses, as the core's own loop finishes a "
          "meta-step; False when the chunk must stop.");

    m.def(
        "combine_partials",
        [](const py::object& parts, const py::handle& task_loss, const py::handle& task_rows,
           const py::handle& weights, const py::array& theta, double l2,
           std::optional<int> n_threads) {
            if (is_float32(theta, "theta"))
                return combine_partials<float>(parts, task_loss, task_rows, weights, theta, l2,
                                               n_threads);
            return combine_partials<double>(parts, task_loss, task_rows, weights, theta, l2,
                                            n_threads);
        },
        py::arg("parts"), py::arg("task_loss"), py::arg("task_rows"), py::arg("weights"),
        py::arg("theta"), py::arg("l2"), py::arg("n_threads") = py::none());
}

}  // namespace metacore::bindings
