"""Loss heads at overflowed logits. A diverging fit can push a net's output to ±inf; the loss
there is a limit, not NaN: 0 when the infinite logit agrees with the label (logistic: +inf for
label 1, −inf for 0; cross-entropy: the label's logit the unique +inf), +inf otherwise. The
kernels wrote softplus(z) − y·z and z − max z, which give inf − inf = NaN there.

Logits are made exactly ±inf by weights near the largest float (two terms of 1e308 overflow their
sum) on generated rows, and checked per task against a direct float64 computation of the net and
the limits above (independent of both implementations) and against ``metacore.reference``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_expit, logsumexp

import metacore as mc
from metacore import reference as ref

BIG = {np.dtype(np.float64): 1e308, np.dtype(np.float32): 3e38}
DTYPES = [np.float64, np.float32]
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def rows(rng, n, dtype):
    """Columns [a, a, c]: a in {−1, 0, 1} picks a logit of −inf, finite or +inf; c ~ N(0, 2)."""
    a = rng.integers(-1, 2, size=n).astype(np.float64)
    c = rng.normal(0.0, 2.0, size=n)
    return np.column_stack([a, a, c]).astype(dtype)


def generated(seed, dtype, n_classes):
    """(X, y, TaskSet): 8–89 generated rows with labels in 0..n_classes−1, cut into 1–5 tasks."""
    rng = np.random.default_rng(seed)
    X = rows(rng, int(rng.integers(8, 90)), dtype)
    y = rng.integers(0, n_classes, size=X.shape[0]).astype(np.float64)
    cuts = np.sort(rng.choice(np.arange(1, X.shape[0]), size=int(rng.integers(0, 5)), replace=False))
    return X, y, mc.TaskSet(X, y.astype(dtype), np.concatenate([[0], cuts, [X.shape[0]]]))


def logistic_limit(z, y):
    """softplus(−s z), s = ±1 for y = 1/0, in float64: SciPy's log-sigmoid, whose limits at ±inf
    are 0 and −inf."""
    s = 2.0 * y - 1.0
    return -log_expit(s * z)


def cross_entropy_limit(Z, y):
    out = np.empty(Z.shape[0])
    for r, (z, c) in enumerate(zip(Z, y.astype(int))):
        top = np.flatnonzero(z == np.inf)
        if top.size:                       # generated with at most one +inf logit per row
            out[r] = 0.0 if top[0] == c else np.inf
        else:
            out[r] = logsumexp(z) - z[c]
    return out


def per_task(row_losses, offsets):
    return np.array([row_losses[a:b].mean() for a, b in zip(offsets[:-1], offsets[1:])])


def check(model, ts, theta, expected_rows):
    obj = mc.Objective(model, ts)
    expected = per_task(expected_rows, ts.offsets)
    dtype = np.dtype(theta.dtype)
    losses, grads = obj.task_losses_and_grads(theta)
    assert not np.isnan(losses).any(), losses
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isinf(losses), ~finite)
    np.testing.assert_allclose(losses[finite], expected[finite], rtol=RTOL[dtype], atol=1e-30)
    if dtype == np.float64:   # the reference computes in float64, where float32's logits are finite
        with np.errstate(over="ignore"):   # its matmul warns as it overflows
            reference = ref.task_losses(model, ts, theta)
        np.testing.assert_array_equal(np.isinf(reference), ~finite)
        np.testing.assert_allclose(reference[finite], expected[finite], rtol=1e-12, atol=1e-30)
    value = obj.value(theta)
    assert value == np.inf if not finite.all() else np.isclose(
        value, np.dot(obj.weights, expected), rtol=RTOL[dtype])
    return grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(6))
def test_logistic_regression_at_infinite_logits(dtype, seed):
    """The one-layer logistic model (the fused logistic-regression kernel): z = big·a + big·a + c.
    Its gradient (σ(z) − y)·x stays finite and equals the reference's."""
    dtype = np.dtype(dtype)
    X, y, ts = generated(seed, dtype, 2)
    model = mc.Logistic(3)
    theta = np.array([BIG[dtype], BIG[dtype], 1.0, 0.0], dtype=dtype)
    with np.errstate(over="ignore"):   # z in the net's dtype: 2·3e38 overflows float32 only there
        z = (X @ theta[:3] + theta[3]).astype(np.float64)
    grads = check(model, ts, theta, logistic_limit(z, y))
    assert np.isfinite(grads).all()
    if dtype == np.float64:
        with np.errstate(over="ignore"):
            ref_grads = ref.task_grads(model, ts, theta)
        np.testing.assert_allclose(grads, ref_grads, rtol=1e-12, atol=1e-14)
    # the direct gradient: mean over a task's rows of (σ(z) − y)·[x, 1]
    dz = np.where(z == np.inf, 1.0, np.where(z == -np.inf, 0.0, 1.0 / (1.0 + np.exp(-z)))) - y
    Xb = np.column_stack([X.astype(np.float64), np.ones(len(z))])
    direct = np.array([(dz[a:b, None] * Xb[a:b]).mean(axis=0)
                       for a, b in zip(ts.offsets[:-1], ts.offsets[1:])])
    np.testing.assert_allclose(grads, direct, rtol=RTOL[dtype], atol=RTOL[dtype])


