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
numbers in all, whatever the number of tasks. One call per actor and step, with one argument:
the method and its arguments pickled into one bytes object (:func:`_request`; θ and α, when it
changes per step, inside it as raw bytes, or θ as a second argument when it went through the
object store); the answer is one bytes object too (a small header and each array's raw bytes,
:func:`_pack`). Ray charges per argument and per non-bytes value. The local cluster
a RayBackend starts raises Ray's inline limit for replies from 100 KiB to 16 MiB
(:data:`RAY_SYSTEM_CONFIG`), so partials come back inside the reply, not through the object
store. An error an actor's method raises (a refused batch's ValueError or TypeError) reaches
the caller as itself, the type and message of a local run, not as Ray's RayTaskError.

The driver's half is the local step itself (the core's MultiTaskStep, bound as
``_core.MultiTaskDriver32/64``): it draws the batch, lets the weighting strategy set α, and takes
the actors' answers where a local step calls its own objective. A loss-based strategy needs only
the task losses (α is sent with θ at each step; FAMO, which sets α from the step's own losses,
makes a loss-only call first). A gradient-based strategy gets every shard's rows of the per-task
gradient matrix G (T × P), and the driver forms the Gram matrix and Σ_i β_i g_i as a local step
does. With per-task heads a row is sent as its shared columns and its task's own head (S + H of
P numbers; the other heads' entries are +0 and are put back on the driver). The Gram matrix
(T × T) is not sent instead, although it is smaller when 2T < S + H: a shard cannot form the
products g_i·g_j with other shards' tasks, and Σ β_i g_i is a left fold over all tasks' rows
in task order, which shards cannot split among themselves without changing its last bits (with
one actor, the default ``remote_chunks`` runs the whole step there and sends nothing per step).
With ``batch_tasks``/``batch_rows`` the actors are
:class:`BatchWorker` s: each holds all tasks, draws the step's batch from (seed, t) as the driver
does, and computes worker k of K's run of the batch's reduction blocks; it returns their partials
and every work unit's summed loss, which the driver adds in unit order (a task's units may fall in
two actors' runs).

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
shard and sends the step again. Starting an actor (a process, its imports, its shard) is timed
apart, by ``start_timeout_s``: on a busy machine it can take far longer than a step. The driver's
own state is saved by ``fit(checkpoint=..., checkpoint_every=k)``; a crashed driver resumes with
``fit(obj, mc.load(path), backend=...)``.
"""

from __future__ import annotations

import os
import pickle
import time
import weakref

import numpy as np

from .. import _core, _validation
from ..data.taskset import TaskSet
from ..models import MLP
from ..problems import MetaObjective, Objective

__all__ = ["Backend", "BatchWorker", "Local", "MetaWorker", "RAY_SYSTEM_CONFIG", "RayBackend",
           "RayNotInstalledError", "ShardWorker"]

UNIT_ROWS = 1024        # the core's work-unit size (tasks.hpp kUnitRows)
# The open backends of this process on Ray, and whether one of them started the local cluster:
# that cluster stays up while any of them is open, and the last to close shuts it down.
_USERS = weakref.WeakSet()
_LOCAL = {"connected": False,   # a backend called ray.init: the last to close disconnects
          "local": False}       # ... and it started a local cluster (fixed CPUs)
INLINE_BYTES = 64 << 10 # θ up to this size is sent inside each call, not put in the object store
# The local cluster a RayBackend starts (address=None): replies up to 16 MiB travel inside the
# call's reply (Ray's default is 100 KiB; above it a reply is put in the object store and
# fetched — the second of two actors' 32 block rows at P = 1,761 are 225 KB; with the packed
# answers this took the 2-actor step's overhead at T = 64 from 4.2–5.1 to 2.5–3.6 ms,
# benchmarks/README.md). Pass the same to your own ``ray.init(_system_config=RAY_SYSTEM_CONFIG)``
# when you start the cluster yourself.
RAY_SYSTEM_CONFIG = {"max_direct_call_object_size": 16 << 20}


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


def _pack(values):
    """An actor's answer (a tuple of arrays or None) as one message: one ``bytes`` object (the
    pickled header — dtype and shape of each array — and each array's raw bytes). Ray sends a
    single bytes reply cheaper than a tuple or pickled arrays, inside the call's reply when it is
    under ``max_direct_call_object_size`` (:data:`RAY_SYSTEM_CONFIG`)."""
    header, chunks = [], []
    for a in values:
        if a is None:
            header.append(None)
            continue
        a = np.asarray(a)
        header.append((a.dtype.str, a.shape))
        chunks.append(a.tobytes())      # C order, whatever the array's layout
    return pickle.dumps((tuple(header), chunks), protocol=pickle.HIGHEST_PROTOCOL)


class _Ref:
    """Stands in a call's pickled arguments for the object reference passed as its ``index``-th
    extra argument (Ray resolves those to the arrays before the method runs)."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __reduce__(self):
        return _Ref, (self.index,)


