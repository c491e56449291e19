r"""The θ-update loop: :func:`fit` minimises an :class:`~metacore.Objective` with an optimizer.

The compiled core runs chunks of steps with the GIL released; between chunks this module updates
the progress bar, evaluates, calls the callbacks, keeps the best θ for early stopping and writes
checkpoints. Step t (0-based, counted across resumed runs) does:

1. draw its batch — all tasks, or ``batch_tasks`` = k tasks without replacement; all of each
   task's rows, or ``batch_rows`` = m of them without replacement (all of a task with fewer) — from
   a counter-based generator keyed by (seed, t), so the draw is the same for any thread count and
   after a resume;
2. compute f_B(θ_t) = (T/k) Σ_{i∈B} α_i f̂_i(θ_t) + (λ/2)‖θ_t‖² and its gradient, f̂_i the mean
   loss over the drawn rows of task i (an unbiased estimate of f for uniform draws);
3. apply the optimizer's update (:mod:`metacore.optim`) with the learning rate of step t.

The history's per-step ``objective`` is f_B(θ_t): the loss on the step's batch *before* its update.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field

import numpy as np

from .. import _validation
from .. import optim as _optim
from .. import weighting as _weighting
from .loop import Run, Settings
from .checkpoint import Checkpoint, save
from ..problems import Objective
from ..data.taskset import TaskSet

__all__ = ["fit", "FitResult", "History", "EarlyStopping", "FitEvent", "FitDivergedError"]


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
    the full training objective; the θ with the best score is kept as ``FitResult.best_theta``."""

    patience: int
    min_delta: float = 0.0

    def __post_init__(self):
        self.patience = _validation.integer("early_stopping patience", self.patience, minimum=1)
        self.min_delta = _validation.real("early_stopping min_delta", self.min_delta, minimum=0.0)


@dataclass
class FitEvent:
    """What a callback sees after each evaluation. Return True from the callback to stop."""

    step: int                  # updates done
    theta: np.ndarray          # a copy of θ after ``step`` updates
    train_loss: float          # the full objective f(θ) on all tasks and chosen rows
    task_losses: np.ndarray    # (T,) the unweighted f_i(θ)
    weights: np.ndarray        # (T,) α
    val_loss: float            # mean validation loss, NaN without validation
    best_score: float          # best monitored score so far
    elapsed: float             # seconds since fit started


@dataclass
class History:
    """Per step (n = steps run): ``step``, ``objective`` (the batch loss before the update),
    ``grad_norm`` (‖∇‖ before clipping), ``lr``; ``step_task_losses`` (n, T) with NaN for tasks a
    step did not draw, and ``step_weights`` (n, T) the α each step used (for the combining
    weightings, their coefficients β), only with ``record_task_losses=True``.
    Per evaluation (E of them: at the start, every ``eval_every`` steps, at the end):
    ``eval_step``, ``train_loss`` (full objective), ``task_losses`` (E, T), ``weights`` (E, T),
    ``val_loss`` (E,) (NaN without validation) and ``val_task_losses`` (E, T_val) or None."""

    step: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    eval_step: np.ndarray
    train_loss: np.ndarray
    task_losses: np.ndarray
    weights: np.ndarray
    val_loss: np.ndarray
    val_task_losses: np.ndarray | None = None
    step_task_losses: np.ndarray | None = None
    step_weights: np.ndarray | None = None


