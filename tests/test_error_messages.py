"""Errors name what is wrong, generated: the config key a CSV problem is about (tasks.target /
tasks.loss for labels, tasks.support or tasks.k_support for split sizes, never tasks.path for
what is not about the file); a support that is neither a fraction nor a count says both are
accepted; episode label errors count classes, not support rows; a write into a missing folder
names the folder, not a temporary file; a norm on a net with nothing to normalise and a closed
RayBackend are refused."""

from __future__ import annotations

import csv
import math
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.app import config as C
from metacore.app import experiment as E
from metacore.data.tabular import from_dataframe

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _csv(folder, labels, rows_per_task=4):
    """tasks t0, t1, ... of ``rows_per_task`` rows each; columns task, x, y (y = labels)."""
    path = os.path.join(folder, "d.csv")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "x", "y"])
        for i, v in enumerate(labels):
            w.writerow([f"t{i // rows_per_task}", float(i % 7), v])
    return path


def _build(folder, **tasks):
    keys = "\n".join(f"{k} = {v!r}".replace("'", '"').replace("True", "true")
                     .replace("False", "false") for k, v in tasks.items())
    text = f'[tasks]\nfamily = "csv"\npath = "d.csv"\nn_test = 1\n{keys}\n' \
           '[model]\nhidden = [4]\n[train]\nsteps = 1\nmeta_batch = 1\n'
    return E.build(C.loads(text, base_dir=folder))


@SETTINGS
@given(loss=st.sampled_from(["logistic", "cross_entropy"]), data=st.data())
def test_labels_that_do_not_fit_the_loss_name_target_and_loss(tmp_path, loss, data):
    bad = data.draw(st.sampled_from([2, 7, -1, 0.5]) if loss == "logistic"
                    else st.sampled_from([-1, 0.5, -3, 2.25]))
    labels = data.draw(st.lists(st.sampled_from([0, 1]), min_size=12, max_size=12))
    at = data.draw(st.integers(0, 11))
    labels[at] = bad
    path = _csv(str(tmp_path), labels)
    with pytest.raises(C.ConfigError) as err:
        _build(str(tmp_path), loss=loss, k_support=2, k_query=2, shuffle=data.draw(st.booleans()))
    msg = str(err.value)
    assert msg.startswith("tasks.target / tasks.loss") and repr(loss) in msg, msg
    assert "tasks.path" not in msg
    # the file's line (the header is line 1), not a row of a task after shuffling
    assert f"line {at + 2} of {path} has {bad:g}" in msg, msg


@SETTINGS
@given(value=st.one_of(st.floats(1.0, 1e6), st.floats(-1e6, 0.0), st.sampled_from([2.0, 5.0])))
def test_a_support_that_is_neither_a_fraction_nor_a_count_says_both_are_accepted(value):
    with pytest.raises(C.ConfigError) as err:
        C.loads(f'[tasks]\nfamily = "csv"\npath = "d.csv"\nsupport = {value!r}\n')
    msg = str(err.value)
    assert msg.startswith("tasks.support") and "fraction in (0, 1)" in msg and "count" in msg
    if value > 1 and float(value).is_integer():
        assert f"{int(value)})" in msg      # how to write it as a count


@SETTINGS
@given(support=st.floats(1.0, 1e6).filter(lambda v: v != 1.0))
def test_the_loader_says_a_count_is_accepted_too(support):
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\) or an integer row count"):
        from_dataframe({"t": [0, 0, 1, 1], "x": [1.0, 2, 3, 4], "y": [0.0, 1, 0, 1]},
                                  task="t", target="y", support=support)


@SETTINGS
@given(k=st.integers(5, 50), use_support=st.booleans())
def test_a_split_larger_than_the_tasks_names_the_split_key(tmp_path, k, use_support):
    _csv(str(tmp_path), [0.5] * 12)
    with pytest.raises(C.ConfigError) as err:
        _build(str(tmp_path), **({"support": k} if use_support else {"k_support": k}))
    msg = str(err.value)
    assert msg.startswith("tasks.support" if use_support else "tasks.k_support"), msg


def test_a_file_with_one_task_is_about_the_file_not_the_split(tmp_path):
    _csv(str(tmp_path), [0.5] * 4)
    with pytest.raises(C.ConfigError, match=r"^tasks.path: .* has 1 task .*tasks.test_fraction"):
        _build(str(tmp_path), k_support=2)


