"""Benchmarks of the weighted multi-task objective: metacore's core against NumPy, JAX and PyTorch.

Run with ``PYTHONPATH=python python -m pytest benchmarks/ --benchmark-only`` (see README.md).

Every benchmark first checks its result against the reference (``metacore.reference``) with
``np.testing.assert_allclose``, then times the call, and records the contender, its thread count
and the workload in ``benchmark.extra_info``.

Contenders for (a)/(b), the weighted logistic objective's value and gradient:

- ``core``: ``mc.Objective(model, ts, weights, l2, n_threads=k).value_and_grad(theta)``;
- ``numpy_loop``: ``mc.reference.objective_value_and_grad`` (the per-task NumPy loop);
- ``numpy_vectorized``: ``mc.reference.objective_value_and_grad_vectorized`` (one NumPy pass);
- ``jax``: ``jax.jit(jax.value_and_grad(f))`` with f written over all rows with row weights
  α_i / n_i (the natural vectorised formulation); X, y and the row weights are arguments (not
  constants baked into the program), θ is already a device array, results are waited for with
  ``block_until_ready``;
- ``torch``: autograd (``loss.backward()``) on the same formulation, float64,
  ``torch.set_num_threads(k)``.

Contenders for (c), per-task losses and per-task gradients of an MLP 64-64-10 softmax net:

- ``core``: ``mc.Objective(model, ts, n_threads=k).task_losses_and_grads(theta)``;
- ``numpy_loop``: a loop over tasks of ``mc.reference.loss_and_grad`` (one pass per task gives
  both its loss and its gradient; the check compares with ``mc.reference.task_losses`` and
  ``mc.reference.task_grads``);
- ``numpy_vectorized``: the same backprop batched over tasks with ``np.matmul`` on tasks stacked
  into a (T, m, d) array (padded to the largest task with a row mask);
- ``jax``: ``jax.jit(jax.vmap(jax.value_and_grad(task_loss), in_axes=(None, 0, 0, 0)))`` over
  the padded (T, m, d) tasks and their row masks: one compiled program for all tasks;
- ``torch``: ``torch.func.vmap(torch.func.grad_and_value(task_loss))`` over the same padded
  tasks (per-sample-gradient style autograd), float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc

# Tolerances of the check against the reference before timing. All contenders work in float64;
# they differ from the reference only in summation order.
RTOL = 1e-7
ATOL = 1e-10


# --- checks --------------------------------------------------------------------------------------
def check_objective(w, value, grad):
    v_ref, g_ref = w.reference
    np.testing.assert_allclose(float(value), v_ref, rtol=RTOL, atol=ATOL, err_msg="value")
    np.testing.assert_allclose(np.asarray(grad), g_ref, rtol=RTOL, atol=ATOL, err_msg="grad")


def check_task_grads(w, losses, grads):
    l_ref, g_ref = w.reference
    np.testing.assert_allclose(np.asarray(losses), l_ref, rtol=RTOL, atol=ATOL,
                               err_msg="task losses")
    np.testing.assert_allclose(np.asarray(grads), g_ref, rtol=RTOL, atol=ATOL,
                               err_msg="task grads")


def _bench(benchmark, timed, w, fn, check, contender, threads, **extra):
    """Check fn's result against the reference, then time fn."""
    benchmark.group = f"{w.name}: {w.description}"
    check(w, *fn())
    timed(fn, contender=contender, threads=threads, **w.info(), **extra)


# --- (a), (b): weighted logistic objective, value and gradient --------------------------------------
def test_logistic_core(benchmark, timed, logistic, threads):
    w = logistic
    obj = mc.Objective(w.model, w.ts, weights=w.weights, l2=w.l2, n_threads=threads)
    _bench(benchmark, timed, w, lambda: obj.value_and_grad(w.theta), check_objective,
           "core", threads, simd=mc.build_info().get("simd_active"))


def test_logistic_numpy_loop(benchmark, timed, logistic, blas_one_thread):
    w = logistic

    def fn():
        return mc.reference.objective_value_and_grad(w.model, w.ts, w.theta, weights=w.weights,
                                                     l2=w.l2)
    _bench(benchmark, timed, w, fn, check_objective, "numpy_loop", 1,
           blas_threads=blas_one_thread)


