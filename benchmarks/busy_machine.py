"""Default threading on a busy machine: one CPU-bound process per usable core runs beside us.

Measures, at ``n_threads=1`` and at the default (``n_threads=None``), on the idle machine and
then with one CPU-bound process per usable core running beside it:

- W1: the MAML meta-step — MLP 1-40-40-1 ReLU, float32, meta-batch 25, 10 support + 10 query
  sinusoid points, one inner step, exact second order. Two forms: ``meta_value_and_grad`` (one
  Python call) and ``mc.fit`` chunks of 100 steps with Adam (time per step);
- batched adaptation: ``mc.adapt_batch`` over 200 sinusoid tasks (same net, 10 support + 10
  query points, 5 SGD steps, predictions on the query points);
- a 64-task objective: ``mc.Objective(...).value_and_grad`` for an MLP 16-32-1 with a logistic
  head, 64 tasks × 50 rows, float64.

Each workload alternates rounds at 1 thread and at the default so that both see the same load;
the figure is the median over rounds of the mean time per call. The busy machine is made by this
script: ``--burners`` processes (default: one per usable core) spinning in pure Python, each
ending by itself after the run's time budget; they are killed when the script ends, also on
Ctrl-C or SIGTERM.

Run:  PYTHONPATH=python python benchmarks/busy_machine.py            [--seconds S] [--check]
``--check`` exits 1 unless, busy, default ≤ 1.3 × one thread for every workload (issue 16).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

import metacore as mc
from machine import cpu_name, usable_cores

BURN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent ends us
end = time.monotonic() + float(sys.argv[1])
x = 0
while time.monotonic() < end:
    for _ in range(10000):
        x += 1
"""


