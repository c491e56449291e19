// Cancellation of long core calls. The caller (the bindings: Ctrl-C) installs an Interrupt for
// the duration of a call with InterruptScope; the core calls check_interrupt() at fixed points
// between bounded pieces of work (inner steps, row blocks, tasks, training steps). Only the thread
// that installed it runs the hook, at most every kPollInterval; parallel_for hands the Interrupt
// to its workers, which only read its flag. A cancelled call throws Interrupted, which
// parallel_for carries out of its region like any other exception.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>

namespace metacore {

// Thrown by check_interrupt() once the hook asked to stop.
class Interrupted : public std::exception {
   public:
    const char* what() const noexcept override { return "interrupted"; }
};

class Interrupt {
   public:
    // hook(context) returns true when the call must stop; it runs on the installing thread only.
    using Hook = bool (*)(void* context);
    static constexpr std::chrono::milliseconds kPollInterval{10};

    Interrupt(Hook hook, void* context)
        : hook_(hook), context_(context), owner_(std::this_thread::get_id()),
          last_(std::chrono::steady_clock::now()) {}

    // Throws Interrupted when the call is cancelled.
    void check() {
        if (cancelled_.load(std::memory_order_relaxed)) throw Interrupted();
        if (std::this_thread::get_id() != owner_) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < kPollInterval) return;
        last_ = now;
        if (hook_(context_)) {
            cancelled_.store(true, std::memory_order_relaxed);
            throw Interrupted();
        }
    }
    bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

   private:
    Hook hook_;
    void* context_;
    std::thread::id owner_;
    std::chrono::steady_clock::time_point last_;
    std::atomic<bool> cancelled_{false};
};

// The Interrupt of the call this thread is working for, or null.
inline Interrupt*& current_interrupt() {
    thread_local Interrupt* current = nullptr;
    return current;
}

// Installs `interrupt` (may be null: nothing to poll) on this thread for the scope's lifetime.
class InterruptScope {
   public:
    explicit InterruptScope(Interrupt* interrupt) : saved_(current_interrupt()) {
        current_interrupt() = interrupt;
    }
    ~InterruptScope() { current_interrupt() = saved_; }
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;

   private:
    Interrupt* saved_;
};

// The fixed points of long calls: throws Interrupted when the current call is cancelled.
inline void check_interrupt() {
    if (Interrupt* i = current_interrupt()) i->check();
}

}  // namespace metacore
