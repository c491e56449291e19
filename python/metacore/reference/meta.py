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

MAML++ (Antoniou et al. 2019, section 4): the rates r_j of step j may differ by step (per-layer,
per-step learned rates, LSLR), and the multi-step loss Σ_{j=1..k} w_j L_q(φ_j) adds w_j ∇L_q(φ_j)
to g_j on the way back (j ≥ 1), with g_k = w_k ∇L_q(φ_k); its rates get
∂/∂r_{j,l} = −Σ_{p∈l} g_{j+1,p} ∇L_s(φ_j)_p. ``msl_weights`` is the annealed weight schedule.

``batch`` is anything with ``X``, ``y``, ``offsets``, ``n_support`` and ``n_tasks`` (a TaskSet).
"""

from __future__ import annotations

import numpy as np

from .. import _validation
from .net import loss_and_grad, loss_hvp

__all__ = ["maml_value_and_grad", "anil_value_and_grad", "metasgd_value_and_grad",
           "reptile_value_and_grad", "mamlpp_value_and_grad", "msl_weights", "adapt",
           "adapt_predict"]


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


def msl_weights(inner_steps, anneal_steps, step):
    """(k,) MAML++'s multi-step-loss weights at outer step ``step`` (w[j−1] weighs L_q(φ_j)):
    t = step / anneal_steps, w_j = max(1/k − t/k, 0.03/k) for j < k,
    w_k = min(1/k + t(k − 1)/k, 1 − 0.03(k − 1)/k) (Antoniou et al. 2019's per-step loss
    importance vector with epochs replaced by outer steps)."""
    k = _validation.integer("inner_steps", inner_steps, minimum=1)
    S = _validation.integer("msl_anneal_steps", anneal_steps, minimum=1)
    t = _validation.integer("step", step, minimum=0) / S
    w = np.full(k, max(1.0 / k - t / k, 0.03 / k))
    w[-1] = min(1.0 / k + t * (k - 1) / k, 1.0 - 0.03 * (k - 1) / k)
    return w


def _layer_slices(model):
    """[slice of layer l's parameters (its W up to the next layer's W)] for l = 0..L−1."""
    starts = [w for w, _, _ in model.layers()] + [model.n_params]
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


def mamlpp_value_and_grad(model, params, batch, inner_steps=1, *, inner_lr=0.01,
                          per_step_rates=None, multi_step_loss=False, msl_anneal_steps=7500,
                          first_order_until=0, step=0, first_order=False):
    """(meta-loss, gradient) of MAML++ at outer step ``step``. With ``per_step_rates="layer"``
    params = [θ (P), r (k × L, step-major)], step j moving layer l by r_{j,l}; else params = θ
    and every rate is ``inner_lr``. With ``multi_step_loss`` the meta-loss is
    Σ_j w_j(step) L_q(φ_j); first order when ``first_order`` or step < first_order_until."""
    k = _steps(inner_steps)
    P, L = model.n_params, model.n_layers
    layered = per_step_rates is not None
    if layered and per_step_rates != "layer":
        raise ValueError(f"per_step_rates must be None or 'layer', got {per_step_rates!r}")
    params = _validation.theta("params", params, P + (k * L if layered else 0), dtype=np.float64)
    theta = params[:P]
    slices = _layer_slices(model)
    rates = np.empty((k, P))
    if layered:
        r = params[P:].reshape(k, L)
        for l, sl in enumerate(slices):
            rates[:, sl] = r[:, l:l + 1]
    else:
        rates[:] = _lr(inner_lr)
    step = _validation.integer("step", step, minimum=0)
    w = (msl_weights(k, msl_anneal_steps, step) if multi_step_loss
         else np.eye(k)[-1])
    fo = bool(first_order) or step < first_order_until
    loss, g_theta, g_r = 0.0, np.zeros(P), np.zeros((k, L))
    for i in range(int(batch.n_tasks)):
        Xs, ys, Xq, yq = _split(batch, i)
        phis, grads = [theta], []
        for j in range(k):
            _, gs = loss_and_grad(model, phis[-1], Xs, ys)
            grads.append(gs)
            phis.append(phis[-1] - rates[j] * gs)
        value, g = loss_and_grad(model, phis[k], Xq, yq)
        loss += w[k - 1] * value
        g = w[k - 1] * g
        for j in reversed(range(k)):
            for l, sl in enumerate(slices):
                g_r[j, l] -= g[sl] @ grads[j][sl]
            if not fo:
                g = g - loss_hvp(model, phis[j], Xs, ys, rates[j] * g)
            if j >= 1 and multi_step_loss:
                vj, gq = loss_and_grad(model, phis[j], Xq, yq)
                loss += w[j - 1] * vj
                g = g + w[j - 1] * gq
        g_theta += g
    T = int(batch.n_tasks)
    grad = np.concatenate([g_theta, g_r.reshape(-1)]) if layered else g_theta
    return loss / T, grad / T


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
    """φ_k after ``steps`` SGD steps from θ on (X, y); ``lr`` a scalar, per-parameter rates (P,),
    or one row of per-parameter rates per step (m, P): step j uses row min(j, m − 1)."""
    theta = _theta(model, theta)
    steps = _validation.integer("steps", steps, minimum=0)
    lr = np.asarray(lr, dtype=np.float64)
    if lr.ndim == 2:
        phi = theta
        for j in range(steps):
            phi = phi - lr[min(j, lr.shape[0] - 1)] * loss_and_grad(model, phi, X, y)[1]
        return phi
    rates = np.broadcast_to(lr, theta.shape)
    return _inner(model, theta, X, y, rates, steps)[0][-1]


def adapt_predict(model, theta, X, y, X_query, steps=5, lr=0.01):
    """The adapted net's outputs on X_query."""
    from .net import predict
    return predict(model, adapt(model, theta, X, y, steps=steps, lr=lr), X_query)
