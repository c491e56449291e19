r"""Where :func:`metacore.fit` computes the objective: here (:class:`Local`, the default) or on a
Ray cluster (:class:`RayBackend`), with the same θ either way.

How a distributed step works
----------------------------
The core sums the gradient of f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖² over a fixed partition of all
tasks' rows into *reduction blocks* (at most 128, of about equal rows, in task order), adding the
blocks' partial sums in block order. :class:`RayBackend` plans those blocks on the driver and cuts
the task list into ``n_workers`` shards of consecutive tasks at block boundaries, balanced by row
count. Each Ray actor receives its shard once (from the object store; it copies the read-only
arrays into its own :class:`~metacore.TaskSet`) and keeps it. Each step the driver sends θ (put
once in the object store when it is larger than 64 KiB, inside the calls otherwise); every actor
returns the partial sums of its blocks and its tasks' losses; the driver
concatenates them in shard order, adds them in block order with the core's own reduction and
applies the core's optimizer update to its train state. The sums and their order are the ones a
single machine does, so θ is **bit-identical** to a local run, for any number of workers and
threads.

The traffic per step is θ to every actor and (blocks × P) partial sums back: at most 128 · P
numbers in all, whatever the number of tasks.

Meta-learning works the same way. The core cuts each meta-batch of n tasks into its fixed
reduction blocks (at most 64; block b holds tasks [b·n/nb, (b+1)·n/nb)); the driver gives each
actor a run of consecutive blocks. Every actor holds the problem's tasks (a TaskSet, once, from
the object store) or its task source, and at step t draws the tasks of its blocks from the
step's counter-based keys (seed, t) — the tasks a local step draws, generated only for its
blocks — and returns its blocks' partial sums of the meta-gradient and its tasks' query and
support losses. The driver adds the partials in block order and the losses in task order and
finishes the step with the core's one step tail: θ is bit-identical to a local run for every
learner and any number of actors (the blocks run the loop a local step runs). Partials are never pre-added on the actors (a tree): the
block-order sum is a left fold, and any other grouping changes the last bits; the traffic is
bounded anyway, at most 64 · P numbers per step.

Faults: actors are created with ``max_restarts``; a restarted actor rebuilds its shard from the
object store (the driver keeps the references). A step whose actor died is sent again with the
same θ — a pure function of θ and the shard — so the run's result does not change. An actor
that does not answer a step within ``step_timeout_s`` (a stalled process, a hung machine) is
treated as lost the same way: the driver kills it (Ray restarts it), waits for it to reload its
shard and sends the step again. The driver's
own state is saved by ``fit(checkpoint=..., checkpoint_every=k)``; a crashed driver resumes with
``fit(obj, mc.load(path), backend=...)``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .. import _core, _validation
from ..data.taskset import TaskSet
from ..models import MLP
from ..problems import MetaObjective, Objective

__all__ = ["Backend", "Local", "MetaWorker", "RayBackend", "RayNotInstalledError",
           "ShardWorker"]

UNIT_ROWS = 1024        # the core's work-unit size (tasks.hpp kUnitRows)
RESTART_TIMEOUT = 120.0 # seconds to wait for Ray to bring a dead actor back
INLINE_BYTES = 64 << 10 # θ up to this size is sent inside each call, not put in the object store


class RayNotInstalledError(ImportError):
    """RayBackend was asked for but the ``ray`` package cannot be imported."""


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise RayNotInstalledError(
            "metacore.distributed.RayBackend needs Ray, which is not installed: "
            "pip install 'metacore[ray]' (or pip install ray)") from e
    return ray


class Backend:
    """Where fit computes f and ∇f. Subclasses: :class:`Local`, :class:`RayBackend`."""


class Local(Backend):
    """The OpenMP core in this process: the default (``fit(backend=None)`` is the same)."""

    def __repr__(self):
        return "Local()"


# --- the plan: reduction blocks and shards -------------------------------------------------------
def _chosen_rows(ts, rows):
    sizes = np.diff(ts.offsets)
    if rows == "support":
        return ts.n_support.copy()
    if rows == "query":
        return sizes - ts.n_support
    return sizes


def plan_shards(ts, rows, n_params, itemsize, n_workers):
    """The core's reduction blocks over all tasks and their cut into ``n_workers`` shards.

    Returns (task_rows (T,), shards): each shard is a dict with its tasks ``[task_lo, task_hi)``
    and its blocks' ``block_start`` in its own unit numbering. Shards are consecutive runs of
    whole blocks that start at a task's first unit, as close to equal row counts as that allows.
    """
    task_rows = np.ascontiguousarray(_chosen_rows(ts, rows), dtype=np.int64)
    n_units = -(-task_rows // UNIT_ROWS)                          # units per task
    unit_task = np.repeat(np.arange(task_rows.shape[0]), n_units)
    first_unit = np.concatenate([[0], np.cumsum(n_units)])       # (T+1,)
    unit_rows = np.full(unit_task.shape[0], UNIT_ROWS, dtype=np.int64)
    last = first_unit[1:] - 1
    unit_rows[last] = task_rows - (n_units - 1) * UNIT_ROWS
    block_start = np.asarray(_core.assign_blocks(unit_rows, n_params, itemsize))
    # A shard may start only at a block boundary that is also a task's first unit.
    starts_task = np.zeros(unit_task.shape[0] + 1, dtype=bool)
    starts_task[first_unit] = True
    cuts = [b for b in range(1, block_start.shape[0] - 1) if starts_task[block_start[b]]]
    if len(cuts) < n_workers - 1:
        raise ValueError(f"n_workers={n_workers} is more than these tasks can be split into "
                         f"({len(cuts) + 1} shards at most, at the core's reduction blocks)")
    cum_rows = np.concatenate([[0], np.cumsum(unit_rows)])
    rows_at = cum_rows[block_start]                               # rows before each block
    chosen, prev = [0], 0
    for k in range(1, n_workers):
        target = rows_at[-1] * k / n_workers
        # the remaining workers each need a cut after this one
        later = [c for c in cuts if c > prev]
        allowed = later[:len(later) - (n_workers - 1 - k)]
        best = min(allowed, key=lambda c: abs(rows_at[c] - target))
        chosen.append(best)
        prev = best
    chosen.append(block_start.shape[0] - 1)
    task_of_unit = np.append(unit_task, task_rows.shape[0])
    shards = []
    for k in range(n_workers):
        b0, b1 = chosen[k], chosen[k + 1]
        u0 = block_start[b0]
        shards.append({"task_lo": int(task_of_unit[u0]),
                       "task_hi": int(task_of_unit[block_start[b1]]),
                       "block_start": np.ascontiguousarray(block_start[b0:b1 + 1] - u0),
                       "rows": int(rows_at[b1] - rows_at[b0])})
    return task_rows, shards


def _fresh(a, dtype):
    """A new C-contiguous array of the canonical ``dtype``: arrays that went through pickling can
    carry an equivalent but distinct dtype object, which the core's strict checks reject."""
    a = np.asarray(a)
    out = np.empty(a.shape, dtype=np.dtype(dtype).type)
    out[...] = a
    return out


