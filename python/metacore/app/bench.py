"""`metacore bench`: the compiled core against the NumPy reference on the library's workloads, as
a speed-up table. Every pair is first checked to agree, then timed as the best of several repeats
(float64, the reference's precision). For the full suite against JAX and PyTorch see benchmarks/.
"""

from __future__ import annotations

import os
import time

import numpy as np


def _best(fn, repeat, min_time=0.05):
    """Best seconds per call over ``repeat`` rounds of enough calls to last ``min_time``."""
    fn()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time or n >= 1 << 16:
            break
        n *= 2
    best = t / n
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _workloads(threads):
    """(name, core callable, reference callable, check) per workload."""
    import metacore as mc
    ref = mc.reference
    out = []

    ts = mc.tasks.logistic_family(256, n_features=32, n_rows=200, seed=0)
    model = mc.Logistic(32)
    theta = model.init(seed=0)
    obj = mc.Objective(model, ts, l2=1e-3, n_threads=threads)
    out.append(("objective value+grad: logistic, 256 tasks × 200 rows × 32",
                lambda: obj.value_and_grad(theta),
                lambda: ref.objective_value_and_grad(model, ts, theta, l2=1e-3)))

    net = mc.MLP([1, 40, 40, 1], activation="relu", loss="mse")
    th = net.init(seed=0)
    batch = mc.tasks.SinusoidSource(k_support=10, k_query=10).sample(25, dtype=np.float64)
    maml = mc.MAML(net, inner_lr=0.01, inner_steps=1, n_threads=threads)
    out.append(("MAML meta-gradient: sinusoids, meta-batch 25, K=10, 1-40-40-1",
                lambda: maml.meta_value_and_grad(th, batch),
                lambda: ref.maml_value_and_grad(net, th, batch, inner_lr=0.01)))
    maml5 = mc.MAML(net, inner_lr=0.01, inner_steps=5, n_threads=threads)
    out.append(("MAML meta-gradient, 5 inner steps (second order)",
                lambda: maml5.meta_value_and_grad(th, batch),
                lambda: ref.maml_value_and_grad(net, th, batch, inner_lr=0.01, inner_steps=5)))
    msgd = mc.MetaSGD(net, inner_lr=0.01, n_threads=threads)
    params = msgd.init(th)
    out.append(("Meta-SGD meta-gradient: the same batch",
                lambda: msgd.meta_value_and_grad(params, batch),
                lambda: ref.metasgd_value_and_grad(net, params, batch)))
    Xs, ys = batch.support(0)
    Xq, _ = batch.query(0)
    out.append(("adapt_predict: one task, 10 support rows, 5 steps",
                lambda: mc.adapt_predict(net, th, Xs, ys, Xq, steps=5, lr=0.01),
                lambda: ref.adapt_predict(net, th, Xs, ys, Xq, steps=5, lr=0.01)))
    return out


def _agree(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return all(np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-6,
                           atol=1e-9) for x, y in zip(a, b))


def run_bench(args):
    import metacore as mc
    from ..train.checkpoint import make_folder, write_json
    say = (lambda *a: None) if args.quiet else print
    repeat = 2 if args.quick else 5
    info = mc.build_info()
    say(f"metacore {mc.__version__} · {info['compiler']} · SIMD {info['simd_active']} · "
        f"threads {args.threads or info['default_threads']} · float64, best of {repeat}")
    rows = []
    for name, core, reference in _workloads(args.threads):
        if not _agree(core(), reference()):
            raise FloatingPointError(f"bench: core and reference disagree on {name!r}")
        t_core = _best(core, repeat, 0.02 if args.quick else 0.2)
        t_ref = _best(reference, repeat, 0.02 if args.quick else 0.2)
        rows.append({"workload": name, "core_ms": t_core * 1e3, "reference_ms": t_ref * 1e3,
                     "speedup": t_ref / t_core})
    w = max(len(r["workload"]) for r in rows)
    say(f"\n{'workload'.ljust(w)}  {'core ms':>10}  {'reference ms':>12}  {'speed-up':>9}")
    say(f"{'-' * w}  {'-' * 10}  {'-' * 12}  {'-' * 9}")
    for r in rows:
        say(f"{r['workload'].ljust(w)}  {r['core_ms']:10.4f}  {r['reference_ms']:12.3f}  "
            f"{r['speedup']:8.0f}×")
    if args.output:
        make_folder(args.output, "--output")
        write_json(os.path.join(args.output, "bench.json"),
                   {"build_info": {k: str(v) for k, v in info.items()}, "rows": rows})
    return rows
