// The private module metacore._core: version, build facts, and one registration call per area.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "metacore/build_info.hpp"
#include "metacore/interrupt.hpp"
#include "metacore/sizes.hpp"
#include "metacore/threading.hpp"
#include "arrays.hpp"
#include "signals.hpp"
#include "metacore/format.hpp"

namespace py = pybind11;

namespace metacore::bindings {

// parallel_for_probe: what tests/test_threading.py sees of the one parallel-for. Item i records
// its thread index and that it ran; two items running at once with one thread index count as an
// overlap. Each item spins work_us µs (polling Ctrl-C); fail_at throws in that item. hold_us > 0
// makes the caller's items (thread index 0) wait, up to 5 s, until another thread runs an item,
// and items on other threads spin hold_us µs: the caller is left waiting for an item a worker
// claimed.
py::tuple parallel_for_probe(std::int64_t n, std::optional<int> n_threads, double work_us,
                             double hold_us, std::int64_t fail_at) {
    if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
    if (!(work_us >= 0) || work_us > 1e7)
        throw py::value_error("work_us must be in [0, 1e7], got " + metacore::number_text(work_us));
    if (!(hold_us >= 0) || hold_us > 1e8)
        throw py::value_error("hold_us must be in [0, 1e8], got " + metacore::number_text(hold_us));
    const int team = resolve_threads(threads_arg(n_threads));
    py::array_t<std::int64_t> slots(n), runs(n);
    std::int64_t* slot_of = slots.mutable_data();
    std::int64_t* run_count = runs.mutable_data();
    std::fill(slot_of, slot_of + n, -1);
    std::fill(run_count, run_count + n, 0);
    std::unique_ptr<std::atomic<int>[]> busy(new std::atomic<int>[team]());
    std::atomic<int> overlaps{0};
    std::atomic<bool> helped{false};
    std::mutex mutex;
    std::set<std::thread::id> ids;
    using clock = std::chrono::steady_clock;
    const auto spin = [](double us) {
        const auto until = clock::now() + std::chrono::duration<double, std::micro>(us);
        while (clock::now() < until) check_interrupt();
    };
    without_gil([&] {
        parallel_for(n, team, [&](std::int64_t i, int slot) {
            if (slot < 0 || slot >= team) {
                slot_of[i] = slot;
                ++overlaps;
                return;
            }
            if (busy[slot].exchange(1)) ++overlaps;
            struct Leave {  // the slot is free again when the item ends, also by an exception
                std::atomic<int>& flag;
                ~Leave() { flag = 0; }
            } leave{busy[slot]};
            {
                std::lock_guard<std::mutex> lock(mutex);
                ids.insert(std::this_thread::get_id());
            }
            slot_of[i] = slot;
            ++run_count[i];
            if (slot != 0) helped = true;
            if (i == fail_at)
                throw std::runtime_error("parallel_for_probe: item " + std::to_string(i) +
                                         " failed");
            if (hold_us > 0 && slot == 0) {
                const auto until = clock::now() + std::chrono::seconds(5);
                while (!helped && clock::now() < until) check_interrupt();
            } else if (hold_us > 0) {
                spin(hold_us);
            }
            spin(work_us);
        });
    });
    return py::make_tuple(slots, runs, overlaps.load(), static_cast<int>(ids.size()),
                          helped.load());
}

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
        info["simd_cpu"] = metacore::simd_cpu();
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
    m.def("request_stop",
          [](bool on) { metacore::bindings::stop_requested().store(on); },
          py::arg("on") = true,
          "Ask the core call running on the main thread to stop at its next poll, as Ctrl-C "
          "would (KeyboardInterrupt); False withdraws the request.");
    m.def("parallel_for_probe", &metacore::bindings::parallel_for_probe, py::arg("n"),
          py::arg("n_threads"), py::arg("work_us") = 0.0, py::arg("hold_us") = 0.0,
          py::arg("fail_at") = -1,
          "Test probe of the one parallel-for: (thread index per item, runs per item, overlaps, "
          "OS threads used, whether a thread other than the caller ran an item).");
    metacore::bindings::register_net(m);
    metacore::bindings::register_objective(m);
    metacore::bindings::register_meta(m);
    metacore::bindings::register_heads(m);
    metacore::bindings::register_train(m);
    metacore::bindings::register_optim(m);
    metacore::bindings::register_distributed(m);
    metacore::bindings::register_weighting(m);
}
