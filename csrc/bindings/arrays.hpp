// Checks at the Python boundary: every array argument is verified by name (dtype, rank, shape,
// C-contiguity) before the core sees a pointer. Nothing here converts silently.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <optional>
#include <string>
#include <vector>

namespace metacore::bindings {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// A C-contiguous array of dtype T with the given shape (-1 = any extent).
template <class T>
py::array_t<T> checked(const py::handle& obj, const char* name, std::vector<py::ssize_t> shape) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::type_error(std::string(name) + " must have dtype " +
                             std::string(py::str(py::dtype::of<T>())) + ", got " +
                             std::string(py::str(a.dtype())));
    if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
        throw py::value_error(std::string(name) + " must be " + std::to_string(shape.size()) +
                              "-D, got shape " + shape_str(a));
    for (std::size_t i = 0; i < shape.size(); ++i)
        if (shape[i] >= 0 && a.shape(i) != shape[i])
            throw py::value_error(std::string(name) + " has shape " + shape_str(a) +
                                  ", expected extent " + std::to_string(shape[i]) + " on axis " +
                                  std::to_string(i));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

// The enum value named `value` among `choices`; a ValueError listing them otherwise.
template <class E>
E parse_choice(const char* name, const std::string& value,
               std::initializer_list<std::pair<const char*, E>> choices) {
    std::string allowed;
    for (const auto& [key, e] : choices) {
        if (value == key) return e;
        allowed += (allowed.empty() ? "'" : ", '") + std::string(key) + "'";
    }
    throw py::value_error(std::string(name) + " must be one of " + allowed + ", got '" + value +
                          "'");
}

// None = the OpenMP default (passed to the core as 0), -1 = all cores, k >= 1 = k threads.
inline int threads_arg(std::optional<int> n_threads) {
    if (!n_threads) return 0;
    if (*n_threads == 0 || *n_threads < -1)
        throw py::value_error("n_threads must be None, -1 (all cores) or >= 1, got " +
                              std::to_string(*n_threads));
    return *n_threads;
}

}  // namespace metacore::bindings
