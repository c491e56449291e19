r"""The closed-form ridge head of R2D2 (Bertinetto et al., 2019) in plain NumPy, one episode at
a time, in float64.

Parameters are packed [θ (P), log λ, s]. The net f_θ embeds every row; with X_s = [f_θ(X_s), 1]
(a bias column), one-hot support labels Y (n_s × N) and K = X_s X_sᵀ + λI:

    A = K⁻¹ Y,   W = X_sᵀ A,   Z = s · X_q W = s · Q A  (Q = X_q X_sᵀ),
    L = (1/n_q) Σ_q (logsumexp_k Z_qk − Z_{q,y_q}).

Gradient by the chain rule, with G = ∂L/∂Z = (softmax(Z) − onehot(y_q)) / n_q:

    ∂s = ⟨G, QA⟩,  ∂Q = s G Aᵀ,  ∂A = s Qᵀ G,  B = K⁻¹ ∂A,  ∂K = −B Aᵀ,  ∂λ = tr ∂K,
    ∂X_q = ∂Q X_s,  ∂X_s = ∂Qᵀ X_q + (∂K + ∂Kᵀ) X_s,   ∂ log λ = λ ∂λ,

then ∂L/∂θ = the net's vector-Jacobian product with the embedding columns of ∂X_s, ∂X_q.
An episode's support and query rows are embedded in one forward pass (with batch norm, they share
the episode's statistics), as in the core.
``batch`` is anything with ``X``, ``y``, ``offsets``, ``n_support`` and ``n_tasks`` (a TaskSet).
"""

from __future__ import annotations

import numpy as np

from .losses import cross_entropy, softmax
from .net import output_vjp, predict

__all__ = ["ridge_head_weights", "ridge_head_logits", "ridge_head_episode",
           "ridge_head_value_and_grad", "ridge_head_adapt_predict"]


def _embed(model, theta, X):
    E = np.asarray(predict(model, theta, X), dtype=np.float64)
    return E.reshape(E.shape[0], model.n_outputs)


def _episode(model, params, X_support, X_query):
    """(θ, λ, s, the episode's rows X, their embeddings E_s, E_q): support and query rows in one
    forward pass, as the core embeds them (with batch norm they share the episode's statistics)."""
    P = model.n_params
    params = np.asarray(params, dtype=np.float64)
    theta, lam, s = params[:P], float(np.exp(params[P])), float(params[P + 1])
    X = np.vstack([np.asarray(X_support, dtype=np.float64), np.asarray(X_query, dtype=np.float64)])
    E = _embed(model, theta, X)
    ns = np.asarray(X_support).shape[0]
    return theta, lam, s, X, E[:ns], E[ns:]


def _with_bias(E):
    return np.hstack([E, np.ones((E.shape[0], 1))])


def _one_hot(y):
    y = np.asarray(y).reshape(-1).astype(np.int64)
    Y = np.zeros((y.size, int(y.max()) + 1))
    Y[np.arange(y.size), y] = 1.0
    return Y


def ridge_head_weights(E_support, y_support, reg):
    """((D+1), N): X_sᵀ (X_s X_sᵀ + λI)⁻¹ Y, the last row the bias."""
    X = _with_bias(np.asarray(E_support, dtype=np.float64))
    A = np.linalg.solve(X @ X.T + reg * np.eye(X.shape[0]), _one_hot(y_support))
    return X.T @ A


def ridge_head_logits(W, E, scale):
    """(n, N): s · [E, 1] W."""
    return scale * (_with_bias(np.asarray(E, dtype=np.float64)) @ W)


def ridge_head_episode(model, params, X_support, y_support, X_query, y_query):
    """(episode loss L, ∂L/∂[θ, log λ, s] (P + 2,)) of one episode."""
    theta, lam, s, X, Es, Eq = _episode(model, params, X_support, X_query)
    Xs, Xq = _with_bias(Es), _with_bias(Eq)
    Y = _one_hot(y_support)
    yq = np.asarray(y_query).reshape(-1).astype(np.int64)
    K = Xs @ Xs.T + lam * np.eye(Xs.shape[0])
    A = np.linalg.solve(K, Y)
    Q = Xq @ Xs.T
    M = Q @ A
    Z = s * M
    nq = Z.shape[0]
    # the shared loss head: (max − z_y) + log Σ and e/Σe, exact at huge logits
    loss = float(np.mean(cross_entropy(Z, yq)))
    G = softmax(Z)
    G[np.arange(nq), yq] -= 1.0
    G /= nq
    d_scale = float((G * M).sum())
    dQ = s * G @ A.T
    dA = s * Q.T @ G
    B = np.linalg.solve(K, dA)
    dK = -B @ A.T
    d_lam = float(np.trace(dK))
    dXq = dQ @ Xs
    dXs = dQ.T @ Xq + (dK + dK.T) @ Xs
    D = model.n_outputs
    g_theta = output_vjp(model, theta, X, np.vstack([dXs[:, :D], dXq[:, :D]]))
    return loss, np.concatenate([g_theta, [lam * d_lam, d_scale]])


def ridge_head_value_and_grad(model, params, batch):
    """(mean episode loss over the batch's tasks, its gradient (P + 2,)), float64."""
    loss, grad = 0.0, np.zeros(model.n_params + 2)
    T = int(batch.n_tasks)
    for i in range(T):
        a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
        s = a + int(batch.n_support[i])
        value, g = ridge_head_episode(model, params, batch.X[a:s], batch.y[a:s], batch.X[s:b],
                                      batch.y[s:b])
        loss += value / T
        grad += g / T
    return loss, grad


def ridge_head_adapt_predict(model, params, X_support, y_support, X_query):
    """The query logits (n_q, N) under the support rows' ridge head."""
    _, lam, s, _, Es, Eq = _episode(model, params, X_support, X_query)
    return ridge_head_logits(ridge_head_weights(Es, y_support, lam), Eq, s)
