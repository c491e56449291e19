// The one parallel-for and the one rule for how many threads a loop gets (team_for).
//
// Design. parallel_for runs on a small persistent pool of std::thread workers, not in an OpenMP
// parallel region. An OpenMP region ends with a join barrier that waits for every member of the
// team: on a busy machine (one CPU-bound process per core beside us) a worker the OS has not
// scheduled holds the caller there for a whole time slice, and small loops became 30-120x slower
// than one thread. Here the caller does the work itself: items are claimed one at a time from an
// atomic counter by the caller and by whichever workers arrive, and the caller waits only for
// items that others already claimed. A worker that arrives after the last item was claimed claims
// nothing and touches nothing but the loop's own counters (kept alive by a shared_ptr), so a late
// or never-scheduled thread costs the caller nothing. What a busy machine can still cost — the
// caller descheduled when it wakes workers, or waiting for an item whose worker was descheduled
// mid-item — the caller measures, and then runs loops alone for a while (BusyMachine).
// OpenMP still gives the SIMD loops and the default thread count (OMP_NUM_THREADS, read, never
// set); its wait policy (OMP_WAIT_POLICY) sets how long idle workers spin before they sleep.
// Properties kept from the OpenMP version: exceptions (and Ctrl-C, interrupt.hpp) are carried to
// the caller; body(i, thread_index) gets thread_index < team, unique among the pieces of one loop
// running at once (per-thread workspaces); calls from inside a loop's items run serially. New:
// a forked child starts a fresh pool (and uses threads); a thread cap (RLIMIT_NPROC, pids.max)
// only means fewer workers, never the end of the process. Results never depend on which thread
// ran an item: callers write per-item outputs and reduce in block order (reduction.hpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "metacore/interrupt.hpp"

#if defined(__linux__)
#include <sched.h>
#include <sys/resource.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define METACORE_FORK_GUARD 1
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
// below it, waking a worker costs more than its share of the work saves.
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

namespace threading_detail {

// How long an idle worker, or a caller waiting for items others claimed, spins before it sleeps:
// OMP_WAIT_POLICY=passive none, =active 1 ms, unset 50 µs (long enough to catch the next loop of
// a step or of a Python loop of calls; short enough that an idle pool costs nothing).
inline std::chrono::nanoseconds spin_time() {
    static const std::chrono::nanoseconds spin = [] {
        std::string policy;
        if (const char* v = std::getenv("OMP_WAIT_POLICY"))
            for (const char* c = v; *c; ++c)
                policy += static_cast<char>(std::tolower(static_cast<unsigned char>(*c)));
        if (policy == "passive") return std::chrono::nanoseconds(0);
        if (policy == "active") return std::chrono::nanoseconds(std::chrono::milliseconds(1));
        return std::chrono::nanoseconds(std::chrono::microseconds(50));
    }();
    return spin;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#else
    std::this_thread::yield();
#endif
}

// Spins until ready() or spin_time() has passed; returns ready().
template <class Ready>
bool spin_until(Ready&& ready) {
    if (ready()) return true;
    const auto spin = spin_time();
    if (spin.count() == 0) return false;
    const auto until = std::chrono::steady_clock::now() + spin;
    for (int k = 1;; ++k) {
        cpu_relax();
        if (ready()) return true;
        if (k % 64 == 0 && std::chrono::steady_clock::now() >= until) return ready();
    }
}

// True on pool workers, and on a caller while it works on its own loop: a parallel_for called
// from inside a loop's items runs serially (as a nested OpenMP region did).
inline bool& inside_loop() {
    thread_local bool inside = false;
    return inside;
}

// CPU time of the calling thread in ns (-1 where the OS does not say).
inline std::int64_t thread_cpu_ns() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec t{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0)
        return std::int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
#endif
    return -1;
}

// What the caller learns about the machine. The machine is busy when, during a threaded loop,
// the caller was descheduled (off the CPU, other than sleeping in its own wait, for longer than
// kDescheduled: waking a worker on an oversubscribed machine costs the caller its time slice), or
// waited long for an item a worker claimed (longer than kDescheduled and than 4 of its own items:
// the worker was descheduled mid-item). Loops then run on the caller alone for a while — 2 ms,
// doubling (up to 256 ms) while it recurs within a second of the last hold-off — and threads
// are tried again after it. On an idle machine neither happens and nothing changes; on a busy
// one the cost is bounded by one such loop per hold-off. Results do not depend on it.
class BusyMachine {
   public:
    static constexpr std::chrono::microseconds kDescheduled{300};
    static constexpr int kMaxLevel = 8;

    static BusyMachine& instance() {
        static BusyMachine state;
        return state;
    }

    // True while loops should run on the caller alone.
    bool holding_off() const {
        return now_ns() < serial_until_.load(std::memory_order_relaxed);
    }

