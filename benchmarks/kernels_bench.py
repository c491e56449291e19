"""Side-by-side timings of the kernels issue's workloads, one process, contenders interleaved.

W1   MAML meta-gradient, MLP 1-40-40-1 ReLU, float32, meta-batch 25, 10 support + 10 query rows,
     one inner step (lr 0.01): exact second order and first order. metacore:
     ``learner.meta_value_and_grad(θ, batch)`` (the Python API, 1 thread); JAX:
     ``jax.jit(jax.value_and_grad(meta_loss))`` with the inner step ``vmap``-ed over tasks (first
     order: ``jax.lax.stop_gradient`` on the inner gradient), arrays already on the device.
W1-h the same at hidden widths 128 and 512 (MLP 1-h-h-1), second order.
W3   adapt-and-predict: 5 SGD steps on 10 rows, predict 100 rows, one call from Python:
     ``mc.adapt_predict`` against the same loop under ``jax.jit``.
W4   the Omniglot-minimal meta-step: ProtoNet, embedding MLP 784-256-128-64 ReLU with batch
     statistics (``norm="batch"``: each episode's rows are one forward pass), 20-way 1-shot, 5
     queries per class, meta-batch 2, float32 (the training step of ``omniglot_minimal.py``):
     ``learner.meta_value_and_grad(θ, batch)`` against ``jax.jit(jax.value_and_grad(...))`` of
     the same loss ``vmap``-ed over the episodes. The pixels are random (only shapes matter).
W2   weighted logistic objective, value + gradient, 256 tasks × 200 rows × 64 features, float64,
     L2 1e-3: ``mc.Objective(...).value_and_grad(θ)`` at 1 and 2 threads against
     ``jax.jit(jax.value_and_grad(f))`` (f over all rows with row weights α_i/n_i) on 1 thread,
     and the per-task NumPy loop ``mc.reference.objective_value_and_grad``.

JAX runs on one thread (XLA_FLAGS set before it is imported). Each contender is first checked
against the NumPy reference, then timed in ``--repeats`` interleaved rounds (a round: the median
of ``--calls`` calls, after a warm-up); the table gives the median round and ratios of medians,
so a burst of load from other processes moves both sides of a ratio. Run pinned for one thread:

    taskset -c 0 env PYTHONPATH=python python benchmarks/kernels_bench.py
    PYTHONPATH=python python benchmarks/kernels_bench.py --only W2     # W2 needs 2 CPUs for 2 threads

``METACORE_ISA=avx2|baseline`` runs the core at a lower instruction-set level.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

import metacore as mc  # noqa: E402
from machine import cpu_name, usable_cores  # noqa: E402

INNER_LR = 0.01


CLOCK = time.perf_counter


def round_time(fn, calls):
    ts = []
    for _ in range(calls):
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return statistics.median(ts)


def compare(contenders, repeats, calls):
    """{name: median seconds over rounds}, the contenders' rounds interleaved."""
    for fn in contenders.values():
        fn()
        fn()
    rounds = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, fn in contenders.items():
            rounds[k].append(round_time(fn, calls))
    return {k: statistics.median(v) for k, v in rounds.items()}


# --- W1 --------------------------------------------------------------------------------------------
def jax_meta(jax, model, theta, batch, first_order, meta_batch):
    jnp = jax.numpy
    n_layers = len(model.layer_sizes) - 1

    def net(p, x):
        h = x
        for i in range(n_layers):
            h = h @ p[2 * i].T + p[2 * i + 1]
            if i + 1 < n_layers:
                h = jax.nn.relu(h)
        return h[:, 0]

    def loss(p, x, y):
        return jnp.mean((net(p, x) - y) ** 2)

    def task_loss(p, xs, ys, xq, yq):
        g = jax.grad(loss)(p, xs, ys)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return loss([a - INNER_LR * b for a, b in zip(p, g)], xq, yq)

    def meta_loss(p, XS, YS, XQ, YQ):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, XS, YS, XQ, YQ))

    vg = jax.jit(jax.value_and_grad(meta_loss))
    params = [jnp.asarray(w) for pair in model.unpack(theta) for w in pair]
    X = np.asarray(batch.X).reshape(meta_batch, 20, -1)
    y = np.asarray(batch.y).reshape(meta_batch, 20)
    data = [jnp.asarray(a) for a in (X[:, :10], y[:, :10], X[:, 10:], y[:, 10:])]

    def run():
        v, g = vg(params, *data)
        jax.block_until_ready(g)
        return v, g
    return run