class Burners:
    """``n`` CPU-bound child processes, each ending by itself after ``seconds``."""

    def __init__(self, n, seconds):
        self.procs = []
        try:
            for _ in range(n):
                self.procs.append(subprocess.Popen([sys.executable, "-c", BURN, str(seconds)],
                                                   start_new_session=True,
                                                   stdin=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        time.sleep(0.3)                                  # let them reach full speed

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --- workloads: name -> make(n_threads) -> a no-argument call ---------------------------------
def w1_problem():
    model = mc.MLP([1, 40, 40, 1], activation="relu", loss="mse")
    theta = model.init(seed=0, dtype=np.float32)
    source = mc.tasks.SinusoidSource(k_support=10, k_query=10)
    return model, theta, source


def make_w1_call(n_threads):
    model, theta, source = w1_problem()
    batch = source.sample(25, step=0, seed=0, dtype=np.float32)
    learner = mc.MAML(model, inner_lr=0.01, inner_steps=1, first_order=False, n_threads=n_threads)
    return lambda: learner.meta_value_and_grad(theta, batch), 1


def make_w1_chunk(n_threads):
    model, theta, source = w1_problem()
    learner = mc.MAML(model, inner_lr=0.01, inner_steps=1, first_order=False)
    problem = mc.MetaObjective(learner, source, meta_batch=25, n_threads=n_threads)
    steps = 100
    return (lambda: mc.fit(problem, theta, optimizer=mc.optim.Adam(lr=1e-3), steps=steps,
                           progress=False, chunk_size=steps, seed=0, n_threads=n_threads)), steps


def make_adapt_batch(n_threads):
    model, theta, source = w1_problem()
    tasks = source.sample(200, step=1, seed=0, dtype=np.float32)
    return lambda: mc.adapt_batch(model, theta, tasks, steps=5, lr=0.01, n_threads=n_threads), 1


def make_objective(n_threads):
    rng = np.random.default_rng(0)
    model = mc.MLP([16, 32, 1], activation="relu", loss="logistic")
    Xs = [rng.normal(size=(50, 16)) for _ in range(64)]
    ys = [(rng.random(50) < 0.5).astype(np.float64) for _ in range(64)]
    obj = mc.Objective(model, mc.TaskSet.from_arrays(Xs, ys), n_threads=n_threads)
    theta = model.init(seed=0)
    return lambda: obj.value_and_grad(theta), 1


WORKLOADS = {
    "W1 meta_value_and_grad (per call)": make_w1_call,
    "W1 fit chunk (per step)": make_w1_chunk,
    "adapt_batch, 200 tasks (per call)": make_adapt_batch,
    "64-task objective value_and_grad (per call)": make_objective,
}


def check_same(name, make):
    """The default gives the one-thread result bit for bit (the benchmark is of equal work)."""
    a, b = make(1)[0](), make(None)[0]()
    flat = lambda r: [np.asarray(x) for x in (r if isinstance(r, (tuple, list)) else [r])]
    if name.startswith("W1 fit"):
        a, b = a.theta, b.theta
    if not all(np.array_equal(x, y) for x, y in zip(flat(a), flat(b))):
        raise SystemExit(f"{name}: the default thread count gave another result than 1 thread")


def time_rounds(calls, seconds):
    """calls: {label: (fn, per)} -> {label: median over rounds of seconds per unit}."""
    for fn, _ in calls.values():                           # warm up
        fn()
    # calls per round: about 20 ms of work each, at least one
    reps = {}
    for label, (fn, per) in calls.items():
        t0 = time.perf_counter()
        fn()
        reps[label] = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    samples = {label: [] for label in calls}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or min(len(s) for s in samples.values()) < 5:
        for label, (fn, per) in calls.items():
            t0 = time.perf_counter()
            for _ in range(reps[label]):
                fn()
            samples[label].append((time.perf_counter() - t0) / (reps[label] * per))
    return {label: statistics.median(s) for label, s in samples.items()}


def measure(seconds):
    out = {}
    for name, make in WORKLOADS.items():
        calls = {"1": make(1), "default": make(None)}
        out[name] = time_rounds(calls, seconds)
    return out


def fmt(t):
    return f"{t * 1e6:,.0f} µs" if t < 0.1 else f"{t * 1e3:,.1f} ms"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="time per workload and condition (default 3)")
    ap.add_argument("--burners", type=int, default=None,
                    help="CPU-bound processes beside us (default: one per usable core)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless busy default ≤ 1.3 × one thread for every workload")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))   # runs the finally/with blocks

    cores = usable_cores()
    n_burn = cores if args.burners is None else args.burners
    info = mc.build_info()
    print(f"CPU: {cpu_name()}; usable cores {cores}; metacore {info['version']}, "
          f"default threads {info['default_threads']}, SIMD {info['simd_active']}; "
          f"load average before {os.getloadavg()[0]:.2f}")
    for name, make in WORKLOADS.items():
        check_same(name, make)

    idle = measure(args.seconds)
    budget = len(WORKLOADS) * (2 * args.seconds + 5) + 30     # burners end by themselves after
    with Burners(n_burn, budget):
        busy = measure(args.seconds)

    print(f"\n{n_burn} CPU-bound processes beside the busy runs; median over rounds, "
          f"~{args.seconds:g} s per workload and condition\n")
    print("| workload | idle, 1 thread | idle, default | default / 1 | busy, 1 thread "
          "| busy, default | default / 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name in WORKLOADS:
        i1, idf, b1, bdf = idle[name]["1"], idle[name]["default"], busy[name]["1"], \
            busy[name]["default"]
        worst = max(worst, bdf / b1)
        print(f"| {name} | {fmt(i1)} | {fmt(idf)} | {idf / i1:.2f} | {fmt(b1)} | {fmt(bdf)} "
              f"| {bdf / b1:.2f} |")
    print(f"\nworst busy default / 1 thread: {worst:.2f} (target ≤ 1.3)")
    if args.check and worst > 1.3:
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; burners stopped", file=sys.stderr)
        sys.exit(130)
