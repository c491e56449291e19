"""Multi-task training on the Ray backend is the local run bit for bit — with batch_tasks and
batch_rows (every worker holds all tasks and computes a run of each drawn batch's reduction
blocks) and with every weighting strategy of metacore.weighting (loss-based ones from the
shards' task losses, gradient-based ones from the shards' rows of the per-task gradient matrix),
for any number of workers. The driver runs the local step (MultiTaskStep: draw, weighting,
combination, update) on what the workers return.

These run RayBackend with its actors in this process (Ray's calls replaced by direct ones), so
they check the arithmetic in seconds and need no Ray; test_distributed.py runs the same paths on
real Ray actors, with an actor killed or stalled mid-run."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metacore as mc
from metacore import _core
from metacore.train import backends
from metacore.train.backends import BatchWorker


# --- Ray's calls, in this process ---------------------------------------------------------------
class _Done:
    def __init__(self, value):
        self.value = value


class _Stored:
    """An object in the fake object store (what ray.put returns)."""

    def __init__(self, value):
        self.value = value


def _resolved(a):
    return a.value if isinstance(a, _Stored) else a


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        # as Ray does: an object reference passed as an argument arrives as its value
        return _Done(self.fn(*map(_resolved, args),
                             **{k: _resolved(v) for k, v in kwargs.items()}))


class _ActorHandle:
    def __init__(self, instance):
        self._instance = instance

    def __getattr__(self, name):
        return _Method(getattr(self._instance, name))


class _ActorClass:
    def __init__(self, cls):
        self.cls = cls

    def options(self, **kwargs):
        return self

    def remote(self, *args, **kwargs):
        return _ActorHandle(self.cls(*map(_resolved, args),
                                     **{k: _resolved(v) for k, v in kwargs.items()}))


class InProcessRay:
    """What RayBackend calls of Ray, run here: actors are plain objects, calls return at once."""

    class exceptions:
        GetTimeoutError = type("GetTimeoutError", (Exception,), {})
        RayActorError = type("RayActorError", (Exception,), {})

    ObjectRef = _Stored
    calls = 0

    def is_initialized(self):
        return True

    def put(self, x):
        return _Stored(x)

    def get(self, x, timeout=None):
        InProcessRay.calls += 1
        return [f.value for f in x] if isinstance(x, list) else x.value

    def remote(self, cls):
        return _ActorClass(cls)

    def kill(self, actor, no_restart=True):
        pass

    def cluster_resources(self):
        return {"CPU": 1024}

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs), []           # every actor is up at once


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(backends, "_import_ray", InProcessRay)


# --- problems -----------------------------------------------------------------------------------
def objective(n_tasks=6, heads=False, max_rows=60, dtype=np.float32, seed=3):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, max_rows, size=n_tasks)
    Xs = [rng.normal(size=(n, 3)) for n in sizes]
    ys = [np.sin(x.sum(axis=1) + i) for i, x in enumerate(Xs)]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=2, dtype=dtype)
    model = mc.MLP([3, 6, 1], activation="tanh", task_heads=n_tasks if heads else None)
    return mc.Objective(model, ts, l2=0.01), model.init(seed=1, dtype=dtype)


def strategy(name, n_tasks):
    cls = mc.weighting.BY_NAME[name]
    if name == "Fixed":
        a = np.linspace(1.0, 2.0, n_tasks)
        return cls(a / a.sum())
    if name == "EvalDriven":
        return cls(eval_every=2)
    return cls()


def fit_kwargs(**kw):
    return {**dict(optimizer=mc.optim.Adam(lr=0.05), steps=7, eval_every=3, progress=False,
                   record_task_losses=True), **kw}


def assert_same_run(dist, local):
    np.testing.assert_array_equal(dist.theta, local.theta)
    h, g = dist.history, local.history
    for name in ("objective", "grad_norm", "task_losses", "weights", "train_loss",
                 "step_task_losses", "step_weights"):
        np.testing.assert_array_equal(getattr(h, name), getattr(g, name), err_msg=name)
    np.testing.assert_array_equal(dist.weighting_state, local.weighting_state)
    assert dist.step == local.step


# --- every weighting strategy, full batch ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(mc.weighting.BY_NAME))
@pytest.mark.parametrize("n_workers,heads,chunks", [(1, False, True), (1, False, False),
                                                    (3, False, True), (2, True, True)])
def test_every_weighting_on_workers_gives_the_local_run(in_process, name, n_workers, heads,
                                                        chunks):
    """Several workers: step by step. One worker: by default it runs whole chunks with the
    core's loop (remote_chunks), else step by step."""
    obj, theta = objective(heads=heads)
    local = mc.fit(obj, theta, **fit_kwargs(weighting=strategy(name, obj.n_tasks)))
    with mc.distributed.RayBackend(n_workers, 1, remote_chunks=chunks) as backend:
        dist = mc.fit(obj, theta, **fit_kwargs(weighting=strategy(name, obj.n_tasks),
                                               backend=backend))
    assert_same_run(dist, local)
    assert dist.steps_run == 7 and np.isfinite(dist.theta).all()
    assert not np.array_equal(dist.theta, theta)      # the run trained