def w1_rows(jax, repeats, hidden=(40,), first_orders=(False, True)):
    rows = []
    source = mc.tasks.SinusoidSource(k_support=10, k_query=10)
    batch = source.sample(25, step=0, seed=0, dtype=np.float32)
    for h in hidden:
        model = mc.MLP([1, h, h, 1], activation="relu", loss="mse")
        theta = model.init(seed=0, dtype=np.float32)
        for fo in first_orders:
            learner = mc.MAML(model, inner_lr=INNER_LR, inner_steps=1, first_order=fo, n_threads=1)
            core = lambda: learner.meta_value_and_grad(theta, batch)
            l_ref, g_ref = mc.reference.maml_value_and_grad(model, theta.astype(np.float64), batch,
                                                            inner_lr=INNER_LR, first_order=fo)
            loss, grad = core()
            np.testing.assert_allclose(grad, g_ref, rtol=2e-3, atol=2e-5)
            cont = {"metacore": core}
            if jax is not None:
                run = jax_meta(jax, model, theta, batch, fo, 25)
                v, _ = run()
                np.testing.assert_allclose(float(v), l_ref, rtol=1e-4)
                cont["jax"] = run
            calls = 200 if h <= 40 else (30 if h <= 128 else 5)
            t = compare(cont, repeats, calls)
            name = f"W1 1-{h}-{h}-1 {'first order' if fo else 'second order'}"
            rows.append((name, t))
    return rows


# --- W3 --------------------------------------------------------------------------------------------
def w3_rows(jax, repeats):
    model = mc.MLP([1, 40, 40, 1], activation="relu", loss="mse")
    theta = model.init(seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-5, 5, size=(10, 1)).astype(np.float32)
    ys = (2.0 * np.sin(xs[:, 0] - 0.5)).astype(np.float32)
    xq = np.linspace(-5, 5, 100, dtype=np.float32)[:, None]
    core = lambda: mc.adapt_predict(model, theta, xs, ys, xq, steps=5, lr=INNER_LR)
    expect = mc.reference.adapt_predict(model, theta.astype(np.float64), xs, ys, xq, steps=5,
                                        lr=INNER_LR)
    np.testing.assert_allclose(core(), expect, rtol=1e-4, atol=1e-5)
    cont = {"metacore": core}
    if jax is not None:
        jnp = jax.numpy

        def net(p, x):
            h = jax.nn.relu(x @ p[0].T + p[1])
            h = jax.nn.relu(h @ p[2].T + p[3])
            return (h @ p[4].T + p[5])[:, 0]

        @jax.jit
        def adapt_predict(p, xs, ys, xq):
            loss = lambda q: jnp.mean((net(q, xs) - ys) ** 2)
            for _ in range(5):
                p = [a - INNER_LR * b for a, b in zip(p, jax.grad(loss)(p))]
            return net(p, xq)

        params = [jnp.asarray(w) for pair in model.unpack(theta) for w in pair]
        run = lambda: np.asarray(adapt_predict(params, xs, ys, xq))
        np.testing.assert_allclose(run(), expect, rtol=1e-4, atol=1e-5)
        cont["jax"] = run
    return [("W3 adapt 5 steps + predict 100", compare(cont, repeats, 2000))]


