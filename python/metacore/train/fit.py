r"""One way to train anything: :func:`fit` runs the θ-update loop for a multi-task
:class:`~metacore.Objective` or a meta-learning :class:`~metacore.MetaObjective`.

The compiled core runs chunks of steps with the GIL released; between chunks Python updates the
progress bar, evaluates, calls the callbacks, keeps the best θ for early stopping, writes
checkpoints and honours Ctrl-C. Step t (0-based, counted across resumed runs) does:

1. draw its batch from a counter-based generator keyed by (seed, t), so the draw is the same for
   any thread count and after a resume — multi-task: all tasks, or ``batch_tasks`` = k tasks
   without replacement, and all of each task's rows or ``batch_rows`` = m of them; meta-learning:
   ``meta_batch`` distinct tasks of the TaskSet, or fresh tasks from the task source;
2. compute the step's loss and gradient — multi-task: f_B(θ_t) = (T/k) Σ_{i∈B} α_i f̂_i(θ_t) +
   (λ/2)‖θ_t‖² (f̂_i the mean loss over the drawn rows of task i, an unbiased estimate of f for
   uniform draws), with α set by the weighting strategy; meta-learning: the learner's meta-loss
   and meta-gradient over the meta-batch;
3. apply the optimizer's update (:mod:`metacore.optim`) with the learning rate of step t.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .. import _validation
from .. import optim as _optim
from .. import weighting as _weighting
from ..data.taskset import TaskSet
from ..problems import MetaObjective, Objective
from .backends import Local, RayBackend
from .checkpoint import save
from .loop import InterruptFlag, Run, Settings
from .result import EarlyStopping, FitDivergedError, FitResult
from .state import Checkpoint

__all__ = ["fit"]


# --- argument handling ---------------------------------------------------------------------------
def _early_stopping_arg(value):
    if value is None or isinstance(value, EarlyStopping):
        return value
    if _validation.is_integer(value):
        return EarlyStopping(patience=value)
    raise TypeError(f"early_stopping must be None, a patience (int) or an EarlyStopping, got "
                    f"{type(value).__name__}")


def _objective_evaluator(obj, n_threads):
    def evaluate(theta):
        value, _, losses = obj.core_handle(theta.dtype).value_and_grad(
            theta, obj.typed_weights(theta.dtype), obj.l2, False, n_threads)
        return value, np.asarray(losses, dtype=np.float64)
    return evaluate


def _scoring_objective(model, ts, n_threads):
    """The Objective a TaskSet is scored with: every task on its query rows, and a task with
    none (too small to hold a row out) on all its rows — not every task on its training rows
    because one task is tiny."""
    has_query = ts.n_query > 0
    if has_query.all() or not has_query.any():
        return Objective(model, ts, rows="query" if has_query.all() else "all",
                         n_threads=n_threads)
    rows, sizes = ts.query_rows(all_when_none=True)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    scored = TaskSet.from_checked(ts.X[rows], ts.y[rows], offsets, sizes,
                                  np.asarray(ts.task_ids), ts.names)
    return Objective(model, scored, rows="all", n_threads=n_threads)


def _validation_arg(value, problem, n_threads):
    """Validation as a callable θ -> (mean loss, per-task losses)."""
    if value is None:
        return None
    if isinstance(value, Objective):
        # θ is read through the trained model's layout: another net (even one with as many
        # parameters, e.g. relu for tanh or other layer sizes) would score a different function.
        if value.model != problem.model:
            raise ValueError(f"validation: the Objective is built on {value.model!r}, but the "
                             f"model trained is {problem.model!r}")
        if value.n_params != problem.n_params:
            raise ValueError(f"validation objective has {value.n_params} parameters, the problem "
                             f"{problem.n_params}")
        return _objective_evaluator(value, n_threads)
    if not isinstance(value, TaskSet):
        raise TypeError(f"validation must be None, a TaskSet or an Objective, got "
                        f"{type(value).__name__}")
    if isinstance(problem, MetaObjective):   # query loss after the learner's own adaptation
        learner = problem.learner
        learner.check_batch(value, value.dtype, "validation")

        def evaluate(theta):
            losses = learner.query_losses(theta, value, n_threads)
            return float(losses.mean()), losses
        return evaluate
    return _objective_evaluator(_scoring_objective(problem.model, value, problem.n_threads),
                                n_threads)


def _weight_eval_arg(weighting, validation, obj, n_threads):
    """What EvalDriven evaluates — the validation tasks when they are the training tasks'
    counterparts (same T), else the training tasks' query rows, else their rows — as a callable
    θ -> (per-task losses ℓ, per-task scores κ ∈ [0, 1]): κ = exp(−loss) for metric="loss",
    κ = accuracy and ℓ = 1 − κ for metric="accuracy"."""
    if not isinstance(weighting, _weighting.EvalDriven):
        return None
    if isinstance(validation, Objective) and validation.n_tasks == obj.n_tasks:
        target = validation
    elif isinstance(validation, TaskSet) and validation.n_tasks == obj.n_tasks:
        target = _scoring_objective(obj.model, validation, obj.n_threads)
    elif (obj.ts.n_query > 0).any():
        target = _scoring_objective(obj.model, obj.ts, obj.n_threads)
    else:
        target = Objective(obj.model, obj.ts, rows=obj.rows, n_threads=obj.n_threads)
    if weighting.metric == "accuracy":
        if obj.model.loss == "mse":
            raise ValueError("weighting EvalDriven(metric='accuracy') needs a classifier (loss "
                             "'logistic' or 'cross_entropy'); the model's loss is 'mse': use "
                             "metric='loss'")

        def accuracy(theta):
            acc = _task_accuracies(target, theta, n_threads)
            return 1.0 - acc, acc
        return accuracy
    evaluate = _objective_evaluator(target, n_threads)

    def loss(theta):
        losses = evaluate(theta)[1]
        return losses, np.exp(-losses)
    return loss


def _task_accuracies(target, theta, n_threads):
    """(T,) float64: accuracy of each task of ``target`` over the rows it evaluates."""
    ts, model = target.ts, target.model
    out = np.empty(ts.n_tasks)
    for i in range(ts.n_tasks):
        a, b = int(ts.offsets[i]), int(ts.offsets[i + 1])
        if target.rows == "query":
            a += int(ts.n_support[i])
        elif target.rows == "support":
            b = a + int(ts.n_support[i])
        z = model.predict(theta, ts.X[a:b], task=int(ts.task_ids[i]) if model.task_heads else 0,
                          n_threads=n_threads)
        pred = (z > 0) if model.loss == "logistic" else np.argmax(z, axis=1)
        out[i] = np.mean(pred == ts.y[a:b])
    return out


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


_SAME_ON_RESUME = ("kind", "n_tasks", "rows", "l2", "learner", "meta_batch")


def _start_arg(problem, start, optimizer, weighting, seed, steps):
    """(θ₀, optimizer, weighting, seed, checkpoint to resume or None) from fit's arguments."""
    ck = start.checkpoint() if isinstance(start, FitResult) else start
    if isinstance(ck, Checkpoint):
        if ck.model is not None and ck.model != problem.model:
            raise ValueError(f"start: the checkpoint was saved for {ck.model!r}, the objective's "
                             f"model is {problem.model!r}")
        if ck.theta.shape[0] != problem.n_params:
            raise ValueError(f"start: the checkpoint's θ has {ck.theta.shape[0]} entries but the "
                             f"objective's model has {problem.n_params} parameters")
        start = ck.theta
    if not isinstance(ck, Checkpoint) or not ck.resumable:   # a fresh start from θ₀
        theta = _validation.theta("start", start, problem.n_params)
        if optimizer is None:
            optimizer = (problem.learner.default_optimizer(steps)
                         if isinstance(problem, MetaObjective) else _optim.Adam(lr=1e-3))
        return theta, optimizer, weighting, 0 if seed is None else seed, None
    parts = [(f"moment {k!r}", v) for k, v in sorted(ck.moments.items())] + [("alpha", ck.alpha)]
    if ck.best is not None:
        parts.append(("best θ", ck.best["theta"]))
    for name, part in parts:      # θ's dtype is the run's: the rest cannot be another
        if np.asarray(part).dtype != ck.theta.dtype:
            raise ValueError(f"start: the checkpoint's {name} is {np.asarray(part).dtype} but its "
                             f"θ is {ck.theta.dtype}: a train state holds one dtype (θ's decides "
                             f"the run's); convert all of it, or resume it as it was saved")
    want = problem.spec()
    if ck.problem and ck.problem.get("kind") != want["kind"]:
        raise ValueError(f"start: the checkpoint was saved by a {ck.problem.get('kind')} problem, "
                         f"this one is {want['kind']}: resume with the same problem")
    n_tasks = 0 if isinstance(problem, MetaObjective) else problem.n_tasks
    if ck.alpha.shape[0] != n_tasks:
        raise ValueError(f"start: the checkpoint has weights for {ck.alpha.shape[0]} tasks, the "
                         f"objective has {n_tasks}")
    # What defines the objective must match; the task data may differ (continuing on new data,
    # e.g. fresh pools of episodes, is a use of resume; the draws then follow the new tasks).
    differ = {k: (v, want.get(k)) for k, v in ck.problem.items()
              if k in _SAME_ON_RESUME and want.get(k) != v}
    if differ:       # keys a checkpoint lacks (older files) are not compared
        what = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"start: the checkpoint was saved by another problem ({what}): resume "
                         f"with the same problem")
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
    if weighting is None and n_tasks:
        # Without a strategy α is the Objective's weights, which the checkpoint's α continues:
        # an Objective built with other weights would silently train with the saved ones.
        # (to float32's resolution: a float32 state converted to float64 holds them rounded)
        want_alpha = problem.weights.astype(ck.alpha.dtype)
        close = np.isclose(ck.alpha, want_alpha, rtol=4 * np.finfo(np.float32).eps, atol=0.0)
        if not close.all():
            i = int(np.argmin(close))
            raise ValueError(f"start: the checkpoint was saved with task weights α[{i}] = "
                             f"{float(ck.alpha[i]):.9g}, the objective's weights give "
                             f"{float(want_alpha[i]):.9g}: "
                             f"resume with the same weights (or start a new run from "
                             f"start.theta)")
    return ck.theta, optimizer, weighting, ck.seed if seed is None else seed, ck