def test_adaptive_strategies_really_move_the_weights(in_process):
    """The runs above compare α over time: here α is seen to change from step to step, so the
    comparison is about a live weighting (loss-based and gradient-based)."""
    obj, theta = objective()
    for name in ("DWA", "Uncertainty", "RLW", "FAMO", "GradNorm", "MGDA", "CAGrad"):
        with mc.distributed.RayBackend(2, 1) as backend:
            res = mc.fit(obj, theta, **fit_kwargs(weighting=strategy(name, obj.n_tasks),
                                                  backend=backend))
        w = res.history.step_weights
        assert np.isfinite(w).all(), name
        assert np.ptp(w, axis=0).max() > 0.0, name


def test_float64_and_a_resumed_run_with_a_gradient_strategy(in_process, tmp_path):
    obj, theta = objective(dtype=np.float64, heads=True)
    kw = fit_kwargs(weighting=mc.weighting.GradVac())
    whole = mc.fit(obj, theta, **kw)
    with mc.distributed.RayBackend(2, 1) as backend:
        first = mc.fit(obj, theta, **{**kw, "steps": 4, "backend": backend})
        path = tmp_path / "ck"
        mc.save(path, first)
        rest = mc.fit(obj, mc.load(path), **{**kw, "steps": 3, "weighting": None,
                                             "backend": backend})
    np.testing.assert_array_equal(rest.theta, whole.theta)
    np.testing.assert_array_equal(rest.weighting_state, whole.weighting_state)


# --- drawn batches ------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_tasks,batch_rows", [(4, None), (None, 1500), (5, 1100), (1, 7)])
@pytest.mark.parametrize("n_workers,chunks", [(1, True), (1, False), (2, True), (5, True)])
def test_drawn_batches_on_workers_give_the_local_run(in_process, batch_tasks, batch_rows,
                                                     n_workers, chunks):
    # tasks of up to 3,000 rows: a task's rows span several work units, and a drawn batch's
    # units of one task can fall in two workers' blocks (the units' losses are added on the
    # driver in unit order); batch (1, 7) has fewer blocks than 5 workers (idle workers)
    obj, theta = objective(n_tasks=9, max_rows=3000)
    kw = fit_kwargs(batch_tasks=batch_tasks, batch_rows=batch_rows)
    local = mc.fit(obj, theta, **kw)
    with mc.distributed.RayBackend(n_workers, 1, remote_chunks=chunks) as backend:
        dist = mc.fit(obj, theta, **{**kw, "backend": backend})
    assert_same_run(dist, local)
    assert not np.array_equal(dist.theta, theta)


def test_drawn_batches_with_evaluation_driven_weights(in_process):
    obj, theta = objective(n_tasks=8, max_rows=400)
    kw = fit_kwargs(batch_tasks=3, batch_rows=50)
    local = mc.fit(obj, theta, **kw, weighting=strategy("EvalDriven", obj.n_tasks))
    with mc.distributed.RayBackend(3, 1) as backend:
        dist = mc.fit(obj, theta, **kw, weighting=strategy("EvalDriven", obj.n_tasks),
                      backend=backend)
    assert_same_run(dist, local)
    assert np.ptp(dist.history.weights, axis=0).max() > 0.0     # α was set from evaluations


