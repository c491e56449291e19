r"""Implicit MAML (Rajeswaran et al., 2019, eq. 3–7) in plain NumPy, one task at a time, in
float64.

Inner loop (gradient descent on the proximal objective L_s(φ) + (λ/2)‖φ − θ‖²):

    φ_0 = θ,   φ_{j+1} = φ_j − α (∇L_s(φ_j) + λ (φ_j − θ))   (j = 0..k−1),

kept monotone: a step that raises the objective (beyond rounding) is undone and α halved.

Meta-gradient of L_q(φ_k): x = (I + H_s(φ_k)/λ)⁻¹ ∇L_q(φ_k), approximated by ``cg_steps`` steps
of conjugate gradient from x = 0 with the exact Hessian-vector products of ``loss_hvp``; CG stops
early on a zero residual or non-positive curvature pᵀ(I + H/λ)p.
``batch`` is anything with ``X``, ``y``, ``offsets``, ``n_support`` and ``n_tasks`` (a TaskSet).
"""

from __future__ import annotations

import numpy as np

from .net import loss_and_grad, loss_hvp, predict

__all__ = ["imaml_adapt", "imaml_adapt_predict", "imaml_value_and_grad", "conjugate_gradient"]


def imaml_adapt(model, theta, X, y, steps=5, lr=0.01, reg=1.0, slack=16 * 2.0**-52):
    """φ_k: ``steps`` proximal gradient steps from θ on rows (X, y), monotone in the proximal
    objective F(φ) = L(φ) + (λ/2)‖φ − θ‖²: a step that raises F by more than ``slack`` (relative)
    or gives a non-finite loss is undone and the rate halved; one more loss checks the last
    step."""
    theta = np.asarray(theta, dtype=np.float64)
    if steps == 0:
        return theta.copy()
    phi = kept = theta.copy()
    f_kept, direction = 0.0, None
    for j in range(steps + 1):
        loss, g = loss_and_grad(model, phi, X, y)
        f = loss + 0.5 * reg * float(np.sum((phi - theta) ** 2))
        if j > 0 and not f <= f_kept + slack * abs(f_kept):
            phi, lr = kept, lr * 0.5
        elif j < steps:
            f_kept, kept = f, phi
            direction = g + reg * (phi - theta)
        if j == steps:
            return phi
        phi = kept - lr * direction


def imaml_adapt_predict(model, theta, X, y, X_query, steps=5, lr=0.01, reg=1.0):
    """The outputs on X_query of the net after the proximal inner loop."""
    return predict(model, imaml_adapt(model, theta, X, y, steps, lr, reg), X_query)


def conjugate_gradient(matvec, b, steps):
    """x ≈ A⁻¹ b by ``steps`` CG iterations from 0 (A symmetric positive definite, given as
    ``matvec``); stops early on a zero residual or non-positive curvature."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = float(r @ r)
    for _ in range(steps):
        if rr <= 0.0:
            break
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0.0:
            break
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rr_next = float(r @ r)
        p = r + (rr_next / rr) * p
        rr = rr_next
    return x


def imaml_value_and_grad(model, theta, batch, reg=1.0, inner_lr=0.01, inner_steps=5, cg_steps=5):
    """(mean query loss L_q(φ_k) over the batch, mean implicit meta-gradient (P,)), float64."""
    theta = np.asarray(theta, dtype=np.float64)
    loss, grad = 0.0, np.zeros_like(theta)
    T = int(batch.n_tasks)
    for i in range(T):
        a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
        s = a + int(batch.n_support[i])
        Xs, ys, Xq, yq = batch.X[a:s], batch.y[a:s], batch.X[s:b], batch.y[s:b]
        phi = imaml_adapt(model, theta, Xs, ys, inner_steps, inner_lr, reg)
        value, gq = loss_and_grad(model, phi, Xq, yq)

        def matvec(v, phi=phi, Xs=Xs, ys=ys):
            return v + loss_hvp(model, phi, Xs, ys, v) / reg

        loss += value / T
        grad += conjugate_gradient(matvec, gq, cg_steps) / T
    return loss, grad
