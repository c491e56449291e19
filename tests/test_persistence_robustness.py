"""Objects survive pickling and process boundaries; shared objects survive bad callers; saved files
survive concurrent writers; corrupt files and bad CLI input end in clear errors.

- Every public object pickles and round-trips (compiled handles are rebuilt, never pickled), in
  this process and through spawn workers, both ways.
- A failing call on a shared Objective, TaskSet, learner or MetaObjective caches nothing: good calls
  from other threads, before and after, give the serial results bit for bit.
- mc.save from many threads and processes to one path leaves one whole loadable file and no
  temporary files; mc.load of a corrupted file is a ValueError (never RecursionError/MemoryError).
- The CLI maps every failure to the README's exit codes with one line on stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import pickle
import threading
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.app import cli

SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def small(dtype=np.float64):
    model = mc.MLP([1, 6, 1], activation="tanh")
    ts = mc.tasks.sinusoid(6, k_support=4, k_query=4, seed=0, dtype=dtype)
    return model, ts, model.init(seed=0, dtype=dtype)


def objects():
    """Every public object kind, each after its compiled handles were built."""
    model, ts, theta = small()
    obj = mc.Objective(model, ts, weights=np.linspace(0.5, 1.5, ts.n_tasks), l2=1e-3)
    obj.value(theta), obj.value(theta.astype(np.float32))
    learner = mc.MetaSGD(model)
    meta = mc.MetaObjective(mc.MAML(model), ts, meta_batch=2)
    src = mc.MetaObjective(mc.Reptile(model), mc.tasks.SinusoidSource(), meta_batch=2)
    res = mc.fit(obj, theta, steps=3, progress=False, weighting=mc.weighting.DWA())
    meta_res = mc.fit(meta, theta, steps=2, progress=False)
    mc.fit(src, theta, steps=1, progress=False)
    learner.meta_value_and_grad(learner.init(theta), ts)
    report = mc.evaluate(model, theta, ts, steps=(0, 1), lr=0.01)
    return {"model": model, "taskset": ts, "objective": obj, "learner": learner,
            "meta_objective": meta, "meta_objective_source": src, "optimizer":
            mc.optim.AdamW(schedule=mc.optim.warmup(3, mc.optim.cosine(5))),
            "weighting": mc.weighting.DWA(), "fit_result": res, "meta_fit_result": meta_res,
            "history": res.history, "checkpoint": res.checkpoint(), "eval_report": report}


def _same_behaviour(a, b):
    """The round-tripped object computes what the original computes."""
    _, ts, theta = small()
    if isinstance(a, mc.Objective):
        for dt in (np.float64, np.float32):
            assert a.value_and_grad(theta.astype(dt))[0] == b.value_and_grad(theta.astype(dt))[0]
    elif isinstance(a, mc.MetaObjective):
        ra = mc.fit(a, theta, steps=2, progress=False, seed=3)
        rb = mc.fit(b, theta, steps=2, progress=False, seed=3)
        np.testing.assert_array_equal(ra.theta, rb.theta)
    elif isinstance(a, mc.MLP):
        assert a == b
        np.testing.assert_array_equal(a.predict(theta, ts.X), b.predict(theta, ts.X))
    elif isinstance(a, mc.TaskSet):
        for name in ("X", "y", "offsets", "n_support", "task_ids"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    elif isinstance(a, mc.FitResult):
        np.testing.assert_array_equal(a.theta, b.theta)
        assert a.step == b.step
    elif isinstance(a, (mc.optim.Optimizer, mc.weighting.Weighting)):
        assert a == b
    elif isinstance(a, mc.learners.Learner):
        assert a == b
        p = a.init(theta)
        assert a.meta_value_and_grad(p, ts)[0] == b.meta_value_and_grad(p, ts)[0]


@pytest.mark.parametrize("name", sorted(objects()))
def test_every_public_object_pickles_and_round_trips(name):
    a = objects()[name]
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        b = pickle.loads(pickle.dumps(a, protocol=protocol))
        assert type(b) is type(a)
        _same_behaviour(a, b)


def _child_fit(problem, theta):
    res = mc.fit(problem, theta, steps=2, progress=False, seed=1)
    return res, problem     # travels back: a result and the problem, handles built in the child


def test_spawn_workers_take_and_return_objects_both_ways():
    model, ts, theta = small()
    problems = [mc.Objective(model, ts), mc.MetaObjective(mc.MAML(model), ts, meta_batch=2)]
    for p in problems:       # built handles must not stop the trip out
        mc.fit(p, theta, steps=1, progress=False)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        back = pool.starmap(_child_fit, [(p, theta) for p in problems])
    for p, (res, p_back) in zip(problems, back):
        here = mc.fit(p, theta, steps=2, progress=False, seed=1)
        np.testing.assert_array_equal(here.theta, res.theta)
        again = mc.fit(p_back, theta, steps=2, progress=False, seed=1)   # usable after the trip
        np.testing.assert_array_equal(here.theta, again.theta)


def test_joblib_round_trip():
    joblib = pytest.importorskip("joblib")
    model, ts, theta = small()
    obj = mc.Objective(model, ts)
    obj.value(theta)
    out = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_child_fit)(obj, theta) for _ in range(2))
    np.testing.assert_array_equal(out[0][0].theta, out[1][0].theta)


def test_caches_use_the_canonical_dtype():
    model, ts, theta = small()
    obj = mc.Objective(model, ts)
    swapped = theta.astype(theta.dtype.newbyteorder(">"))
    unpickled = pickle.loads(pickle.dumps(np.dtype(np.float64)))
    assert obj.value(swapped) == obj.value(theta)
    obj.core_handle(unpickled), obj.core_handle("float64"), obj.core_handle(np.float64)
    assert list(obj._handles) == [np.dtype(np.float64)]     # one entry, one key object  # noqa
    assert ts.astype(np.dtype("=f4")) is ts.astype(np.float32)


# --- a failing call then a good one, from several threads -----------------------------------------
BAD_THETAS = st.sampled_from(["nan", "short", "object", "masked", "timedelta", "int", "2d",
                              "swapped_short", "huge_value"])


def _bad_theta(theta, how):
    return {"nan": lambda: np.full_like(theta, np.nan), "short": lambda: theta[:-1],
            "object": lambda: theta.astype(object), "masked": lambda: np.ma.masked_array(theta),
            "timedelta": lambda: np.zeros(theta.shape, "m8[s]"),
            "int": lambda: np.ones(theta.shape, np.int64), "2d": lambda: theta[None],
            "swapped_short": lambda: theta[:-1].astype(">f8"),
            "huge_value": lambda: np.full(theta.shape, 1e300)}[how]()


@settings(max_examples=25, **SETTINGS)
@given(how=BAD_THETAS, dtype=st.sampled_from([np.float32, np.float64]))
def test_a_failing_call_never_breaks_a_shared_object_for_other_threads(how, dtype):
    model, ts, theta64 = small()
    theta = theta64.astype(dtype)
    obj = mc.Objective(model, ts)
    learner = mc.MAML(model)
    meta = mc.MetaObjective(learner, ts, meta_batch=2)
    calls = {"objective": lambda th: obj.value_and_grad(th)[1],
             "taskset": lambda th: ts.astype(th.dtype).X,
             "learner": lambda th: learner.meta_value_and_grad(th, ts)[1],
             "meta": lambda th: mc.fit(meta, th, steps=1, progress=False, seed=0).theta}
    fresh = {"objective": lambda th: mc.Objective(model, ts).value_and_grad(th)[1],
             "taskset": lambda th: ts.astype(th.dtype).X,
             "learner": lambda th: mc.MAML(model).meta_value_and_grad(th, ts)[1],
             "meta": lambda th: mc.fit(mc.MetaObjective(mc.MAML(model), ts, meta_batch=2), th,
                                       steps=1, progress=False, seed=0).theta}
    want = {k: f(theta) for k, f in fresh.items()}
    bad = _bad_theta(theta, how)
    errors, results = [], []

    def worker(i):
        for name, call in calls.items():
            if i % 2:
                try:
                    call(bad)
                except (ValueError, TypeError, FloatingPointError):
                    pass
            results.append((name, call(theta)))

    threads = [threading.Thread(target=lambda i=i: errors.append(None) or worker(i))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 * len(calls)
    for name, got in results:
        np.testing.assert_array_equal(got, want[name], err_msg=name)


# --- concurrent saves ---------------------------------------------------------------------------
def _saver(path, seed, n):
    model, ts, theta = small()
    res = mc.fit(mc.Objective(model, ts), theta + seed, steps=1, progress=False)
    for _ in range(n):
        mc.save(path, res)
    return seed


def _check_one_whole_file(folder, path):
    assert sorted(os.listdir(folder)) == [os.path.basename(path)], os.listdir(folder)
    ck = mc.load(path)
    assert ck.resumable and ck.theta.shape == (small()[0].n_params,)
    mode = os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask, oct(mode)


def test_concurrent_saves_from_threads_leave_one_whole_file(tmp_path):
    path = str(tmp_path / "ck.npz")
    threads = [threading.Thread(target=_saver, args=(path, i, 15)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_one_whole_file(tmp_path, path)


def test_concurrent_saves_from_processes_leave_one_whole_file(tmp_path):
    path = str(tmp_path / "ck.npz")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.starmap(_saver, [(path, i, 10) for i in range(4)]) == list(range(4))
    _check_one_whole_file(tmp_path, path)


def test_a_failed_or_interrupted_save_leaves_the_old_file_and_no_temporary_file(tmp_path,
                                                                                monkeypatch):
    path = tmp_path / "ck.npz"
    with pytest.raises(ValueError, match="info"):
        mc.save(path, np.zeros(3), info={"x": float("nan")})
    assert os.listdir(tmp_path) == []
    mc.save(path, np.ones(3))

    def interrupted(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mc.save(path, np.zeros(3))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]
    np.testing.assert_array_equal(mc.load(path).theta, np.ones(3))


# --- corrupt checkpoints --------------------------------------------------------------------------
def _good_file(tmp_path):
    model, ts, theta = small()
    res = mc.fit(mc.Objective(model, ts), theta, steps=2, progress=False)
    return mc.save(str(tmp_path / "good.npz"), res)


def _rewrite_meta(src, dst, meta_text, extra=None):
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.array(meta_text))
    entries["meta.npy"] = buf.getvalue()
    entries.update(extra or {})
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)


WRONG_VALUES = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=5),
                         st.integers(-2**70, 2**70), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                         st.sampled_from([2**63, 2**64, -1, 10**15]))


@settings(max_examples=120, **SETTINGS)
@given(data=st.data())
def test_corrupt_descriptions_and_arrays_are_value_errors(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("ck")
    good = _good_file(tmp)
    with zipfile.ZipFile(good) as z:
        buf = io.BytesIO(z.read("meta.npy"))
    meta = json.loads(str(np.load(buf)))
    how = data.draw(st.sampled_from(["field", "nested", "huge_shape", "alpha", "bytes",
                                     "truncate"]))
    bad = str(tmp / "bad.npz")
    extra = None
    if how == "field":
        key = data.draw(st.sampled_from(["n_params", "step", "n_tasks", "seed", "dtype", "moments",
                                         "info", "best", "weighting_size", "model", "optimizer",
                                         "problem", "version"]))
        meta[key] = data.draw(WRONG_VALUES)
        text = json.dumps(meta)
    elif how == "nested":
        depth = data.draw(st.sampled_from([1000, 10_000, 100_000]))
        key = data.draw(st.sampled_from(["info", "model", "n_params"]))
        text = json.dumps(meta)[:-1] + f', "{key}": ' + "[" * depth + "]" * depth + "}"
    elif how == "huge_shape":        # header and description agree on an absurd size
        n = data.draw(st.sampled_from([10**9, 10**12, 2**62]))
        meta["n_params"] = n
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (n,)})
        extra = {"theta.npy": header.getvalue() + b"\0" * 64}
        text = json.dumps(meta)
    elif how == "alpha":
        alpha = np.full(meta["n_tasks"], data.draw(st.sampled_from([-1.0, -1e-300, np.nan,
                                                                   np.inf])))
        a = io.BytesIO()
        np.save(a, alpha.astype(meta["dtype"]))
        extra = {"alpha.npy": a.getvalue()}
        text = json.dumps(meta)
    else:
        with open(good, "rb") as f:
            raw = f.read()
        if how == "truncate":
            cut = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:cut]
        else:
            b = bytearray(raw)
            for _ in range(data.draw(st.integers(1, 8))):
                b[data.draw(st.integers(0, len(b) - 1))] ^= data.draw(st.integers(1, 255))
            raw = bytes(b)
        with open(bad, "wb") as f:
            f.write(raw)
        text = None
    if text is not None:
        _rewrite_meta(good, bad, text, extra)
    try:
        ck = mc.load(bad)
    except ValueError as exc:
        assert "bad.npz" in str(exc)
        return
    assert how in ("field", "bytes"), f"{how}: a corrupt file loaded"
    assert np.isfinite(ck.theta).all()
    if ck.alpha is not None:
        assert (ck.alpha >= 0).all()


def _early_stopping_run(path, state, ts, model):
    return mc.fit(mc.Objective(model, ts), state, steps=3, validation=ts, eval_every=1,
                  early_stopping=2, checkpoint=path, optimizer=mc.optim.Adam(lr=0.01),
                  progress=False)


@settings(max_examples=80, **SETTINGS)
@given(data=st.data())
def test_a_checkpoint_that_loads_resumes_whatever_its_record_and_moments_hold(
        tmp_path_factory, data):
    # the early-stopping record's fields and Adam's moments: what mc.load accepts, the resumed
    # fit runs (a damaged field used to load, then end the fit in a TypeError)
    tmp = tmp_path_factory.mktemp("ck")
    model, ts, theta = small()
    good = str(tmp / "good.npz")
    _early_stopping_run(good, theta, ts, model)
    with zipfile.ZipFile(good) as z:
        meta = json.loads(str(np.load(io.BytesIO(z.read("meta.npy")))))
        v = np.load(io.BytesIO(z.read("moment_v.npy")))
    assert meta["best"] is not None
    extra = None
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(["score", "step", "bad_evals", "extra", "missing"]))
        if key == "missing":
            meta["best"].pop(data.draw(st.sampled_from(sorted(meta["best"]))))
        else:
            meta["best"][key] = data.draw(WRONG_VALUES)
    else:
        v = v.copy()
        v[data.draw(st.integers(0, v.shape[0] - 1))] = data.draw(
            st.sampled_from([-1.0, -1e-300, 0.0, 1e300]))
        buf = io.BytesIO()
        np.save(buf, v)
        extra = {"moment_v.npy": buf.getvalue()}
    bad = str(tmp / "bad.npz")
    _rewrite_meta(good, bad, json.dumps(meta), extra)
    try:
        ck = mc.load(bad)
    except ValueError as exc:
        assert "bad.npz" in str(exc) or "corrupt" in str(exc)
        return
    try:
        _early_stopping_run(str(tmp / "again.npz"), ck, ts, model)
    except mc.FitDivergedError:       # a huge but valid moment may make the update overflow
        pass


# --- the CLI ----------------------------------------------------------------------------------------
TINY = """name = "tiny"
[tasks]
family = "sinusoid"
n_test = 3
test_k_query = 4
[model]
hidden = [3]
[learner]
kind = "maml"
[train]
steps = 2
meta_batch = 2
chunk = 2
[evaluate]
steps = [0, 1]
plot = false
baselines = []
"""

KEYS = ["train.steps", "train.meta_batch", "train.chunk", "train.checkpoint_every", "seed",
        "threads", "model.hidden", "learner.inner_steps", "learner.inner_lr", "tasks.n_test",
        "tasks.k_support", "tasks.k_query", "evaluate.steps", "optimizer.lr", "name", "dtype"]
CLI_VALUES = st.one_of(
    st.sampled_from(["9223372036854775808", "18446744073709551616", "-1", "0", "1e-50", "nan",
                     "inf", '".."', '"."', '"a/b"', '"a\\u0000b"', '"a\\nb"', "[9223372036854775808]",
                     "[4611686018427387904]", "[]", "true", '"x"', "{}", "99999999999", "1e400",
                     "4611686018427387904"]),
    st.integers(-2**70, 2**70).map(str))


def run_cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, err.getvalue()


@settings(max_examples=60, **SETTINGS)
@given(key=st.sampled_from(KEYS), value=CLI_VALUES)
def test_cli_bad_settings_exit_2_with_one_line(tmp_path_factory, monkeypatch, key, value):
    tmp = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(tmp)
    (tmp / "c.toml").write_text(TINY)
    if key in ("train.steps", "train.checkpoint_every", "learner.inner_steps") and \
            value.lstrip("-").isdigit() and 3 <= int(value) < 2**63:
        value = str(int(value) + 2**63)     # valid but long runs are not what is tested here
    if key in ("tasks.n_test", "tasks.k_support", "tasks.k_query", "model.hidden") and \
            value.lstrip("-").isdigit() and 1 <= int(value):
        value = str(max(int(value), 10**15))
    rc, err = run_cli(["train", "c.toml", "--quiet", "--set", f"{key}={value}"])
    assert rc in (0, 1, 2), (rc, err)
    if rc:
        assert err.startswith("metacore: ") and err.count("\n") == 1, err
        assert rc == 2 or "training failed" in err
    for dirpath, _, files in os.walk(tmp):           # nothing written outside the output folder
        rel = os.path.relpath(dirpath, tmp)
        assert rel == "." or rel.startswith("runs"), rel
    assert os.listdir(tmp) in (["c.toml"], sorted(["c.toml", "runs"]), ["runs", "c.toml"])


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_cli_evaluate_on_damaged_checkpoints_exits_2(tmp_path_factory, monkeypatch, data):
    tmp = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(tmp)
    (tmp / "c.toml").write_text(TINY)
    if not (tmp / "out" / "checkpoint.npz").exists():
        assert run_cli(["train", "c.toml", "--quiet", "--output", "out"])[0] == 0
    raw = (tmp / "out" / "checkpoint.npz").read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    (tmp / "bad.npz").write_bytes(raw[:cut])
    with_config = data.draw(st.booleans())
    argv = ["evaluate"] + (["c.toml"] if with_config else []) + [
        "--checkpoint", "bad.npz", "--quiet", "--output", "ev"]
    rc, err = run_cli(argv)
    assert rc == 2 and err.startswith("metacore: error: ") and err.count("\n") == 1, (rc, err)