@pytest.mark.parametrize("learner", ["RidgeHead", "ProtoNet"])
@SETTINGS
@given(n_support=st.integers(1, 6), extra=st.integers(0, 20), data=st.data())
def test_episode_label_errors_count_classes_not_support_rows(learner, n_support, extra, data):
    """A support label ≥ the number of support rows leaves some class without a support row:
    the message says how many classes those rows can hold, not 'labels in [0, n_support)'."""
    model = mc.MLP([2, 3])
    lr = getattr(mc, learner)(model)
    params = lr.init(model.init(0)) if learner == "RidgeHead" else model.init(0)
    y = np.array(data.draw(st.permutations(range(n_support))), dtype=np.float64)
    y[data.draw(st.integers(0, n_support - 1))] = n_support + extra
    X = np.ones((n_support, 2))
    with pytest.raises(ValueError) as err:
        lr.adapt(params, X, y)
    msg = str(err.value)
    assert f"the {n_support} support rows can hold classes 0..{n_support - 1} at most" in msg, msg
    assert f"[0, {n_support})" not in msg


@SETTINGS
@given(depth=st.integers(1, 3), name=st.sampled_from(["p.csv", "ck.npz", "t.txt"]))
def test_a_write_into_a_missing_folder_names_the_folder(tmp_path, depth, name):
    folder = os.path.join(str(tmp_path), *[f"missing{i}" for i in range(depth)])
    path = os.path.join(folder, name)
    with pytest.raises(FileNotFoundError) as err:
        mc.save(path, np.zeros(3))
    msg = str(err.value)
    assert f"no such folder {folder}" in msg and ".tmp" not in msg, msg
    assert not os.path.exists(folder)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=4),
       norm=st.sampled_from(["batch", "layer"]))
def test_a_norm_needs_a_hidden_layer(sizes, norm):
    if len(sizes) == 2:
        with pytest.raises(ValueError, match="norm=.* normalises the hidden layers, but "
                                             "layer_sizes .* has none"):
            mc.MLP(sizes, norm=norm)
    else:
        m = mc.MLP(sizes, norm=norm)
        assert len(m.norm_layers()) == len(sizes) - 2


def test_a_closed_ray_backend_is_refused_not_restarted():
    pytest.importorskip("ray")
    from metacore.train.backends import RayBackend
    ts = mc.TaskSet.from_arrays([np.ones((4, 2))] * 2, [np.ones(4)] * 2, n_support=2)
    model = mc.MLP([2, 1])
    obj = mc.Objective(model, ts)
    with RayBackend(1, 1) as b:
        pass
    import ray
    before = ray.is_initialized()
    with pytest.raises(ValueError, match="RayBackend was closed"):
        mc.fit(obj, model.init(0), steps=1, backend=b, progress=False)
    assert ray.is_initialized() == before      # no local Ray started behind the user's back


# --- hyper-parameters the working dtype or the algorithm cannot take ---------------------------
F32, F64 = np.finfo(np.float32), np.finfo(np.float64)


def _magnitude(data, lo=-330, hi=308):
    """10^e for e drawn across every magnitude a float64 holds (subnormals included)."""
    value = 10.0 ** data.draw(st.floats(lo, hi))
    return value if 0.0 < value < np.inf else 5e-324


