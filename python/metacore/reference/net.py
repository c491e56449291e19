"""The dense net in plain NumPy: forward pass, prediction, mean row loss, its gradient by backprop
and its exact Hessian-vector product by forward-over-reverse differentiation.

Notation for a net with layers l = 0..L−1 (L = model.n_layers) on rows X (n, d):

    a_0 = X,   z_l = a_l W_lᵀ + b_l,   a_{l+1} = σ(z_l) for hidden layers (l < L−1),

and the outputs are z_{L−1}: no activation after the output layer. A normalised net (model.norm)
puts h_l = γ_l ⊙ x̂_l + β_l, x̂_l = (z_l − μ)·s, s = 1/√(σ² + ε), ε = 1e-5, between z_l and the
activation of every hidden layer: a_{l+1} = σ(h_l); μ and σ² are means over the rows (axis 0, batch
statistics of this forward pass) or over the units of each row (axis 1, layer). The mean row loss is
L(θ) = (1/n) Σ_r ℓ(z_{L−1,r}, y_r). With per-task heads, task ``task`` runs the shared trunk and
head ``task``; θ entries of the other heads do not enter, so their gradient is zero.

Everything is computed in float64 whatever the input dtype.
"""

from __future__ import annotations

import numpy as np

from .. import _validation
from .losses import row_loss_grads, row_loss_hvps, row_losses, targets

__all__ = ["forward", "predict", "row_losses", "loss_and_grad", "loss_hvp", "output_vjp"]


# --- activations --------------------------------------------------------------------------------
def _act(name, z):
    """σ(z): relu max(z, 0) or tanh."""
    return np.maximum(z, 0.0) if name == "relu" else np.tanh(z)


def _act_d1(name, z):
    """σ'(z): relu 1[z > 0] (0 at the kink), tanh 1 − t²."""
    if name == "relu":
        return (z > 0).astype(np.float64)
    t = np.tanh(z)
    return 1.0 - t * t


def _act_d2(name, z):
    """σ''(z): relu 0 (away from the kink), tanh −2t(1 − t²)."""
    if name == "relu":
        return np.zeros_like(z)
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


# --- argument handling --------------------------------------------------------------------------
def _task(model, task):
    """The head index; without per-task heads every task uses the one output layer."""
    if model.task_heads:
        return _validation.integer("task", task, minimum=0, maximum=model.task_heads - 1)
    return _validation.integer("task", task, minimum=0)


def _vector(name, model, value):
    return _validation.theta(name, value, model.n_params, dtype=np.float64)


def _rows(model, X):
    X = _validation.float_array("X", X, ndim=2, dtype=np.float64)
    if X.shape[1] != model.n_features:
        raise ValueError(f"X must have {model.n_features} columns (the model's n_features), "
                         f"got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X must have at least one row, got 0")
    return X


def _pack(model, task, layer_values, norm_values=()):
    """Scatter per-layer (W-shaped, b-shaped) arrays and per-normalised-layer (γ, β) arrays into
    a (P,) vector, zero elsewhere."""
    out = np.zeros(model.n_params, dtype=np.float64)
    for (w, (o, i), b), (dW, db) in zip(model.layers(task), layer_values):
        out[w:w + o * i] = dW.ravel()
        out[b:b + o] = db
    for (g, b, o), (dg, dbeta) in zip(model.norm_layers(), norm_values):
        out[g:g + o] = dg
        out[b:b + o] = dbeta
    return out


# --- normalisation ------------------------------------------------------------------------------
_EPS = 1e-5


class _Norm:
    """One normalised layer's forward values: x̂ = (z − μ)·s and s = 1/√(σ² + ε), means over
    ``axis`` (0: batch statistics over the rows, 1: layer statistics over a row's units)."""

    def __init__(self, z, gamma, beta, axis):
        self.axis, self.gamma, self.beta = axis, gamma, beta
        c = z - z.mean(axis=axis, keepdims=True)
        self.s = 1.0 / np.sqrt((c * c).mean(axis=axis, keepdims=True) + _EPS)
        self.xh = c * self.s
        self.h = gamma * self.xh + beta

    def mean(self, u):
        return u.mean(axis=self.axis, keepdims=True)

    def project(self, u):
        """P(u) = u − mean(u) − x̂ mean(x̂ u): s·P is the Jacobian of x̂ in z (symmetric)."""
        return u - self.mean(u) - self.xh * self.mean(self.xh * u)

    def backward(self, g):
        """(∂L/∂z, ∂L/∂γ, ∂L/∂β) from g = ∂L/∂h."""
        return self.s * self.project(self.gamma * g), (g * self.xh).sum(axis=0), g.sum(axis=0)


def _norms(model, theta, n_hidden):
    """The (γ, β) pairs of the hidden layers, or Nones without normalisation."""
    pairs = model.unpack_norms(theta)
    return pairs if pairs else [None] * n_hidden


def _axis(model):
    return 0 if model.norm == "batch" else 1


