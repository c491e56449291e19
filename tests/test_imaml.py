"""iMAML (Rajeswaran et al. 2019): the implicit meta-gradient (I + H_s(φ)/λ)⁻¹ ∇L_q(φ) against
metacore.reference (float64 and float32); against the implicit formula solved densely on a tiny
net, with H_s built by central differences of the gradient (an oracle independent of the
Hessian-vector products and of CG); convergence to the true gradient of L_q(φ*(θ)) by central
differences once the inner loop and CG have converged; memory independent of the inner steps;
bit-identical results for any thread count; the proximal adaptation of adapt / evaluate; training
through mc.fit resumed bit-identically; plain-data and pickle round trips; argument checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import metacore as mc
from interrupts import interrupt_lag
from metacore import reference as ref
from numerics import central_diff, random_targets, rel_err

NETS = [
    ([2, 4, 1], "tanh", "mse"),
    ([3, 5, 3], "tanh", "cross_entropy"),
    ([2, 4, 3, 1], "tanh", "logistic"),
    ([3, 6, 2], "relu", "mse"),
]


def tasks_for(model, n_tasks=3, n_support=5, n_query=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    n = n_support + n_query
    Xs = [rng.normal(size=(n, model.n_features)) for _ in range(n_tasks)]
    ys = [random_targets(rng, model, n) for _ in range(n_tasks)]
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_support, dtype=dtype)


def theta_for(model, seed=0):
    rng = np.random.default_rng(seed + 5)
    return model.init(seed=seed) + 0.2 * rng.normal(size=model.n_params)


def dense_implicit_grad(model, theta, Xs, ys, Xq, yq, reg, lr, steps):
    """The oracle: φ by the reference's proximal inner loop, H_s(φ) by central differences of the
    support gradient, then np.linalg.solve((I + H_s/λ), ∇L_q(φ))."""
    phi = ref.imaml_adapt(model, theta, Xs, ys, steps=steps, lr=lr, reg=reg)
    H = central_diff(lambda p: ref.loss_and_grad(model, p, Xs, ys)[1], phi, 1e-5)
    A = np.eye(phi.size) + 0.5 * (H + H.T) / reg
    assert np.linalg.eigvalsh(A).min() > 0.05   # the setting CG is for: I + H/λ positive definite
    _, gq = ref.loss_and_grad(model, phi, Xq, yq)
    return np.linalg.solve(A, gq)


# --- the meta-gradient -----------------------------------------------------------------------
@pytest.mark.parametrize("sizes,act,loss", NETS)
@pytest.mark.parametrize("inner_steps,cg_steps", [(1, 1), (2, 3), (3, 5)])
def test_matches_the_reference(sizes, act, loss, inner_steps, cg_steps):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = tasks_for(model)
    theta = theta_for(model)
    learner = mc.IMAML(model, reg=0.8, inner_lr=0.1, inner_steps=inner_steps, cg_steps=cg_steps,
                       n_threads=1)
    value, g = learner.meta_value_and_grad(theta, batch)
    want_value, want_g = ref.imaml_value_and_grad(model, theta, batch, reg=0.8, inner_lr=0.1,
                                                  inner_steps=inner_steps, cg_steps=cg_steps)
    assert value == pytest.approx(want_value, rel=1e-12)
    assert rel_err(g, want_g) < 1e-10


def test_float32_matches_the_reference():
    model = mc.MLP([4, 16, 8, 3], activation="relu", loss="cross_entropy")
    batch = tasks_for(model, n_tasks=4, n_support=10, n_query=6, dtype=np.float32)
    theta = theta_for(model).astype(np.float32)
    learner = mc.IMAML(model, reg=1.0, inner_lr=0.1, inner_steps=3, cg_steps=4)
    value, g = learner.meta_value_and_grad(theta, batch)
    assert g.dtype == np.float32
    want_value, want_g = ref.imaml_value_and_grad(model, theta, batch, reg=1.0, inner_lr=0.1,
                                                  inner_steps=3, cg_steps=4)
    assert value == pytest.approx(want_value, rel=1e-5)
    assert rel_err(g, want_g) < 1e-4


@pytest.mark.parametrize("sizes,act,loss", [NETS[0], NETS[1]])
@pytest.mark.parametrize("reg", [2.0, 5.0])
def test_cg_solves_the_dense_implicit_system(sizes, act, loss, reg):
    """With as many CG steps as parameters, CG is the exact solve of (I + H/λ) x = ∇L_q: it must
    match np.linalg.solve with H from finite differences, for the same inner loop."""
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = tasks_for(model, n_tasks=1, n_support=6, n_query=5, seed=2)
    theta = theta_for(model, seed=2)
    learner = mc.IMAML(model, reg=reg, inner_lr=0.1, inner_steps=4, cg_steps=4 * model.n_params)
    _, g = learner.meta_value_and_grad(theta, batch)
    (Xs, ys), (Xq, yq) = batch.support(0), batch.query(0)
    want = dense_implicit_grad(model, theta, Xs, ys, Xq, yq, reg, 0.1, 4)
    assert rel_err(g, want) < 1e-6


def test_cg_converges_to_the_dense_solution():
    """The CG error falls as cg_steps grows and vanishes at the dense solution."""
    model = mc.MLP([3, 6, 3], activation="tanh", loss="cross_entropy")
    batch = tasks_for(model, n_tasks=1, n_support=8, n_query=5, seed=4)
    theta = theta_for(model, seed=4)
    (Xs, ys), (Xq, yq) = batch.support(0), batch.query(0)
    want = dense_implicit_grad(model, theta, Xs, ys, Xq, yq, 0.5, 0.05, 3)
    errs = [rel_err(mc.IMAML(model, reg=0.5, inner_lr=0.05, inner_steps=3, cg_steps=k)
                    .meta_value_and_grad(theta, batch)[1], want) for k in (1, 3, 10, 60)]
    assert errs[0] > 1e-2                               # one step is far off for a small λ
    assert errs[1] < errs[0] and errs[2] < errs[1]
    assert errs[3] < 1e-6


def test_converged_inner_loop_gives_the_true_meta_gradient():
    """Once the inner loop has converged to φ*(θ) and CG to the solve, the implicit gradient is
    the gradient of θ ↦ L_q(φ*(θ)): compare with central differences of the meta-loss itself."""
    model = mc.MLP([2, 5, 1], activation="tanh", loss="mse")
    batch = tasks_for(model, n_tasks=2, n_support=6, n_query=5, seed=1)
    theta = theta_for(model, seed=1)
    learner = mc.IMAML(model, reg=2.0, inner_lr=0.1, inner_steps=600,
                       cg_steps=4 * model.n_params, n_threads=1)
    _, g = learner.meta_value_and_grad(theta, batch)
    fd = central_diff(lambda t: learner.meta_value(t, batch), theta, 1e-5)
    assert rel_err(g, fd) < 1e-6
    few = mc.IMAML(model, reg=2.0, inner_lr=0.1, inner_steps=2, cg_steps=4 * model.n_params)
    assert rel_err(few.meta_value_and_grad(theta, batch)[1], fd) > 10 * rel_err(g, fd)


def test_memory_does_not_grow_with_inner_steps():
    """MAML keeps the trail of inner iterates (inner_steps × P): 10¹² steps cannot be allocated.
    iMAML keeps a few vectors of P whatever the number of steps."""
    model = mc.MLP([2, 64, 64, 1], activation="tanh")
    ts = tasks_for(model, n_tasks=2)
    with pytest.raises(MemoryError):
        mc.MetaObjective(mc.MAML(model, inner_steps=10 ** 12), ts, meta_batch=1).core_step(
            np.float64)
    step = mc.MetaObjective(mc.IMAML(model, inner_steps=10 ** 12), ts,
                            meta_batch=1).core_step(np.float64)
    assert step.n_params == model.n_params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype):
    model = mc.MLP([3, 12, 12, 1], activation="relu")
    batch = tasks_for(model, n_tasks=37, dtype=dtype)
    theta = theta_for(model).astype(dtype)
    results = [mc.IMAML(model, reg=1.0, inner_lr=0.05, inner_steps=2, cg_steps=3, n_threads=k)
               .meta_value_and_grad(theta, batch) for k in (1, 2, 3, 8)]
    for value, g in results[1:]:
        assert value == results[0][0]
        assert g.tobytes() == results[0][1].tobytes()


# --- adapting: the proximal inner loop -------------------------------------------------------------
def test_adapt_runs_the_proximal_inner_loop():
    model = mc.MLP([2, 6, 1], activation="tanh")
    batch = tasks_for(model, n_tasks=4, seed=6)
    theta = theta_for(model)
    learner = mc.IMAML(model, reg=1.5, inner_lr=0.1, inner_steps=4)
    (Xs, ys), (Xq, yq) = batch.support(0), batch.query(0)
    want = ref.imaml_adapt(model, theta, Xs, ys, steps=4, lr=0.1, reg=1.5)
    np.testing.assert_allclose(learner.adapt(theta, Xs, ys), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(learner.adapt(theta, Xs, ys, steps=0), theta)
    np.testing.assert_allclose(learner.adapt_predict(theta, Xs, ys, Xq),
                               ref.imaml_adapt_predict(model, theta, Xs, ys, Xq, 4, 0.1, 1.5),
                               rtol=1e-12, atol=1e-14)
    report = mc.evaluate(model, theta, batch, steps=(0, 4, 8), learner=learner)
    for j, s in enumerate((0, 4, 8)):
        want_losses = [ref.loss_and_grad(model, ref.imaml_adapt(model, theta, *batch.support(i),
                                                                steps=s, lr=0.1, reg=1.5),
                                         *batch.query(i))[0] for i in range(batch.n_tasks)]
        np.testing.assert_allclose(report.losses[j], want_losses, rtol=1e-10)
    losses = learner.query_losses(theta, batch)
    np.testing.assert_allclose(losses, report.losses[1], rtol=1e-10)


# --- training with the one loop -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_on_sinusoids_resumes_bit_identically(tmp_path, dtype):
    model = mc.MLP([1, 16, 16, 1], activation="tanh")
    source = mc.tasks.SinusoidSource()
    theta0 = model.init(seed=0, dtype=dtype)

    def problem(threads):
        return mc.MetaObjective(mc.IMAML(model, reg=1.0, inner_lr=0.02, inner_steps=3,
                                         cg_steps=3), source, meta_batch=4, n_threads=threads)

    opt = mc.optim.Adam(lr=3e-3)
    full = mc.fit(problem(1), theta0, optimizer=opt, steps=30, seed=1, progress=False,
                  chunk_size=7)
    other = mc.fit(problem(2), theta0, optimizer=opt, steps=30, seed=1, progress=False,
                   chunk_size=13)
    assert full.theta.tobytes() == other.theta.tobytes()
    first = mc.fit(problem(1), theta0, optimizer=opt, steps=12, seed=1, progress=False)
    mc.save(tmp_path / "run", first)
    resumed = mc.fit(problem(1), mc.load(tmp_path / "run"), optimizer=opt, steps=18,
                     progress=False)
    assert resumed.theta.tobytes() == full.theta.tobytes()
    again = pickle.loads(pickle.dumps(problem(1)))
    unpickled = mc.fit(again, mc.load(tmp_path / "run"), optimizer=opt, steps=18, progress=False)
    assert unpickled.theta.tobytes() == full.theta.tobytes()
    losses = full.history.objective
    assert losses[-5:].mean() < losses[:5].mean()


def test_learner_round_trips_through_plain_data_and_pickle():
    learner = mc.IMAML(mc.MLP([1, 8, 1], activation="tanh"), reg=0.5, inner_lr=0.02,
                       inner_steps=7, cg_steps=9)
    d = learner.to_dict()
    assert d == {"kind": "IMAML", "model": learner.model.spec(), "reg": 0.5, "inner_lr": 0.02,
                 "inner_steps": 7, "cg_steps": 9}
    assert mc.learners.from_dict(d) == learner
    assert pickle.loads(pickle.dumps(learner)) == learner


# --- argument checks -----------------------------------------------------------------------------
def test_bad_arguments_are_named():
    model = mc.MLP([1, 4, 1], activation="tanh")
    with pytest.raises(ValueError, match="reg"):
        mc.IMAML(model, reg=0.0)
    with pytest.raises(ValueError, match="reg"):
        mc.IMAML(model, reg=np.nan)
    with pytest.raises(ValueError, match="cg_steps"):
        mc.IMAML(model, cg_steps=0)
    with pytest.raises(ValueError, match="inner_steps"):
        mc.IMAML(model, inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr"):
        mc.IMAML(model, inner_lr=-1.0)
    with pytest.raises(TypeError, match="cg_steps"):
        mc.IMAML(model, cg_steps=2.5)
    learner = mc.IMAML(model)
    with pytest.raises(ValueError, match="steps"):
        learner.adapt(model.init(), np.zeros((3, 1)), np.zeros(3), steps=-1)
    from metacore import _core
    theta = model.init(dtype=np.float64)
    with pytest.raises(ValueError, match="cg_steps"):
        _core.meta_value_and_grad(model.core_net(), "imaml", 0.1, 1, False, theta,
                                  np.zeros((4, 1)), np.zeros(4), np.array([0, 4]),
                                  np.array([2]), cg_steps=0)
    with pytest.raises(ValueError, match="reg"):
        _core.imaml_adapt(model.core_net(), theta, np.zeros((3, 1)), np.zeros(3), 2, 0.1, -1.0)
    with pytest.raises(ValueError, match="X_support"):
        _core.imaml_adapt(model.core_net(), theta, np.zeros((3, 2)), np.zeros(3), 2, 0.1, 1.0)


# --- Ctrl-C ------------------------------------------------------------------------------------
IMAML_SETUP = """
model = mc.MLP([2, 16, 1], activation="tanh")
rng = np.random.default_rng(0)
ts = mc.TaskSet.from_arrays([rng.normal(size=(10, 2)) for _ in range(2)],
                            [rng.normal(size=10) for _ in range(2)], n_support=5)
