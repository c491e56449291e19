"""The train state of any run, as plain data: θ, the optimizer and its moments, α and the
weighting strategy's state, the step counter and the seed (which with the step decide every
random draw), the early-stopping record and what problem it belongs to.
:func:`metacore.save` writes it, :func:`metacore.load` reads it and :func:`metacore.fit` resumes
from it bit-identically."""

from __future__ import annotations

import numpy as np

from .. import _validation

__all__ = ["Checkpoint"]


class Checkpoint:
    """θ and, when it came from :func:`metacore.fit`, everything needed to resume training.

    Attributes: ``theta`` (P,); ``model`` (an MLP or None); ``optimizer`` (or None);
    ``moments`` ({"m": ..., "v": ...}, the optimizer's state); ``weighting`` (or None);
    ``alpha`` (T,) or None (meta-learning: (0,)); ``weighting_state`` (float64) or None;
    ``step`` (updates done); ``seed``; ``best`` (early stopping: {"theta", "score", "step",
    "bad_evals"}) or None; ``problem`` (plain data naming the problem: ``{"kind": "multitask",
    "n_tasks": T}`` or ``{"kind": "meta", "learner": {...}, "meta_batch": B}``); ``info`` (a JSON-serialisable dict of your own, e.g. the CLI's config);
    ``recent_losses`` (meta-learning, float64, or None): the per-step meta-losses since the last
    evaluation on the eval_every grid, which the next evaluation's training loss averages (a
    resumed run continues the mean the uninterrupted run takes).
    """

    recent_losses = None     # for a Checkpoint pickled before it had them

    def __init__(self, theta, model=None, optimizer=None, moments=None, weighting=None,
                 alpha=None, weighting_state=None, step=0, seed=0, best=None, info=None,
                 problem=None, recent_losses=None):
        self.theta = _kept("theta", _validation.theta("theta", theta, None), theta)
        self.model = model
        self.optimizer = optimizer
        self.moments = {k: _array(f"moments[{k!r}]", v) for k, v in (moments or {}).items()}
        self.weighting = weighting
        self.alpha = _array("alpha", alpha)
        self.weighting_state = _array("weighting_state", weighting_state)
        self.step = int(step)
        self.seed = int(seed)
        self.best = None if best is None else dict(best, theta=_array("best['theta']",
                                                                        best.get("theta")))
        self.info = dict(info or {})
        self.problem = dict(problem or {})
        self.recent_losses = _array("recent_losses", recent_losses, np.float64)

    @property
    def resumable(self) -> bool:
        """True when it holds a train state (optimizer, α, step), not just θ."""
        return self.optimizer is not None and self.alpha is not None

    def __repr__(self):
        what = "train state" if self.resumable else "theta"
        kind = self.problem.get("kind", "?")
        return (f"Checkpoint({what}, {kind}, step={self.step}, n_params={self.theta.shape[0]}, "
                f"dtype={self.theta.dtype}, model={self.model!r}, optimizer={self.optimizer!r})")


def _kept(name, arr, source):
    """``arr`` (made of the caller's ``source``) as the checkpoint's own read-only copy."""
    return _validation.frozen(_validation.owned(arr, source))


def _array(name, value, dtype=None):
    """A 1-D float array argument as the checkpoint's own read-only copy (None stays None);
    not checked finite here: :func:`metacore.load` and :func:`metacore.fit` check what they
    read."""
    if value is None:
        return None
    return _kept(name, _validation.float_array(name, value, ndim=1, dtype=dtype, finite=False),
                 value)
