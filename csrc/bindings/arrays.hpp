// Checks at the Python boundary: every array argument is verified by name (dtype, rank, shape,
// C-contiguity) before the core sees a pointer. Nothing here converts silently.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "metacore/sizes.hpp"


namespace metacore::bindings {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// True when a's dtype equals T's. Equality, not identity: an array that crossed a process
// boundary (pickle, spawn, joblib) carries an equal but distinct dtype object.
template <class T>
bool has_dtype(const py::array& a) {
    return a.dtype().equal(py::dtype::of<T>());
}

// "got <dtype>", spelling out a byte order other than the machine's: it is the real difference
// when the dtype's name matches.
inline std::string got_dtype(const py::array& a) {
    const std::string name = py::str(a.dtype());
    const char order = a.dtype().attr("byteorder").cast<std::string>()[0];
    const bool foreign = order == (py::module_::import("sys").attr("byteorder").cast<std::string>()
                                       == "little" ? '>' : '<');
    return "got " + name +
           (foreign ? std::string(" in non-native byte order ('") +
                          std::string(py::str(a.dtype().attr("str"))) +
                          "'; convert it with .astype(np.dtype(...).newbyteorder('='))"
                    : "");
}

// Whether a float array argument is float32 (true) or float64 (false); TypeError otherwise.
inline bool is_float32(const py::handle& obj, const char* name = "theta") {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (has_dtype<float>(a)) return true;
    if (has_dtype<double>(a)) return false;
    throw py::type_error(std::string(name) + " must have dtype float32 or float64, " +
                         got_dtype(a));
}

// A C-contiguous array of dtype T with the given shape (-1 = any extent).
template <class T>
py::array_t<T> checked(const py::handle& obj, const char* name, std::vector<py::ssize_t> shape) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!has_dtype<T>(a))
        throw py::type_error(std::string(name) + " must have dtype " +
                             std::string(py::str(py::dtype::of<T>())) + ", " + got_dtype(a));
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
    // A buffer at an odd offset (np.ndarray(buffer=..., offset=1)) is C-contiguous but not
    // aligned to its dtype, and the core's kernels may not read it so (undefined behaviour).
    if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0)
        throw py::value_error(std::string(name) + " must be aligned to its dtype (its data "
                              "starts at an odd byte offset): pass np.require(" + name +
                              ", requirements='CA'), an aligned copy");
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

// A fresh C-contiguous output array. An output larger than the machine's physical memory raises
// MemoryError naming it before anything is allocated (require_memory, sizes.hpp). The message is
// built only then: the dtype's name comes from numpy's Python code (~3 µs), which the latency
// path (adapt_predict) cannot pay on every call.
template <class T>
py::array_t<T> output(const char* what, std::vector<py::ssize_t> shape) {
    double bytes = sizeof(T);
    for (const py::ssize_t s : shape) bytes *= static_cast<double>(s);
    if (!memory_allows(bytes)) {
        std::string dims;
        for (std::size_t i = 0; i < shape.size(); ++i)
            dims += (i ? ", " : "") + std::to_string(shape[i]);
        if (shape.size() == 1) dims += ",";
        require_memory(what, bytes, "for its (" + dims + ") " +
                                        std::string(py::str(py::dtype::of<T>())) + " output");
    }
    return py::array_t<T>(std::move(shape));
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
