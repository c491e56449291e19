"""metacore.optim: the core's updates against the NumPy reference and torch.optim, convergence to
known optima, schedules against their formulas, and every bad hyper-parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref
from metacore.optim import SGD, Adam, AdamW, constant, cosine, step, warmup

OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),
    "sgd-wd": lambda: SGD(lr=0.1, weight_decay=0.05),
    "momentum": lambda: SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: SGD(lr=0.05, momentum=0.8, nesterov=True),
    "adam": lambda: Adam(lr=0.01),
    "adam-l2": lambda: Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.1),
    "clipped": lambda: Adam(lr=0.01, clip_norm=0.5),
    "sgd-clipped-cosine": lambda: SGD(lr=0.1, momentum=0.5, clip_norm=1.0, schedule=cosine(7)),
    "adamw-warmup-step": lambda: AdamW(lr=0.02, schedule=warmup(3, step(4, 0.5), start_factor=0.1)),
}
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def gradient_sequence(P, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=P) * (1.0 + 2.0 * (t % 3)) for t in range(n)]


def core_run(opt, theta0, grads, dtype):
    theta = np.array(theta0, dtype=dtype)
    state = opt.init_state(theta)
    norms = [opt.update(theta, g.astype(dtype), state, t) for t, g in enumerate(grads)]
    return theta, state, norms


# --- the core against the reference ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_core_update_matches_reference(name, dtype):
    opt = OPTIMIZERS[name]()
    rng = np.random.default_rng(1)
    theta0 = rng.normal(size=37)
    grads = gradient_sequence(37, 12)
    theta, state, norms = core_run(opt, theta0, grads, dtype)
    settings = opt.to_dict()
    r_theta, r_state = theta0.copy(), ref.optimizer_init(settings, theta0)
    for t, g in enumerate(grads):
        r_theta, r_state, r_norm = ref.optimizer_step(settings, t, r_theta, g, r_state)
        assert norms[t] == pytest.approx(r_norm, rel=TOL[dtype])
    np.testing.assert_allclose(theta, r_theta, rtol=TOL[dtype], atol=TOL[dtype])
    assert sorted(state) == sorted(r_state)
    for k in state:
        np.testing.assert_allclose(state[k], r_state[k], rtol=TOL[dtype], atol=TOL[dtype])


def test_update_is_in_place_and_thread_count_independent():
    opt = Adam(lr=0.01)
    P = 300_000      # above the size where the update runs threaded
    g = np.random.default_rng(0).normal(size=P)
    results = []
    for threads in (1, 2, 3):
        theta = np.ones(P)
        state = opt.init_state(theta)
        before = theta.ctypes.data
        norm = opt.update(theta, g, state, 0, n_threads=threads)
        assert theta.ctypes.data == before
        results.append((theta, state["m"], state["v"], norm))
    for theta, m, v, norm in results[1:]:
        assert np.array_equal(theta, results[0][0]) and np.array_equal(v, results[0][2])
        assert norm == results[0][3]


def test_nonfinite_gradient_raises_and_changes_nothing():
    opt = SGD(lr=0.1, momentum=0.9)
    theta = np.ones(4)
    state = opt.init_state(theta)
    with pytest.raises(FloatingPointError, match="step 3"):
        opt.update(theta, np.array([1.0, np.nan, 0.0, 0.0]), state, 3)
    assert np.array_equal(theta, np.ones(4)) and not state["m"].any()


def test_clipping_scales_to_the_global_norm():
    opt = SGD(lr=1.0, clip_norm=2.0)
    theta = np.zeros(2)
    norm = opt.update(theta, np.array([3.0, 4.0]), {}, 0)
    assert norm == 5.0
    np.testing.assert_allclose(theta, [-1.2, -1.6], rtol=1e-15)  # g · 2/5


# --- against torch.optim on the same gradient sequence ---------------------------------------
TORCH_CASES = [
    (lambda: SGD(lr=0.1, weight_decay=0.05), "SGD", dict(lr=0.1, weight_decay=0.05)),
    (lambda: SGD(lr=0.05, momentum=0.9, weight_decay=0.01), "SGD",
     dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    (lambda: SGD(lr=0.05, momentum=0.8, nesterov=True), "SGD",
     dict(lr=0.05, momentum=0.8, nesterov=True)),
    (lambda: Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), "Adam",
     dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    (lambda: AdamW(lr=0.01), "AdamW", dict(lr=0.01)),
]


@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_matches_torch_optim(case):
    torch = pytest.importorskip("torch")
    make, cls, kwargs = TORCH_CASES[case]
    theta0 = np.random.default_rng(2).normal(size=23)
    grads = gradient_sequence(23, 15, seed=3)
    theta, _, _ = core_run(make(), theta0, grads, np.float64)
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    topt = getattr(torch.optim, cls)([p], **kwargs)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
    np.testing.assert_allclose(theta, p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_schedules_match_torch_lr_schedulers():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    pairs = [
        (step(5, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5)),
        (cosine(20, min_factor=0.1),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.1)),
    ]
    for schedule, make in pairs:
        topt = torch.optim.SGD([p], lr=1.0)
        sched = make(topt)
        for t in range(20):
            assert schedule.factor(t) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
            topt.step()
            sched.step()


# --- convergence to known optima ---------------------------------------------------------------
A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
C = np.array([1.0, -2.0, 0.5])


def run_to_convergence(opt, grad_fn, x0, steps):
    x = np.array(x0, dtype=np.float64)
    state = opt.init_state(x)
    for t in range(steps):
        opt.update(x, grad_fn(x), state, t)
    return x


CONVERGING = {
    "sgd": lambda: SGD(lr=0.3),
    "momentum": lambda: SGD(lr=0.1, momentum=0.9),
    "nesterov": lambda: SGD(lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda: Adam(lr=0.05, schedule=cosine(3000)),
    "adamw": lambda: AdamW(lr=0.05, weight_decay=0.0, schedule=cosine(3000)),
}


@pytest.mark.parametrize("name", sorted(CONVERGING))
def test_converges_to_the_minimum_of_a_quadratic(name):
    """f(x) = ½ (x − c)ᵀ A (x − c) has its minimum at c."""
    x = run_to_convergence(CONVERGING[name](), lambda x: A @ (x - C), np.zeros(3), 3000)
    np.testing.assert_allclose(x, C, atol=1e-4)


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.2, momentum=0.5, weight_decay=0.3),
                                  lambda: Adam(lr=0.05, weight_decay=0.3, schedule=cosine(3000))])
def test_coupled_weight_decay_minimises_the_l2_penalised_quadratic(make):
    """SGD's and Adam's weight_decay adds wd·x to the gradient: the optimum is (A + wd I)⁻¹ A c."""
    x = run_to_convergence(make(), lambda x: A @ (x - C), np.zeros(3), 3000)
    np.testing.assert_allclose(x, np.linalg.solve(A + 0.3 * np.eye(3), A @ C), atol=1e-4)


def rosenbrock_grad(x):
    a, b = x
    return np.array([-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)])


@pytest.mark.parametrize("make, steps", [
    (lambda: SGD(lr=1e-3, momentum=0.9), 20000),
    (lambda: SGD(lr=1e-3, momentum=0.9, nesterov=True), 20000),
    (lambda: Adam(lr=0.02), 5000),
    (lambda: AdamW(lr=0.02, weight_decay=0.0), 5000),
])
def test_converges_to_the_minimum_of_rosenbrock(make, steps):
    """f(a, b) = (1 − a)² + 100 (b − a²)² has its minimum at (1, 1)."""
    x = run_to_convergence(make(), rosenbrock_grad, [-1.5, 2.0], steps)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-4)


def test_plain_sgd_descends_rosenbrock():
    x = run_to_convergence(SGD(lr=2e-3), rosenbrock_grad, [-1.5, 2.0], 20000)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=5e-3)


# --- schedules ---------------------------------------------------------------------------------
def core_lr(opt, t):
    return opt.core_config().lr_at(t)


def test_constant_schedule():
    opt = SGD(lr=0.3)
    assert [core_lr(opt, t) for t in (0, 1, 1000)] == [0.3, 0.3, 0.3]


def test_step_schedule_multiplies_by_gamma_every_n_steps():
    opt = SGD(lr=1.0, schedule=step(every=3, gamma=0.5))
    assert [core_lr(opt, t) for t in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_cosine_schedule_follows_its_formula_and_holds_its_floor():
    opt = SGD(lr=2.0, schedule=cosine(10, min_factor=0.1))
    for t in range(15):
        u = min(t, 10)
        want = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u / 10)))
        assert core_lr(opt, t) == pytest.approx(want, rel=1e-14)
        assert opt.lr_at(t) == pytest.approx(want, rel=1e-14)
    assert core_lr(opt, 5) == pytest.approx(2.0 * 0.55)


def test_warmup_is_linear_then_hands_over_to_the_schedule():
    opt = SGD(lr=1.0, schedule=warmup(4, cosine(8), start_factor=0.2))
    warm = [core_lr(opt, t) for t in range(4)]
    np.testing.assert_allclose(warm, [0.2, 0.4, 0.6, 0.8], rtol=1e-14)
    after = [core_lr(opt, t) for t in range(4, 13)]
    np.testing.assert_allclose(after, [0.5 * (1 + math.cos(math.pi * u / 8)) for u in range(8)] + [0.0],
                               rtol=1e-14, atol=1e-16)
    plain = SGD(lr=1.0, schedule=warmup(5))
    np.testing.assert_allclose([core_lr(plain, t) for t in range(7)],
                               [0, 0.2, 0.4, 0.6, 0.8, 1, 1], rtol=1e-14)


def test_schedules_in_the_reference_and_the_core_agree():
    for schedule in [constant(), step(7, 0.3), cosine(50, 0.05), warmup(10, step(3, 0.9), 0.5)]:
        opt = SGD(lr=1.5, schedule=schedule)
        for t in range(0, 80, 3):
            want = 1.5 * ref.schedule_factor(schedule.to_dict(), t)
            assert core_lr(opt, t) == pytest.approx(want, rel=1e-14)


def test_optimizers_round_trip_through_plain_data():
    for make in list(OPTIMIZERS.values()):
        opt = make()
        assert mc.optim.from_dict(opt.to_dict()) == opt
    assert "Adam(lr=0.01" in repr(Adam(lr=0.01))


# --- bad hyper-parameters ----------------------------------------------------------------------
@pytest.mark.parametrize("make, exc, match", [
    (lambda: SGD(lr=-0.1), ValueError, "lr must be > 0"),
    (lambda: SGD(lr=0.0), ValueError, "lr must be > 0"),
    (lambda: SGD(lr=float("nan")), ValueError, "lr must be finite"),
    (lambda: SGD(lr="0.1"), TypeError, "lr must be a real number"),
    (lambda: SGD(lr=0.1, momentum=1.0), ValueError, "momentum must be < 1"),
    (lambda: SGD(lr=0.1, momentum=-0.5), ValueError, "momentum must be >= 0"),
    (lambda: SGD(lr=0.1, nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    (lambda: SGD(lr=0.1, momentum=0.9, nesterov=1), TypeError, "nesterov must be True or False"),
    (lambda: SGD(lr=0.1, weight_decay=-1e-3), ValueError, "weight_decay must be >= 0"),
    (lambda: SGD(lr=0.1, clip_norm=0.0), ValueError, "clip_norm must be > 0"),
    (lambda: Adam(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be < 1"),
    (lambda: Adam(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be >= 0"),
    (lambda: Adam(betas=(0.9,)), ValueError, "betas must be a pair"),
    (lambda: Adam(betas=0.9), TypeError, "betas must be a pair"),
    (lambda: Adam(eps=0.0), ValueError, "eps must be > 0"),
    (lambda: AdamW(weight_decay=-0.01), ValueError, "weight_decay must be >= 0"),
    (lambda: Adam(schedule="cosine"), TypeError, "schedule must be a metacore.optim schedule"),
    (lambda: step(0), ValueError, "every must be >= 1"),
    (lambda: step(5, gamma=0.0), ValueError, "gamma must be > 0"),
    (lambda: step(5, gamma=1.5), ValueError, "gamma must be <= 1"),
    (lambda: cosine(0), ValueError, "steps must be >= 1"),
    (lambda: cosine(10, min_factor=2.0), ValueError, "min_factor must be <= 1"),
    (lambda: warmup(0), ValueError, "steps must be >= 1"),
    (lambda: warmup(5, start_factor=-1.0), ValueError, "start_factor must be >= 0"),
    (lambda: warmup(5, then=warmup(3)), ValueError, "then must be a schedule without a warm-up"),
    (lambda: warmup(5, then=0.5), TypeError, "then must be a Schedule"),
])
def test_bad_hyper_parameters_are_rejected_by_name(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_update_rejects_bad_buffers():
    opt = Adam(lr=0.01)
    theta = np.zeros(3)
    state = opt.init_state(theta)
    with pytest.raises(TypeError, match="theta must be a float32 or float64 numpy array"):
        opt.update([0.0, 0.0, 0.0], np.ones(3), state, 0)
    with pytest.raises(ValueError, match="grad has shape"):
        opt.update(theta, np.ones(4), state, 0)
    with pytest.raises(ValueError, match="lacks the moment buffer"):
        opt.update(theta, np.ones(3), {"m": state["m"]}, 0)
    with pytest.raises(TypeError, match="v must have dtype float64"):
        opt.update(theta, np.ones(3), {"m": state["m"], "v": np.zeros(3, np.float32)}, 0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        opt.update(theta, np.ones(3), state, -1)
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="theta must be writeable"):
        opt.update(frozen, np.ones(3), state, 0)


def test_meta_learners_take_optim_objects():
    """Meta-training reads an optimizer object or the same settings as a plain dict (through the
    one strict from_dict): same numbers."""
    opt = AdamW(lr=3e-3, weight_decay=0.1, schedule=warmup(5, cosine(20, 0.1)))
    assert mc.optim.from_dict(opt.to_dict()) == opt
    model = mc.MLP([1, 8, 1], activation="tanh")
    tasks = mc.tasks.sinusoid(20, k_support=5, k_query=5, seed=0)
    theta0 = model.init(seed=0)
    kw = dict(steps=6, progress=False, seed=1)
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.01), tasks, meta_batch=4)
    opt = SGD(lr=0.01, momentum=0.9, schedule=cosine(6))
    a = mc.fit(problem, theta0, optimizer=opt, **kw)
    b = mc.fit(problem, theta0, optimizer=opt.to_dict(), **kw)
    assert np.array_equal(a.theta, b.theta)