def test_workers_cover_each_drawn_batch_s_blocks_once_in_order():
    """Worker k of K computes blocks [k·nb/K, (k+1)·nb/K) of the step's batch: together every
    block once, and the units' losses cover the batch's units. The driver's step adds them to
    the local numbers: the update equals a local one-step chunk's."""
    obj, theta = objective(n_tasks=9, max_rows=3000)
    ts = obj.ts
    alpha = obj.weights.astype(np.float32)
    K = 4
    workers = [BatchWorker(obj.model.spec(), ts.X, ts.y, ts.offsets, ts.n_support, ts.task_ids,
                           "all", "<f4", 5, 1500, k, K, 1) for k in range(K)]
    for w in workers:
        w.set_weights(alpha)
    answers = [w.partials(theta, 0, 3, True) for w in workers]
    config = mc.optim.Adam(lr=0.05).core_config()
    state = _core.TrainState32(theta, config, alpha, 0, 0)
    state.restore(theta, np.zeros_like(theta), np.zeros_like(theta), alpha, np.zeros(0), 3)
    driver = _core.MultiTaskDriver32(obj.core_handle(np.float32), 5, 1500, obj.l2, None,
                                     obj.n_params)
    assert driver.begin(state) == "partials"
    nb = driver.n_blocks
    # worker 0 sends its blocks added in order (one row); the others one row per block
    assert nb > K and answers[0][0].shape == (1, obj.n_params)
    assert [a[0].shape[0] for a in answers[1:]] == [(k + 1) * nb // K - k * nb // K
                                                   for k in range(1, K)]
    parts = backends._concat([a[0] for a in answers], np.float32, nb // K)
    unit_loss = np.concatenate([a[1] for a in answers])
    assert parts.shape == (nb, obj.n_params)
    out = _core.ChunkResult(1, obj.n_tasks, True)
    assert driver.finish_partials(state, out, 0, config, parts, unit_loss, True)

    ref = _core.TrainState32(theta, config, alpha, 0, 0)
    ref.restore(theta, np.zeros_like(theta), np.zeros_like(theta), alpha, np.zeros(0), 3)
    ref_out = ref.run_objective(obj.core_handle(np.float32), config, 5, 1500, obj.l2, 1, None,
                                True, None, obj.n_params)
    np.testing.assert_array_equal(np.array(state.theta), np.array(ref.theta))
    np.testing.assert_array_equal(out.objective, ref_out.objective)
    np.testing.assert_array_equal(out.task_losses, ref_out.task_losses)
    # a wrong number of unit losses is refused, naming the argument
    state.restore(theta, np.zeros_like(theta), np.zeros_like(theta), alpha, np.zeros(0), 3)
    driver.begin(state)
    with pytest.raises(ValueError, match="task_losses"):
        driver.finish_partials(state, out, 0, config, parts, unit_loss[:-1], True)


def test_the_drawn_batch_objective_matches_the_reference_on_its_rows(in_process):
    """An independent check of the step's value: the first step's objective on the workers is
    Σ_i α_i·T/k·f_i over the drawn tasks' rows (+ λ/2‖θ‖²), f_i computed by metacore.reference
    on all rows of the drawn tasks (batch_rows None keeps every row of a drawn task)."""
    obj, theta = objective(n_tasks=8, max_rows=200, dtype=np.float64)
    with mc.distributed.RayBackend(3, 1) as backend:
        res = mc.fit(obj, theta, **fit_kwargs(batch_tasks=3, steps=1))
    drawn = np.flatnonzero(np.isfinite(res.history.step_task_losses[0]))
    assert drawn.size == 3
    sub = obj.ts.subset(drawn)
    w = np.full(3, 1.0 / 8 * 8 / 3)
    value, _ = mc.reference.objective_value_and_grad(obj.model, sub, theta, weights=w,
                                                     l2=obj.l2)
    np.testing.assert_allclose(res.history.objective[0], value, rtol=1e-12)


# --- one actor: a chunk of steps per call ---------------------------------------------------------
def test_one_worker_runs_chunks_in_fewer_calls_than_steps(in_process):
    obj, theta = objective()
    kw = dict(optimizer=mc.optim.Adam(lr=0.05), steps=40, eval_every=20, progress=False,
              chunk_size=10, weighting=mc.weighting.DWA())
    local = mc.fit(obj, theta, **kw)
    for chunks in (True, False):
        with mc.distributed.RayBackend(1, 1, remote_chunks=chunks) as backend:
            InProcessRay.calls = 0
            dist = mc.fit(obj, theta, **kw, backend=backend)
        np.testing.assert_array_equal(dist.theta, local.theta)
        if chunks:      # 4 chunks + 3 evaluations and α updates, not 40 steps
            assert InProcessRay.calls < 15
        else:
            assert InProcessRay.calls >= 40


def test_a_diverging_chunk_on_one_worker_stops_as_locally(in_process):
    obj, theta = objective(dtype=np.float64)
    kw = dict(optimizer=mc.optim.SGD(lr=1e200), steps=6, progress=False)
    with pytest.raises(mc.FitDivergedError) as local:
        mc.fit(obj, theta, **kw)
    with mc.distributed.RayBackend(1, 1) as backend:
        with pytest.raises(mc.FitDivergedError) as dist:
            mc.fit(obj, theta, **kw, backend=backend)
    assert str(dist.value) == str(local.value)
    np.testing.assert_array_equal(dist.value.result.theta, local.value.result.theta)


@pytest.mark.parametrize("n_workers", [1, 2])
def test_meta_learning_on_one_worker_runs_chunks_with_the_local_theta(in_process, n_workers):
    model = mc.MLP([1, 5, 1], activation="tanh")
    meta = mc.MetaObjective(mc.MAML(model, inner_lr=0.01),
                            mc.tasks.SinusoidSource(k_support=3, k_query=4), meta_batch=9)
    theta = model.init(seed=2)
    kw = dict(optimizer=mc.optim.Adam(lr=0.01), steps=8, eval_every=4, progress=False)
    local = mc.fit(meta, theta, **kw)
    with mc.distributed.RayBackend(n_workers, 1) as backend:
        dist = mc.fit(meta, theta, **kw, backend=backend)
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.support_loss, local.history.support_loss)


