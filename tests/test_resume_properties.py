"""Resume, on generated settings: a run of N steps in one call equals k steps, a checkpoint
(``fit(checkpoint=...)``, :func:`metacore.load`) and N − k more — resumed from the file, from the
in-memory FitResult, and resumed twice — bit for bit (θ, α, the per-step history, the evaluations
on the eval_every grid, the best θ and the early-stopping decision), for multi-task problems
(every weighting, batch_tasks/batch_rows, EvalDriven) and every meta-learner, every optimizer with
clipping and schedules, float32 and float64, any chunk_size, checkpoint_every, eval_every,
early stopping and any k (on a chunk, evaluation or checkpoint boundary or not, k = N − 1).
Resuming another problem is refused by name; a damaged checkpoint is a ValueError; a run
stopped by FitDivergedError resumes from its last finite state.

tests/test_engine.py, tests/test_checkpoint.py and the learners' files test one fixed split
each (30 + 30 steps, on the grid); this file varies the split and the options together."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacore as mc

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# --- problems ------------------------------------------------------------------------------------
def multitask_problem(dtype, net="plain"):
    ts = mc.tasks.linear_family(5, n_features=3, n_rows=(8, 12), n_support=4, seed=2,
                                dtype=dtype)
    model = {"plain": lambda: mc.MLP([3, 4, 1], activation="tanh"),
             "heads": lambda: mc.MLP([3, 4, 1], activation="tanh", task_heads=5),
             "bias-heads": lambda: mc.MLP([3, 4, 1], activation="relu", task_heads=5,
                                          head="bias"),
             "batchnorm": lambda: mc.MLP([3, 4, 1], activation="relu", norm="batch")}[net]()
    val = mc.tasks.linear_family(5, n_features=3, n_rows=(8, 12), n_support=4, seed=7,
                                 dtype=dtype)
    return mc.Objective(model, ts, l2=1e-3), val, model.init(seed=1, dtype=dtype)


def pool(n_classes=8, per_class=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.repeat(2.0 * rng.normal(size=(n_classes, d)), per_class, axis=0)
    X = X + rng.normal(size=X.shape)
    return X, np.arange(n_classes + 1) * per_class


def meta_problem(kind, dtype, source):
    model = mc.MLP([1, 5, 1], activation="tanh", loss="mse")
    learner = {
        "maml": lambda: mc.MAML(model, inner_lr=0.02, inner_steps=2),
        "fomaml": lambda: mc.FOMAML(model, inner_lr=0.02),
        "anil": lambda: mc.ANIL(model, inner_lr=0.05),
        "metasgd": lambda: mc.MetaSGD(model, inner_lr=0.02),
        "reptile": lambda: mc.Reptile(model, inner_lr=0.02, inner_steps=2, outer_lr=0.3),
        "mamlpp": lambda: mc.MAML(model, inner_lr=0.02, inner_steps=2, per_step_rates="layer",
                                  multi_step_loss=True, msl_anneal_steps=6, first_order_until=4),
        "imaml": lambda: mc.IMAML(model, reg=5.0, inner_lr=0.02, inner_steps=2, cg_steps=2),
    }
    if kind in ("protonet", "ridge"):
        X, offsets = pool()
        embed = mc.MLP([3, 4, 3], activation="tanh", loss="mse")
        tasks = mc.tasks.EpisodeSource(X.astype(dtype), offsets, n_way=3, k_shot=1, q_query=2)
        learner = mc.ProtoNet(embed) if kind == "protonet" else mc.RidgeHead(embed, reg=1.0,
                                                                              scale=2.0)
        val = tasks.sample(4, seed=1)
        model = embed
    else:
        learner = learner[kind]()
        tasks = (mc.tasks.SinusoidSource(k_support=3, k_query=3) if source
                 else mc.tasks.sinusoid(12, k_support=3, k_query=3, seed=4, dtype=dtype))
        val = mc.tasks.sinusoid(4, k_support=3, k_query=3, seed=9, dtype=dtype)
    theta = model.init(seed=0, dtype=dtype)
    if learner.n_params != model.n_params:      # MetaSGD, MAML++, RidgeHead: packed parameters
        theta = learner.init(theta)
    return mc.MetaObjective(learner, tasks, meta_batch=3), val, theta


# --- settings ------------------------------------------------------------------------------------
schedules = st.sampled_from([
    None, mc.optim.constant(), mc.optim.step(3, 0.5), mc.optim.cosine(40, 0.1),
    mc.optim.linear(40), mc.optim.warmup(3, mc.optim.cosine(30)),
    mc.optim.warmup(2, mc.optim.step(4, 0.5), start_factor=0.1)])


@st.composite
def optimizers(draw, lr=0.05, groups=("model",)):
    kind = draw(st.sampled_from(["sgd", "sgd-momentum", "adam", "adamw"]))
    group = draw(st.sampled_from((None,) + tuple(groups)))
    extra = {"schedule": draw(schedules),
             "clip_norm": draw(st.sampled_from([None, 0.5])),
             "groups": None if group is None else {group: {"lr": lr / 3,
                                                           "weight_decay": 0.01}}}
    extra = {k: v for k, v in extra.items() if v is not None}
    if kind == "sgd":
        return mc.optim.SGD(lr, weight_decay=draw(st.sampled_from([0.0, 0.01])), **extra)
    if kind == "sgd-momentum":
        return mc.optim.SGD(lr, momentum=0.9, nesterov=draw(st.booleans()), **extra)
    if kind == "adam":
        return mc.optim.Adam(lr, **extra)
    return mc.optim.AdamW(lr, weight_decay=0.05, **extra)


WEIGHTINGS = [
    lambda: None, lambda: mc.weighting.Uniform(),
    lambda: mc.weighting.Fixed([0.1, 0.2, 0.3, 0.2, 0.2]),
    lambda: mc.weighting.DWA(window=2), lambda: mc.weighting.Uncertainty(),
    lambda: mc.weighting.RLW(), lambda: mc.weighting.FAMO(), lambda: mc.weighting.GradNorm(),
    lambda: mc.weighting.MGDA(), lambda: mc.weighting.PCGrad(), lambda: mc.weighting.CAGrad(),
    lambda: mc.weighting.IMTLG(), lambda: mc.weighting.NashMTL(),
    lambda: mc.weighting.AlignedMTL(), lambda: mc.weighting.GradVac(),
    lambda: mc.weighting.EvalDriven(eval_every=3),
    lambda: mc.weighting.EvalDriven("dtp", eval_every=2),
]
SAMPLED = (type(None), mc.weighting.Uniform, mc.weighting.Fixed, mc.weighting.EvalDriven)


@st.composite
def loop_options(draw, n):
    """fit's loop options and the split point k (1 <= k < n)."""
    eval_every = draw(st.integers(1, 7))
    kw = dict(eval_every=eval_every, progress=False, seed=draw(st.integers(0, 3)),
              chunk_size=draw(st.sampled_from([None, 1, 2, 3, 5, 64])),
              checkpoint_every=draw(st.sampled_from([None, 1, 3, 4, 5])),
              early_stopping=draw(st.sampled_from([None, 1, 2, 50])))
    k = draw(st.one_of(st.just(n - 1), st.integers(1, n - 1),
                       st.sampled_from([m for m in (eval_every, 2 * eval_every, 5) if m < n]
                                       or [1])))
    return kw, k