def _request(method, args, ref_type=()):
    """The arguments of an actor's :meth:`_Worker.packed` for ``method(*args)``: one bytes object
    (method name and arguments pickled; θ and α already raw bytes) followed by the object
    references among ``args`` (instances of ``ref_type``). Every extra top-level argument costs
    a Ray call about 0.1 ms (benchmarks/README.md), so a step's call has one, or two when θ is in
    the object store."""
    refs, plain = [], []
    for a in args:
        if ref_type and isinstance(a, ref_type):
            plain.append(_Ref(len(refs)))
            refs.append(a)
        else:
            plain.append(a)
    return (pickle.dumps((method, tuple(plain)), protocol=pickle.HIGHEST_PROTOCOL), *refs)


def _raw(a):
    """An array of the actors' dtype as the raw bytes :meth:`_Worker.packed` takes."""
    return np.ascontiguousarray(a).tobytes()


def _unpack(message):
    """The arrays of a :func:`_pack` ed answer: read-only views of its buffers, copied by the
    caller (_concat, _fresh)."""
    header, chunks = pickle.loads(message)
    out, next_chunk = [], iter(chunks)
    for h in header:
        if h is None:
            out.append(None)
            continue
        out.append(np.frombuffer(next(next_chunk), dtype=np.dtype(h[0])).reshape(h[1]))
    return tuple(out)


def _fold(parts, theta, n_threads):
    """A run of blocks' partials (nb, P) added in block order by the core's one reduction, as
    one row (1, P). The actor whose blocks come first sends this instead of its nb rows: the
    driver's block-order sum starts from +0 and 0 + s = s (an accumulator that starts at +0
    is never −0), so summing [s, 0, …, 0, later blocks] gives the same bits."""
    if parts is None or parts.shape[0] < 2:
        return parts
    one = np.ones(1, dtype=np.int64)
    _, g, _ = _core.combine_partials(parts, np.zeros(1), one, np.zeros(1, dtype=parts.dtype),
                                     theta, 0.0, n_threads)
    return g[None, :]


def _state_arrays(state):
    """A core train state as plain data (what a chunk run by an actor starts from and returns)."""
    return {"theta": np.array(state.theta), "alpha": np.array(state.alpha),
            "weighting": np.array(state.weighting), "step": int(state.step),
            "seed": int(state.seed),
            "m": None if state.m is None else np.array(state.m),
            "v": None if state.v is None else np.array(state.v)}


def _restore(state, st, dtype):
    state.restore(_fresh(st["theta"], dtype), None if st["m"] is None else _fresh(st["m"], dtype),
                  None if st["v"] is None else _fresh(st["v"], dtype), _fresh(st["alpha"], dtype),
                  _fresh(st["weighting"], np.float64), st["step"])


def _chunk_here(dtype, st, optimizer, run):
    """Runs a chunk of steps of the shipped train state ``st`` in this process with the core's
    own loop (``run(state, config)``): (the state after it, the ChunkResult)."""
    config = optimizer.core_config()
    cls = _core.TrainState32 if dtype == np.float32 else _core.TrainState64
    theta, alpha = _fresh(st["theta"], dtype), _fresh(st["alpha"], dtype)
    state = cls(theta, config, alpha, st["weighting"].shape[0], st["seed"])
    _restore(state, st, dtype)
    out = run(state, config)
    return _state_arrays(state), out


# --- the actor -----------------------------------------------------------------------------------
class _Worker:
    """What every actor class answers besides its own methods."""

    def ready(self):
        return os.getpid()

    def packed(self, request, *shared):
        """The answer of the call ``request`` describes (:func:`_request`: a method's name and
        arguments) as one message (:func:`_pack`): how the driver calls a step's methods. An
        argument sent as ``bytes`` (θ, α: see RayBackend._share) is an array of the actor's
        dtype, raw bytes costing Ray less to send than a pickled array; ``shared`` are the
        arrays of the object references the request names."""
        method, args = pickle.loads(request)
        args = [shared[a.index] if isinstance(a, _Ref) else
                np.frombuffer(a, dtype=self.dtype) if isinstance(a, bytes) else a for a in args]
        return _pack(getattr(self, method)(*args))