def test_a_chunk_result_pickles_with_every_field():
    """A chunk run by an actor comes back pickled."""
    import pickle
    obj, theta = objective()
    config = mc.optim.Adam(lr=0.05).core_config()
    state = _core.TrainState32(theta, config, obj.weights.astype(np.float32), 0, 0)
    out = state.run_objective(obj.core_handle(np.float32), config, 2, 0, 0.0, 3, None, True,
                              None, obj.n_params)
    back = pickle.loads(pickle.dumps(out))
    assert (back.n_steps, back.n_tasks, back.steps_done, back.status) == (3, 6, 3, "ok")
    for name in ("objective", "grad_norm", "lr", "support_loss", "task_losses", "alpha"):
        np.testing.assert_array_equal(getattr(back, name), getattr(out, name), err_msg=name)
    with pytest.raises(ValueError, match="not a pickled ChunkResult"):
        _core.ChunkResult.__new__(_core.ChunkResult).__setstate__((1, 2))


def test_a_closed_backend_refuses_a_fit_and_stopped_actors_restart(in_process):
    obj, theta = objective()
    kw = dict(optimizer=mc.optim.Adam(lr=0.05), steps=3, progress=False)
    local = mc.fit(obj, theta, **kw)
    backend = mc.distributed.RayBackend(2, 1)
    first = mc.fit(obj, theta, **kw, backend=backend)
    backend.stop_actors()              # the next fit starts new actors
    again = mc.fit(obj, theta, **kw, backend=backend)
    np.testing.assert_array_equal(first.theta, local.theta)
    np.testing.assert_array_equal(again.theta, local.theta)
    backend.close()
    with pytest.raises(ValueError, match="was closed"):
        mc.fit(obj, theta, **kw, backend=backend)


