"""The kernel checks run once per instruction-set level by tests/test_kernels.py, each level in its
own process (METACORE_ISA is read when the core loads). Every check compares the core with the
NumPy reference and, in float64, with central finite differences; shapes are chosen to hit the
tails of the register tiles: width 1, widths that are not a multiple of any vector length (3, 9,
17, 33, 41), exactly one 512-bit vector (8 doubles, 16 floats), one row, 33 rows (a 32-row block
plus one), and the one-input first layer of the sinusoid nets.

Run directly: ``METACORE_ISA=avx2 python tests/kernel_checks.py LEVEL``; exits non-zero on the first
failed check."""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np

import metacore as mc
from metacore import reference as ref

# [input, hidden..., output] — each exercises a different tail of the tiles.
SHAPES = [
    [1, 40, 40, 1],     # W1's net: one input (the vectorised k = 1 path), 40 = 2·16 + 8
    [1, 1, 1],          # width 1 everywhere
    [3, 9, 2],          # 9: one 8-lane vector + a scalar column
    [5, 17, 33, 3],     # 17, 33: a 16-float vector + 1, two + 1
    [16, 8, 16, 2],     # exactly one vector (8 doubles / 16 floats)
    [2, 41, 1],         # 41 outputs of the first layer, 41 inputs of the last
    [7, 130, 4],        # wider than 4 · 16 + a tail: the 6 × 4 tiles and their remainder
]
ROWS = [1, 33, 70]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}


def _close(actual, expected, dtype, what):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, err_msg=what,
                               **TOL[dtype])


def _theta(model, dtype, seed):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal(model.n_params)).astype(dtype)


