"""Episodes drawn from the user's rows labelled by task: the meta-training tasks of the
``Meta*`` estimators.

An episode is one task's rows split into support and query rows. :class:`EpisodeSampler` draws a
pool of fresh episodes (a :class:`~metacore.TaskSet`) for a key; the estimators draw a new pool of
``meta_batch × resample_every`` episodes every ``resample_every`` steps and let the engine take
``meta_batch`` of them per step, so each episode is used about once: the support/query split of a
task is re-drawn at (nearly) every step instead of being fixed once (a fixed split lets MAML
memorise a handful of tasks). A pool, rather than one TaskSet per step, keeps the engine's
chunked loop (the GIL released for many steps at a time) and bounds memory to one pool.

- plain episodes: a task (any with at least 2 rows) chosen uniformly, its rows shuffled, the first
  ``support`` rows (a fraction of the task's rows, or a count) are support, the next ``query`` rows
  (None: all the others) are query; for classifiers the shuffle is stratified by class, so support
  and query keep the task's class proportions;
- N-way K-shot episodes (``n_way`` and ``k_shot``): a task with at least ``n_way`` classes that
  have ``k_shot + 1`` rows or more, ``n_way`` of those classes relabelled 0..n_way−1 in random
  order, ``k_shot`` support and up to ``q_query`` query rows per class.

Draws are keyed on (seed, pool index): the same seed gives the same episodes.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _validation
from ..data.tabular import stratified_order
from ..data.taskset import TaskSet

__all__ = ["EpisodeSampler", "stratified_order", "support_size"]


def support_size(support, n, name="support"):
    """Support rows of a task of ``n`` rows: ``support`` a fraction in (0, 1) of the rows
    (rounded, at least 1 and at most n − 1) or a count (at most n − 1)."""
    support = _validation.scalar(support)
    if isinstance(support, (bool, np.bool_)):
        raise TypeError(f"{name} must be a fraction in (0, 1) or a row count, got {support!r}")
    if _validation.is_integer(support):
        if support < 1:
            raise ValueError(f"{name} must be >= 1 as a row count, got {support}")
        return int(support)
    if isinstance(support, numbers.Real) and 0.0 < support < 1.0:
        return int(min(max(round(support * n), 1), n - 1))
    raise ValueError(f"{name} must be a fraction in (0, 1) or a row count >= 1, got {support!r}")


class EpisodeSampler:
    """Pools of episodes over rows ``X``, targets ``y`` and task codes ``groups`` (0..G−1).

    ``y`` holds class codes (0..k−1, as floats) when ``stratify`` or ``n_way`` is used."""

    def __init__(self, X, y, groups, *, support=0.5, query=None, stratify=False, n_way=None,
                 k_shot=None, q_query=None):
        self.X, self.y = X, y
        self.support, self.query, self.stratify = support, query, stratify
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        self.rows = np.split(order, bounds)
        if n_way is None:
            self.tasks = [i for i, r in enumerate(self.rows) if r.shape[0] >= 2 and (
                not _validation.is_integer(support) or r.shape[0] > support)]
            if not self.tasks:
                need = support + 1 if _validation.is_integer(support) else 2
                most = max(r.shape[0] for r in self.rows)
                raise ValueError(f"no task has enough rows for an episode: support={support!r} "
                                 f"needs at least {need} rows per task, the largest task has "
                                 f"{most} sample(s); give more rows per task or a smaller "
                                 f"support")
        else:
            self.classes = []
            for r in self.rows:
                labels, counts = np.unique(y[r], return_counts=True)
                self.classes.append(labels[counts > k_shot])
            self.tasks = [i for i, c in enumerate(self.classes) if c.shape[0] >= n_way]
            if not self.tasks:
                raise ValueError(f"no task has n_way={n_way} classes with at least "
                                 f"k_shot + 1 = {k_shot + 1} rows each")

    def episode(self, rng, task):
        """(row indices, n_support, targets or None) of one episode of ``task``."""
        rows = self.rows[task]
        if self.n_way is None:
            order = (stratified_order(rng, self.y[rows]) if self.stratify
                     else rng.permutation(rows.shape[0]))
            n = rows.shape[0]
            s = support_size(self.support, n)
            q = n - s if self.query is None else min(self.query, n - s)
            return rows[order[:s + q]], s, None
        classes = rng.choice(self.classes[task], size=self.n_way, replace=False)
        sup, qry, ys, yq = [], [], [], []
        for code, c in enumerate(classes):
            members = rows[self.y[rows] == c]
            members = members[rng.permutation(members.shape[0])]
            take = members[self.k_shot:]
            if self.q_query is not None:
                take = take[:self.q_query]
            sup.append(members[:self.k_shot])
            qry.append(take)
            ys.append(np.full(self.k_shot, code))
            yq.append(np.full(take.shape[0], code))
        idx = np.concatenate(sup + qry)
        return idx, self.n_way * self.k_shot, np.concatenate(ys + yq)

    def draw(self, n_episodes, seed, key):
        """A TaskSet of ``n_episodes`` fresh episodes, keyed on (seed, key)."""
        rng = np.random.default_rng([seed, key])
        picks = rng.choice(len(self.tasks), size=n_episodes)
        idx, n_support, targets = [], [], []
        for p in picks:
            rows, s, t = self.episode(rng, self.tasks[p])
            idx.append(rows)
            n_support.append(s)
            targets.append(t)
        sizes = np.array([r.shape[0] for r in idx], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        rows = np.concatenate(idx)
        y = self.y[rows] if self.n_way is None else np.concatenate(targets).astype(self.y.dtype)
        return TaskSet(self.X[rows], y, offsets, n_support=np.array(n_support), dtype=self.X.dtype)
