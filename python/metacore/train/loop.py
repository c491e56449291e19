"""One call of :func:`metacore.fit` after its arguments are checked: the core's train state, the
chunks of steps it runs, and what happens between chunks (progress, evaluation, early stopping,
callbacks, checkpoints). Nothing here computes numbers: the core does."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .checkpoint import Checkpoint, save

TARGET_CHUNK_SECONDS = 0.25   # adaptive chunks: long enough that Python's share vanishes,
                              # short enough for a live progress bar and a prompt Ctrl-C


@dataclass
class Settings:
    """fit's checked arguments."""

    obj: object
    optimizer: object
    weighting: object
    steps: int
    batch_tasks: int | None
    batch_rows: int | None
    validation: object          # an Objective or None
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
    """Collects per-chunk metrics and evaluations for the History."""

    def __init__(self, record_task_losses):
        self.steps, self.objective, self.grad_norm, self.lr, self.step_losses = [], [], [], [], []
        self.step_alpha = []
        self.evals = []
        self.record = record_task_losses

    def add_chunk(self, first_step, out, n):
        self.steps.append(np.arange(first_step, first_step + n, dtype=np.int64))
        self.objective.append(out["objective"][:n])
        self.grad_norm.append(out["grad_norm"][:n])
        self.lr.append(out["lr"][:n])
        if self.record:
            self.step_losses.append(out["task_losses"][:n])
            self.step_alpha.append(out["alpha"][:n])

    def history(self, n_tasks):
        from .fit import History

        def cat(parts, dtype):
            return np.concatenate(parts) if parts else np.empty(0, dtype)

        ev = self.evals
        val_tl = None
        if ev and ev[0]["val_task_losses"] is not None:
            val_tl = np.stack([e["val_task_losses"] for e in ev])
        step_losses = step_alpha = None
        if self.record:
            step_losses = (np.concatenate(self.step_losses) if self.step_losses
                           else np.empty((0, n_tasks)))
            step_alpha = (np.concatenate(self.step_alpha).astype(np.float64) if self.step_alpha
                          else np.empty((0, n_tasks)))
        return History(
            step=cat(self.steps, np.int64), objective=cat(self.objective, np.float64),
            grad_norm=cat(self.grad_norm, np.float64), lr=cat(self.lr, np.float64),
            eval_step=np.array([e["step"] for e in ev], dtype=np.int64),
            train_loss=np.array([e["train_loss"] for e in ev], dtype=np.float64),
            task_losses=np.array([e["task_losses"] for e in ev]).reshape(len(ev), n_tasks),
            weights=np.array([e["weights"] for e in ev]).reshape(len(ev), n_tasks),
            val_loss=np.array([e["val_loss"] for e in ev], dtype=np.float64),
            val_task_losses=val_tl, step_task_losses=step_losses, step_weights=step_alpha)


def progress_bar(enabled, total, first_step):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency: no bar without it
        return None
    return tqdm(total=total, unit="step", desc=f"fit from step {first_step}")


