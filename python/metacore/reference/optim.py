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


def optimizer_step(settings, t, theta, grad, state):
    """(θ_{t+1}, new state, ‖g_t‖) from θ_t and g_t: clip, schedule, then the optimizer's rule."""
    theta = np.array(theta)
    g = np.array(grad, dtype=theta.dtype)
    norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    clip = settings["clip_norm"]
    if clip is not None and norm > clip:
        g = g * theta.dtype.type(clip / norm)
    lr = settings["lr"] * schedule_factor(settings["schedule"], t)
    wd = settings["weight_decay"]
    state = {k: v.copy() for k, v in state.items()}
    if settings["kind"] == "sgd":
        d = g + wd * theta
        mu = settings["momentum"]
        if mu > 0:
            state["m"] = mu * state["m"] + d
            d = d + mu * state["m"] if settings["nesterov"] else state["m"]
        return theta - lr * d, state, norm
    b1, b2 = settings["betas"]
    if settings["kind"] == "adamw":
        theta = theta * (1.0 - lr * wd)
        d = g
    else:
        d = g + wd * theta
    state["m"] = b1 * state["m"] + (1 - b1) * d
    state["v"] = b2 * state["v"] + (1 - b2) * d * d
    k = t + 1
    denom = np.sqrt(state["v"]) / math.sqrt(1 - b2 ** k) + settings["eps"]
    return theta - lr / (1 - b1 ** k) * state["m"] / denom, state, norm


def run_optimizer(settings, theta0, grad_fn, steps):
    """θ after ``steps`` updates from θ₀ with gradients ``grad_fn(θ)``; also the list of θ's."""
    theta, state = np.array(theta0), optimizer_init(settings, np.asarray(theta0))
    path = [theta]
    for t in range(steps):
        theta, state, _ = optimizer_step(settings, t, theta, grad_fn(theta), state)
        path.append(theta)
    return theta, path