def _refuse_a_dead_schedule(optimizer, first, steps):
    """A run whose learning rate is 0 at every one of its steps and after them, i.e. whose
    schedule has ended, would silently change nothing (e.g. a resumed run whose linear schedule
    already decayed to 0). A warm-up from 0 is not an end: a call of its first step(s) is part
    of the run (Adam's and momentum's buffers and the step counter move), and refusing it made
    a run impossible to split there (fit(steps=1) with a warm-up, metacore train with
    train.checkpoint_every = 1)."""
    # in Python integers: float64 steps near 2^63 round past int64 (steps=2**63 - 1 probed
    # step -2^63)
    n = min(steps, 1000)
    probe = sorted({first + (steps - 1) * k // max(n - 1, 1) for k in range(n)})
    if optimizer.lr_at(first + steps) == 0.0 and all(optimizer.lr_at(t) == 0.0 for t in probe):
        raise ValueError(f"optimizer: {optimizer!r} gives learning rate 0 at every step from "
                         f"{first} to {first + steps - 1}, so training would change nothing; its "
                         f"schedule has ended — give an optimizer whose schedule covers these "
                         f"steps")


def _multitask_args(obj, weighting, batch_tasks, batch_rows):
    T = obj.n_tasks
    batch_tasks = _validation.optional_integer("batch_tasks", batch_tasks, minimum=1)
    if batch_tasks is not None and batch_tasks > T:
        raise ValueError(f"batch_tasks must be <= the number of tasks ({T}), got {batch_tasks}")
    batch_rows = _validation.optional_integer("batch_rows", batch_rows, minimum=1)
    adaptive = (weighting is not None and weighting.core_config() is not None
                and not isinstance(weighting, _weighting.EvalDriven))
    if adaptive and (batch_tasks is not None or batch_rows is not None):
        raise ValueError(f"weighting {weighting!r} needs every task and row at each step: "
                         f"batch_tasks and batch_rows must be None, got {batch_tasks} and "
                         f"{batch_rows}")
    return batch_tasks, batch_rows


def _backend_arg(value):
    if value is None or isinstance(value, Local):
        return None
    if not isinstance(value, RayBackend):
        raise TypeError(f"backend must be None, metacore.distributed.Local() or a RayBackend, "
                        f"got {type(value).__name__}")
    return value


def fit(problem, start=None, *, optimizer=None, steps=1000, weighting=None, batch_tasks=None,
        batch_rows=None, validation=None, eval_every=100, early_stopping=None, callbacks=(),
        checkpoint=None, checkpoint_every=None, progress=True, seed=None, n_threads=None,
        chunk_size=None, record_task_losses=False, backend=None, theta0=None) -> FitResult:
    r"""Train ``problem`` from ``start`` for ``steps`` optimizer steps.

    Parameters
    ----------
    problem : Objective or MetaObjective
        Multi-task: ``mc.Objective(model, tasks, ...)``, f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖² over
        its tasks and rows. Meta-learning: ``mc.MetaObjective(learner, tasks_or_source,
        meta_batch=25)``, the learner's meta-loss over a meta-batch drawn at every step.
    start : array-like (P,), FitResult or Checkpoint
        The start θ (its dtype, float32 or float64, decides the working dtype; Meta-SGD: the
        packed ``learner.init(θ)``), or a finished run or a loaded checkpoint to resume: θ, the
        optimizer and its moments, α, the weighting state, the seed, the step counter and the
        history continue from it, bit-identically to a run that never stopped (given the same
        problem and batch settings).
    optimizer : metacore.optim.Optimizer or None
        None: the checkpoint's when resuming; else ``Adam(lr=1e-3)``, or the learner's own outer
        step (Reptile: ``SGD(outer_lr, schedule=linear(steps))``). Another optimizer with the same
        moment buffers may replace a checkpoint's (e.g. a lower lr after a divergence). A plain
        dict goes through :func:`metacore.optim.from_dict` first.
    steps : int >= 1
        Optimizer steps to run in this call.
    weighting : metacore.weighting.Weighting or None
        Multi-task only. How α is set: None uses ``problem.weights`` (1/T each by default);
        ``Uniform()``, ``Fixed(α)``, or an adaptive strategy of :mod:`metacore.weighting`
        (``DWA()``, ``MGDA()``, ...), run by the core at every step; adaptive ones (all but
        EvalDriven) need batch_tasks and batch_rows None.
    batch_tasks, batch_rows : int or None
        Multi-task only: tasks drawn per step (without replacement; None: all), rows drawn per
        drawn task (None: all).
    validation : TaskSet, Objective or None
        Evaluated every ``eval_every`` steps. Multi-task: a TaskSet gives the mean over its tasks
        of the query loss (all rows if some task has no query rows), unweighted, without L2.
        Meta-learning: a TaskSet gives the mean query loss after the learner's own adaptation on
        each task's support rows.
    eval_every : int >= 1
        Steps between evaluations (history, validation, callbacks, early stopping).
    early_stopping : int, EarlyStopping or None
        Patience in evaluations; monitors the validation loss, else the training loss.
    callbacks : sequence of callables
        ``cb(event: FitEvent)`` after each evaluation; returning True stops the run.
    checkpoint : path or None
        Where to save the train state (every ``checkpoint_every`` steps, at the end, on divergence
        — always a finite state — and on Ctrl-C), atomically, with :func:`metacore.save`.
    checkpoint_every : int >= 1 or None
        Steps between checkpoints; None: ``eval_every``. Without ``checkpoint`` nothing is
        written.
    progress : bool or a tqdm bar
        Show a tqdm progress bar (step, loss, steps/s, refreshed at least every second) when
        tqdm is installed (silently none otherwise); or advance the caller's open bar (any
        object with tqdm's ``update`` and ``set_postfix``), which the run leaves open — one bar
        over several fits, as the CLI keeps.
    seed : int >= 0 or None
        Seeds every draw (None: 0, or the checkpoint's when resuming).
    n_threads : int or None
        None: the problem's setting. Results are bit-identical for any thread count.
    chunk_size : int >= 1 or None
        Most steps per core call; None adapts it to about 0.25 s per call.
    record_task_losses : bool
        Multi-task: keep every step's per-task losses and α in the history.
    backend : None, metacore.distributed.Local or metacore.distributed.RayBackend
        Where the steps' gradients are computed: here, or on Ray actors, giving the same θ bit
        for bit. Multi-task: each actor holds a shard of the tasks (full-batch steps, any
        weighting) or, with batch_tasks/batch_rows, all tasks and a run of each drawn batch's
        reduction blocks.
        Meta-learning (every learner): each actor computes a run of the meta-batch's reduction
        blocks, drawing or generating those tasks from the step's keys.
    theta0 :
        Deprecated name of ``start`` (warns DeprecationWarning); removed in the next release.

    Returns
    -------
    FitResult

    Raises
    ------
    FitDivergedError
        When the loss, gradient or update turns NaN/Inf; names the step (and the task), and
        carries the result up to the last finite state (``err.result``).
    KeyboardInterrupt
        On Ctrl-C: the run stops after the chunk in progress (within about a second; a second
        Ctrl-C stops the core within a few tens of milliseconds, at its last finished step),
        writes the checkpoint when one is configured, and raises with the partial result as
        ``err.result``.
    """
    if theta0 is not None:
        if start is not None:
            raise TypeError("give start, not both start and its deprecated name theta0")
        warnings.warn("fit(theta0=...) is deprecated: the argument is now called start",
                      DeprecationWarning, stacklevel=2)
        start = theta0
    if start is None:
        raise TypeError("fit() needs start: θ₀, a FitResult or a loaded checkpoint")
    if not isinstance(problem, (Objective, MetaObjective)):
        raise TypeError(f"problem must be a metacore Objective or MetaObjective, got "
                        f"{type(problem).__name__}")
    if isinstance(optimizer, dict):
        optimizer = _optim.from_dict(optimizer)
    if optimizer is not None:
        _validation.instance("optimizer", optimizer, _optim.Optimizer,
                             "a metacore.optim optimizer (SGD, Adam, AdamW), a dict or None")
    meta = isinstance(problem, MetaObjective)
    if weighting is not None:
        if meta:
            raise ValueError("weighting applies to multi-task objectives; a MetaObjective has no "
                             "task weights")
        _validation.instance("weighting", weighting, _weighting.Weighting,
                             "a metacore.weighting strategy (Uniform, DWA, MGDA, ...) or None")
    if seed is not None:
        seed = _validation.integer("seed", seed, minimum=0, maximum=2**64 - 1)
    steps = _validation.integer("steps", steps, minimum=1)
    theta, optimizer, weighting, seed, ck = _start_arg(problem, start, optimizer, weighting, seed,
                                                       steps)
    optimizer.check_dtype(theta.dtype)
    optimizer = optimizer.bind(problem.param_groups())     # names of parameter groups → ranges
    if meta:
        problem.learner.check_dtype(theta.dtype)
        if ck is None:    # a fresh θ₀: learned rates the dtype cannot hold are refused, as adapt does
            try:
                problem.learner.adapt_rule(theta)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"start: {exc}") from None
    _refuse_a_dead_schedule(optimizer, ck.step if ck is not None else 0, steps)
    if meta:
        if batch_tasks is not None or batch_rows is not None:
            raise ValueError("batch_tasks and batch_rows apply to multi-task objectives; a "
                             "MetaObjective draws meta_batch tasks per step")
        if record_task_losses:
            raise ValueError("record_task_losses applies to multi-task objectives")
    else:
        batch_tasks, batch_rows = _multitask_args(problem, weighting, batch_tasks, batch_rows)
    eval_every = _validation.integer("eval_every", eval_every, minimum=1)
    stopper = _early_stopping_arg(early_stopping)
    callbacks = _callbacks_arg(callbacks)
    if isinstance(progress, bool) or not (hasattr(progress, "update")
                                          and hasattr(progress, "set_postfix")):
        progress = _validation.boolean("progress", progress)
    threads = _validation.n_threads(n_threads) if n_threads is not None else problem.n_threads
    chunk_size = _validation.optional_integer("chunk_size", chunk_size, minimum=1)
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
        name = os.fsdecode(os.fspath(checkpoint))
        if not name:     # abspath('') is the current folder: it trained, then failed to save
            raise ValueError("checkpoint is an empty path: give the name of the file to write")
        folder = os.path.dirname(os.path.abspath(checkpoint))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ValueError(f"checkpoint: the folder {folder!r} does not exist or is not "
                             f"writable; training would end unable to save")
        if os.path.isdir(checkpoint) or name.endswith(os.sep) or (
                os.altsep and name.endswith(os.altsep)):
            raise ValueError(f"checkpoint={os.fspath(checkpoint)!r} is a folder: give the name of "
                             f"the file to write (e.g. inside it, 'run.npz'); training would end "
                             f"unable to save")
    checkpoint_every = _validation.optional_integer("checkpoint_every", checkpoint_every,
                                                    minimum=1)
    record_task_losses = _validation.boolean("record_task_losses", record_task_losses)
    backend = _backend_arg(backend)
    settings = Settings(
        problem=problem, optimizer=optimizer, weighting=weighting, steps=steps,
        batch_tasks=batch_tasks, batch_rows=batch_rows,
        validation=_validation_arg(validation, problem, threads),
        weight_eval=None if meta else _weight_eval_arg(weighting, validation, problem, threads),
        eval_every=eval_every, stopper=stopper, callbacks=callbacks, progress=progress,
        seed=seed, n_threads=threads, chunk_size=chunk_size, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every or eval_every, record_task_losses=record_task_losses,
        backend=backend)
    run = Run(settings, theta, ck)
    start_step = ck.step if ck is not None else 0
    with InterruptFlag() as interrupt:
        try:
            reason, failure = run.run(interrupt)
        except Exception as exc:         # a callback raised: keep what was trained
            exc.result = run.result("error")
            if checkpoint:
                save(checkpoint, exc.result)
            raise
        result = run.result(reason)
        if checkpoint:
            save(checkpoint, result)     # on divergence too: the kept state is finite
    if failure is not None:
        raise _diverged(failure, run.state.step, result, weighting,
                        _advice(problem, failure.status, run.state.step == start_step))
    # A Ctrl-C that came after the loop's last look at the flag (during the chunk that ended
    # the run, its evaluation or the checkpoint) is a Ctrl-C all the same: it must stop the
    # caller, not vanish with the handler (metacore train went on to its next fit call).
    if reason == "interrupted" or interrupt.set:
        err = KeyboardInterrupt(f"training interrupted after step {result.step}"
                                + (f"; checkpoint written to {checkpoint}" if checkpoint else "")
                                + "; the partial result is err.result")
        err.result = result
        raise err
    return result


def _advice(problem, status, first):
    """What to try after a divergence, naming the hyper-parameter that can be responsible: for
    a meta-learner whose loss or gradient is non-finite at a finite θ, its inner loop (at the
    run's first step the outer learning rate has not acted yet)."""
    outer = "Try a lower learning rate or clip_norm."
    learner = getattr(problem, "learner", None)
    if getattr(learner, "kind", None) == "ridge" and status != "nonfinite_update":
        # its episode solve gives NaN when X Xᵀ + λI is not positive definite to rounding
        return (f"The ridge head's solve fails when its λ (started at reg={learner.reg:g}) is too "
                f"small for the embeddings (X Xᵀ + λI not numerically positive definite): try a "
                f"larger reg" + ("." if first else ", or a lower learning rate or clip_norm."))
    if learner is None or learner.inner_lr == 0.0 or status == "nonfinite_update":
        return outer
    settings = f"inner_lr={learner.inner_lr:g}, inner_steps={learner.inner_steps}"
    reg = getattr(learner, "reg", None)
    if learner.kind == "imaml":
        settings += f", reg={reg:g}"
    learned = (" (the learned inner rates started at inner_lr)"
               if learner.n_params != learner.model.n_params and learner.kind != "imaml" else "")
    inner = (f"the learner's inner loop ({settings}) diverged from a finite θ: try a lower "
             f"inner_lr{learned}")
    if learner.kind == "imaml":
        inner += " (inner_lr·(reg + the support loss's largest curvature) must stay below 2)"
    if first:
        return f"At the run's first step the outer learning rate has not acted yet: {inner}."
    return f"{inner[0].upper()}{inner[1:]}, or a lower (outer) learning rate or clip_norm."


def _diverged(out, step, res, weighting=None, advice="Try a lower learning rate or clip_norm."):
    done = out.steps_done
    value = out.objective[done]
    if out.status == "weighting_failed":
        return FitDivergedError(
            f"the weighting strategy {weighting!r} gave non-finite task weights at step {step}. "
            f"Training stopped; the state kept is the last finite one, after {step} steps "
            f"(FitDivergedError.result).", step, None, res)
    what = {
        "nonfinite_loss": f"the loss became {value} at step {step}",
        "nonfinite_grad": f"the gradient became non-finite at step {step} (loss {value:.6g})",
        "nonfinite_update": (f"the update of step {step} (lr {out.lr[done]:.3g}, gradient norm "
                             f"{out.grad_norm[done]:.3g}) would make θ or the optimizer state "
                             f"non-finite"),
    }[out.status]
    task = int(out.bad_task) if out.bad_task >= 0 else None
    if task is not None:
        what += f", caused by task {task}'s loss"
        if out.n_bad_tasks > 1:
            what += f" (and {out.n_bad_tasks - 1} other task(s))"
    return FitDivergedError(
        f"{what}. Training stopped; the state kept is the last finite one, after {step} steps "
        f"(FitDivergedError.result). {advice}",
        step, task, res)
