"""Ray backend against the core here: per-step overhead on a small objective, and the scaling of a
large one (T = 16,384 tasks) from 1 to 2 actors. Run: PYTHONPATH=python python benchmarks/distributed_bench.py
(prints a Markdown table; needs ray)."""

import os
import time

import numpy as np
import ray

import metacore as mc


def per_step(fn, steps):
    fn(2)                                  # warm-up (actor start-up, first shipping of the shard)
    t0 = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - t0) / steps


def case(name, n_tasks, k, steps):
    ts = mc.tasks.sinusoid(n_tasks, k_support=k, k_query=k, seed=0)
    model = mc.MLP([1, 40, 40, 1])
    obj = mc.Objective(model, ts)
    theta = model.init(seed=0, dtype=np.float32)
    kw = dict(optimizer=mc.optim.Adam(lr=1e-3), progress=False, eval_every=10**9)
    rows = [("local, 2 threads", per_step(lambda n: mc.fit(obj, theta, steps=n, n_threads=2, **kw), steps))]
    for w, c in ((1, 2), (2, 1)):
        with mc.distributed.RayBackend(w, c) as b:
            rows.append((f"Ray, {w} actor(s) x {c} thread(s)",
                         per_step(lambda n: mc.fit(obj, theta, steps=n, backend=b, **kw), steps)))
    print(f"\n{name}: T={n_tasks}, {2 * k} rows/task, P={model.n_params}, {steps} steps")
    print("| backend | ms/step | vs local |\n|---|---:|---:|")
    for label, s in rows:
        print(f"| {label} | {1e3 * s:.2f} | {s / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    case("small (per-step overhead)", 64, 10, 200)
    case("large", 16384, 10, 30)
    ray.shutdown()
