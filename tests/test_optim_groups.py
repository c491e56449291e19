"""Optimizer parameter groups (``groups=``): named ranges of θ with their own learning rate and
weight decay. The core against the reference, against each group's update run on its own slice
(an update is element-wise apart from the global clipping norm), against plain SGD's closed form,
torch.optim's param_groups where torch is installed, and through fit, checkpoints, the CLI's
TOML and every bad group."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore import reference as ref
from metacore.optim import SGD, Adam, AdamW, cosine

KINDS = {
    "sgd": lambda **g: SGD(lr=0.1, weight_decay=0.01, **g),
    "momentum": lambda **g: SGD(lr=0.05, momentum=0.9, **g),
    "nesterov": lambda **g: SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02, **g),
    "adam": lambda **g: Adam(lr=0.01, weight_decay=0.1, **g),
    "adamw": lambda **g: AdamW(lr=0.01, weight_decay=0.1, schedule=cosine(9), **g),
}


def run_core(opt, theta0, grads, dtype, layout, n_threads=1):
    theta = np.array(theta0, dtype=dtype)
    bound = opt.bind(layout)
    state = bound.init_state(theta)
    for t, g in enumerate(grads):
        bound.update(theta, np.asarray(g, dtype=dtype), state, t, n_threads=n_threads)
    return theta, state


def layouts(P):
    """A layout of two or three named, disjoint ranges inside [0, P), in any order."""
    cuts = st.lists(st.integers(0, P), min_size=4, max_size=4).map(sorted)
    return cuts.map(lambda c: {"a": (c[0], c[1]), "b": (c[2], c[3]), "all": (0, P)})


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), dtype=st.sampled_from([np.float64, np.float32]),
       layout=layouts(29), lr_a=st.floats(1e-4, 0.5), wd_b=st.floats(0.0, 0.3),
       seed=st.integers(0, 2**16))
def test_groups_match_the_reference_and_each_slice_run_alone(kind, dtype, layout, lr_a, wd_b, seed):
    groups = {}
    if layout["a"][1] > layout["a"][0]:
        groups["a"] = {"lr": lr_a}
    if layout["b"][1] > layout["b"][0]:
        groups["b"] = {"lr": lr_a / 3, "weight_decay": wd_b}
    opt = KINDS[kind](groups=groups)
    rng = np.random.default_rng(seed)
    theta0 = rng.normal(size=29)
    grads = [rng.normal(size=29) * (1 + t % 3) for t in range(6)]
    theta, state = run_core(opt, theta0, grads, dtype, layout)

    # the reference, step by step (the same float32 arithmetic element-wise)
    r_theta, r_state = theta0.astype(dtype), ref.optimizer_init(opt.to_dict(), theta0.astype(dtype))
    for t, g in enumerate(grads):
        r_theta, r_state, _ = ref.optimizer_step(opt.to_dict(), t, r_theta, g.astype(dtype),
                                                 r_state, layout)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(theta, r_theta, rtol=tol, atol=tol)

    # each range alone: the base optimizer with the group's settings on that slice, no groups
    base = opt.to_dict()
    base.pop("groups", None)
    pieces = [(0, 29, {})] + [(*layout[n], g) for n, g in groups.items()]
    expected = np.empty(29, dtype)
    for b, e, g in pieces:          # later pieces overwrite the base run's entries
        if e == b:
            continue
        alone = mc.optim.from_dict({**base, **g})
        part, _ = run_core(alone, theta0[b:e], [x[b:e] for x in grads], dtype, {})
        expected[b:e] = part
    np.testing.assert_array_equal(theta, expected)
    for k in state:
        assert np.isfinite(state[k]).all()


def test_plain_sgd_with_groups_is_the_closed_form():
    """θ₁ = θ₀ − lr_i g with each entry's group rate; weight decay adds wd_i θ₀ to g."""
    theta0, g = np.linspace(-1, 1, 10), np.arange(10.0) - 4.5
    opt = SGD(lr=0.1, groups={"head": {"lr": 0.5, "weight_decay": 0.2}})
    theta, _ = run_core(opt, theta0, [g], np.float64, {"head": (6, 9)})
    lr = np.full(10, 0.1)
    lr[6:9] = 0.5
    wd = np.zeros(10)
    wd[6:9] = 0.2
    np.testing.assert_array_equal(theta, theta0 - lr * (g + wd * theta0))


def test_without_groups_and_with_a_group_equal_to_the_base_the_update_is_bit_identical():
    rng = np.random.default_rng(3)
    theta0, grads = rng.normal(size=50), [rng.normal(size=50) for _ in range(5)]
    for kind in sorted(KINDS):
        plain, _ = run_core(KINDS[kind](), theta0, grads, np.float32, {})
        same, _ = run_core(KINDS[kind](groups={"x": {"lr": KINDS[kind]().lr}}), theta0, grads,
                           np.float32, {"x": (10, 30)})
        np.testing.assert_array_equal(plain, same)