# --- W4 --------------------------------------------------------------------------------------------
def jax_protonet(jax, model, theta, batch, n_way, eps=1e-5):
    """The ProtoNet meta-loss of a batch-normalised MLP as a JAX user writes it."""
    jnp = jax.numpy
    n_layers = len(model.layer_sizes) - 1

    def embed(p, x):
        h = x
        for i in range(n_layers):
            w, b = p[i][0], p[i][1]
            h = h @ w.T + b
            if i + 1 < n_layers:
                g, beta = p[i][2], p[i][3]
                mu = jnp.mean(h, axis=0)
                var = jnp.mean((h - mu) ** 2, axis=0)
                h = jax.nn.relu(g * (h - mu) / jnp.sqrt(var + eps) + beta)
        return h

    def episode(p, x, onehot_s, yq):
        e = embed(p, x)
        n_s = onehot_s.shape[0]
        protos = (onehot_s.T @ e[:n_s]) / jnp.sum(onehot_s, axis=0)[:, None]
        d = e[n_s:, None, :] - protos[None, :, :]
        z = -jnp.sum(d * d, axis=2)
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, yq[:, None], 1)[:, 0])

    def meta_loss(p, X, S, Q):
        return jnp.mean(jax.vmap(episode, in_axes=(None, 0, 0, 0))(p, X, S, Q))

    vg = jax.jit(jax.value_and_grad(meta_loss))
    params = [[jnp.asarray(a) for a in layer] for layer in jax_layout(model, theta)]
    T, n_s = batch.n_tasks, int(batch.n_support[0])
    X = np.asarray(batch.X).reshape(T, -1, batch.X.shape[1])
    y = np.asarray(batch.y).reshape(T, -1).astype(np.int32)
    data = [jnp.asarray(X), jnp.asarray(np.eye(n_way, dtype=np.float32)[y[:, :n_s]]),
            jnp.asarray(y[:, n_s:])]

    def run():
        v, g = vg(params, *data)
        jax.block_until_ready(g)
        return v, g
    return run


def w4_rows(jax, repeats, n_way=20, q_query=5, meta_batch=2):
    rng = np.random.default_rng(0)
    n_classes = 544
    X = rng.random((n_classes * 20, 784), dtype=np.float32)
    source = mc.tasks.EpisodeSource(X, np.arange(0, n_classes * 20 + 1, 20), n_way=n_way,
                                    k_shot=1, q_query=q_query)
    batch = source.sample(meta_batch, step=0, seed=0, dtype=np.float32)
    model = mc.MLP([784, 256, 128, 64], activation="relu", norm="batch")
    theta = model.init(seed=0, dtype=np.float32)
    learner = mc.ProtoNet(model, n_threads=1)
    core = lambda: learner.meta_value_and_grad(theta, batch)
    l_ref, g_ref = mc.reference.protonet_value_and_grad(model, theta.astype(np.float64), batch)
    loss, grad = core()
    np.testing.assert_allclose(loss, l_ref, rtol=1e-4)
    np.testing.assert_allclose(grad, g_ref, rtol=2e-3, atol=2e-5 * np.abs(g_ref).max())
    cont = {"metacore": core}
    if jax is not None:
        run = jax_protonet(jax, model, theta, batch, n_way)
        v, g = run()
        np.testing.assert_allclose(float(v), l_ref, rtol=1e-4)
        flat = np.concatenate([np.ravel(a) for layer in g for a in layer])
        order = np.concatenate([np.ravel(a) for layer in jax_layout(model, g_ref) for a in layer])
        np.testing.assert_allclose(flat, order, rtol=2e-3, atol=2e-5 * np.abs(g_ref).max())
        cont["jax"] = run
    return [(f"W4 Omniglot-minimal ProtoNet step, {n_way}-way 1-shot, batch norm", compare(cont, repeats, 20))]


def jax_layout(model, flat):
    """θ-shaped ``flat`` (P,) as the JAX contender's nested parameter list."""
    pairs, norms = model.unpack(flat), model.unpack_norms(flat)
    return [[w, b] + ([g, be] if i < len(norms) else [])
            for i, ((w, b), (g, be)) in enumerate(zip(pairs, norms + [(None, None)]))]


