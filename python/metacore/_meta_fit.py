"""The meta-training loop: Python decides what (chunks, validation, progress, stopping), the core
runs each chunk of meta-steps with the GIL released."""

from __future__ import annotations

import numpy as np

from . import _validation
from .data.taskset import TaskSet

_OPT_KINDS = ("sgd", "adam", "adamw")
_OPT_KEYS = ("kind", "lr", "momentum", "nesterov", "betas", "eps", "weight_decay", "clip_norm",
             "schedule")


def optimizer_spec(optimizer) -> dict:
    """The outer optimizer as plain data for the core.

    Accepts an optimizer object of ``metacore.optim`` (anything with a ``spec()`` or ``config()``
    method returning the dict below, or with PyTorch-style attributes ``lr``, ``momentum``,
    ``nesterov``, ``betas``, ``eps``, ``weight_decay`` whose class is named SGD, Adam or AdamW),
    or a dict ``{"kind": "sgd" | "adam" | "adamw", "lr": ..., ...}``.
    """
    if isinstance(optimizer, dict):
        spec = dict(optimizer)
    else:
        for method in ("spec", "config", "to_dict"):
            fn = getattr(optimizer, method, None)
            if callable(fn):
                spec = dict(fn())
                break
        else:
            spec = {"kind": type(optimizer).__name__.lower()}
            for key in _OPT_KEYS[1:]:
                if hasattr(optimizer, key):
                    spec[key] = getattr(optimizer, key)
    kind = str(spec.get("kind", spec.get("name", ""))).lower()
    if kind not in _OPT_KINDS:
        raise TypeError(f"optimizer must be an SGD, Adam or AdamW optimizer (or a dict with "
                        f"kind in {_OPT_KINDS}), got {optimizer!r}")
    out = {"kind": kind}
    for key in _OPT_KEYS[1:]:
        if key in spec and spec[key] is not None:
            out[key] = spec[key]
    if "betas" in out:
        out["betas"] = tuple(float(b) for b in out["betas"])
    return out


def _moments(spec, n, dtype):
    """(m, v) zero buffers the optimizer needs (None where it needs none)."""
    if spec is None:
        return None, None
    if spec["kind"] == "sgd":
        m = np.zeros(n, dtype) if spec.get("momentum", 0.0) else None
        return m, None
    return np.zeros(n, dtype), np.zeros(n, dtype)


def _progress_bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="meta-train", unit="step")


def _validator(learner, validation):
    if validation is None:
        return None
    if isinstance(validation, TaskSet):
        return lambda params: learner.meta_value(params, validation)
    if callable(validation):
        return validation
    raise TypeError(f"validation must be None, a TaskSet or a callable(theta) -> float, "
                    f"got {type(validation).__name__}")


def run_fit(learner, tasks, theta0, *, meta_batch, steps, optimizer, validation, validate_every,
            progress, seed, n_threads, chunk):
    from . import _core
    from .learners import MetaFitResult
    from .data.tasks import SinusoidSource

    params = learner._params(theta0, "theta0").copy()
    meta_batch = _validation.integer("meta_batch", meta_batch, minimum=1)
    steps = _validation.integer("steps", steps, minimum=1)
    seed = _validation.seed("seed", seed)
    chunk = _validation.integer("chunk", chunk, minimum=1)
    threads = _validation.n_threads(n_threads) if n_threads is not None else learner.n_threads
    validate = _validator(learner, validation)
    every = steps if validate_every is None and validate is None else (
        chunk if validate_every is None else _validation.integer("validate_every", validate_every,
                                                             minimum=1))
    spec = learner._outer(optimizer)
    cls = _core.MetaTrainer32 if params.dtype == np.float32 else _core.MetaTrainer64
    kind, inner_lr, inner_steps, first_order = learner._core_args()
    trainer = cls(learner.model.core_net(), kind, inner_lr, inner_steps, first_order, meta_batch,
                  seed, spec, getattr(learner, "outer_lr", 0.0), steps, threads)
    if isinstance(tasks, TaskSet):
        ts = learner._batch(tasks, params.dtype, "tasks")
        if meta_batch > ts.n_tasks:
            raise ValueError(f"meta_batch must be <= the number of tasks ({ts.n_tasks}), "
                             f"got {meta_batch}")
        trainer.sample_from(ts.X, ts.y, ts.offsets, ts.n_support)
    elif isinstance(tasks, SinusoidSource):
        trainer.generate(*tasks._core_args())
    else:
        raise TypeError(f"tasks must be a TaskSet or a task source (e.g. "
                        f"mc.tasks.SinusoidSource()), got {type(tasks).__name__}")
    m, v = _moments(spec, params.shape[0], params.dtype)

    meta_loss, support_loss, history_val = [], [], []
    bar = _progress_bar(steps, progress)
    s = 0
    try:
        while s < steps:
            n = min(chunk, steps - s, every - s % every)
            done, losses, before = trainer.run(params, m, v, s, n)
            meta_loss.append(losses[:done])
            support_loss.append(before[:done])
            if bar is not None:
                bar.update(done)
                if done:
                    bar.set_postfix(meta_loss=f"{float(losses[done - 1]):.4f}")
            if done < n:
                result = MetaFitResult(params, _history(meta_loss, support_loss, history_val))
                err = FloatingPointError(
                    f"the meta-loss or meta-gradient turned non-finite at step {s + done} "
                    f"(loss {float(losses[done])}); training stopped and result.theta holds the "
                    f"parameters before that step")
                err.result = result
                raise err
            s += n
            if validate is not None and (s % every == 0 or s == steps):
                history_val.append((s, float(validate(params))))
    finally:
        if bar is not None:
            bar.close()
    return MetaFitResult(params, _history(meta_loss, support_loss, history_val))


def _history(meta_loss, support_loss, validation):
    cat = (lambda parts: np.concatenate(parts).astype(np.float64) if parts
           else np.zeros(0, np.float64))
    return {"meta_loss": cat(meta_loss), "support_loss": cat(support_loss),
            "validation": list(validation)}
