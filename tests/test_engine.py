"""One training engine for every problem: the multi-task objective and every meta-learner run
through ``mc.fit`` with the same options, resume bit-identically (30 + 30 steps = 60 steps, θ and
history, tasks drawn included), stop cleanly on Ctrl-C, and share one result, one history and one
checkpoint format."""

import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref


def sinusoid_model():
    return mc.MLP([1, 12, 12, 1], activation="tanh", loss="mse")


def multitask():
    ts = mc.tasks.linear_family(16, n_features=4, n_rows=(12, 20), n_support=6, seed=2)
    train, val = ts.split_tasks(test_fraction=0.25, seed=0)
    model = mc.MLP([4, 8, 1], activation="tanh")
    return mc.Objective(model, train, l2=1e-3), val, model.init(seed=1)


def meta(kind, source):
    model = sinusoid_model()
    learner = {
        "maml": lambda: mc.MAML(model, inner_lr=0.02, inner_steps=2),
        "fomaml": lambda: mc.FOMAML(model, inner_lr=0.02),
        "anil": lambda: mc.ANIL(model, inner_lr=0.05),
        "metasgd": lambda: mc.MetaSGD(model, inner_lr=0.02),
        "reptile": lambda: mc.Reptile(model, inner_lr=0.02, inner_steps=3, outer_lr=0.5),
    }[kind]()
    tasks = (mc.tasks.SinusoidSource(k_support=5, k_query=5) if source
             else mc.tasks.sinusoid(30, k_support=5, k_query=5, seed=4))
    theta = model.init(seed=0)
    if isinstance(learner, mc.MetaSGD):
        theta = learner.init(theta)
    val = mc.tasks.sinusoid(8, k_support=5, k_query=5, seed=9)
    return mc.MetaObjective(learner, tasks, meta_batch=4), val, theta


PROBLEMS = {
    "multitask": multitask,
    "multitask-dwa": multitask,
    **{f"{k}-source": (lambda k=k: meta(k, True)) for k in ("maml", "reptile")},
    **{f"{k}-taskset": (lambda k=k: meta(k, False))
       for k in ("maml", "fomaml", "anil", "metasgd", "reptile")},
}


def options(name, tmp_path, calls):
    kw = dict(steps=30, eval_every=10, validation=None, early_stopping=mc.EarlyStopping(100),
              callbacks=[lambda e: calls.append(e.step)], checkpoint=tmp_path / "ck.npz",
              checkpoint_every=10, progress=False, seed=5)
    if name == "multitask-dwa":
        kw["weighting"] = mc.weighting.DWA()
    if name == "multitask":
        kw.update(batch_tasks=5, batch_rows=4)
    if name.startswith("reptile"):   # its default schedule decays over the call's steps
        kw["optimizer"] = mc.optim.SGD(lr=0.5, schedule=mc.optim.linear(60))
    return kw


def same_history(parts, whole):
    """Two histories of 30 steps each equal one of 60 (per step; per evaluation, with the
    evaluation at the resume step counted once)."""
    a, b = parts
    for name in ("step", "objective", "grad_norm", "lr", "support_loss"):
        x = getattr(whole, name)
        if x is None:
            assert getattr(a, name) is None and getattr(b, name) is None
            continue
        np.testing.assert_array_equal(np.concatenate([getattr(a, name), getattr(b, name)]), x)
    assert a.eval_step[-1] == b.eval_step[0]
    for name in ("eval_step", "train_loss", "val_loss", "task_losses", "weights", "inner_rates"):
        x = getattr(whole, name)
        if x is None:
            continue
        joined = np.concatenate([getattr(a, name), getattr(b, name)[1:]])
        np.testing.assert_array_equal(joined, x, err_msg=name)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_every_problem_resumes_bit_identically_with_every_option(name, tmp_path):
    problem, val, theta0 = PROBLEMS[name]()
    calls = []
    kw = options(name, tmp_path, calls)
    kw["validation"] = val
    whole = mc.fit(problem, theta0, **dict(kw, steps=60, checkpoint=None))
    first = mc.fit(problem, theta0, **kw)
    assert first.step == 30 and first.stop_reason == "steps"
    assert calls[:4] == [0, 10, 20, 30]
    # resumed from the result, and from the file the checkpoint option wrote
    saved = mc.load(tmp_path / "ck.npz")
    assert saved.step == 30
    resume_kw = {k: v for k, v in kw.items() if k not in ("seed", "weighting", "optimizer")}
    rest = mc.fit(problem, first, **resume_kw)
    from_file = mc.fit(problem, saved, **dict(resume_kw, checkpoint=None))
    for r in (rest, from_file):
        np.testing.assert_array_equal(r.theta, whole.theta)
        assert r.step == 60
        same_history((first.history, r.history), whole.history)
        np.testing.assert_array_equal(r.best_theta, whole.best_theta)
    assert whole.history.val_loss.shape == (7,) and np.isfinite(whole.history.val_loss).all()
    assert mc.load(tmp_path / "ck.npz").step == 60     # written again at the end


