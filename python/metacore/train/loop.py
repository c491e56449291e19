"""The loop around the core's chunks of steps, the same for every problem: Python decides what
(chunk lengths, evaluations, callbacks, early stopping, checkpoints, Ctrl-C) and the core computes
(each chunk runs with the GIL released and returns one typed ``ChunkResult``)."""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from .. import _core
from ..problems import MetaObjective
from .checkpoint import save
from .result import FitEvent, FitResult, History
from .signal_guard import set_handler
from .state import Checkpoint

STOP_GRACE_SECONDS = 1.0      # Ctrl-C waits this long at most for the chunk in progress
TARGET_CHUNK_SECONDS = 0.25   # adaptive chunks: long enough that Python's share vanishes,
                              # short enough for a live progress bar and a prompt Ctrl-C
MAX_CHUNK_STEPS = 65536       # a chunk's per-step records stay small whatever chunk_size asks


@dataclass
class Settings:
    """fit's checked arguments."""

    problem: object             # an Objective or a MetaObjective
    optimizer: object
    weighting: object
    steps: int
    batch_tasks: int | None
    batch_rows: int | None
    validation: object          # callable θ -> (mean loss, per-task losses or None), or None
    weight_eval: object         # EvalDriven: callable θ -> (per-task losses, scores), or None
    eval_every: int
    stopper: object             # EarlyStopping or None
    callbacks: tuple
    progress: bool
    seed: int
    n_threads: int | None
    chunk_size: int | None
    checkpoint: object          # a path or None
    checkpoint_every: int
    record_task_losses: bool
    backend: object = None      # None: the core here; else a metacore.distributed.RayBackend


class Recorder:
    """Collects per-chunk metrics and evaluations for the History of one fit call."""

    def __init__(self, n_tasks, meta, record):
        self.n_tasks, self.meta, self.record = n_tasks, meta, record
        self.steps, self.objective, self.grad_norm, self.lr = [], [], [], []
        self.support, self.step_losses, self.step_alpha = [], [], []
        self.evals = []

    def add_chunk(self, first_step, out):
        n = out.steps_done
        self.steps.append(np.arange(first_step, first_step + n, dtype=np.int64))
        self.objective.append(np.array(out.objective[:n]))
        self.grad_norm.append(np.array(out.grad_norm[:n]))
        self.lr.append(np.array(out.lr[:n]))
        self.support.append(np.array(out.support_loss[:n]))
        if self.record:
            self.step_losses.append(np.array(out.task_losses[:n]))
            self.step_alpha.append(np.array(out.alpha[:n]))

    def losses_since(self, step):
        """The per-step objective of the steps from ``step`` on (this run's only)."""
        parts = [o[s >= step] for s, o in zip(self.steps, self.objective)]
        return np.concatenate(parts) if parts else np.empty(0)

    def history(self) -> History:
        T, ev = self.n_tasks, self.evals
        return History(
            step=_cat(self.steps, np.int64), objective=_cat(self.objective),
            grad_norm=_cat(self.grad_norm), lr=_cat(self.lr),
            eval_step=np.array([e["step"] for e in ev], dtype=np.int64),
            train_loss=np.array([e["train_loss"] for e in ev], dtype=np.float64),
            task_losses=np.array([e["task_losses"] for e in ev], np.float64).reshape(len(ev), T),
            weights=np.array([e["weights"] for e in ev], np.float64).reshape(len(ev), T),
            val_loss=np.array([e["val_loss"] for e in ev], dtype=np.float64),
            elapsed=np.array([e["elapsed"] for e in ev], dtype=np.float64),
            support_loss=_cat(self.support) if self.meta else None,
            val_task_losses=_stack([e["val_task_losses"] for e in ev]),
            inner_rates=_stack([e["inner_rates"] for e in ev]),
            step_task_losses=_cat(self.step_losses, shape=(0, T)) if self.record else None,
            step_weights=_cat(self.step_alpha, shape=(0, T)) if self.record else None)


