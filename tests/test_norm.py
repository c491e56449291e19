"""Normalised dense nets (mc.MLP(..., norm="batch" | "layer")): Linear → Norm → activation on every
hidden layer, h = γ ⊙ (z − μ)/√(σ² + ε) + β. The core's forward pass, gradient and exact
Hessian-vector product agree with metacore.reference and with central finite differences in
float64 (an oracle independent of both); batch statistics are those of the rows passed together;
second-order MAML and ProtoNet stay exact through them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore import reference as ref
from numerics import central_diff, random_targets, random_episodes, rel_err

NORMS = ("batch", "layer")
LOSSES = ("mse", "logistic", "cross_entropy")
EPS = 1e-5


def make_model(width, act, loss, norm, depth=2, d=4):
    k = {"mse": 2, "logistic": 1, "cross_entropy": 3}[loss]
    return mc.MLP([d] + [width] * depth + [k], activation=act, loss=loss, norm=norm)


def perturbed(model, seed):
    """θ away from its init: γ ≠ 1, β ≠ 0, so every normalisation term is exercised."""
    rng = np.random.default_rng(seed)
    return model.init(seed=seed) + 0.3 * rng.normal(size=model.n_params)


def one_task(model, n, seed, dtype=np.float64):
    rng = np.random.default_rng(seed + 100)
    X = rng.normal(size=(n, model.n_features))
    y = random_targets(rng, model, n)
    return mc.TaskSet.from_arrays([X], [y], dtype=dtype), X, y


# --- layout and construction ---------------------------------------------------------------------
def test_theta_layout_puts_gamma_and_beta_after_each_hidden_bias():
    model = mc.MLP([3, 4, 2, 5], norm="batch", loss="cross_entropy")
    # layer 0: W 4×3, b 4, γ 4, β 4; layer 1: W 2×4, b 2, γ 2, β 2; output: W 5×2, b 5
    assert model.n_params == (12 + 4 + 8) + (8 + 2 + 4) + (10 + 5)
    assert [w for w, _, _ in model.layers()] == [0, 24, 38]
    assert model.norm_layers() == [(16, 20, 4), (34, 36, 2)]
    assert model.n_trunk_params == 38
    theta = model.init(seed=0)
    for g, b, o in model.norm_layers():
        np.testing.assert_array_equal(theta[g:g + o], 1.0)
        np.testing.assert_array_equal(theta[b:b + o], 0.0)
    assert model.core_net().n_params == model.n_params
    heads = mc.MLP([3, 4, 2], norm="layer", task_heads=3)
    assert heads.n_params == (12 + 4 + 8) + 3 * (8 + 2)


def test_bad_norm_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="norm"):
        mc.MLP([3, 4, 1], norm="group")
    with pytest.raises((ValueError, TypeError), match="norm"):
        mc.MLP([3, 4, 1], norm=1)


def test_spec_round_trips_and_plain_specs_are_unchanged():
    model = mc.MLP([3, 4, 1], norm="layer", activation="tanh")
    assert mc.MLP.from_spec(model.spec()) == model
    assert "norm" not in mc.MLP([3, 4, 1]).spec()
    assert mc.MLP([3, 4, 1]) != mc.MLP([3, 4, 1], norm="batch")
    assert "norm='layer'" in repr(model)


# --- forward pass: closed forms ------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_forward_is_the_closed_form(norm):
    """One hidden layer: outputs = W₁ σ(γ (z − μ)/√(σ² + ε) + β) + b₁, computed directly."""
    model = mc.MLP([3, 5, 2], activation="tanh", norm=norm)
    theta = perturbed(model, 1)
    X = np.random.default_rng(2).normal(size=(7, 3))
    (W0, b0), (W1, b1) = model.unpack(theta)
    ((gamma, beta),) = model.unpack_norms(theta)
    z = X @ W0.T + b0
    axis = 0 if norm == "batch" else 1
    zhat = (z - z.mean(axis=axis, keepdims=True)) / np.sqrt(z.var(axis=axis, keepdims=True) + EPS)
    want = np.tanh(gamma * zhat + beta) @ W1.T + b1
    np.testing.assert_allclose(model.predict(theta, X), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.predict(model, theta, X), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_batch_norm_of_one_row_normalises_to_zero(act):
    """One row: σ² = 0 so x̂ = 0 and h = β exactly — the output does not depend on X or W."""
    model = mc.MLP([3, 4, 2], activation=act, norm="batch")
    theta = perturbed(model, 3)
    (_, _), (W1, b1) = model.unpack(theta)
    ((_, beta),) = model.unpack_norms(theta)
    want = (np.maximum(beta, 0) if act == "relu" else np.tanh(beta)) @ W1.T + b1
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(1, 3)) * 10 ** seed
        np.testing.assert_array_equal(model.predict(theta, x)[0], want.astype(np.float64))
        np.testing.assert_allclose(ref.predict(model, theta, x)[0], want, rtol=1e-14)
    # the gradient of the one-row loss in W₀ and b₀ is then exactly zero
    ts, X, y = one_task(mc.MLP([3, 4, 2], activation=act, norm="batch"), 1, 4)
    g = mc.Objective(model, ts).grad(theta)
    np.testing.assert_array_equal(g[:16], 0.0)


def test_layer_norm_of_width_one_gives_beta():
    model = mc.MLP([3, 1, 2], activation="tanh", norm="layer")
    theta = perturbed(model, 5)
    X = np.random.default_rng(0).normal(size=(6, 3))
    ((_, beta),) = model.unpack_norms(theta)
    (_, _), (W1, b1) = model.unpack(theta)
    np.testing.assert_allclose(model.predict(theta, X), np.tile(np.tanh(beta) @ W1.T + b1, (6, 1)),
                               rtol=1e-14)


def test_batch_statistics_couple_rows_and_layer_statistics_do_not():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(70, 4))   # more than one 32-row block
    batch = mc.MLP([4, 6, 3], norm="batch")
    layer = mc.MLP([4, 6, 3], norm="layer")
    tb, tl = perturbed(batch, 0), perturbed(layer, 0)
    # batch: the statistics are those of the rows passed together (all 70, not blocks of 32)
    np.testing.assert_allclose(batch.predict(tb, X), ref.predict(batch, tb, X), rtol=1e-12,
                               atol=1e-12)
    assert not np.allclose(batch.predict(tb, X[:10]), batch.predict(tb, X)[:10])
    # layer: each row on its own
    np.testing.assert_allclose(layer.predict(tl, X[:10]), layer.predict(tl, X)[:10], rtol=1e-13)


# --- gradient and HVP against the reference and central differences ------------------------------
SHAPES = [(n, w) for n in (1, 2, 33) for w in (1, 3, 17)]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n,width", SHAPES)
def test_value_grad_hvp_match_reference_and_finite_differences(norm, act, loss, n, width):
    model = make_model(width, act, loss, norm)
    seed = 7 * n + width
    theta = perturbed(model, seed)
    ts, X, y = one_task(model, n, seed)
    obj = mc.Objective(model, ts, n_threads=1)
    value, g = obj.value_and_grad(theta)
    want_value, want_g = ref.loss_and_grad(model, theta, X, y)
    assert value == pytest.approx(want_value, rel=1e-12, abs=1e-14)
    assert rel_err(g, want_g) < 1e-10
    v = np.random.default_rng(seed + 1).normal(size=model.n_params)
    hv = obj.hvp(theta, v)
    assert rel_err(hv, ref.loss_hvp(model, theta, X, y, v)) < 1e-9
    # independent oracle: central differences, along coordinates for small nets, else along
    # random directions (the HVP always as the directional derivative of the gradient)
    h = 1e-6
    if model.n_params <= 80:
        assert rel_err(g, central_diff(obj.value, theta, h)) < 1e-6
    else:
        for u in np.random.default_rng(seed + 2).normal(size=(3, model.n_params)):
            fd = (obj.value(theta + h * u) - obj.value(theta - h * u)) / (2 * h)
            assert g @ u == pytest.approx(fd, rel=1e-6, abs=1e-8)
    fd_hv = (obj.grad(theta + h * v) - obj.grad(theta - h * v)) / (2 * h)
    assert rel_err(hv, fd_hv) < 1e-5


@settings(max_examples=25, deadline=None)
@given(norm=st.sampled_from(NORMS), n=st.integers(1, 40), width=st.integers(1, 9),
       depth=st.integers(1, 3), loss=st.sampled_from(LOSSES), seed=st.integers(0, 10**6))
def test_generated_nets_match_the_reference(norm, n, width, depth, loss, seed):
    model = make_model(width, "tanh", loss, norm, depth=depth, d=3)
    theta = perturbed(model, seed)
    ts, X, y = one_task(model, n, seed)
    obj = mc.Objective(model, ts, n_threads=1)
    value, g = obj.value_and_grad(theta)
    want_value, want_g = ref.loss_and_grad(model, theta, X, y)
    assert value == pytest.approx(want_value, rel=1e-11, abs=1e-13)
    assert rel_err(g, want_g) < 1e-9
    v = np.random.default_rng(seed).normal(size=model.n_params)
    assert rel_err(obj.hvp(theta, v), ref.loss_hvp(model, theta, X, y, v)) < 1e-8


@pytest.mark.parametrize("norm", NORMS)
def test_multi_task_objective_normalises_each_task_on_its_own(norm):
    """Ragged tasks with per-task heads: f = Σ α_i f_i, each task's rows one forward pass."""
    model = mc.MLP([3, 5, 2], activation="tanh", norm=norm, task_heads=3)
    rng = np.random.default_rng(0)
    sizes = [1, 9, 40]
    Xs = [rng.normal(size=(m, 3)) for m in sizes]
    ys = [rng.normal(size=(m, 2)) for m in sizes]
    ts = mc.TaskSet.from_arrays(Xs, ys)   # task i uses head i
    theta = perturbed(model, 1)
    w = np.array([0.2, 0.5, 0.3])
    obj = mc.Objective(model, ts, weights=w, n_threads=1)
    value, g = obj.value_and_grad(theta)
    want_value, want_g = ref.objective_value_and_grad(model, ts, theta, weights=w)
    assert value == pytest.approx(want_value, rel=1e-12)
    assert rel_err(g, want_g) < 1e-11
    v = rng.normal(size=model.n_params)
    assert rel_err(obj.hvp(theta, v), ref.objective_hvp(model, ts, theta, v, weights=w)) < 1e-10
    np.testing.assert_allclose(obj.task_grads(theta), ref.task_grads(model, ts, theta),
                               rtol=1e-10, atol=1e-13)


