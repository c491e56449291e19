// Checks of packed task buffers and per-call row blocks for the meta-learning bindings: every
// array by name, the offsets' structure, finite values. Nothing is converted here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "arrays.hpp"
#include "metacore/net.hpp"
#include "metacore/task_sources.hpp"
#include "metacore/tasks.hpp"
#include "metacore/format.hpp"

namespace metacore::bindings {

// y's columns for a net: the outputs for mse, one label column otherwise.
inline std::int64_t target_cols(const NetSpec& net) {
    return net.loss() == Loss::mse ? net.n_outputs() : 1;
}

template <class T>
void require_finite(const py::array_t<T>& a, const char* name) {
    const T* p = a.data();
    const std::int64_t n = a.size();
    if (!metacore::all_finite(p, n))
        for (std::int64_t i = 0; i < n; ++i)
            if (!std::isfinite(p[i]))
                throw py::value_error(std::string(name) + " must be finite, found " +
                                      metacore::number_text(static_cast<double>(p[i])) + " at flat index " +
                                      std::to_string(i));
}

// Rows (n, d) of the net's inputs, at least `min_rows` of them, finite.
template <class T>
py::array_t<T> checked_rows(const py::handle& obj, const char* name, const NetSpec& net,
                            std::int64_t min_rows) {
    auto X = checked<T>(obj, name, {-1, net.n_features()});
    if (X.shape(0) < min_rows)
        throw py::value_error(std::string(name) + " must have at least " +
                              std::to_string(min_rows) + " row(s), got shape " + shape_str(X));
    require_finite(X, name);
    return X;
}

// Labels fit the loss head: 0 or 1 for logistic, integers in [0, k) for cross-entropy (the
// checks TaskSet.check_labels makes); ValueError naming the first bad row otherwise.
template <class T>
void check_labels(const py::array_t<T>& y, const char* name, const NetSpec& net) {
    if (net.loss() == Loss::mse) return;
    const std::int64_t k = net.n_outputs();
    const bool logistic = net.loss() == Loss::logistic;
    const T* p = y.data();
    for (std::int64_t r = 0; r < y.shape(0); ++r) {
        const double v = static_cast<double>(p[r]);
        const bool ok = logistic ? (v == 0.0 || v == 1.0)
                                 : (v >= 0.0 && v < static_cast<double>(k) && std::floor(v) == v);
        if (ok) continue;
        char got[32];
        std::snprintf(got, sizeof got, "%.17g", v);
        throw py::value_error(std::string(name) + " must hold " +
                              (logistic ? std::string("labels in {0, 1}")
                                        : "integer labels in [0, " + std::to_string(k) + ")") +
                              " for loss=" + (logistic ? "'logistic'" : "'cross_entropy'") +
                              "; row " + std::to_string(r) + " has " + got);
    }
}

// Targets for n rows: (n,) or (n, cols) where cols fits the loss head; finite.
template <class T>
py::array_t<T> checked_targets(const py::handle& obj, const char* name, const NetSpec& net,
                               std::int64_t n) {
    const std::int64_t cols = target_cols(net);
    py::array_t<T> y;
    if (py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).ndim() == 1 &&
        cols == 1)
        y = checked<T>(obj, name, {n});
    else
        y = checked<T>(obj, name, {n, cols});
    require_finite(y, name);
    check_labels(y, name, net);
    return y;
}

// Class labels of episodes whose classes the learner defines itself (ProtoNet: labels 0..N−1 of
// each episode, checked per episode by the core), not by the model's loss head: (n,) finite.
template <class T>
py::array_t<T> checked_class_labels(const py::handle& obj, const char* name, std::int64_t n) {
    auto y = checked<T>(obj, name, {n});
    require_finite(y, name);
    return y;
}

// The targets a meta-learner trains on: the loss head's (checked_targets), or ProtoNet's class
// labels.
template <class T>
py::array_t<T> checked_meta_targets(const py::handle& obj, const char* name, const NetSpec& net,
                                    std::int64_t n, bool class_labels) {
    if (class_labels && py::isinstance<py::array>(obj) &&
        py::reinterpret_borrow<py::array>(obj).ndim() == 2)
        return checked_class_labels<T>(py::reinterpret_borrow<py::array>(obj).attr("reshape")(-1),
                                       name, n);
    return class_labels ? checked_class_labels<T>(obj, name, n)
                        : checked_targets<T>(obj, name, net, n);
}

