"""Thread scaling of the core: time per call at 1, 2, 4, 8 and 16 threads.

- W1-256: the MAML meta-step of benchmarks/test_meta_bench.py with a meta-batch of 256 — MLP
  1-40-40-1 ReLU, float32, 10 support + 10 query sinusoid points, one inner step, exact second
  order; ``meta_value_and_grad`` (one Python call).
- W2-4096: the weighted logistic objective of benchmarks/conftest.py workload (b) — 4,096 tasks
  × 200 rows × 64 features, float64 (X is 419 MB), random task weights in [0.1, 1], L2 1e-3;
  ``Objective.value_and_grad``.

Thread counts above the processors this process may use (affinity, cgroup quota) are left out:
the core would cap them anyway. Every thread count's result is checked to be bit-identical to the
one-thread result before it is timed; the figure is the median of the timed calls.
Issue 16's target: ≥ 10× at 16 threads on W1-256.

Run:  PYTHONPATH=python python benchmarks/scaling.py     [--seconds S] [--w2-tasks N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import metacore as mc
from machine import cpu_name

THREADS = (1, 2, 4, 8, 16)


def w1(meta_batch):
    model = mc.MLP([1, 40, 40, 1], activation="relu", loss="mse")
    theta = model.init(seed=0, dtype=np.float32)
    batch = mc.tasks.SinusoidSource(k_support=10, k_query=10).sample(meta_batch, step=0, seed=0,
                                                                     dtype=np.float32)

    def make(n_threads):
        learner = mc.MAML(model, inner_lr=0.01, inner_steps=1, n_threads=n_threads)
        return lambda: learner.meta_value_and_grad(theta, batch)
    return make


def w2(n_tasks, rows=200, d=64, seed=0):
    rng = np.random.default_rng(seed)
    N = n_tasks * rows
    X = np.empty((N, d))
    step = (1 << 20) // d                                # fill in slices: no temporary of X's size
    for lo in range(0, N, step):
        rng.standard_normal(out=X[lo:lo + step])
    w_true = rng.standard_normal(d) / np.sqrt(d)
    logits = X @ w_true + np.repeat(0.5 * rng.standard_normal(n_tasks), rows) \
        + 0.5 * rng.standard_normal(N)
    y = (logits > 0).astype(np.float64)
    ts = mc.TaskSet(X, y, np.arange(n_tasks + 1, dtype=np.int64) * rows)
    del X
    weights = rng.uniform(0.1, 1.0, n_tasks)
    model = mc.MLP([d, 1], loss="logistic")
    theta = 0.1 * rng.standard_normal(model.n_params)

    def make(n_threads):
        obj = mc.Objective(model, ts, weights=weights, l2=1e-3, n_threads=n_threads)
        return lambda: obj.value_and_grad(theta)
    return make


def same(a, b):
    flat = lambda r: [np.asarray(x) for x in (r if isinstance(r, (tuple, list)) else [r])]
    return all(np.array_equal(x, y) for x, y in zip(flat(a), flat(b)))


def time_call(fn, seconds, min_calls=5):
    fn()                                                 # warm
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_calls:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt(t):
    return f"{t * 1e6:,.0f} µs" if t < 0.01 else f"{t * 1e3:,.2f} ms"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per point (default 2)")
    ap.add_argument("--meta-batch", type=int, default=256)
    ap.add_argument("--w2-tasks", type=int, default=4096)
    args = ap.parse_args(argv)

    info = mc.build_info()
    usable = info["usable_processors"]
    counts = [k for k in THREADS if k <= usable]
    print(f"CPU: {cpu_name()}; usable processors {usable} (os.cpu_count() {os.cpu_count()}); "
          f"SIMD {info['simd_active']}; load average before {os.getloadavg()[0]:.2f}")
    print(f"thread counts: {counts} (left out, above the usable processors: "
          f"{[k for k in THREADS if k > usable]})\n")

    workloads = {f"W1-{args.meta_batch} MAML meta_value_and_grad": w1(args.meta_batch),
                 f"W2-{args.w2_tasks} logistic value_and_grad": w2(args.w2_tasks)}
    print("| workload | " + " | ".join(f"{k} thread{'s' if k > 1 else ''}" for k in counts)
          + " | speed-up at " + str(counts[-1]) + " |")
    print("|---|" + "---:|" * (len(counts) + 1))
    for name, make in workloads.items():
        one = make(1)()
        row = []
        for k in counts:
            fn = make(k)
            if not same(fn(), one):
                sys.exit(f"{name}: {k} threads gave another result than 1 thread")
            row.append(time_call(fn, args.seconds))
        cells = [f"{fmt(t)} (×{row[0] / t:.2f})" for t in row]
        print(f"| {name} | " + " | ".join(cells) + f" | ×{row[0] / row[-1]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