def test_logistic_numpy_vectorized(benchmark, timed, logistic, blas_one_thread):
    w = logistic

    def fn():
        return mc.reference.objective_value_and_grad_vectorized(w.model, w.ts, w.theta,
                                                                weights=w.weights, l2=w.l2)
    _bench(benchmark, timed, w, fn, check_objective, "numpy_vectorized", 1,
           blas_threads=blas_one_thread)


def test_logistic_jax(benchmark, timed, logistic, jax_mod, jax_threads):
    jax, jnp, w = jax_mod, jax_mod.numpy, logistic
    d, lam = w.ts.n_features, w.l2

    def f(theta, X, s, rw):
        z = X @ theta[:d] + theta[d]
        # ℓ = softplus(−s·z) with s = ±1 for y = 1/0, as in the reference
        return jnp.sum(rw * jax.nn.softplus(-s * z)) + 0.5 * lam * jnp.dot(theta, theta)

    vg = jax.jit(jax.value_and_grad(f))
    X = jnp.asarray(np.asarray(w.ts.X))
    s = jnp.asarray(2.0 * np.asarray(w.ts.y) - 1.0)
    rw = jnp.asarray(w.row_weights)
    theta = jnp.asarray(w.theta)

    def fn():
        v, g = vg(theta, X, s, rw)
        return v.block_until_ready(), g.block_until_ready()
    _bench(benchmark, timed, w, fn, check_objective, "jax", jax_threads,
           jax_version=jax.__version__)


def test_logistic_torch(benchmark, timed, logistic, torch_threads, threads):
    torch, w = torch_threads, logistic
    F = torch.nn.functional
    d, lam = w.ts.n_features, w.l2
    X = torch.from_numpy(np.array(w.ts.X))  # a writable copy: torch refuses read-only buffers
    s = torch.from_numpy(2.0 * np.asarray(w.ts.y) - 1.0)
    rw = torch.from_numpy(w.row_weights)
    theta = torch.from_numpy(w.theta.copy()).requires_grad_(True)

    def fn():
        theta.grad = None
        z = X @ theta[:d] + theta[d]
        v = torch.sum(rw * F.softplus(-s * z)) + 0.5 * lam * torch.dot(theta, theta)
        v.backward()
        return v.item(), theta.grad
    _bench(benchmark, timed, w, fn, check_objective, "torch", threads,
           torch_version=torch.__version__)


# --- (c): MLP softmax, per-task losses and per-task gradients ---------------------------------------
def _one_hot(y, k):
    return np.eye(k)[np.asarray(y, dtype=np.int64)]


def _layer_slices(model):
    return [(w, o, i, b) for w, (o, i), b in model.layers()]


def numpy_batched_task_grads(model, theta, X, Y, mask):
    """Per-task mean cross-entropy and its gradient for a relu net, batched over tasks:
    X (T, m, d), one-hot Y (T, m, k), row mask (T, m) -> losses (T,), grads (T, P)."""
    assert model.activation == "relu" and model.loss == "cross_entropy" and not model.task_heads
    params = model.unpack(theta)
    L = len(params)
    zs, acts = [], [X]
    for l, (W, b) in enumerate(params):
        z = acts[-1] @ W.T + b
        zs.append(z)
        acts.append(np.maximum(z, 0.0) if l < L - 1 else z)
    z = zs[-1]
    mx = z.max(axis=-1, keepdims=True)
    e = np.exp(z - mx)
    se = e.sum(axis=-1, keepdims=True)
    row_loss = mx[..., 0] + np.log(se[..., 0]) - np.sum(z * Y, axis=-1)
    n = mask.sum(axis=1)
    losses = np.sum(row_loss * mask, axis=1) / n
    delta = (e / se - Y) * (mask / n[:, None])[..., None]
    grads = np.empty((X.shape[0], model.n_params))
    for l in reversed(range(L)):
        w_off, o, i, b_off = _layer_slices(model)[l]
        grads[:, w_off:w_off + o * i] = np.matmul(delta.transpose(0, 2, 1),
                                                  acts[l]).reshape(X.shape[0], -1)
        grads[:, b_off:b_off + o] = delta.sum(axis=1)
        if l > 0:
            delta = (delta @ params[l][0]) * (zs[l - 1] > 0)
    return losses, grads


def test_mlp_core(benchmark, timed, data_c, threads):
    w = data_c
    obj = mc.Objective(w.model, w.ts, n_threads=threads)
    _bench(benchmark, timed, w, lambda: obj.task_losses_and_grads(w.theta), check_task_grads,
           "core", threads, simd=mc.build_info().get("simd_active"))


