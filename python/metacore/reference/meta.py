"""The meta-learners in plain NumPy, one task at a time, in float64.

For task i with support rows (X_s, y_s) and query rows (X_q, y_q), the inner loop is

    φ_0 = θ,   φ_{j+1} = φ_j − r ⊙ ∇L_s(φ_j)   (j = 0..k−1, no L2),

with r = inner_lr everywhere (MAML, Reptile), learned per-parameter rates (Meta-SGD), or
inner_lr on the output layer and 0 on the hidden layers (ANIL). The meta-loss is the mean over
the batch of L_q(φ_k). Its gradient, by the chain rule through the k steps
(∂φ_{j+1}/∂φ_j = I − diag(r) H_s(φ_j), H_s symmetric):

    g_k = ∇L_q(φ_k),   g_j = g_{j+1} − H_s(φ_j) (r ⊙ g_{j+1}),   ∂L_q/∂θ = g_0,
    ∂L_q/∂r = −Σ_j g_{j+1} ⊙ ∇L_s(φ_j)   (Meta-SGD),

where the Hessian-vector products come from ``loss_hvp``. First order keeps g_j = g_k.
Reptile's direction is θ − φ_k (the update is θ ← θ − ε · mean(θ − φ_k)).

``batch`` is anything with ``X``, ``y``, ``offsets``, ``n_support`` and ``n_tasks`` (a TaskSet).
"""

from __future__ import annotations

import numpy as np

from .. import _validation
from .net import loss_and_grad, loss_hvp

__all__ = ["maml_value_and_grad", "anil_value_and_grad", "metasgd_value_and_grad",
           "reptile_value_and_grad", "adapt", "adapt_predict"]


def _split(batch, i):
    """(X_s, y_s, X_q, y_q) of task i."""
    a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
    s = a + int(batch.n_support[i])
    if s == a or s == b:
        raise ValueError(f"batch: task {i} needs support and query rows, has {s - a} and {b - s}")
    return batch.X[a:s], batch.y[a:s], batch.X[s:b], batch.y[s:b]


def _inner(model, theta, X, y, rates, steps):
    """[φ_0, ..., φ_k] and [∇L_s(φ_0), ..., ∇L_s(φ_{k−1})]."""
    phis, grads = [theta], []
    for _ in range(steps):
        _, g = loss_and_grad(model, phis[-1], X, y)
        grads.append(g)
        phis.append(phis[-1] - rates * g)
    return phis, grads


def _meta(model, theta, batch, rates, steps, first_order):
    """(mean query loss, mean ∂/∂θ, mean ∂/∂r) over the batch."""
    loss, g_theta, g_rates = 0.0, np.zeros_like(theta), np.zeros_like(theta)
    for i in range(int(batch.n_tasks)):
        Xs, ys, Xq, yq = _split(batch, i)
        phis, grads = _inner(model, theta, Xs, ys, rates, steps)
        value, g = loss_and_grad(model, phis[-1], Xq, yq)
        for j in reversed(range(steps)):
            g_rates -= g * grads[j]
            if not first_order:
                g = g - loss_hvp(model, phis[j], Xs, ys, rates * g)
        loss += value
        g_theta += g
    T = int(batch.n_tasks)
    return loss / T, g_theta / T, g_rates / T


def _theta(model, theta):
    return _validation.theta("theta", theta, model.n_params, dtype=np.float64)


def _steps(inner_steps):
    return _validation.integer("inner_steps", inner_steps, minimum=1)


def _lr(inner_lr):
    return _validation.real("inner_lr", inner_lr, minimum=0.0)


def maml_value_and_grad(model, theta, batch, inner_lr=0.01, inner_steps=1, first_order=False):
    """(meta-loss, ∂meta-loss/∂θ) of MAML, exact second order unless ``first_order``."""
    theta = _theta(model, theta)
    rates = np.full(model.n_params, _lr(inner_lr))
    loss, g, _ = _meta(model, theta, batch, rates, _steps(inner_steps), first_order)
    return loss, g


def anil_value_and_grad(model, theta, batch, inner_lr=0.01, inner_steps=1, first_order=False):
    """(meta-loss, gradient) of ANIL: the inner loop adapts the output layer only."""
    theta = _theta(model, theta)
    rates = np.zeros(model.n_params)
    rates[model.n_trunk_params:] = _lr(inner_lr)
    loss, g, _ = _meta(model, theta, batch, rates, _steps(inner_steps), first_order)
    return loss, g


def metasgd_value_and_grad(model, params, batch, inner_steps=1, first_order=False):
    """(meta-loss, gradient (2P,)) of Meta-SGD; params = [θ (P), per-parameter rates r (P)]."""
    P = model.n_params
    params = _validation.theta("params", params, 2 * P, dtype=np.float64)
    theta, rates = params[:P], params[P:]
    loss, g, g_rates = _meta(model, theta, batch, rates, _steps(inner_steps), first_order)
    return loss, np.concatenate([g, g_rates])


def reptile_value_and_grad(model, theta, batch, inner_lr=0.01, inner_steps=1):
    """(mean query loss at φ_k, mean(θ − φ_k)): Reptile's update is θ ← θ − ε · the second."""
    theta = _theta(model, theta)
    rates = np.full(model.n_params, _lr(inner_lr))
    loss, direction = 0.0, np.zeros_like(theta)
    for i in range(int(batch.n_tasks)):
        Xs, ys, Xq, yq = _split(batch, i)
        phis, _ = _inner(model, theta, Xs, ys, rates, _steps(inner_steps))
        loss += loss_and_grad(model, phis[-1], Xq, yq)[0]
        direction += theta - phis[-1]
    T = int(batch.n_tasks)
    return loss / T, direction / T


def adapt(model, theta, X, y, steps=5, lr=0.01):
    """φ_k after ``steps`` SGD steps from θ on (X, y); ``lr`` a scalar or per-parameter rates."""
    theta = _theta(model, theta)
    rates = np.broadcast_to(np.asarray(lr, dtype=np.float64), theta.shape)
    return _inner(model, theta, X, y, rates, _validation.integer("steps", steps, minimum=0))[0][-1]


def adapt_predict(model, theta, X, y, X_query, steps=5, lr=0.01):
    """The adapted net's outputs on X_query."""
    from .net import predict
    return predict(model, adapt(model, theta, X, y, steps=steps, lr=lr), X_query)
