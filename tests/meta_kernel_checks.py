"""The meta-step's and the latency path's kernels, run once per instruction-set level by
tests/test_meta_kernels.py (each level in its own process: METACORE_ISA is read when the core
loads). They cover what the meta-step adds to the net passes: θ's weights transposed in 8 × 8
register blocks (widths 1, 3, 9, 17, 33, 41: full blocks, edge rows and columns, none at all;
97 × 90: a matrix past L1, transposed in strips), the
query rows' own pass, and the first reverse-pass Hessian-vector product that starts from the
support rows' forward pass of the last inner step (support sets of 1, 10 and 32 rows, one block)
or recomputes it (33 rows: two blocks). Every check compares the core with the NumPy reference
and, in float64, the meta-gradient with central finite differences of the core's own meta-loss;
the meta-gradient is bit-identical at 1 and 2 threads.

Run directly: ``METACORE_ISA=avx2 python tests/meta_kernel_checks.py LEVEL``."""

from __future__ import annotations

import sys

import numpy as np

import metacore as mc
from metacore import reference as ref

SHAPES = [
    ([1, 40, 40, 1], "relu"),     # W1's net: one input, 40 = 5 full 8-blocks
    ([1, 1, 1], "tanh"),          # width 1: no full block, the edges only
    ([3, 9, 2], "relu"),          # 9: one block + an edge row and column, two outputs
    ([1, 17, 33, 1], "tanh"),     # 17 × 1, 33 × 17: edges on both sides
    ([2, 41, 8, 1], "relu"),      # 8 × 41: one block row and an edge column
    # 97 × 90 (35 KB in float32): past L1, transposed strip by strip down W's columns — strips
    # of two blocks, a last strip of one (columns 80-87), an edge row and two edge columns
    ([2, 90, 97, 1], "relu"),
]
SUPPORT = [1, 10, 32, 33]         # one row; one block; exactly a block; a block + 1 (no reuse)
TOL = {np.float32: dict(rtol=5e-4, atol=5e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}


def _scale(sizes):
    """θ's scale: 0.4 up to width 41; smaller for wider nets, whose outputs would otherwise grow
    to ~1e7 and leave float32 too few digits for a per-entry comparison."""
    return 0.4 * min(1.0, 41 / max(sizes))


def _close(actual, expected, dtype, what):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, err_msg=what,
                               **TOL[dtype])


def _batch(sizes, n_tasks, n_support, n_query, dtype, rng):
    d, k = sizes[0], sizes[-1]
    n = n_support + n_query
    X = rng.uniform(-2, 2, (n_tasks * n, d))
    y = np.sin(X.sum(axis=1, keepdims=True) + np.arange(k)) if k > 1 else np.sin(X[:, 0])
    return mc.TaskSet(X.astype(dtype), y.astype(dtype), np.arange(n_tasks + 1) * n,
                      np.full(n_tasks, n_support))


def check_meta(sizes, activation, n_support, dtype, seed):
    rng = np.random.default_rng(seed)
    model = mc.MLP(sizes, activation=activation, loss="mse")
    theta = (_scale(sizes) * rng.standard_normal(model.n_params)).astype(dtype)
    t64 = theta.astype(np.float64)
    batch = _batch(sizes, 3, n_support, 33 if n_support == 1 else 1, dtype, rng)
    for steps in (1, 2):
        for first_order in (False, True):
            what = (f"{sizes} {activation} support={n_support} steps={steps} "
                    f"fo={first_order} {np.dtype(dtype).name}")
            learner = mc.MAML(model, inner_lr=0.05, inner_steps=steps, first_order=first_order,
                              n_threads=1)
            loss, grad = learner.meta_value_and_grad(theta, batch)
            l_ref, g_ref = ref.maml_value_and_grad(model, t64, batch, inner_lr=0.05,
                                                   inner_steps=steps, first_order=first_order)
            _close(loss, l_ref, dtype, "meta loss " + what)
            _close(grad, g_ref, dtype, "meta grad " + what)
            two = mc.MAML(model, inner_lr=0.05, inner_steps=steps, first_order=first_order,
                          n_threads=2).meta_value_and_grad(theta, batch)
            assert two[0] == loss and np.array_equal(two[1], grad), "threads changed bits " + what
            if dtype == np.float64 and not first_order:  # independent oracle
                h = 1e-6
                e = rng.standard_normal(model.n_params)
                e /= np.linalg.norm(e)
                fd = (learner.meta_value(theta + h * e, batch)
                      - learner.meta_value(theta - h * e, batch)) / (2 * h)
                np.testing.assert_allclose(grad @ e, fd, rtol=1e-5, atol=1e-8,
                                           err_msg="meta grad·e vs FD " + what)
    # MAML++'s multi-step loss: the query pass at every φ_j between the reverse pass's HVPs
    learner = mc.MAML(model, inner_lr=0.05, inner_steps=2, multi_step_loss=True,
                      msl_anneal_steps=10, n_threads=1)
    loss, grad = learner.meta_value_and_grad(theta, batch, step=3)
    l_ref, g_ref = ref.mamlpp_value_and_grad(model, t64, batch, 2, inner_lr=0.05,
                                             multi_step_loss=True, msl_anneal_steps=10, step=3)
    what = f"MAML++ msl {sizes} support={n_support} {np.dtype(dtype).name}"
    _close(loss, l_ref, dtype, "loss " + what)
    _close(grad, g_ref, dtype, "grad " + what)


def check_adapt(sizes, activation, n_support, dtype, seed):
    rng = np.random.default_rng(seed)
    model = mc.MLP(sizes, activation=activation, loss="mse")
    theta = (_scale(sizes) * rng.standard_normal(model.n_params)).astype(dtype)
    ts = _batch(sizes, 1, n_support, 33, dtype, rng)
    Xs, ys = ts.X[:n_support], ts.y[:n_support]
    Xq = ts.X[n_support:]
    what = f"adapt_predict {sizes} {activation} support={n_support} {np.dtype(dtype).name}"
    out = mc.adapt_predict(model, theta, Xs, ys, Xq, steps=3, lr=0.05)
    expect = ref.adapt_predict(model, theta.astype(np.float64), Xs.astype(np.float64),
                               ys.astype(np.float64), Xq.astype(np.float64), steps=3, lr=0.05)
    _close(out, expect, dtype, what)
    # the same θ object again (its transposes may be kept), then θ changed in place
    assert np.array_equal(mc.adapt_predict(model, theta, Xs, ys, Xq, steps=3, lr=0.05), out), what
    theta2 = theta.copy()
    theta *= dtype(0.5)
    expect = ref.adapt_predict(model, theta.astype(np.float64), Xs.astype(np.float64),
                               ys.astype(np.float64), Xq.astype(np.float64), steps=3, lr=0.05)
    _close(mc.adapt_predict(model, theta, Xs, ys, Xq, steps=3, lr=0.05), expect, dtype,
           "after an in-place change " + what)
    theta[:] = theta2


def main(level):
    assert mc.build_info()["simd_active"] == level, (mc.build_info()["simd_active"], level)
    for dtype in (np.float32, np.float64):
        for i, (sizes, act) in enumerate(SHAPES):
            for n_support in SUPPORT:
                check_meta(sizes, act, n_support, dtype, seed=31 * i + n_support)
                check_adapt(sizes, act, n_support, dtype, seed=7 * i + n_support)
    print(f"meta kernel checks passed at {level}")


if __name__ == "__main__":
    main(sys.argv[1])