theta = model.init()
"""


@pytest.mark.parametrize("call", [
    "mc.IMAML(model, inner_steps=10**9).meta_value_and_grad(theta, ts)",
    "mc.fit(mc.MetaObjective(mc.IMAML(model, inner_steps=100), ts, meta_batch=2), theta, "
    "steps=10**7, progress=False)",
    "mc.IMAML(model).adapt(theta, *ts.support(0), steps=10**9)",
])
def test_ctrl_c_interrupts_the_inner_loop_and_cg(call):
    assert interrupt_lag(IMAML_SETUP, call) < 1.0   # seconds after SIGINT, on a busy machine


def test_query_outputs_checks_its_tasks_like_every_learner():
    model = mc.MLP([1, 8, 1])
    learner, theta = mc.IMAML(model), model.init()
    with pytest.raises(TypeError, match="test_tasks must be a TaskSet"):
        learner.query_outputs(theta, "x", steps=1, lr=0.1)
    wide = mc.TaskSet.from_arrays([np.zeros((4, 3))], [np.zeros(4)], n_support=2)
    with pytest.raises(ValueError, match="test_tasks has 3 features but the model expects 1"):
        learner.query_outputs(theta, wide, steps=1, lr=0.1)


# --- the monotone inner loop: a step past the stability limit is undone ---------------------------
def proximal_objective(model, phi, theta, X, y, reg):
    return ref.loss_and_grad(model, phi, X, y)[0] + 0.5 * reg * float(np.sum((phi - theta) ** 2))


def test_a_rate_past_the_stability_limit_still_converges_to_the_proximal_minimiser():
    """A linear model's support loss is quadratic, ½φᵀHφ − bᵀφ + c, so the proximal minimiser is
    (H + λI)⁻¹(b + λθ) (H and b by central differences: an oracle apart from the loop). At
    α (σ_max(H) + λ) ≈ 10 > 2 plain gradient descent diverges; the monotone loop halves its
    rate until it descends and converges."""
    model = mc.MLP([3, 1])
    rng = np.random.default_rng(2)
    X, y = 4.0 * rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
    theta, reg, lr = rng.normal(size=model.n_params), 1.0, 0.1
    H = central_diff(lambda p: ref.loss_and_grad(model, p, X, y)[1], theta, 1e-3)
    H = 0.5 * (H + H.T)
    assert lr * (np.linalg.eigvalsh(H).max() + reg) > 4
    b = H @ theta - ref.loss_and_grad(model, theta, X, y)[1]
    want = np.linalg.solve(H + reg * np.eye(model.n_params), b + reg * theta)

    plain = theta.copy()                       # the loop without the safeguard: diverges
    for _ in range(50):
        plain = plain - lr * (ref.loss_and_grad(model, plain, X, y)[1] + reg * (plain - theta))
    assert not np.all(np.abs(plain) < 1e6)

    learner = mc.IMAML(model, reg=reg, inner_lr=lr, inner_steps=400)
    phi = learner.adapt(theta, X, y)
    np.testing.assert_allclose(phi, want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(phi, ref.imaml_adapt(model, theta, X, y, 400, lr, reg),
                               rtol=1e-12, atol=1e-13)
    batch = mc.TaskSet.from_arrays([np.vstack([X, X])], [np.vstack([y, y])], n_support=8)
    value, grad = learner.meta_value_and_grad(theta, batch)
    want_value, want_grad = ref.imaml_value_and_grad(model, theta, batch, reg=reg, inner_lr=lr,
                                                     inner_steps=400, cg_steps=5)
    assert np.isfinite(value) and value == pytest.approx(want_value, rel=1e-10)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(6))
def test_the_inner_loop_never_raises_the_proximal_objective(seed, dtype):
    """Generated sharp tasks (feature scales 1–30, rates up to the contraction limit of λ): every
    adapted φ is finite, its proximal objective is at most θ's, and it is the reference's."""
    rng = np.random.default_rng(seed)
    sizes, act, loss = NETS[seed % len(NETS)]
    model = mc.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(6, model.n_features)) * 10 ** rng.uniform(0, 1.5)
    y = random_targets(rng, model, 6)
    reg = float(10 ** rng.uniform(-1, 1))
    lr = float(rng.uniform(0.1, 1.9) / reg)
    theta = theta_for(model, seed)
    learner = mc.IMAML(model, reg=reg, inner_lr=lr, inner_steps=30)
    phi = learner.adapt(theta.astype(dtype), X.astype(dtype), y.astype(dtype))
    assert np.isfinite(phi).all()
    f0 = proximal_objective(model, theta, theta, X, y, reg)
    assert proximal_objective(model, phi.astype(np.float64), theta, X, y, reg) <= f0 * (1 + 1e-5)
    want = ref.imaml_adapt(model, theta, X, y, 30, lr, reg)
    if dtype == np.float64:
        np.testing.assert_allclose(phi, want, rtol=1e-9, atol=1e-11)
