"""The closed-form ridge head (R2D2, Bertinetto et al. 2019): logits and loss against a direct
NumPy computation of the primal ridge solution (np.linalg.solve of (XᵀX + λI) W = XᵀY — an
independent oracle for the core's Woodbury/Cholesky form) and against metacore.reference; the
meta-gradient with respect to θ, log λ and the scale against central finite differences
(float64) and the reference; float32; bit-identical results for any thread count; training
through mc.fit resumed bit-identically; plain-data and pickle round trips; argument checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from interrupts import interrupt_lag
from metacore import reference as ref
from numerics import central_diff, random_episodes, rel_err

NETS = [  # (layer sizes, activation, loss head — unused by the ridge head)
    ([3, 5, 2], "tanh", "mse"),
    ([4, 6, 5, 3], "tanh", "cross_entropy"),
    ([3, 7, 1], "tanh", "logistic"),
    ([5, 8, 4], "relu", "mse"),
]


def packed(learner, seed=0, reg=0.7, scale=3.0):
    rng = np.random.default_rng(seed + 11)
    model = learner.model
    theta = model.init(seed=seed) + 0.3 * rng.normal(size=model.n_params)
    return np.concatenate([theta, [np.log(reg), scale]])


def primal_logits(E_s, y_s, E_q, lam, scale):
    """The oracle: the primal ridge solution W = (XᵀX + λI)⁻¹ XᵀY with a bias column."""
    Xs = np.hstack([E_s, np.ones((E_s.shape[0], 1))])
    Xq = np.hstack([E_q, np.ones((E_q.shape[0], 1))])
    y = y_s.astype(int)
    Y = np.eye(y.max() + 1)[y]
    W = np.linalg.solve(Xs.T @ Xs + lam * np.eye(Xs.shape[1]), Xs.T @ Y)
    return W, scale * Xq @ W


def primal_loss(learner, params, batch):
    model, P = learner.model, learner.model.n_params
    lam, scale = np.exp(params[P]), params[P + 1]
    losses = []
    for i in range(batch.n_tasks):
        (Xs, ys), (Xq, yq) = batch.support(i), batch.query(i)
        _, Z = primal_logits(ref.predict(model, params[:P], Xs).reshape(len(ys), -1), ys,
                             ref.predict(model, params[:P], Xq).reshape(len(yq), -1), lam, scale)
        Z = Z - Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        losses.append(-logp[np.arange(len(yq)), yq.astype(int)].mean())
    return np.mean(losses)


# --- the loss and its gradient ---------------------------------------------------------------
@pytest.mark.parametrize("sizes,act,loss", NETS)
@pytest.mark.parametrize("n_way,k_shot,q_query", [(3, 1, 2), (2, 3, 1), (4, 2, 3)])
def test_loss_matches_the_primal_solution_and_gradient_the_reference(sizes, act, loss, n_way,
                                                                     k_shot, q_query):
    learner = mc.RidgeHead(mc.MLP(sizes, activation=act, loss=loss), n_threads=1)
    batch = random_episodes(learner.model.n_features, n_way=n_way, k_shot=k_shot, q_query=q_query)
    params = packed(learner)
    value, g = learner.meta_value_and_grad(params, batch)
    assert value == pytest.approx(primal_loss(learner, params, batch), rel=1e-10)
    want_value, want_g = ref.ridge_head_value_and_grad(learner.model, params, batch)
    assert value == pytest.approx(want_value, rel=1e-12)
    assert g.shape == (learner.model.n_params + 2,)
    assert rel_err(g, want_g) < 1e-10


@pytest.mark.parametrize("sizes,act,loss", [n for n in NETS if n[1] == "tanh"])
@pytest.mark.parametrize("reg,scale", [(0.7, 3.0), (0.05, 8.0)])
def test_gradient_matches_finite_differences(sizes, act, loss, reg, scale):
    """Through the solve: θ, log λ and the scale s all against central differences."""
    learner = mc.RidgeHead(mc.MLP(sizes, activation=act, loss=loss), n_threads=1)
    batch = random_episodes(learner.model.n_features, n_way=3, k_shot=2, q_query=2, seed=3)
    params = packed(learner, seed=1, reg=reg, scale=scale)
    _, g = learner.meta_value_and_grad(params, batch)
    fd = central_diff(lambda p: learner.meta_value(p, batch), params, 1e-6)
    assert rel_err(g, fd) < 1e-7
    P = learner.model.n_params
    assert abs(g[P] - fd[P]) < 1e-7 * max(1.0, abs(fd[P]))          # ∂/∂log λ
    assert abs(g[P + 1] - fd[P + 1]) < 1e-7 * max(1.0, abs(fd[P + 1]))  # ∂/∂s
    assert abs(fd[P]) > 1e-6 and abs(fd[P + 1]) > 1e-6               # both are exercised
    fd_ref = central_diff(lambda p: ref.ridge_head_value_and_grad(learner.model, p, batch)[0],
                          params, 1e-6)
    assert rel_err(ref.ridge_head_value_and_grad(learner.model, params, batch)[1], fd_ref) < 1e-7


def test_float32_matches_the_reference():
    learner = mc.RidgeHead(mc.MLP([6, 16, 8, 4], activation="relu", loss="mse"))
    batch = random_episodes(6, n_tasks=5, n_way=5, k_shot=1, q_query=3, dtype=np.float32)
    params = packed(learner).astype(np.float32)
    value, g = learner.meta_value_and_grad(params, batch)
    assert g.dtype == np.float32
    want_value, want_g = ref.ridge_head_value_and_grad(learner.model, params, batch)
    assert value == pytest.approx(want_value, rel=1e-5)
    assert rel_err(g, want_g) < 1e-4


def test_more_than_one_block_of_rows():
    """20-way 3-shot, 2 queries: 100 rows per episode, past one 32-row block of the net."""
    learner = mc.RidgeHead(mc.MLP([5, 9, 3], activation="tanh"))
    batch = random_episodes(5, n_tasks=2, n_way=20, k_shot=3, q_query=2, seed=4)
    params = packed(learner)
    value, g = learner.meta_value_and_grad(params, batch)
    want_value, want_g = ref.ridge_head_value_and_grad(learner.model, params, batch)
    assert value == pytest.approx(want_value, rel=1e-11) and rel_err(g, want_g) < 1e-9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype):
    learner = mc.RidgeHead(mc.MLP([6, 12, 12, 4], activation="relu"))
    batch = random_episodes(6, n_tasks=37, n_way=5, k_shot=2, q_query=3, dtype=dtype)
    params = packed(learner).astype(dtype)
    results = [mc.RidgeHead(learner.model, n_threads=k).meta_value_and_grad(params, batch)
               for k in (1, 2, 3, 8)]
    for value, g in results[1:]:
        assert value == results[0][0]
        assert g.tobytes() == results[0][1].tobytes()


def test_query_losses_are_the_per_episode_losses():
    learner = mc.RidgeHead(mc.MLP([4, 6, 3], activation="tanh"))
    batch = random_episodes(4, n_tasks=4)
    params = packed(learner)
    losses = learner.query_losses(params, batch)
    for i in range(batch.n_tasks):
        assert losses[i] == pytest.approx(primal_loss(learner, params, batch.subset([i])),
                                          rel=1e-10)


# --- batch statistics: each episode is one forward pass ----------------------------------------
def joint_primal_loss(learner, params, batch):
    """The primal oracle with each episode's support and query rows embedded in one forward pass
    of NumPy's reference net (batch norm: the episode's statistics)."""
    model, P = learner.model, learner.model.n_params
    lam, scale = np.exp(params[P]), params[P + 1]
    losses = []
    for i in range(batch.n_tasks):
        (Xs, ys), (Xq, yq) = batch.support(i), batch.query(i)
        E = ref.predict(model, params[:P], np.vstack([Xs, Xq])).reshape(len(ys) + len(yq), -1)
        _, Z = primal_logits(E[:len(ys)], ys, E[len(ys):], lam, scale)
        Z = Z - Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        losses.append(-logp[np.arange(len(yq)), yq.astype(int)].mean())
    return np.mean(losses)


@pytest.mark.parametrize("sizes,act,n_way,k_shot,q_query", [
    ([3, 6, 2], "tanh", 3, 2, 2),
    ([4, 7, 5, 3], "tanh", 2, 3, 1),
    ([5, 9, 3], "relu", 20, 3, 2),          # 100 rows: past a 32-row block, still one pass
])
def test_batch_norm_episodes_are_one_pass_exact_gradient(sizes, act, n_way, k_shot, q_query):
    """norm="batch": support and query rows share the episode's statistics in training; the
    loss against the primal oracle on one joint forward pass, the gradient against the
    reference and (tanh) central differences through the solve and the normalisation."""
    learner = mc.RidgeHead(mc.MLP(sizes, activation=act, norm="batch"), n_threads=1)
    batch = random_episodes(sizes[0], n_tasks=3, n_way=n_way, k_shot=k_shot, q_query=q_query,
                            seed=6)
    params = packed(learner, seed=2)
    value, g = learner.meta_value_and_grad(params, batch)
    assert value == pytest.approx(joint_primal_loss(learner, params, batch), rel=1e-10)
    assert value != pytest.approx(primal_loss(learner, params, batch), rel=1e-6)  # apart: differs
    want_value, want_g = ref.ridge_head_value_and_grad(learner.model, params, batch)
    assert value == pytest.approx(want_value, rel=1e-11) and rel_err(g, want_g) < 1e-9
    if act == "tanh":
        fd = central_diff(lambda p: learner.meta_value(p, batch), params, 1e-6)
        assert rel_err(g, fd) < 1e-7


def test_batch_norm_adaptation_and_evaluation_use_the_episode_statistics():
    """adapt_predict embeds support and query rows in one pass, as training does, and
    mc.evaluate scores each episode on its own pass (not all episodes' rows together)."""
    model = mc.MLP([4, 7, 3], activation="tanh", norm="batch")
    learner = mc.RidgeHead(model)
    batch = random_episodes(4, n_tasks=5, n_way=3, k_shot=2, q_query=4, seed=8)
    params = packed(learner, seed=3)
    report = mc.evaluate(model, params, batch, steps=(0,), learner=learner)
    accs = []
    for i in range(batch.n_tasks):
        (Xs, ys), (Xq, yq) = batch.support(i), batch.query(i)
        z = ref.ridge_head_adapt_predict(model, params, Xs, ys, Xq)
        np.testing.assert_allclose(learner.adapt_predict(params, Xs, ys, Xq), z, rtol=1e-9,
                                   atol=1e-11)
        accs.append(np.mean(z.argmax(axis=1) == yq))
    np.testing.assert_allclose(report.accuracies[0], accs)
    np.testing.assert_allclose(report.losses[0], learner.query_losses(params, batch), rtol=1e-9)


# --- the ridge classifier ------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n_way=st.integers(1, 5), k_shot=st.integers(1, 4), dim=st.integers(1, 7),
       log_reg=st.floats(-3.0, 2.0), scale=st.floats(-5.0, 5.0), seed=st.integers(0, 10 ** 6))