class ShardWorker(_Worker):
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
        # per-task heads: θ = [shared (S)] + one block of H per head; task i uses ts.task_ids[i]
        self.heads = ((model.n_shared_params, model.n_head_params, ts.task_ids.copy())
                      if model.task_heads else None)

    def set_weights(self, weights):
        self.weights = _fresh(weights, self.dtype)

    def partials(self, theta, want_grad, weights=None, fold=False):
        """(partial sums of this shard's blocks (nb, P) or None, f_i of its tasks (float64)),
        with the shard's α (``weights``, kept for later calls, or the last ones set). ``fold``
        (the first shard): the blocks added in order, one row (see _fold)."""
        if weights is not None:
            self.set_weights(weights)
        theta = _fresh(theta, self.dtype)
        parts, losses = _core.block_partials(self.handle, self.plan, theta, self.weights,
                                             want_grad, self.n_threads)
        return (_fold(parts, theta, self.n_threads) if fold else parts), losses

    def task_grads(self, theta):
        """(∇f_i (tasks, P), f_i (tasks,)) of this shard's tasks: rows of the per-task gradient
        matrix a gradient-combining weighting needs."""
        return self.handle.task_grads(_fresh(theta, self.dtype), self.n_threads)

    def shared_task_grads(self, theta):
        """(rows, f_i, heads): this shard's per-task gradients, as few numbers as give them
        exactly. With per-task heads, row i holds the shared parameters and task i's own head
        only (S + H of P columns): its entries on the other heads are +0 (task i's loss does
        not use them), which the driver puts back (:func:`_expand_task_grads`); ``heads`` is
        then the head of each row. Without heads — or were an entry there not +0 — the full
        rows, and ``heads`` None."""
        G, losses = self.task_grads(theta)
        if self.heads is None:
            return G, losses, None
        S, H, ids = self.heads
        cols = S + ids[:, None] * H + np.arange(H)                 # (tasks, H): own heads
        rest = G[:, S:].copy()
        np.put_along_axis(rest, cols - S, 0, axis=1)
        if rest.view(np.uint8).any():            # not all +0 bits: send everything
            return G, losses, None
        return np.concatenate([G[:, :S], np.take_along_axis(G, cols, axis=1)], axis=1), \
            losses, ids

    def run_chunk(self, st, optimizer, weighting, n, record, l2, n_shared):
        """n steps of the shipped train state, full batch, by the core's own loop — when this one
        shard holds every task (RayBackend with one actor): one call per chunk of steps."""
        wcfg = weighting.core_config() if weighting is not None else None
        return _chunk_here(self.dtype, st, optimizer, lambda state, config: state.run_objective(
            self.handle, config, 0, 0, l2, n, self.n_threads, record, wcfg, n_shared))


class BatchWorker(_Worker):
    """All tasks and worker ``worker`` of ``n_workers``' share of every drawn batch (run as a Ray
    actor; plain class for tests): at step t it draws the batch a local step draws (the
    counter-based keys (seed, t)) and computes blocks [k·nb/K, (k+1)·nb/K) of its plan."""

    def __init__(self, model, X, y, offsets, n_support, task_ids, rows, dtype, batch_tasks,
                 batch_rows, worker, n_workers, n_threads):
        model = MLP.from_spec(model)
        ts = TaskSet(np.array(X), np.array(y), np.array(offsets), n_support=np.array(n_support),
                     task_ids=np.array(task_ids), dtype=np.dtype(dtype))
        self.dtype = np.dtype(dtype)
        self.obj = Objective(model, ts, rows=rows, n_threads=n_threads)
        cls = _core.MultiTaskBlocks32 if self.dtype == np.float32 else _core.MultiTaskBlocks64
        self.blocks = cls(self.obj.core_handle(self.dtype), batch_tasks, batch_rows)
        self.worker, self.n_workers, self.n_threads = worker, n_workers, n_threads
        self.batch = (batch_tasks, batch_rows)
        self.weights = None

    def set_weights(self, weights):
        self.weights = _fresh(weights, self.dtype)

    def partials(self, theta, seed, step, want_grad):
        """(partials of this worker's blocks of step ``step``'s batch (nb_k, P) or None, the
        summed loss of each of their units (float64), in unit order). Worker 0's blocks come
        first: it sends them added in order, one row (see _fold)."""
        theta = _fresh(theta, self.dtype)
        parts, unit_loss = self.blocks.partials(theta, self.weights, seed, step, self.worker,
                                                self.n_workers, want_grad, self.n_threads)
        if self.worker == 0:
            parts = _fold(parts, theta, self.n_threads)
        return parts, unit_loss

    def run_chunk(self, st, optimizer, weighting, n, record, l2, n_shared):
        """n steps of drawn batches by the core's own loop (RayBackend with one actor)."""
        wcfg = weighting.core_config() if weighting is not None else None
        handle = self.obj.core_handle(self.dtype)
        return _chunk_here(self.dtype, st, optimizer, lambda state, config: state.run_objective(
            handle, config, *self.batch, l2, n, self.n_threads, record, wcfg, n_shared))


