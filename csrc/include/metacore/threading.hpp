// The one parallel-for: explicit thread count, dynamic schedule, exceptions carried out of the
// OpenMP region and rethrown on the calling thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace metacore {

inline bool openmp_enabled() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

// requested: 0 = the OpenMP default (OMP_NUM_THREADS or all cores), -1 = all cores, k >= 1 = k.
inline int resolve_threads(int requested) {
    if (requested == 0 || requested < -1) {
#ifdef _OPENMP
        if (requested == 0) return omp_get_max_threads();
#else
        if (requested == 0) return 1;
#endif
        throw std::invalid_argument("n_threads must be None, -1 or >= 1, got " +
                                    std::to_string(requested));
    }
    if (requested == -1) {
#ifdef _OPENMP
        return omp_get_num_procs();
#else
        return 1;
#endif
    }
    return requested;
}

// Captures the first exception thrown by any worker; later workers skip their work.
class ExceptionCarrier {
   public:
    template <class F>
    void run(F&& f) {
        if (failed_.load(std::memory_order_relaxed)) return;
        try {
            f();
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_relaxed);
        }
    }
    void rethrow() const {
        if (error_) std::rethrow_exception(error_);
    }

   private:
    std::mutex mutex_;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};
};

// Calls body(i, thread_index) for i in [0, n) on n_threads threads (serially when 1).
// Results must never depend on which thread ran an item: callers write per-item outputs.
template <class Body>
void parallel_for(std::int64_t n, int n_threads, Body&& body) {
    if (n <= 0) return;
    if (n_threads <= 1 || n == 1) {
        for (std::int64_t i = 0; i < n; ++i) body(i, 0);
        return;
    }
    ExceptionCarrier carrier;
#ifdef _OPENMP
    const int team = static_cast<int>(std::min<std::int64_t>(n_threads, n));
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (std::int64_t i = 0; i < n; ++i) {
        carrier.run([&] { body(i, omp_get_thread_num()); });
    }
#else
    for (std::int64_t i = 0; i < n; ++i) carrier.run([&] { body(i, 0); });
#endif
    carrier.rethrow();
}

}  // namespace metacore
