"""Baselines on the real data sets, to show the readers work end to end. Run:

    PYTHONPATH=python python benchmarks/datasets_baselines.py [DATA]

DATA (default ../shared/data) holds omniglot/images_background_small{1,2}.zip and
school/school.mat (github.com/brendenlake/omniglot; MALSAR's data/school.mat). Prints Markdown.

- Omniglot minimal: nearest class mean on raw pixels (no meta-training: each query image gets the
  label of the closest support-class mean, Euclidean), 600 test episodes, 15 queries per class,
  accuracy with its 95 % confidence interval.
- School: pooled ridge (one least-squares fit on every school's train rows, λ = 1), explained
  variance on the pooled test rows, 10 random per-school 75/25 splits, mean ± sd.
"""

import pathlib
import sys
import time

import numpy as np

import metacore as mc
from metacore.evaluation.statistics import explained_variance


def nearest_class_mean(ts, n_way, k_shot):
    """Accuracy per episode of the nearest support-class mean (rows follow the episode layout:
    support class after class, then the queries class after class)."""
    n, d = ts.n_tasks, ts.n_features
    X = ts.X.astype(np.float64).reshape(n, -1, d)
    means = X[:, :n_way * k_shot].reshape(n, n_way, k_shot, d).mean(axis=2)
    query = X[:, n_way * k_shot:]
    dist = (np.einsum("nqd,nqd->nq", query, query)[:, :, None]
            - 2 * query @ means.transpose(0, 2, 1)
            + np.einsum("nkd,nkd->nk", means, means)[:, None])
    truth = ts.y.reshape(n, -1)[:, n_way * k_shot:]
    return (dist.argmin(axis=2) == truth).mean(axis=1)


def omniglot_table(data):
    t0 = time.perf_counter()
    _, test = mc.datasets.omniglot_minimal(data / "omniglot")
    print(f"Omniglot minimal: read in {time.perf_counter() - t0:.1f} s; meta-test "
          f"{test.n_classes} classes of {test.alphabets}\n")
    print("| episodes | nearest class mean, raw pixels | time |\n|---|---|---|")
    for n_way, k_shot in ((5, 1), (5, 5), (20, 1), (20, 5)):
        t0 = time.perf_counter()
        episodes = test.episodes(600, n_way=n_way, k_shot=k_shot, q_query=15, seed=0)
        mean, ci = mc.mean_ci(nearest_class_mean(episodes, n_way, k_shot))
        print(f"| {n_way}-way {k_shot}-shot | {100 * mean:.1f} ± {100 * ci:.1f} % | "
              f"{time.perf_counter() - t0:.1f} s |")


def school_table(data, lam=1.0):
    t0 = time.perf_counter()
    ts = mc.datasets.school(data / "school" / "school.mat")
    scores = []
    for train, test in mc.datasets.school_splits(ts, repetitions=10, train_fraction=0.75, seed=0):
        X = train.X
        w = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ train.y)
        scores.append(explained_variance(test.y, test.X @ w))
    print(f"\nSchool, pooled ridge (λ = {lam:g}): explained variance "
          f"{100 * np.mean(scores):.1f} ± {100 * np.std(scores, ddof=1):.1f} % "
          f"(10 splits, {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    omniglot_table(root)
    school_table(root)
