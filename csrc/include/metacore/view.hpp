// Non-owning views over contiguous buffers: the core's only way of seeing data.
#pragma once

#include <cstdint>

namespace metacore {

// A row-major matrix view: rows × cols elements, row r starts at data + r * cols.
template <class T>
struct MatrixView {
    T* data = nullptr;
    std::int64_t rows = 0;
    std::int64_t cols = 0;

    T* row(std::int64_t r) const { return data + r * cols; }
};

template <class T>
struct VectorView {
    T* data = nullptr;
    std::int64_t size = 0;

    T& operator[](std::int64_t i) const { return data[i]; }
};

}  // namespace metacore
