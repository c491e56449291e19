"""The Ray backend against the core here, and a cost model for many machines. Run:

    PYTHONPATH=python python benchmarks/distributed_bench.py [--quick] [--overhead-only]

(needs ray; prints Markdown). Three parts:

1. Per-step overhead of a multi-task step at T = 64 tasks (sinusoids, MLP 1-40-40-1, float32):
   Ray ms/step minus the compute the actors and the driver do in that step (the same calls timed
   in this process, one thread each), next to an empty actor round trip. One actor runs whole
   chunks of steps (remote_chunks, the default; its compute is the local step) or, with
   remote_chunks=False, step by step as several actors do.
2. MAML on sinusoids, meta-batch 1,024 (MLP 1-40-40-1, one inner step): local vs 1 and 2 actors.
3. A cost model of a meta-step on A actors, each on its own machine with one thread:
       t(A) = t_tail + o_0 + o_1·A + ⌈nb/A⌉·t_block + (A·θ bytes + nb·G·4 + 16·n bytes) / bw
   fed with the measured per-block compute t_block (one thread), the driver's step tail t_tail,
   and the per-step overhead measured here: o_1 = the driver's own CPU time per actor call
   (submitting it and taking its reply, measured on no-op calls to 2 actors), o_0 = the 1-actor
   step-by-step overhead less o_1 (section 1), for the sinusoid MAML
   meta-step (meta-batch 25 and 1,024) and the Omniglot-minimal ProtoNet meta-step (784-256-128-64,
   20-way 1-shot, 5 queries; meta-batch 2 as in benchmarks/omniglot_minimal.py, and 64). bw is a
   10 Gbit/s network (1.25 GB/s). nb ≤ 64 blocks cap the useful actors.
"""

import argparse
import os
import statistics
import time

import numpy as np
import ray

import metacore as mc
from machine import cpu_name, usable_cores
from metacore import _core
from metacore.train.backends import (RAY_SYSTEM_CONFIG, MetaWorker, ShardWorker,
                                     plan_meta_blocks, plan_shards)

BANDWIDTH = 1.25e9      # bytes/s: a 10 Gbit/s network


def timed(fn, repeats, inner=1):
    """Median seconds per call of fn over `repeats` timings of `inner` calls (after a warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def timed_cpu(fn, n):
    """This process's CPU seconds (all its threads) per call of fn, over n calls."""
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


# --- 1. per-step overhead at T = 64 -------------------------------------------------------------
def overhead_t64(steps):
    ts = mc.tasks.sinusoid(64, k_support=10, k_query=10, seed=0)
    model = mc.MLP([1, 40, 40, 1])
    obj = mc.Objective(model, ts)
    theta = model.init(seed=0, dtype=np.float32)
    kw = dict(optimizer=mc.optim.Adam(lr=1e-3), progress=False, eval_every=10**9)
    local = timed(lambda: mc.fit(obj, theta, steps=steps, n_threads=1, **kw), 3) / steps
    rows = [("local, 1 thread", local, None)]
    fits = {}
    for w, c, chunks in ((1, 1, True), (1, 1, False), (2, 1, False)):
        # one thread each: the overhead, not OpenMP on a busy machine
        # what the step computes, in this process: each shard's partials, then the driver's tail
        task_rows, shards = plan_shards(ts, "all", obj.n_params, 4, w)
        workers = []
        for s in shards:
            lo, hi = s["task_lo"], s["task_hi"]
            r0, r1 = ts.offsets[lo], ts.offsets[hi]
            wk = ShardWorker(model.spec(), ts.X[r0:r1], ts.y[r0:r1], ts.offsets[lo:hi + 1] - r0,
                             ts.n_support[lo:hi], ts.task_ids[lo:hi], "all", "<f4",
                             s["block_start"], c)
            wk.set_weights(obj.weights[lo:hi].astype(np.float32))
            workers.append(wk)
        compute = max(timed(lambda wk=wk: wk.partials(theta, True), 5, 20) for wk in workers)
        res = [wk.partials(theta, True) for wk in workers]
        parts = np.concatenate([r[0] for r in res])
        losses = np.concatenate([r[1] for r in res])
        alpha = obj.weights.astype(np.float32)
        tail = timed(lambda: _core.combine_partials(parts, losses, task_rows, alpha, theta, 0.0),
                     5, 50)
        if chunks:      # the actor runs the local loop
            compute, tail = local, 0.0
        with mc.distributed.RayBackend(w, c, remote_chunks=chunks) as b:
            b.attach(obj, np.float32, obj.weights)
            empty = timed(lambda: ray.get([a.ready.remote() for a in b._actors]), 5, 20)
            # the driver's own CPU per call (submitting it, taking its reply: every thread of
            # this process), which grows with the actors; waiting for them is not counted
            cpu_call = timed_cpu(lambda: ray.get([a.ready.remote() for a in b._actors]),
                                 200) / w
            per = timed(lambda: mc.fit(obj, theta, steps=steps, backend=b, **kw), 3) / steps
        if not chunks:
            fits[w] = (per - compute - tail, empty, cpu_call)
        how = "whole chunks" if chunks else "step by step"
        rows.append((f"Ray, {w} actor(s) × {c} thread(s), {how}", per, (compute + tail, empty)))
    print(f"\n### 1. Per-step overhead, multi-task step at T = 64 (P = {model.n_params}, "
          f"{steps} steps per fit, median of 3 fits)\n")
    print("| backend | ms/step | compute in the step | empty calls to all actors | overhead |")
    print("|---|---:|---:|---:|---:|")
    for label, per, extra in rows:
        if extra is None:
            print(f"| {label} | {1e3 * per:.2f} | {1e3 * per:.2f} | – | – |")
        else:
            c, e = extra
            print(f"| {label} | {1e3 * per:.2f} | {1e3 * c:.2f} | {1e3 * e:.2f} | "
                  f"**{1e3 * (per - c):.2f}** |")
    return fits


