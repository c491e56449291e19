"""What :func:`metacore.fit` gives back: one :class:`FitResult` with a typed :class:`History` for
every problem (multi-task or meta-learning), the early-stopping rule, the event callbacks see and
the error a diverged run raises. Every array here is a copy, never a view of a live buffer."""

from __future__ import annotations

import collections

import math
import warnings
from dataclasses import dataclass, field, fields

import numpy as np

from .. import _validation
from .state import Checkpoint

__all__ = ["FitResult", "History", "EarlyStopping", "FitEvent", "FitDivergedError"]


class FitDivergedError(FloatingPointError):
    """The loss, the gradient or the update turned NaN/Inf. ``step`` is the step at which it
    happened, ``task`` the first drawn task whose loss is not finite (or None), and ``result`` the
    :class:`FitResult` of the run up to there: its ``theta`` is the last finite state (after
    ``step`` updates), which can be saved and resumed with other settings."""

    def __init__(self, message, step, task, result):
        super().__init__(message)
        self.step = step
        self.task = task
        self.result = result


@dataclass
class EarlyStopping:
    """Stop when the monitored score has not improved by more than ``min_delta`` for ``patience``
    evaluations in a row. The score is the validation loss when ``fit`` has a validation set, else
    the training loss of the evaluation; the θ with the best score is kept as
    ``FitResult.best_theta``."""

    patience: int
    min_delta: float = 0.0

    def __post_init__(self):
        self.patience = _validation.integer("early_stopping patience", self.patience, minimum=1)
        self.min_delta = _validation.real("early_stopping min_delta", self.min_delta, minimum=0.0)


@dataclass
class FitEvent:
    """What a callback sees after each evaluation. Return True from the callback to stop. Its
    arrays are copies: a callback that changes them changes neither the run nor its history."""

    step: int                  # updates done
    theta: np.ndarray          # a copy of θ after ``step`` updates
    train_loss: float          # multi-task: the full objective f(θ); meta: the mean meta-loss
                               # of the steps since the previous evaluation on the grid
    task_losses: np.ndarray    # (T,) the unweighted f_i (multi-task; (0,) for meta-learning)
    weights: np.ndarray        # (T,) α
    val_loss: float            # mean validation loss, NaN without validation
    best_score: float          # best monitored score so far
    elapsed: float             # seconds since fit started


# Per-step and per-evaluation series, their dtypes, and whether they have a second axis.
_STEP = {"step": np.int64, "objective": np.float64, "grad_norm": np.float64, "lr": np.float64}
_EVAL = {"eval_step": np.int64, "train_loss": np.float64, "val_loss": np.float64,
         "elapsed": np.float64}


def _task_labels(task_names, n):
    """n column labels for per-task series: the given names, else 0..n−1."""
    if task_names is None:
        return [str(i) for i in range(n)]
    names = [str(t) for t in task_names]
    if len(names) != n:
        raise ValueError(f"task_names must hold one name per task ({n}), got {len(names)}")
    return names


def _columns(frame, prefix, values, labels):
    """One column per task, ``prefix[label]``; a label that several tasks share (a subset that
    repeats a task, names given twice) also carries the task's position, ``prefix[A#0]``, so
    that no task's column overwrites another's."""
    labels = [str(label) for label in labels]
    seen = collections.Counter(labels)
    for j, label in enumerate(labels):
        frame[f"{prefix}[{label}#{j}]" if seen[label] > 1 else f"{prefix}[{label}]"] = \
            values[:, j]