    // After a loop: the caller ran `mine` items in `working`, then waited `waiting` for others;
    // it was off the CPU for `descheduled` of the loop other than sleeping in its wait.
    void observe(std::chrono::nanoseconds working, std::int64_t mine,
                 std::chrono::nanoseconds waiting, std::chrono::nanoseconds descheduled) {
        const std::chrono::nanoseconds per_item =
            mine > 0 ? working / mine : std::chrono::nanoseconds(0);
        const bool held = waiting > kDescheduled && waiting > 4 * per_item;
        if (!held && descheduled <= kDescheduled) return;
        const std::int64_t now = now_ns();
        const std::int64_t last_end = serial_until_.load(std::memory_order_relaxed);
        int level = level_.load(std::memory_order_relaxed);
        level = now - last_end > std::int64_t(1000000000) ? 1 : std::min(level + 1, kMaxLevel);
        level_.store(level, std::memory_order_relaxed);
        serial_until_.store(now + (std::int64_t(1000000) << level), std::memory_order_relaxed);
    }

   private:
    static std::int64_t now_ns() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
    std::atomic<std::int64_t> serial_until_{0};
    std::atomic<int> level_{0};
};

// One parallel_for call. The caller owns slot 0; workers that join take slots 1 .. team-1.
// Items are claimed from `next`; `done` counts finished (or, after a failure, skipped) items.
// Shared by the caller and the workers that joined (shared_ptr): a worker may still read the
// counters after the caller returned, but calls the body only for an item it claimed, and the
// caller waits for every claimed item.
struct Loop {
    using Call = void (*)(void* body, std::int64_t i, int slot);

    Loop(std::int64_t n_, int team_, Call call_, void* body_, Interrupt* stop_)
        : n(n_), team(team_), call(call_), body(body_), stop(stop_) {}

    // Claims and runs items until none is left; returns how many it ran.
    std::int64_t work(int slot) {
        const InterruptScope scope(stop);
        for (std::int64_t ran = 0;; ++ran) {
            const std::int64_t i = next.fetch_add(1, std::memory_order_relaxed);
            if (i >= n) return ran;
            carrier.run([&] {
                check_interrupt();
                call(body, i, slot);
            });
            if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
                std::lock_guard<std::mutex> lock(mutex);
                finished.notify_all();
            }
        }
    }

    // The caller, after its own claims ran out: waits for the items others claimed, spinning a
    // moment, then sleeping; it keeps polling its Interrupt (Ctrl-C) while it sleeps. Returns
    // the time it slept.
    std::chrono::nanoseconds wait_for_claimed() {
        using clock = std::chrono::steady_clock;
        const auto all_done = [&] { return done.load(std::memory_order_acquire) >= n; };
        if (spin_until(all_done)) return std::chrono::nanoseconds(0);
        const auto asleep = clock::now();
        std::unique_lock<std::mutex> lock(mutex);
        while (!all_done()) {
            finished.wait_for(lock, Interrupt::kPollInterval);
            if (all_done()) break;
            lock.unlock();
            carrier.run([] { check_interrupt(); });  // sets the flag the workers' items read
            lock.lock();
        }
        return clock::now() - asleep;
    }

    const std::int64_t n;
    const int team;
    const Call call;
    void* const body;
    Interrupt* const stop;
    std::atomic<std::int64_t> next{0};
    std::atomic<std::int64_t> done{0};
    int joined = 1;       // slots handed out (under the pool's mutex)
    bool offered = false; // still in the pool's list (under the pool's mutex)
    ExceptionCarrier carrier;
    std::mutex mutex;
    std::condition_variable finished;
};

// The workers: made when a loop first needs them (at most usable_processors() - 1; fewer when
// the OS refuses a thread), detached, kept for the life of the process. A forked child does not
// have its parent's workers: the child handler drops the pool and the child's first loop makes a
// new one.
class Pool {
   public:
    static Pool& instance() {
        std::atomic<Pool*>& slot = current();
        Pool* pool = slot.load(std::memory_order_acquire);
        if (pool) return *pool;
        register_fork_handler();
        Pool* fresh = new Pool();
        if (slot.compare_exchange_strong(pool, fresh, std::memory_order_acq_rel)) return *fresh;
        delete fresh;  // another thread made it first; this one has no threads yet
        return *pool;
    }

    // Offers `loop` to up to `helpers` workers.
    void offer(const std::shared_ptr<Loop>& loop, int helpers) {
        std::lock_guard<std::mutex> lock(mutex_);
        grow(helpers);
        if (workers_ == 0) return;  // no thread to be had: the caller does it all
        loop->offered = true;
        offered_.push_back(loop);
        n_offered_.store(static_cast<int>(offered_.size()), std::memory_order_release);
        if (helpers >= workers_) {
            wake_.notify_all();
        } else {
            for (int k = 0; k < helpers; ++k) wake_.notify_one();
        }
    }

