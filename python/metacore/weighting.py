r"""Task weighting: how α in f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖² is set while :func:`metacore.fit`
trains.

A strategy gives the initial α for T tasks and, for adaptive strategies, a state of its own that the
core's train state holds and checkpoints save. The fixed strategies here keep α constant:

- :class:`Uniform`: α_i = 1/T;
- :class:`Fixed`: α as given.

``fit(weighting=None)`` uses the objective's own ``weights``.
"""

from __future__ import annotations

import numpy as np

from . import _checks

__all__ = ["Weighting", "Uniform", "Fixed", "from_dict"]


class Weighting:
    """A rule that sets the task weights α."""

    def initial_alpha(self, n_tasks) -> np.ndarray:
        """α (T,) float64 at step 0."""
        raise NotImplementedError

    def state_size(self, n_tasks) -> int:
        """Length of the strategy's own float64 state in the train state (0 for fixed α)."""
        return 0

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable) that :func:`from_dict` turns back into this strategy."""
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self):
        d = self.to_dict()
        d.pop("name")
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in d.items())})"


class Uniform(Weighting):
    """α_i = 1/T for every task: the plain mean of the task losses."""

    def initial_alpha(self, n_tasks):
        return np.full(n_tasks, 1.0 / n_tasks)

    def to_dict(self):
        return {"name": "Uniform"}


class Fixed(Weighting):
    """α as given: T non-negative finite weights with a positive sum, kept constant (not
    normalised: Σ α_i f_i is the objective as written)."""

    def __init__(self, alpha):
        alpha = _checks.float_array("alpha", alpha, ndim=1, dtype=np.float64)
        if alpha.shape[0] == 0:
            raise ValueError("alpha must have one entry per task, got an empty array")
        if (alpha < 0).any():
            i = int(np.argmax(alpha < 0))
            raise ValueError(f"alpha must be non-negative, got {alpha[i]} for task {i}")
        if alpha.sum() <= 0:
            raise ValueError("alpha must have a positive sum, got all zeros")
        alpha.setflags(write=False)
        self.alpha = alpha

    def initial_alpha(self, n_tasks):
        if self.alpha.shape[0] != n_tasks:
            raise ValueError(f"weighting Fixed(alpha) has {self.alpha.shape[0]} weights but the "
                             f"objective has {n_tasks} tasks")
        return self.alpha.copy()

    def to_dict(self):
        return {"name": "Fixed", "alpha": self.alpha.tolist()}


_BY_NAME = {"Uniform": Uniform, "Fixed": Fixed}


def from_dict(d) -> Weighting:
    """The strategy that ``w.to_dict()`` describes (as read from a checkpoint)."""
    d = dict(_checks.instance("weighting settings", d, dict, "a dict"))
    cls = _BY_NAME.get(d.pop("name", None))
    if cls is None:
        raise ValueError(f"unknown weighting strategy in settings: {d!r}")
    return cls(**d)