template <class T>
MatrixView<const T> rows_view(const py::array_t<T>& a) {
    return {a.data(), a.shape(0), a.ndim() == 2 ? a.shape(1) : 1};
}

// A TaskData over checked buffers; the arrays must outlive it.
template <class T>
TaskData<T> checked_tasks(const py::array_t<T>& X, const py::array_t<T>& y,
                          const py::array_t<std::int64_t>& offsets,
                          const py::array_t<std::int64_t>& n_support) {
    const std::int64_t T_ = offsets.shape(0) - 1;
    if (T_ < 1) throw py::value_error("offsets must describe at least one task");
    const std::int64_t* o = offsets.data();
    const std::int64_t* ns = n_support.data();
    if (o[0] != 0 || o[T_] != X.shape(0))
        throw py::value_error("offsets must start at 0 and end at the number of rows of X");
    for (std::int64_t i = 0; i < T_; ++i) {
        if (o[i + 1] <= o[i]) throw py::value_error("offsets: task " + std::to_string(i) + " is empty");
        if (ns[i] < 0 || ns[i] > o[i + 1] - o[i])
            throw py::value_error("n_support: task " + std::to_string(i) + " has " +
                                  std::to_string(ns[i]) + " support rows, outside [0, " +
                                  std::to_string(o[i + 1] - o[i]) + "]");
    }
    TaskData<T> data;
    data.X = rows_view(X);
    data.y = rows_view(y);
    data.offsets = o;
    data.n_support = ns;
    data.n_tasks = T_;
    return data;
}

// A sinusoid task source from its Python arguments, checked.
inline SinusoidSource sinusoid_source(std::int64_t k_support, std::int64_t k_query,
                               std::pair<double, double> amplitude, std::pair<double, double> phase,
                               std::pair<double, double> x_range) {
    if (k_support < 1 || k_query < 1)
        throw py::value_error("k_support and k_query must be >= 1 for meta-learning, got " +
                              std::to_string(k_support) + " and " + std::to_string(k_query));
    checked_add(k_support, k_query, "k_support + k_query");
    SinusoidSource s;
    s.k_support = k_support;
    s.k_query = k_query;
    s.amp_lo = amplitude.first;
    s.amp_hi = amplitude.second;
    s.phase_lo = phase.first;
    s.phase_hi = phase.second;
    s.x_lo = x_range.first;
    s.x_hi = x_range.second;
    return s;
}

// A checked pool of rows grouped by class for N-way K-shot episodes (the arrays stay owned by
// the caller): class_offsets runs from 0 to X's rows, and every class has k_shot + q_query rows.
template <class T>
EpisodePool<T> episode_pool(const py::array_t<T>& X, const py::array_t<std::int64_t>& offsets,
                            std::int64_t n_way, std::int64_t k_shot, std::int64_t q_query) {
    if (n_way < 1 || k_shot < 1 || q_query < 1)
        throw py::value_error("n_way, k_shot and q_query must be >= 1, got " +
                              std::to_string(n_way) + ", " + std::to_string(k_shot) + " and " +
                              std::to_string(q_query));
    checked_mul(n_way, checked_add(k_shot, q_query, "q_query"), "n_way");   // rows per episode
    require_finite(X, "X");
    const std::int64_t C = offsets.shape(0) - 1;
    const std::int64_t* o = offsets.data();
    if (C < n_way)
        throw py::value_error("the pool has " + std::to_string(C) +
                              " classes, fewer than n_way = " + std::to_string(n_way));
    if (o[0] != 0 || o[C] != X.shape(0))
        throw py::value_error("class_offsets must run from 0 to the number of rows of X (" +
                              std::to_string(X.shape(0)) + ")");
    for (std::int64_t c = 0; c < C; ++c)
        if (o[c + 1] - o[c] < k_shot + q_query)
            throw py::value_error("class " + std::to_string(c) + " has " +
                                  std::to_string(o[c + 1] - o[c]) +
                                  " rows, fewer than k_shot + q_query = " +
                                  std::to_string(k_shot + q_query));
    EpisodePool<T> pool;
    pool.X = rows_view(X);
    pool.class_offsets = o;
    pool.n_classes = C;
    pool.n_way = n_way;
    pool.k_shot = k_shot;
    pool.q_query = q_query;
    return pool;
}

}  // namespace metacore::bindings
