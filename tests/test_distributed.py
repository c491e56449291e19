"""The Ray backend computes the same numbers as the core here, bit for bit: the objective, its
gradient, and every θ of a training run — for 1 or 2 actors, and after an actor dies or stalls
mid-run.
Without Ray the Ray tests skip; asking for RayBackend then raises a clear error."""

import os
import pathlib
import sys
import time

import numpy as np
import pytest

import metacore as mc
from faults import dying_worker, refusing_worker, slow_starting_worker, stalling_worker
from metacore.train import backends
from metacore.train.backends import RayNotInstalledError, ShardWorker, plan_shards

try:
    import ray
except ImportError:  # the Ray tests skip; the shard logic below is still tested
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'metacore[ray]')")


def make_objective(dtype=np.float32, n_tasks=60, l2=0.01, rows="all"):
    rng = np.random.default_rng(3)
    sizes = rng.integers(2, 1500, size=n_tasks)
    Xs = [rng.normal(size=(n, 3)) for n in sizes]
    ys = [np.sin(x.sum(axis=1)) for x in Xs]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=1, dtype=dtype)
    model = mc.MLP([3, 8, 1], activation="tanh")
    return mc.Objective(model, ts, l2=l2, rows=rows), model.init(seed=1, dtype=dtype)


# --- without Ray: the shards and the combination ------------------------------------------------
@pytest.mark.parametrize("n_workers", [1, 2, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shards_cover_the_tasks_in_order_and_combine_to_the_local_numbers(n_workers, dtype):
    from metacore import _core
    obj, theta = make_objective(dtype)
    ts = obj.ts
    task_rows, shards = plan_shards(ts, obj.rows, obj.n_params, np.dtype(dtype).itemsize,
                                    n_workers)
    assert [s["task_lo"] for s in shards][0] == 0 and shards[-1]["task_hi"] == ts.n_tasks
    assert all(a["task_hi"] == b["task_lo"] for a, b in zip(shards, shards[1:]))
    assert sum(s["rows"] for s in shards) == ts.X.shape[0]
    alpha = obj.weights.astype(dtype)
    parts, losses = [], []
    for s in shards:
        lo, hi = s["task_lo"], s["task_hi"]
        r0, r1 = ts.offsets[lo], ts.offsets[hi]
        w = ShardWorker(obj.model.spec(), ts.X[r0:r1], ts.y[r0:r1], ts.offsets[lo:hi + 1] - r0,
                        ts.n_support[lo:hi], ts.task_ids[lo:hi], obj.rows, np.dtype(dtype).str,
                        s["block_start"], 1)
        w.set_weights(alpha[lo:hi])
        p, tl = w.partials(theta, True)
        parts.append(p)
        losses.append(tl)
    value, grad, task_losses = _core.combine_partials(
        np.concatenate(parts), np.concatenate(losses), task_rows, alpha, theta, obj.l2)
    ref_value, ref_grad, ref_losses = obj.value_grad_and_task_losses(theta)
    assert value == ref_value
    np.testing.assert_array_equal(grad, ref_grad)
    np.testing.assert_array_equal(task_losses, ref_losses)


def test_too_many_workers_for_the_tasks_is_a_clear_error():
    obj, _ = make_objective(n_tasks=3)
    with pytest.raises(ValueError, match="n_workers=50"):
        plan_shards(obj.ts, obj.rows, obj.n_params, 4, 50)


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray now raises ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install 'metacore\[ray\]'"):
        mc.distributed.RayBackend(2, 1)


def test_a_worker_class_for_the_other_kind_of_problem_is_a_clear_error():
    from metacore.train.backends import MetaWorker

    class Fake(mc.distributed.RayBackend):
        def __init__(self, cls):   # no Ray needed: attach refuses before using it
            self.worker_class, self._closed = cls, False

    obj, theta = make_objective()
    with pytest.raises(TypeError, match="does not run a full-batch Objective"):
        Fake(MetaWorker).attach(obj, theta.dtype, obj.weights)
    with pytest.raises(TypeError, match="does not run an Objective with batch_tasks"):
        Fake(ShardWorker).attach(obj, theta.dtype, obj.weights, batch_tasks=3)
    meta = mc.MetaObjective(mc.MAML(mc.MLP([1, 4, 1])), mc.tasks.SinusoidSource(), meta_batch=4)
    with pytest.raises(TypeError, match="does not run a MetaObjective"):
        Fake(ShardWorker).attach(meta, np.float32, None)


# --- on Ray ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster():
    if ray is None:
        pytest.skip("ray is not installed (pip install 'metacore[ray]')")
    src = str(pathlib.Path(mc.__file__).resolve().parents[1])   # actors import this metacore
    tests = str(pathlib.Path(__file__).resolve().parent)        # and the fault injection
    path = os.pathsep.join(p for p in (src, tests, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config=mc.distributed.RAY_SYSTEM_CONFIG,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def two_actors(ray_cluster):
    backend = mc.distributed.RayBackend(2, 1)
    yield backend
    backend.close()


def fit_kwargs(**kw):
    return dict(optimizer=mc.optim.Adam(lr=0.02), steps=12, eval_every=5, progress=False, **kw)


@needs_ray
def test_distributed_value_grad_and_task_losses_equal_the_local_ones(two_actors):
    obj, theta = make_objective()
    two_actors.attach(obj, theta.dtype, obj.weights)
    value, grad, losses = two_actors.value_and_grad(theta)
    ref_value, ref_grad, ref_losses = obj.value_grad_and_task_losses(theta)
    assert value == ref_value
    np.testing.assert_array_equal(grad, ref_grad)
    np.testing.assert_array_equal(losses, ref_losses)


@needs_ray
def test_fit_on_two_actors_gives_the_local_trajectory(two_actors):
    obj, theta = make_objective()
    local = mc.fit(obj, theta, **fit_kwargs())
    dist = mc.fit(obj, theta, **fit_kwargs(backend=two_actors))
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.objective, local.history.objective)
    np.testing.assert_array_equal(dist.history.grad_norm, local.history.grad_norm)
    np.testing.assert_array_equal(dist.history.task_losses, local.history.task_losses)


@needs_ray
@pytest.mark.parametrize("meta", [False, True])
def test_theta_through_the_object_store_gives_the_local_trajectory(two_actors, monkeypatch,
                                                                    meta):
    """A θ larger than INLINE_BYTES is put in the object store once a step and its reference
    travels beside each actor's pickled request (Ray resolves it before the method runs); with
    the threshold at 0 every step takes that path, and θ stays bit-identical to a local run."""
    monkeypatch.setattr(backends, "INLINE_BYTES", 0)
    if meta:
        problem, theta = meta_problem("maml")
        kw = meta_kwargs
    else:
        problem, theta = make_objective()
        kw = fit_kwargs
    local = mc.fit(problem, theta, **kw())
    dist = mc.fit(problem, theta, **kw(backend=two_actors))
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.objective, local.history.objective)


@needs_ray
def test_recorded_task_losses_and_weights_equal_the_local_ones(two_actors):
    """The chunk result is built in one place (the core's step tail) for both backends."""
    obj, theta = make_objective()
    local = mc.fit(obj, theta, **fit_kwargs(record_task_losses=True))
    dist = mc.fit(obj, theta, **fit_kwargs(record_task_losses=True, backend=two_actors))
    np.testing.assert_array_equal(dist.theta, local.theta)
    assert dist.history.step_task_losses.shape == (12, obj.n_tasks)
    np.testing.assert_array_equal(dist.history.step_task_losses, local.history.step_task_losses)
    np.testing.assert_array_equal(dist.history.step_weights, local.history.step_weights)


@needs_ray
def test_one_and_two_actors_give_the_same_trajectory(ray_cluster, two_actors):
    obj, theta = make_objective(np.float64)
    two = mc.fit(obj, theta, **fit_kwargs(backend=two_actors))
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit restarts its actors
    with mc.distributed.RayBackend(1, 2) as one:
        single = mc.fit(obj, theta, **fit_kwargs(backend=one))
    np.testing.assert_array_equal(single.theta, two.theta)
    np.testing.assert_array_equal(single.history.objective, two.history.objective)


@needs_ray
def test_an_actor_that_dies_mid_run_does_not_change_the_result(two_actors, tmp_path):
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit restarts its actors
    obj, theta = make_objective()
    clean = mc.fit(obj, theta, **fit_kwargs())
    marker = tmp_path / "die"
    marker.write_text("6")          # the first actor to serve its 6th call exits
    with mc.distributed.RayBackend(2, 1, worker_class=dying_worker(marker)) as backend:
        res = mc.fit(obj, theta, **fit_kwargs(backend=backend))
        assert not marker.exists() and backend.retries >= 1
    np.testing.assert_array_equal(res.theta, clean.theta)


@needs_ray
def test_an_actor_that_stalls_mid_run_is_replaced_and_does_not_change_the_result(two_actors,
                                                                                  tmp_path):
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit restarts its actors
    obj, theta = make_objective()
    clean = mc.fit(obj, theta, **fit_kwargs())
    marker = tmp_path / "stall"
    marker.write_text("4")          # the first actor to serve its 4th call stops (SIGSTOP)
    with mc.distributed.RayBackend(2, 1, worker_class=stalling_worker(marker),
                                   step_timeout_s=3) as backend:
        res = mc.fit(obj, theta, **fit_kwargs(backend=backend))
        assert not marker.exists() and backend.retries >= 1
    np.testing.assert_array_equal(res.theta, clean.theta)
    np.testing.assert_array_equal(res.history.objective, clean.history.objective)


@needs_ray
def test_an_actor_that_always_stalls_is_given_up_on_with_a_clear_error(two_actors, tmp_path):
    two_actors.stop_actors()
    obj, theta = make_objective()
    marker = tmp_path / "stall"
    marker.write_text("1")
    # max_retries=0: the first stall is final, whatever the restarted actor would do
    with mc.distributed.RayBackend(2, 1, worker_class=stalling_worker(marker), step_timeout_s=2,
                                   max_retries=0) as backend:
        with pytest.raises(RuntimeError, match=r"did not answer within step_timeout_s=2\.0 s"):
            mc.fit(obj, theta, **fit_kwargs(backend=backend))


MULTITASK_CASES = {    # fit settings: a drawn batch, a loss-based, a losses-first and a Gram rule
    "batch": dict(batch_tasks=20, batch_rows=700),
    "dwa": dict(weighting=mc.weighting.DWA),
    "famo": dict(weighting=mc.weighting.FAMO),
    "mgda": dict(weighting=mc.weighting.MGDA),
}


def multitask_kwargs(case, **kw):
    settings = dict(MULTITASK_CASES[case])
    if "weighting" in settings:
        settings["weighting"] = settings["weighting"]()
    return fit_kwargs(record_task_losses=True, **settings, **kw)


@needs_ray
@pytest.mark.parametrize("case", sorted(MULTITASK_CASES))
def test_batched_and_weighted_fits_on_two_actors_give_the_local_run(two_actors, case):
    """The transport of the paths tests/test_distributed_multitask.py checks in-process."""
    obj, theta = make_objective(n_tasks=24)
    local = mc.fit(obj, theta, **multitask_kwargs(case))
    dist = mc.fit(obj, theta, **multitask_kwargs(case, backend=two_actors))
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.objective, local.history.objective)
    np.testing.assert_array_equal(dist.history.step_weights, local.history.step_weights)
    np.testing.assert_array_equal(dist.history.task_losses, local.history.task_losses)


@needs_ray
@pytest.mark.parametrize("case,fault", [("batch", "die"), ("famo", "stall"), ("mgda", "die"),
                                        ("batch", "stall")])
def test_a_multitask_actor_that_dies_or_stalls_mid_run_does_not_change_theta(two_actors,
                                                                             tmp_path, case,
                                                                             fault):
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit restarts its actors
    obj, theta = make_objective(n_tasks=24)
    clean = mc.fit(obj, theta, **multitask_kwargs(case))
    marker = tmp_path / fault
    marker.write_text("5")      # the first actor to serve its 5th call exits or stops
    make = dying_worker if fault == "die" else stalling_worker
    with mc.distributed.RayBackend(2, 1, worker_class=make(marker, batched=case == "batch"),
                                   step_timeout_s=3) as backend:
        res = mc.fit(obj, theta, **multitask_kwargs(case, backend=backend))
        assert not marker.exists() and backend.retries >= 1
    np.testing.assert_array_equal(res.theta, clean.theta)
    np.testing.assert_array_equal(res.history.objective, clean.history.objective)
    np.testing.assert_array_equal(res.history.step_weights, clean.history.step_weights)


def test_step_and_start_timeouts_are_checked():
    if ray is None:
        pytest.skip("ray is not installed")
    with pytest.raises(ValueError, match="step_timeout_s must be > 0"):
        mc.distributed.RayBackend(2, 1, step_timeout_s=0)
    assert mc.distributed.RayBackend(2, 1, step_timeout_s=None).step_timeout_s is None
    for bad, error in ((0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                       (float("inf"), ValueError), (None, TypeError), ("60", TypeError)):
        with pytest.raises(error, match="start_timeout_s"):
            mc.distributed.RayBackend(2, 1, start_timeout_s=bad)


@needs_ray
@pytest.mark.parametrize("dies", [False, True], ids=["start", "restart"])
def test_starting_an_actor_is_not_counted_against_step_timeout_s(two_actors, tmp_path, dies):
    # a busy machine: each actor takes 3 s to start (and to restart), the steps 1 s at most
    two_actors.stop_actors()
    obj, theta = make_objective()
    clean = mc.fit(obj, theta, **fit_kwargs())
    marker = tmp_path / "die"
    if dies:
        marker.write_text("4")          # the first actor to serve its 4th call exits
    with mc.distributed.RayBackend(2, 1, worker_class=slow_starting_worker(marker, 3.0),
                                   step_timeout_s=1, start_timeout_s=60) as backend:
        res = mc.fit(obj, theta, **fit_kwargs(backend=backend))
        assert backend.retries == int(dies) and not marker.exists()
    np.testing.assert_array_equal(res.theta, clean.theta)


@needs_ray
def test_actors_slower_to_start_than_start_timeout_s_are_a_clear_error(two_actors, tmp_path):
    two_actors.stop_actors()
    obj, theta = make_objective()
    with mc.distributed.RayBackend(2, 1, worker_class=slow_starting_worker(tmp_path / "x", 30.0),
                                   start_timeout_s=2) as backend:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"did not start within start_timeout_s=2\.0 s"):
            mc.fit(obj, theta, **fit_kwargs(backend=backend))
        assert time.monotonic() - t0 < 20      # given up on, not waited out
        assert backend.held_cpus() == 0          # and its actors stopped, their CPUs free


@needs_ray
def test_a_driver_resumes_from_its_checkpoint(two_actors, tmp_path):
    obj, theta = make_objective()
    whole = mc.fit(obj, theta, **fit_kwargs())
    path = tmp_path / "run.npz"
    first = mc.fit(obj, theta, optimizer=mc.optim.Adam(lr=0.02), steps=5, eval_every=5,
                   progress=False, checkpoint=path, backend=two_actors)
    assert first.step == 5
    rest = mc.fit(obj, mc.load(path), steps=7, eval_every=5, progress=False, backend=two_actors)
    np.testing.assert_array_equal(rest.theta, whole.theta)


# --- meta-learning on Ray -------------------------------------------------------------------------
def meta_problem(kind="maml"):
    if kind == "maml":      # a TaskSet's sampled meta-batches
        rng = np.random.default_rng(2)
        Xs = [rng.normal(size=(8, 2)) for _ in range(40)]
        ys = [np.tanh(x @ rng.normal(size=2)) for x in Xs]
        ts = mc.TaskSet.from_arrays(Xs, ys, n_support=4, dtype=np.float32)
        model = mc.MLP([2, 16, 1], activation="tanh")
        return mc.MetaObjective(mc.MAML(model, inner_lr=0.05, inner_steps=2), ts,
                                meta_batch=24), model.init(seed=1, dtype=np.float32)
    if kind == "metasgd":   # generated sinusoids
        model = mc.MLP([1, 16, 1], activation="tanh")
        learner = mc.MetaSGD(model, inner_lr=0.01)
        return (mc.MetaObjective(learner, mc.tasks.SinusoidSource(k_support=5, k_query=5),
                                 meta_batch=20),
                learner.init(model.init(seed=1, dtype=np.float64)))
    rng = np.random.default_rng(5)      # ProtoNet on generated N-way K-shot episodes
    X = rng.normal(size=(60, 3)) + np.repeat(np.arange(10), 6)[:, None]
    src = mc.tasks.EpisodeSource(X, np.arange(0, 61, 6), n_way=3, k_shot=2, q_query=2)
    model = mc.MLP([3, 8, 4], activation="relu")
    return mc.MetaObjective(mc.ProtoNet(model), src, meta_batch=10), model.init(seed=1)


def meta_kwargs(**kw):
    return dict(optimizer=mc.optim.Adam(lr=0.01), steps=8, eval_every=4, progress=False, **kw)


@needs_ray
@pytest.mark.parametrize("kind", ["maml", "metasgd", "protonet"])
def test_meta_fit_on_two_actors_gives_the_local_trajectory(two_actors, kind):
    """Every learner is bit-identical split or not (test_distributed_meta.py, in process); here
    the transport: a TaskSet shipped once, sources generating only the actor's blocks."""
    problem, theta = meta_problem(kind)
    local = mc.fit(problem, theta, **meta_kwargs())
    dist = mc.fit(problem, theta, **meta_kwargs(backend=two_actors))
    assert len(two_actors.ranges) == 2
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.objective, local.history.objective)
    np.testing.assert_array_equal(dist.history.support_loss, local.history.support_loss)