@st.composite
def resume_options(draw):
    """What a resumed call may set otherwise without changing the numbers."""
    return {k: v for k, v in (("chunk_size", draw(st.sampled_from([None, 1, 4, "same"]))),
                              ("checkpoint_every", draw(st.sampled_from([None, 2, "same"]))),
                              ("n_threads", draw(st.sampled_from([None, 1, 2]))))
            if v != "same"}


# --- the comparison ------------------------------------------------------------------------------
STEP_SERIES = ("step", "objective", "grad_norm", "lr", "support_loss", "step_task_losses",
               "step_weights")
EVAL_SERIES = ("train_loss", "val_loss", "task_losses", "weights", "val_task_losses",
               "inner_rates")


def same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), what


def evals_by_step(h, grid):
    """{step: {series: value}} of a history's evaluations on the eval_every grid."""
    out = {}
    for i, s in enumerate(h.eval_step):
        if s % grid == 0:
            out[int(s)] = {n: getattr(h, n)[i] for n in EVAL_SERIES if getattr(h, n) is not None}
    return out


def assert_continues(parts, whole, eval_every):
    """Results of consecutive calls equal the one call: the final state, the per-step series
    joined, and every evaluation on the grid (a call also evaluates where it starts and ends)."""
    last = parts[-1]
    assert last.step == whole.step and last.stop_reason == whole.stop_reason, (
        [(p.step, p.stop_reason) for p in parts], whole.step, whole.stop_reason)
    same(last.theta, whole.theta, "theta")
    same(last.weights, whole.weights, "weights")
    same(last.weighting_state, whole.weighting_state, "weighting_state")
    for k in last.moments:
        same(last.moments[k], whole.moments[k], f"moment {k}")
    assert last.best_step == whole.best_step
    if whole.best_theta is None:
        assert last.best_theta is None
    else:
        same(last.best_theta, whole.best_theta, "best_theta")
    for name in STEP_SERIES:
        x = getattr(whole.history, name)
        if x is None:
            assert all(getattr(p.history, name) is None for p in parts), name
            continue
        same(np.concatenate([getattr(p.history, name) for p in parts]), x, name)
    want = evals_by_step(whole.history, eval_every)
    got = {}
    for p in parts:
        got.update(evals_by_step(p.history, eval_every))
    assert sorted(got) == sorted(want)
    for s, series in want.items():
        for name, value in series.items():
            same(got[s][name], value, f"{name} at step {s}")


