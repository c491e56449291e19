"""Task weighting matters: four regression tasks share a tanh trunk with per-task heads; their
targets have scales 1, 10 and 1,000, and a fourth (scale 1) is mostly noise. Uniform weighting
spends the trunk on the scale-1,000 task and leaves the scale-1 task near its trivial error.

    PYTHONPATH=python python examples/weighting_demo.py [--steps 1500] [--markdown]

Prints, for every strategy, each task's test MSE divided by its target variance (1.0 = predicting
the mean; the noisy task cannot go below ≈ 0.9), and the α of the last step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import metacore as mc
from metacore import weighting as W

SCALES = (1.0, 10.0, 1000.0, 1.0)
NOISE = (0.0, 0.0, 0.0, 3.0)


def problem(n_rows=200, seed=0):
    """Train and test TaskSets: task i is SCALES[i] · sin(X v_i) (+ noise), the v_i conflicting."""
    rng = np.random.default_rng(seed)
    d = 4
    base = rng.normal(size=d)
    vs = [base, -base + 0.5 * rng.normal(size=d), base + 0.8 * rng.normal(size=d), rng.normal(size=d)]
    sets = []
    for _ in range(2):
        Xs = [rng.normal(size=(n_rows, d)) for _ in SCALES]
        ys = [s * np.sin(X @ v) + n * rng.normal(size=n_rows)
              for X, v, s, n in zip(Xs, vs, SCALES, NOISE)]
        sets.append(mc.TaskSet.from_arrays(Xs, ys))
    return sets


STRATEGIES = {
    "Uniform": W.Uniform(), "EvalDriven(softmax)": W.EvalDriven(temperature=1.0, eval_every=50),
    "EvalDriven(dtp)": W.EvalDriven("dtp", eval_every=50), "DWA": W.DWA(window=20),
    "Uncertainty": W.Uncertainty(lr=0.05), "RLW": W.RLW(), "FAMO": W.FAMO(),
    "GradNorm": W.GradNorm(), "MGDA": W.MGDA(), "MGDA(loss+l2)": W.MGDA(normalization="loss+l2"),
    "PCGrad": W.PCGrad(), "CAGrad": W.CAGrad(), "IMTLG": W.IMTLG(), "NashMTL": W.NashMTL(),
    "AlignedMTL": W.AlignedMTL(), "GradVac": W.GradVac(),
}


def run(steps=1500, markdown=False):
    train, test = problem()
    model = mc.MLP([4, 32, 32, 1], activation="tanh", task_heads=len(SCALES))
    obj = mc.Objective(model, train)
    test_obj = mc.Objective(model, test)
    var = np.array([np.var(test[i][1]) for i in range(test.n_tasks)])
    theta0 = model.init(seed=0, dtype=np.float64)
    rows, histories = [], {}
    for name, w in STRATEGIES.items():
        t0 = time.perf_counter()
        res = mc.fit(obj, theta0, weighting=w, optimizer=mc.optim.Adam(lr=3e-3), steps=steps,
                     progress=False, seed=0, record_task_losses=True)
        dt = time.perf_counter() - t0
        rel = test_obj.task_losses(res.theta) / var
        alpha = res.history.step_weights[-1]
        rows.append((name, rel, alpha / alpha.sum(), dt))
        histories[name] = res.history.step_weights
    head = ["strategy"] + [f"task {i} (×{s:g}{', noisy' if n else ''})"
                           for i, (s, n) in enumerate(zip(SCALES, NOISE))] + ["worst clean", "α (normalised, last step)", "s"]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    else:
        lines.append("  ".join(f"{h:>22}" for h in head))
    for name, rel, alpha, dt in rows:
        cells = [name] + [f"{x:.3f}" for x in rel] + [f"{rel[:3].max():.3f}",
                 "[" + ", ".join(f"{a:.2f}" for a in alpha) + "]", f"{dt:.1f}"]
        lines.append("| " + " | ".join(cells) + " |" if markdown else
                     "  ".join(f"{c:>22}" for c in cells))
    print("\n".join(lines))
    return rows, histories


def plot(histories, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, name in zip(axes, ("DWA", "Uncertainty", "MGDA")):
        a = histories[name]
        a = a / a.sum(axis=1, keepdims=True)
        for i in range(a.shape[1]):
            ax.plot(a[:, i], label=f"task {i} (×{SCALES[i]:g})")
        ax.set_title(f"{name}: α over steps (normalised)")
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--plot", default=None, help="save α over time as this PNG (needs matplotlib)")
    a = p.parse_args()
    _, hist = run(a.steps, a.markdown)
    if a.plot:
        plot(hist, a.plot)