def test_adapt_is_the_primal_ridge_solution(n_way, k_shot, dim, log_reg, scale, seed):
    rng = np.random.default_rng(seed)
    model = mc.MLP([3, dim], activation="tanh")        # a linear embedding of D = dim outputs
    learner = mc.RidgeHead(model)
    params = np.concatenate([rng.normal(size=model.n_params), [log_reg, scale]])
    ys = np.repeat(np.arange(n_way), k_shot).astype(float)
    Xs, Xq = rng.normal(size=(ys.size, 3)), rng.normal(size=(4, 3))
    P = model.n_params
    E = lambda X: ref.predict(model, params[:P], X).reshape(len(X), -1)  # noqa: E731
    W, Z = primal_logits(E(Xs), ys, E(Xq), np.exp(log_reg), scale)
    np.testing.assert_allclose(learner.adapt(params, Xs, ys), W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(learner.adapt_predict(params, Xs, ys, Xq), Z, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(ref.ridge_head_adapt_predict(model, params, Xs, ys, Xq), Z,
                               rtol=1e-8, atol=1e-10)


def test_evaluate_scores_the_ridge_classifier():
    model = mc.MLP([4, 7, 3], activation="tanh", loss="mse")
    learner = mc.RidgeHead(model)
    batch = random_episodes(4, n_tasks=6, n_way=3, k_shot=2, q_query=4, seed=5)
    params = packed(learner)
    report = mc.evaluate(model, params, batch, steps=(0,), learner=learner)
    accs = []
    for i in range(batch.n_tasks):
        (Xs, ys), (Xq, yq) = batch.support(i), batch.query(i)
        z = ref.ridge_head_adapt_predict(model, params, Xs, ys, Xq)
        accs.append(np.mean(z.argmax(axis=1) == yq))
    np.testing.assert_allclose(report.accuracies[0], accs)
    np.testing.assert_allclose(report.losses[0], learner.query_losses(params, batch), rtol=1e-10)
    with pytest.raises(ValueError, match="steps"):
        mc.evaluate(model, params, batch, steps=(0, 1), learner=learner)


# --- training with the one loop ------------------------------------------------------------------
def pool(n_classes=12, per_class=6, d=5, seed=0):
    """Rows of n_classes Gaussian blobs, grouped by class."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(n_classes, d))
    X = np.repeat(centres, per_class, axis=0) + rng.normal(size=(n_classes * per_class, d))
    return X, np.arange(n_classes + 1) * per_class


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_trains_bit_identically_for_any_thread_count_and_on_resume(tmp_path, dtype):
    X, offsets = pool()
    source = mc.tasks.EpisodeSource(X.astype(dtype), offsets, n_way=4, k_shot=2, q_query=2)
    model = mc.MLP([5, 16, 8], activation="relu", loss="mse")
    learner = mc.RidgeHead(model, reg=1.0, scale=2.0)
    start = learner.init(model.init(seed=0, dtype=dtype))
    assert start.dtype == dtype and start.shape == (model.n_params + 2,)

    def problem(threads):
        return mc.MetaObjective(mc.RidgeHead(model, reg=1.0, scale=2.0), source, meta_batch=6,
                                n_threads=threads)

    full = mc.fit(problem(1), start, steps=30, seed=3, progress=False, chunk_size=7)
    other = mc.fit(problem(2), start, steps=30, seed=3, progress=False, chunk_size=11)
    assert full.theta.tobytes() == other.theta.tobytes()
    first = mc.fit(problem(1), start, steps=12, seed=3, progress=False)
    mc.save(tmp_path / "run", first)
    resumed = mc.fit(problem(1), mc.load(tmp_path / "run"), steps=18, progress=False)
    assert resumed.theta.tobytes() == full.theta.tobytes()
    again = pickle.loads(pickle.dumps(problem(1)))
    unpickled = mc.fit(again, mc.load(tmp_path / "run"), steps=18, progress=False)
    assert unpickled.theta.tobytes() == full.theta.tobytes()
    losses = full.history.objective
    assert losses[-5:].mean() < losses[:5].mean()
    P = model.n_params
    assert full.theta[P] != start[P] and full.theta[P + 1] != start[P + 1]  # λ and s learned


def test_learner_round_trips_through_plain_data_and_pickle():
    learner = mc.RidgeHead(mc.MLP([3, 4, 2], activation="tanh"), reg=0.3, scale=4.0)
    d = learner.to_dict()
    assert d["kind"] == "RidgeHead" and d["reg"] == 0.3 and d["scale"] == 4.0
    assert mc.learners.from_dict(d) == learner
    assert pickle.loads(pickle.dumps(learner)) == learner


# --- argument checks -------------------------------------------------------------------------------
def test_bad_arguments_are_named():
    model = mc.MLP([2, 4, 2], activation="tanh")
    with pytest.raises(ValueError, match="reg"):
        mc.RidgeHead(model, reg=0.0)
    with pytest.raises(ValueError, match="scale"):
        mc.RidgeHead(model, scale=np.inf)
    learner = mc.RidgeHead(model)
    params = packed(learner)
    with pytest.raises(ValueError, match=r"shape \(24,\)"):
        learner.meta_value_and_grad(params[:-2], random_episodes(2, n_tasks=1))
    X = np.zeros((5, 2))
    no_class_1 = mc.TaskSet.from_arrays([X], [np.array([0., 2., 2., 0., 1.])], n_support=3)
    with pytest.raises(ValueError, match="RidgeHead needs a support row of every class 0..2"):
        learner.meta_value_and_grad(params, no_class_1)
    unseen = mc.TaskSet.from_arrays([X], [np.array([0., 1., 1., 0., 2.])], n_support=3)
    with pytest.raises(ValueError, match="query label 2"):
        learner.meta_value_and_grad(params, unseen)
    with pytest.raises(ValueError, match="RidgeHead classifies"):
        mc.MetaObjective(learner, mc.tasks.SinusoidSource(), meta_batch=2)
    with pytest.raises(ValueError, match="steps"):
        learner.adapt(params, X[:3], np.array([0., 1., 0.]), steps=2)
    with pytest.raises(ValueError, match="lr"):
        learner.query_outputs(params[:-2], random_episodes(2, n_tasks=1), steps=0, lr=0.1)


def test_the_core_checks_its_arguments_too():
    from metacore import _core
    model = mc.MLP([2, 3, 2], activation="tanh", loss="cross_entropy")
    params = np.concatenate([model.init(dtype=np.float64), [0.0, 1.0]])
    with pytest.raises(ValueError, match="RidgeHead needs one per class"):
        _core.meta_value_and_grad(model.core_net(), "ridge", 0.0, 1, True, params,
                                  np.zeros((4, 2)), np.array([0., 1., 0., 1.]) * 2,
                                  np.array([0, 4]), np.array([3]))
    with pytest.raises(ValueError, match="reg"):
        _core.ridge_head_weights(np.ones((2, 3)), np.array([0.0, 1.0]), 0.0)
    with pytest.raises(ValueError, match="y_support"):
        _core.ridge_head_weights(np.ones((2, 3)), np.array([0.5, 0.0]), 1.0)
    with pytest.raises(ValueError, match="embeddings"):
        _core.ridge_head_logits(np.ones((4, 2)), np.ones((3, 2)), 1.0)
    with pytest.raises(ValueError, match="scale"):
        _core.ridge_head_logits(np.ones((4, 2)), np.ones((3, 3)), np.nan)


# --- Ctrl-C inside one large episode -----------------------------------------------------------
RIDGE_SETUP = """
model = mc.MLP([5, 16])
ridge = mc.RidgeHead(model)
params = ridge.init(model.init())
n = 1000                        # one 5-way episode of 995 support rows per class: an O(n_s³)
X = np.random.default_rng(0).normal(size=(5 * n, 5))   # solve of ~10 s or more, unchecked
source = mc.tasks.EpisodeSource(X, np.arange(0, 5 * n + 1, n), n_way=5, k_shot=n - 5,
                                q_query=5)
batch = source.sample(1, seed=0)
"""


@pytest.mark.parametrize("call", [
    "ridge.meta_value_and_grad(params, batch)",
    "ridge.adapt(params, *batch.support(0))",
])
def test_ctrl_c_interrupts_one_large_episode_solve(call):
    assert interrupt_lag(RIDGE_SETUP, call) < 1.0   # seconds after SIGINT, on a busy machine


@pytest.mark.parametrize("log_reg", [800.0, -800.0, np.inf])
def test_a_log_reg_outside_float64_is_refused_the_same_way_everywhere(log_reg):
    model = mc.MLP([3, 4])
    ridge = mc.RidgeHead(model)
    params = ridge.init(model.init(dtype=np.float64))
    params[-2] = log_reg
    X = np.random.default_rng(0).normal(size=(20, 3))
    batch = mc.tasks.EpisodeSource(X, np.arange(0, 21, 10), n_way=2, k_shot=3,
                                   q_query=2).sample(1, seed=0)
    calls = [lambda: ridge.meta_value_and_grad(params, batch),
             lambda: ridge.adapt(params, *batch.support(0)),
             lambda: ridge.adapt_predict(params, *batch.support(0), batch.query(0)[0])]
    for call in calls:
        with pytest.raises(ValueError, match="log λ" if np.isfinite(log_reg) else "finite"):
            call()


@pytest.mark.parametrize("learner", ["ridge", "protonet", "imaml"])
def test_errors_name_the_argument_the_caller_passed(learner):
    model = mc.MLP([3, 4]) if learner != "imaml" else mc.MLP([3, 4, 1])
    obj = {"ridge": mc.RidgeHead, "protonet": mc.ProtoNet, "imaml": mc.IMAML}[learner](model)
    theta = model.init(dtype=np.float64)
    params = obj.init(theta) if learner == "ridge" else theta
    Xs, ys, Xq = np.zeros((4, 3)), np.array([0.0, 1.0, 0.0, 1.0]), np.zeros((2, 3))
    with pytest.raises(ValueError, match="X_query must have 3 columns"):
        obj.adapt_predict(params, Xs, ys, np.zeros((2, 5)))
    bad = Xq.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X_query"):
        obj.adapt_predict(params, Xs, ys, bad)
    if learner != "imaml":
        with pytest.raises(ValueError, match="X_support must have 3 columns"):
            obj.adapt(params, np.zeros((4, 2)), ys)