def _sinusoids(dtype):
    return mc.tasks.sinusoid(4, k_support=3, k_query=3, seed=0, dtype=dtype)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_imaml_reg_is_range_checked_naming_reg(data):
    """reg outside [√tiny, √max] of the working dtype (its products with φ − θ and 1/reg with
    Hessian-vector products overflow or vanish) or with inner_lr·reg >= 2 (the proximal step no
    longer contracts) is a ValueError that starts by naming reg; any other reg gives a finite
    meta-loss and meta-gradient."""
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    reg = _magnitude(data)
    inner_lr = data.draw(st.sampled_from([0.0, 1e-3, 0.05]))
    model = mc.MLP([1, 4, 1], activation="tanh")
    info = np.finfo(dtype)
    in_64 = math.sqrt(float(F64.tiny)) <= reg <= math.sqrt(float(F64.max))
    in_dtype = math.sqrt(float(info.tiny)) <= reg <= math.sqrt(float(info.max))
    contracting = inner_lr * reg < 2
    try:
        learner = mc.IMAML(model, reg=reg, inner_lr=inner_lr, inner_steps=3, cg_steps=3)
    except ValueError as exc:
        assert not (in_64 and contracting), exc
        assert str(exc).startswith(f"reg={reg!r} "), exc
        assert ("inner_lr" in str(exc)) == in_64, exc      # the contraction names both
        return
    assert in_64 and contracting
    theta = model.init(seed=0, dtype=dtype)
    if not in_dtype:
        for call in (lambda: learner.meta_value_and_grad(theta, _sinusoids(dtype)),
                     lambda: mc.fit(mc.MetaObjective(learner, _sinusoids(dtype), meta_batch=2),
                                    theta, steps=1, progress=False),
                     lambda: learner.adapt(theta, np.ones((2, 1), dtype), np.ones(2, dtype))):
            with pytest.raises(ValueError, match=rf"^reg={re.escape(repr(reg))} is outside .* for {dtype}"):
                call()
        return
    loss, grad = learner.meta_value_and_grad(theta, _sinusoids(dtype))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    lr = data.draw(st.floats(0.0, 10.0))            # evaluation's rate: the same contraction
    if lr * reg >= 2:
        with pytest.raises(ValueError, match=rf"^reg={re.escape(repr(reg))} with lr={re.escape(repr(lr))}: lr·reg"):
            learner.query_outputs(theta, _sinusoids(dtype), steps=1, lr=lr)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["maml", "mamlpp", "metasgd", "anil", "reptile", "fomaml"]),
       via=st.sampled_from(["init", "meta", "fit", "adapt"]), data=st.data())
def test_an_inner_lr_that_float32_cannot_hold_is_named(kind, via, data):
    """A non-zero inner_lr below float32's smallest normal number (1.18e-38: it would be 0 and
    freeze the inner loop) or above its range (3.4e38) is refused naming inner_lr wherever θ is
    float32 — packing Meta-SGD's and MAML++'s rates, the meta-gradient, fit, adapt — and is
    accepted in float64 (down to 2.2e-308)."""
    inner_lr = _magnitude(data, -330, 40)
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    model = mc.MLP([1, 4, 1], activation="tanh")
    extra = {"per_step_rates": "layer"} if kind == "mamlpp" else {}
    cls = {"maml": mc.MAML, "mamlpp": mc.MAML, "metasgd": mc.MetaSGD, "anil": mc.ANIL,
           "reptile": mc.Reptile, "fomaml": mc.FOMAML}[kind]
    learner = cls(model, inner_lr=inner_lr, inner_steps=1, **extra)
    info = np.finfo(dtype)
    refused = not (float(info.tiny) <= inner_lr <= float(info.max))
    theta = model.init(seed=0, dtype=dtype)
    packs = kind in ("mamlpp", "metasgd")
    params = None if (packs and refused) else (learner.init(theta) if packs else theta)
    calls = {
        "init": lambda: learner.init(theta) if packs else learner.check_params(theta),
        "meta": lambda: learner.meta_value_and_grad(params, _sinusoids(dtype)),
        "fit": lambda: mc.fit(mc.MetaObjective(learner, _sinusoids(dtype), meta_batch=2),
                              params, steps=1, progress=False),
        "adapt": lambda: learner.adapt(params, np.ones((2, 1), dtype), np.ones(2, dtype)),
    }
    if refused:
        call = calls["init"] if params is None else calls[via]
        with pytest.raises(ValueError, match=rf"^inner_lr={re.escape(repr(inner_lr))} (is zero or subnormal|"
                                             rf"exceeds float32's range \(±3\.4e38\))"):
            call()
    else:
        try:
            calls[via]()
        except FloatingPointError:      # a huge rate may diverge; what is checked is the refusal
            assert inner_lr > 1.0


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_scale_and_l2_beyond_float32_are_named(data):
    """RidgeHead's scale is packed in θ's dtype, an Objective's l2 and task weights are used in
    it: beyond float32's range they are refused naming the argument and the range, not turned
    into inf."""
    value = _magnitude(data, -5, 308) * data.draw(st.sampled_from([1.0, -1.0]))
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    refused = abs(value) > float(np.finfo(dtype).max)
    emb = mc.MLP([2, 3], activation="tanh")
    ridge = mc.RidgeHead(emb, scale=value)
    ts = mc.tasks.linear_family(3, n_features=2, n_rows=6, seed=0, dtype=dtype)
    obj = mc.Objective(mc.Linear(2), ts, l2=abs(value))
    weighted = mc.Objective(mc.Linear(2), ts, weights=[1.0, abs(value), 1.0])
    theta = mc.Linear(2).init(seed=0, dtype=dtype)
    for name, shown, call in (("scale", value, lambda: ridge.init(emb.init(seed=0, dtype=dtype))),
                              ("l2", abs(value), lambda: obj.value(theta)),
                              ("weights[1]", abs(value), lambda: weighted.value(theta))):
        if refused:
            with pytest.raises(ValueError, match=rf"^{re.escape(name)}={re.escape(repr(shown))}"
                                                 rf" exceeds float32's range \(±3\.4e38\)"):
                call()
        else:
            call()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_values_beyond_float32_are_out_of_range_not_infinite(data):
    """A finite float64 value above float32's largest (3.4e38) where float32 is asked for: the
    message names the argument, the value, its index and float32's range (±3.4e38), and does
    not call it infinite; a true inf is still "must be finite"."""
    value = data.draw(st.floats(float(F32.max) * 1.0000001, float(F64.max)))
    value *= data.draw(st.sampled_from([1.0, -1.0]))
    shape = (data.draw(st.integers(1, 5)), 2)
    index = (data.draw(st.integers(0, shape[0] - 1)), data.draw(st.integers(0, 1)))
    X = np.ones(shape)
    X[index] = value
    model = mc.MLP([2, 3, 1])
    theta = model.init(seed=0, dtype=np.float32)
    y = np.ones(shape[0])
    calls = {
        "predict": (lambda: model.predict(theta, X), "X"),
        "adapt_predict": (lambda: mc.adapt_predict(model, theta, np.ones(shape), y, X, steps=1,
                                                   lr=0.1), "X_query"),
        "adapt": (lambda: mc.adapt(model, theta, X, y, steps=1, lr=0.1), "X_support"),
        "taskset": (lambda: mc.TaskSet(X, y, [0, shape[0]], [0], dtype=np.float32), "X"),
        "hvp": (lambda: mc.Objective(mc.Linear(2), mc.TaskSet(np.ones((3, 2)), np.ones(3), [0, 3],
                                                              [0], dtype=np.float32))
                .hvp(np.zeros(3, np.float32), np.array([X[index], 1.0, 1.0])), "v"),
    }
    how = data.draw(st.sampled_from(sorted(calls)))
    call, name = calls[how]
    where = (0,) if how == "hvp" else index
    shown = float(X[index])
    with pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    assert msg.startswith(f"{name} has {shown!r} at index {where}, which exceeds float32's "
                          f"range (±3.4e38)"), msg
    assert "infinite" not in msg and "must be finite" not in msg
    X[index] = np.inf
    with pytest.raises(ValueError, match="must be finite"):
        model.predict(theta, X)


