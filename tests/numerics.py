"""Helpers shared by the numeric tests: random targets that fit a model's loss head, and central
finite differences (independent of both the core and the reference)."""

import numpy as np


def random_targets(rng, model, n):
    """n targets for the model's head: normal values (mse), 0/1 (logistic), classes (cross-entropy)."""
    k = model.n_outputs
    if model.loss == "mse":
        return rng.normal(size=n) if k == 1 else rng.normal(size=(n, k))
    if model.loss == "logistic":
        return rng.integers(0, 2, size=n).astype(np.float64)
    return rng.integers(0, k, size=n).astype(np.float64)


def central_diff(f, theta, h):
    """(f(θ + h e_j) − f(θ − h e_j)) / 2h for every coordinate j, stacked along the last axis
    (a gradient for scalar f, a Jacobian for array-valued f)."""
    cols = []
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        cols.append((np.asarray(f(theta + e)) - np.asarray(f(theta - e))) / (2 * h))
    return np.stack(cols, axis=-1)