def test_a_large_task_is_one_pass_and_a_larger_draw_is_refused():
    """Batch statistics of a task with more rows than the core's work unit (1,024) are still
    those of all its rows; a step that draws more than 1,024 rows of one task is refused."""
    model = mc.MLP([2, 3, 1], activation="tanh", norm="batch")
    rng = np.random.default_rng(0)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(1500, 2))], [rng.normal(size=1500)])
    theta = perturbed(model, 0)
    value, g = mc.Objective(model, ts, n_threads=2).value_and_grad(theta)
    want_value, want_g = ref.loss_and_grad(model, theta, ts.X, ts.y)
    assert value == pytest.approx(want_value, rel=1e-12) and rel_err(g, want_g) < 1e-10
    v = rng.normal(size=model.n_params)
    assert rel_err(mc.Objective(model, ts).hvp(theta, v),
                   ref.loss_hvp(model, theta, ts.X, ts.y, v)) < 1e-9
    with pytest.raises(ValueError, match="norm='batch'.*1100.*batch_rows"):
        mc.fit(mc.Objective(model, ts), theta, steps=1, batch_rows=1100, progress=False)


# --- float32, threads ----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_float32_agrees_with_float64(norm):
    model = make_model(17, "relu", "cross_entropy", norm)
    theta = perturbed(model, 2)
    ts64, X, y = one_task(model, 33, 2)
    ts32 = mc.TaskSet.from_arrays([X], [y], dtype=np.float32)
    v = np.random.default_rng(3).normal(size=model.n_params)
    o64, o32 = mc.Objective(model, ts64), mc.Objective(model, ts32)
    v64, g64 = o64.value_and_grad(theta)
    v32, g32 = o32.value_and_grad(theta.astype(np.float32))
    assert g32.dtype == np.float32
    assert v32 == pytest.approx(v64, rel=1e-5)
    assert rel_err(g32, g64) < 1e-4
    assert rel_err(o32.hvp(theta.astype(np.float32), v.astype(np.float32)), o64.hvp(theta, v)) < 1e-3
    np.testing.assert_allclose(model.predict(theta.astype(np.float32), X.astype(np.float32)),
                               model.predict(theta, X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", NORMS)
def test_bit_identical_for_any_thread_count(dtype, norm):
    model = mc.MLP([5, 16, 8, 3], activation="relu", loss="cross_entropy", norm=norm)
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(m, 5)) for m in rng.integers(1, 60, size=40)]
    ys = [rng.integers(0, 3, size=X.shape[0]).astype(float) for X in Xs]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=[max(1, X.shape[0] // 2) for X in Xs],
                                dtype=dtype)
    theta = perturbed(model, 0).astype(dtype)
    v = rng.normal(size=model.n_params).astype(dtype)
    keep = [i for i in range(ts.n_tasks) if ts[i][0].shape[0] >= 2]
    meta_ts = ts.subset(keep)
    outs = []
    for threads in (1, 2, 3):
        obj = mc.Objective(model, ts, n_threads=threads)
        maml = mc.MAML(model, inner_lr=0.1, inner_steps=2, n_threads=threads)
        outs.append((obj.grad(theta), obj.hvp(theta, v), obj.task_grads(theta),
                     maml.meta_value_and_grad(theta, meta_ts)[1],
                     model.predict(theta, ts.X, n_threads=threads)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


# --- meta-learning through normalised nets -------------------------------------------------------
def maml_tasks(n_tasks=3, n_support=5, n_query=7, d=3, seed=0):
    rng = np.random.default_rng(seed)
    Xs = [rng.normal(size=(n_support + n_query, d)) for _ in range(n_tasks)]
    ys = [np.sin(X @ rng.normal(size=d)) for X in Xs]
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_support)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_maml_meta_gradient_is_exact(norm, steps):
    """The meta-gradient differentiates through the inner steps' batch statistics (support rows'
    for the inner loop, query rows' for the query loss): it matches the reference and central
    differences of the meta-loss."""
    model = mc.MLP([3, 6, 5, 1], activation="tanh", norm=norm)
    theta = perturbed(model, 4)
    batch = maml_tasks()
    learner = mc.MAML(model, inner_lr=0.3, inner_steps=steps, n_threads=1)
    value, g = learner.meta_value_and_grad(theta, batch)
    want_value, want_g = ref.maml_value_and_grad(model, theta, batch, inner_lr=0.3,
                                                 inner_steps=steps)
    assert value == pytest.approx(want_value, rel=1e-12)
    assert rel_err(g, want_g) < 1e-10
    fd = central_diff(lambda t: learner.meta_value(t, batch), theta, 1e-6)
    assert rel_err(g, fd) < 1e-6
    # and the adapted net predicts the query rows with their own statistics
    Xs, ys = batch.support(0)
    Xq, _ = batch.query(0)
    np.testing.assert_allclose(
        learner.adapt_predict(theta, Xs, ys, Xq, steps=steps),
        ref.adapt_predict(model, theta, Xs, ys, Xq, steps=steps, lr=0.3), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_protonet_with_a_normalised_embedding(norm, act):
    """An episode's support and query rows are one forward pass: loss and gradient match the
    reference and central differences; the prototype classifier sees the same statistics."""
    model = mc.MLP([4, 7, 5], activation=act, norm=norm)
    batch = random_episodes(4, k_shot=2, q_query=3, seed=1)
    theta = perturbed(model, 6)
    learner = mc.ProtoNet(model, n_threads=1)
    value, g = learner.meta_value_and_grad(theta, batch)
    want_value, want_g = ref.protonet_value_and_grad(model, theta, batch)
    assert value == pytest.approx(want_value, rel=1e-12)
    assert rel_err(g, want_g) < 1e-10
    fd = central_diff(lambda t: learner.meta_value(t, batch), theta, 1e-6)
    assert rel_err(g, fd) < 1e-6
    (Xs, ys), (Xq, yq) = batch.support(1), batch.query(1)
    logits = learner.adapt_predict(theta, Xs, ys, Xq)
    np.testing.assert_allclose(logits, ref.protonet_adapt_predict(model, theta, Xs, ys, Xq),
                               rtol=1e-10)
    # evaluation scores every episode with its own statistics: the same logits
    out = learner.query_outputs(theta, batch, steps=None)
    nq0 = int(batch.offsets[1] - batch.offsets[0] - batch.n_support[0])
    np.testing.assert_allclose(out[nq0:nq0 + Xq.shape[0], :logits.shape[1]], logits, rtol=1e-10)


def test_normalised_learner_checkpoints_round_trip(tmp_path):
    model = mc.MLP([4, 6, 3], norm="batch")
    learner = mc.ProtoNet(model)
    batch = random_episodes(4)
    res = mc.fit(mc.MetaObjective(learner, batch, meta_batch=2), model.init(seed=0), steps=3,
                 progress=False)
    mc.save(tmp_path / "ck", res)
    back = mc.load(tmp_path / "ck")
    np.testing.assert_array_equal(back.theta, res.theta)
    res2 = mc.fit(mc.MetaObjective(learner, batch, meta_batch=2), back, steps=2, progress=False)
    assert res2.theta.shape == (model.n_params,)


def test_vectorised_reference_objective_keeps_batch_statistics_per_task():
    model = mc.MLP([3, 4, 1], norm="batch")
    rng = np.random.default_rng(0)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(m, 3)) for m in (3, 8)],
                                [rng.normal(size=m) for m in (3, 8)])
    theta = perturbed(model, 0)
    value, g = ref.objective_value_and_grad_vectorized(model, ts, theta)
    want_value, want_g = mc.Objective(model, ts).value_and_grad(theta)
    assert value == pytest.approx(want_value, rel=1e-12) and rel_err(g, want_g) < 1e-11


def test_sampled_rows_are_one_forward_pass_per_task():
    """batch_rows draws rows of a task per step: those rows are the pass (gathered into one block
    of more than the core's 32-row block), and the loss falls."""
    model = mc.MLP([2, 8, 1], activation="tanh", norm="batch")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 2))
    ts = mc.TaskSet.from_arrays([X], [np.sin(X[:, 0]) + X[:, 1] ** 2])
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0), steps=150, batch_rows=200,
                 optimizer=mc.optim.Adam(lr=1e-2), progress=False, seed=0)
    before = ref.loss_and_grad(model, model.init(seed=0), ts.X[:1000], ts.y[:1000])[0]
    after = ref.loss_and_grad(model, res.theta, ts.X[:1000], ts.y[:1000])[0]
    assert after < 0.5 * before, (before, after)