# --- the actor -----------------------------------------------------------------------------------
class ShardWorker:
    """One shard of tasks and its part of every step (run as a Ray actor; plain class for tests)."""

    def __init__(self, model, X, y, offsets, n_support, task_ids, rows, dtype, block_start,
                 n_threads, fault_marker=None):
        model = MLP.from_spec(model)     # sent as plain data: the compiled net does not pickle
        # Arrays from the object store are read-only views: the TaskSet copies them.
        ts = TaskSet(np.array(X), np.array(y), np.array(offsets), n_support=np.array(n_support),
                     task_ids=np.array(task_ids), dtype=np.dtype(dtype))
        self.dtype = np.dtype(dtype)
        self.obj = Objective(model, ts, rows=rows, n_threads=n_threads)
        self.handle = self.obj.core_handle(self.dtype)
        self.plan = _core.block_plan(self.handle, _fresh(block_start, np.int64))
        self.n_threads = n_threads
        self.weights = None

    def ready(self):
        return os.getpid()

    def set_weights(self, weights):
        self.weights = _fresh(weights, self.dtype)

    def partials(self, theta, want_grad):
        """(partial sums of this shard's blocks (nb, P) or None, f_i of its tasks (float64))."""
        return _core.block_partials(self.handle, self.plan, _fresh(theta, self.dtype),
                                    self.weights, want_grad, self.n_threads)