@dataclass
class FitResult:
    """What :func:`fit` returns. ``theta`` is the final θ; ``best_theta`` the θ with the best
    monitored score (with validation or early stopping; else None). ``wall_time`` covers the whole
    call, ``core_time`` the time inside the core's chunks of steps, ``eval_time`` the time in
    evaluations; ``overhead`` is the share of ``wall_time`` spent in neither (Python). Save it with
    :func:`metacore.save`, resume by passing it (or the loaded checkpoint) to :func:`fit` as
    ``theta0``."""

    theta: np.ndarray
    best_theta: np.ndarray | None
    best_step: int | None
    best_score: float | None
    history: History
    weights: np.ndarray
    step: int
    steps_run: int
    stop_reason: str           # "steps", "early_stopping", "callback" or "diverged"
    wall_time: float
    core_time: float
    eval_time: float
    optimizer: _optim.Optimizer
    weighting: _weighting.Weighting | None
    seed: int
    model: object
    moments: dict = field(repr=False, default_factory=dict)
    weighting_state: np.ndarray | None = field(repr=False, default=None)
    bad_evals: int = 0

    @property
    def overhead(self) -> float:
        return max(0.0, 1.0 - (self.core_time + self.eval_time) / self.wall_time)

    @property
    def steps_per_sec(self) -> float:
        return self.steps_run / self.wall_time if self.wall_time > 0 else math.inf

    def checkpoint(self) -> Checkpoint:
        """The train state as a :class:`~metacore.checkpoint.Checkpoint`."""
        best = None
        if self.best_theta is not None:
            best = {"theta": self.best_theta, "score": self.best_score, "step": self.best_step,
                    "bad_evals": self.bad_evals}
        return Checkpoint(self.theta, model=self.model, optimizer=self.optimizer,
                          moments=self.moments, weighting=self.weighting, alpha=self.weights,
                          weighting_state=self.weighting_state, step=self.step, seed=self.seed,
                          best=best)


# --- argument handling ---------------------------------------------------------------------------
def _early_stopping_arg(value):
    if value is None or isinstance(value, EarlyStopping):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return EarlyStopping(patience=value)
    raise TypeError(f"early_stopping must be None, a patience (int) or an EarlyStopping, got "
                    f"{type(value).__name__}")


def _validation_arg(value, obj):
    if value is None or isinstance(value, Objective):
        if value is not None and value.n_params != obj.n_params:
            raise ValueError(f"validation objective has {value.n_params} parameters, the objective "
                             f"{obj.n_params}")
        return value
    if isinstance(value, TaskSet):
        rows = "query" if (value.n_query > 0).all() else "all"
        return Objective(obj.model, value, rows=rows, n_threads=obj.n_threads)
    raise TypeError(f"validation must be None, a TaskSet or an Objective, got "
                    f"{type(value).__name__}")


def _callbacks_arg(value):
    if callable(value):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"callbacks must be a sequence of callables, got "
                        f"{type(value).__name__}") from None
    for i, cb in enumerate(items):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}] must be callable, got {type(cb).__name__}")
    return items


def _start_arg(obj, theta0, optimizer, weighting, seed):
    """(θ₀, optimizer, weighting, seed, checkpoint to resume or None) from fit's arguments."""
    ck = theta0.checkpoint() if isinstance(theta0, FitResult) else theta0
    if isinstance(ck, Checkpoint):
        if ck.model is not None and ck.model != obj.model:
            raise ValueError(f"theta0: the checkpoint was saved for {ck.model!r}, the objective's "
                             f"model is {obj.model!r}")
        if ck.theta.shape[0] != obj.n_params:
            raise ValueError(f"theta0: the checkpoint's θ has {ck.theta.shape[0]} entries but the "
                             f"objective's model has {obj.n_params} parameters")
        theta0 = ck.theta
    if not isinstance(ck, Checkpoint) or not ck.resumable:   # a fresh start from θ₀
        theta = _validation.theta("theta0", theta0, obj.n_params)
        optimizer = _optim.Adam(lr=1e-3) if optimizer is None else optimizer
        return theta, optimizer, weighting, 0 if seed is None else seed, None
    if ck.alpha.shape[0] != obj.n_tasks:
        raise ValueError(f"theta0: the checkpoint has weights for {ck.alpha.shape[0]} tasks, the "
                         f"objective has {obj.n_tasks}")
    if optimizer is None:
        optimizer = ck.optimizer
    elif sorted(optimizer.moments) != sorted(ck.optimizer.moments):
        raise ValueError(f"optimizer {optimizer!r} keeps moments {list(optimizer.moments)}, the "
                         f"checkpoint's {ck.optimizer!r} kept {list(ck.optimizer.moments)}: resume "
                         f"with a compatible optimizer or leave optimizer=None")
    if weighting is None:
        weighting = ck.weighting
    elif weighting != ck.weighting:     # α and the strategy's state come from the checkpoint
        raise ValueError(f"weighting {weighting!r} differs from the checkpoint's {ck.weighting!r}; "
                         f"leave weighting=None to resume")
    return ck.theta, optimizer, weighting, ck.seed if seed is None else seed, ck