# --- 1b. Ray Compiled Graphs, measured against the normal calls ---------------------------------
def compiled_graph(rounds=7, inner=40):
    """The step's calls at T = 64 (each actor's partials, one packed reply) as normal Ray calls
    and through a Ray Compiled Graph (ray.dag, experimental_compile), in alternating rounds; and
    the CPU the actors burn while the compiled graph waits for its next input."""
    from ray.dag import InputNode, MultiOutputNode
    from metacore.train.backends import _raw, _request, _unpack
    ts = mc.tasks.sinusoid(64, k_support=10, k_query=10, seed=0)
    model = mc.MLP([1, 40, 40, 1])
    obj = mc.Objective(model, ts)
    theta = model.init(seed=0, dtype=np.float32)

    def cpu_s(pid):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    print("\n### 1b. Normal Ray calls vs a Ray Compiled Graph for the step's partials (T = 64)\n")
    print("| actors | normal calls, ms | compiled graph, ms | compile, s | actors' CPU while "
          "the graph idles, s/s | load |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in (1, 2):
        with mc.distributed.RayBackend(w, 1, remote_chunks=False) as b:
            b.attach(obj, np.float32, obj.weights)
            pids = b.actor_pids()
            t0 = time.perf_counter()
            with InputNode() as inp:
                dag = MultiOutputNode([a.packed.bind(inp[k]) for k in range(len(b._actors))])
            graph = dag.experimental_compile()
            compile_s = time.perf_counter() - t0
            calls = {"normal": lambda: b._shard_partials(theta, True, None),
                     "graph": lambda: [_unpack(m) for m in ray.get(graph.execute(
                         *[_request("partials", (_raw(theta), True, None, k == 0))[0]
                           for k in range(w)]))]}
            for f in calls.values():
                f()
            times = {k: [] for k in calls}
            for _ in range(rounds):
                for k, f in calls.items():
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        f()
                    times[k].append((time.perf_counter() - t0) / inner)
            c0 = [cpu_s(p) for p in pids]
            time.sleep(2.0)
            idle = max(cpu_s(p) - c for p, c in zip(pids, c0)) / 2.0
            graph.teardown()
        print(f"| {w} | {1e3 * statistics.median(times['normal']):.2f} | "
              f"{1e3 * statistics.median(times['graph']):.2f} | {compile_s:.2f} | {idle:.2f} | "
              f"{os.getloadavg()[0]:.1f} |")


# --- 2. MAML meta-batch 1,024 -------------------------------------------------------------------
def maml_1024(steps):
    model = mc.MLP([1, 40, 40, 1])
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.01), mc.tasks.SinusoidSource(),
                               meta_batch=1024)
    theta = model.init(seed=0, dtype=np.float32)
    kw = dict(optimizer=mc.optim.Adam(lr=1e-3), progress=False, eval_every=10**9)
    rows = [("local, 2 threads",
             timed(lambda: mc.fit(problem, theta, steps=steps, n_threads=2, **kw), 3) / steps)]
    rows.append(("local, 1 thread",
                 timed(lambda: mc.fit(problem, theta, steps=steps, n_threads=1, **kw), 3) / steps))
    for w, c in ((1, 2), (2, 1)):
        with mc.distributed.RayBackend(w, c) as b:
            rows.append((f"Ray, {w} actor(s) × {c} thread(s)",
                         timed(lambda: mc.fit(problem, theta, steps=steps, backend=b, **kw), 3)
                         / steps))
    print(f"\n### 2. MAML, sinusoids, meta-batch 1,024 (P = {model.n_params}, one inner step, "
          f"{steps} steps per fit, median of 3 fits)\n")
    print("| backend | ms/step | steps/s | vs local 2 threads |\n|---|---:|---:|---:|")
    for label, s in rows:
        print(f"| {label} | {1e3 * s:.1f} | {1 / s:.1f} | {rows[0][1] / s:.2f}× |")