@needs_ray
@pytest.mark.parametrize("name", ["fomaml", "anil", "reptile", "maml++", "ridge_episodes",
                                  "imaml"])
def test_the_other_learners_on_two_real_actors_give_the_local_trajectory(two_actors, name):
    """The learners the test above leaves to the in-process workers, through real Ray actors."""
    from test_distributed_meta import problems, start
    problem = dict(problems(np.float64))[name]
    theta = start(problem, np.float64)
    local = mc.fit(problem, theta, **meta_kwargs())
    dist = mc.fit(problem, theta, **meta_kwargs(backend=two_actors))
    assert len(two_actors.ranges) == 2
    assert not np.array_equal(local.theta, theta)
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.objective, local.history.objective)


@needs_ray
def test_parameter_groups_on_one_and_two_actors_give_the_local_trajectory(ray_cluster,
                                                                          two_actors):
    """The optimizer's groups reach the update wherever it runs: on the driver (two actors) and
    in the one actor that runs whole chunks."""
    problem, theta = meta_problem("metasgd")
    kw = dict(meta_kwargs(), optimizer=mc.optim.Adam(0.01, groups={"rates": {"lr": 1e-4}}))
    local = mc.fit(problem, theta, **kw)
    plain = mc.fit(problem, theta, **meta_kwargs())
    assert not np.array_equal(local.theta, plain.theta)
    np.testing.assert_array_equal(mc.fit(problem, theta, backend=two_actors, **kw).theta,
                                  local.theta)
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit restarts its actors
    with mc.distributed.RayBackend(1, 2) as one:
        np.testing.assert_array_equal(mc.fit(problem, theta, backend=one, **kw).theta,
                                      local.theta)


