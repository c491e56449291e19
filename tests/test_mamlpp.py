"""MAML++ (Antoniou et al. 2019): per-layer, per-step learned inner rates, the annealed multi-step
loss and first order for the first outer steps, as options of mc.MAML. Meta-gradients against
central differences in float64 and against the NumPy reference; the schedules as functions of the
global step (values, the order switch, bit-identical resume across it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore import reference as ref
from numerics import central_diff
from test_meta import make_batch, rel_err, theta_for

NETS = [  # (layer sizes, activation, loss)
    ([2, 5, 1], "tanh", "mse"),
    ([3, 4, 4, 2], "tanh", "mse"),
    ([2, 6, 3], "relu", "cross_entropy"),
    ([3, 4, 1], "tanh", "logistic"),
]


def learner_and_params(model, k, *, per_step=True, msl=True, anneal=10, fo_until=0, seed=0,
                       dtype=np.float64):
    learner = mc.MAML(model, inner_lr=0.1, inner_steps=k, n_threads=1,
                      per_step_rates="layer" if per_step else None, multi_step_loss=msl,
                      first_order_until=fo_until,      # annealing only with the loss it anneals
                      **({"msl_anneal_steps": anneal} if msl else {}))
    params = learner.init(theta_for(model, seed))
    if per_step:   # rates that differ by layer and step
        rng = np.random.default_rng(seed + 3)
        params[model.n_params:] += 0.03 * rng.normal(size=k * model.n_layers)
    return learner, params.astype(dtype)


def reference(learner, params, batch, step):
    o = learner.core_options()
    return ref.mamlpp_value_and_grad(
        learner.model, params.astype(np.float64), batch, learner.inner_steps,
        inner_lr=learner.inner_lr, per_step_rates=learner.per_step_rates,
        multi_step_loss=o["multi_step_loss"], msl_anneal_steps=o["msl_anneal_steps"],
        first_order_until=o["first_order_until"], step=step, first_order=learner.first_order)


# --- exact meta-gradients ------------------------------------------------------------------------
@pytest.mark.parametrize("sizes,act,loss", NETS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_meta_gradient_matches_central_differences_and_the_reference(sizes, act, loss, k):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = make_batch(model, ragged=True)
    learner, params = learner_and_params(model, k)
    assert params.shape == (model.n_params + k * model.n_layers,)
    for step in (0, 4, 50):     # uniform, part-annealed and fully annealed loss weights
        value, g = learner.meta_value_and_grad(params, batch, step=step)
        fd = central_diff(lambda p: learner.meta_value(p, batch, step=step), params, 1e-6)
        assert rel_err(g, fd) < 1e-6
        ref_value, ref_g = reference(learner, params, batch, step)
        assert abs(value - ref_value) < 1e-12 * max(1.0, abs(ref_value))
        assert rel_err(g, ref_g) < 1e-10


@pytest.mark.parametrize("per_step,msl", [(True, False), (False, True)])
@pytest.mark.parametrize("k", [2, 3])
def test_each_option_alone_has_exact_gradients(per_step, msl, k):
    model = mc.MLP([3, 4, 4, 2], activation="tanh", loss="mse")
    batch = make_batch(model)
    learner, params = learner_and_params(model, k, per_step=per_step, msl=msl, anneal=7)
    _, g = learner.meta_value_and_grad(params, batch, step=3)
    fd = central_diff(lambda p: learner.meta_value(p, batch, step=3), params, 1e-6)
    assert rel_err(g, fd) < 1e-6
    assert rel_err(g, reference(learner, params, batch, 3)[1]) < 1e-10


def test_the_multi_step_loss_is_the_weighted_sum_of_each_steps_query_loss():
    """A direct computation: L_q after j adaptation steps (mc.adapt with the learner's rule) for
    j = 1..k, weighted by the schedule."""
    model = mc.MLP([2, 6, 3], activation="tanh", loss="cross_entropy")
    batch = make_batch(model, n_tasks=2)
    k, step = 3, 6
    learner, params = learner_and_params(model, k, anneal=10)
    w = learner.msl_weights(step)
    theta, rates, _ = learner.adapt_rule(params)
    expect = 0.0
    for i in range(batch.n_tasks):
        Xs, ys = batch.support(i)
        Xq, yq = batch.query(i)
        for j in range(1, k + 1):
            phi = ref.adapt(model, theta, Xs, ys, steps=j, lr=rates)
            expect += w[j - 1] * ref.loss_and_grad(model, phi, Xq, yq)[0]
    assert learner.meta_value(params, batch, step=step) == pytest.approx(expect / batch.n_tasks,
                                                                         rel=1e-12)


def test_float32_agrees_with_the_reference():
    model = mc.MLP([3, 8, 8, 2], activation="tanh", loss="mse")
    batch = make_batch(model, ragged=True)
    learner, params = learner_and_params(model, 3, dtype=np.float32)
    loss, g = learner.meta_value_and_grad(params, batch.astype(np.float32), step=5)
    assert g.dtype == np.float32
    ref_loss, ref_g = reference(learner, params, batch.astype(np.float32).astype(np.float64), 5)
    assert abs(loss - ref_loss) < 1e-5 * max(1.0, abs(ref_loss))
    assert rel_err(g.astype(np.float64), ref_g) < 1e-4


def test_bit_identical_for_any_thread_count():
    model = mc.MLP([1, 16, 16, 1], activation="relu", loss="mse")
    batch = mc.tasks.sinusoid(40, k_support=5, k_query=5, seed=1)
    outs = []
    for n in (1, 2, 3):
        learner, params = learner_and_params(model, 2, anneal=10)
        learner.n_threads = n
        outs.append(learner.meta_value_and_grad(params, batch, step=2))
    for loss, g in outs[1:]:
        assert loss == outs[0][0]
        np.testing.assert_array_equal(g, outs[0][1])


# --- the schedules -------------------------------------------------------------------------------
def test_first_order_until_gives_first_order_before_and_second_order_after():
    model = mc.MLP([3, 4, 4, 2], activation="tanh", loss="mse")
    batch = make_batch(model)
    theta = theta_for(model)
    pp = mc.MAML(model, inner_lr=0.1, inner_steps=2, first_order_until=5, n_threads=1)
    _, fo = mc.FOMAML(model, inner_lr=0.1, inner_steps=2, n_threads=1).meta_value_and_grad(
        theta, batch)
    _, so = mc.MAML(model, inner_lr=0.1, inner_steps=2, n_threads=1).meta_value_and_grad(
        theta, batch)
    assert rel_err(fo, so) > 1e-3      # the two orders differ on this problem
    for step in (0, 4):
        np.testing.assert_array_equal(pp.meta_value_and_grad(theta, batch, step=step)[1], fo)
    for step in (5, 100):
        np.testing.assert_array_equal(pp.meta_value_and_grad(theta, batch, step=step)[1], so)
    # with learned rates and the multi-step loss too: the reference's first / second order
    learner, params = learner_and_params(model, 3, fo_until=5)
    for step, first in ((4, True), (5, False)):
        _, g = learner.meta_value_and_grad(params, batch, step=step)
        expect = ref.mamlpp_value_and_grad(model, params, batch, 3, per_step_rates="layer",
                                           multi_step_loss=True, msl_anneal_steps=10,
                                           step=step, first_order=first)[1]
        assert rel_err(g, expect) < 1e-10


@pytest.mark.parametrize("k", [1, 2, 5])
def test_annealing_schedule_values(k):
    learner = mc.MAML(mc.MLP([1, 4, 1]), inner_steps=k, multi_step_loss=True,
                      msl_anneal_steps=100)
    floor, top = 0.03 / k, 1 - 0.03 * (k - 1) / k
    np.testing.assert_allclose(learner.msl_weights(0), np.full(k, 1 / k), rtol=1e-15)
    half = learner.msl_weights(50)           # t = 1/2: 1/(2k) for the first k − 1 steps
    np.testing.assert_allclose(half[:-1], 0.5 / k, rtol=1e-14)
    assert half[-1] == pytest.approx(1 / k + 0.5 * (k - 1) / k, rel=1e-14)
    for step in (97, 98, 1000):              # floored from t = 0.97 on
        w = learner.msl_weights(step)
        np.testing.assert_allclose(w[:-1], floor, rtol=1e-14)
        assert w[-1] == pytest.approx(top, rel=1e-14)
    series = np.array([learner.msl_weights(s) for s in range(0, 120, 7)])
    np.testing.assert_allclose(series.sum(axis=1), 1.0, rtol=1e-14)
    assert (np.diff(series[:, -1]) >= 0).all() and (np.diff(series[:, 0]) <= 0).all() or k == 1
    # without the multi-step loss: the last step alone
    plain = mc.MAML(mc.MLP([1, 4, 1]), inner_steps=k)
    np.testing.assert_array_equal(plain.msl_weights(10), np.eye(k)[-1])


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 12), anneal=st.integers(1, 10_000), step=st.integers(0, 50_000))
def test_annealing_schedule_core_equals_reference(k, anneal, step):
    learner = mc.MAML(mc.MLP([1, 4, 1]), inner_steps=k, multi_step_loss=True,
                      msl_anneal_steps=anneal)
    w = learner.msl_weights(step)
    expect = ref.msl_weights(k, anneal, step)
    np.testing.assert_allclose(w, expect, rtol=1e-15, atol=0)
    assert abs(w.sum() - 1.0) < 1e-12
    assert (w >= 0.03 / k - 1e-15).all()


def test_resume_across_the_switch_is_bit_identical(tmp_path):
    model = mc.MLP([1, 12, 12, 1], activation="tanh", loss="mse")
    learner = mc.MAML(model, inner_lr=0.02, inner_steps=3, per_step_rates="layer",
                      multi_step_loss=True, msl_anneal_steps=20, first_order_until=15)
    problem = mc.MetaObjective(learner, mc.tasks.SinusoidSource(k_support=5, k_query=5),
                               meta_batch=4)
    params = learner.init(model.init(seed=0))
    kw = dict(optimizer=mc.optim.Adam(lr=1e-2), progress=False, seed=3, chunk_size=7)
    whole = mc.fit(problem, params, steps=40, **kw)
    first = mc.fit(problem, params, steps=10, **kw)          # stops before the switch at 15
    mc.save(tmp_path / "ck.npz", first)
    saved = mc.load(tmp_path / "ck.npz")
    assert saved.step == 10
    rest = mc.fit(problem, saved, steps=30, progress=False, chunk_size=9)
    np.testing.assert_array_equal(rest.theta, whole.theta)
    np.testing.assert_array_equal(np.concatenate([first.history.objective,
                                                  rest.history.objective]),
                                  whole.history.objective)
    # the schedules took part: another switch step or annealing length trains differently
    for other in (dict(first_order_until=0), dict(msl_anneal_steps=5)):
        opts = dict(learner.core_options(), **other)
        changed = mc.MAML(model, inner_lr=0.02, inner_steps=3, per_step_rates="layer",
                          multi_step_loss=True, msl_anneal_steps=opts["msl_anneal_steps"],
                          first_order_until=opts["first_order_until"])
        res = mc.fit(mc.MetaObjective(changed, problem.tasks, meta_batch=4), params, steps=40,
                     **kw)
        assert not np.array_equal(res.theta, whole.theta)
    # the learned rates moved and the history records them per layer and step
    assert whole.history.inner_rates.shape[1:] == (3, model.n_layers)
    assert not np.allclose(learner.split(whole.theta)[1], learner.inner_lr)


# --- adapting with the learned rates -------------------------------------------------------------
def per_parameter(model, rows):
    """(m, P): layer l's weights and biases get rows[:, l]."""
    out = np.empty((rows.shape[0], model.n_params))
    for l, (w0, _, _) in enumerate(model.layers()):
        end = model.layers()[l + 1][0] if l + 1 < model.n_layers else model.n_params
        out[:, w0:end] = rows[:, l:l + 1]
    return out


def sgd_by_hand(model, theta, X, y, rates_of_step, steps):
    """φ_{j+1} = φ_j − r_j ⊙ ∇L_s(φ_j) written out in NumPy on the reference's gradient."""
    phi = np.array(theta, dtype=np.float64)
    for j in range(steps):
        phi = phi - rates_of_step(j) * ref.loss_and_grad(model, phi, X, y)[1]
    return phi


def test_adapt_uses_each_steps_rates_then_the_smallest_positive_one():
    """Steps j < k take the learned rates of step j; every step past k takes, on each layer, the
    smallest positive learned rate (0 if none): here negative rates (layer 0 at step 1, layer 1
    throughout) and a large last rate (layer 2) that the old rule (repeat the last step) kept."""
    model = mc.MLP([2, 5, 4, 3], activation="tanh", loss="cross_entropy")
    batch = make_batch(model, n_tasks=1)
    learner, params = learner_and_params(model, 3)
    P = model.n_params
    r = np.array([[0.2, -0.05, 0.05], [-0.1, 0.0, 0.3], [0.15, -0.2, 2.0]])
    params[P:] = r.reshape(-1)
    theta = params[:P]
    np.testing.assert_array_equal(learner.extra_step_rates(params), [0.15, 0.0, 0.05])
    trained = per_parameter(model, r)
    extra = per_parameter(model, np.array([[0.15, 0.0, 0.05]]))[0]
    rate = lambda j: trained[j] if j < 3 else extra   # noqa: E731
    Xs, ys = batch.support(0)
    Xq, _ = batch.query(0)
    for steps in (0, 1, 3, 4, 6, 9):
        expect = sgd_by_hand(model, theta, Xs, ys, rate, steps)
        np.testing.assert_allclose(learner.adapt(params, Xs, ys, steps=steps), expect,
                                   rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(learner.adapt_predict(params, Xs, ys, Xq, steps=6),
                               ref.predict(model, sgd_by_hand(model, theta, Xs, ys, rate, 6), Xq),
                               rtol=1e-12, atol=1e-14)
    report = mc.evaluate(model, params, batch, steps=(0, 3, 6), learner=learner)
    phi6 = sgd_by_hand(model, theta, Xs, ys, rate, 6)
    assert report.at(6)[0] == pytest.approx(ref.loss_and_grad(model, phi6, *batch.query(0))[0],
                                            rel=1e-10)


def test_extra_steps_need_learned_rates():
    model = mc.MLP([2, 4, 1], activation="tanh", loss="mse")
    with pytest.raises(ValueError, match="extra_step_rates"):
        mc.MAML(model).extra_step_rates(model.init(seed=0))


def test_loss_after_twice_the_trained_steps_is_finite_and_not_above_the_trained_steps_loss():
    """A small MAML++ meta-trained on sinusoids: its query loss on new tasks after 2k steps is
    finite and no higher than after its k trained steps."""
    model = mc.MLP([1, 20, 20, 1], activation="relu", loss="mse")
    k = 3
    learner = mc.MAML(model, inner_lr=0.01, inner_steps=k, per_step_rates="layer",
                      multi_step_loss=True, msl_anneal_steps=150, n_threads=1)
    res = mc.fit(mc.MetaObjective(learner, mc.tasks.SinusoidSource(), meta_batch=10),
                 learner.init(model.init(seed=0)), steps=1000,
                 optimizer=mc.optim.Adam(lr=1e-3, clip_norm=10.0), progress=False, seed=0)
    val = mc.tasks.sinusoid(100, k_support=10, k_query=50, seed=3)
    report = mc.evaluate(model, res.theta, val, steps=(k, 2 * k, 4 * k), learner=learner,
                         progress=False)
    at_k, at_2k, at_4k = (report.at(s)[0] for s in (k, 2 * k, 4 * k))
    assert np.isfinite(at_2k) and at_2k <= at_k and at_4k <= at_k
    # the steps past k do move the net (some layer has a positive learned rate)
    assert learner.extra_step_rates(res.theta).max() > 0 and at_2k < at_k


# --- plain data and bad input --------------------------------------------------------------------
def test_to_dict_round_trip_and_repr():
    model = mc.MLP([2, 5, 1])
    learner = mc.MAML(model, inner_lr=0.05, inner_steps=4, per_step_rates="layer",
                      multi_step_loss=True, msl_anneal_steps=300, first_order_until=50)
    d = learner.to_dict()
    assert d["per_step_rates"] == "layer" and d["msl_anneal_steps"] == 300
    back = mc.learners.from_dict(d)
    assert back == learner and back.core_options() == learner.core_options()
    assert back.n_params == model.n_params + 4 * 2
    assert "first_order_until=50" in repr(learner)
    plain = mc.MAML(model)   # a plain MAML's dict is unchanged (older checkpoints still load)
    assert plain.to_dict() == {"kind": "MAML", "model": model.spec(), "inner_lr": 0.01,
                               "inner_steps": 1, "first_order": False}
    assert mc.learners.from_dict(mc.FOMAML(model).to_dict()) == mc.FOMAML(model)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(per_step_rates="tensor"), ValueError, "per_step_rates"),
    (dict(per_step_rates=3), (TypeError, ValueError), "per_step_rates"),
    (dict(multi_step_loss="yes"), TypeError, "multi_step_loss"),
    (dict(msl_anneal_steps=0), ValueError, "msl_anneal_steps"),
    (dict(msl_anneal_steps=2.5), (TypeError, ValueError), "msl_anneal_steps"),
    (dict(first_order_until=-1), ValueError, "first_order_until"),
])
def test_bad_arguments_are_refused_naming_them(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        mc.MAML(mc.MLP([2, 5, 1]), inner_steps=2, **kwargs)


def test_bad_parameters_and_steps_are_refused():
    model = mc.MLP([2, 5, 1])
    batch = make_batch(model, n_tasks=1)
    learner = mc.MAML(model, inner_steps=2, per_step_rates="layer")
    with pytest.raises(ValueError, match="theta"):      # θ without its rates
        learner.meta_value_and_grad(model.init(seed=0), batch)
    params = learner.init(model.init(seed=0))
    with pytest.raises(ValueError, match="step"):
        learner.meta_value_and_grad(params, batch, step=-1)
    with pytest.raises(ValueError, match="split"):
        mc.MAML(model).split(model.init(seed=0))
    from metacore import _core
    with pytest.raises(ValueError, match="maml"):       # the core refuses MAML++ for others
        _core.meta_value_and_grad(model.core_net(), "metasgd", 0.1, 1, False,
                                  np.zeros(2 * model.n_params), batch.X, batch.y, batch.offsets,
                                  batch.n_support, per_step_rates=True)
    with pytest.raises(ValueError, match="lr"):
        mc.adapt(model, model.init(seed=0), *batch.support(0), lr=np.zeros((0, model.n_params)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_per_step_rates_are_refused_at_every_position(bad, dtype):
    model = mc.MLP([2, 5, 3, 1], activation="tanh", loss="mse")
    batch = make_batch(model, ragged=True)
    learner, params = learner_and_params(model, 3, dtype=dtype)
    for i in range(model.n_params, params.size):   # every rate, each step and layer
        p = params.copy()
        p[i] = bad
        with pytest.raises(ValueError, match="must be finite"):
            learner.meta_value_and_grad(p, batch, step=0)
