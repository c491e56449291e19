r"""Prototypical networks (Snell et al., 2017) in plain NumPy, one episode at a time, in float64.

The net f_θ embeds every row (its outputs are the embedding; its loss head is not used). For an
episode with support labels 0..N−1 and query rows (X_q, y_q):

    c_k = mean_{s: y_s = k} f_θ(x_s),   z_qk = −‖f_θ(x_q) − c_k‖²,
    L = (1/n_q) Σ_q (logsumexp_k z_qk − z_{q,y_q}).

Gradient by the chain rule, with G_qk = (softmax(z_q)_k − [k = y_q]) / n_q and
D_qk = f_θ(x_q) − c_k:

    ∂L/∂e_q = −2 Σ_k G_qk D_qk,   ∂L/∂c_k = 2 Σ_q G_qk D_qk,   ∂L/∂e_s = ∂L/∂c_{y_s} / n_{y_s},

then ∂L/∂θ = the net's vector-Jacobian product with those embedding gradients.
``batch`` is anything with ``X``, ``y``, ``offsets``, ``n_support`` and ``n_tasks`` (a TaskSet).
"""

from __future__ import annotations

import numpy as np

from .losses import cross_entropy, softmax
from .net import output_vjp, predict

__all__ = ["prototypes", "prototype_logits", "protonet_episode", "protonet_value_and_grad",
           "protonet_adapt_predict"]


def _embed(model, theta, X):
    E = np.asarray(predict(model, theta, X), dtype=np.float64)
    return E.reshape(E.shape[0], model.n_outputs)


def prototypes(E_support, y_support):
    """(N, D): the mean of the rows of each class 0..N−1, N = 1 + the largest label."""
    E = np.asarray(E_support, dtype=np.float64)
    y = np.asarray(y_support).astype(np.int64)
    return np.stack([E[y == k].mean(axis=0) for k in range(int(y.max()) + 1)])


def prototype_logits(protos, E):
    """(n, N): −‖e_r − c_k‖²."""
    diff = np.asarray(E, dtype=np.float64)[:, None, :] - np.asarray(protos)[None, :, :]
    return -(diff ** 2).sum(axis=2)


def protonet_episode(model, theta, X_support, y_support, X_query, y_query):
    """(episode loss L, ∂L/∂θ (P,)) of one episode."""
    ys = np.asarray(y_support).astype(np.int64)
    yq = np.asarray(y_query).astype(np.int64)
    X = np.vstack([np.asarray(X_support, dtype=np.float64), np.asarray(X_query, dtype=np.float64)])
    E = _embed(model, theta, X)   # one forward pass: with batch norm, the episode's statistics
    Es, Eq = E[:ys.shape[0]], E[ys.shape[0]:]
    C = prototypes(Es, ys)
    D = Eq[:, None, :] - C[None, :, :]                    # (n_q, N, dim)
    z = -(D ** 2).sum(axis=2)
    nq = Eq.shape[0]
    # the shared loss head: (max − z_y) + log Σ and e/Σe, exact at huge logits
    loss = float(np.mean(cross_entropy(z, yq)))
    G = softmax(z)
    G[np.arange(nq), yq] -= 1.0
    G /= nq
    dEq = -2.0 * np.einsum("qk,qkd->qd", G, D)
    dC = 2.0 * np.einsum("qk,qkd->kd", G, D)
    counts = np.bincount(ys, minlength=C.shape[0]).astype(np.float64)
    dEs = dC[ys] / counts[ys][:, None]
    return loss, output_vjp(model, theta, X, np.vstack([dEs, dEq]))


def protonet_value_and_grad(model, theta, batch):
    """(mean episode loss over the batch's tasks, its gradient (P,)), float64."""
    loss, grad = 0.0, np.zeros(model.n_params)
    T = int(batch.n_tasks)
    for i in range(T):
        a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
        s = a + int(batch.n_support[i])
        value, g = protonet_episode(model, theta, batch.X[a:s], batch.y[a:s], batch.X[s:b],
                                    batch.y[s:b])
        loss += value / T
        grad += g / T
    return loss, grad


def protonet_adapt_predict(model, theta, X_support, y_support, X_query):
    """The query logits (n_q, N) against the support rows' prototypes; support and query rows are
    embedded in one forward pass (with batch norm, the episode's statistics)."""
    n_s = np.asarray(X_support).shape[0]
    E = _embed(model, theta, np.vstack([np.asarray(X_support, dtype=np.float64),
                                        np.asarray(X_query, dtype=np.float64)]))
    return prototype_logits(prototypes(E[:n_s], y_support), E[n_s:])
