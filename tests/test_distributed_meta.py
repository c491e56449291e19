"""A meta-step split into the core's reduction blocks, computed by several workers and added on
the driver, is the local meta-step bit for bit — for every learner and every kind of task
supply (a TaskSet's sampled meta-batch, generated sinusoids, N-way K-shot episodes), any number
of workers and threads. These run the workers in this process (no Ray): the Ray tests in
test_distributed.py then only check the transport."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore import _core
from metacore.train.backends import MetaWorker, plan_meta_blocks


def taskset(dtype, n_tasks=30, n_way=None):
    rng = np.random.default_rng(7)
    Xs, ys = [], []
    for i in range(n_tasks):
        n = int(rng.integers(4, 12))
        X = rng.normal(size=(n, 2))
        if n_way is None:
            y = np.sin(X.sum(axis=1) + i)
        else:     # every class in the support rows first
            y = np.concatenate([np.arange(n_way), rng.integers(0, n_way, size=n - n_way)])
        Xs.append(X)
        ys.append(y)
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_way or 2, dtype=dtype)


def episodes(n_classes=8, per=6, d=2):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n_classes * per, d)) + np.repeat(np.arange(n_classes), per)[:, None]
    offsets = np.arange(0, n_classes * per + 1, per)
    return mc.tasks.EpisodeSource(X, offsets, n_way=3, k_shot=2, q_query=3)


def problems(dtype):
    """(name, MetaObjective): every learner (MAML and its MAML++ options, FOMAML, ANIL,
    Meta-SGD, Reptile, ProtoNet, RidgeHead, iMAML), each task supply."""
    reg = mc.MLP([2, 6, 1], activation="tanh")
    sine = mc.MLP([1, 5, 1], activation="tanh")
    clf = mc.MLP([2, 5, 3], activation="relu", loss="cross_entropy")
    emb = mc.MLP([2, 5, 4], activation="relu")
    ts = taskset(dtype)
    return [
        ("maml", mc.MetaObjective(mc.MAML(reg, inner_lr=0.05, inner_steps=2), ts, meta_batch=13)),
        ("fomaml", mc.MetaObjective(mc.FOMAML(reg, inner_lr=0.05), ts, meta_batch=7)),
        ("anil", mc.MetaObjective(mc.ANIL(reg, inner_lr=0.05, inner_steps=2), ts, meta_batch=9)),
        ("metasgd", mc.MetaObjective(mc.MetaSGD(reg, inner_lr=0.05), ts, meta_batch=11)),
        ("reptile", mc.MetaObjective(mc.Reptile(reg, inner_lr=0.05, inner_steps=3), ts,
                                     meta_batch=5)),
        ("maml_sinusoid", mc.MetaObjective(mc.MAML(sine, inner_lr=0.01),
                                           mc.tasks.SinusoidSource(k_support=3, k_query=4),
                                           meta_batch=17)),
        ("maml_episodes", mc.MetaObjective(mc.MAML(clf, inner_lr=0.1), episodes(),
                                           meta_batch=6)),
        ("protonet_episodes", mc.MetaObjective(mc.ProtoNet(emb), episodes(), meta_batch=6)),
        ("protonet_taskset", mc.MetaObjective(mc.ProtoNet(emb), taskset(dtype, n_way=3),
                                              meta_batch=8)),
        # MAML++: per-layer per-step rates, the annealed multi-step loss, first order for step 0
        ("maml++", mc.MetaObjective(mc.MAML(reg, inner_lr=0.05, inner_steps=3,
                                           per_step_rates="layer", multi_step_loss=True,
                                           msl_anneal_steps=2, first_order_until=1),
                                    ts, meta_batch=10)),
        ("ridge_episodes", mc.MetaObjective(mc.RidgeHead(emb), episodes(), meta_batch=6)),
        ("imaml", mc.MetaObjective(mc.IMAML(reg, reg=1.0, inner_lr=0.05, inner_steps=3,
                                            cg_steps=3), ts, meta_batch=9)),
    ]


def start(problem, dtype):
    theta = problem.model.init(seed=2, dtype=dtype)
    if problem.n_params != theta.size:     # Meta-SGD's, MAML++'s rates after θ
        theta = problem.learner.init(theta)
    return theta


def split_run(problem, theta, dtype, n_workers, steps, seed=4, threads=1):
    """`steps` meta-steps with the blocks computed by n_workers in-process workers and added by
    the core's take_meta_step: the driver side of RayBackend without the transport."""
    opt = mc.optim.Adam(lr=0.01).core_config()
    cls = _core.TrainState32 if dtype == np.float32 else _core.TrainState64
    state = cls(theta, opt, np.empty(0, dtype), 0, seed)
    workers = [MetaWorker(problem, np.dtype(dtype).str, threads) for _ in range(n_workers)]
    ranges = plan_meta_blocks(problem.core_step(dtype, 1).n_blocks, n_workers)
    out = _core.ChunkResult(steps, 0, False)
    for j in range(steps):
        res = [w.meta_partials(np.array(state.theta), state.seed, state.step, b0, b1)
               for w, (b0, b1) in zip(workers, ranges)]
        parts, losses, support = (np.concatenate([r[i] for r in res]) for i in range(3))
        assert _core.take_meta_step(state, out, j, opt, parts, losses, support)
    return state, out