class MetaWorker(_Worker):
    """The meta-learning problem's tasks and its share of every meta-step's blocks (run as a Ray
    actor; plain class for tests). ``problem`` is the :class:`~metacore.MetaObjective` itself
    (it pickles as plain data); the actor builds the same compiled meta-step a local fit does,
    so every learner the core knows runs here unchanged."""

    def __init__(self, problem, dtype, n_threads):
        self.dtype = np.dtype(dtype)
        self.n_threads = n_threads
        self.step = problem.core_step(self.dtype, n_threads)

    def meta_partials(self, theta, seed, step, b0, b1):
        """Blocks [b0, b1) of step ``step``: (partials (b1 − b0, P), query losses, support
        losses) of their tasks; from block 0, the partials added in order, one row (_fold)."""
        theta = _fresh(theta, self.dtype)
        parts, losses, support = self.step.block_partials(theta, seed, step, b0, b1)
        if b0 == 0:
            parts = _fold(parts, theta, self.n_threads)
        return parts, losses, support

    def run_chunk(self, st, optimizer, weighting, n, record, l2, n_shared):
        """n meta-steps by the core's own loop (RayBackend with one actor)."""
        return _chunk_here(self.dtype, st, optimizer, lambda state, config: state.run_meta(
            self.step, config, n, self.n_threads))


