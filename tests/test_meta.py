"""Meta-learners: meta-gradients against central finite differences of the meta-loss (float64),
the core against metacore.reference, first vs second order, determinism over thread counts,
training, and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref
from numerics import central_diff, rel_err

NETS = [  # (layer sizes, activation, loss)
    ([2, 5, 1], "tanh", "mse"),
    ([3, 4, 4, 2], "tanh", "mse"),
    ([2, 6, 3], "relu", "cross_entropy"),
    ([2, 8, 8, 8, 3], "tanh", "cross_entropy"),
    ([3, 4, 1], "tanh", "logistic"),
]


def make_batch(model, n_tasks=3, n_support=5, n_query=4, seed=0, ragged=False):
    rng = np.random.default_rng(seed)
    Xs, ys, ns = [], [], []
    for t in range(n_tasks):
        s = n_support + (t if ragged else 0)
        n = s + n_query + (2 * t if ragged else 0)
        Xs.append(rng.normal(size=(n, model.n_features)))
        if model.loss == "mse":
            k = model.n_outputs
            ys.append(rng.normal(size=n) if k == 1 else rng.normal(size=(n, k)))
        elif model.loss == "logistic":
            ys.append(rng.integers(0, 2, size=n).astype(float))
        else:
            ys.append(rng.integers(0, model.n_outputs, size=n).astype(float))
        ns.append(s)
    return mc.TaskSet.from_arrays(Xs, ys, n_support=ns)


def theta_for(model, seed=0):
    rng = np.random.default_rng(seed + 7)
    return model.init(seed=seed) + 0.2 * rng.normal(size=model.n_params)


# --- meta-gradients are the gradients of the meta-loss ----------------------------------------
@pytest.mark.parametrize("sizes,act,loss", NETS)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_maml_gradient_matches_finite_differences(sizes, act, loss, k):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = make_batch(model, ragged=True)
    learner = mc.MAML(model, inner_lr=0.1, inner_steps=k, n_threads=1)
    theta = theta_for(model)
    _, g = learner.meta_value_and_grad(theta, batch)
    fd = central_diff(lambda t: learner.meta_value(t, batch), theta, 1e-6)
    assert rel_err(g, fd) < 1e-6


@pytest.mark.parametrize("sizes,act,loss", [NETS[1], NETS[2]])
def test_anil_and_metasgd_gradients_match_finite_differences(sizes, act, loss):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = make_batch(model)
    anil = mc.ANIL(model, inner_lr=0.2, inner_steps=2)
    theta = theta_for(model)
    _, g = anil.meta_value_and_grad(theta, batch)
    assert rel_err(g, central_diff(lambda t: anil.meta_value(t, batch), theta, 1e-6)) < 1e-6
    msgd = mc.MetaSGD(model, inner_lr=0.1, inner_steps=2)
    params = msgd.init(theta) + 0.01 * np.random.default_rng(1).normal(size=msgd.n_params)
    _, g = msgd.meta_value_and_grad(params, batch)
    assert rel_err(g, central_diff(lambda p: msgd.meta_value(p, batch), params, 1e-6)) < 1e-6


def test_first_and_second_order_differ_where_they_must():
    # tanh net: the Hessian terms are non-zero, so FOMAML's gradient is a different vector;
    # with inner_lr = 0 there is no adaptation and both equal the plain query gradient.
    model = mc.MLP([2, 6, 1], activation="tanh", loss="mse")
    batch = make_batch(model)
    theta = theta_for(model)
    l2, g2 = mc.MAML(model, inner_lr=0.3, inner_steps=2).meta_value_and_grad(theta, batch)
    l1, g1 = mc.MAML(model, inner_lr=0.3, inner_steps=2, first_order=True).meta_value_and_grad(
        theta, batch)
    assert l1 == l2
    assert rel_err(g1, g2) > 1e-3
    _, h2 = mc.MAML(model, inner_lr=0.0).meta_value_and_grad(theta, batch)
    _, h1 = mc.MAML(model, inner_lr=0.0, first_order=True).meta_value_and_grad(theta, batch)
    np.testing.assert_array_equal(h1, h2)


# --- the core against the NumPy reference ------------------------------------------------------
@pytest.mark.parametrize("sizes,act,loss", NETS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 2e-4)])
def test_core_matches_reference(sizes, act, loss, dtype, tol):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = make_batch(model, n_tasks=4, ragged=True, seed=3)
    theta = theta_for(model, seed=2)
    t = theta.astype(dtype)
    cases = [
        (mc.MAML(model, inner_lr=0.1, inner_steps=3), t,
         lambda: ref.maml_value_and_grad(model, theta, batch, inner_lr=0.1, inner_steps=3)),
        (mc.MAML(model, inner_lr=0.1, inner_steps=3, first_order=True), t,
         lambda: ref.maml_value_and_grad(model, theta, batch, inner_lr=0.1, inner_steps=3,
                                         first_order=True)),
        (mc.ANIL(model, inner_lr=0.2, inner_steps=2), t,
         lambda: ref.anil_value_and_grad(model, theta, batch, inner_lr=0.2, inner_steps=2)),
        (mc.Reptile(model, inner_lr=0.1, inner_steps=4), t,
         lambda: ref.reptile_value_and_grad(model, theta, batch, inner_lr=0.1, inner_steps=4)),
    ]
    msgd = mc.MetaSGD(model, inner_lr=0.1, inner_steps=2)
    params = msgd.init(theta)
    params[model.n_params:] *= np.random.default_rng(5).uniform(0.5, 1.5, size=model.n_params)
    cases.append((msgd, params.astype(dtype),
                  lambda: ref.metasgd_value_and_grad(model, params, batch, inner_steps=2)))
    for learner, p, reference in cases:
        loss_c, g_c = learner.meta_value_and_grad(p, batch)
        loss_r, g_r = reference()
        assert g_c.dtype == dtype
        assert abs(loss_c - loss_r) <= tol * max(1.0, abs(loss_r)), learner
        assert rel_err(g_c, g_r) < tol * 10, learner


def test_torch_autograd_agrees_with_maml():
    torch = pytest.importorskip("torch")
    model = mc.MLP([1, 8, 8, 1], activation="tanh", loss="mse")
    batch = make_batch(model, n_tasks=3)
    theta = theta_for(model)
    lr, k = 0.1, 2
    _, g = mc.MAML(model, inner_lr=lr, inner_steps=k).meta_value_and_grad(theta, batch)

    def net(p, X):
        h = torch.tensor(np.array(X))
        layers = model.layers()
        for l, (w, (o, i), b) in enumerate(layers):
            h = h @ p[w:w + o * i].reshape(o, i).T + p[b:b + o]
            if l < len(layers) - 1:
                h = torch.tanh(h)
        return h[:, 0]

    p = torch.tensor(theta, requires_grad=True)
    total = 0.0
    for i in range(batch.n_tasks):
        (Xs, ys), (Xq, yq) = batch.support(i), batch.query(i)
        phi = p
        for _ in range(k):
            (gs,) = torch.autograd.grad(((net(phi, Xs) - torch.tensor(np.array(ys))) ** 2).mean(), phi,
                                        create_graph=True)
            phi = phi - lr * gs
        total = total + ((net(phi, Xq) - torch.tensor(np.array(yq))) ** 2).mean()
    (gt,) = torch.autograd.grad(total / batch.n_tasks, p)
    assert rel_err(g, gt.numpy()) < 1e-10


# --- determinism -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype):
    model = mc.MLP([1, 16, 16, 1], activation="relu", loss="mse")
    batch = mc.tasks.SinusoidSource().sample(13, step=3, seed=1, dtype=dtype)
    theta = model.init(seed=0, dtype=dtype)
    outs = [mc.MAML(model, inner_lr=0.01, inner_steps=2, n_threads=n).meta_value_and_grad(
        theta, batch) for n in (1, 2, 3)]
    for loss, g in outs[1:]:
        assert loss == outs[0][0]
        np.testing.assert_array_equal(g, outs[0][1])
    fits = [mc.fit(mc.MetaObjective(mc.MAML(model, inner_lr=0.01), mc.tasks.SinusoidSource(),
                                    meta_batch=5), theta, steps=20, chunk_size=7, progress=False,
                   n_threads=n)
            for n in (1, 3)]
    np.testing.assert_array_equal(fits[0].theta, fits[1].theta)
    np.testing.assert_array_equal(fits[0].history.objective, fits[1].history.objective)


# --- training ----------------------------------------------------------------------------------
def test_maml_fit_on_sinusoids_lowers_the_meta_loss():
    model = mc.MLP([1, 20, 20, 1], activation="relu", loss="mse")
    theta0 = model.init(seed=0, dtype=np.float32)
    val = mc.tasks.SinusoidSource().sample(50, step=0, seed=123)
    learner = mc.MAML(model, inner_lr=0.01, inner_steps=1)
    res = mc.fit(mc.MetaObjective(learner, mc.tasks.SinusoidSource(), meta_batch=10), theta0,
                 steps=600, optimizer={"kind": "adam", "lr": 3e-3}, validation=val,
                 eval_every=300, progress=False)
    assert res.history.objective.shape == (600,)
    assert res.history.eval_step.tolist() == [0, 300, 600]    # the start, then every 300 steps
    assert res.history.val_loss[0] == pytest.approx(learner.meta_value(theta0, val), rel=1e-6)
    assert res.history.val_loss[-1] < 0.5 * learner.meta_value(theta0, val)


def test_fit_from_a_taskset_is_reproducible_and_chunk_independent():
    model = mc.MLP([2, 6, 1], activation="tanh", loss="mse")
    ts = make_batch(model, n_tasks=12, seed=4)
    for learner in (mc.MAML(model, inner_lr=0.05), mc.Reptile(model, inner_lr=0.05,
                                                              outer_lr=0.5),
                    mc.MetaSGD(model, inner_lr=0.05), mc.ANIL(model, inner_lr=0.05)):
        t0 = theta_for(model)
        if isinstance(learner, mc.MetaSGD):
            t0 = learner.init(t0)
        problem = mc.MetaObjective(learner, ts, meta_batch=4)
        a = mc.fit(problem, t0, steps=30, chunk_size=30, progress=False, seed=3)
        b = mc.fit(problem, t0, steps=30, chunk_size=4, progress=False, seed=3)
        np.testing.assert_array_equal(a.theta, b.theta)
        assert a.history.objective[-5:].mean() < a.history.objective[:5].mean()


def test_reptile_fit_without_optimizer_is_the_annealed_reptile_step():
    model = mc.MLP([2, 4, 1], activation="tanh", loss="mse")
    ts = make_batch(model, n_tasks=3, seed=2)
    learner = mc.Reptile(model, inner_lr=0.1, inner_steps=3, outer_lr=0.5)
    theta = theta_for(model)
    res = mc.fit(mc.MetaObjective(learner, ts, meta_batch=3), theta, steps=2, progress=False)
    expected = theta.copy()
    for s in range(2):
        _, d = ref.reptile_value_and_grad(model, expected, ts, inner_lr=0.1, inner_steps=3)
        expected = expected - 0.5 * (1 - s / 2) * d
    np.testing.assert_allclose(res.theta, expected, rtol=1e-12, atol=1e-12)


def test_non_finite_loss_stops_training_at_the_step():
    model = mc.Linear(2)
    ts = make_batch(model, n_tasks=4)
    learner = mc.MAML(model, inner_lr=100.0, inner_steps=5)
    with pytest.raises(FloatingPointError, match="at step") as info:
        mc.fit(mc.MetaObjective(learner, ts, meta_batch=2), theta_for(model).astype(np.float32),
               steps=50, optimizer={"kind": "sgd", "lr": 1e3}, progress=False)
    assert np.isfinite(info.value.result.theta).all()


def test_sinusoid_source_is_deterministic_and_fresh_per_step():
    src = mc.tasks.SinusoidSource(k_support=5, k_query=7)
    a, b = src.sample(4, step=2, seed=1), src.sample(4, step=2, seed=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, src.sample(4, step=3, seed=1).X)
    assert a.n_tasks == 4 and (a.n_support == 5).all() and (a.n_query == 7).all()
    assert np.abs(a.y).max() <= 5.0 and np.abs(a.X).max() <= 5.0


# --- bad arguments -----------------------------------------------------------------------------
def test_bad_arguments_are_rejected_with_their_names():
    model = mc.MLP([2, 4, 1], activation="tanh", loss="mse")
    batch = make_batch(model)
    theta = theta_for(model)
    with pytest.raises(ValueError, match="inner_steps"):
        mc.MAML(model, inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr"):
        mc.MAML(model, inner_lr=-0.1)
    with pytest.raises(ValueError, match="query"):
        mc.MAML(model).meta_value_and_grad(theta, batch.with_support(None))
    with pytest.raises(ValueError, match=r"theta must have shape \(%d,\)" % model.n_params):
        mc.MAML(model).meta_value_and_grad(theta[:-1], batch)
    with pytest.raises(TypeError, match="theta.*float32 or float64"):
        mc.MAML(model).meta_value_and_grad(theta.astype(np.int64), batch)
    with pytest.raises(ValueError, match=r"theta must have shape \(%d,\)" % (2 * model.n_params)):
        mc.MetaSGD(model).meta_value_and_grad(theta, batch)
    with pytest.raises(ValueError, match="task_heads"):
        mc.MAML(mc.MLP([2, 4, 1], task_heads=3))
    with pytest.raises(TypeError, match="batch must be a TaskSet"):
        mc.MAML(model).meta_value_and_grad(theta, (batch.X, batch.y))
    with pytest.raises(ValueError, match="meta_batch"):
        mc.MetaObjective(mc.MAML(model), batch, meta_batch=10)
    with pytest.raises(TypeError, match="optimizer"):
        mc.fit(mc.MetaObjective(mc.MAML(model), batch, meta_batch=1), theta, steps=1,
               optimizer="adam", progress=False)
    with pytest.raises(ValueError, match="n_threads"):
        mc.MAML(model, n_threads=0)
