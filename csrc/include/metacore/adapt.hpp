// The latency path: adapt θ to one new task by k SGD steps on its support rows, then predict.
// Scratch lives in a thread_local workspace made on a thread's first call for a net shape, so a
// call allocates nothing but its outputs and any number of threads may call at once (AdaptLease).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "metacore/inner_loop.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/predict.hpp"
#include "metacore/tasks.hpp"
#include "metacore/threading.hpp"

namespace metacore {

template <class T>
struct AdaptWorkspace {
    explicit AdaptWorkspace(const NetSpec& spec)
        : net(spec), pass(net, false), phi(net.n_params()), next(net.n_params()),
          grad(net.n_params()) {}
    NetSpec net;  // declared before pass, which keeps a reference to it
    NetPass<T> pass;
    std::vector<T> phi, next, grad;
    std::vector<T> extra_;  // one more vector for the loops that need it (iMAML's), on first use

    T* extra(std::int64_t P) {
        extra_.resize(static_cast<std::size_t>(P));
        return extra_.data();
    }
};

// The calling thread's workspace for `net`, taken out of the thread's slot for the lease's
// lifetime and put back after. A call made on this thread while the lease is out — a Python
// signal handler, run by check_interrupt in the middle of a call, calling the core again — finds
// the slot empty and builds its own, instead of writing into (or freeing) the one in use.
template <class T>
class AdaptLease {
   public:
    explicit AdaptLease(const NetSpec& net) : ws_(std::move(slot())) {
        if (!ws_ || !same_net(ws_->net, net)) ws_ = std::make_unique<AdaptWorkspace<T>>(net);
    }
    ~AdaptLease() { slot() = std::move(ws_); }
    AdaptLease(const AdaptLease&) = delete;
    AdaptLease& operator=(const AdaptLease&) = delete;
    AdaptWorkspace<T>& operator*() { return *ws_; }

   private:
    static std::unique_ptr<AdaptWorkspace<T>>& slot() {
        thread_local std::unique_ptr<AdaptWorkspace<T>> ws;
        return ws;
    }
    std::unique_ptr<AdaptWorkspace<T>> ws_;
};

// φ after rule.steps SGD steps from θ on rows [begin, end) of data; points into the workspace.
template <class T>
const T* adapt_rows(AdaptWorkspace<T>& ws, const InnerRule<T>& rule, const T* theta,
                    const TaskData<T>& data, std::int64_t begin, std::int64_t end) {
    const std::int64_t P = ws.net.n_params();
    const T* phi = theta;
    T* bufs[2] = {ws.phi.data(), ws.next.data()};
    for (std::int64_t j = 0; j < rule.steps; ++j) {
        check_interrupt();
        rows_value_grad(ws.pass, phi, data, begin, end, P, ws.grad.data());
        inner_update(rule, phi, ws.grad.data(), P, bufs[j & 1], j);
        phi = bufs[j & 1];
    }
    return phi;
}

template <class T>
void predict_rows(AdaptWorkspace<T>& ws, const T* phi, MatrixView<const T> X, T* out) {
    const std::int64_t B = ws.pass.block_rows(X.rows);  // batch statistics: the query rows'
    const std::int64_t k = ws.net.n_outputs();
    ws.pass.prepare(phi);
    for (std::int64_t r = 0; r < X.rows; r += B) {
        if ((r / B) % 64 == 0) check_interrupt();
        predict_block(ws.pass, ws.net, phi, X.row(r), std::min(B, X.rows - r), 0, out + r * k);
    }
    ws.pass.release();
}

template <class T>
TaskData<T> one_task(MatrixView<const T> X, MatrixView<const T> y) {
    TaskData<T> data;
    data.X = X;
    data.y = y;
    data.n_tasks = 1;
    return data;
}

// out (P) = θ adapted on the support rows (Xs, ys).
template <class T>
void adapt(const NetSpec& net, const InnerRule<T>& rule, const T* theta, MatrixView<const T> Xs,
           MatrixView<const T> ys, T* out) {
    AdaptLease<T> lease(net);
    AdaptWorkspace<T>& ws = *lease;
    const T* phi = adapt_rows(ws, rule, theta, one_task(Xs, ys), 0, Xs.rows);
    std::copy(phi, phi + net.n_params(), out);
}

// out (n_q × k) = the adapted net's outputs on Xq.
template <class T>
void adapt_predict(const NetSpec& net, const InnerRule<T>& rule, const T* theta,
                   MatrixView<const T> Xs, MatrixView<const T> ys, MatrixView<const T> Xq,
                   T* out) {
    AdaptLease<T> lease(net);
    AdaptWorkspace<T>& ws = *lease;
    predict_rows(ws, adapt_rows(ws, rule, theta, one_task(Xs, ys), 0, Xs.rows), Xq, out);
}

// Many new tasks at once, in parallel: task t adapts on its support rows; `phis` (T × P, when
// not null) gets its adapted θ and `preds` (query rows × k, when not null) its outputs on its
// query rows, laid out task after task.
template <class T>
void adapt_batch(const NetSpec& net, const InnerRule<T>& rule, const T* theta,
                 const TaskData<T>& data, T* phis, T* preds, int n_threads) {
    const std::int64_t T_ = data.n_tasks, P = net.n_params(), k = net.n_outputs();
    std::vector<std::int64_t> qstart(T_ + 1, 0);
    for (std::int64_t t = 0; t < T_; ++t)
        qstart[t + 1] = qstart[t] + data.offsets[t + 1] - data.offsets[t] - data.n_support[t];
    // Work: each of the rule's steps and the prediction pass touch every parameter once per row.
    const std::int64_t rows = data.offsets[T_] - data.offsets[0];
    const int threads =
        team_for(saturating_mul(saturating_mul(rows, P), saturating_add(rule.steps, 1)),
                 n_threads, T_);
    parallel_for(T_, threads, [&](std::int64_t t, int) {
        AdaptLease<T> lease(net);
        AdaptWorkspace<T>& ws = *lease;
        const std::int64_t s0 = data.offsets[t], s1 = s0 + data.n_support[t];
        const T* phi = adapt_rows(ws, rule, theta, data, s0, s1);
        if (phis) std::copy(phi, phi + P, phis + t * P);
        const std::int64_t nq = data.offsets[t + 1] - s1;
        if (preds && nq > 0)
            predict_rows(ws, phi, MatrixView<const T>{data.X.row(s1), nq, data.X.cols},
                         preds + qstart[t] * k);
    });
}

}  // namespace metacore