# --- the passes ---------------------------------------------------------------------------------
def _forward(activation, params, X, norms=None, axis=0):
    """(zs, acts, hs, caches): z_l, the activations, the activation inputs h_l (z_l when not
    normalised) and each hidden layer's _Norm (None when not normalised)."""
    zs, acts, hs, caches = [], [X], [], []
    for l, (W, b) in enumerate(params):
        z = acts[l] @ W.T + b
        zs.append(z)
        if l == len(params) - 1:
            acts.append(z)
            break
        cache = None if norms is None or norms[l] is None else _Norm(z, *norms[l], axis)
        caches.append(cache)
        hs.append(z if cache is None else cache.h)
        acts.append(_act(activation, hs[l]))
    return zs, acts, hs, caches


def _backward(activation, params, acts, hs, caches, delta):
    """Backprop from δ = ∂L/∂z_{L−1} (n, k): ∂L/∂W_l = δ_lᵀ a_l, ∂L/∂b_l = Σ_r δ_l,
    g_{l−1} = (δ_l W_l) ⊙ σ'(h_{l−1}) and δ_{l−1} = g_{l−1}, or through the normalisation
    δ_{l−1} = s·P(γ ⊙ g_{l−1}), ∂L/∂γ = Σ_r g ⊙ x̂, ∂L/∂β = Σ_r g. Returns (layer grads, norm grads)."""
    grads = [None] * len(params)
    norm_grads = [None] * len(caches)
    for l in reversed(range(len(params))):
        W, _ = params[l]
        grads[l] = (delta.T @ acts[l], delta.sum(axis=0))
        if l > 0:
            delta = (delta @ W) * _act_d1(activation, hs[l - 1])
            if caches[l - 1] is not None:
                delta, dg, db = caches[l - 1].backward(delta)
                norm_grads[l - 1] = (dg, db)
    return grads, [g for g in norm_grads if g is not None]


def forward(model, theta, X, *, task=0):
    """The forward pass on rows X (n, d).

    Returns ``(zs, acts)``: ``zs[l]`` = z_l = a_l W_lᵀ + b_l (n, fan_out) for every layer l, and
    ``acts`` of length L+1 with ``acts[0]`` = X, ``acts[l+1]`` = σ(z_l) (σ(h_l) when normalised)
    for hidden layers and ``acts[L]`` = z_{L−1} (the outputs; no activation after the output
    layer). With ``model.norm == "batch"`` the statistics are those of the rows of X.
    """
    task = _task(model, task)
    theta = _vector("theta", model, theta)
    params = model.unpack(theta, task)
    norms = _norms(model, theta, len(params) - 1)
    zs, acts, _, _ = _forward(model.activation, params, _rows(model, X), norms, _axis(model))
    return zs, acts


def predict(model, theta, X, *, task=0):
    """The outputs z_{L−1}: (n,) when the net has one output, else (n, k). Raw values for mse,
    logits for logistic and cross_entropy."""
    _, acts = forward(model, theta, X, task=task)
    out = acts[-1]
    return out[:, 0] if model.n_outputs == 1 else out


def weighted_loss_and_grad(model, theta, X, y, row_weights, *, task=0):
    """Σ_r w_r ℓ(z_r, y_r) and its gradient (P,) for per-row weights w (n,), by backprop.

    ``loss_and_grad`` is the case w_r = 1/n; the vectorised objective uses w_r = α_i / n_i.
    """
    task = _task(model, task)
    theta = _vector("theta", model, theta)
    X = _rows(model, X)
    y = targets(model, y, X.shape[0])
    w = _validation.float_array("row_weights", row_weights, ndim=1, dtype=np.float64)
    if w.shape[0] != X.shape[0]:
        raise ValueError(f"row_weights must have {X.shape[0]} entries, got {w.shape[0]}")
    params = model.unpack(theta, task)
    zs, acts, hs, caches = _forward(model.activation, params, X,
                                    _norms(model, theta, len(params) - 1), _axis(model))
    value = float(np.sum(w * row_losses(model, zs[-1], y)))
    delta = w[:, None] * row_loss_grads(model, zs[-1], y)
    return value, _pack(model, task, *_backward(model.activation, params, acts, hs, caches, delta))


def output_vjp(model, theta, X, d_out, *, task=0):
    """∂/∂θ (P,) of Σ_r d_out_r · z_{L−1,r} for given output gradients d_out (n, k): backprop from
    δ = d_out instead of a loss head's (the net's loss is not used)."""
    task = _task(model, task)
    theta = _vector("theta", model, theta)
    params = model.unpack(theta, task)
    X = _rows(model, X)
    d_out = np.asarray(d_out, dtype=np.float64).reshape(X.shape[0], model.n_outputs)
    _, acts, hs, caches = _forward(model.activation, params, X,
                                   _norms(model, theta, len(params) - 1), _axis(model))
    return _pack(model, task, *_backward(model.activation, params, acts, hs, caches, d_out))


def loss_and_grad(model, theta, X, y, *, task=0):
    """L(θ) = (1/n) Σ_r ℓ(z_r, y_r) over rows X (n, d), y, and ∇L (P,) by plain backprop.

    Entries of θ that task ``task`` does not use (other tasks' heads) get gradient 0.
    """
    n = _rows(model, X).shape[0]
    return weighted_loss_and_grad(model, theta, X, y, np.full(n, 1.0 / n), task=task)


