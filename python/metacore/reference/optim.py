"""The optimizers of ``metacore.optim`` written plainly in NumPy: the test oracle of the core's
update equations (float64 unless θ is float32, then float32 element-wise like the core)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["schedule_factor", "optimizer_init", "optimizer_step", "run_optimizer"]


def schedule_factor(schedule, t):
    """s(t) for a schedule given as ``Schedule.to_dict()``."""
    w, s0 = schedule["warmup"], schedule["warmup_start"]
    if t < w:
        return s0 + (1.0 - s0) * t / w
    u = t - w
    if schedule["kind"] == "step":
        return schedule["gamma"] ** (u // schedule["every"])
    if schedule["kind"] == "cosine":
        n, m = schedule["steps"], schedule["min_factor"]
        return m if u >= n else m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * u / n))
    if schedule["kind"] == "linear":
        return max(0.0, 1.0 - u / schedule["steps"])
    return 1.0


def optimizer_init(settings, theta):
    """Zero moments {"m", "v"} for an optimizer given as ``opt.to_dict()``."""
    z = np.zeros_like(theta)
    if settings["kind"] == "sgd":
        return {"m": z.copy()} if settings["momentum"] > 0 else {}
    return {"m": z.copy(), "v": z.copy()}


def _runs(settings, layout, P):
    """[(begin, end, lr, weight_decay)] covering [0, P): the named groups and the base settings
    between them."""
    chosen = sorted((*layout[name], g.get("lr", settings["lr"]),
                     g.get("weight_decay", settings["weight_decay"]))
                    for name, g in settings.get("groups", {}).items())
    runs, at = [], 0
    for begin, end, lr, wd in chosen:
        if begin > at:
            runs.append((at, begin, settings["lr"], settings["weight_decay"]))
        runs.append((begin, end, lr, wd))
        at = end
    if at < P or not runs:
        runs.append((at, P, settings["lr"], settings["weight_decay"]))
    return runs


def optimizer_step(settings, t, theta, grad, state, layout=None):
    """(θ_{t+1}, new state, ‖g_t‖) from θ_t and g_t: clip, schedule, then the optimizer's rule,
    each parameter group (``settings["groups"]``, ranges named by ``layout``) with its own base
    learning rate and weight decay."""
    theta = np.array(theta)
    g = np.array(grad, dtype=theta.dtype)
    norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    clip = settings["clip_norm"]
    if clip is not None and norm > clip:
        g = g * theta.dtype.type(clip / norm)
    factor = schedule_factor(settings["schedule"], t)
    state = {k: v.copy() for k, v in state.items()}
    for b, e, lr, wd in _runs(settings, layout or {}, theta.shape[0]):
        view = {k: v[b:e] for k, v in state.items()}
        theta[b:e] = _rule(settings, t, theta[b:e], g[b:e], view, lr * factor, wd)
    return theta, state, norm


def _rule(settings, t, theta, g, state, lr, wd):
    """The optimizer's rule on a slice: θ after it; the moment views in ``state`` are written."""
    if settings["kind"] == "sgd":
        d = g + wd * theta
        mu = settings["momentum"]
        if mu > 0:
            state["m"][:] = mu * state["m"] + d
            d = d + mu * state["m"] if settings["nesterov"] else state["m"]
        return theta - lr * d
    b1, b2 = settings["betas"]
    if settings["kind"] == "adamw":
        theta = theta * (1.0 - lr * wd)
        d = g
    else:
        d = g + wd * theta
    state["m"][:] = b1 * state["m"] + (1 - b1) * d
    state["v"][:] = b2 * state["v"] + (1 - b2) * d * d
    k = t + 1
    denom = np.sqrt(state["v"]) / math.sqrt(1 - b2 ** k) + settings["eps"]
    return theta - lr / (1 - b1 ** k) * state["m"] / denom


def run_optimizer(settings, theta0, grad_fn, steps, layout=None):
    """θ after ``steps`` updates from θ₀ with gradients ``grad_fn(θ)``; also the list of θ's."""
    theta, state = np.array(theta0), optimizer_init(settings, np.asarray(theta0))
    path = [theta]
    for t in range(steps):
        theta, state, _ = optimizer_step(settings, t, theta, grad_fn(theta), state, layout)
        path.append(theta)
    return theta, path
