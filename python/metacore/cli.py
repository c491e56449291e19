"""The `metacore` command line."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def demo(args) -> int:
    """The weighted multi-task objective on a built-in task family: the core against the NumPy
    reference (agreement, exact HVP against finite differences, speed), then plain gradient
    descent on Σ α_i f_i."""
    import metacore as mc

    info = mc.build_info()
    print(f"metacore {mc.__version__}  ·  {info['compiler']}  ·  OpenMP "
          f"{'on' if info['openmp'] else 'off'}  ·  SIMD {info['simd_active']}  ·  "
          f"{info['default_threads']} threads")

    ts = mc.tasks.logistic_family(args.tasks, n_features=args.features, n_rows=(100, 300),
                                  relatedness_noise=0.5, seed=args.seed)
    train, test = ts.split_tasks(test_fraction=0.2, seed=args.seed)
    model = mc.Logistic(ts.n_features)
    weights = np.random.default_rng(args.seed).uniform(0.5, 1.5, size=train.n_tasks)
    weights /= weights.sum()
    obj = mc.Objective(model, train, weights=weights, l2=1e-3)
    theta = model.init(seed=args.seed)
    print(f"\n{train.n_tasks} training tasks, {train.n_rows} rows × {ts.n_features} features "
          f"(ragged 100–300 rows per task); {test.n_tasks} held-out tasks")

    value, grad = obj.value_and_grad(theta)
    ref_value, ref_grad = mc.reference.objective_value_and_grad(model, train, theta,
                                                                weights=weights, l2=1e-3)
    rel = np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad)
    print(f"\nf(θ0) = {value:.12f}   reference {ref_value:.12f}   "
          f"relative gradient error {rel:.1e}")

    v = np.random.default_rng(1).normal(size=model.n_params)
    h = 1e-5
    fd = (obj.grad(theta + h * v) - obj.grad(theta - h * v)) / (2 * h)
    hv = obj.hvp(theta, v)
    print(f"Hessian-vector product vs central differences: relative error "
          f"{np.linalg.norm(hv - fd) / np.linalg.norm(fd):.1e}")

    t_core = _best_time(lambda: obj.value_and_grad(theta), 20)
    t_ref = _best_time(lambda: mc.reference.objective_value_and_grad(
        model, train, theta, weights=weights, l2=1e-3), 3)
    print(f"value+gradient: core {t_core * 1e3:.3f} ms, NumPy reference {t_ref * 1e3:.1f} ms "
          f"({t_ref / t_core:.0f}× faster)")

    # Plain gradient descent; the training loop proper (optimizers, chunks in the core) is mc.fit.
    test_obj = mc.Objective(model, test)
    print("\n step   f(θ) train   mean test loss")
    for step in range(args.steps + 1):
        value, grad = obj.value_and_grad(theta)
        if step % max(1, args.steps // 5) == 0:
            print(f"{step:5d}   {value:10.5f}   {test_obj.value(theta):10.5f}")
        theta = theta - args.lr * grad
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="metacore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a short demonstration on a built-in task family")
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as exc:
        print(f"metacore: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