@needs_ray
def test_meta_validation_checkpoint_and_resume_on_ray_are_as_local(two_actors, tmp_path):
    problem, theta = meta_problem("maml")
    val = problem.tasks.subset(range(10))
    whole = mc.fit(problem, theta, validation=val, **meta_kwargs())
    path = tmp_path / "meta.npz"
    first = mc.fit(problem, theta, optimizer=mc.optim.Adam(lr=0.01), steps=4, eval_every=4,
                   validation=val, progress=False, checkpoint=path, backend=two_actors)
    rest = mc.fit(problem, mc.load(path), steps=4, eval_every=4, validation=val, progress=False,
                  backend=two_actors)
    assert first.step == 4 and rest.step == 8
    np.testing.assert_array_equal(rest.theta, whole.theta)
    np.testing.assert_array_equal(np.concatenate([first.history.val_loss,
                                                  rest.history.val_loss[1:]]),
                                  whole.history.val_loss)


@needs_ray
@pytest.mark.parametrize("fault", ["dies", "stalls"])
def test_a_meta_actor_that_dies_or_stalls_mid_run_does_not_change_theta(two_actors, tmp_path,
                                                                        fault):
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit restarts its actors
    problem, theta = meta_problem("maml")
    clean = mc.fit(problem, theta, **meta_kwargs())
    marker = tmp_path / fault
    marker.write_text("5")       # the first actor to serve its 5th call fails
    make = dying_worker if fault == "dies" else stalling_worker
    with mc.distributed.RayBackend(2, 1, worker_class=make(marker, meta=True),
                                   step_timeout_s=3) as backend:
        res = mc.fit(problem, theta, **meta_kwargs(backend=backend))
        assert not marker.exists() and backend.retries >= 1
    np.testing.assert_array_equal(res.theta, clean.theta)
    np.testing.assert_array_equal(res.history.objective, clean.history.objective)