def fit(problem, start, **kw):
    """mc.fit's result, or the result a FitDivergedError carries (stop_reason "diverged")."""
    try:
        return mc.fit(problem, start, **kw)
    except mc.FitDivergedError as err:
        assert err.result.stop_reason == "diverged"
        return err.result


def check_periodic_checkpoints(problem, theta0, n, kw, resume_kw, whole, tmp_path):
    """A run "killed" after its last evaluation before the end: the file its checkpoint_every
    left then (copied by a callback, as a crash would leave it) resumes to the whole run."""
    path, seen = tmp_path / "periodic.npz", []
    path.unlink(missing_ok=True)       # tmp_path is shared by the examples
    kw = dict(kw, callbacks=[lambda e: seen.append(path.read_bytes() if path.exists()
                                                   else None)])
    fit(problem, theta0, steps=n, checkpoint=path, **kw)
    left = [b for b in seen if b is not None]
    if not left:
        return
    path.write_bytes(left[-1])
    ck = mc.load(path)
    if ck.step >= whole.step:
        return
    rest = fit(problem, ck, steps=n - ck.step, **resume_kw)
    assert rest.step == whole.step and rest.stop_reason == whole.stop_reason
    same(rest.theta, whole.theta, f"theta resumed from the checkpoint at step {ck.step}")
    same(rest.weights, whole.weights, "weights")
    same(rest.history.objective, whole.history.objective[ck.step:], "objective")
    if whole.best_theta is not None:
        same(rest.best_theta, whole.best_theta, "best_theta")