def test_clipping_uses_the_norm_over_all_of_theta():
    g = np.array([3.0, 4.0, 0.0, 12.0])       # ‖g‖ = 13
    opt = SGD(lr=1.0, clip_norm=1.0, groups={"b": {"lr": 2.0}})
    theta, _ = run_core(opt, np.zeros(4), [g], np.float64, {"b": (2, 4)})
    np.testing.assert_allclose(theta, -np.array([1, 1, 2, 2]) * g / 13.0, rtol=1e-15)


def test_groups_are_thread_count_independent():
    P = 200_000         # threaded update, group boundaries inside the fixed chunks
    rng = np.random.default_rng(0)
    theta0, grads = rng.normal(size=P), [rng.normal(size=P) for _ in range(3)]
    opt = Adam(0.01, groups={"a": {"lr": 1e-4}, "b": {"weight_decay": 0.5}})
    layout = {"a": (1000, 17_000), "b": (17_000, 150_001)}
    one, _ = run_core(opt, theta0, grads, np.float64, layout, n_threads=1)
    three, _ = run_core(opt, theta0, grads, np.float64, layout, n_threads=3)
    np.testing.assert_array_equal(one, three)


def test_groups_match_torch_param_groups():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    theta0, grads = rng.normal(size=12), [rng.normal(size=12) for _ in range(8)]
    opt = AdamW(0.01, weight_decay=0.05, groups={"r": {"lr": 0.001, "weight_decay": 0.0}})
    theta, _ = run_core(opt, theta0, grads, np.float64, {"r": (8, 12)})
    a = torch.nn.Parameter(torch.tensor(theta0[:8]))
    r = torch.nn.Parameter(torch.tensor(theta0[8:]))
    topt = torch.optim.AdamW([{"params": [a]}, {"params": [r], "lr": 0.001, "weight_decay": 0.0}],
                             lr=0.01, weight_decay=0.05)
    for g in grads:
        a.grad, r.grad = torch.tensor(g[:8]), torch.tensor(g[8:])
        topt.step()
    np.testing.assert_allclose(theta, np.concatenate([a.detach().numpy(), r.detach().numpy()]),
                               rtol=1e-12, atol=1e-14)


# --- the problems name their groups; fit resolves them --------------------------------------------
def test_learners_and_objectives_name_their_parameter_groups():
    model = mc.MLP([1, 8, 1])
    P = model.n_params
    assert mc.MAML(model).param_groups() == {"model": (0, P)}
    assert mc.MAML(model, inner_steps=3, per_step_rates="layer").param_groups() == {
        "model": (0, P), "rates": (P, P + 3 * model.n_layers)}
    assert mc.MetaSGD(model).param_groups() == {"model": (0, P), "rates": (P, 2 * P)}
    assert mc.RidgeHead(model).param_groups() == {"model": (0, P), "head": (P, P + 2)}
    assert mc.ProtoNet(model).param_groups() == {"model": (0, P)}
    ts = mc.tasks.linear_family(3, n_features=2, n_rows=10, seed=0)
    headed = mc.MLP([2, 4, 1], task_heads=3)
    groups = mc.Objective(headed, ts).param_groups()
    S = headed.n_shared_params
    assert groups == {"model": (0, headed.n_params), "shared": (0, S),
                      "heads": (S, headed.n_params)}


def test_fit_trains_metasgd_rates_with_their_own_rate_as_a_manual_loop_does():
    """SGD with a group for Meta-SGD's rates: θ_{t+1} = θ_t − lr·g on the net's entries and
    − lr_r·g on the rates', with g the learner's own meta-gradient (seeded batches)."""
    model = mc.MLP([1, 8, 1], activation="tanh")
    learner = mc.MetaSGD(model, inner_lr=0.01)
    ts = mc.tasks.sinusoid(12, k_support=5, k_query=5, seed=2)
    problem = mc.MetaObjective(learner, ts, meta_batch=12)      # the whole set: no sampling
    start = learner.init(model.init(seed=0))
    opt = SGD(lr=0.05, groups={"rates": {"lr": 0.002}})
    res = mc.fit(problem, start, optimizer=opt, steps=3, progress=False)
    theta, P = start.copy(), model.n_params
    for _ in range(3):
        _, g = learner.meta_value_and_grad(theta, ts)
        theta[:P] -= 0.05 * g[:P]
        theta[P:] -= 0.002 * g[P:]
    np.testing.assert_allclose(res.theta, theta, rtol=1e-12, atol=1e-15)
    assert res.optimizer == opt                  # the groups by name, not their ranges


