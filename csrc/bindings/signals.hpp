// Ctrl-C in long core calls. The core polls an Interrupt at fixed points (interrupt.hpp); here its
// hook takes the GIL for a moment on the calling thread and runs Python's pending signal handlers.
// Only the main thread receives signals, so calls from other threads install nothing.
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <optional>
#include <utility>

#include "metacore/interrupt.hpp"

namespace metacore::bindings {

namespace py = pybind11;

// A stop asked for by Python without raising there (mc.fit's first Ctrl-C on a long chunk): the
// next poll of a core call on the main thread stops it as a Ctrl-C would. Raising from the
// handler instead could land just after the call returned, where the chunk it finished would be
// lost to the run's history.
inline std::atomic<bool>& stop_requested() {
    static std::atomic<bool> flag{false};
    return flag;
}

class SignalWatch {
   public:
    SignalWatch() : interrupt_(&poll, this), main_thread_(_PyOS_IsMainThread() != 0) {}
    SignalWatch(const SignalWatch&) = delete;
    SignalWatch& operator=(const SignalWatch&) = delete;

    Interrupt* interrupt() { return main_thread_ ? &interrupt_ : nullptr; }

    // The exception a signal handler raised (KeyboardInterrupt for Ctrl-C); GIL held.
    py::error_already_set error() {
        if (!error_) {
            PyErr_SetNone(PyExc_KeyboardInterrupt);
            error_.emplace();
        }
        return *error_;
    }

   private:
    static bool poll(void* self) {
        py::gil_scoped_acquire gil;
        if (stop_requested().exchange(false)) return true;  // error() makes the KeyboardInterrupt
        if (PyErr_CheckSignals() == 0) return false;
        static_cast<SignalWatch*>(self)->error_.emplace();  // takes the raised exception
        return true;
    }

    Interrupt interrupt_;
    bool main_thread_;
    std::optional<py::error_already_set> error_;
};

// Runs f() with the GIL released and Ctrl-C honoured at the core's fixed points: a pending
// signal's exception is raised after the core unwound. on_interrupt(exception) may annotate it.
template <class F, class OnInterrupt>
auto without_gil(F&& f, OnInterrupt&& on_interrupt) -> decltype(f()) {
    SignalWatch watch;
    try {
        py::gil_scoped_release release;
        const InterruptScope scope(watch.interrupt());
        return f();
    } catch (const Interrupted&) {
        py::error_already_set e = watch.error();
        on_interrupt(e);
        throw e;
    }
}

template <class F>
auto without_gil(F&& f) -> decltype(f()) {
    return without_gil(std::forward<F>(f), [](py::error_already_set&) {});
}

}  // namespace metacore::bindings
