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


def rel_err(actual, expected):
    """‖actual − expected‖₂ / ‖expected‖₂ in float64 (the absolute error when expected is 0);
    the shapes must match."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    denom = np.linalg.norm(e)
    return float(np.linalg.norm(a - e) / (denom if denom > 0 else 1.0))


def random_episodes(n_features, n_tasks=3, n_way=3, k_shot=2, q_query=2, seed=0,
                    dtype=np.float64):
    """A TaskSet of random N-way K-shot episodes: N·K support rows (class after class, K each),
    then N·Q query rows of random classes; features standard normal."""
    import metacore as mc

    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for _ in range(n_tasks):
        y = np.concatenate([np.repeat(np.arange(n_way), k_shot),
                            rng.integers(0, n_way, size=n_way * q_query)])
        Xs.append(rng.normal(size=(y.size, n_features)))
        ys.append(y.astype(float))
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_way * k_shot, dtype=dtype)
