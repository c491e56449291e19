"""Prediction through the compiled net."""

from __future__ import annotations

from . import _checks


def predict(model, theta, X, task=0, n_threads=None):
    theta = _checks.theta("theta", theta, model.n_params)
    X = _checks.float_array("X", X, ndim=2, dtype=theta.dtype)
    if X.shape[1] != model.n_features:
        raise ValueError(f"X must have {model.n_features} columns (the model's inputs), "
                         f"got shape {X.shape}")
    n_heads = model.task_heads or 1
    task = _checks.integer("task", task, minimum=0, maximum=n_heads - 1)
    out = model._net().predict(theta, X, task, _checks.n_threads(n_threads))
    return out[:, 0] if model.n_outputs == 1 else out