@pytest.mark.parametrize("kind", ["maml", "metasgd", "reptile"])
def test_meta_validation_is_the_query_loss_after_the_learners_own_adaptation(kind):
    problem, val, theta0 = meta(kind, True)
    res = mc.fit(problem, theta0, steps=4, eval_every=2, validation=val, progress=False)
    learner = problem.learner
    assert res.history.eval_step.tolist() == [0, 2, 4]
    direct = learner.query_losses(res.theta, val)
    assert res.history.val_loss[-1] == pytest.approx(direct.mean(), rel=1e-12)
    np.testing.assert_array_equal(res.history.val_task_losses[-1], direct)
    # an oracle independent of the core: the NumPy reference's meta-loss at the final θ
    params = res.theta.astype(np.float64)
    if kind == "maml":
        expect, _ = ref.maml_value_and_grad(learner.model, params, val, inner_lr=learner.inner_lr,
                                            inner_steps=learner.inner_steps)
    elif kind == "metasgd":
        expect, _ = ref.metasgd_value_and_grad(learner.model, params, val,
                                               inner_steps=learner.inner_steps)
    else:
        expect, _ = ref.reptile_value_and_grad(learner.model, params, val,
                                               inner_lr=learner.inner_lr,
                                               inner_steps=learner.inner_steps)
    assert res.history.val_loss[-1] == pytest.approx(expect, rel=1e-5)


def test_reptile_default_outer_step_is_sgd_with_linear_decay_and_resumes_its_schedule():
    problem, _, theta0 = meta("reptile", False)
    res = mc.fit(problem, theta0, steps=8, progress=False, eval_every=8)
    assert res.optimizer == mc.optim.SGD(lr=0.5, schedule=mc.optim.linear(8))
    np.testing.assert_allclose(res.history.lr, [0.5 * (1 - s / 8) for s in range(8)], rtol=1e-15)
    half = mc.fit(problem, theta0, steps=4, progress=False, eval_every=4,
                  optimizer=mc.optim.SGD(lr=0.5, schedule=mc.optim.linear(8)))
    rest = mc.fit(problem, half, steps=4, progress=False, eval_every=4)
    np.testing.assert_array_equal(rest.theta, res.theta)