def test_mlp_numpy_loop(benchmark, timed, data_c, blas_one_thread):
    w = data_c
    offsets = np.asarray(w.ts.offsets)

    def fn():
        pairs = [mc.reference.loss_and_grad(w.model, w.theta, w.ts.X[lo:hi], w.ts.y[lo:hi])
                 for lo, hi in zip(offsets[:-1], offsets[1:])]
        return np.array([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    _bench(benchmark, timed, w, fn, check_task_grads, "numpy_loop", 1,
           blas_threads=blas_one_thread)


def test_mlp_numpy_vectorized(benchmark, timed, data_c, blas_one_thread):
    w = data_c
    X, y, mask = w.padded()
    Y = _one_hot(y, w.model.n_outputs)

    def fn():
        return numpy_batched_task_grads(w.model, w.theta, X, Y, mask)
    _bench(benchmark, timed, w, fn, check_task_grads, "numpy_vectorized", 1,
           blas_threads=blas_one_thread)


def test_mlp_jax(benchmark, timed, data_c, jax_mod, jax_threads):
    jax, jnp, w = jax_mod, jax_mod.numpy, data_c
    layers = _layer_slices(w.model)

    def task_loss(theta, X, Y, m):
        a = X
        for l, (w_off, o, i, b_off) in enumerate(layers):
            a = a @ theta[w_off:w_off + o * i].reshape(o, i).T + theta[b_off:b_off + o]
            if l < len(layers) - 1:
                a = jax.nn.relu(a)
        row = jax.nn.logsumexp(a, axis=-1) - jnp.sum(a * Y, axis=-1)
        return jnp.sum(row * m) / jnp.sum(m)

    fn_jit = jax.jit(jax.vmap(jax.value_and_grad(task_loss), in_axes=(None, 0, 0, 0)))
    X, y, mask = w.padded()
    Xj, Yj, mj = (jnp.asarray(a) for a in (X, _one_hot(y, w.model.n_outputs), mask))
    theta = jnp.asarray(w.theta)

    def fn():
        losses, grads = fn_jit(theta, Xj, Yj, mj)
        return losses.block_until_ready(), grads.block_until_ready()
    _bench(benchmark, timed, w, fn, check_task_grads, "jax", jax_threads,
           jax_version=jax.__version__, jax_method="jit(vmap(value_and_grad)) over padded tasks")


def test_mlp_torch(benchmark, timed, data_c, torch_threads, threads):
    torch, w = torch_threads, data_c
    from torch.func import grad_and_value, vmap
    layers = _layer_slices(w.model)

    def task_loss(theta, X, Y, m):
        a = X
        for l, (w_off, o, i, b_off) in enumerate(layers):
            a = a @ theta[w_off:w_off + o * i].view(o, i).T + theta[b_off:b_off + o]
            if l < len(layers) - 1:
                a = torch.relu(a)
        row = torch.logsumexp(a, dim=-1) - torch.sum(a * Y, dim=-1)
        return torch.sum(row * m) / torch.sum(m)

    per_task = vmap(grad_and_value(task_loss), in_dims=(None, 0, 0, 0))
    X, y, mask = w.padded()
    Xt, Yt, mt = (torch.from_numpy(np.array(a)) for a in (X, _one_hot(y, w.model.n_outputs),
                                                         mask))
    theta = torch.from_numpy(w.theta.copy())

    def fn():
        grads, losses = per_task(theta, Xt, Yt, mt)
        return losses, grads
    _bench(benchmark, timed, w, fn, check_task_grads, "torch", threads,
           torch_version=torch.__version__,
           torch_method="torch.func.vmap(grad_and_value) over padded tasks")


# --- the memory-bandwidth baseline --------------------------------------------------------------
def test_numpy_sum_bandwidth(benchmark, timed):
    """NumPy sum over a 1 GiB float64 array: the streaming-read bandwidth (b) is compared with."""
    nbytes = 1 << 30
    arr = np.full(nbytes // 8, 1.0)  # written once: every page is touched before timing
    np.testing.assert_allclose(arr.sum(), arr.size, rtol=0)  # a sum of ones is exact
    benchmark.group = "bandwidth: NumPy sum over 1 GiB float64"
    timed(arr.sum, contender="numpy_sum", threads=1, workload="bandwidth", bytes=arr.nbytes,
          x_bytes=arr.nbytes)