def test_imaml_inner_loop_at_a_rate_that_diverged_stays_finite_and_a_non_finite_loss_is_named():
    """iMAML's inner loop is monotone (a step that raises the proximal objective is undone): at
    inner_lr=1.5, where the fixed-rate loop blew up at step 0, training stays finite. A meta-loss
    that is non-finite anyway (targets whose squared error overflows) is still named as the
    inner loop's, with its settings and reg, not the learning rate."""
    model = mc.MLP([1, 8, 1])
    ts = _sinusoids(np.float64)
    learner = mc.IMAML(model, reg=1.0, inner_lr=1.5, inner_steps=20)
    res = mc.fit(mc.MetaObjective(learner, ts, meta_batch=2), model.init(seed=0), steps=3,
                 progress=False)
    assert np.isfinite(res.history.objective).all() and np.isfinite(res.theta).all()
    huge = mc.TaskSet(ts.X, np.full_like(ts.y, 1e200), ts.offsets, n_support=ts.n_support)
    with pytest.raises(mc.FitDivergedError) as err:
        mc.fit(mc.MetaObjective(learner, huge, meta_batch=2), model.init(seed=0), steps=3,
               progress=False)
    msg = str(err.value)
    assert err.value.step == 0 and "at step 0" in msg
    assert "the learner's inner loop (inner_lr=1.5, inner_steps=20" in msg and "reg=1" in msg
    assert "Try a lower learning rate or clip_norm" not in msg