# --- 3. the cost model ------------------------------------------------------------------------
def omniglot_like(meta_batch):
    """The Omniglot-minimal meta-step's shapes (544 classes of 20 images, 784 pixels); only the
    compute time matters here, so the pixels are random."""
    rng = np.random.default_rng(0)
    X = rng.random((544 * 20, 784), dtype=np.float32)
    src = mc.tasks.EpisodeSource(X, np.arange(0, 544 * 20 + 1, 20), n_way=20, k_shot=1,
                                 q_query=5)
    model = mc.MLP([784, 256, 128, 64], activation="relu")
    return mc.MetaObjective(mc.ProtoNet(model), src, meta_batch=meta_batch), model


def sinusoid_maml(meta_batch):
    model = mc.MLP([1, 40, 40, 1])
    return mc.MetaObjective(mc.MAML(model, inner_lr=0.01), mc.tasks.SinusoidSource(),
                            meta_batch=meta_batch), model


def measure_meta(problem, model):
    """(n_blocks, P, t_block: one block's compute on one thread, t_tail: the driver's step)."""
    theta = model.init(seed=0, dtype=np.float32)
    w = MetaWorker(problem, "<f4", 1)
    nb = w.step.n_blocks
    inner = max(1, int(0.2 / max(timed(lambda: w.meta_partials(theta, 0, 0, 0, nb), 1), 1e-6)))
    t_all = timed(lambda: w.meta_partials(theta, 0, 0, 0, nb), 3, inner)
    parts, losses, support = w.meta_partials(theta, 0, 0, 0, nb)
    opt = mc.optim.Adam(lr=1e-3).core_config()
    state = _core.TrainState32(theta, opt, np.empty(0, np.float32), 0, 0)

    def tail():
        out = _core.ChunkResult(1, 0, False)
        _core.take_meta_step(state, out, 0, opt, parts, losses, support)
    return nb, theta.size, t_all / nb, timed(tail, 5, 20)


def model_time(A, nb, P, n, t_block, t_tail, o0, o1):
    A = min(A, nb)
    bytes_ = A * 4 * P + nb * 4 * P + 16 * n
    return t_tail + o0 + o1 * A + -(-nb // A) * t_block + bytes_ / BANDWIDTH


def cost_model(fits):
    # per added actor: the driver's own CPU per call (it submits the calls and takes the
    # replies one after the other); the rest of the 1-actor step-by-step overhead is fixed
    o1 = fits[2][2]
    o0 = max(fits[1][0] - o1, 0.0)
    print(f"\n### 3. Cost model: expected meta-steps/s on A actors (one machine and one thread "
          f"each)\n\nPer-step overhead o_0 + o_1·A = {1e3 * o0:.2f} ms + "
          f"{1e3 * o1:.2f} ms·A (section 1), 10 Gbit/s network.\n")
    print("| meta-step | blocks | t_block (1 thread) | local, 1 thread | A = 1 | 8 | 32 | 128 "
          "| best A |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (problem, model) in (
            ("sinusoid MAML, meta-batch 25", sinusoid_maml(25)),
            ("sinusoid MAML, meta-batch 1,024", sinusoid_maml(1024)),
            ("Omniglot-minimal ProtoNet, meta-batch 2", omniglot_like(2)),
            ("Omniglot-minimal ProtoNet, meta-batch 64", omniglot_like(64))):
        nb, P, t_block, t_tail = measure_meta(problem, model)
        n = problem.meta_batch
        rate = {A: 1 / model_time(A, nb, P, n, t_block, t_tail, o0, o1)
                for A in (1, 8, 32, 128)}
        best = max(range(1, nb + 1),
                   key=lambda A: 1 / model_time(A, nb, P, n, t_block, t_tail, o0, o1))
        local = 1 / (nb * t_block + t_tail)
        print(f"| {name} | {nb} | {1e3 * t_block:.2f} ms | {local:.0f} | "
              + " | ".join(f"{rate[A]:.0f}" for A in (1, 8, 32, 128)) + f" | {best} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--overhead-only", action="store_true", help="only section 1")
    ap.add_argument("--compiled-graph", action="store_true",
                    help="also section 1b: Ray Compiled Graphs against normal calls")
    args = ap.parse_args()
    # the local cluster RayBackend starts: replies up to 16 MiB inside the call's reply
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config=RAY_SYSTEM_CONFIG, runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    print(f"CPU: {cpu_name()}, {usable_cores()} cores, load average {os.getloadavg()[0]:.1f}")
    fits = overhead_t64(20 if args.quick else 100)
    if args.compiled_graph:
        compiled_graph(3 if args.quick else 7)
    if not args.overhead_only:
        maml_1024(2 if args.quick else 5)
        cost_model(fits)
    ray.shutdown()
