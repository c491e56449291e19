"""The three loss heads in plain NumPy, float64, numerically stable.

For one row with outputs z (k,) and target y, the row loss ℓ(z, y) is

- ``"mse"``:           ℓ = (1/k) Σ_j (z_j − y_j)²
- ``"logistic"``:      ℓ = log(1 + exp(−z)) for y = 1,  log(1 + exp(z)) for y = 0   (one logit z)
- ``"cross_entropy"``: ℓ = −log softmax(z)[y] = logsumexp(z) − z_y                 (k logits)

This module gives ℓ, its gradient ∂ℓ/∂z and the product of its Hessian ∂²ℓ/∂z² with a tangent ż,
row by row: everything backprop and the R-operator need from the head.
"""

from __future__ import annotations

import numpy as np

from .. import _validation


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(−|x|)), finite for any finite x."""
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid(x):
    """1 / (1 + exp(−x)), written with exp(−|x|) so that nothing overflows."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def shifted(z):
    """z − max z over the last axis, with 0 where z is the maximum: an overflowed logit
    z_j = max z = +inf then counts exp(0) = 1 (its limit) instead of inf − inf = NaN."""
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return np.where(z == m, 0.0, z - m)


def softmax(z):
    """e_j / Σ e with e = exp(z − max z) over the last axis.

    Not exp(z − logsumexp(z)): logsumexp carries the rounding of max z, so at |z| ~ 1e16 the
    shift max + log Σ rounds back to max and every p_j would be 1.
    """
    e = np.exp(shifted(z))
    return e / np.sum(e, axis=-1, keepdims=True)


def cross_entropy(z, labels):
    """(max z − z_y) + log Σ_j exp(z_j − max z) for each row: never max + log Σ − z_y, whose
    first sum rounds log Σ away at huge logits (ln 2 becomes 0 for z = [1e16, 1e16])."""
    d = shifted(z)
    d_y = d[np.arange(z.shape[0]), labels.astype(np.int64)]
    return -d_y + np.log(np.sum(np.exp(d), axis=-1))


def outputs_2d(model, outputs):
    """The net's outputs as a float64 (n, k) array; (n,) is accepted when k = 1."""
    z = _validation.float_array("outputs", outputs, ndim=(1, 2), dtype=np.float64, finite=False)
    k = model.n_outputs
    if z.ndim == 1:
        if k != 1:
            raise ValueError(f"outputs must have shape (n, {k}), got shape {z.shape}")
        z = z[:, None]
    if z.shape[1] != k:
        raise ValueError(f"outputs must have {k} columns (the model's outputs), "
                         f"got shape {z.shape}")
    return z


def targets(model, y, n):
    """Targets checked against the loss head: (n, k) floats for mse, (n,) labels otherwise.

    Logistic labels must be 0 or 1; cross-entropy labels integers in 0..k−1 (stored as floats).
    """
    y = _validation.float_array("y", y, ndim=(1, 2), dtype=np.float64)
    k = model.n_outputs
    if y.shape[0] != n:
        raise ValueError(f"y must have {n} rows (one per row of X), got {y.shape[0]}")
    if model.loss == "mse":
        if y.ndim == 1:
            if k != 1:
                raise ValueError(f"y must have shape ({n}, {k}) for mse with {k} outputs, "
                                 f"got shape {y.shape}")
            y = y[:, None]
        if y.shape[1] != k:
            raise ValueError(f"y must have {k} columns for mse with {k} outputs, "
                             f"got shape {y.shape}")
        return y
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(f"y must hold one label per row for loss={model.loss!r}, "
                             f"got shape {y.shape}")
        y = y[:, 0]
    if model.loss == "logistic":
        bad = (y != 0.0) & (y != 1.0)
        if bad.any():
            raise ValueError(f"y must hold labels 0 or 1 for loss='logistic', "
                             f"got {y[bad][0]} at row {int(np.argmax(bad))}")
    else:
        bad = (y != np.round(y)) | (y < 0) | (y > k - 1)
        if bad.any():
            raise ValueError(f"y must hold integer labels 0..{k - 1} for loss='cross_entropy', "
                             f"got {y[bad][0]} at row {int(np.argmax(bad))}")
    return y


def _one_hot(labels, k):
    return np.eye(k)[labels.astype(np.int64)]


def row_losses(model, outputs, y):
    """ℓ(z_r, y_r) for every row r: (n,) float64.

    outputs: the net's outputs z, (n, k) or (n,) when k = 1; y: targets as for ``targets``.
    """
    z = outputs_2d(model, outputs)
    y = targets(model, y, z.shape[0])
    if model.loss == "mse":
        return np.mean((z - y) ** 2, axis=1)
    if model.loss == "logistic":
        # with s = ±1 for y = 1/0 both cases are softplus(−s·z): no cancellation at any |z|
        s = 2.0 * y - 1.0
        return softplus(-s * z[:, 0])
    return cross_entropy(z, y)


def row_loss_grads(model, outputs, y):
    """∂ℓ/∂z for every row: (n, k).

    mse: (2/k)(z − y) · logistic: σ(z) − y · cross_entropy: softmax(z) − onehot(y).
    """
    z = outputs_2d(model, outputs)
    y = targets(model, y, z.shape[0])
    k = model.n_outputs
    if model.loss == "mse":
        return (2.0 / k) * (z - y)
    if model.loss == "logistic":
        return sigmoid(z) - y[:, None]
    return softmax(z) - _one_hot(y, k)


def row_loss_hvps(model, outputs, y, tangents):
    """(∂²ℓ/∂z²) ż for every row: (n, k); the Hessian does not depend on y.

    mse: (2/k) ż · logistic: σ(z)(1 − σ(z)) ż · cross_entropy: p ⊙ ż − p (p·ż), p = softmax(z).
    """
    z = outputs_2d(model, outputs)
    targets(model, y, z.shape[0])
    zdot = outputs_2d(model, tangents)
    k = model.n_outputs
    if model.loss == "mse":
        return (2.0 / k) * zdot
    if model.loss == "logistic":
        s = sigmoid(z)
        return s * (1.0 - s) * zdot
    p = softmax(z)
    return p * zdot - p * np.sum(p * zdot, axis=1, keepdims=True)