class Run:
    """The train state of one fit call and the loop around the core's chunks."""

    def __init__(self, s: Settings, theta, resume: Checkpoint | None):
        from .. import _core
        self.s = s
        self.t_start = time.perf_counter()
        obj, T = s.obj, s.obj.n_tasks
        self.dtype = theta.dtype
        self.config = s.optimizer._config()
        alpha = s.weighting.initial_alpha(T) if s.weighting is not None else obj.weights
        wsize = s.weighting.state_size(T) if s.weighting is not None else 0
        cls = _core.TrainState32 if self.dtype == np.float32 else _core.TrainState64
        self.state = cls(np.ascontiguousarray(theta), self.config,
                         np.ascontiguousarray(alpha, dtype=self.dtype), wsize, s.seed)
        self.best = {"theta": None, "score": math.inf, "step": None, "bad_evals": 0}
        self.resumed = resume is not None
        if self.resumed:
            self._restore(resume, wsize)
        self.handle = obj._handle(self.dtype)
        self.wcfg = s.weighting._core_config() if s.weighting is not None else None
        if not self.resumed and wsize:
            self.state.set_weighting(s.weighting.initial_state(T))
        model = obj.model
        self.n_shared = model.n_trunk_params if model.task_heads else obj.n_params
        self.weight_eval = self._weight_eval_objective()
        if s.backend is not None:
            s.backend.attach(obj, self.dtype, np.array(self.state.alpha))
        self.monitored = s.stopper is not None or s.validation is not None
        self.first_step = self.state.step
        self.rec = Recorder(s.record_task_losses)
        self.core_time = 0.0      # inside the core's chunks of steps
        self.eval_time = 0.0      # inside the evaluations (core calls too)
        self.last_eval = None

    def _restore(self, ck, wsize):
        ws = ck.weighting_state if ck.weighting_state is not None else np.zeros(wsize)
        if ws.shape[0] != wsize:
            raise ValueError(f"theta0: the checkpoint's weighting state has {ws.shape[0]} entries, "
                             f"{self.s.weighting!r} needs {wsize}")
        self.state.restore(ck.theta, ck.moments.get("m"), ck.moments.get("v"), ck.alpha, ws,
                           ck.step)
        if ck.best is not None:
            self.best = dict(ck.best)

    # --- the loop ------------------------------------------------------------------------------
    def run(self):
        """Runs the steps; returns (stop reason, the failing chunk's output or None)."""
        s, state = self.s, self.state
        end = self.first_step + s.steps
        bar = progress_bar(s.progress, s.steps, self.first_step)
        per_step = None
        try:
            self.last_eval = self.evaluate()
            if not self.resumed:    # else the run that saved the state has monitored this step
                self.monitor(self.last_eval, initial=True)
            while state.step < end:
                n = self.chunk_length(end, per_step)
                first = state.step
                t0 = time.perf_counter()
                if self.weight_eval is not None and state.step % s.weighting.eval_every == 0:
                    self.evaluate_weights()
                out = self.run_chunk(n)
                dt = time.perf_counter() - t0
                self.core_time += dt
                done = out["steps_done"]
                per_step = dt / max(done, 1)
                self.rec.add_chunk(first, out, done)
                if bar is not None:
                    self.show(bar, out, done)
                if out["status"] != "ok":
                    return "diverged", out
                if state.step % s.eval_every == 0 or state.step == end:
                    self.last_eval = self.evaluate()
                    reason = self.monitor(self.last_eval)
                    if reason is not None:
                        return reason, None
                # after the evaluation, so that a resumed run inherits its early-stopping record
                if s.checkpoint and state.step % s.checkpoint_every == 0 and state.step < end:
                    save(s.checkpoint, self.checkpoint())
            return "steps", None
        finally:
            if bar is not None:
                bar.close()

    def run_chunk(self, n):
        """n steps by the core here, or by the backend's workers with the update applied here."""
        s = self.s
        if s.backend is None:
            return self.state.run(self.handle, self.config, s.batch_tasks or 0,
                                  s.batch_rows or 0, s.obj.l2, n, s.n_threads,
                                  s.record_task_losses, self.wcfg, self.n_shared)
        from .backends import run_steps
        return run_steps(s.backend, self.state, self.config, n, s.n_threads,
                         s.record_task_losses, s.obj.n_tasks)

    def chunk_length(self, end, per_step):
        """Steps up to the next evaluation or checkpoint, capped by chunk_size or by time."""
        s, step = self.s, self.state.step
        stop = min(end, (step // s.eval_every + 1) * s.eval_every)
        if s.checkpoint:
            stop = min(stop, (step // s.checkpoint_every + 1) * s.checkpoint_every)
        if self.weight_eval is not None:
            every = s.weighting.eval_every
            stop = min(stop, (step // every + 1) * every)
        n = stop - step
        if s.chunk_size is not None:
            return min(n, s.chunk_size)
        if per_step is None:
            return 1     # a first, timed step sizes the chunks
        return max(1, min(n, int(TARGET_CHUNK_SECONDS / max(per_step, 1e-9))))

    def show(self, bar, out, done):
        bar.update(done)
        loss = out["objective"][max(done - 1, 0)]
        val = self.last_eval["val_loss"] if self.s.validation is not None else None
        bar.set_postfix(loss=f"{loss:.4g}", **({"val": f"{val:.4g}"} if val is not None else {}),
                        refresh=False)

    # --- between chunks ------------------------------------------------------------------------
    def _weight_eval_objective(self):
        """What EvalDriven evaluates: the validation tasks when they are the training tasks'
        counterparts (same T), else the training tasks' query rows, else their rows."""
        from ..problems import Objective
        from ..weighting import EvalDriven
        s = self.s
        if not isinstance(s.weighting, EvalDriven):
            return None
        if s.validation is not None and s.validation.n_tasks == s.obj.n_tasks:
            return s.validation
        if (s.obj.ts.n_query > 0).all():
            return Objective(s.obj.model, s.obj.ts, rows="query", n_threads=s.obj.n_threads)
        return Objective(s.obj.model, s.obj.ts, rows=s.obj.rows, n_threads=s.obj.n_threads)

    def evaluate_weights(self):
        """EvalDriven: the core sets α from every task's evaluation loss (score exp(−loss))."""
        t0 = time.perf_counter()
        v = self.weight_eval
        _, _, losses = v._handle(self.dtype).value_and_grad(self.state.theta, v._alpha(self.dtype),
                                                            0.0, False, self.s.n_threads)
        losses = np.asarray(losses, dtype=np.float64)
        self.state.evaluate_weighting(self.wcfg, losses, np.exp(-losses))
        self.eval_time += time.perf_counter() - t0

    def evaluate(self):
        """The full training objective and per-task losses at θ, and the validation loss."""
        t0 = time.perf_counter()
        s, th = self.s, self.state.theta
        if s.backend is None:
            value, _, losses = self.handle.value_and_grad(th, self.state.alpha, s.obj.l2, False,
                                                          s.n_threads)
        else:
            value, _, losses = s.backend.value_and_grad(th, False, s.n_threads)
        val_loss, val_losses = math.nan, None
        if s.validation is not None:
            v = s.validation
            val_loss, _, val_losses = v._handle(self.dtype).value_and_grad(
                th, v._alpha(self.dtype), v.l2, False, s.n_threads)
            val_losses = np.asarray(val_losses, dtype=np.float64)
        e = {"step": self.state.step, "train_loss": value,
             "task_losses": np.asarray(losses, np.float64),
             "weights": np.asarray(self.state.alpha, np.float64), "val_loss": val_loss,
             "val_task_losses": val_losses}
        self.rec.evals.append(e)
        self.eval_time += time.perf_counter() - t0
        return e

    def monitor(self, e, initial=False):
        """Early-stopping record and callbacks; returns a stop reason or None. The initial
        evaluation may set the best θ but never stops the run."""
        from .fit import FitEvent
        s, best = self.s, self.best
        score = e["val_loss"] if s.validation is not None else e["train_loss"]
        if self.monitored and math.isfinite(score):
            min_delta = s.stopper.min_delta if s.stopper is not None else 0.0
            if best["theta"] is None or score < best["score"] - min_delta:
                best.update(theta=np.array(self.state.theta), score=score, step=e["step"],
                            bad_evals=0)
            else:
                best["bad_evals"] += 1
        event = FitEvent(step=e["step"], theta=np.array(self.state.theta),
                         train_loss=e["train_loss"], task_losses=e["task_losses"],
                         weights=e["weights"], val_loss=e["val_loss"], best_score=best["score"],
                         elapsed=time.perf_counter() - self.t_start)
        answers = [cb(event) for cb in s.callbacks]
        if initial:
            return None
        if s.stopper is not None and best["bad_evals"] >= s.stopper.patience:
            return "early_stopping"
        if any(a is not None and bool(a) for a in answers):
            return "callback"
        return None

    # --- what comes out ------------------------------------------------------------------------
    def moments(self):
        return {k: np.array(getattr(self.state, k)) for k in self.s.optimizer.moments}

    def best_record(self):
        return dict(self.best) if self.monitored and self.best["theta"] is not None else None

    def checkpoint(self) -> Checkpoint:
        st = self.state
        return Checkpoint(np.array(st.theta), model=self.s.obj.model, optimizer=self.s.optimizer,
                          moments=self.moments(), weighting=self.s.weighting,
                          alpha=np.array(st.alpha), weighting_state=np.array(st.weighting),
                          step=st.step, seed=self.s.seed, best=self.best_record())

    def result(self, reason):
        from .fit import FitResult
        b, st = self.best_record(), self.state
        return FitResult(
            theta=np.array(st.theta), best_theta=b["theta"] if b else None,
            best_step=b["step"] if b else None, best_score=b["score"] if b else None,
            history=self.rec.history(self.s.obj.n_tasks), weights=np.array(st.alpha),
            step=st.step, steps_run=st.step - self.first_step, stop_reason=reason,
            wall_time=time.perf_counter() - self.t_start, core_time=self.core_time,
            eval_time=self.eval_time,
            optimizer=self.s.optimizer, weighting=self.s.weighting, seed=self.s.seed,
            model=self.s.obj.model, moments=self.moments(),
            weighting_state=np.array(st.weighting), bad_evals=self.best["bad_evals"])
