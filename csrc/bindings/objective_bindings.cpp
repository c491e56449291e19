// Bindings of the weighted multi-task objective. Each method: check arguments with the GIL held,
// allocate the outputs, release the GIL around the core call, return the arrays without copying.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <tuple>

#include "objective_handle.hpp"

namespace metacore::bindings {

namespace {

template <class T>
void register_handle(py::module_& m, const char* name) {
    using H = ObjectiveHandle<T>;
    py::class_<H>(m, name)
        .def(py::init<const NetSpec&, py::handle, py::handle, py::handle, py::handle,
                      py::handle, const std::string&>(),
             py::arg("net"), py::arg("X"), py::arg("y"), py::arg("offsets"),
             py::arg("n_support"), py::arg("task_ids"), py::arg("rows"))
        .def_property_readonly("n_params", &H::n_params)
        .def_property_readonly("n_tasks", &H::n_tasks)
        .def("value_and_grad", &H::value_and_grad, py::arg("theta"), py::arg("weights"),
             py::arg("l2"), py::arg("want_grad"), py::arg("n_threads") = py::none())
        .def("task_grads", &H::task_grads, py::arg("theta"), py::arg("n_threads") = py::none())
        .def("hvp", &H::hvp, py::arg("theta"), py::arg("v"), py::arg("weights"), py::arg("l2"),
             py::arg("n_threads") = py::none())
        .def("plan_info", &H::plan_info);
}

}  // namespace

void register_objective(py::module_& m) {
    register_handle<float>(m, "Objective32");
    register_handle<double>(m, "Objective64");
}

}  // namespace metacore::bindings
