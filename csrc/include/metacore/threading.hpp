// The one parallel-for: explicit thread count, dynamic schedule, exceptions carried out of the
// OpenMP region and rethrown on the calling thread; and the one rule for how many threads a loop
// gets (team_for).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define METACORE_FORK_GUARD 1
#endif
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

// The one rule for "too small to thread". Work is counted in scalar multiply-adds (an element-wise
// update such as an optimizer's counts one per element). Every thread must get at least this much:
// on a busy machine a team whose threads are not all scheduled waits at each barrier, and below
// this a wake-up costs more than the thread's share of the work saves.
constexpr std::int64_t kMinWorkPerThread = 1 << 15;

// The team for a loop of `work` multiply-adds over `items` independent items: at most the
// requested threads (resolve_threads), at most one per item, at most work / kMinWorkPerThread.
inline int team_for(std::int64_t work, int requested,
                    std::int64_t items = std::numeric_limits<std::int64_t>::max()) {
    const std::int64_t by_work = work / kMinWorkPerThread;
    const std::int64_t team =
        std::min({static_cast<std::int64_t>(resolve_threads(requested)), by_work, items});
    return static_cast<int>(std::max<std::int64_t>(team, 1));
}

// GNU libgomp keeps its worker pool across fork() but the workers do not exist in the child, so
// the child's next parallel region waits for them forever. A child forked after this process ran
// a team therefore runs every loop serially: results are identical for any thread count, and the
// hang is gone (PyTorch does the same). A child forked before any team may still use threads.
struct ForkState {
    std::atomic<bool> team_started{false};
    std::atomic<bool> serial_only{false};
};

inline ForkState& fork_state() {
    static ForkState state;
    return state;
}

// True in a process forked after a parallel region ran in its parent: loops then run serially.
inline bool forked_after_team() { return fork_state().serial_only.load(std::memory_order_relaxed); }

inline void note_team_start() {
#ifdef METACORE_FORK_GUARD
    static const bool registered = [] {
        return pthread_atfork(nullptr, nullptr, [] {
                   ForkState& s = fork_state();
                   if (s.team_started.load(std::memory_order_relaxed))
                       s.serial_only.store(true, std::memory_order_relaxed);
               }) == 0;
    }();
    (void)registered;
#endif
    fork_state().team_started.store(true, std::memory_order_relaxed);
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
    if (n_threads <= 1 || n == 1 || forked_after_team()) {
        for (std::int64_t i = 0; i < n; ++i) body(i, 0);
        return;
    }
    ExceptionCarrier carrier;
#ifdef _OPENMP
    const int team = static_cast<int>(std::min<std::int64_t>(n_threads, n));
    note_team_start();
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