def local_run(problem, theta, dtype, steps, seed=4, threads=1):
    opt = mc.optim.Adam(lr=0.01).core_config()
    cls = _core.TrainState32 if dtype == np.float32 else _core.TrainState64
    state = cls(theta, opt, np.empty(0, dtype), 0, seed)
    out = state.run_meta(problem.core_step(dtype, threads), opt, steps)
    return state, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", range(12))
def test_a_split_meta_step_is_the_local_one_bit_for_bit(index, dtype):
    name, problem = problems(dtype)[index]
    theta = start(problem, dtype)
    ref_state, ref_out = local_run(problem, theta, dtype, steps=3)
    for n_workers, threads in ((1, 1), (2, 2), (3, 1), (64, 1)):
        state, out = split_run(problem, theta, dtype, n_workers, steps=3, threads=threads)
        np.testing.assert_array_equal(state.theta, ref_state.theta, err_msg=name)
        np.testing.assert_array_equal(out.objective, ref_out.objective, err_msg=name)
        np.testing.assert_array_equal(out.support_loss, ref_out.support_loss, err_msg=name)
        np.testing.assert_array_equal(out.grad_norm, ref_out.grad_norm, err_msg=name)
        assert state.step == ref_state.step == 3


@settings(max_examples=15, deadline=None)
@given(meta_batch=st.integers(1, 70), n_workers=st.integers(1, 9), seed=st.integers(0, 2**32))
def test_any_meta_batch_and_worker_count_gives_the_local_gradient(meta_batch, n_workers, seed):
    """The combined first step's meta-gradient equals the local meta-step's (a meta-batch of up
    to 70 tasks has up to 64 blocks, so some hold two tasks); value and support losses too."""
    problem = mc.MetaObjective(mc.MAML(mc.MLP([1, 4, 1]), inner_lr=0.02),
                               mc.tasks.SinusoidSource(k_support=2, k_query=2),
                               meta_batch=meta_batch)
    theta = problem.model.init(seed=1, dtype=np.float64)
    ref_state, ref_out = local_run(problem, theta, np.float64, steps=1, seed=seed)
    state, out = split_run(problem, theta, np.float64, n_workers, steps=1, seed=seed)
    np.testing.assert_array_equal(state.theta, ref_state.theta)
    assert out.objective[0] == ref_out.objective[0]
    assert out.support_loss[0] == ref_out.support_loss[0]


def test_the_blocks_partials_add_up_to_the_reference_meta_gradient():
    """Independent of the core's meta-step: for a meta-batch that is the whole TaskSet (the draw
    is then a permutation), the blocks' partials summed give the reference MAML meta-gradient and
    the losses its meta-loss (numpy, metacore.reference) to rounding."""
    ts = taskset(np.float64, n_tasks=6)
    model = mc.MLP([2, 6, 1], activation="tanh")
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.05, inner_steps=2), ts, meta_batch=6)
    theta = model.init(seed=3, dtype=np.float64)
    w = MetaWorker(problem, "<f8", 1)
    nb = w.step.n_blocks
    parts, losses, support = w.meta_partials(theta, 0, 0, 0, nb)
    ref_loss, ref_grad = mc.reference.maml_value_and_grad(model, theta, ts, inner_lr=0.05,
                                                          inner_steps=2)
    # blocks from the first on come added in block order, as one row (the driver's sum goes on
    # from it); a later run of blocks comes row by row
    np.testing.assert_allclose(parts.sum(axis=0), ref_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(losses.mean(), ref_loss, rtol=1e-12)
    assert parts.shape == (1, model.n_params) and losses.shape == support.shape == (6,)
    later, _, _ = w.meta_partials(theta, 0, 0, 1, nb)
    assert nb > 2 and later.shape == (nb - 1, model.n_params)


def test_block_ranges_cover_the_blocks_in_order():
    for nb in (1, 2, 7, 64):
        for k in (1, 2, 3, 8, 100):
            r = plan_meta_blocks(nb, k)
            assert r[0][0] == 0 and r[-1][1] == nb and len(r) == min(nb, k)
            assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(r, r[1:]))
            sizes = [b - a for a, b in r]
            assert max(sizes) - min(sizes) <= 1


def test_bad_block_ranges_and_partials_are_clear_errors():
    _, problem = problems(np.float64)[0]
    theta = start(problem, np.float64)
    w = MetaWorker(problem, "<f8", 1)
    nb = w.step.n_blocks
    with pytest.raises(ValueError, match="b0 < b1 <= n_blocks"):
        w.meta_partials(theta, 0, 0, 2, 2)
    with pytest.raises(ValueError, match="b0 < b1 <= n_blocks"):
        w.meta_partials(theta, 0, 0, 0, nb + 1)
    with pytest.raises(ValueError, match="step must be >= 0"):
        w.meta_partials(theta, 0, -1, 0, 1)
    with pytest.raises(ValueError, match="theta"):
        w.step.block_partials(theta[:-1], 0, 0, 0, 1)
    opt = mc.optim.SGD(lr=0.1).core_config()
    state = _core.TrainState64(theta, opt, np.empty(0), 0, 0)
    out = _core.ChunkResult(1, 0, False)
    with pytest.raises(ValueError, match="parts"):
        _core.take_meta_step(state, out, 0, opt, np.zeros((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="support_losses"):
        _core.take_meta_step(state, out, 0, opt, np.zeros((1, theta.size)), np.zeros(2),
                             np.zeros(3))
    with pytest.raises(ValueError, match="j must be"):
        _core.take_meta_step(state, out, 1, opt, np.zeros((1, theta.size)), np.zeros(1),
                             np.zeros(1))
