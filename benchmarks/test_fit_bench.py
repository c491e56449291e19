"""mc.fit on workload (a): weighted logistic regression, float64, 256 tasks × 200 rows × 64
features, L2 1e-3, Adam, full batch, default chunk size and eval_every. Reports steps per second and
where fit's wall time goes: Python (target: under 2%), the evaluations (every 100 steps, a
forward pass over all tasks) and the core's chunks of steps; beside it the same steps driven one at a
time from Python and by the NumPy reference.

    PYTHONPATH=python python -m pytest benchmarks/test_fit_bench.py --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref

STEPS = 300


@pytest.fixture(scope="module")
def workload_a():
    ts = mc.tasks.logistic_family(256, n_features=64, n_rows=200, seed=0)
    weights = np.random.default_rng(1).uniform(0.5, 1.5, size=256)
    model = mc.Logistic(64)
    return model, ts, weights / weights.sum(), model.init(seed=0)


@pytest.mark.parametrize("n_threads, batch", [(1, None), (2, None), (1, (32, 64))])
def test_fit(benchmark, seconds, workload_a, n_threads, batch):
    """Full batch (the target), and for scale 32 tasks × 64 rows per step (where the evaluation
    every 100 steps, a pass over all 51,200 rows, is no longer small)."""
    model, ts, weights, theta0 = workload_a
    obj = mc.Objective(model, ts, weights=weights, l2=1e-3, n_threads=n_threads)
    batch_tasks, batch_rows = batch or (None, None)
    steps = STEPS if batch is None else 10 * STEPS
    results = []

    def run():
        results.append(mc.fit(obj, theta0, optimizer=mc.optim.Adam(lr=1e-3), steps=steps,
                              batch_tasks=batch_tasks, batch_rows=batch_rows, progress=False))

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    timed = results[1:] or results    # --benchmark-disable: one untimed call, no warm-up
    python_share = float(np.median([r.overhead for r in timed]))
    eval_share = float(np.median([r.eval_time / r.wall_time for r in timed]))
    outside_chunks = float(np.median([1 - r.core_time / r.wall_time for r in timed]))
    steps_per_sec = steps / seconds("mean")
    benchmark.extra_info.update(steps_per_sec=steps_per_sec, python_share=python_share,
                                eval_share=eval_share, outside_chunks_share=outside_chunks)
    what = "full batch" if batch is None else f"{batch[0]} tasks x {batch[1]} rows"
    print(f"\nfit, {what}, {n_threads} thread(s): {steps_per_sec:.0f} steps/s; of the wall time "
          f"{100 * python_share:.2f}% in Python, {100 * eval_share:.2f}% in the "
          f"{len(timed[0].history.eval_step)} evaluations, "
          f"{100 * outside_chunks:.2f}% outside the chunks of steps")
    assert all(r.steps_run == steps for r in results)
    if batch is None and not benchmark.disabled:   # a timing: not of one cold untimed call
        assert python_share < 0.02


def test_python_loop_over_core_calls(benchmark, seconds, workload_a):
    """The same steps with one core call per gradient and one per update, driven from Python."""
    model, ts, weights, theta0 = workload_a
    obj = mc.Objective(model, ts, weights=weights, l2=1e-3, n_threads=1)
    opt = mc.optim.Adam(lr=1e-3)

    def run():
        theta = theta0.copy()
        state = opt.init_state(theta)
        for t in range(STEPS):
            _, grad = obj.value_and_grad(theta)
            opt.update(theta, grad, state, t)
        return theta

    theta = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    res = mc.fit(obj, theta0, optimizer=opt, steps=STEPS, progress=False)
    assert np.array_equal(theta, res.theta)     # fit is this loop, bit for bit
    print(f"\nPython loop over core calls, 1 thread: "
          f"{STEPS / seconds('mean'):.0f} steps/s")


def test_numpy_reference_loop(benchmark, seconds, workload_a):
    """The pure-NumPy baseline: vectorised objective and the reference Adam step."""
    model, ts, weights, theta0 = workload_a
    opt = mc.optim.Adam(lr=1e-3)
    settings = opt.to_dict()
    steps = 10

    def run():
        theta, state = theta0.copy(), ref.optimizer_init(settings, theta0)
        for t in range(steps):
            _, grad = ref.objective_value_and_grad_vectorized(model, ts, theta, weights=weights,
                                                              l2=1e-3)
            theta, state, _ = ref.optimizer_step(settings, t, theta, grad, state)
        return theta

    theta = benchmark.pedantic(run, rounds=2, iterations=1)
    obj = mc.Objective(model, ts, weights=weights, l2=1e-3)
    res = mc.fit(obj, theta0, optimizer=opt, steps=steps, progress=False)
    np.testing.assert_allclose(theta, res.theta, rtol=1e-9, atol=1e-12)
    print(f"\nNumPy reference loop: {steps / seconds('mean'):.0f} steps/s")
