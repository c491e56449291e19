// The core objective as the bindings hold it: a checked view of the TaskSet's arrays (kept alive
// for the objective's lifetime) and the Objective<T> over them. Shared by every binding that runs
// the objective (objective_bindings.cpp, optim_bindings.cpp).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <tuple>

#include "arrays.hpp"
#include "signals.hpp"
#include "metacore/net.hpp"
#include "metacore/objective.hpp"

namespace metacore::bindings {

inline Rows parse_rows(const std::string& s) {
    return parse_choice<Rows>("rows", s,
                              {{"all", Rows::all}, {"support", Rows::support}, {"query", Rows::query}});
}

template <class T>
class ObjectiveHandle {
   public:
    ObjectiveHandle(const NetSpec& net, py::handle X, py::handle y, py::handle offsets,
                    py::handle n_support, py::handle task_ids, const std::string& rows)
        : X_(checked<T>(X, "X", {-1, -1})),
          y_(checked<T>(y, "y", {X_.shape(0), -1})),
          offsets_(checked<std::int64_t>(offsets, "offsets", {-1})),
          n_support_(checked<std::int64_t>(n_support, "n_support", {offsets_.shape(0) - 1})),
          task_ids_(checked<std::int64_t>(task_ids, "task_ids", {offsets_.shape(0) - 1})),
          core_(make_core(net, rows)) {}

    std::int64_t n_params() const { return core_.n_params(); }
    std::int64_t n_tasks() const { return core_.n_tasks(); }

    py::tuple value_and_grad(py::handle theta_obj, py::handle weights_obj, T l2, bool want_grad,
                             std::optional<int> n_threads) const {
        auto theta = checked<T>(theta_obj, "theta", {n_params()});
        auto weights = checked<T>(weights_obj, "weights", {n_tasks()});
        const int threads = threads_arg(n_threads);
        auto losses = output<T>("task_losses", {n_tasks()});
        py::object grad_obj = py::none();
        T* grad = nullptr;
        if (want_grad) {
            auto g = output<T>("grad", {n_params()});
            grad = g.mutable_data();
            grad_obj = g;
        }
        T* loss_ptr = losses.mutable_data();
        double value;
        without_gil([&] {
            value = core_.value_and_grad(theta.data(), weights.data(), l2, grad, loss_ptr, threads);
        });
        return py::make_tuple(value, grad_obj, losses);
    }

    py::tuple task_grads(py::handle theta_obj, std::optional<int> n_threads) const {
        auto theta = checked<T>(theta_obj, "theta", {n_params()});
        const int threads = threads_arg(n_threads);
        auto grads = output<T>("task_grads", {n_tasks(), n_params()});
        auto losses = output<T>("task_losses", {n_tasks()});
        T* g = grads.mutable_data();
        T* l = losses.mutable_data();
        without_gil([&] { core_.task_grads(theta.data(), g, l, threads); });
        return py::make_tuple(grads, losses);
    }

    py::array_t<T> hvp(py::handle theta_obj, py::handle v_obj, py::handle weights_obj, T l2,
                       std::optional<int> n_threads) const {
        auto theta = checked<T>(theta_obj, "theta", {n_params()});
        auto v = checked<T>(v_obj, "v", {n_params()});
        auto weights = checked<T>(weights_obj, "weights", {n_tasks()});
        const int threads = threads_arg(n_threads);
        auto out = output<T>("hvp", {n_params()});
        T* o = out.mutable_data();
        without_gil([&] { core_.hvp(theta.data(), v.data(), weights.data(), l2, o, threads); });
        return out;
    }

    const Objective<T>& core() const { return core_; }

    py::dict plan_info() const {
        py::dict d;
        d["n_units"] = core_.plan().units.size();
        d["n_blocks"] = core_.plan().n_blocks();
        d["total_rows"] = core_.plan().total_rows;
        return d;
    }

   private:
    Objective<T> make_core(const NetSpec& net, const std::string& rows) const {
        TaskData<T> data;
        data.X = {X_.data(), X_.shape(0), X_.shape(1)};
        data.y = {y_.data(), y_.shape(0), y_.shape(1)};
        data.offsets = offsets_.data();
        data.n_support = n_support_.data();
        data.heads = task_ids_.data();
        data.n_tasks = offsets_.shape(0) - 1;
        if (data.n_tasks < 1) throw py::value_error("offsets must describe at least one task");
        if (offsets_.data()[0] != 0 || offsets_.data()[data.n_tasks] != X_.shape(0))
            throw py::value_error("offsets must start at 0 and end at the number of rows of X");
        for (std::int64_t i = 0; i < data.n_tasks; ++i) {
            const std::int64_t n = data.offsets[i + 1] - data.offsets[i];
            if (n < 1) throw py::value_error("offsets: task " + std::to_string(i) + " is empty");
            if (data.n_support[i] < 0 || data.n_support[i] > n)
                throw py::value_error("n_support: task " + std::to_string(i) + " has " +
                                      std::to_string(data.n_support[i]) +
                                      " support rows, outside [0, " + std::to_string(n) + "]");
        }
        return Objective<T>(net, data, parse_rows(rows));
    }

    py::array_t<T> X_, y_;
    py::array_t<std::int64_t> offsets_, n_support_, task_ids_;
    Objective<T> core_;
};

}  // namespace metacore::bindings