def _cat(parts, dtype=np.float64, shape=(0,)):
    return np.concatenate(parts).astype(dtype) if parts else np.empty(shape, dtype)


def _stack(items):
    return np.stack(items) if items and items[0] is not None else None


def progress_bar(enabled, total, desc, unit="step", delay=0.0):
    """The run's bar: None, a new tqdm bar (closed by the run; shown once the run has lasted
    ``delay`` seconds), or the caller's open bar (advanced, never closed: one bar over several
    fits or evaluations)."""
    if not isinstance(enabled, bool):
        return enabled
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency: no bar without it
        return None
    return tqdm(total=total, unit=unit, desc=desc, delay=delay)


class InterruptFlag:
    """Ctrl-C while the loop runs sets a flag the loop checks between chunks, so the run stops
    with a consistent state; a second Ctrl-C interrupts at once. A chunk not expected to end
    within STOP_GRACE_SECONDS of the first Ctrl-C (a step of minutes, or a first step not yet
    timed) is interrupted at once too: the core then stops mid-step and the state stays at its
    last finished step, exactly as after a second Ctrl-C. Only the main thread can own signal
    handlers; elsewhere Ctrl-C behaves as usual."""

    def __init__(self):
        self.set = False
        self.installed = False
        self.previous = None
        self.chunk_ends = None    # perf_counter time the chunk in progress should end (inf:
        #                           unknown), None between chunks

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:   # a process told to ignore Ctrl-C keeps doing so
                self.previous, self.installed = previous, True
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            self.__exit__()
            raise KeyboardInterrupt
        self.set = True
        ends = self.chunk_ends
        if ends is not None and ends > time.perf_counter() + STOP_GRACE_SECONDS:
            # the chunk would outlast the grace: the core stops it at its next poll (raising
            # here could land after the chunk returned, and lose its record)
            _core.request_stop()

    def __exit__(self, *exc):
        if self.installed:
            # None: a handler not set from Python, which Python cannot put back; the default
            set_handler(signal.SIGINT, signal.default_int_handler if self.previous is None
                        else self.previous)
            self.previous, self.installed = None, False