class MetaWorker:
    """The meta-learning problem's tasks and its share of every meta-step's blocks (run as a Ray
    actor; plain class for tests). ``problem`` is the :class:`~metacore.MetaObjective` itself
    (it pickles as plain data); the actor builds the same compiled meta-step a local fit does,
    so every learner the core knows runs here unchanged."""

    def __init__(self, problem, dtype, n_threads):
        self.dtype = np.dtype(dtype)
        self.n_threads = n_threads
        self.step = problem.core_step(self.dtype, n_threads)

    def ready(self):
        return os.getpid()

    def meta_partials(self, theta, seed, step, b0, b1):
        """Blocks [b0, b1) of step ``step``: (partials (b1 − b0, P), query losses, support
        losses) of their tasks."""
        return self.step.block_partials(_fresh(theta, self.dtype), seed, step, b0, b1)


def plan_meta_blocks(n_blocks, n_workers):
    """Runs of consecutive blocks [b0, b1), one per actor: ``min(n_workers, n_blocks)`` runs of
    nearly equal length (a meta-batch's blocks hold nearly equal numbers of tasks)."""
    k = min(n_workers, n_blocks)
    cuts = [(i * n_blocks) // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


# --- the driver side -----------------------------------------------------------------------------
class RayBackend(Backend):
    """Compute f and ∇f on ``n_workers`` Ray actors, each holding one shard of the tasks.

    Parameters
    ----------
    n_workers : int >= 1
        Actors, one shard of consecutive tasks each (balanced by row count).
    cpus_per_worker : int >= 1
        ``num_cpus`` reserved for each actor, and the core's thread count inside it (Ray would
        otherwise leave its workers at OMP_NUM_THREADS=1).
    max_restarts : int >= 0
        How often Ray restarts a dead actor (it then reloads its shard).
    max_retries : int >= 0
        How often the driver sends a step again to a shard whose actor died.
    address : None, "auto" or "ray://host:port" (or "host:port")
        The cluster to join when Ray is not initialised yet in this process: None starts a local
        one; "auto" joins the cluster started on this machine by ``ray start --head``; a
        ``ray://`` address joins a remote cluster through Ray Client; "host:port" joins the
        head node's GCS. When Ray is already initialised, the existing connection is used.
    worker_class : type
        The actor class: :class:`ShardWorker` (multi-task) or :class:`MetaWorker`
        (meta-learning), or a subclass of one (to instrument the actors); None: the one the
        problem needs.
    step_timeout_s : float > 0 or None
        How long the driver waits for one actor's part of a step (default 60 s). Past it the actor
        is treated as lost: killed, restarted by Ray (counts against ``max_restarts``), and sent
        the step again (counts against ``max_retries``). None waits for ever.

    Use it as ``mc.fit(obj, theta0, backend=RayBackend(2, 1))`` for a multi-task
    :class:`~metacore.Objective` or ``mc.fit(mc.MetaObjective(...), theta0,
    backend=RayBackend(2, 1))`` for meta-learning; the actors stay up for more fits on the same
    problem until :meth:`close` (or the end of a ``with`` block), which kills them; a fit with
    a closed backend raises ValueError.

    Raises ValueError/TypeError naming the argument for a bad setting, and RuntimeError when an
    actor stays dead or stalled past ``max_retries`` tries of one step.
    """

    def __init__(self, n_workers=2, cpus_per_worker=1, *, max_restarts=3, max_retries=3,
                 address=None, worker_class=None, step_timeout_s=60.0):
        self.ray = _import_ray()
        self.n_workers = _validation.integer("n_workers", n_workers, minimum=1)
        self.cpus_per_worker = _validation.integer("cpus_per_worker", cpus_per_worker, minimum=1)
        self.max_restarts = _validation.integer("max_restarts", max_restarts, minimum=0)
        self.max_retries = _validation.integer("max_retries", max_retries, minimum=0)
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be None, 'auto' or 'ray://host:port', got "
                            f"{type(address).__name__}")
        if isinstance(address, str) and not address.strip():
            raise ValueError("address must be None, 'auto' or 'ray://host:port', got ''")
        self.address = address
        self.step_timeout_s = None if step_timeout_s is None else _validation.real(
            "step_timeout_s", step_timeout_s, minimum=0.0, min_open=True)
        if worker_class is not None and not (
                isinstance(worker_class, type) and issubclass(worker_class,
                                                              (ShardWorker, MetaWorker))):
            raise TypeError(f"worker_class must be None, ShardWorker, MetaWorker or a subclass "
                            f"of one, got {worker_class!r}")
        self.worker_class = worker_class
        self._key = None
        self._actors = []
        self._refs = []
        self.retries = 0          # steps sent again after an actor died or stalled
        self.meta = False         # the attached problem is a MetaObjective
        self._owns_ray = False    # this backend called ray.init (close() shuts Ray down)
        self._closed = False      # close() ran (the end of a with block): no more fits

    def __repr__(self):
        return (f"RayBackend(n_workers={self.n_workers}, cpus_per_worker={self.cpus_per_worker}, "
                f"step_timeout_s={self.step_timeout_s})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def actor_pids(self):
        """The process ids of the actors now up (one per shard or block run), in actor order."""
        return [int(p) for p in self.ray.get([a.ready.remote() for a in self._actors])]

    def close(self):
        """Kills the actors (their processes end; Ray does not restart them) and, when this
        backend connected Ray (``ray.init`` was not called before), disconnects — which also
        stops the local cluster it started: no process is left behind."""
        self._stop_actors()
        if self._owns_ray and self.ray.is_initialized():   # the local cluster it started
            self.ray.shutdown()
        self._owns_ray = False
        self._closed = True

    # --- set-up ------------------------------------------------------------------------------
    def _stop_actors(self):
        for a in self._actors:
            self.ray.kill(a, no_restart=True)
        self._actors, self._refs, self._key = [], [], None
        self._obj = None

    def _worker_class(self, meta):
        want = MetaWorker if meta else ShardWorker
        cls = self.worker_class or want
        if not issubclass(cls, want):
            raise TypeError(f"worker_class {cls.__name__} does not run "
                            f"{'a MetaObjective' if meta else 'an Objective'}: it must be "
                            f"{want.__name__} or a subclass of it")
        return cls

    def attach(self, obj, dtype, alpha):
        """Ships ``obj``'s tasks (once per problem and dtype) and, for a multi-task objective,
        the weights α. ``obj``: an Objective or a MetaObjective."""
        if self._closed:   # else a fit after the with block would start a new local Ray
            raise ValueError("backend: this RayBackend was closed (its with block ended or "
                             "close() ran) and its actors are gone; create a new RayBackend")
        meta = isinstance(obj, MetaObjective)
        cls = self._worker_class(meta)
        ray = self.ray
        dtype = np.dtype(dtype)
        key = (id(obj), dtype.str)
        if self._key != key:
            self._stop_actors()
            if not ray.is_initialized():
                ray.init(address=self.address)
                self._owns_ray = True
            self._start_meta(obj, dtype, cls) if meta else self._start(obj, dtype, cls)
            self._key, self._obj = key, obj      # keep obj alive: its id keys the actors
        self.meta = meta
        if meta:
            return
        alpha = np.ascontiguousarray(alpha, dtype=dtype)
        ray.get([a.set_weights.remote(alpha[s["task_lo"]:s["task_hi"]])
                 for a, s in zip(self._actors, self.shards)])
        self.alpha = alpha

    def _options(self, cls):
        return self.ray.remote(cls).options(num_cpus=self.cpus_per_worker,
                                            max_restarts=self.max_restarts, max_task_retries=0)

    def _start_meta(self, problem, dtype, cls):
        ray = self.ray
        self.dtype, self.n_params = dtype, problem.n_params
        self.n_blocks = problem.core_step(dtype, 1).n_blocks
        self.ranges = plan_meta_blocks(self.n_blocks, self.n_workers)
        # The reference stays with the driver, so a restarted actor can rebuild its tasks.
        self._refs = [ray.put(problem)]
        actor = self._options(cls)
        self._actors = [actor.remote(self._refs[0], dtype.str, self.cpus_per_worker)
                        for _ in self.ranges]
        ray.get([a.ready.remote() for a in self._actors])

    def _start(self, obj, dtype, cls):
        ray = self.ray
        ts = obj.ts.astype(dtype)
        self.dtype, self.n_params, self.l2 = dtype, obj.n_params, obj.l2
        self.task_rows, self.shards = plan_shards(ts, obj.rows, obj.n_params, dtype.itemsize,
                                                  self.n_workers)
        cls = self._options(cls)
        self._actors, self._refs = [], []
        for s in self.shards:
            lo, hi = s["task_lo"], s["task_hi"]
            r0, r1 = int(ts.offsets[lo]), int(ts.offsets[hi])
            # The references stay with the driver, so a restarted actor can reload its shard.
            refs = [ray.put(a) for a in (ts.X[r0:r1], ts.y[r0:r1], ts.offsets[lo:hi + 1] - r0,
                                         ts.n_support[lo:hi], ts.task_ids[lo:hi])]
            self._refs.append(refs)
            self._actors.append(cls.remote(obj.model.spec(), *refs, obj.rows, dtype.str,
                                           s["block_start"], self.cpus_per_worker))
        ray.get([a.ready.remote() for a in self._actors])

    # --- one evaluation of f (and ∇f) --------------------------------------------------------
    def value_and_grad(self, theta, want_grad=True, n_threads=None):
        """(f(θ), ∇f(θ) or None, f_i (T,)) — bit-identical to the local objective's."""
        ray = self.ray
        theta = np.array(theta, dtype=self.dtype)
        ref = self._share(theta)
        results = self._gather(lambda k: self._actors[k].partials.remote(ref, want_grad))
        parts = _fresh(np.concatenate([r[0] for r in results]), self.dtype) if want_grad else None
        task_loss = _fresh(np.concatenate([r[1] for r in results]), np.float64)
        return _core.combine_partials(parts, task_loss, self.task_rows, self.alpha, theta,
                                      self.l2, n_threads)

    def meta_partials(self, theta, seed, step):
        """All blocks' partials (n_blocks, P) in block order and the meta-batch's query and
        support losses (meta_batch,) of step ``step`` at θ, from the actors."""
        theta = np.array(theta, dtype=self.dtype)
        ref = self._share(theta)
        results = self._gather(lambda k: self._actors[k].meta_partials.remote(
            ref, seed, step, *self.ranges[k]))
        return tuple(_fresh(np.concatenate([r[i] for r in results]), dt)
                     for i, dt in enumerate((self.dtype, np.float64, np.float64)))

    def run_chunk(self, state, config, n, n_threads=None, record=False):
        """n steps of ``state`` (a core train state) with the actors' partials and each step
        finished by the core's own step tail: the same typed ``ChunkResult`` as a local chunk.
        Multi-task: full-batch f and ∇f; meta-learning: the step's meta-gradient."""
        if self.meta:
            out = _core.ChunkResult(n, 0, False)
            for j in range(n):
                parts, losses, support = self.meta_partials(state.theta, state.seed, state.step)
                if not _core.take_meta_step(state, out, j, config, parts, losses, support,
                                            n_threads):
                    break
            return out
        out = _core.ChunkResult(n, self.task_rows.shape[0], record)
        for j in range(n):
            value, grad, losses = self.value_and_grad(state.theta, True, n_threads)
            losses = np.ascontiguousarray(losses, dtype=self.dtype)
            if not state.take_step(out, j, config, value, grad, losses, self.task_rows,
                                   n_threads):
                break
        return out

    def _share(self, theta):
        """θ as the actors' calls take it: put once in the object store (every actor on a node
        then reads the one copy) when it is large; a small θ travels inside each call instead,
        which costs less than a put (Ray inlines arguments under 100 KiB anyway)."""
        return self.ray.put(theta) if theta.nbytes > INLINE_BYTES else theta

    def _gather(self, send):
        """The answers of every actor to ``send(k)`` (a Ray call to actor k), in actor order. An
        actor that died, or did not answer within step_timeout_s, is restarted and sent the same
        call again (the calls are pure functions of their arguments and the actor's tasks)."""
        ray = self.ray
        futures = [send(k) for k in range(len(self._actors))]
        try:                          # the common case: one wait for all
            return ray.get(futures, timeout=self.step_timeout_s)
        except ray.exceptions.GetTimeoutError:    # who has not answered is stalled
            done, _ = ray.wait(futures, num_returns=len(futures), timeout=0)
            late = {k for k, f in enumerate(futures) if f not in done}
        except _actor_errors(ray):
            late = set()
        return [self._get(k, f, send, k in late) for k, f in enumerate(futures)]

    def _get(self, k, future, send, stalled_already=False):
        ray = self.ray
        errors = _actor_errors(ray)
        for attempt in range(self.max_retries + 1):
            try:
                if stalled_already:
                    stalled_already = False
                    raise ray.exceptions.GetTimeoutError(f"actor {k} timed out")
                return ray.get(future, timeout=self.step_timeout_s)
            except errors + (ray.exceptions.GetTimeoutError,) as e:
                stalled = isinstance(e, ray.exceptions.GetTimeoutError)
                if attempt == self.max_retries:
                    what = (f"did not answer within step_timeout_s={self.step_timeout_s} s"
                            if stalled else "died")
                    raise RuntimeError(f"shard {k}'s actor {what} on {attempt + 1} tries of the "
                                       f"same step (max_retries={self.max_retries}); giving up"
                                       ) from e
                self.retries += 1
                if stalled:     # lost: kill it so Ray starts a fresh one that reloads the shard
                    ray.kill(self._actors[k], no_restart=False)
                self._wait_restarted(k, e)
                future = send(k)          # same θ, same shard

    def _resync(self, k):
        """A call that answers once actor k is back: a restarted actor has its tasks again (its
        constructor reran), not yet its α."""
        if self.meta:
            return self._actors[k].ready.remote()
        s = self.shards[k]
        return self._actors[k].set_weights.remote(self.alpha[s["task_lo"]:s["task_hi"]])

    def _wait_restarted(self, k, error, timeout=RESTART_TIMEOUT):
        """Blocks until shard k's actor answers again (Ray restarts it and it reloads its shard)."""
        errors = _actor_errors(self.ray) + (self.ray.exceptions.GetTimeoutError,)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ray.get(self._resync(k),
                                    timeout=max(deadline - time.monotonic(), 0.0))
            except errors:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"shard {k}'s actor did not come back within {timeout} s "
                                       f"(max_restarts={self.max_restarts})") from error
                time.sleep(0.2)


def _actor_errors(ray):
    ex = ray.exceptions
    return tuple(getattr(ex, n) for n in ("RayActorError", "ActorDiedError",
                                          "ActorUnavailableError") if hasattr(ex, n))


