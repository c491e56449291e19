// The private module metacore._core: version, build facts, and one registration call per area.
#include <pybind11/pybind11.h>

#include "metacore/build_info.hpp"
#include "metacore/interrupt.hpp"
#include "metacore/sizes.hpp"
#include "metacore/threading.hpp"

namespace py = pybind11;

namespace metacore::bindings {
void register_net(py::module_& m);
void register_objective(py::module_& m);
void register_meta(py::module_& m);
void register_heads(py::module_& m);
void register_train(py::module_& m);
void register_optim(py::module_& m);
void register_distributed(py::module_& m);
void register_weighting(py::module_& m);
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "metacore's compiled core (private: use the metacore package)";
    m.attr("__version__") = METACORE_VERSION;
    // The core's own exceptions: a buffer past the machine's memory, a call cancelled without a
    // Python exception to show for it (the bindings normally raise the signal handler's).
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const metacore::MemoryBudgetExceeded& e) {
            PyErr_SetString(PyExc_MemoryError, e.what());
        } catch (const metacore::Interrupted&) {
            PyErr_SetNone(PyExc_KeyboardInterrupt);
        }
    });
    m.def("build_info", [] {
        py::dict info;
        info["version"] = METACORE_VERSION;
        info["compiler"] = metacore::compiler_name();
        info["cxx_standard"] = static_cast<long>(__cplusplus);
        info["openmp"] = metacore::openmp_enabled();
        info["openmp_version"] = metacore::openmp_version();
        info["simd_targets"] = metacore::simd_targets();
        info["simd_active"] = metacore::simd_active();
        info["default_threads"] = metacore::resolve_threads(0);
        info["max_threads"] = metacore::resolve_threads(-1);
        info["usable_processors"] = metacore::usable_processors();
#ifdef METACORE_SANITIZE
        info["sanitize"] = METACORE_SANITIZE;  // e.g. "address,undefined"; "" in normal builds
#else
        info["sanitize"] = "";
#endif
        return info;
    });
    metacore::bindings::register_net(m);
    metacore::bindings::register_objective(m);
    metacore::bindings::register_meta(m);
    metacore::bindings::register_heads(m);
    metacore::bindings::register_train(m);
    metacore::bindings::register_optim(m);
    metacore::bindings::register_distributed(m);
    metacore::bindings::register_weighting(m);
}
