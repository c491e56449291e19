// The one parallel-for: explicit thread count, dynamic schedule, exceptions carried out of the
// OpenMP region and rethrown on the calling thread; and the one rule for how many threads a loop
// gets (team_for).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "metacore/interrupt.hpp"

#if defined(__linux__)
#include <sched.h>
#include <sys/resource.h>
#endif

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

// The number in the first line of `path` (two numbers "a b" give ceil(a / b)); 0 when the file is
// missing, unreadable or says "max".
inline int cgroup_cpus(const char* quota_path, const char* period_path = nullptr) {
    double quota = 0, period = 0;
    if (std::FILE* f = std::fopen(quota_path, "r")) {
        const int got = std::fscanf(f, "%lf %lf", &quota, &period);
        std::fclose(f);
        if (got < 1) return 0;  // "max": no quota
        if (got < 2) period = 0;
    } else {
        return 0;
    }
    if (period_path) {
        if (std::FILE* f = std::fopen(period_path, "r")) {
            if (std::fscanf(f, "%lf", &period) != 1) period = 0;
            std::fclose(f);
        }
    }
    if (!(quota > 0) || !(period > 0)) return 0;  // v1 says -1 for no quota
    const double cpus = quota / period;
    return cpus >= 1e6 ? 1000000 : std::max(1, static_cast<int>(cpus + 0.999999));
}

// Processors this process may run on: its CPU affinity, capped by its cgroup's CPU quota (v2
// cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us). Computed once.
inline int usable_processors() {
    static const int usable = [] {
        int n = 0;
#if defined(__linux__)
        for (int cpus = 1024; cpus <= (1 << 20) && n == 0; cpus *= 2) {
            cpu_set_t* set = CPU_ALLOC(cpus);
            if (!set) break;
            const std::size_t size = CPU_ALLOC_SIZE(cpus);
            CPU_ZERO_S(size, set);
            if (sched_getaffinity(0, size, set) == 0) n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
        }
#endif
#ifdef _OPENMP
        if (n <= 0) n = omp_get_num_procs();
#endif
        if (n <= 0) n = 1;
        for (int q : {cgroup_cpus("/sys/fs/cgroup/cpu.max"),
                      cgroup_cpus("/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                                  "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
                      cgroup_cpus("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
                                  "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us")})
            if (q > 0) n = std::min(n, q);
        return n;
    }();
    return usable;
}

// requested: 0 = the OpenMP default (OMP_NUM_THREADS or all cores), -1 = all cores, k >= 1 = k;
// never more than the processors this process may use (a larger request gets that many).
inline int resolve_threads(int requested) {
    if (requested == 0 || requested < -1) {
#ifdef _OPENMP
        if (requested == 0) return std::min(omp_get_max_threads(), usable_processors());
#else
        if (requested == 0) return 1;
#endif
        throw std::invalid_argument("n_threads must be None, -1 or >= 1, got " +
                                    std::to_string(requested));
    }
#ifdef _OPENMP
    if (requested == -1) return std::min(omp_get_num_procs(), usable_processors());
    return std::min(requested, usable_processors());
#else
    return 1;
#endif
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

// The size of the last team this thread ran: libgomp keeps that many threads (less itself) in
// the thread's pool and makes new threads only for a larger team.
inline int& pool_team() {
    thread_local int team = 1;
    return team;
}

// Whether the OS caps this user's threads (RLIMIT_NPROC) or this cgroup's (pids.max).
inline bool thread_count_capped() {
#if defined(__linux__)
    rlimit r{};
    if (getrlimit(RLIMIT_NPROC, &r) == 0 && r.rlim_cur != RLIM_INFINITY) return true;
    if (std::FILE* f = std::fopen("/sys/fs/cgroup/pids.max", "r")) {
        char buf[32] = {0};
        const bool capped = std::fscanf(f, "%31s", buf) == 1 && std::string(buf) != "max";
        std::fclose(f);
        return capped;
    }
#endif
    return false;
}

// How many of `wanted` new threads the OS gives now: they are made and held together, then let go.
inline int threads_available(int wanted) {
    std::mutex m;
    std::condition_variable cv;
    bool go = false;
    std::vector<std::thread> held;
    held.reserve(wanted);
    for (int i = 0; i < wanted; ++i) {
        try {
            held.emplace_back([&] {
                std::unique_lock<std::mutex> lock(m);
                cv.wait(lock, [&] { return go; });
            });
        } catch (const std::system_error&) {
            break;
        }
    }
    {
        std::lock_guard<std::mutex> lock(m);
        go = true;
    }
    cv.notify_all();
    for (auto& t : held) t.join();
    return static_cast<int>(held.size());
}

// The largest team up to `team` that the OS can give this thread: libgomp ends the process when it
// cannot make a thread, so a team larger than the pool is first checked by making its new threads
// here. Under a thread cap the kernel frees an exited thread's slot just after join returns: a
// short wait lets it.
inline int creatable_team(int team) {
    int& pool = pool_team();
    if (team <= pool) return team;
    const int got = threads_available(team - pool);
    if (thread_count_capped()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return pool + got;
}

// Calls body(i, thread_index) for i in [0, n) on n_threads threads (serially when 1). Between
// items it checks the current Interrupt (interrupt.hpp), which its workers share.
// Results must never depend on which thread ran an item: callers write per-item outputs.
template <class Body>
void parallel_for(std::int64_t n, int n_threads, Body&& body) {
    if (n <= 0) return;
    int team = static_cast<int>(std::min<std::int64_t>(std::max(n_threads, 1), n));
#ifdef _OPENMP
    if (team > 1 && !forked_after_team()) team = creatable_team(team);
#endif
    if (team <= 1 || forked_after_team()) {
        for (std::int64_t i = 0; i < n; ++i) {
            check_interrupt();
            body(i, 0);
        }
        return;
    }
    ExceptionCarrier carrier;
    Interrupt* const stop = current_interrupt();
#ifdef _OPENMP
    note_team_start();
    pool_team() = team;
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (std::int64_t i = 0; i < n; ++i) {
        carrier.run([&] {
            const InterruptScope scope(stop);
            check_interrupt();
            body(i, omp_get_thread_num());
        });
    }
#else
    for (std::int64_t i = 0; i < n; ++i) carrier.run([&] { check_interrupt(); body(i, 0); });
#endif
    carrier.rethrow();
}

}  // namespace metacore
