r"""Baselines the few-shot protocol compares meta-learned θ with.

- *scratch*: a fresh random initialisation, θ = ``model.init(seed)``, fine-tuned on each test
  task's support rows like any other θ.
- *joint*: θ trained on all the training tasks' rows at once, the multi-task objective
  f(θ) = (1/T) Σ_i f_i(θ) (the "pretrained" baseline of Finn et al. 2017), then fine-tuned the
  same way.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import _validation
from ..problems import Objective

__all__ = ["scratch", "joint", "best_lr"]


def scratch(model, *, seed=0, dtype=np.float32):
    """A random initialisation of ``model`` (the "from scratch" baseline)."""
    return model.init(seed=seed, dtype=dtype)


def joint(model, train_tasks, theta0, *, steps=1000, lr=1e-3, weights=None, weighting=None,
          l2=0.0, batch_tasks=None, batch_rows=None, seed=0, progress=False, n_threads=None):
    """θ minimising Σ_i α_i f_i(θ) + (λ/2)‖θ‖² over every row of ``train_tasks`` with
    :func:`metacore.fit` and Adam(lr), from θ0: α = ``weights`` (1/T each by default) or set by
    ``weighting`` (a :mod:`metacore.weighting` strategy); λ = ``l2``; ``batch_tasks`` tasks and
    ``batch_rows`` rows of each per step (all when None, as adaptive strategies need; a
    pre-trained trunk over thousands of images is usually trained on mini-batches of rows).
    ``progress``: True shows a bar named "joint baseline", False none, or the caller's open bar
    (advanced, left open), as :func:`metacore.fit` takes it.
    """
    from .. import optim
    from .. import weighting as _w
    from ..train.fit import fit
    from ..train.loop import progress_bar
    steps = _validation.integer("steps", steps, minimum=1)
    lr = _validation.real("lr", lr, minimum=0.0, min_open=True)
    obj = Objective(model, train_tasks, weights=weights, l2=l2, rows="all", n_threads=n_threads)
    if weighting is None and weights is not None:
        weighting = _w.Fixed(obj.weights)
    # its own bar, named for what it is: fit's would name the multi-task training only
    own = isinstance(progress, (bool, np.bool_))
    bar = progress_bar(bool(progress), steps, f"joint baseline ({obj.n_tasks} tasks pooled)") \
        if own else progress
    try:
        res = fit(obj, theta0, optimizer=optim.Adam(lr=lr), weighting=weighting, steps=steps,
                  batch_tasks=batch_tasks, batch_rows=batch_rows,
                  progress=False if bar is None else bar, seed=seed, eval_every=steps)
    finally:
        if bar is not None and own:
            bar.close()
    return res.theta


def best_lr(model, theta, val_tasks, lrs, *, steps=10, metric="loss", n_threads=None):
    """The rate of ``lrs`` with the best score after ``steps`` steps on ``val_tasks`` (held-out
    tasks other than the test tasks): a baseline fine-tunes at its own best rate, not at the one
    the meta-learner was trained for. ``metric``: "loss" (the lowest mean query loss) or
    "accuracy" (the highest mean query accuracy, classifiers). A rate under which any task
    diverged scores worst (its mean loss is inf, its mean accuracy NaN): it never wins against
    one that did not. ValueError for an empty ``lrs`` or another metric."""
    from .protocol import evaluate
    lrs = [_validation.real(f"lrs[{i}]", v, minimum=0.0, min_open=True) for i, v in enumerate(lrs)]
    if not lrs:
        raise ValueError("lrs must list at least one rate")
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', got {metric!r}")
    reports = [evaluate(model, theta, val_tasks, steps=(steps,), lr=lr, n_threads=n_threads,
                        progress=False) for lr in lrs]
    if metric == "accuracy":
        if reports[0].accuracies is None:
            raise ValueError(f"metric='accuracy' needs a classifier; the model's loss is "
                             f"{model.loss!r}")
        scores = [-r.accuracies[0].mean() for r in reports]
    else:
        scores = [r.losses[0].mean() for r in reports]
    # NaN (a diverged task's accuracy) as +inf: np.argmin would return the first NaN
    scores = np.nan_to_num(scores, nan=np.inf)
    if np.isinf(scores).all():
        warnings.warn(f"best_lr: a task diverged under every rate of {lrs}; returning the "
                      f"first (try smaller rates or fewer steps)", RuntimeWarning, stacklevel=2)
    return lrs[int(np.argmin(scores))]