def loss_hvp(model, theta, X, y, v, *, task=0):
    """The exact Hessian-vector product ∇²L(θ) v (P,) of the mean row loss, forward-over-reverse.

    Pearlmutter's R-operator: differentiate every quantity of the forward and backward passes in
    the direction v = (V_l, c_l, γ̇_l, β̇_l) (a dot marks the directional derivative).

    Forward tangents:  ȧ_0 = 0,  ż_l = ȧ_l W_lᵀ + a_l V_lᵀ + c_l,  ȧ_{l+1} = σ'(h_l) ⊙ ḣ_l,
                       ḣ_l = ż_l, or when normalised ḣ_l = γ̇ ⊙ x̂ + γ ⊙ x̂' + β̇,  x̂' = s·P(ż).
    Output:            δ = (1/n) ∂ℓ/∂z,  δ̇ = (1/n) (∂²ℓ/∂z²) ż   (row by row).
    Backward tangents: (∇²L v)_{W_l} = δ̇_lᵀ a_l + δ_lᵀ ȧ_l,  (∇²L v)_{b_l} = Σ_r δ̇_l,
                       g = (δ_l W_l) ⊙ σ'(h_{l−1}),
                       ġ = (δ̇_l W_l + δ_l V_l) ⊙ σ'(h_{l−1}) + (δ_l W_l) ⊙ σ''(h_{l−1}) ⊙ ḣ_{l−1},
                       and δ_{l−1}, δ̇_{l−1} = g, ġ, or through the normalisation (means per group,
                       u = γ ⊙ g, u̇ = γ̇ ⊙ g + γ ⊙ ġ, ṡ = −s² mean(x̂ ż)):
                       δ = s·P(u),  δ̇ = ṡ·P(u) + s·(u̇ − mean(u̇) − x̂' mean(x̂ u)
                                                   − x̂ mean(x̂' u + x̂ u̇)),
                       (∇²L v)_γ = Σ_r ġ ⊙ x̂ + g ⊙ x̂',  (∇²L v)_β = Σ_r ġ.
    """
    task = _task(model, task)
    theta = _vector("theta", model, theta)
    v = _vector("v", model, v)
    X = _rows(model, X)
    n = X.shape[0]
    y = targets(model, y, n)
    act = model.activation
    params, tangents = model.unpack(theta, task), model.unpack(v, task)
    n_layers = len(params)
    norm_dots = _norms(model, v, n_layers - 1)
    zs, acts, hs, caches = _forward(act, params, X, _norms(model, theta, n_layers - 1),
                                    _axis(model))

    zdots, adots, hdots, xdots, szs = [], [np.zeros_like(X)], [], [], []
    for l, ((W, _), (V, c)) in enumerate(zip(params, tangents)):
        zdot = adots[l] @ W.T + acts[l] @ V.T + c
        zdots.append(zdot)
        if l == n_layers - 1:
            break
        nc = caches[l]
        if nc is None:
            hdot, xdot, sz = zdot, None, None
        else:
            gdot, bdot = norm_dots[l]
            xdot = nc.s * nc.project(zdot)
            sz = nc.mean(nc.xh * zdot)
            hdot = gdot * nc.xh + nc.gamma * xdot + bdot
        hdots.append(hdot)
        xdots.append(xdot)
        szs.append(sz)
        adots.append(_act_d1(act, hs[l]) * hdot)

    delta = row_loss_grads(model, zs[-1], y) / n
    delta_dot = row_loss_hvps(model, zs[-1], y, zdots[-1]) / n
    hv = [None] * n_layers
    hv_norm = [None] * (n_layers - 1)
    for l in reversed(range(n_layers)):
        W, _ = params[l]
        V, _ = tangents[l]
        hv[l] = (delta_dot.T @ acts[l] + delta.T @ adots[l], delta_dot.sum(axis=0))
        if l > 0:
            back, back_dot = delta @ W, delta_dot @ W + delta @ V
            d1, d2 = _act_d1(act, hs[l - 1]), _act_d2(act, hs[l - 1])
            # the σ'' term: σ'(h) itself moves along the direction v
            delta_dot = back_dot * d1 + back * d2 * hdots[l - 1]
            delta = back * d1
            nc = caches[l - 1]
            if nc is not None:
                g, gd, xd = delta, delta_dot, xdots[l - 1]
                hv_norm[l - 1] = ((gd * nc.xh + g * xd).sum(axis=0), gd.sum(axis=0))
                u = nc.gamma * g
                ud = norm_dots[l - 1][0] * g + nc.gamma * gd
                sdot = -nc.s * nc.s * szs[l - 1]
                delta = nc.s * nc.project(u)
                delta_dot = sdot * nc.project(u) + nc.s * (
                    ud - nc.mean(ud) - xd * nc.mean(nc.xh * u) - nc.xh * nc.mean(xd * u + nc.xh * ud))
    return _pack(model, task, hv, [h for h in hv_norm if h is not None])