def test_meta_sgd_history_records_the_learned_rates():
    problem, val, theta0 = meta("metasgd", True)
    res = mc.fit(problem, theta0, steps=6, eval_every=3, progress=False)
    P = problem.model.n_params
    assert res.history.inner_rates.shape == (3, P)
    np.testing.assert_array_equal(res.history.inner_rates[0], np.full(P, 0.02))
    np.testing.assert_array_equal(res.history.inner_rates[-1], problem.learner.split(res.theta)[1])
    assert not np.array_equal(res.history.inner_rates[0], res.history.inner_rates[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_history_weights_are_copies_that_change_over_time(dtype):
    obj, _, _ = multitask()
    theta0 = obj.model.init(seed=1, dtype=dtype)
    res = mc.fit(obj, theta0, steps=40, eval_every=10, weighting=mc.weighting.DWA(), seed=0,
                 progress=False, record_task_losses=True, optimizer=mc.optim.Adam(lr=0.05))
    w = res.history.weights
    assert w.shape == (5, obj.n_tasks)
    assert len({tuple(row) for row in w[1:]}) == 4, "every evaluation keeps its own α"
    np.testing.assert_array_equal(w[-1], res.weights.astype(np.float64))
    # α at the evaluation after s steps is the α the last of them used (DWA sets it before each)
    for e, s in enumerate(res.history.eval_step[1:], start=1):
        np.testing.assert_array_equal(w[e], res.history.step_weights[s - 1])
    res.history.weights[0, 0] = 123.0      # a copy: writing it changes nothing else
    assert res.weights[0] != 123.0


def test_ctrl_c_stops_writes_the_checkpoint_and_attaches_the_partial_result(tmp_path):
    problem, _, theta0 = meta("maml", True)
    path = tmp_path / "ck.npz"

    def interrupt(event):
        if event.step == 12:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt) as info:
        mc.fit(problem, theta0, steps=40, eval_every=4, callbacks=[interrupt], checkpoint=path,
               checkpoint_every=1000, progress=False)
    partial = info.value.result
    assert partial.stop_reason == "interrupted" and partial.step == 12
    assert mc.load(path).step == 12
    rest = mc.fit(problem, mc.load(path), steps=28, eval_every=4, progress=False)
    whole = mc.fit(problem, theta0, steps=40, eval_every=4, progress=False)
    np.testing.assert_array_equal(rest.theta, whole.theta)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored


SIGINT_CHILD = textwrap.dedent("""
    import sys, numpy as np, metacore as mc
    model = mc.MLP([1, 12, 12, 1], activation="tanh")
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.02), mc.tasks.SinusoidSource(),
                               meta_batch=8)
    print("ready", flush=True)
    try:
        mc.fit(problem, model.init(seed=0), steps=10**7, eval_every=10**6, chunk_size=20,
               checkpoint=sys.argv[1], checkpoint_every=10**6, progress=False)
    except KeyboardInterrupt as e:
        print("interrupted", e.result.step, flush=True)
        sys.exit(130)
""")


def test_sigint_to_a_training_process_leaves_a_checkpoint_that_resumes(tmp_path):
    path = tmp_path / "ck.npz"
    env = dict(os.environ)
    child = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, str(path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    import time
    time.sleep(1.5)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    step = int(out.split()[-1])
    assert step > 0 and mc.load(path).step == step
    model = mc.MLP([1, 12, 12, 1], activation="tanh")
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.02), mc.tasks.SinusoidSource(),
                               meta_batch=8)
    rest = mc.fit(problem, mc.load(path), steps=5, progress=False)
    whole = mc.fit(problem, model.init(seed=0), steps=step + 5, progress=False)
    np.testing.assert_array_equal(rest.theta, whole.theta)


# --- one optimizer form -------------------------------------------------------------------------
@pytest.mark.parametrize("opt", [
    mc.optim.SGD(lr=0.1), mc.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, clip_norm=1.0),
    mc.optim.Adam(lr=1e-3, schedule=mc.optim.cosine(100, 0.1)),
    mc.optim.AdamW(lr=2e-3, betas=(0.8, 0.99), schedule=mc.optim.warmup(5, mc.optim.linear(50))),
])
def test_optimizer_dicts_round_trip(opt):
    assert mc.optim.from_dict(opt.to_dict()) == opt