@dataclass(repr=False)
class History:
    """The record of one :func:`metacore.fit` call (a resumed run records its own steps and
    evaluations; its first evaluation is at the step it resumed from).

    Per step (n = steps run, all float64 but ``step``):

    - ``step`` (n,) the step index; ``objective`` (n,) the loss the step's gradient belongs to,
      before its update (multi-task: the batch objective f_B(θ_t); meta-learning: the meta-batch's
      mean query loss after adaptation); ``grad_norm`` (n,) ‖∇‖ before clipping; ``lr`` (n,);
    - ``support_loss`` (n,) meta-learning only (else None): the meta-batch's mean support loss
      before adaptation;
    - ``step_task_losses`` (n, T) with NaN for tasks a step did not draw, and ``step_weights``
      (n, T) the α each step used (for the combining weightings, their coefficients β): multi-task
      with ``record_task_losses=True`` only.

    Per evaluation (E of them: at the start, every ``eval_every`` steps, at the end):
    ``eval_step`` (E,), ``train_loss`` (E,) (multi-task: the full objective; meta-learning: the
    mean meta-loss of the steps since the previous evaluation on the eval_every grid, across
    resumes), ``task_losses`` (E, T), ``weights`` (E, T) α,
    ``val_loss`` (E,) (NaN without validation), ``val_task_losses`` (E, T_val) or None,
    ``inner_rates`` (E, P) Meta-SGD's learned inner rates, (E, inner_steps, n_layers) MAML++'s,
    or None, ``elapsed`` (E,) seconds since the call started.
    """

    step: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    eval_step: np.ndarray
    train_loss: np.ndarray
    task_losses: np.ndarray
    weights: np.ndarray
    val_loss: np.ndarray
    elapsed: np.ndarray
    support_loss: np.ndarray | None = None
    val_task_losses: np.ndarray | None = None
    inner_rates: np.ndarray | None = None
    step_task_losses: np.ndarray | None = None
    step_weights: np.ndarray | None = None

    _LEGACY = {"meta_loss": "objective", "support_loss": "support_loss"}

    def __getitem__(self, key):
        """The keys of the deprecated ``learner.fit`` history dict: ``"meta_loss"`` (the
        per-step objective), ``"support_loss"``, ``"validation"`` ((step, value) pairs after the
        first step). Deprecated: use the attributes."""
        if key not in (*self._LEGACY, "validation"):
            raise KeyError(f"{key!r}: History is not a dict; use its attributes (objective, "
                           f"val_loss, ...)")
        warnings.warn(f"history[{key!r}] is deprecated: use history."
                      f"{self._LEGACY.get(key, 'eval_step and .val_loss')}",
                      DeprecationWarning, stacklevel=2)
        if key == "validation":
            return [(int(t), float(v)) for t, v in zip(self.eval_step, self.val_loss) if t > 0]
        return getattr(self, self._LEGACY[key])

    def __repr__(self):
        extra = [f.name for f in fields(self)    # the optional series this run recorded
                 if f.default is None and getattr(self, f.name) is not None]
        return (f"History({self.step.shape[0]} steps, {self.eval_step.shape[0]} evaluations, "
                f"{self.task_losses.shape[1] if self.task_losses.ndim == 2 else 0} tasks"
                + (f"; with {', '.join(extra)})" if extra else ")"))

    def to_dataframe(self, kind="step", task_names=None):
        """A pandas DataFrame of the history (pandas imported here; ImportError naming ``pip
        install pandas`` without it).

        kind="step": one row per step — ``step``, ``objective``, ``grad_norm``, ``lr``,
        ``support_loss`` (meta-learning), and with ``record_task_losses`` the columns
        ``task_loss[<task>]`` and ``weight[<task>]`` (NaN where a step did not draw the task).
        kind="eval": one row per evaluation — ``step`` (the updates done), ``train_loss``,
        ``val_loss``, ``elapsed`` (s), then ``task_loss[<task>]`` and ``weight[<task>]`` (α)
        for multi-task problems and ``val_task_loss[<j>]`` with validation tasks. The learned
        inner rates (``inner_rates``) stay arrays. ``task_names``: one label per task (e.g. the
        TaskSet's ``names``), else 0..T−1.
        """
        kind = _validation.choice("kind", kind, ("step", "eval"))
        pd = _validation.pandas("History.to_dataframe")
        frame = {}
        if kind == "step":
            frame["step"] = np.array(self.step)
            for k in ("objective", "grad_norm", "lr", "support_loss"):
                if getattr(self, k) is not None:
                    frame[k] = np.array(getattr(self, k))
            for prefix, k in (("task_loss", "step_task_losses"), ("weight", "step_weights")):
                a = getattr(self, k)
                if a is not None and a.ndim == 2 and a.shape[1]:
                    _columns(frame, prefix, a, _task_labels(task_names, a.shape[1]))
        else:
            frame["step"] = np.array(self.eval_step)
            for k in ("train_loss", "val_loss", "elapsed"):
                frame[k] = np.array(getattr(self, k))
            for prefix, k in (("task_loss", "task_losses"), ("weight", "weights")):
                a = getattr(self, k)
                if a is not None and a.ndim == 2 and a.shape[1]:
                    _columns(frame, prefix, a, _task_labels(task_names, a.shape[1]))
            v = self.val_task_losses
            if v is not None and v.ndim == 2 and v.shape[1]:
                _columns(frame, "val_task_loss", v, [str(j) for j in range(v.shape[1])])
        return pd.DataFrame(frame)

    def to_arrays(self) -> dict:
        """{name: array} of every series present (None ones left out): what the CLI's
        ``history.npz`` stores."""
        return {f.name: np.array(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_arrays(cls, arrays) -> "History":
        """The history :meth:`to_arrays` gave, with its shapes checked."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(arrays) - names)
        if unknown:
            raise ValueError(f"history: unknown series {unknown}")
        h = cls(**{k: np.array(v) for k, v in arrays.items()})
        n, E = h.step.shape[0], h.eval_step.shape[0]
        for k in ("objective", "grad_norm", "lr", "support_loss"):
            a = getattr(h, k)
            if a is not None and a.shape != (n,):
                raise ValueError(f"history: {k} has shape {a.shape}, expected ({n},)")
        for k in ("train_loss", "val_loss", "elapsed", "task_losses", "weights",
                  "val_task_losses", "inner_rates"):
            a = getattr(h, k)
            if a is not None and a.shape[:1] != (E,):
                raise ValueError(f"history: {k} has {a.shape[0]} rows, expected {E}")
        for k in ("step_task_losses", "step_weights"):
            a = getattr(h, k)
            if a is not None and a.shape[:1] != (n,):
                raise ValueError(f"history: {k} has {a.shape[0]} rows, expected {n}")
        return h


@dataclass(repr=False)
class FitResult:
    """What :func:`metacore.fit` returns, for every problem.

    ``theta`` is the final θ (Meta-SGD: θ and its rates packed); ``best_theta`` the θ with the best
    monitored score (with validation or early stopping; else None). ``history`` is the typed
    :class:`History`. ``stop_reason`` is ``"steps"``, ``"early_stopping"``, ``"callback"``,
    ``"diverged"``, ``"interrupted"`` or ``"error"`` (an exception raised by a callback carries
    the result as ``err.result``). ``wall_time`` covers the whole call, ``core_time`` the
    time inside the core's chunks of steps, ``eval_time`` the time in evaluations; ``overhead``
    is the share of ``wall_time`` spent in neither (Python). ``state`` is the train state as a
    :class:`~metacore.train.state.Checkpoint`: save it with :func:`metacore.save`, resume by
    passing the result (or the loaded checkpoint) to :func:`metacore.fit` as ``start``.
    """

    theta: np.ndarray
    best_theta: np.ndarray | None
    best_step: int | None
    best_score: float | None
    history: History
    weights: np.ndarray
    step: int
    steps_run: int
    stop_reason: str
    wall_time: float
    core_time: float
    eval_time: float
    optimizer: object
    weighting: object
    seed: int
    model: object
    problem: dict = field(repr=False, default_factory=dict)
    moments: dict = field(repr=False, default_factory=dict)
    weighting_state: np.ndarray | None = field(repr=False, default=None)
    bad_evals: int = 0
    best_record: dict | None = field(repr=False, default=None)   # what a resume continues
    # meta-learning: the per-step losses since the last evaluation on the grid (what a resume
    # continues the next evaluation's training-loss mean with)
    recent_losses: np.ndarray | None = field(repr=False, default=None)

    def __repr__(self):
        h = self.history
        kind = self.problem.get("kind", "?") if isinstance(self.problem, dict) else "?"
        seen = np.asarray(h.train_loss)[~np.isnan(h.train_loss)]   # meta: none before step 1
        loss = ""
        if seen.shape[0]:
            loss = (f", train loss {seen[0]:.4g} -> {seen[-1]:.4g}" if seen.shape[0] > 1
                    else f", train loss {seen[-1]:.4g}")
        if h.val_loss.shape[0] and not np.isnan(h.val_loss[-1]):
            loss += f", val loss {h.val_loss[-1]:.4g}"
        best = f", best {self.best_score:.4g} at step {self.best_step}" \
            if self.best_step is not None and self.best_score is not None else ""
        tasks = f", {len(self.weights)} tasks" if len(self.weights) else ""
        return (f"FitResult({kind}{tasks}, {np.asarray(self.theta).shape[0]} params, "
                f"{self.steps_run} steps to step {self.step}, stop_reason={self.stop_reason!r},"
                f"\n          {self.wall_time:.3g} s, {self.steps_per_sec:.4g} steps/s{loss}{best})")

    def to_dataframe(self, kind="step", task_names=None):
        """The history as a pandas DataFrame: :meth:`History.to_dataframe` (``kind="step"``, one
        row per step; ``kind="eval"``, one row per evaluation with per-task losses and α)."""
        return self.history.to_dataframe(kind=kind, task_names=task_names)

    @property
    def overhead(self) -> float:
        return max(0.0, 1.0 - (self.core_time + self.eval_time) / self.wall_time)

    @property
    def steps_per_sec(self) -> float:
        return self.steps_run / self.wall_time if self.wall_time > 0 else math.inf

    @property
    def state(self):
        """The train state (a :class:`~metacore.train.state.Checkpoint`)."""
        return self.checkpoint()

    def checkpoint(self):
        """The train state as a :class:`~metacore.train.state.Checkpoint`."""
        # The early-stopping record, as fit kept it: evaluations on the eval_every grid only.
        # Not best_theta, which may come from the run's last evaluation off the grid: a record
        # made of it would make the resumed run decide otherwise than one that never stopped.
        # (the Checkpoint copies every array: the result's stay the caller's to change)
        return Checkpoint(self.theta, model=self.model, optimizer=self.optimizer,
                          moments=self.moments, weighting=self.weighting, alpha=self.weights,
                          weighting_state=self.weighting_state, step=self.step, seed=self.seed,
                          best=self.best_record, problem=self.problem,
                          recent_losses=self.recent_losses)