@given(st.lists(st.one_of(st.none(), st.tuples(st.sampled_from(["<f4", "<f8", "<i8"]),
                                               st.lists(st.integers(0, 5), max_size=3))),
                max_size=4))
@settings(max_examples=40, deadline=None)
def test_an_answer_packed_into_one_buffer_unpacks_to_the_same_arrays(spec):
    """The wire format of an actor's answer (backends._pack/_unpack): every array back with its
    dtype, shape and bits, None where None was, however many and whatever their sizes."""
    rng = np.random.default_rng(len(spec))
    values = tuple(None if s is None else
                   (rng.normal(size=s[1]) * 1e3).astype(s[0]) for s in spec)
    message = backends._pack(values)
    assert isinstance(message, bytes)           # one bytes reply: Ray's cheapest kind
    assert len(message) >= sum(v.nbytes for v in values if v is not None)
    back = backends._unpack(message)
    assert len(back) == len(values)
    for a, b in zip(values, back):
        if a is None:
            assert b is None
        else:
            assert b.dtype == a.dtype and b.shape == a.shape
            assert a.tobytes() == b.tobytes()


def one_shard_worker():
    """(objective, θ, a ShardWorker holding all of its 4 tasks with their weights set)."""
    obj, theta = objective(n_tasks=4)
    task_rows, shards = backends.plan_shards(obj.ts, "all", obj.n_params, 4, 1)
    ts = obj.ts
    w = backends.ShardWorker(obj.model.spec(), ts.X, ts.y, ts.offsets, ts.n_support,
                             ts.task_ids, "all", "<f4", shards[0]["block_start"], 1)
    w.set_weights(obj.weights.astype(np.float32))
    return obj, theta, w


def test_theta_sent_as_raw_bytes_is_read_as_the_actor_s_array():
    """The driver sends θ and α as raw bytes (RayBackend._share); the actor's ``packed`` reads
    them in its dtype, so its answer is the one of the array itself."""
    obj, theta, w = one_shard_worker()
    direct = w.partials(theta, True)
    request = backends._request("partials", (backends._raw(theta), True))
    assert len(request) == 1 and isinstance(request[0], bytes)   # one argument for Ray
    packed = backends._unpack(w.packed(*request))
    for a, b in zip(direct, packed):
        assert a.tobytes() == b.tobytes() and a.dtype == b.dtype


def test_an_object_reference_among_the_arguments_travels_beside_the_request():
    """θ larger than INLINE_BYTES goes through the object store: its reference is passed as an
    extra argument (Ray resolves it to the array before the method runs) and the pickled request
    holds a placeholder at its place; the actor's answer is the one of the array itself."""
    obj, theta, w = one_shard_worker()

    class Ref:                      # stands for ray.ObjectRef
        def __init__(self, value):
            self.value = value

    alpha = obj.weights.astype(np.float32)
    request = backends._request("partials", (Ref(theta), True, backends._raw(alpha), False), Ref)
    assert len(request) == 2 and isinstance(request[0], bytes) and request[1].value is theta
    packed = backends._unpack(w.packed(request[0], theta))    # what Ray hands the actor
    for a, b in zip(w.partials(theta, True, alpha), packed):
        assert a.tobytes() == b.tobytes() and a.dtype == b.dtype


# --- gradient-based strategies: what the shards send -------------------------------------------
GRADIENT_BASED = ["AlignedMTL", "CAGrad", "GradNorm", "GradVac", "IMTLG", "MGDA", "NashMTL",
                  "PCGrad"]


