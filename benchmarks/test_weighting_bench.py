"""Cost per step of every weighting strategy relative to the bare objective (Uniform: one
value-and-gradient pass), at T = 8, 64 and 512 tasks × 20 rows, an MLP 16-64-56-1 (tanh) of
4,785 parameters, float64, Adam, full batch. The gradient-based strategies pay one per-task
gradient pass, O(T²P) for the Gram matrix and their solver (up to O(T³) per iteration for
Nash-MTL's Newton steps and Aligned-MTL's Jacobi sweeps).

    PYTHONPATH=python python -m pytest benchmarks/test_weighting_bench.py --benchmark-columns=mean,rounds
    PYTHONPATH=python python benchmarks/test_weighting_bench.py [T ...]     # the ratio table
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import metacore as mc
from metacore import weighting as W

STRATEGIES = {
    "Uniform": W.Uniform(), "DWA": W.DWA(), "Uncertainty": W.Uncertainty(), "RLW": W.RLW(),
    "FAMO": W.FAMO(), "EvalDriven": W.EvalDriven(eval_every=100), "GradNorm": W.GradNorm(),
    "MGDA": W.MGDA(), "PCGrad": W.PCGrad(), "CAGrad": W.CAGrad(), "IMTLG": W.IMTLG(),
    "NashMTL": W.NashMTL(), "AlignedMTL": W.AlignedMTL(), "GradVac": W.GradVac(),
}


def workload(T):
    rng = np.random.default_rng(T)
    Xs = [rng.normal(size=(20, 16)) for _ in range(T)]
    ys = [np.tanh(X @ rng.normal(size=16)) for X in Xs]
    model = mc.MLP([16, 64, 56, 1], activation="tanh")
    return mc.Objective(model, mc.TaskSet.from_arrays(Xs, ys)), model.init(seed=0)


def steps_for(T):
    return {8: 40, 64: 10}.get(T, 3)


def time_per_step(obj, theta0, w, steps):
    t0 = time.perf_counter()
    mc.fit(obj, theta0, weighting=w, steps=steps, progress=False, eval_every=10_000)
    return (time.perf_counter() - t0) / steps


@pytest.mark.parametrize("T", [8, 64, 512])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_weighting_step(benchmark, T, name):
    obj, theta0 = workload(T)
    steps = steps_for(T)
    benchmark.pedantic(lambda: mc.fit(obj, theta0, weighting=STRATEGIES[name], steps=steps,
                                      progress=False, eval_every=10_000), rounds=1, iterations=1)
    benchmark.extra_info["steps"] = steps


def table(Ts):
    print(f"{'strategy':>12} " + " ".join(f"{f'T={T}':>16}" for T in Ts))
    base, rows = {}, {name: [] for name in STRATEGIES}
    for T in Ts:
        obj, theta0 = workload(T)
        time_per_step(obj, theta0, W.Uniform(), 1)   # warm-up: the first fit also pays page faults
        for name, w in STRATEGIES.items():
            t = time_per_step(obj, theta0, w, steps_for(T))
            base.setdefault(T, t)
            rows[name].append(f"{t * 1e3:8.2f} ms {t / base[T]:5.1f}x")
    for name, cells in rows.items():
        print(f"{name:>12} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    table([int(a) for a in sys.argv[1:]] or [8, 64, 512])