def signed_hidden(model, theta, dtype):
    """Hidden relu units h1 = relu(2·big·a), h2 = relu(−2·big·a), h3 = relu(c + 10): h1 − h2 is
    +inf, −inf or 0 with a, and h3 − 10 = c (c > −10 in the generated rows)."""
    big = BIG[dtype]
    (W1, b1), (W2, b2) = model.unpack(theta)
    W1[:] = [[big, big, 0.0], [-big, -big, 0.0], [0.0, 0.0, 1.0]]
    b1[:] = [0.0, 0.0, 10.0]
    return W2, b2


def hidden(X, dtype):
    big = dtype.type(BIG[dtype])
    with np.errstate(over="ignore"):   # in the net's dtype: 2·3e38 overflows float32 only there
        a2 = (X[:, 0] * big + X[:, 1] * big).astype(np.float64)
    return np.maximum(np.column_stack([a2, -a2, X[:, 2].astype(np.float64) + 10.0]), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_net_logistic_head_at_infinite_logits(dtype, seed):
    """An MLP with the logistic head (the block kernel of every net pass): z = h1 − h2 + h3 − 10."""
    dtype = np.dtype(dtype)
    X, y, ts = generated(100 + seed, dtype, 2)
    model = mc.MLP([3, 3, 1], loss="logistic")
    theta = np.zeros(model.n_params, dtype=dtype)
    W2, b2 = signed_hidden(model, theta, dtype)
    W2[:] = [[1.0, -1.0, 1.0]]
    b2[:] = [-10.0]
    H = hidden(X, dtype)
    with np.errstate(invalid="ignore"):
        z = np.where(H[:, 0] == np.inf, np.inf, np.where(H[:, 1] == np.inf, -np.inf, H[:, 2] - 10.0))
    check(model, ts, theta, logistic_limit(z, y))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_net_cross_entropy_head_at_infinite_logits(dtype, seed):
    """An MLP with the cross-entropy head over 3 classes, logits (h1 − h2 + c, h2 − h1,
    −h1 − h2 + c): one class at +inf and the others at −inf when a = ±1, all finite when a = 0.
    (No weight is 0 against an infinite unit: 0·inf is NaN in any implementation.)"""
    dtype = np.dtype(dtype)
    X, y, ts = generated(200 + seed, dtype, 3)
    model = mc.MLP([3, 3, 3], loss="cross_entropy")
    theta = np.zeros(model.n_params, dtype=dtype)
    W2, b2 = signed_hidden(model, theta, dtype)
    W2[:] = [[1.0, -1.0, 1.0], [-1.0, 1.0, 0.0], [-1.0, -1.0, 1.0]]
    b2[:] = [-10.0, 0.0, -10.0]
    H = hidden(X, dtype)
    c = H[:, 2] - 10.0
    up, down = H[:, 0] == np.inf, H[:, 1] == np.inf
    Z = np.column_stack([np.where(up, np.inf, np.where(down, -np.inf, c)),
                         np.where(up, -np.inf, np.where(down, np.inf, 0.0)),
                         np.where(up | down, -np.inf, c)])
    check(model, ts, theta, cross_entropy_limit(Z, y))