def plan_meta_blocks(n_blocks, n_workers):
    """Runs of consecutive blocks [b0, b1), one per actor: ``min(n_workers, n_blocks)`` runs of
    nearly equal length (a meta-batch's blocks hold nearly equal numbers of tasks)."""
    k = min(n_workers, n_blocks)
    cuts = [(i * n_blocks) // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


# --- the driver side -----------------------------------------------------------------------------
class RayBackend(Backend):
    """Compute each step's gradient on ``n_workers`` Ray actors; θ is bit-identical to a local fit.

    Multi-task, full batch (any weighting strategy): each actor holds one shard of consecutive
    tasks. Multi-task with ``batch_tasks``/``batch_rows``: each actor holds all tasks and computes
    a run of each drawn batch's reduction blocks. Meta-learning: each actor computes a run of each
    meta-batch's blocks. The module docstring describes the protocol.

    Parameters
    ----------
    n_workers : int >= 1
        Actors: one shard of consecutive tasks each (balanced by row count), or one run of
        each step's blocks.
    cpus_per_worker : int >= 1
        ``num_cpus`` reserved for each actor, and the core's thread count inside it (Ray would
        otherwise leave its workers at OMP_NUM_THREADS=1).
    max_restarts : int >= 0
        How often Ray restarts a dead actor (it then reloads its shard).
    max_retries : int >= 0
        How often the driver sends a step again to a shard whose actor died.
    address : None, "auto" or "ray://host:port" (or "host:port")
        The cluster to join when Ray is not initialised yet in this process: None starts a local
        one (or, as ``ray.init`` does, joins the cluster ``RAY_ADDRESS`` names when that is
        set); "auto" joins the cluster in ``RAY_ADDRESS`` or started on this machine by ``ray
        start --head``; a ``ray://`` address joins a remote cluster through Ray Client (about
        twice the per-step cost of "host:port"); "host:port" joins the head node's GCS. When Ray
        is already initialised, the existing connection is used. Connecting is Ray's: an
        address that does not answer is retried by Ray, without ``step_timeout_s``.
    worker_class : type
        The actor class: :class:`ShardWorker` (multi-task) or :class:`MetaWorker`
        (meta-learning), or a subclass of one (to instrument the actors); None: the one the
        problem needs.
    step_timeout_s : float > 0 or None
        How long the driver waits for one actor's part of a step (default 60 s). Past it the actor
        is treated as lost: killed, restarted by Ray (counts against ``max_restarts``), and sent
        the step again (counts against ``max_retries``). None waits for ever. With
        ``remote_chunks`` and one actor, a call is a chunk of steps (fit sizes chunks to about
        0.25 s), waited for as long. Starting or restarting an actor is not a step: it has its
        own limit, ``start_timeout_s``.
    start_timeout_s : float > 0
        How long the driver waits for actors to start — at the first fit (a process each, its
        imports and its shard) and after a restart (default 120 s). A cluster given by
        ``address`` that has no room for them yet, a machine too busy to start them, or an
        actor that does not come back is an error past it, naming the CPUs asked for. Always
        finite: an actor whose restarts ran out would otherwise be waited for for ever.
    remote_chunks : bool
        With one actor (it then holds the whole problem), let it run whole chunks of steps with
        the core's own loop from a copy of the train state: one round trip per chunk instead of
        one per step, the same θ. False: step by step, as with several actors.

    Use it as ``mc.fit(obj, theta0, backend=RayBackend(2, 1))`` for a multi-task
    :class:`~metacore.Objective` or ``mc.fit(mc.MetaObjective(...), theta0,
    backend=RayBackend(2, 1))`` for meta-learning; the actors stay up for more fits on the same
    problem until :meth:`close` (or the end of a ``with`` block), which kills them; a fit with
    a closed backend raises ValueError.

    Raises ValueError/TypeError naming the argument for a bad setting, and RuntimeError when an
    actor stays dead or stalled past ``max_retries`` tries of one step.
    """

    def __init__(self, n_workers=2, cpus_per_worker=1, *, max_restarts=3, max_retries=3,
                 address=None, worker_class=None, step_timeout_s=60.0, start_timeout_s=120.0,
                 remote_chunks=True):
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
        self.start_timeout_s = _validation.real("start_timeout_s", start_timeout_s, minimum=0.0,
                                                min_open=True)
        if worker_class is not None and not (
                isinstance(worker_class, type) and issubclass(worker_class,
                                                              (ShardWorker, MetaWorker,
                                                               BatchWorker))):
            raise TypeError(f"worker_class must be None, ShardWorker, BatchWorker, MetaWorker "
                            f"or a subclass of one, got {worker_class!r}")
        self.worker_class = worker_class
        self.remote_chunks = _validation.boolean("remote_chunks", remote_chunks)
        self._key = None
        self._actors = []
        self._refs = []
        self.retries = 0          # steps sent again after an actor died or stalled
        self.meta = False         # the attached problem is a MetaObjective
        self.batched = False      # multi-task with batch_tasks/batch_rows (BatchWorker actors)
        self._closed = False      # close() ran (the end of a with block): no more fits

    def __repr__(self):
        return (f"RayBackend(n_workers={self.n_workers}, cpus_per_worker={self.cpus_per_worker}, "
                f"step_timeout_s={self.step_timeout_s}, start_timeout_s={self.start_timeout_s})")

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
        stops the local cluster it started: no process is left behind. While other open
        backends of this process still use that connection, it stays up and the last of them
        to close disconnects. Never raises; closing twice does nothing."""
        self._stop_actors()
        _USERS.discard(self)
        if _LOCAL["connected"] and not _USERS:   # the last open backend on that connection
            if self.ray.is_initialized():
                self.ray.shutdown()
            _LOCAL.update(connected=False, local=False)
        self._closed = True

    def held_cpus(self) -> int:
        """The CPUs this backend's actors reserve now (0 before a fit and after stop_actors)."""
        return len(self._actors) * self.cpus_per_worker

    def stop_actors(self):
        """Kills the actors and frees their CPUs, keeping the backend usable: the next fit
        starts new ones (close() also disconnects Ray and ends the backend)."""
        self._stop_actors()

    # --- set-up ------------------------------------------------------------------------------
    def _stop_actors(self):
        if self.ray.is_initialized():   # after a shutdown the actors are gone already
            for a in self._actors:
                try:
                    self.ray.kill(a, no_restart=True)
                except Exception:       # noqa: BLE001 — an actor of an ended session is gone
                    pass
        self._actors, self._refs, self._key = [], [], None
        self._obj = None

    def _wait_ready(self):
        """Blocks until every actor is up. Actors that ask for more CPUs than the cluster has
        would wait for ever: refused up front on the local cluster this backend started, and
        on any cluster given up after ``start_timeout_s`` with the reason."""
        ray = self.ray
        n = len(self._actors)
        want = n * self.cpus_per_worker
        have = int(ray.cluster_resources().get("CPU", 0))
        # a local cluster a backend of this process started cannot grow: refuse at once, also
        # when the actors of this process's other backends hold the CPUs it would need
        held = sum(b.held_cpus() for b in list(_USERS) if b is not self)
        if _LOCAL["local"] and want > have - held:
            self._stop_actors()
            others = (f", of which the actors of this process's other RayBackend(s) hold {held} "
                      f"(close() them, or free their CPUs with stop_actors())" if held else "")
            raise ValueError(f"n_workers × cpus_per_worker: {want} CPUs asked for ({n} actors "
                             f"× {self.cpus_per_worker}), but the local Ray cluster has "
                             f"{have}{others}; use fewer workers or CPUs per worker")
        refs = [a.ready.remote() for a in self._actors]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
        if pending:
            self._stop_actors()
            raise RuntimeError(f"{len(pending)} of {n} actors did not start within "
                               f"start_timeout_s={self.start_timeout_s} s: the cluster has "
                               f"{have} CPUs for n_workers × cpus_per_worker = {want} (or "
                               f"is busy)")
        ray.get(ready)

    def _worker_class(self, meta, batched):
        want = MetaWorker if meta else BatchWorker if batched else ShardWorker
        cls = self.worker_class or want
        if not issubclass(cls, want):
            what = ("a MetaObjective" if meta else "an Objective with batch_tasks/batch_rows"
                    if batched else "a full-batch Objective")
            raise TypeError(f"worker_class {cls.__name__} does not run {what}: it must be "
                            f"{want.__name__} or a subclass of it")
        return cls

    def attach(self, obj, dtype, alpha, batch_tasks=None, batch_rows=None, weighting=None,
               optimizer=None):
        """Ships ``obj``'s tasks (once per problem, dtype and batch setting) and, for a multi-task
        objective, the weights α. ``obj``: an Objective or a MetaObjective; ``batch_tasks``,
        ``batch_rows``, ``weighting`` (a :mod:`metacore.weighting` strategy or None) and
        ``optimizer``: fit's. With the optimizer known and one actor, a call runs a whole chunk
        of steps on the actor."""
        if self._closed:   # else a fit after the with block would start a new local Ray
            raise ValueError("backend: this RayBackend was closed (its with block ended or "
                             "close() ran) and its actors are gone; create a new RayBackend")
        meta = isinstance(obj, MetaObjective)
        batched = not meta and (batch_tasks is not None or batch_rows is not None)
        batch = (batch_tasks or 0, batch_rows or 0) if batched else None
        cls = self._worker_class(meta, batched)
        ray = self.ray
        dtype = np.dtype(dtype)
        key = (id(obj), dtype.str, batch)
        if self._key != key:
            self._stop_actors()
            if not ray.is_initialized():
                _LOCAL.update(connected=False, local=False)   # not ours, or shut down since
                local = self.address is None and not os.environ.get("RAY_ADDRESS")
                if local:
                    ray.init(address="local", _system_config=RAY_SYSTEM_CONFIG)   # a new one
                else:
                    ray.init(address=self.address)
                _LOCAL.update(connected=True, local=local)
            _USERS.add(self)
            if meta:
                self._start_meta(obj, dtype, cls)
            elif batched:
                self._start_batch(obj, dtype, cls, batch)
            else:
                self._start(obj, dtype, cls)
            self._key, self._obj = key, obj      # keep obj alive: its id keys the actors
        self.meta, self.batched = meta, batched
        self.optimizer, self.weighting_obj = optimizer, weighting
        if meta:
            return
        self.batch = batch or (0, 0)
        self.weighting = weighting.core_config() if weighting is not None else None
        # α may change at every step under a strategy: sent with each step's calls then (a
        # drawn batch's workers hold α for a chunk: strategies that change it per step need
        # every task and row)
        self.alpha_per_step = self.weighting is not None and not batched
        model = obj.model
        self.n_shared = model.n_shared_params if model.task_heads else obj.n_params
        self.head_layout = (model.n_shared_params, model.n_head_params)
        self.alpha = None
        self._set_alpha(alpha)

    def _set_alpha(self, alpha):
        """Sends α to the actors when it differs from what they hold."""
        alpha = np.array(alpha, dtype=self.dtype)
        if self.alpha is not None and np.array_equal(alpha, self.alpha):
            return
        self.ray.get([self._actors[k].set_weights.remote(self._alpha_of(k, alpha))
                      for k in range(len(self._actors))])
        self.alpha = alpha

    def _alpha_of(self, k, alpha):
        if self.batched:
            return alpha
        s = self.shards[k]
        return alpha[s["task_lo"]:s["task_hi"]]

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
        self._wait_ready()

    def _start_batch(self, obj, dtype, cls, batch):
        ray = self.ray
        ts = obj.ts.astype(dtype)
        self.dtype, self.n_params, self.l2 = dtype, obj.n_params, obj.l2
        self._handle = obj.core_handle(dtype)     # the driver's: draws and evaluates
        # Every actor holds all tasks (a drawn batch's blocks span them); one copy in the store.
        self._refs = [ray.put(a) for a in (ts.X, ts.y, ts.offsets, ts.n_support, ts.task_ids)]
        cls = self._options(cls)
        K = self.n_workers
        self._actors = [cls.remote(obj.model.spec(), *self._refs, obj.rows, dtype.str, *batch,
                                   k, K, self.cpus_per_worker) for k in range(K)]
        self._wait_ready()

    def _start(self, obj, dtype, cls):
        ray = self.ray
        ts = obj.ts.astype(dtype)
        self.dtype, self.n_params, self.l2 = dtype, obj.n_params, obj.l2
        self._handle = obj.core_handle(dtype)
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
        self._wait_ready()

    # --- one evaluation of f (and ∇f) --------------------------------------------------------
    def value_and_grad(self, theta, want_grad=True, n_threads=None, alpha=None):
        """(f(θ), ∇f(θ) or None, f_i (T,)) over all tasks and rows, with α (default: the last
        sent) — bit-identical to the local objective's. With batch_tasks/batch_rows the driver
        computes it itself (an evaluation, not a step)."""
        theta = np.array(theta, dtype=self.dtype)
        if alpha is not None:
            self._set_alpha(alpha)
        if self.batched:
            return self._handle.value_and_grad(theta, self.alpha, self.l2, want_grad, n_threads)
        parts, task_loss = self._shard_partials(theta, want_grad, None)
        return _core.combine_partials(parts, task_loss, self.task_rows, self.alpha, theta,
                                      self.l2, n_threads)

    def _shard_partials(self, theta, want_grad, alpha):
        """Every shard's block partials (nb, P) in block order (None without want_grad) and f_i
        (T,) in task order; α sent along when given."""
        ref = self._share(theta)
        results = self._call("partials", lambda k: (
            ref, want_grad, None if alpha is None else _raw(self._alpha_of(k, alpha)), k == 0))
        first = len(self.shards[0]["block_start"]) - 1
        parts = _concat([r[0] for r in results], self.dtype, first) if want_grad else None
        return parts, _concat([r[1] for r in results], np.float64)

    def _batch_partials(self, theta, seed, step, n_blocks):
        """All blocks' partials of step ``step``'s drawn batch (nb, P) and every unit's loss."""
        ref = self._share(theta)
        results = self._call("partials", lambda k: (ref, seed, step, True))
        first = n_blocks // len(self._actors)      # worker 0's blocks
        return (_concat([r[0] for r in results], self.dtype, first),
                _concat([r[1] for r in results], np.float64))

    def _task_grads(self, theta, alpha):
        ref = self._share(theta)
        results = self._call("shared_task_grads", lambda k: (ref,))
        S, H = self.head_layout
        rows = [_expand_task_grads(r[0], r[2], S, H, self.n_params, self.dtype)
                for r in results]
        return (_concat(rows, self.dtype),
                _concat([r[1] for r in results], self.dtype))

    def meta_partials(self, theta, seed, step):
        """All blocks' partials (n_blocks, P) in block order and the meta-batch's query and
        support losses (meta_batch,) of step ``step`` at θ, from the actors."""
        theta = np.array(theta, dtype=self.dtype)
        ref = self._share(theta)
        results = self._call("meta_partials", lambda k: (ref, seed, step, *self.ranges[k]))
        return tuple(_fresh(np.concatenate([r[i] for r in results]), dt)
                     for i, dt in enumerate((self.dtype, np.float64, np.float64)))

    def run_chunk(self, state, config, n, n_threads=None, record=False):
        """n steps of ``state`` (a core train state) with the actors' partials and each step
        finished by the core's own step tail: the same typed ``ChunkResult`` as a local chunk.
        Multi-task: full-batch f and ∇f; meta-learning: the step's meta-gradient. With one actor
        (it holds the whole problem) the actor runs the chunk with the core's own loop: one
        round trip per chunk instead of per step."""
        if self.remote_chunks and self.optimizer is not None and len(self._actors) == 1:
            return self._remote_chunk(state, n, record)
        if self.meta:
            out = _core.ChunkResult(n, 0, False)
            try:
                for j in range(n):
                    parts, losses, support = self.meta_partials(state.theta, state.seed,
                                                                state.step)
                    if not _core.take_meta_step(state, out, j, config, parts, losses, support,
                                                n_threads):
                        break
            except KeyboardInterrupt as e:     # the state is at its last finished step
                e.chunk = out
                raise
            return out
        self._set_alpha(state.alpha)      # EvalDriven may have changed α between chunks
        cls = _core.MultiTaskDriver32 if self.dtype == np.float32 else _core.MultiTaskDriver64
        driver = cls(self._handle, *self.batch, self.l2, self.weighting, self.n_shared)
        out = _core.ChunkResult(n, self.alpha.shape[0], record)
        try:
            for j in range(n):
                if not self._multitask_step(driver, state, out, j, config, n_threads):
                    break
        except KeyboardInterrupt as e:
            e.chunk = out
            raise
        finally:
            self.alpha = None if self.alpha_per_step else self.alpha
        return out

    def _remote_chunk(self, state, n, record):
        """The chunk run by the one actor from a copy of the train state; the state it ends in
        is restored here (the same bits: the core's loop, any thread count)."""
        st = _state_arrays(state)
        model_l2 = 0.0 if self.meta else self.l2
        n_shared = 0 if self.meta else self.n_shared
        new, out = self._gather(lambda k: self._actors[k].run_chunk.remote(
            st, self.optimizer, self.weighting_obj, n, record, model_l2, n_shared))[0]
        _restore(state, new, self.dtype)
        if not self.meta and not self.batched:
            self.alpha = None        # α moved with the state; sent again when needed
        return out

    def _multitask_step(self, driver, state, out, j, config, n_threads):
        """Step j: the driver's MultiTaskStep (batch draw, weighting, combination, update) with
        what the actors computed at θ in place of its own objective's passes."""
        need = driver.begin(state)        # draws the batch; sets α unless it needs this step's
        try:
            theta = np.array(state.theta)
            if need == "task_grads":      # gradient-combining strategies: the rows of G
                G, losses = self._task_grads(theta, None)
                return driver.finish_task_grads(state, out, j, config, G, losses, n_threads)
            if self.batched:
                parts, unit_loss = self._batch_partials(theta, state.seed, state.step,
                                                        driver.n_blocks)
                return driver.finish_partials(state, out, j, config, parts, unit_loss, True,
                                              n_threads)
            alpha = np.array(state.alpha) if self.alpha_per_step else None
            if need == "losses_first":    # FAMO: α from this step's losses, then the gradient
                _, task_loss = self._shard_partials(theta, False, alpha)
                driver.losses_first(state, task_loss)
                alpha = np.array(state.alpha)
            parts, task_loss = self._shard_partials(theta, True, alpha)
            return driver.finish_partials(state, out, j, config, parts, task_loss, False,
                                          n_threads)
        except BaseException:
            driver.undo(state)            # the step was not applied: α and the strategy's state
            raise

    def _share(self, theta):
        """θ as the actors' calls take it: put once in the object store (every actor on a node
        then reads the one copy) when it is large; a small θ travels inside each call instead, as
        raw bytes, which costs less than a put (Ray inlines arguments under 100 KiB anyway)."""
        return self.ray.put(theta) if theta.nbytes > INLINE_BYTES else _raw(theta)

    def _call(self, method, args_of):
        """Every actor's answer to ``method(*args_of(k))`` in actor order, as arrays: one call per
        actor and step, its answer one packed message (:func:`_pack`)."""
        ref_type = self.ray.ObjectRef
        return [_unpack(m) for m in self._gather(
            lambda k: self._actors[k].packed.remote(*_request(method, args_of(k), ref_type)))]

    def _gather(self, send):
        """The answers of every actor to ``send(k)`` (a Ray call to actor k), in actor order. An
        actor that died, or did not answer within step_timeout_s, is restarted and sent the same
        call again (the calls are pure functions of their arguments and the actor's tasks)."""
        ray = self.ray
        futures = [send(k) for k in range(len(self._actors))]
        try:                          # the common case: one wait for all
            return ray.get(futures, timeout=self.step_timeout_s)
        except ray.exceptions.RayTaskError as e:  # the call raised: no retry, the user's error
            raise _own_error(ray, e) from None
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
            except ray.exceptions.RayTaskError as e:
                raise _own_error(ray, e) from None
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
        if self.meta or self.alpha is None:      # α then travels with every call
            return self._actors[k].ready.remote()
        return self._actors[k].set_weights.remote(self._alpha_of(k, self.alpha))

    def _wait_restarted(self, k, error):
        """Blocks until shard k's actor answers again (Ray restarts it and it reloads its shard),
        up to ``start_timeout_s``."""
        errors = _actor_errors(self.ray) + (self.ray.exceptions.GetTimeoutError,)
        timeout = self.start_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ray.get(self._resync(k),
                                    timeout=max(deadline - time.monotonic(), 0.0))
            except errors:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"shard {k}'s actor did not come back within "
                                       f"start_timeout_s={timeout} s "
                                       f"(max_restarts={self.max_restarts})") from error
                time.sleep(0.2)