class Run:
    """The train state of one fit call and the loop around the core's chunks."""

    def __init__(self, s: Settings, theta, resume: Checkpoint | None):
        self.s = s
        self.t_start = time.perf_counter()
        prob = s.problem
        self.meta = isinstance(prob, MetaObjective)
        self.n_tasks = 0 if self.meta else prob.n_tasks
        self.dtype = theta.dtype
        self.config = s.optimizer.core_config()
        T = self.n_tasks
        if self.meta:
            alpha = np.empty(0, self.dtype)
        else:
            alpha = s.weighting.initial_alpha(T) if s.weighting is not None else prob.weights
        wsize = s.weighting.state_size(T) if s.weighting is not None else 0
        cls = _core.TrainState32 if self.dtype == np.float32 else _core.TrainState64
        self.state = cls(np.ascontiguousarray(theta), self.config,
                         np.ascontiguousarray(alpha, dtype=self.dtype), wsize, s.seed)
        self.best = {"theta": None, "score": math.inf, "step": None, "bad_evals": 0}
        self.final_best = None     # a better θ at an off-grid last evaluation (see consider)
        self.resumed = resume is not None
        if self.resumed:
            self._restore(resume, wsize)
        self.wcfg = s.weighting.core_config() if s.weighting is not None else None
        if not self.resumed and wsize:
            self.state.set_weighting(s.weighting.initial_state(T))
        if not self.meta:
            model = prob.model
            self.handle = prob.core_handle(self.dtype)
            self.n_shared = model.n_shared_params if model.task_heads else prob.n_params
        else:
            self.meta_step = prob.core_step(self.dtype, s.n_threads)
        if s.backend is not None:
            s.backend.attach(prob, self.dtype, np.array(self.state.alpha), s.batch_tasks,
                             s.batch_rows, s.weighting, s.optimizer)
        self.monitored = s.stopper is not None or s.validation is not None
        self.first_step = self.state.step
        self.rec = Recorder(T, self.meta, s.record_task_losses)
        self.core_time = 0.0      # inside the core's chunks of steps
        self.eval_time = 0.0      # inside the evaluations (core calls too)
        self.last_eval = None
        # Meta-learning's training loss at an evaluation is the mean meta-loss of the steps since
        # the previous evaluation on the eval_every grid; a resumed run starts with those of the
        # run it continues (the checkpoint's recent_losses: the steps its last evaluation
        # averaged), so it averages what the run that never stopped averages, and its evaluation
        # at the step it resumes from repeats the saving run's.
        carried = resume.recent_losses if self.meta and resume is not None else None
        self.carried = (np.empty(0) if carried is None
                        else np.array(carried, dtype=np.float64))
        self.grid_step = self.prev_grid_step = self.first_step - self.carried.shape[0]

    def _restore(self, ck, wsize):
        ws = ck.weighting_state if ck.weighting_state is not None else np.zeros(wsize)
        if ws.shape[0] != wsize:
            raise ValueError(f"start: the checkpoint's weighting state has {ws.shape[0]} entries, "
                             f"{self.s.weighting!r} needs {wsize}")
        self.state.restore(ck.theta, ck.moments.get("m"), ck.moments.get("v"), ck.alpha, ws,
                           ck.step)
        if ck.best is not None:
            self.best = dict(ck.best)

    def label(self):
        """What the run's own bar says is running: the problem, and the step a resumed run
        continues from ("fit from step 0" said neither)."""
        prob = self.s.problem
        if self.meta:
            what = f"meta-train {type(prob.learner).__name__}"
        else:
            what = f"multi-task training, {self.n_tasks} task{'s' if self.n_tasks != 1 else ''}"
        return what + (f", resumed at step {self.first_step}" if self.first_step else "")

    # --- the loop ------------------------------------------------------------------------------
    def run(self, interrupt: InterruptFlag):
        """Runs the steps; returns (stop reason, the failing chunk's result or None)."""
        s, state = self.s, self.state
        end = self.first_step + s.steps
        bar = progress_bar(s.progress, s.steps, self.label())
        per_step = None
        try:
            self.last_eval = self.evaluate()
            if not self.resumed:    # else the run that saved the state has monitored this step
                self.monitor(self.last_eval, initial=True)
            while state.step < end:
                if interrupt.set:
                    return "interrupted", None
                n = self.chunk_length(end, per_step)
                first = state.step
                t0 = time.perf_counter()
                if s.weight_eval is not None and state.step % s.weighting.eval_every == 0:
                    self.evaluate_weights()
                    if interrupt.set:      # a Ctrl-C during the evaluation: before the chunk
                        return "interrupted", None
                _core.request_stop(False)
                interrupt.chunk_ends = (t0 + n * per_step if per_step is not None
                                        else float("inf"))
                try:
                    out = self.run_chunk(n)
                except KeyboardInterrupt as exc:   # Ctrl-C stopped the core mid-chunk
                    partial = getattr(exc, "chunk", None)
                    if partial is not None:        # the state is at its last finished step
                        self.rec.add_chunk(first, partial)
                    return "interrupted", None
                finally:       # a stop asked for too late for this chunk: the flag stops the loop
                    interrupt.chunk_ends = None
                    _core.request_stop(False)
                dt = time.perf_counter() - t0
                self.core_time += dt
                per_step = dt / max(out.steps_done, 1)
                self.rec.add_chunk(first, out)
                if bar is not None:
                    self.show(bar, out)
                if out.status != "ok":
                    return "diverged", out
                on_grid = state.step % s.eval_every == 0
                if on_grid or state.step == end:
                    self.last_eval = self.evaluate()
                    # Only evaluations on the eval_every grid feed early stopping and the
                    # callbacks, so a run split anywhere and resumed decides as one that was not;
                    # an end off the grid is still a candidate for the best θ reported.
                    reason = self.monitor(self.last_eval) if on_grid else self.consider(
                        self.last_eval)
                    if reason is not None:
                        return reason, None
                # after the evaluation, so that a resumed run inherits its early-stopping record
                if s.checkpoint and state.step % s.checkpoint_every == 0 and state.step < end:
                    self.save_checkpoint()
            return "steps", None
        finally:
            if bar is not None and bar is not s.progress:
                bar.close()

    def run_chunk(self, n):
        """n steps by the core here, or by the backend's workers with the update applied here."""
        s, st = self.s, self.state
        if s.backend is not None:
            return s.backend.run_chunk(st, self.config, n, s.n_threads, s.record_task_losses)
        if self.meta:
            return st.run_meta(self.meta_step, self.config, n, s.n_threads)
        return st.run_objective(self.handle, self.config, s.batch_tasks or 0, s.batch_rows or 0,
                                s.problem.l2, n, s.n_threads, s.record_task_losses, self.wcfg,
                                self.n_shared)

    def chunk_length(self, end, per_step):
        """Steps up to the next evaluation or checkpoint, capped by chunk_size or by time."""
        s, step = self.s, self.state.step
        stop = min(end, (step // s.eval_every + 1) * s.eval_every)
        if s.checkpoint:
            stop = min(stop, (step // s.checkpoint_every + 1) * s.checkpoint_every)
        if s.weight_eval is not None:
            every = s.weighting.eval_every
            stop = min(stop, (step // every + 1) * every)
        n = min(stop - step, MAX_CHUNK_STEPS)
        if s.chunk_size is not None:
            return min(n, s.chunk_size)
        if per_step is None:
            return 1     # a first, timed step sizes the chunks
        return max(1, min(n, int(TARGET_CHUNK_SECONDS / max(per_step, 1e-9))))

    def show(self, bar, out):
        done = out.steps_done
        bar.update(done)
        loss = out.objective[max(done - 1, 0)]
        val = self.last_eval["val_loss"] if self.s.validation is not None and self.last_eval \
            else None
        bar.set_postfix(loss=f"{loss:.4g}", **({"val": f"{val:.4g}"} if val is not None else {}),
                        refresh=False)

    # --- between chunks ------------------------------------------------------------------------
    def evaluate_weights(self):
        """EvalDriven: the core sets α from every task's evaluation (losses and scores, by the
        strategy's metric: see fit's _weight_eval_arg)."""
        t0 = time.perf_counter()
        losses, scores = self.s.weight_eval(self.state.theta)
        self.state.evaluate_weighting(self.wcfg, np.asarray(losses, dtype=np.float64),
                                      np.asarray(scores, dtype=np.float64))
        self.eval_time += time.perf_counter() - t0

    def evaluate(self):
        """The training loss and per-task losses at θ, and the validation loss."""
        t0 = time.perf_counter()
        s, th = self.s, self.state.theta
        if self.meta:
            recent = self.losses_from(self.grid_step)
            value = float(recent.mean()) if recent.size else math.nan
            losses = np.empty(0)
        elif s.backend is None:
            value, _, losses = self.handle.value_and_grad(th, self.state.alpha, s.problem.l2,
                                                          False, s.n_threads)
        else:
            value, _, losses = s.backend.value_and_grad(th, False, s.n_threads,
                                                        alpha=self.state.alpha)
        val_loss, val_losses = math.nan, None
        if s.validation is not None:
            val_loss, val_losses = s.validation(th)
        rates = s.problem.learner.inner_rates(th) if self.meta else None
        e = {"step": self.state.step, "train_loss": value,
             "task_losses": np.array(losses, np.float64),
             "weights": np.array(self.state.alpha, np.float64), "val_loss": val_loss,
             "val_task_losses": val_losses, "inner_rates": rates, "elapsed": time.perf_counter() - self.t_start}
        self.rec.evals.append(e)
        if self.state.step % s.eval_every == 0 and self.state.step != self.grid_step:
            self.prev_grid_step, self.grid_step = self.grid_step, self.state.step
        self.eval_time += time.perf_counter() - t0
        return e

    def losses_from(self, step):
        """Meta-learning: the per-step losses from ``step`` on, the carried ones of the run this
        one resumes first."""
        mine = self.rec.losses_since(max(step, self.first_step))
        if step < self.first_step:
            skip = max(step - (self.first_step - self.carried.shape[0]), 0)
            return np.concatenate([self.carried[skip:], mine])
        return mine

    def recent_losses(self):
        """What a resume continues: the losses the last evaluation averaged when it was at the
        current step on the grid, else those since the last evaluation on the grid."""
        st = self.state.step
        return self.losses_from(self.prev_grid_step if self.grid_step == st else self.grid_step)

    def score(self, e):
        return e["val_loss"] if self.s.validation is not None else e["train_loss"]

    def consider(self, e):
        """An evaluation off the eval_every grid (a run's last step): a candidate for the best θ
        this call reports, kept out of the early-stopping record a resumed run continues."""
        score, best = self.score(e), self.best
        if self.monitored and math.isfinite(score) and (
                best["theta"] is None or score < best["score"]):
            self.final_best = {"theta": np.array(self.state.theta), "score": score,
                               "step": e["step"], "bad_evals": best["bad_evals"]}
        return None

    def monitor(self, e, initial=False):
        """Early-stopping record and callbacks; returns a stop reason or None. The initial
        evaluation may set the best θ but never stops the run."""
        s, best = self.s, self.best
        score = self.score(e)
        if self.monitored and math.isfinite(score):
            min_delta = s.stopper.min_delta if s.stopper is not None else 0.0
            if best["theta"] is None or score < best["score"] - min_delta:
                best.update(theta=np.array(self.state.theta), score=score, step=e["step"],
                            bad_evals=0)
            else:
                best["bad_evals"] += 1
        event = FitEvent(step=e["step"], theta=np.array(self.state.theta),
                         # copies: the history is built from e's arrays after the callbacks
                         train_loss=e["train_loss"], task_losses=np.array(e["task_losses"]),
                         weights=np.array(e["weights"]), val_loss=e["val_loss"],
                         best_score=best["score"],
                         elapsed=e["elapsed"])
        stop = False
        for cb in s.callbacks:
            answer = cb(event)
            if answer is None or answer is False or answer is np.False_:
                continue
            if answer is True or answer is np.True_:
                stop = True
                continue
            raise TypeError(f"callback {cb!r} returned {type(answer).__name__}; a callback "
                            f"returns True to stop the run, or None/False to go on")
        if initial:
            return None
        if s.stopper is not None and best["bad_evals"] >= s.stopper.patience:
            return "early_stopping"
        return "callback" if stop else None

    # --- what comes out ------------------------------------------------------------------------
    def moments(self):
        return {k: np.array(getattr(self.state, k)) for k in self.s.optimizer.moments}

    def best_record(self):
        """The early-stopping record (evaluations on the grid only): what a resume continues."""
        return dict(self.best) if self.monitored and self.best["theta"] is not None else None

    def save_checkpoint(self):
        save(self.s.checkpoint, self.result("checkpoint").checkpoint())

    def result(self, reason) -> FitResult:
        record, st = self.best_record(), self.state
        b = self.final_best or record
        return FitResult(
            # best_theta a copy of its own: the record a resume continues is not the caller's
            theta=np.array(st.theta), best_theta=np.array(b["theta"]) if b else None,
            best_step=b["step"] if b else None, best_score=b["score"] if b else None,
            best_record=record,
            history=self.rec.history(), weights=np.array(st.alpha),
            step=st.step, steps_run=st.step - self.first_step, stop_reason=reason,
            wall_time=time.perf_counter() - self.t_start, core_time=self.core_time,
            eval_time=self.eval_time, optimizer=self.s.optimizer, weighting=self.s.weighting,
            seed=self.s.seed, model=self.s.problem.model, problem=self.s.problem.spec(),
            moments=self.moments(), weighting_state=np.array(st.weighting),
            bad_evals=self.best["bad_evals"],
            recent_losses=self.recent_losses() if self.meta else None)