def check_split(problem, theta0, n, k, kw, tmp_path, resume_kw=None):
    """N steps at once against k + (N − k) from the checkpoint file, from the FitResult, and
    k + j + (N − k − j) (resumed twice, through mc.save/mc.load). ``resume_kw``: the resumed
    calls' options (default ``kw``; chunk_size, checkpoint_every and n_threads may differ)."""
    resume_kw = dict(kw, **(resume_kw or {}))
    for key in ("optimizer", "weighting", "seed"):
        resume_kw.pop(key, None)        # the checkpoint's own
    whole = fit(problem, theta0, steps=n, **kw)
    check_periodic_checkpoints(problem, theta0, n, kw, resume_kw, whole, tmp_path)
    path = tmp_path / "ck.npz"
    first = fit(problem, theta0, steps=k, checkpoint=path, **kw)
    if first.stop_reason != "steps":       # stopped early, as the whole run must have
        assert first.step == whole.step and first.stop_reason == whole.stop_reason
        same(first.theta, whole.theta, "theta")
        return whole
    loaded = mc.load(path)
    assert loaded.step == k
    from_file = fit(problem, loaded, steps=n - k, **resume_kw)
    assert_continues([first, from_file], whole, kw["eval_every"])
    from_memory = fit(problem, first, steps=n - k, **resume_kw)
    assert_continues([first, from_memory], whole, kw["eval_every"])
    if n - k >= 2:
        j = (n - k) // 2
        second = fit(problem, first, steps=j, **resume_kw)
        if second.stop_reason == "steps":
            mc.save(tmp_path / "second.npz", second)
            third = fit(problem, mc.load(tmp_path / "second.npz"), steps=n - k - j,
                       **resume_kw)
            assert_continues([first, second, third], whole, kw["eval_every"])
    return whole


# --- properties ----------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       w=st.sampled_from(range(len(WEIGHTINGS))), batch=st.booleans(),
       validation=st.booleans(), record=st.booleans(),
       net=st.sampled_from(["plain", "plain", "heads", "bias-heads", "batchnorm"]))
def test_multitask_resume_is_bit_identical(tmp_path, data, dtype, w, batch, validation, record,
                                           net):
    n = 12
    problem, val, theta0 = multitask_problem(dtype, net)
    weighting = WEIGHTINGS[w]()
    kw, k = data.draw(loop_options(n))
    kw.update(optimizer=data.draw(optimizers(groups=tuple(problem.param_groups()))),
              weighting=weighting, record_task_losses=record,
              validation=val if validation else None)
    if batch and isinstance(weighting, SAMPLED):
        kw.update(batch_tasks=data.draw(st.integers(1, 5)),
                  batch_rows=data.draw(st.sampled_from([None, 1, 3])))
    check_split(problem, theta0, n, k, kw, tmp_path, data.draw(resume_options()))


META_KINDS = ["maml", "fomaml", "anil", "metasgd", "reptile", "mamlpp", "imaml", "protonet",
              "ridge"]


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(META_KINDS), source=st.booleans(), validation=st.booleans())
def test_meta_resume_is_bit_identical(tmp_path, data, dtype, kind, source, validation):
    n = 10
    problem, val, theta0 = meta_problem(kind, dtype, source)
    kw, k = data.draw(loop_options(n))
    kw.update(optimizer=data.draw(optimizers(lr=0.01, groups=tuple(problem.param_groups()))),
              validation=val if validation else None)
    check_split(problem, theta0, n, k, kw, tmp_path, data.draw(resume_options()))


# --- the faults these properties found, as fixed examples ---------------------------------------
@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
def test_meta_early_stopping_on_the_train_loss_decides_the_same_wherever_a_run_is_split(k):
    """Without validation a meta-learning run monitors its train loss, the mean meta-loss since
    the previous evaluation on the grid. Resumed off the grid, that mean covered only the steps
    since the resume (k = 5..9 stopped at step 8, not 12); resumed before the first finite
    evaluation, the run's off-grid end became the early-stopping record (k = 1, 3: stopped at 4)."""
    problem, _, theta0 = meta_problem("maml", np.float64, False)
    kw = dict(progress=False, eval_every=4, early_stopping=1, seed=4,
              optimizer=mc.optim.SGD(lr=0.05))
    whole = mc.fit(problem, theta0, steps=40, **kw)
    first = mc.fit(problem, theta0, steps=k, **kw)
    if first.stop_reason == "steps":
        rest = mc.fit(problem, first, steps=40 - k, **kw)
        assert_continues([first, rest], whole, 4)
    else:
        assert (first.step, first.best_step) == (whole.step, whole.best_step)
    assert whole.stop_reason == "early_stopping"


