"""Saving and loading θ and the train state as plain data: one ``.npz`` file holding the arrays
and a JSON description (the ``"meta"`` entry, a string array), read back with
``allow_pickle=False``.

A checkpoint holds θ, the model spec, the optimizer (settings and moment buffers), the weighting
(settings, α and its own state), the seed and the step counter, and the early-stopping record.
Passed back to :func:`metacore.fit` as ``theta0`` it resumes the run exactly: a run stopped at step
s and resumed gives bit-identical results to one that never stopped.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .. import _validation
from .. import optim as _optim
from .. import weighting as _weighting
from ..models import MLP

__all__ = ["Checkpoint", "save", "load"]

FORMAT = "metacore-checkpoint"
VERSION = 1


class Checkpoint:
    """θ and, when it came from :func:`metacore.fit`, everything needed to resume training.

    Attributes: ``theta`` (P,); ``model`` (an MLP or None); ``optimizer`` (or None);
    ``moments`` ({"m": ..., "v": ...}, the optimizer's state); ``weighting`` (or None);
    ``alpha`` (T,) or None; ``weighting_state`` (float64) or None; ``step`` (updates done);
    ``seed``; ``best`` (early stopping: {"theta", "score", "step", "bad_evals"}) or None;
    ``info`` (a JSON-serialisable dict of your own).
    """

    def __init__(self, theta, model=None, optimizer=None, moments=None, weighting=None,
                 alpha=None, weighting_state=None, step=0, seed=0, best=None, info=None):
        self.theta = np.asarray(theta)
        self.model = model
        self.optimizer = optimizer
        self.moments = dict(moments or {})
        self.weighting = weighting
        self.alpha = alpha
        self.weighting_state = weighting_state
        self.step = int(step)
        self.seed = int(seed)
        self.best = best
        self.info = dict(info or {})

    @property
    def resumable(self) -> bool:
        """True when it holds a train state (optimizer, α, step), not just θ."""
        return self.optimizer is not None and self.alpha is not None

    def __repr__(self):
        what = "train state" if self.resumable else "theta"
        return (f"Checkpoint({what}, step={self.step}, n_params={self.theta.shape[0]}, "
                f"dtype={self.theta.dtype}, model={self.model!r}, optimizer={self.optimizer!r})")


def save(path, what, *, model=None, info=None):
    """Write ``what`` — a :class:`~metacore.fit.FitResult`, a :class:`Checkpoint` or θ (an array) —
    to ``path`` (written as given; ``.npz`` recommended), atomically: a crash mid-write leaves the
    previous file. ``model`` adds the model spec when saving a bare θ; ``info`` adds your own
    JSON-serialisable metadata."""
    from .fit import FitResult
    if isinstance(what, FitResult):
        ck = what.checkpoint()
    elif isinstance(what, Checkpoint):
        ck = what
    else:
        theta = _validation.float_array("theta", what, ndim=1)
        ck = Checkpoint(theta, model=model)
    if model is not None:
        ck.model = _validation.instance("model", model, MLP, "a metacore model (MLP)")
    if info is not None:
        ck.info = dict(ck.info, **_validation.instance("info", info, dict, "a dict"))
    arrays, meta = _to_plain(ck)
    try:
        meta_text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"info must be JSON-serialisable with finite numbers: {exc}") from None
    arrays["meta"] = np.array(meta_text)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _to_plain(ck):
    arrays = {"theta": ck.theta}
    meta = {"format": FORMAT, "version": VERSION, "dtype": str(ck.theta.dtype),
            "n_params": int(ck.theta.shape[0]), "step": ck.step, "seed": ck.seed,
            "model": ck.model.spec() if ck.model is not None else None,
            "optimizer": ck.optimizer.to_dict() if ck.optimizer is not None else None,
            "weighting": ck.weighting.to_dict() if ck.weighting is not None else None,
            "moments": sorted(ck.moments), "info": ck.info, "best": None}
    for name, buf in ck.moments.items():
        arrays[f"moment_{name}"] = buf
    if ck.alpha is not None:
        arrays["alpha"] = np.asarray(ck.alpha)
        meta["n_tasks"] = int(arrays["alpha"].shape[0])
    if ck.weighting_state is not None:
        arrays["weighting_state"] = np.asarray(ck.weighting_state, dtype=np.float64)
    if ck.best is not None:
        arrays["best_theta"] = ck.best["theta"]
        meta["best"] = {k: v for k, v in ck.best.items() if k != "theta"}
    return arrays, meta


def load(path) -> Checkpoint:
    """Read a file written by :func:`save` (no pickle). A file that is not one, is truncated or
    corrupt, or whose arrays do not match its description raises ValueError saying what is wrong."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path!r} is not a readable metacore checkpoint (.npz): {exc}") from None
    if "meta" not in arrays:
        raise ValueError(f"{path!r} is not a metacore checkpoint: it has no 'meta' entry")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as exc:
        raise ValueError(f"{path!r}: the checkpoint's description is not valid JSON: "
                         f"{exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a metacore checkpoint (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path!r} has checkpoint version {meta.get('version')!r}; this metacore "
                         f"reads version {VERSION}")
    try:
        return _from_plain(arrays, meta)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path!r}: the checkpoint is incomplete or corrupt ({exc!r})") from None


def _expect(arrays, name, shape, dtype):
    if name not in arrays:
        raise ValueError(f"the checkpoint lacks the array {name!r}")
    a = arrays[name]
    if a.shape != shape or a.dtype != dtype:
        raise ValueError(f"the checkpoint's {name!r} has shape {a.shape} and dtype {a.dtype}, its "
                         f"description says {shape} and {dtype}: the file is corrupt")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"the checkpoint's {name!r} holds NaN or Inf: the file is corrupt")
    return a


def _from_plain(arrays, meta):
    dtype = _validation.float_dtype("checkpoint dtype", meta["dtype"])
    P = meta["n_params"]
    theta = _expect(arrays, "theta", (P,), dtype)
    model = MLP.from_spec(meta["model"]) if meta["model"] is not None else None
    if model is not None and model.n_params != P:
        raise ValueError(f"the checkpoint's θ has {P} entries but its model {model!r} has "
                         f"{model.n_params} parameters: the file is corrupt")
    optimizer = _optim.from_dict(meta["optimizer"]) if meta["optimizer"] is not None else None
    weighting = _weighting.from_dict(meta["weighting"]) if meta["weighting"] is not None else None
    moments = {name: _expect(arrays, f"moment_{name}", (P,), dtype) for name in meta["moments"]}
    if optimizer is not None and sorted(optimizer.moments) != sorted(moments):
        raise ValueError(f"the checkpoint's moments {sorted(moments)} do not match its optimizer "
                         f"{optimizer!r}: the file is corrupt")
    alpha = weighting_state = None
    if "n_tasks" in meta:
        alpha = _expect(arrays, "alpha", (meta["n_tasks"],), dtype)
        if "weighting_state" in arrays:
            n = arrays["weighting_state"].shape[0]
            weighting_state = _expect(arrays, "weighting_state", (n,), np.dtype(np.float64))
    best = None
    if meta["best"] is not None:
        best = dict(meta["best"], theta=_expect(arrays, "best_theta", (P,), dtype))
    step = _validation.integer("checkpoint step", meta["step"], minimum=0)
    seed = _validation.integer("checkpoint seed", meta["seed"], minimum=0)
    return Checkpoint(theta, model=model, optimizer=optimizer, moments=moments,
                      weighting=weighting, alpha=alpha, weighting_state=weighting_state, step=step,
                      seed=seed, best=best, info=meta["info"])