@pytest.mark.parametrize("d, match", [
    ({"kind": "adam", "learning_rate": 1e-3}, "unknown key 'learning_rate'.*'lr'"),
    ({"kind": "sgd", "lr": 0.1, "betas": [0.9, 0.99]}, "unknown key 'betas'"),
    ({"kind": "lion", "lr": 0.1}, "unknown optimizer kind 'lion'"),
    ({"lr": 0.1}, "unknown optimizer kind None"),
    ({"kind": "adam", "schedule": {"kind": "cosine", "period": 10}}, "unknown key 'period'"),
    ({"kind": "adam", "schedule": {"steps": 10}}, "schedule needs a 'kind'"),
    ({"kind": "sgd"}, "lr is required"),
])
def test_optimizer_dicts_are_strict(d, match):
    with pytest.raises(ValueError, match=match):
        mc.optim.from_dict(d)
    problem, _, theta0 = meta("maml", True)
    with pytest.raises(ValueError, match=match):       # fit takes the same dicts, as strictly
        mc.fit(problem, theta0, optimizer=d, steps=1, progress=False)


def test_a_dict_trains_like_the_object_it_describes():
    obj, _, theta0 = multitask()
    kw = dict(steps=10, progress=False)
    a = mc.fit(obj, theta0, optimizer={"kind": "sgd", "lr": 0.05, "momentum": 0.9,
                                       "clip_norm": 0.5}, **kw)
    b = mc.fit(obj, theta0, optimizer=mc.optim.SGD(lr=0.05, momentum=0.9, clip_norm=0.5), **kw)
    c = mc.fit(obj, theta0, **kw)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)


# --- one result and one checkpoint --------------------------------------------------------------
def test_a_meta_learning_result_saves_and_loads(tmp_path):
    problem, _, theta0 = meta("metasgd", False)
    res = mc.fit(problem, theta0, steps=3, progress=False)
    mc.save(tmp_path / "m.npz", res)
    ck = mc.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(ck.theta, res.theta)
    assert ck.problem == problem.spec()
    assert ck.problem["learner"] == problem.learner.to_dict() and ck.problem["meta_batch"] == 4
    assert mc.learners.from_dict(ck.problem["learner"]) == problem.learner
    assert [f for f in os.listdir(tmp_path) if f != "m.npz"] == []     # no temporary files left
    other, _, _ = meta("maml", False)
    with pytest.raises(ValueError, match="parameters"):
        mc.fit(other, ck, steps=1, progress=False)


def test_a_checkpoint_declaring_other_shapes_is_refused_before_reading(tmp_path):
    obj, _, theta0 = multitask()
    mc.save(tmp_path / "ck.npz", mc.fit(obj, theta0, steps=2, progress=False))
    with np.load(tmp_path / "ck.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["moment_m"] = np.zeros(10**6)           # a much larger entry than declared
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="'moment_m' has shape \\(1000000,\\).*description"):
        mc.load(tmp_path / "bad.npz")


def test_problem_arguments_are_checked():
    problem, _, theta0 = meta("maml", False)
    with pytest.raises(ValueError, match="weighting applies to multi-task"):
        mc.fit(problem, theta0, weighting=mc.weighting.DWA(), steps=1, progress=False)
    with pytest.raises(ValueError, match="batch_tasks and batch_rows apply to multi-task"):
        mc.fit(problem, theta0, batch_tasks=2, steps=1, progress=False)
    with pytest.raises(TypeError, match="learner must be"):
        mc.MetaObjective(object(), problem.tasks)
    with pytest.raises(TypeError, match="tasks must be a TaskSet or a task source"):
        mc.MetaObjective(problem.learner, [1, 2, 3])
    with pytest.raises(ValueError, match="meta_batch must be <= the number of tasks"):
        mc.MetaObjective(problem.learner, problem.tasks, meta_batch=31)
    with pytest.raises(ValueError, match="sinusoid family needs a model with 1 input"):
        mc.MetaObjective(mc.MAML(mc.MLP([2, 4, 1])), mc.tasks.SinusoidSource())


