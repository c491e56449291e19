// Numbers in error messages.
#pragma once

#include <charconv>
#include <string>

namespace metacore {

// v as the shortest text that reads back to it ("1e-30", "inf", "1.7"): std::to_string's fixed
// six decimals would print 1e-30 as "0.000000" and 1e300 as 301 digits.
inline std::string number_text(double v) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

}  // namespace metacore