def cannot_draw():
    """What the library raises for a source that cannot draw its episodes (3 classes, 5-way)."""
    mc.tasks.EpisodeSource(np.zeros((12, 2)), [0, 4, 8, 12], n_way=5, k_shot=1, q_query=1)


def bad_offsets():
    """What the library raises for class offsets that are not integers."""
    mc.tasks.EpisodeSource(np.zeros((12, 2)), [0.0, 4.0, 8.0, 12.0], n_way=2, k_shot=1,
                           q_query=1)


@needs_ray
@pytest.mark.parametrize("meta", [False, True])
@pytest.mark.parametrize("refusal, kind", [(cannot_draw, ValueError), (bad_offsets, TypeError)])
def test_a_refused_batch_on_an_actor_is_the_plain_error_a_local_run_raises(two_actors, tmp_path,
                                                                           meta, refusal, kind):
    """Not Ray's RayTaskError wrapper: the same type and message, at once (no retry), and the
    backend keeps working with the same actors."""
    two_actors.stop_actors()           # the cluster has 2 CPUs; the next fit starts its actors
    with pytest.raises(kind) as local:
        refusal()
    problem, theta = meta_problem("maml") if meta else make_objective()
    kw = meta_kwargs if meta else fit_kwargs
    marker = tmp_path / "refuse"
    marker.write_text("3")          # the first actor to serve its 3rd call raises
    with mc.distributed.RayBackend(2, 1, worker_class=refusing_worker(marker, refusal, meta),
                                   step_timeout_s=30) as backend:
        with pytest.raises(kind) as dist:
            mc.fit(problem, theta, **kw(backend=backend))
        assert type(dist.value) is kind and str(dist.value) == str(local.value)
        assert not marker.exists() and backend.retries == 0
        pids = backend.actor_pids()
        again = mc.fit(problem, theta, **kw(backend=backend))   # the same actors, unharmed
        assert backend.actor_pids() == pids and backend.retries == 0
    np.testing.assert_array_equal(again.theta, mc.fit(problem, theta, **kw()).theta)