def headed_objective(head, n_tasks=7, seed=4):
    """Per-task heads used out of order and shared by two tasks (task_ids 3,0,5,1,1,4,2)."""
    rng = np.random.default_rng(seed)
    Xs = [rng.normal(size=(int(n), 3)) for n in rng.integers(4, 40, size=n_tasks)]
    ys = [np.tanh(x @ rng.normal(size=3)) for x in Xs]
    t0 = mc.TaskSet.from_arrays(Xs, ys, n_support=2)
    ids = np.array([3, 0, 5, 1, 1, 4, 2])[:n_tasks]
    ts = mc.TaskSet(t0.X, t0.y, t0.offsets, n_support=t0.n_support, task_ids=ids,
                    dtype=np.float32)
    model = mc.MLP([3, 6, 5, 1], activation="tanh", task_heads=6, head=head)
    return mc.Objective(model, ts, l2=0.01), model.init(seed=1, dtype=np.float32)


def shard_workers(obj, n_workers, cls=backends.ShardWorker):
    ts = obj.ts
    _, shards = backends.plan_shards(ts, "all", obj.n_params, 4, n_workers)
    out = []
    for s in shards:
        lo, hi = s["task_lo"], s["task_hi"]
        r0, r1 = ts.offsets[lo], ts.offsets[hi]
        out.append(cls(obj.model.spec(), ts.X[r0:r1], ts.y[r0:r1], ts.offsets[lo:hi + 1] - r0,
                       ts.n_support[lo:hi], ts.task_ids[lo:hi], "all", "<f4",
                       s["block_start"], 1))
    return out


@pytest.mark.parametrize("head", ["full", "bias"])
def test_with_task_heads_a_shard_sends_the_shared_columns_and_each_task_s_own_head(head):
    """S + H numbers a task instead of P, and the driver's rebuilt rows are the core's per-task
    gradients of the whole objective, bit for bit (the other heads' entries are +0: a task's
    loss does not use them — checked against the core's rows themselves)."""
    obj, theta = headed_objective(head)
    m = obj.model
    S, H, P = m.n_shared_params, m.n_head_params, obj.n_params
    G_local, L_local = obj.core_handle(np.float32).task_grads(theta, 1)
    rows, losses = [], []
    for w in shard_workers(obj, 3):
        sent, li, heads = w.shared_task_grads(theta)
        assert sent.shape[1] == S + H < P
        rows.append(backends._expand_task_grads(sent, heads, S, H, P, np.float32))
        losses.append(li)
    G = np.concatenate(rows)
    assert G.tobytes() == G_local.tobytes()
    assert np.concatenate(losses).tobytes() == L_local.tobytes()
    for i, h in enumerate(obj.ts.task_ids):     # the oracle's zero pattern, independently
        other = np.ones(P, bool)
        other[:S] = False
        other[S + h * H:S + (h + 1) * H] = False
        assert not np.any(G_local[i, other]) and np.any(G_local[i, S + h * H:S + (h + 1) * H])


@pytest.mark.parametrize("value", [1.0, -0.0])
def test_a_shard_whose_other_head_entries_are_not_zero_sends_full_rows(value):
    """The compact answer is used only where it rebuilds the same bits: an entry of another
    head that is not +0 (even −0) makes the shard send its full rows."""
    class Odd(backends.ShardWorker):
        def task_grads(self, theta):
            G, L = super().task_grads(theta)
            S, H, ids = self.heads
            G[0, S + (ids[0] + 1) % 6 * H] = value       # a head task 0 does not use
            return G, L
    obj, theta = headed_objective("full")
    for w in shard_workers(obj, 2, Odd):
        sent, _, heads = w.shared_task_grads(theta)
        assert heads is None and sent.tobytes() == w.task_grads(theta)[0].tobytes()


@pytest.mark.parametrize("name", GRADIENT_BASED)
@pytest.mark.parametrize("head,n_workers", [("full", 3), ("bias", 2)])
def test_gradient_strategies_with_heads_used_out_of_order_give_the_local_run(in_process, name,
                                                                             head, n_workers):
    obj, theta = headed_objective(head)
    local = mc.fit(obj, theta, **fit_kwargs(weighting=strategy(name, obj.n_tasks)))
    with mc.distributed.RayBackend(n_workers, 1) as backend:
        dist = mc.fit(obj, theta, **fit_kwargs(weighting=strategy(name, obj.n_tasks),
                                               backend=backend))
    assert_same_run(dist, local)
    assert not np.array_equal(dist.theta, theta)
