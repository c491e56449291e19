"""Threads and processes: metacore inside a multi-threaded or forking service.

1. Eight Python threads calling every public operation at once, on shared and on their own
   inputs, get exactly (bit for bit) the results of serial calls.
2. The long calls release the GIL: while one runs in a thread, another thread keeps running
   Python code (its progress shows no gap as long as the call).
3. After the parent ran multi-threaded calls, forked children compute the same results and do
   not hang (the parent's worker threads do not survive fork; a child starts a pool of its own);
   forkserver and spawn workers give the same results too.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import metacore as mc
from public_calls import LONG_CALLS, PUBLIC_CALLS, problem, same

N_THREADS = 8


# --- 1. many threads, exact serial results ----------------------------------------------------
@pytest.mark.parametrize("core_threads", [1, 2, None])
def test_eight_threads_calling_everything_at_once_get_the_serial_results(core_threads):
    shared = problem(n_tasks=24, rows=(20, 60), hidden=(16,), n_threads=core_threads, seed=1)
    # each thread also has its own problem (other data, θ, dtype and loss)
    own = [problem(loss=("mse", "logistic", "cross_entropy")[i % 3],
                   dtype=(np.float64, np.float32)[i % 2], n_tasks=8, rows=(5, 40),
                   n_threads=core_threads, seed=10 + i) for i in range(N_THREADS)]
    names = sorted(PUBLIC_CALLS)
    serial_shared = {n: PUBLIC_CALLS[n](shared) for n in names}
    serial_own = [{n: PUBLIC_CALLS[n](p) for n in names} for p in own]
    start = threading.Barrier(N_THREADS)

    def worker(i):
        start.wait()
        bad = []
        for rep in range(3):
            order = names[i % len(names):] + names[:i % len(names)]   # threads out of step
            for n in order:
                if not same(PUBLIC_CALLS[n](shared), serial_shared[n]):
                    bad.append(("shared", n, rep))
                if not same(PUBLIC_CALLS[n](own[i]), serial_own[i][n]):
                    bad.append(("own", n, rep))
        return bad

    with ThreadPoolExecutor(N_THREADS) as pool:
        failures = [b for bad in pool.map(worker, range(N_THREADS)) for b in bad]
    assert not failures, failures[:10]


def test_threads_sharing_one_objective_with_different_thetas_get_the_serial_results():
    p = problem(n_tasks=32, rows=(30, 80), hidden=(16,), n_threads=2, seed=2)
    rng = np.random.default_rng(0)
    thetas = [p.theta + 0.1 * rng.normal(size=p.theta.shape) for _ in range(N_THREADS)]
    fresh = mc.Objective(p.model, p.ts, weights=p.obj.weights, l2=p.obj.l2, n_threads=1)
    expected = [(fresh.value_and_grad(t), fresh.task_losses_and_grads(t), fresh.hvp(t, p.v))
                for t in thetas]
    start = threading.Barrier(N_THREADS)

    def worker(i):
        start.wait()
        return [(p.obj.value_and_grad(thetas[i]), p.obj.task_losses_and_grads(thetas[i]),
                 p.obj.hvp(thetas[i], p.v)) for _ in range(5)]

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = list(pool.map(worker, range(N_THREADS)))
    for i, runs in enumerate(results):
        for r in runs:
            assert same(r, expected[i]), i


# --- 2. the GIL is released in long calls -----------------------------------------------------
_LONG = {}


def sized_long_problem(call, minimum=0.06):
    """The problem of the long-call test at the smallest scale (1, 2, 4, ... 16× the tasks and
    query rows) at which one ``call`` takes at least ``minimum`` seconds here: at scale 1 the
    quickest calls took 0.019 s on a fast quiet machine, too short to show anything."""
    for scale in (1, 2, 4, 8, 16):
        if scale not in _LONG:
            p = problem(n_tasks=160 * scale, rows=(200, 300), n_features=32, hidden=(64, 64),
                        n_threads=1, seed=3)
            p.X = np.random.default_rng(0).normal(size=(60_000 * scale, 32))
            _LONG[scale] = p
        p = _LONG[scale]
        call(p)                                          # warm: handles built, pages touched
        t0 = time.perf_counter()
        call(p)
        if time.perf_counter() - t0 >= minimum:
            break
    return p


@pytest.mark.parametrize("name", LONG_CALLS)
def test_a_long_call_lets_other_python_threads_run(name):
    call = PUBLIC_CALLS[name]
    long_problem = sized_long_problem(call)
    spans, stop = [], threading.Event()

    def long_calls():
        for _ in range(3):
            t0 = time.perf_counter()
            call(long_problem)
            spans.append((t0, time.perf_counter()))
        stop.set()

    ticks = []
    worker = threading.Thread(target=long_calls)
    worker.start()
    while not stop.is_set():                             # this thread: plain Python work
        ticks.append(time.perf_counter())
        sum(range(200))
    worker.join()
    ticks = np.array(ticks)
    shortest = min(b - a for a, b in spans)
    assert shortest > 0.02, f"{name} too short ({shortest:.3f} s) to show anything"
    stalls = []
    for a, b in spans:
        inside = ticks[(ticks > a) & (ticks < b)]
        # With the GIL held for the whole call this thread could not tick at all inside it.
        gap = np.diff(np.concatenate([[a], inside, [b]])).max()
        stalls.append((gap / (b - a), gap, b - a, inside.size))
    # the best of three calls, so that a busy machine descheduling this thread cannot fail it
    best = min(stalls)
    assert best[0] < 0.5, (f"{name}: the other thread stalled {best[1]:.3f} s of a "
                           f"{best[2]:.3f} s call ({best[3]} ticks inside)")


# --- 3. processes -----------------------------------------------------------------------------
FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from public_calls import problem, PUBLIC_CALLS, LONG_CALLS, same

    def work(args):
        n_threads, name = args
        p = problem(n_tasks=64, rows=(80, 120), hidden=(16,), n_threads=n_threads, seed=4)
        return name, PUBLIC_CALLS[name](p)

    if __name__ == "__main__":
        method = sys.argv[1]
        # the parent computes first, with a team of 2 (this starts the worker pool)
        jobs = [(k, name) for k in (2, 1, None) for name in LONG_CALLS]
        expected = [work(j) for j in jobs]
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            got = pool.map_async(work, jobs).get(timeout=60)
            got2 = pool.map_async(work, jobs[::-1]).get(timeout=60)[::-1]   # reused workers
        for (n, e), (_, g), (_, g2) in zip(expected, got, got2):
            assert same(e, g) and same(e, g2), n
        if method == "fork":   # a bare fork, and a child of a child
            want = dict(zip(jobs, (r for _, r in expected)))
            pid = os.fork()
            if pid == 0:
                job = (2, "Objective.value_and_grad")
                ok = same(work(job)[1], want[job])
                if ok and os.fork() == 0:
                    job = (2, "Objective.hvp")
                    os._exit(0 if same(work(job)[1], want[job]) else 3)
                os._exit(0 if ok and os.wait()[1] == 0 else 4)
            assert os.waitpid(pid, 0)[1] == 0
        print("ok", method, len(jobs))
""")


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_after_a_multithreaded_parent_compute_the_same_results(method, tmp_path):
    import os
    script = tmp_path / "fork_check.py"
    script.write_text(FORK_SCRIPT.format(tests=os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        proc = subprocess.run([sys.executable, str(script), method], capture_output=True,
                              text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method}: the children hung")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"ok {method}")