@needs_ray
@pytest.mark.parametrize("head", ["full", "bias"])
def test_a_gradient_strategy_with_task_heads_on_two_actors_gives_the_local_run(two_actors,
                                                                              head):
    """The shards send each task's shared columns and its own head only (S + H of P numbers);
    the driver rebuilds the per-task gradients: the same run as locally."""
    rng = np.random.default_rng(6)
    Xs = [rng.normal(size=(int(n), 3)) for n in rng.integers(5, 60, size=12)]
    t0 = mc.TaskSet.from_arrays(Xs, [np.sin(x.sum(axis=1)) for x in Xs], n_support=1)
    ts = mc.TaskSet(t0.X, t0.y, t0.offsets, n_support=t0.n_support, dtype=np.float32,
                    task_ids=np.array([5, 2, 7, 0, 1, 1, 3, 4, 6, 8, 9, 10]))
    model = mc.MLP([3, 8, 1], activation="tanh", task_heads=11, head=head)
    obj, theta = mc.Objective(model, ts, l2=0.01), model.init(seed=1, dtype=np.float32)
    local = mc.fit(obj, theta, **fit_kwargs(weighting=mc.weighting.MGDA()))
    dist = mc.fit(obj, theta, **fit_kwargs(weighting=mc.weighting.MGDA(), backend=two_actors))
    np.testing.assert_array_equal(dist.theta, local.theta)
    np.testing.assert_array_equal(dist.history.step_weights, local.history.step_weights)