# --- W2 --------------------------------------------------------------------------------------------
def w2_rows(jax, repeats):
    rng = np.random.default_rng(1)
    T, m, d, lam = 256, 200, 64, 1e-3
    X = rng.standard_normal((T * m, d))
    w_true = rng.standard_normal(d) / np.sqrt(d)
    y = ((X @ w_true + np.repeat(0.5 * rng.standard_normal(T), m)
          + 0.5 * rng.standard_normal(T * m)) > 0).astype(np.float64)
    ts = mc.TaskSet(X, y, np.arange(T + 1, dtype=np.int64) * m)
    weights = rng.uniform(0.1, 1.0, T)
    weights /= weights.sum()
    model = mc.Logistic(d)
    theta = 0.1 * rng.standard_normal(model.n_params)
    v_ref, g_ref = mc.reference.objective_value_and_grad(model, ts, theta, weights=weights, l2=lam)
    cont = {}
    for k in (1, 2):
        obj = mc.Objective(model, ts, weights=weights, l2=lam, n_threads=k)
        v, g = obj.value_and_grad(theta)
        np.testing.assert_allclose(g, g_ref, rtol=1e-7, atol=1e-10)
        cont[f"metacore {k} thread{'s' if k > 1 else ''}"] = (lambda o=obj: o.value_and_grad(theta))
    loop = lambda: mc.reference.objective_value_and_grad(model, ts, theta, weights=weights, l2=lam)
    cont["numpy loop"] = loop
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        jnp = jax.numpy

        def f(th, X, s, rw):
            z = X @ th[:d] + th[d]
            return jnp.sum(rw * jax.nn.softplus(-s * z)) + 0.5 * lam * jnp.dot(th, th)

        vg = jax.jit(jax.value_and_grad(f))
        Xj, sj = jnp.asarray(X), jnp.asarray(2.0 * y - 1.0)
        rw = jnp.asarray(np.repeat(weights / m, m))
        thj = jnp.asarray(theta)

        def run():
            v, g = vg(thj, Xj, sj, rw)
            return v.block_until_ready(), g.block_until_ready()
        np.testing.assert_allclose(np.asarray(run()[1]), g_ref, rtol=1e-7, atol=1e-10)
        cont["jax 1 thread"] = run
    return [("W2 logistic 256×200×64 f64", compare(cont, repeats, 20))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", nargs="*", default=["W1", "W1-h", "W3", "W4", "W2"])
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the process's CPU time per call (time.process_time), which leaves "
                         "out the time other processes hold the CPU on a busy machine; it sums "
                         "all threads, so it is meaningful for the one-thread contenders only")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    jax = None
    if not args.no_jax:
        try:
            import jax as jax_mod
            jax = jax_mod
        except ImportError:
            pass
    info = mc.build_info()
    print(f"clock: {args.clock} · CPU: {cpu_name()} · {usable_cores()} usable CPU(s) · load average "
          f"{os.getloadavg()[0]:.1f} · metacore SIMD {info['simd_active']} (CPU best "
          f"{info.get('simd_cpu', '?')}) · JAX {getattr(jax, '__version__', 'absent')}")
    rows = []
    if "W1" in args.only:
        rows += w1_rows(jax, args.repeats)
    if "W1-h" in args.only:
        rows += w1_rows(jax, max(3, args.repeats // 2), hidden=(128, 512), first_orders=(False,))
    if "W3" in args.only:
        rows += w3_rows(jax, args.repeats)
    if "W4" in args.only:
        rows += w4_rows(jax, args.repeats)
    if "W2" in args.only:
        rows += w2_rows(jax, args.repeats)
    print("\n| workload | contender | median µs | time / metacore 1 thread |")
    print("|---|---|---:|---:|")
    for name, t in rows:
        base = next(v for k, v in t.items() if k.startswith("metacore"))
        for k, v in t.items():
            print(f"| {name} | {k} | {v * 1e6:,.1f} | {v / base:.2f} |")
    print("\nTargets (issue 16):")
    for name, t in rows:
        core, jx = t.get("metacore"), t.get("jax")
        if name.startswith("W1 1-40-40-1 second"):
            print(f"- W1 second order ≤ 100 µs: {core * 1e6:.1f} µs; ≥ 3× JAX: "
                  f"{jx / core:.2f}×" if jx else f"- W1 second order: {core * 1e6:.1f} µs")
        elif name.startswith("W1 1-40-40-1 first") and jx:
            print(f"- W1 first order ≥ 3× JAX first order: {jx / core:.2f}×")
        elif name.startswith("W1 1-") and jx:
            print(f"- {name} ≥ 2× JAX: {jx / core:.2f}×")
        elif name.startswith("W3"):
            print(f"- W3 ≤ 12 µs per Python call: {core * 1e6:.1f} µs"
                  + (f" (JAX {jx / core:.2f}× slower)" if jx else ""))
        elif name.startswith("W4") and jx:
            print(f"- W4 (Omniglot-minimal meta-step) ≥ 2× JAX: {jx / core:.2f}×")
        elif name.startswith("W2"):
            one, two = t["metacore 1 thread"], t["metacore 2 threads"]
            if "jax 1 thread" in t:
                print(f"- W2 ≥ 4.5× JAX on one thread: {t['jax 1 thread'] / one:.2f}×")
            print(f"- W2 ≥ 8× the NumPy loop at 2 threads: {t['numpy loop'] / two:.2f}× "
                  f"(1 thread: {t['numpy loop'] / one:.2f}×)")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
