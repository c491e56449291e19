"""The loop metacore was started for, with its scikit-learn estimators on real data:

    take several tasks, split each into train and test, initialise θ,
    repeat: train on the tasks (θ ← update of Σ α_i f_i(θ)), test each task,
            adjust α from the evaluation.

The tasks are scikit-learn's bundled digits cut into ten one-vs-rest tasks ("is it digit d?",
balanced). The round loop is written out (warm_start continues θ, Fixed(α) sets the weights,
α = softmax((1 − test accuracy) / τ)); at the end the same adjustment runs inside one fit with
EvalDriven(metric="accuracy") on held-out rows of the training data.

Run: PYTHONPATH=python python examples/seed_loop.py [--rounds 5] [--per-task 60]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import softmax
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from metacore import weighting
from metacore.sklearn import MultiTaskMLPClassifier


def digit_tasks(per_task=None, seed=0):
    """Ten tasks: rows of digit d (label 1) and as many other digits (label 0)."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(seed)
    tasks = []
    for d in range(10):
        pos = np.flatnonzero(y == d)
        if per_task:
            pos = rng.choice(pos, per_task // 2, replace=False)
        neg = rng.choice(np.flatnonzero(y != d), pos.shape[0], replace=False)
        rows = np.concatenate([pos, neg])
        tasks.append((X[rows], (y[rows] == d).astype(int)))
    return tasks


def main(rounds=5, per_task=None, steps_per_round=40, temperature=0.05, seed=0):
    # several tasks, each split into train and test
    split = [train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed + t)
             for t, (X, y) in enumerate(digit_tasks(per_task, seed))]
    T = len(split)
    X_tr = np.concatenate([s[0] for s in split])
    y_tr = np.concatenate([s[2] for s in split])
    g_tr = np.concatenate([np.full(len(s[2]), t) for t, s in enumerate(split)])
    # initialise θ (on the first fit), one output head per task
    est = MultiTaskMLPClassifier((32,), task_heads=True, warm_start=True,
                                 max_iter=steps_per_round, n_threads=1, random_state=seed)
    alpha = np.full(T, 1.0 / T)
    history = []
    print("round  " + " ".join(f"acc{t:<3d}" for t in range(T)) + "   mean")
    for r in range(rounds):
        est.set_params(weighting=weighting.Fixed(alpha))
        est.fit(X_tr, y_tr, groups=g_tr)                         # train, update θ
        acc = np.array([accuracy_score(s[3], est.predict(s[1], groups=np.full(len(s[3]), t)))
                        for t, s in enumerate(split)])           # test each task
        history.append((acc, alpha))
        print(f"{r:>5}  " + " ".join(f"{a:6.3f}" for a in acc) + f"  {acc.mean():.3f}")
        print("    α  " + " ".join(f"{a:6.3f}" for a in alpha))
        alpha = softmax((1.0 - acc) / temperature)               # adjust α from the evaluation
    # the same adjustment inside one fit: α from each task's held-out accuracy every 10 steps
    inside = MultiTaskMLPClassifier(
        (32,), task_heads=True, max_iter=rounds * steps_per_round, n_threads=1,
        weighting=weighting.EvalDriven(metric="accuracy", eval_every=steps_per_round,
                                       temperature=temperature),
        random_state=seed).fit(X_tr, y_tr, groups=g_tr)
    acc = np.array([accuracy_score(s[3], inside.predict(s[1], groups=np.full(len(s[3]), t)))
                    for t, s in enumerate(split)])
    print(f"EvalDriven(metric='accuracy') in one fit: mean test accuracy {acc.mean():.3f}; "
          f"final α " + " ".join(f"{a:.3f}" for a in inside.task_weights_))
    return history, acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-task", type=int, default=None,
                        help="rows per task (default: all of digit d and as many others)")
    args = parser.parse_args()
    main(rounds=args.rounds, per_task=args.per_task)