@pytest.mark.parametrize("k, stopped_at", [(1, 4), (2, 8), (5, 8), (9, 16)])
def test_a_split_meta_run_stops_where_the_whole_run_stops(k, stopped_at):
    """The reproducer: the split run stopped at ``stopped_at`` (k = 1, 2: the off-grid end
    as the record; k = 5, 9: the mean over the steps since the resume), the whole one at 12."""
    model = mc.MLP([1, 6, 1], activation="tanh", loss="mse")
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.02, inner_steps=1),
                               mc.tasks.sinusoid(20, k_support=4, k_query=4, seed=1), meta_batch=3)
    kw = dict(progress=False, eval_every=4, early_stopping=1, seed=4,
              optimizer=mc.optim.SGD(lr=0.05))
    whole = mc.fit(problem, model.init(seed=0), steps=40, **kw)
    assert (whole.step, whole.best_step) == (12, 8)
    first = mc.fit(problem, model.init(seed=0), steps=k, **kw)
    rest = mc.fit(problem, first, steps=40 - k, **kw)
    assert (rest.step, rest.best_step) == (12, 8) != (stopped_at, None)
    same(rest.theta, whole.theta, "theta")
    same(rest.best_theta, whole.best_theta, "best theta")


@pytest.mark.parametrize("opt", [mc.optim.Adam(0.01, schedule=mc.optim.warmup(4)),
                                 mc.optim.SGD(0.1, momentum=0.9,
                                              schedule=mc.optim.warmup(1, mc.optim.linear(9)))])
def test_a_run_splits_inside_a_warm_up_from_zero(opt, tmp_path):
    """lr 0 at step 0 is a warm-up's start, not a schedule that has ended: fit(steps=1) was
    refused ("its schedule has ended"), so the run could not be split there (nor could
    metacore train run with train.checkpoint_every = 1)."""
    problem, _, theta0 = multitask_problem(np.float64)
    kw = dict(optimizer=opt, progress=False, eval_every=2)
    whole = mc.fit(problem, theta0, steps=10, **kw)
    first = mc.fit(problem, theta0, steps=1, checkpoint=tmp_path / "ck.npz", **kw)
    assert first.step == 1 and first.history.lr[0] == 0.0
    assert all(np.any(m != 0) for m in first.moments.values())    # the step moved them
    rest = mc.fit(problem, mc.load(tmp_path / "ck.npz"), steps=9, progress=False, eval_every=2)
    assert_continues([first, rest], whole, 2)
    # a schedule that has ended is still refused
    ended = mc.optim.SGD(0.1, schedule=mc.optim.linear(10))
    done = mc.fit(problem, theta0, steps=10, optimizer=ended, progress=False)
    with pytest.raises(ValueError, match="learning rate 0 at every step from 10 to 14"):
        mc.fit(problem, done, steps=5, progress=False)


def test_a_resumed_meta_run_evaluates_its_start_as_the_saving_run_did(tmp_path):
    problem, _, theta0 = meta_problem("fomaml", np.float32, True)
    kw = dict(progress=False, eval_every=3, seed=1)
    for k in (6, 7):        # on the grid and off it
        first = mc.fit(problem, theta0, steps=k, checkpoint=tmp_path / "ck.npz", **kw)
        rest = mc.fit(problem, mc.load(tmp_path / "ck.npz"), steps=2, **kw)
        assert rest.history.eval_step[0] == first.history.eval_step[-1] == k
        same(rest.history.train_loss[0], first.history.train_loss[-1], "train loss at k")
        assert np.isfinite(rest.history.train_loss[0])


# --- another problem, another dtype, a damaged file ---------------------------------------------
def other_learners(model):
    return {
        "MAML": mc.MAML(model, inner_lr=0.02, inner_steps=2),
        "MAML inner_lr": mc.MAML(model, inner_lr=0.03, inner_steps=2),
        "MAML inner_steps": mc.MAML(model, inner_lr=0.02, inner_steps=3),
        "FOMAML": mc.FOMAML(model, inner_lr=0.02, inner_steps=2),
        "ANIL": mc.ANIL(model, inner_lr=0.02, inner_steps=2),
        "Reptile": mc.Reptile(model, inner_lr=0.02, inner_steps=2),
        "IMAML": mc.IMAML(model, reg=5.0, inner_lr=0.02, inner_steps=2),
    }