    // No worker joins `loop` any more (its items are all claimed).
    void withdraw(Loop* loop) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (loop->offered) remove(loop);
    }

   private:
    Pool() = default;

    static std::atomic<Pool*>& current() {
        static std::atomic<Pool*> pool{nullptr};
        return pool;
    }

    static void register_fork_handler() {
#ifdef METACORE_FORK_GUARD
        static const bool registered = [] {
            // The old pool (its mutex perhaps held by a thread that does not exist in the child)
            // is left alone, not destroyed.
            return pthread_atfork(nullptr, nullptr, [] {
                       current().store(nullptr, std::memory_order_relaxed);
                   }) == 0;
        }();
        (void)registered;
#endif
    }

    // At least `helpers` workers if the processors and the OS allow (mutex_ held). A refused
    // thread is retried after a second, not on every loop.
    void grow(int helpers) {
        const int wanted = std::min(helpers, usable_processors() - 1);
        if (workers_ >= wanted) return;
        const auto now = std::chrono::steady_clock::now();
        if (now < retry_) return;
        while (workers_ < wanted) {
            try {
                std::thread([this] { serve(); }).detach();
                ++workers_;
            } catch (const std::exception&) {
                retry_ = now + std::chrono::seconds(1);
                return;
            }
        }
    }

    void remove(Loop* loop) {
        loop->offered = false;
        const auto is_it = [&](const std::shared_ptr<Loop>& l) { return l.get() == loop; };
        offered_.erase(std::find_if(offered_.begin(), offered_.end(), is_it));
        n_offered_.store(static_cast<int>(offered_.size()), std::memory_order_release);
    }

    // A worker: spins a moment for the next loop, then sleeps until one is offered; joins the
    // oldest loop with a free slot and items left.
    void serve() {
        inside_loop() = true;
        for (;;) {
            spin_until([&] { return n_offered_.load(std::memory_order_acquire) > 0; });
            std::shared_ptr<Loop> loop;
            int slot = 0;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                while (!loop) {
                    wake_.wait(lock, [&] { return !offered_.empty(); });
                    loop = offered_.front();
                    // a loop whose items are all claimed needs nobody (its caller withdraws it)
                    if (loop->next.load(std::memory_order_relaxed) >= loop->n) {
                        remove(loop.get());
                        loop.reset();
                    }
                }
                slot = loop->joined++;
                if (loop->joined >= loop->team) remove(loop.get());
            }
            loop->work(slot);
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<std::shared_ptr<Loop>> offered_;
    std::atomic<int> n_offered_{0};
    int workers_ = 0;
    std::chrono::steady_clock::time_point retry_{};
};

template <class Body>
void call_body(void* body, std::int64_t i, int slot) {
    (*static_cast<Body*>(body))(i, slot);
}

}  // namespace threading_detail

// Calls body(i, thread_index) for i in [0, n) on up to n_threads threads, the caller among them
// (serially when 1, inside another loop's items, and while BusyMachine holds off).
// thread_index < min(n_threads, n) and no two items running at once share one. Items are claimed
// one at a time; the caller returns once every item ran, waiting only for items other threads
// claimed. Between items it checks the current Interrupt (interrupt.hpp), which the workers
// share; the first exception thrown by any item is rethrown here after all claimed items finished.
// Results must never depend on which thread ran an item: callers write per-item outputs.
template <class Body>
void parallel_for(std::int64_t n, int n_threads, Body&& body) {
    namespace detail = threading_detail;
    if (n <= 0) return;
    const int team = static_cast<int>(std::min<std::int64_t>(std::max(n_threads, 1), n));
    detail::BusyMachine& machine = detail::BusyMachine::instance();
    if (team <= 1 || detail::inside_loop() || machine.holding_off()) {
        for (std::int64_t i = 0; i < n; ++i) {
            check_interrupt();
            body(i, 0);
        }
        return;
    }
    using B = std::remove_reference_t<Body>;
    auto loop = std::make_shared<detail::Loop>(n, team, &detail::call_body<B>,
                                               const_cast<void*>(static_cast<const void*>(&body)),
                                               current_interrupt());
    detail::Pool& pool = detail::Pool::instance();
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();  // waking workers may cost the caller its CPU: counted
    const std::int64_t cpu_start = detail::thread_cpu_ns();
    pool.offer(loop, team - 1);
    detail::inside_loop() = true;
    const std::int64_t mine = loop->work(0);
    detail::inside_loop() = false;
    const auto own_done = clock::now();
    pool.withdraw(loop.get());
    const std::chrono::nanoseconds slept = loop->wait_for_claimed();
    const auto end = clock::now();
    const std::int64_t cpu_end = detail::thread_cpu_ns();
    const std::chrono::nanoseconds off_cpu =
        cpu_start < 0 || cpu_end < 0
            ? std::chrono::nanoseconds(0)
            : (end - start) - std::chrono::nanoseconds(cpu_end - cpu_start) - slept;
    machine.observe(own_done - start, mine, end - own_done, off_cpu);
    loop->carrier.rethrow();
}

}  // namespace metacore
