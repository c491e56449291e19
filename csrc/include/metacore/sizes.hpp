// Sizes that come from user input: products and sums checked against int64 overflow, and the
// memory budget every buffer must fit before it is allocated. With overcommit a huge allocation
// may succeed and the process is killed when the core writes into it; a wrapped size makes a tiny
// buffer the core then writes far past. Both are refused here, naming the argument that asked.
#pragma once

#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <vector>
#include <stdexcept>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace metacore {

// A buffer larger than the machine's memory (the bindings turn it into MemoryError).
class MemoryBudgetExceeded : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

// a · b for sizes a, b >= 0; std::length_error naming `what` past int64.
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, const char* what) {
    if (a < 0 || b < 0)
        throw std::invalid_argument(std::string(what) + ": sizes must be >= 0, got " +
                                    std::to_string(a) + " and " + std::to_string(b));
    if (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a)
        throw std::length_error(std::string(what) + ": " + std::to_string(a) + " × " +
                                std::to_string(b) + " is past the largest size (2^63 − 1)");
    return a * b;
}

// a + b for sizes a, b >= 0; std::length_error naming `what` past int64.
inline std::int64_t checked_add(std::int64_t a, std::int64_t b, const char* what) {
    if (a < 0 || b < 0)
        throw std::invalid_argument(std::string(what) + ": sizes must be >= 0, got " +
                                    std::to_string(a) + " and " + std::to_string(b));
    if (b > std::numeric_limits<std::int64_t>::max() - a)
        throw std::length_error(std::string(what) + ": " + std::to_string(a) + " + " +
                                std::to_string(b) + " is past the largest size (2^63 − 1)");
    return a + b;
}

// a · b clamped to int64's range, for work estimates that only choose a team size.
inline std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
    if (a <= 0 || b <= 0) return 0;
    return b > std::numeric_limits<std::int64_t>::max() / a ? std::numeric_limits<std::int64_t>::max()
                                                            : a * b;
}

// a + b for a, b >= 0 clamped to int64's range.
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
    return b > std::numeric_limits<std::int64_t>::max() - a ? std::numeric_limits<std::int64_t>::max()
                                                           : a + b;
}

// Bytes a vector's buffer holds (for a vector of vectors, theirs too).
template <class T>
std::int64_t held_bytes(const std::vector<T>& v) {
    return static_cast<std::int64_t>(v.capacity() * sizeof(T));
}
template <class T>
std::int64_t held_bytes(const std::vector<std::vector<T>>& v) {
    std::int64_t b = static_cast<std::int64_t>(v.capacity() * sizeof(std::vector<T>));
    for (const auto& x : v) b += held_bytes(x);
    return b;
}

// n elements left uninitialised: the pages of a large scratch buffer are only touched as the
// work reaches them, so allocating it costs nothing and an interrupted call stops at once.
template <class T>
class ScratchBuffer {
   public:
    explicit ScratchBuffer(std::int64_t n) : data_(n > 0 ? new T[n] : nullptr), size_(n) {}
    T* data() { return data_.get(); }
    const T* data() const { return data_.get(); }
    std::int64_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

   private:
    std::unique_ptr<T[]> data_;
    std::int64_t size_;
};

// Bytes of physical memory, or 0 where unknown. Read once: sysconf(_SC_PHYS_PAGES) is a system
// call (sysinfo), and every output a binding allocates is checked against it.
inline std::uint64_t physical_memory_bytes() {
    static const std::uint64_t bytes = [] {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        if (pages > 0 && page > 0) return static_cast<std::uint64_t>(pages) * page;
#endif
        return std::uint64_t{0};
    }();
    return bytes;
}

// Whether `bytes` fit in int64 and in the machine's memory (where known).
inline bool memory_allows(double bytes) {
    const std::uint64_t phys = physical_memory_bytes();
    return bytes <= static_cast<double>(std::numeric_limits<std::int64_t>::max()) &&
           (phys == 0 || bytes <= static_cast<double>(phys));
}

inline std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
    int u = 0;
    while (b >= 1024.0 && u < 8) b /= 1024.0, ++u;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
    return buf;
}

// Throws MemoryBudgetExceeded when `bytes` is more than the machine's memory (or the address
// space): "<what> would need <N> <for>, more than this machine's <M> of memory".
inline void require_memory(const std::string& what, double bytes, const std::string& purpose) {
    if (memory_allows(bytes)) return;
    const std::uint64_t phys = physical_memory_bytes();
    throw MemoryBudgetExceeded(what + " would need " + human_bytes(bytes) + " " + purpose +
                               ", more than this machine's " +
                               (phys ? human_bytes(static_cast<double>(phys)) : "address space") +
                               " of memory");
}

// The same for `count` elements of `elem` bytes (count a checked size).
inline void require_elements(const char* what, std::int64_t count, std::size_t elem,
                             const char* purpose) {
    const double bytes = static_cast<double>(count) * static_cast<double>(elem);
    if (!memory_allows(bytes)) require_memory(what, bytes, purpose);  // the message: only now
}

}  // namespace metacore