@settings(max_examples=10, deadline=None)
@given(saved=st.sampled_from(["MAML", "FOMAML", "ANIL", "Reptile", "IMAML"]),
       other=st.sampled_from(["MAML", "MAML inner_lr", "MAML inner_steps", "FOMAML", "ANIL",
                              "Reptile", "IMAML"]))
def test_resuming_with_another_learner_is_refused(saved, other):
    model = mc.MLP([1, 5, 1], activation="tanh", loss="mse")
    tasks = mc.tasks.sinusoid(8, k_support=3, k_query=3, seed=4)
    learners = other_learners(model)
    opt = mc.optim.Adam(1e-3)     # Reptile's default decays to 0 over the first call
    res = mc.fit(mc.MetaObjective(learners[saved], tasks, meta_batch=2), model.init(seed=0),
                 steps=2, optimizer=opt, progress=False)
    problem = mc.MetaObjective(learners[other], tasks, meta_batch=2)
    if other == saved:
        assert mc.fit(problem, res, steps=1, progress=False).step == 3
        return
    with pytest.raises(ValueError, match="saved by another problem .*learner: saved"):
        mc.fit(problem, res, steps=1, progress=False)


def test_resuming_with_another_net_or_other_task_weights_is_refused():
    problem, _, theta0 = multitask_problem(np.float64)
    weights = np.array([0.1, 0.2, 0.3, 0.2, 0.2])
    weighted = mc.Objective(problem.model, problem.ts, weights=weights, l2=1e-3)
    res = mc.fit(weighted, theta0, steps=2, progress=False)
    # the same weights continue; others (here the default 1/T) were ignored for the saved ones
    assert mc.fit(mc.Objective(problem.model, problem.ts, weights=weights.copy(), l2=1e-3), res,
                  steps=1, progress=False).step == 3
    with pytest.raises(ValueError, match=r"task weights α\[0\] = 0.1, the objective's weights "
                                         r"give 0.2"):
        mc.fit(problem, res, steps=1, progress=False)
    relu = mc.MLP([3, 4, 1], activation="relu")      # as many parameters, another function
    with pytest.raises(ValueError, match="the checkpoint was saved for MLP"):
        mc.fit(mc.Objective(relu, problem.ts, weights=weights, l2=1e-3), res, steps=1,
               progress=False)
    with pytest.raises(ValueError, match="weights for 5 tasks, the objective has 4"):
        mc.fit(mc.Objective(problem.model, problem.ts.subset([0, 1, 2, 3]), l2=1e-3), res,
               steps=1, progress=False)


@pytest.mark.parametrize("saved, cast", [(np.float64, np.float32), (np.float32, np.float64)])
def test_a_train_state_of_mixed_dtypes_is_refused_naming_the_part(saved, cast):
    problem, val, theta0 = multitask_problem(saved)
    res = mc.fit(problem, theta0, steps=3, validation=val, eval_every=1, progress=False)
    ck = res.checkpoint()
    ck.theta = ck.theta.astype(cast)          # "resume this float64 run in float32"
    with pytest.raises(ValueError, match=f"moment 'm' is {np.dtype(saved)} but its θ is "
                                         f"{np.dtype(cast)}"):
        mc.fit(problem, ck, steps=1, progress=False)
    ck.moments = {k: v.astype(cast) for k, v in ck.moments.items()}
    ck.alpha = ck.alpha.astype(cast)
    with pytest.raises(ValueError, match="best θ is"):
        mc.fit(problem, ck, steps=1, progress=False)
    ck.best["theta"] = ck.best["theta"].astype(cast)
    out = mc.fit(problem, ck, steps=1, progress=False)       # all of it converted: it runs
    assert out.theta.dtype == cast and out.step == 4


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_damaged_meta_checkpoint_is_a_value_error_never_a_silent_resume(tmp_path_factory,
                                                                         data):
    tmp = tmp_path_factory.mktemp("damaged")
    problem, _, theta0 = meta_problem("maml", np.float64, False)
    res = mc.fit(problem, theta0, steps=5, eval_every=3, progress=False)
    assert res.recent_losses.shape == (2,)     # steps 3 and 4, since the evaluation at 3
    path = tmp / "ck.npz"
    mc.save(path, res)
    raw = path.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        path.write_bytes(raw[:at])
    else:
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    try:
        ck = mc.load(path)
    except ValueError:
        return
    # a flip the format cannot see (zip padding, a digit of a float in the JSON): what loaded
    # must still be a whole, consistent train state
    assert ck.step == 5 and ck.recent_losses.shape == (2,)
    assert mc.fit(problem, ck, steps=1, progress=False).step == 6