@pytest.mark.parametrize("kind", ["maml", "metasgd"])
def test_a_diverging_inner_loop_is_named_not_the_learning_rate(kind):
    """A meta-loss that is non-finite at the start θ (the outer learning rate has not acted):
    the FitDivergedError names the learner's inner loop and its settings, not the learning
    rate."""
    model = mc.MLP([1, 8, 1])
    ts = _sinusoids(np.float64)
    learner = {"maml": lambda: mc.MAML(model, inner_lr=50.0, inner_steps=5),
               "metasgd": lambda: mc.MetaSGD(model, inner_lr=50.0, inner_steps=5),
               "imaml": lambda: mc.IMAML(model, reg=1.0, inner_lr=1.5, inner_steps=20)}[kind]()
    theta = model.init(seed=0)
    start = learner.init(theta) if kind == "metasgd" else theta
    with pytest.raises(mc.FitDivergedError) as err:
        mc.fit(mc.MetaObjective(learner, ts, meta_batch=2), start, steps=3, progress=False)
    msg = str(err.value)
    assert err.value.step == 0 and "at step 0" in msg
    assert "At the run's first step the outer learning rate has not acted yet: the learner's " \
           f"inner loop (inner_lr={learner.inner_lr:g}, inner_steps={learner.inner_steps}" in msg
    assert "reg=" not in msg
    assert ("learned inner rates" in msg) == (kind == "metasgd")
    assert "Try a lower learning rate or clip_norm" not in msg


def test_a_multitask_divergence_keeps_the_learning_rate_advice():
    ts = mc.tasks.linear_family(4, n_features=3, n_rows=10, seed=0)
    with pytest.raises(mc.FitDivergedError, match=r"Try a lower learning rate or clip_norm\.$"):
        mc.fit(mc.Objective(mc.Linear(3), ts), mc.Linear(3).init(seed=0),
               optimizer=mc.optim.SGD(lr=1e200), steps=5, progress=False)


@settings(max_examples=30, deadline=None)
@given(exponent=st.integers(0, 62), data=st.data())
def test_mamlpp_rates_that_cannot_fit_in_memory_name_inner_steps(exponent, data):
    """MAML++ packs inner_steps × n_layers learned rates after θ: a count whose float64 vector
    exceeds the machine's memory is a MemoryError naming inner_steps at construction (never
    numpy's 'Unable to allocate' or 'Maximum allowed dimension exceeded' at init)."""
    from metacore import _validation
    inner_steps = 2 ** exponent + data.draw(st.integers(0, 3))
    model = mc.MLP([1, 4, 1])
    need = 8 * (inner_steps * model.n_layers + model.n_params)
    memory = _validation._physical_memory()
    if memory and need > memory:
        with pytest.raises(MemoryError, match=rf"^inner_steps={inner_steps} with "
                                              rf"per_step_rates='layer' \({inner_steps * 2} "
                                              rf"learned rates"):
            mc.MAML(model, inner_steps=inner_steps, per_step_rates="layer")
    else:
        learner = mc.MAML(model, inner_steps=inner_steps, per_step_rates="layer")
        assert learner.n_params == model.n_params + 2 * inner_steps


# --- numbers in the core's messages read back exactly ---------------------------------------------
@settings(max_examples=40, deadline=None)
@given(mantissa=st.floats(1.0, 9.999), exponent=st.integers(-320, 300))
def test_numbers_in_core_messages_read_back_exactly(mantissa, exponent):
    """A finite double in a message of the core or the bindings is its shortest round-trip text
    (``metacore::number_text``), not std::to_string's six decimals, which printed −1e-30 as
    "-0.000000" and made "lr must be >= 0, got -0.000000" contradict itself."""
    from metacore import _core
    v = -mantissa * 10.0 ** exponent          # down to subnormals (10^-320)
    if v == 0.0:
        return
    model = mc.MLP([2, 3, 1])
    theta = model.init(seed=0)
    X, y = np.zeros((4, 2)), np.zeros((4, 1))
    calls = [("reg", lambda: _core.ridge_head_weights(np.eye(2, 3), np.array([0.0, 1.0]), v)),
             ("lr", lambda: _core.imaml_adapt(model.core_net(), theta, X, y, 1, v, 1.0)),
             ("reg", lambda: _core.imaml_adapt(model.core_net(), theta, X, y, 1, 0.1, v))]
    for name, call in calls:
        with pytest.raises(ValueError, match=rf"{name} must be finite") as err:
            call()
        shown = re.search(r"got (\S+)$", str(err.value)).group(1)
        assert float(shown) == v, (name, shown, v)