def _concat(arrays, dtype, first_rows=None):
    """One C-contiguous array of the canonical dtype from the actors' answers in actor order
    (one copy; an actor with no blocks answers None or an empty array). ``first_rows``: the
    first actor's block count, when it may have sent its blocks folded into one row (_fold):
    the row is then followed by zero rows, so the array has every block's row."""
    arrays = [a for a in arrays if a is not None]
    pad = 0
    if first_rows is not None and arrays and 0 < arrays[0].shape[0] < first_rows:
        pad = first_rows - arrays[0].shape[0]
    if len(arrays) == 1 and not pad:
        return _fresh(arrays[0], dtype)
    n = sum(a.shape[0] for a in arrays) + pad
    out = np.empty((n,) + arrays[0].shape[1:], dtype=np.dtype(dtype).type)
    at = 0
    for i, a in enumerate(arrays):
        out[at:at + a.shape[0]] = a
        at += a.shape[0]
        if i == 0 and pad:
            out[at:at + pad] = 0
            at += pad
    return out


def _expand_task_grads(rows, heads, S, H, n_params, dtype):
    """A shard's per-task gradients (tasks, P) from :meth:`ShardWorker.shared_task_grads`'
    answer: ``rows`` as sent when ``heads`` is None; else the S shared columns and each task's
    own head (H columns, head ``heads[i]``) put in place and +0 elsewhere — the bits the actor
    computed."""
    if heads is None:
        return rows
    out = np.zeros((rows.shape[0], n_params), dtype=np.dtype(dtype).type)
    out[:, :S] = rows[:, :S]
    np.put_along_axis(out, S + np.asarray(heads)[:, None] * H + np.arange(H), rows[:, S:],
                      axis=1)
    return out


def _own_error(ray, error):
    """The exception an actor's method raised (a bad drawn batch's ValueError, a TypeError…),
    itself: the type and message a local fit raises, not Ray's RayTaskError wrapper. The actor's
    traceback is kept as a note. An error Ray could not rebuild stays wrapped."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, Exception) or isinstance(cause, ray.exceptions.RayError):
        return error
    tb = getattr(error, "traceback_str", "")
    if hasattr(cause, "add_note") and tb:
        cause.add_note(f"raised on a Ray actor:\n{tb.rstrip()}")
    return cause


def _actor_errors(ray):
    ex = ray.exceptions
    return tuple(getattr(ex, n) for n in ("RayActorError", "ActorDiedError",
                                          "ActorUnavailableError") if hasattr(ex, n))


