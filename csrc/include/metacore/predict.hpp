// The net's outputs for rows of X: forward passes over blocks of rows, in parallel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "metacore/interrupt.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/sizes.hpp"
#include "metacore/threading.hpp"
#include "metacore/view.hpp"

namespace metacore {

template <class T>
METACORE_INLINE void predict_block_body(NetPass<T>& pass, const NetSpec& net, const T* theta,
                                   const T* X, std::int64_t b, std::int64_t head, T* out) {
    pass.forward(theta, X, b, head);
    std::copy(pass.outputs(), pass.outputs() + b * net.n_outputs(), out);
}
METACORE_KERNEL(void, predict_block,
                (NetPass<T>& pass, const NetSpec& net, const T* theta, const T* X, std::int64_t b, std::int64_t head, T* out),
                (pass, net, theta, X, b, head, out))

// out (n × k) = net(θ, X) using output head `head`. With batch statistics all n rows are one
// forward pass (one block, one thread): each row's output depends on all the rows of X.
// Each thread's pass transposes θ's weights once (prepare) and runs the register-blocked
// products, as the training passes do: the same kernels give the same bits for a row whether
// it is predicted or trained on, and for any number of rows.
template <class T>
void predict(const NetSpec& net, const T* theta, MatrixView<const T> X, std::int64_t head, T* out,
             int n_threads) {
    const std::int64_t B =
        net.rows_coupled() ? std::max<std::int64_t>(X.rows, 1) : NetPass<T>::kBlock;
    const std::int64_t n_blocks = (X.rows + B - 1) / B;
    const std::int64_t k = net.n_outputs();
    const int threads = team_for(saturating_mul(X.rows, net.n_params()), n_threads, n_blocks);
    std::vector<NetPass<T>> passes;
    NetPass<T>::make(passes, net, false, threads, /*forward_only=*/true);
    std::vector<char> prepared(threads, 0);
    parallel_for(n_blocks, threads, [&](std::int64_t blk, int tid) {
        if (!prepared[tid] && head == 0) {  // other heads' products never use the transposes
            passes[tid].prepare(theta);
            prepared[tid] = 1;
        }
        const std::int64_t r = blk * B, b = std::min(B, X.rows - r);
        predict_block(passes[tid], net, theta, X.row(r), b, head, out + r * k);
    });
}

}  // namespace metacore