def check_net(sizes, activation, loss, n, dtype, seed):
    rng = np.random.default_rng(seed)
    model = mc.MLP(sizes, activation=activation, loss=loss)
    theta = _theta(model, dtype, seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    k = sizes[-1]
    if loss == "mse":
        y = rng.standard_normal((n, k) if k > 1 else n)
    else:
        y = rng.integers(0, 2 if loss == "logistic" else k, size=n).astype(np.float64)
    what = f"{sizes} {activation} {loss} n={n} {np.dtype(dtype).name}"
    # forward (rows_times_t tiles, the affine fallback for narrow outputs)
    _close(model.predict(theta, X), ref.predict(model, theta.astype(np.float64), X), dtype,
           "predict " + what)
    # value, gradient, Hessian-vector product of one task (outer products, back_through)
    ts = mc.TaskSet(X, y.astype(dtype), np.array([0, n], dtype=np.int64))
    obj = mc.Objective(model, ts, n_threads=1)
    t64 = theta.astype(np.float64)
    v, g = obj.value_and_grad(theta)
    v_ref, g_ref = ref.loss_and_grad(model, t64, X.astype(np.float64), y)
    _close(v, v_ref, dtype, "value " + what)
    _close(g, g_ref, dtype, "grad " + what)
    u = rng.standard_normal(model.n_params).astype(dtype)
    _close(obj.hvp(theta, u), ref.loss_hvp(model, t64, X.astype(np.float64), y, u.astype(np.float64)),
           dtype, "hvp " + what)
    if dtype == np.float64:  # independent oracle: central differences of the core's own value
        h = 1e-6
        e = rng.standard_normal(model.n_params)
        e /= np.linalg.norm(e)
        fd = (obj.value(theta + h * e) - obj.value(theta - h * e)) / (2 * h)
        np.testing.assert_allclose(g @ e, fd, rtol=1e-5, atol=1e-8, err_msg="grad·e vs FD " + what)
        fd_h = (obj.grad(theta + h * e) - obj.grad(theta - h * e)) / (2 * h)
        np.testing.assert_allclose(obj.hvp(theta, e), fd_h, rtol=1e-4, atol=1e-6,
                                   err_msg="hvp vs FD " + what)
    # bit-identical for any thread count
    v2, g2 = mc.Objective(model, ts, n_threads=2).value_and_grad(theta)
    assert v2 == v and np.array_equal(g2, g), "thread count changed bits: " + what


def check_logistic_regression(d, n_tasks, rows, dtype, seed):
    """The fused one-layer logistic kernel (W2) against the reference objective and FD."""
    rng = np.random.default_rng(seed)
    model = mc.Logistic(d)
    X = rng.standard_normal((n_tasks * rows, d)).astype(dtype)
    y = rng.integers(0, 2, size=n_tasks * rows).astype(dtype)
    ts = mc.TaskSet(X, y, np.arange(n_tasks + 1, dtype=np.int64) * rows)
    weights = rng.uniform(0.1, 1.0, n_tasks)
    theta = (0.3 * rng.standard_normal(model.n_params)).astype(dtype)
    what = f"logistic d={d} tasks={n_tasks} rows={rows} {np.dtype(dtype).name}"
    obj = mc.Objective(model, ts, weights=weights.astype(dtype), l2=1e-3, n_threads=1)
    v, g = obj.value_and_grad(theta)
    v_ref, g_ref = ref.objective_value_and_grad(model, ts, theta.astype(np.float64),
                                                weights=weights.astype(dtype).astype(np.float64),
                                                l2=1e-3)
    _close(v, v_ref, dtype, "value " + what)
    _close(g, g_ref, dtype, "grad " + what)
    _close(obj.task_losses(theta), ref.task_losses(model, ts, theta.astype(np.float64)), dtype,
           "task losses " + what)
    if dtype == np.float64:
        h = 1e-6
        fd = np.array([(obj.value(theta + h * e) - obj.value(theta - h * e)) / (2 * h)
                       for e in np.eye(model.n_params)[: min(model.n_params, 12)]])
        np.testing.assert_allclose(g[: fd.size], fd, rtol=1e-5, atol=1e-8, err_msg="FD " + what)
    v2, g2 = mc.Objective(model, ts, weights=weights.astype(dtype), l2=1e-3,
                          n_threads=2).value_and_grad(theta)
    assert v2 == v and np.array_equal(g2, g), "thread count changed bits: " + what


def check_meta(sizes, dtype, seed):
    """MAML's exact second-order meta-gradient and adapt_predict (the inner loop's transposes,
    the HVP) against the reference."""
    model = mc.MLP(sizes, activation="relu", loss="mse")
    theta = _theta(model, dtype, seed) * 0.5
    source = mc.tasks.SinusoidSource(k_support=10, k_query=10)
    batch = source.sample(5, step=0, seed=seed, dtype=dtype)
    what = f"meta {sizes} {np.dtype(dtype).name}"
    for first_order in (False, True):
        learner = mc.MAML(model, inner_lr=0.01, inner_steps=2, first_order=first_order)
        loss, grad = learner.meta_value_and_grad(theta, batch)
        l_ref, g_ref = ref.maml_value_and_grad(model, theta.astype(np.float64), batch,
                                               inner_lr=0.01, inner_steps=2,
                                               first_order=first_order)
        _close(loss, l_ref, dtype, f"meta loss fo={first_order} " + what)
        _close(grad, g_ref, dtype, f"meta grad fo={first_order} " + what)
    rng = np.random.default_rng(seed)
    Xs = rng.uniform(-5, 5, (10, 1)).astype(dtype)
    ys = np.sin(Xs[:, 0]).astype(dtype)
    Xq = rng.uniform(-5, 5, (33, 1)).astype(dtype)
    out = mc.adapt_predict(model, theta, Xs, ys, Xq, steps=5, lr=0.01)
    _close(out, ref.adapt_predict(model, theta.astype(np.float64), Xs, ys, Xq, steps=5, lr=0.01),
           dtype, "adapt_predict " + what)


def check_exact_step(d, dtype, seed):
    """The inner loop's SGD step φ = θ − lr·g rounds lr·g before subtracting, at every level, as
    the baseline and NumPy do (no fused multiply-add: moving the step into a vector kernel must
    not change a bit). Small integers and multiples of 1/64 make every gradient entry exact, so
    φ must equal NumPy's float arithmetic bit for bit; a fused step rounds differently."""
    rng = np.random.default_rng(seed)
    n = 4
    model = mc.MLP([d, 1], loss="mse")
    X = rng.integers(-3, 4, size=(n, d)).astype(dtype)
    y = rng.integers(-3, 4, size=n).astype(dtype)
    theta = (rng.integers(-64, 65, size=model.n_params) / 64).astype(dtype)
    _, g = ref.loss_and_grad(model, theta.astype(np.float64), X.astype(np.float64),
                             y.astype(np.float64))
    assert np.array_equal(g.astype(dtype).astype(np.float64), g), "gradient not exact"
    lr = 0.1
    phi = mc.adapt(model, theta, X, y, steps=1, lr=lr)
    expect = theta - dtype(lr) * g.astype(dtype)
    # what a fused multiply-add would give: the exact θ − lr·g, rounded once
    r = Fraction(float(dtype(lr)))
    fused = np.array([float(Fraction(float(t)) - r * Fraction(float(gi)))
                      for t, gi in zip(theta, g)]).astype(dtype)
    what = f"SGD step d={d} {np.dtype(dtype).name}"
    if model.n_params >= 16:
        assert not np.array_equal(expect, fused), "data do not tell a fused step apart: " + what
    assert np.array_equal(phi, expect), what
    # one rate per parameter (Meta-SGD's step): r ⊙ g rounded, then subtracted
    rates = (0.1 * (1 + np.arange(model.n_params) % 3)).astype(dtype)
    phi = mc.adapt(model, theta, X, y, steps=1, lr=rates)
    assert np.array_equal(phi, theta - rates * g.astype(dtype)), "per-parameter rates, " + what


def check_optimizer_step(dtype, seed):
    """The optimizers' element-wise updates are vector kernels at every level, and must round as
    the baseline does: θ, m and v equal to the bit NumPy's arithmetic in ``dtype`` in the same
    order (each product and sum rounded; √ and ÷ are correctly rounded everywhere) — torch's
    Adam, AdamW and SGD equations, for sizes with vector tails and one past the 2¹⁴-entry chunk."""
    rng = np.random.default_rng(seed)
    t_ = dtype
    for P in (1, 15, 37, 70, (1 << 14) + 37):
        theta0 = rng.standard_normal(P).astype(dtype)
        g = rng.standard_normal(P).astype(dtype)
        m0 = (0.1 * rng.standard_normal(P)).astype(dtype)
        v0 = (0.1 * rng.random(P)).astype(dtype)
        what = f"P={P} {np.dtype(dtype).name}"
        for name, opt in (("adam", mc.optim.Adam(lr=1e-2, weight_decay=0.05)),
                          ("adamw", mc.optim.AdamW(lr=1e-2, weight_decay=0.05))):
            theta, state = theta0.copy(), {"m": m0.copy(), "v": v0.copy()}
            opt.update(theta, g, state, step=3, n_threads=1)
            k = 4
            b1, b2, eps = t_(0.9), t_(0.999), t_(1e-8)
            lr, wd = 1e-2, t_(0.05)
            x = theta0.copy()
            if name == "adamw":
                x = x * (t_(1) - t_(lr) * wd)
                d = g.copy()
            else:
                d = g + wd * x
            m = b1 * m0 + (t_(1) - b1) * d
            v = b2 * v0 + (t_(1) - b2) * d * d
            step_size = t_(lr / (1.0 - 0.9 ** k))
            c2 = t_(np.sqrt(1.0 - 0.999 ** k))
            x = x - step_size * m / (np.sqrt(v) / c2 + eps)
            assert np.array_equal(state["m"], m), f"{name} m, {what}"
            assert np.array_equal(state["v"], v), f"{name} v, {what}"
            assert np.array_equal(theta, x), f"{name} θ, {what}"
        for nesterov in (False, True):
            opt = mc.optim.SGD(lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
            theta, state = theta0.copy(), {"m": m0.copy()}
            opt.update(theta, g, state, step=3, n_threads=2)
            d = g + t_(0.01) * theta0
            m = t_(0.9) * m0 + d
            x = theta0 - t_(0.1) * ((d + t_(0.9) * m) if nesterov else m)
            assert np.array_equal(state["m"], m), f"SGD m nesterov={nesterov}, {what}"
            assert np.array_equal(theta, x), f"SGD θ nesterov={nesterov}, {what}"
        theta = theta0.copy()    # plain SGD, two steps: x −= lr·(g + wd·x) each
        opt = mc.optim.SGD(lr=0.1, weight_decay=0.01)
        x = theta0.copy()
        for step in range(2):
            opt.update(theta, g, {}, step=step, n_threads=1)
            x = x - t_(0.1) * (g + t_(0.01) * x)
        assert np.array_equal(theta, x), f"plain SGD, {what}"
        if dtype == np.float32 and P >= 70:
            # the data tell a fused update apart: fma(b1, m, round((1 − b1)·d)) rounds once
            d = g + t_(0.05) * theta0
            fused = (np.float64(b1) * m0.astype(np.float64)
                     + ((t_(1) - b1) * d).astype(np.float64)).astype(dtype)
            assert not np.array_equal(fused, b1 * m0 + (t_(1) - b1) * d), "data cannot tell a fused update"


def main(level):
    info = mc.build_info()
    assert info["simd_active"] == level, (info["simd_active"], level)
    for dtype in (np.float32, np.float64):
        for i, sizes in enumerate(SHAPES):
            for n in ROWS:
                act = "tanh" if i % 2 else "relu"
                loss = ("mse", "logistic", "cross_entropy")[i % 3]
                if loss == "logistic" and sizes[-1] != 1:
                    loss = "mse"
                if loss == "cross_entropy" and sizes[-1] < 2:
                    loss = "mse"
                check_net(sizes, act, loss, n, dtype, seed=17 * i + n)
        for d, n_tasks, rows in ((64, 3, 33), (13, 2, 9), (1, 2, 1), (8, 1, 17), (17, 4, 200)):
            check_logistic_regression(d, n_tasks, rows, dtype, seed=d + rows)
        for sizes in ([1, 40, 40, 1], [1, 9, 3, 1]):
            check_meta(sizes, dtype, seed=3)
        for d in (1, 15, 37, 70):  # vector tails at every level
            check_exact_step(d, dtype, seed=d)
        check_optimizer_step(dtype, seed=5)
    print(f"kernel checks passed at {level}")


if __name__ == "__main__":
    main(sys.argv[1])