def test_a_checkpoint_keeps_the_groups_and_resume_is_bit_identical(tmp_path):
    model = mc.MLP([1, 8, 1], activation="tanh")
    learner = mc.MAML(model, inner_lr=0.01, inner_steps=2, per_step_rates="layer")
    problem = mc.MetaObjective(learner, mc.tasks.SinusoidSource(k_support=5, k_query=5),
                               meta_batch=4)
    start = learner.init(model.init(seed=0))
    opt = Adam(0.01, groups={"rates": {"lr": 1e-4, "weight_decay": 0.0}})
    whole = mc.fit(problem, start, optimizer=opt, steps=6, progress=False, seed=3)
    path = tmp_path / "ck.npz"
    mc.fit(problem, start, optimizer=opt, steps=3, progress=False, seed=3, checkpoint=path)
    resumed = mc.fit(problem, mc.load(path), steps=3, progress=False)
    assert resumed.optimizer == opt
    np.testing.assert_array_equal(resumed.theta, whole.theta)
    assert mc.optim.from_dict(opt.to_dict()) == opt


@pytest.mark.parametrize("groups, exc, match", [
    ({"rates": {"lr": 0.0}}, ValueError, r"groups\['rates'\]\['lr'\] must be > 0"),
    ({"rates": {"lr": -1}}, ValueError, r"groups\['rates'\]\['lr'\]"),
    ({"rates": {"weight_decay": -0.1}}, ValueError, r"groups\['rates'\]\['weight_decay'\]"),
    ({"rates": {"momentum": 0.9}}, ValueError, r"unknown key 'momentum'"),
    ({"rates": {}}, ValueError, r"groups\['rates'\] sets nothing"),
    ({"rates": 1e-4}, TypeError, r"groups\['rates'\] must be a dict"),
    ({1: {"lr": 0.1}}, TypeError, r"group name must be a str"),
    ([("rates", 0.1)], TypeError, r"groups must be a dict"),
    ({"rates": {"lr": float("nan")}}, ValueError, r"groups\['rates'\]\['lr'\] must be finite"),
])
def test_bad_groups_are_refused_by_name(groups, exc, match):
    with pytest.raises(exc, match=match):
        Adam(0.01, groups=groups)


def test_groups_the_problem_lacks_or_that_overlap_are_refused_by_fit():
    model = mc.MLP([1, 8, 1])
    problem = mc.MetaObjective(mc.MAML(model), mc.tasks.SinusoidSource(), meta_batch=2)
    with pytest.raises(ValueError, match=r"no parameter group 'rates'.*groups are 'model'"):
        mc.fit(problem, model.init(), optimizer=Adam(groups={"rates": {"lr": 1e-4}}), steps=1,
               progress=False)
    ts = mc.tasks.linear_family(3, n_features=2, n_rows=10, seed=0)
    headed = mc.MLP([2, 4, 1], task_heads=3)
    with pytest.raises(ValueError, match=r"'model' and 'heads' overlap"):
        mc.fit(mc.Objective(headed, ts), headed.init(),
               optimizer=Adam(groups={"model": {"lr": 1e-4}, "heads": {"lr": 1e-2}}), steps=1,
               progress=False)
    with pytest.raises(ValueError, match=r"bind the optimizer first"):
        theta = np.zeros(4)
        Adam(groups={"a": {"lr": 1e-4}}).update(theta, np.ones(4), {"m": np.zeros(4),
                                                                    "v": np.zeros(4)}, 0)


def test_a_group_beyond_theta_is_refused_before_anything_changes():
    theta, g = np.ones(4), np.ones(4)
    state = {"m": np.zeros(4), "v": np.zeros(4)}
    with pytest.raises(ValueError, match="parameter group ends at entry 6 of theta, which has 4"):
        Adam(groups={"a": {"lr": 1e-4}}).bind({"a": (2, 6)}).update(theta, g, state, 0)
    assert (theta == 1).all() and (state["m"] == 0).all()


def test_a_group_lr_that_vanishes_in_float32_is_refused_naming_it():
    model = mc.MLP([1, 8, 1])
    learner = mc.MetaSGD(model)
    problem = mc.MetaObjective(learner, mc.tasks.SinusoidSource(), meta_batch=2)
    with pytest.raises(ValueError, match=r"groups\['rates'\]\['lr'\]=1e-50 is zero or subnormal"):
        mc.fit(problem, learner.init(model.init(dtype=np.float32)),
               optimizer=Adam(groups={"rates": {"lr": 1e-50}}), steps=1, progress=False)


def test_the_cli_reads_groups_from_toml_and_names_a_bad_key(tmp_path):
    from metacore.app import config
    cfg = config.OptimizerConfig(kind="adam", lr=1e-3, groups={"rates": {"lr": 1e-4}})
    cfg.validate()
    assert cfg.build() == Adam(1e-3, groups={"rates": {"lr": 1e-4}})
    bad = config.OptimizerConfig(kind="adam", groups={"rates": {"rate": 1e-4}})
    with pytest.raises(config.ConfigError, match=r"optimizer.*unknown key 'rate'"):
        bad.validate()