def test_deprecated_spellings_warn_and_train_the_same():
    problem, _, theta0 = meta("maml", False)
    new = mc.fit(problem, theta0, steps=5, progress=False, seed=2)
    with pytest.warns(DeprecationWarning, match="learner.fit"):
        old = problem.learner.fit(problem.tasks, theta0, meta_batch=4, steps=5, progress=False,
                                  seed=2)
    np.testing.assert_array_equal(old.theta, new.theta)
    with pytest.warns(DeprecationWarning, match="learner.fit"):     # the old call, old answers
        legacy = problem.learner.fit(problem.tasks, theta0, meta_batch=4, steps=25, chunk=10,
                                     validation=lambda th: float(np.sum(th ** 2)),
                                     progress=False, seed=2)
    with pytest.warns(DeprecationWarning, match="history.objective"):
        np.testing.assert_array_equal(legacy.history["meta_loss"], legacy.history.objective)
    with pytest.warns(DeprecationWarning):
        pairs = legacy.history["validation"]
    assert [s for s, _ in pairs] == [10, 20, 25]
    assert pairs[-1][1] == pytest.approx(float(np.sum(legacy.theta.astype(np.float64) ** 2)),
                                         rel=1e-6)
    with pytest.warns(DeprecationWarning, match="MetaFitResult"):
        assert mc.MetaFitResult is mc.FitResult
    with pytest.warns(DeprecationWarning, match="theta0"):
        again = mc.fit(problem, theta0=theta0, steps=5, progress=False, seed=2)
    np.testing.assert_array_equal(again.theta, new.theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mc.fit(problem, theta0, steps=1, progress=False)      # the new spelling is quiet


# --- what a first review broke --------------------------------------------------------------------
def test_one_meta_problem_trains_from_many_threads_at_once():
    """Each fit builds its own meta-step: a shared MetaObjective gives every thread the serial θ."""
    import threading
    for source in (False, True):
        problem, _, theta0 = meta("maml", source)
        serial = mc.fit(problem, theta0, steps=40, chunk_size=40, progress=False).theta
        out = [None] * 4

        def run(i):
            out[i] = mc.fit(problem, theta0, steps=40, chunk_size=40, progress=False).theta
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for theta in out:
            np.testing.assert_array_equal(theta, serial)


def test_a_run_whose_schedule_has_ended_is_refused_not_trained_at_lr_zero():
    problem, _, theta0 = meta("reptile", True)
    first = mc.fit(problem, theta0, steps=10, progress=False)      # linear(10): ends at step 10
    with pytest.raises(ValueError, match="learning rate 0 at every step from 10 to 19"):
        mc.fit(problem, first, steps=10, progress=False)
    longer = mc.fit(problem, theta0, steps=10, progress=False,
                    optimizer=mc.optim.SGD(lr=0.5, schedule=mc.optim.linear(20)))
    rest = mc.fit(problem, longer, steps=10, progress=False)
    assert rest.history.lr[0] > 0


@pytest.mark.parametrize("split", [26, 30])
def test_early_stopping_decides_the_same_wherever_a_run_is_split(split):
    ts = mc.tasks.linear_family(12, n_features=5, n_rows=40, n_support=20, seed=0)
    train, val = ts.split_tasks(test_fraction=0.25, seed=0)
    model = mc.MLP([5, 8, 1], activation="tanh")
    obj, theta0 = mc.Objective(model, train, l2=1e-3), model.init(seed=0)
    events = []
    kw = dict(progress=False, seed=3, validation=val, eval_every=10, early_stopping=2,
              optimizer=mc.optim.SGD(lr=0.3), batch_tasks=2, batch_rows=3,
              callbacks=[lambda e: events.append(e.step)])
    whole = mc.fit(obj, theta0, steps=100, **kw)
    whole_events, events[:] = list(events), []
    a = mc.fit(obj, theta0, steps=split, **kw)
    b = mc.fit(obj, a, steps=100 - split, **kw)
    assert b.stop_reason == whole.stop_reason and b.step == whole.step
    assert b.best_step == whole.best_step
    np.testing.assert_array_equal(b.theta, whole.theta)
    np.testing.assert_array_equal(b.best_theta, whole.best_theta)
    assert events == whole_events


def test_schedule_dicts_need_their_length():
    with pytest.raises(ValueError, match="schedule 'cosine' needs 'steps'"):
        mc.optim.from_dict({"kind": "sgd", "lr": 0.1, "schedule": {"kind": "cosine"}})
    with pytest.raises(ValueError, match="schedule 'step' needs 'every'"):
        mc.optim.from_dict({"kind": "sgd", "lr": 0.1, "schedule": {"kind": "step"}})
    opt = mc.optim.from_dict({"kind": "adam", "schedule": {"kind": "linear", "steps": 50,
                                                           "warmup": 5}})
    assert opt.schedule == mc.optim.warmup(5, mc.optim.linear(50))


def test_a_checkpoint_folder_that_does_not_exist_is_refused_before_training(tmp_path):
    obj, _, theta0 = multitask()
    with pytest.raises(ValueError, match="checkpoint: the folder .*missing.* does not exist"):
        mc.fit(obj, theta0, steps=5, checkpoint=tmp_path / "missing" / "ck.npz", progress=False)


def test_callbacks_stop_with_true_only_and_a_raising_callback_keeps_the_result(tmp_path):
    obj, _, theta0 = multitask()
    with pytest.raises(TypeError, match="returned str; a callback returns True to stop"):
        mc.fit(obj, theta0, steps=5, eval_every=1, callbacks=[lambda e: "no"], progress=False)
    stopped = mc.fit(obj, theta0, steps=20, eval_every=5, progress=False,
                     callbacks=[lambda e: np.True_ if e.step == 10 else None])
    assert stopped.stop_reason == "callback" and stopped.step == 10

    def boom(event):
        if event.step == 10:
            raise RuntimeError("my callback failed")
    with pytest.raises(RuntimeError, match="my callback failed") as info:
        mc.fit(obj, theta0, steps=20, eval_every=5, callbacks=[boom], progress=False,
               checkpoint=tmp_path / "ck.npz")
    assert info.value.result.step == 10 and mc.load(tmp_path / "ck.npz").step == 10


def test_resuming_another_problem_is_refused_naming_what_differs():
    obj, _, theta0 = multitask()
    res = mc.fit(obj, theta0, steps=3, progress=False)
    with pytest.raises(ValueError, match="rows: saved 'all', now 'support'"):
        mc.fit(mc.Objective(obj.model, obj.ts, l2=1e-3, rows="support"), res, steps=1,
               progress=False)
    with pytest.raises(ValueError, match="l2: saved 0.001, now 0.1"):
        mc.fit(mc.Objective(obj.model, obj.ts, l2=0.1), res, steps=1, progress=False)
    # the same objective on other tasks of the same shape continues (new data is a use of resume)
    other_tasks = mc.Objective(obj.model, mc.tasks.linear_family(
        12, n_features=4, n_rows=(30, 40), n_support=6, seed=8), l2=1e-3)
    assert mc.fit(other_tasks, res, steps=2, progress=False).step == 5
    problem, _, _ = meta("maml", False)
    meta_res = mc.fit(problem, problem.model.init(seed=0), steps=2, progress=False)
    with pytest.raises(ValueError, match="saved by a meta problem, this one is multitask"):
        mc.fit(mc.Objective(problem.model, problem.tasks), meta_res, steps=1, progress=False)
    with pytest.raises(ValueError, match="meta_batch: saved 4, now 5"):
        mc.fit(mc.MetaObjective(problem.learner, problem.tasks, meta_batch=5), meta_res, steps=1,
               progress=False)


def test_results_and_saves_never_share_or_change_the_callers_arrays(tmp_path):
    obj, _, theta0 = multitask()
    res = mc.fit(obj, theta0, steps=3, progress=False)
    state = res.state
    # the state's arrays are its own, read-only copies: the result's stay the caller's to change
    assert not np.shares_memory(state.theta, res.theta)
    with pytest.raises(ValueError, match="read-only"):
        state.theta[0] += 1.0
    res.theta[0] += 1.0
    assert state.theta[0] != res.theta[0]
    ck = res.checkpoint()
    mc.save(tmp_path / "a.npz", ck, info={"note": 1})
    assert ck.info == {}