def fit(obj, theta0, *, optimizer=None, weighting=None, steps=1000, batch_tasks=None,
        batch_rows=None, validation=None, eval_every=100, early_stopping=None, callbacks=(),
        progress=True, seed=None, n_threads=None, chunk_size=None, checkpoint=None,
        checkpoint_every=None, record_task_losses=False, backend=None) -> FitResult:
    r"""Minimise ``obj`` from ``theta0`` for ``steps`` optimizer steps.

    Parameters
    ----------
    obj : Objective
        f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖² over its tasks and rows (its ``l2`` and ``rows`` apply).
    theta0 : array-like (P,), FitResult or Checkpoint
        The start θ (its dtype, float32 or float64, decides the working dtype), or a finished run
        or a loaded checkpoint to resume: θ, the optimizer and its moments, α, the weighting state,
        the seed and the step counter continue from it, bit-identically to a run that never
        stopped (given the same objective, ``batch_tasks`` and ``batch_rows``).
    optimizer : metacore.optim.Optimizer or None
        None: ``Adam(lr=1e-3)``, or the checkpoint's when resuming (another optimizer with the same
        moment buffers may replace it, e.g. a lower lr after a divergence).
    weighting : metacore.weighting.Weighting or None
        How α is set: None uses ``obj.weights`` (1/T each by default); ``Uniform()``, ``Fixed(α)``,
        or an adaptive strategy of :mod:`metacore.weighting` (``DWA()``, ``MGDA()``, ...), run by
        the core at every step; adaptive ones (all but EvalDriven) need batch_tasks and
        batch_rows None.
    steps : int >= 1
        Optimizer steps to run in this call.
    batch_tasks : int in [1, T] or None
        Tasks drawn per step (without replacement); None: all tasks every step.
    batch_rows : int >= 1 or None
        Rows drawn per drawn task per step (without replacement, from its chosen rows; a task with
        fewer uses all); None: all rows.
    validation : TaskSet, Objective or None
        Evaluated every ``eval_every`` steps: a TaskSet gives the mean over its tasks of the query
        loss (all rows if some task has no query rows), unweighted, without L2.
    eval_every : int >= 1
        Steps between evaluations (history, validation, callbacks, early stopping, checkpoints).
    early_stopping : int, EarlyStopping or None
        Patience in evaluations; monitors the validation loss, else the full training objective.
    callbacks : sequence of callables
        ``cb(event: FitEvent)`` after each evaluation; returning True stops the run.
    progress : bool
        Show a tqdm progress bar when tqdm is installed (silently none otherwise).
    seed : int >= 0 or None
        Seeds the batch draws (None: 0, or the checkpoint's when resuming).
    n_threads : int or None
        None: the objective's setting. Results are bit-identical for any thread count.
    chunk_size : int >= 1 or None
        Most steps per core call; None adapts it to about 0.25 s per call.
    checkpoint : path or None
        Where to save the train state (at every ``checkpoint_every`` steps, at the end, and on
        divergence — always a finite state), atomically.
    checkpoint_every : int >= 1 or None
        Steps between checkpoints; None: ``eval_every``.
    record_task_losses : bool
        Keep every step's per-task batch losses in ``history.step_task_losses``.
    backend : None, metacore.distributed.Local or metacore.distributed.RayBackend
        Where f and ∇f are computed: None/``Local()`` here; a ``RayBackend`` on Ray actors that
        each hold a shard of the tasks, giving the same θ bit for bit (full-batch steps only:
        ``batch_tasks`` and ``batch_rows`` must be None).

    Returns
    -------
    FitResult

    Raises
    ------
    FitDivergedError
        When the loss, gradient or update turns NaN/Inf; names the step (and the task), and carries
        the result up to the last finite state.
    """
    if not isinstance(obj, Objective):
        raise TypeError(f"obj must be a metacore Objective, got {type(obj).__name__}")
    if optimizer is not None:
        _validation.instance("optimizer", optimizer, _optim.Optimizer,
                         "a metacore.optim optimizer (SGD, Adam, AdamW) or None")
    if weighting is not None:
        _validation.instance("weighting", weighting, _weighting.Weighting,
                         "a metacore.weighting strategy (Uniform, DWA, MGDA, ...) or None")
    if seed is not None:
        seed = _validation.integer("seed", seed, minimum=0, maximum=2**64 - 1)
    theta, optimizer, weighting, seed, ck = _start_arg(obj, theta0, optimizer, weighting, seed)
    steps = _validation.integer("steps", steps, minimum=1)
    T = obj.n_tasks
    batch_tasks = _validation.optional_integer("batch_tasks", batch_tasks, minimum=1)
    if batch_tasks is not None and batch_tasks > T:
        raise ValueError(f"batch_tasks must be <= the number of tasks ({T}), got {batch_tasks}")
    batch_rows = _validation.optional_integer("batch_rows", batch_rows, minimum=1)
    if (weighting is not None and weighting.state_size(T) > 0 and
            not isinstance(weighting, _weighting.EvalDriven) or
            isinstance(weighting, (_weighting.RLW, _weighting.PCGrad, _weighting.MGDA,
                                   _weighting.CAGrad, _weighting.IMTLG, _weighting.NashMTL,
                                   _weighting.AlignedMTL))) and \
            (batch_tasks is not None or batch_rows is not None):
        raise ValueError(f"weighting {weighting!r} needs every task and row at each step: "
                         f"batch_tasks and batch_rows must be None, got {batch_tasks} and "
                         f"{batch_rows}")
    eval_every = _validation.integer("eval_every", eval_every, minimum=1)
    stopper = _early_stopping_arg(early_stopping)
    callbacks = _callbacks_arg(callbacks)
    progress = _validation.boolean("progress", progress)
    threads = _validation.n_threads(n_threads) if n_threads is not None else obj.n_threads
    chunk_size = _validation.optional_integer("chunk_size", chunk_size, minimum=1)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
    checkpoint_every = _validation.optional_integer("checkpoint_every", checkpoint_every, minimum=1)
    checkpoint_every = checkpoint_every or eval_every
    record_task_losses = _validation.boolean("record_task_losses", record_task_losses)
    val_obj = _validation_arg(validation, obj)
    from .backends import backend_arg
    backend = backend_arg(backend)
    if backend is not None and (batch_tasks is not None or batch_rows is not None):
        raise ValueError("backend=RayBackend runs full-batch steps only: batch_tasks and "
                         "batch_rows must be None")
    if backend is not None and weighting is not None and weighting._core_config() is not None:
        raise ValueError(f"backend=RayBackend supports a fixed α only (weighting None, Uniform or "
                         f"Fixed), got {weighting!r}")

    settings = Settings(
        obj=obj, optimizer=optimizer, weighting=weighting, steps=steps, batch_tasks=batch_tasks,
        batch_rows=batch_rows, validation=val_obj, eval_every=eval_every, stopper=stopper,
        callbacks=callbacks, progress=progress, seed=seed, n_threads=threads,
        chunk_size=chunk_size, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        record_task_losses=record_task_losses, backend=backend)
    run = Run(settings, theta, ck)
    reason, failure = run.run()
    if checkpoint:
        save(checkpoint, run.checkpoint())     # on divergence too: the kept state is finite
    if failure is not None:
        raise _diverged(failure, run.state.step, run.result(reason))
    return run.result(reason)


def _diverged(out, step, res):
    done = out["steps_done"]
    value = out["objective"][done]
    what = {
        "nonfinite_loss": f"the objective became {value} at step {step}",
        "nonfinite_grad": f"the gradient became non-finite at step {step} (objective {value:.6g})",
        "nonfinite_update": (f"the update of step {step} (lr {out['lr'][done]:.3g}, gradient norm "
                             f"{out['grad_norm'][done]:.3g}) would make θ or the optimizer state "
                             f"non-finite"),
    }[out["status"]]
    task = int(out["bad_task"]) if out["bad_task"] >= 0 else None
    if task is not None:
        what += f", caused by task {task}'s loss"
        if out["n_bad_tasks"] > 1:
            what += f" (and {out['n_bad_tasks'] - 1} other task(s))"
    return FitDivergedError(
        f"{what}. Training stopped; the state kept is the last finite one, after {step} steps "
        f"(FitDivergedError.result). Try a lower learning rate or clip_norm.",
        step, task, res)