def test_the_carried_losses_of_a_checkpoint_are_checked(tmp_path):
    problem, _, theta0 = meta_problem("anil", np.float64, True)
    res = mc.fit(problem, theta0, steps=4, eval_every=3, progress=False)
    ck = res.checkpoint()
    ck.recent_losses = np.array([1.0, np.nan])
    with pytest.raises(ValueError, match="'recent_losses' holds NaN or Inf"):
        mc.load(mc.save(tmp_path / "nan.npz", ck))
    ck.recent_losses = np.ones(7)              # more steps than the run has taken
    with pytest.raises(ValueError, match="n_recent"):
        mc.load(mc.save(tmp_path / "long.npz", ck))
    res.recent_losses = None                   # a file written before they were kept: loads,
    old = mc.load(mc.save(tmp_path / "old.npz", res))     # and resumes
    assert old.recent_losses is None and mc.fit(problem, old, steps=2, progress=False).step == 6


# --- divergence ----------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(chunk_size=st.sampled_from([None, 1, 4]), meta=st.booleans(),
       opt=st.sampled_from(["sgd", "momentum", "adam"]))
def test_a_diverged_run_keeps_the_state_of_its_last_finite_step(tmp_path_factory, chunk_size,
                                                                meta, opt):
    """err.result and the checkpoint written on divergence are the run of the steps before the
    failing one, bit for bit; resumed as they are, they fail at the same step again, and a
    resume with a lower rate continues from them."""
    tmp = tmp_path_factory.mktemp("diverged")
    if meta:
        problem, _, theta0 = meta_problem("fomaml", np.float64, True)
        lr = {"sgd": 20.0, "momentum": 5.0, "adam": 1e200}[opt]
    else:
        problem, _, theta0 = multitask_problem(np.float64)
        problem = mc.Objective(mc.MLP([3, 4, 1], activation="relu"), problem.ts)
        lr = {"sgd": 30.0, "momentum": 3.0, "adam": 1e200}[opt]
    make = {"sgd": lambda r: mc.optim.SGD(r), "adam": lambda r: mc.optim.Adam(r),
            "momentum": lambda r: mc.optim.SGD(r, momentum=0.9)}[opt]
    kw = dict(progress=False, eval_every=3, chunk_size=chunk_size, seed=2)
    with pytest.raises(mc.FitDivergedError) as info:
        mc.fit(problem, theta0, steps=300, optimizer=make(lr), checkpoint=tmp / "ck.npz", **kw)
    err = info.value
    s = err.result.step
    assert err.step == s and err.result.stop_reason == "diverged"
    if s == 0:
        return
    clean = mc.fit(problem, theta0, steps=s, optimizer=make(lr), **kw)
    saved = mc.load(tmp / "ck.npz")
    assert saved.step == s
    for state in (err.result.checkpoint(), saved):
        same(state.theta, clean.theta, "theta")
        for k in clean.moments:
            same(state.moments[k], clean.moments[k], k)
    same(err.result.history.objective, clean.history.objective, "objective")
    if meta:
        same(saved.recent_losses, clean.recent_losses, "recent_losses")
    with pytest.raises(mc.FitDivergedError) as again:
        mc.fit(problem, saved, steps=5, **kw)
    assert again.value.step == s
