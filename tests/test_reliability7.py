"""Reliability, round two (issue 12), checked from outside with inputs of the issue's kinds that
the earlier rounds' tests do not use. Each section is one fault the outside check found:

1. N-way episode sources: a meta-batch or sample size of episodes is checked for overflow and
   against memory before anything of that size is allocated (was: ``vector::_M_default_append``,
   ``std::bad_alloc``, "negative dimensions are not allowed", or 16 GiB allocated first);
   ``sinusoid_params``/``linear_family_params`` name ``n_tasks`` likewise;
2. Ctrl-C: drawing episodes, one sinusoid task of very many rows, and ``metacore demo`` (whose
   learners train in worker threads) stop within half a second;
3. ``mc.load`` and ``metacore train --resume``: a damaged .npy header or zip entry header is a
   ValueError / exit 2, never tokenize.TokenError, SyntaxError or NotImplementedError;
4. ``mc.fit(steps=...)`` near 2^63: the dead-schedule probe computed steps in float64 and
   refused ``steps=2**63 - 1`` with "step must be >= 0, got -9223372036854775808".
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacore as mc
from metacore.app import cli

from interrupts import interrupt_lag

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))
FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def episode_source(n_classes=6, per_class=10, d=3, n_way=3, k_shot=2, q_query=2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_classes * per_class, d))
    return mc.tasks.EpisodeSource(X, np.arange(n_classes + 1) * per_class, n_way=n_way,
                                  k_shot=k_shot, q_query=q_query)


# --- 1. sizes of generated episodes --------------------------------------------------------------

@FAST
@given(n=st.integers(2**33, 2**63 - 1))
def test_episode_sample_sizes_past_memory_or_int64_name_n_tasks(n):
    with pytest.raises((MemoryError, ValueError), match="n_tasks"):
        episode_source().sample(n)


@FAST
@given(meta_batch=st.integers(2**33, 2**63 - 1), learner=st.sampled_from(["protonet", "maml"]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_an_episode_meta_batch_past_memory_names_meta_batch_before_allocating(meta_batch, learner,
                                                                             dtype):
    if learner == "protonet":
        model = mc.MLP([3, 4])
        lrn = mc.ProtoNet(model)
    else:
        model = mc.MLP([3, 4, 3], loss="cross_entropy")
        lrn = mc.MAML(model)
    problem = mc.MetaObjective(lrn, episode_source(), meta_batch=meta_batch)
    t0 = time.perf_counter()
    with pytest.raises((MemoryError, ValueError), match="meta_batch"):
        mc.fit(problem, model.init(seed=0, dtype=dtype), steps=1, progress=False)
    assert time.perf_counter() - t0 < 5.0    # refused up front, nothing of its size allocated


def test_a_fitting_episode_meta_batch_still_trains():
    model = mc.MLP([3, 4])
    problem = mc.MetaObjective(mc.ProtoNet(model), episode_source(), meta_batch=3)
    res = mc.fit(problem, model.init(seed=0), steps=3, progress=False)
    assert res.step == 3 and np.all(np.isfinite(res.theta))
    ts = episode_source().sample(4, seed=1)
    assert ts.n_tasks == 4 and ts.X.shape == (4 * 3 * 4, 3)


@FAST
@given(n=st.integers(2**33, 2**63 - 1), which=st.sampled_from(["sinusoid", "linear"]))
def test_task_parameter_helpers_name_n_tasks_past_memory(n, which):
    with pytest.raises(MemoryError, match="n_tasks"):
        if which == "sinusoid":
            mc.tasks.sinusoid_params(n)
        else:
            mc.tasks.linear_family_params(n, n_features=3)


# --- 2. Ctrl-C -----------------------------------------------------------------------------------

def test_ctrl_c_stops_drawing_many_episodes():
    lag = interrupt_lag("""
        X = np.random.default_rng(0).normal(size=(60, 3))
        src = mc.tasks.EpisodeSource(X, np.arange(7) * 10, n_way=3, k_shot=2, q_query=2)
    """, "src.sample(2**24)", delay=0.3)
    assert lag < 0.5


def test_ctrl_c_stops_one_sinusoid_task_of_very_many_rows():
    # one task: the old check ran between tasks only, never inside this one
    lag = interrupt_lag("src = mc.tasks.SinusoidSource(k_support=2**26)", "src.sample(1)",
                        delay=0.3)
    assert lag < 0.5


def test_ctrl_c_stops_the_demo_whose_learners_train_in_worker_threads(tmp_path):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    p = subprocess.Popen([sys.executable, "-m", "metacore", "demo", "--steps", str(10**12),
                          "--test-tasks", "2", "--output", str(tmp_path / "demo")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()

    def read():
        while chunk := p.stderr.read1(4096):
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while b"meta-train" not in seen:     # the shared progress bar: training has begun
            assert p.poll() is None and time.monotonic() < deadline, bytes(seen).decode()
            time.sleep(0.05)
        time.sleep(1.0)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
        lag = time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()
    reader.join(5)
    p.stderr.close()
    assert p.returncode == 130, bytes(seen).decode()[-2000:]
    assert lag < 3.0, f"the demo took {lag:.1f} s to stop after Ctrl-C"
    assert not (tmp_path / "demo").exists()     # its folder is made with its results, not before


# --- 3. damaged checkpoint files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    model = mc.MLP([2, 3, 1])
    ts = mc.tasks.linear_family(3, n_features=2, n_rows=8, seed=0)
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0), steps=2, progress=False)
    path = tmp_path_factory.mktemp("ck") / "ck.npz"
    mc.save(path, res)
    return path.read_bytes()


def rezip(good, entry, pos, byte):
    """The checkpoint with one byte of one entry replaced and every CRC correct (so only the
    .npy parser can notice)."""
    src = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as w:
        for name in src.namelist():
            data = bytearray(src.read(name))
            if name == entry:
                data[min(pos, len(data) - 1)] = byte
            w.writestr(name, bytes(data))
    return out.getvalue()


HEADER_BYTES = st.sampled_from(list(b"(){}[]'\":,-e \n\\x"))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.sampled_from(["meta.npy", "theta.npy", "moment_m.npy", "moment_v.npy",
                              "alpha.npy"]),
       pos=st.integers(10, 90), byte=HEADER_BYTES)
def test_a_mangled_npy_header_is_a_value_error(checkpoint_bytes, tmp_path, entry, pos, byte):
    path = tmp_path / "bad.npz"
    path.write_bytes(rezip(checkpoint_bytes, entry, pos, byte))
    try:
        ck = mc.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:       # a byte the header parser reads the same way (a space, a digit of a number)
        assert ck.theta.shape == (13,)


@FAST
@given(entry=st.integers(0, 4), field=st.sampled_from([8, 10]), bit=st.integers(0, 15))
def test_damaged_zip_entry_flags_are_a_value_error(checkpoint_bytes, tmp_path, entry, field, bit):
    # a central-directory record: bytes 8-9 are the general-purpose flags (bit 0 "encrypted":
    # RuntimeError; bit 5 "patched data": NotImplementedError), 10-11 the compression method
    b = bytearray(checkpoint_bytes)
    records = [i for i in range(len(b) - 4) if b[i:i + 4] == b"PK\x01\x02"]
    at = records[entry % len(records)] + field + bit // 8
    b[at] ^= 1 << (bit % 8)
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(b))
    try:
        mc.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)


def test_the_cli_answers_a_mangled_header_with_exit_2_and_one_line(checkpoint_bytes, tmp_path,
                                                                 capsys):
    path = tmp_path / "bad.npz"
    path.write_bytes(rezip(checkpoint_bytes, "meta.npy", 60, ord("(")))   # unbalanced bracket
    with pytest.raises(ValueError):
        mc.load(path)
    assert cli.main(["evaluate", "--checkpoint", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0], err


def test_resume_with_a_damaged_history_file_still_resumes(tmp_path, capsys):
    cfg = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "sinusoid_maml.toml")
    out = tmp_path / "run"
    tiny = ["--set", "tasks.n_test=3", "--set", "evaluate.baselines=[]", "--set",
            "evaluate.steps=[0,1]", "--set", "evaluate.plot=false", "--quiet", "--output",
            str(out)]
    assert cli.main(["train", cfg, "--set", "train.steps=2", *tiny]) == 0
    history = out / "history.npz"
    names = zipfile.ZipFile(history).namelist()
    history.write_bytes(rezip(history.read_bytes(), names[0], 20, ord("(")))   # TokenError
    assert cli.main(["train", cfg, "--set", "train.steps=4", "--resume", *tiny]) == 0, \
        capsys.readouterr().err
    assert mc.load(out / "checkpoint.npz").step == 4


# --- 4. steps near 2^63 ---------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(steps=st.integers(2**53, 2**63 - 1),
       schedule=st.sampled_from([None, "linear", "cosine", "step"]))
def test_fit_takes_any_int64_step_count(steps, schedule):
    model = mc.MLP([2, 1])
    ts = mc.tasks.linear_family(2, n_features=2, n_rows=6, seed=0)
    sched = {None: None, "linear": mc.optim.linear(2**63 - 1), "cosine": mc.optim.cosine(2**62),
             "step": mc.optim.step(2**62, 0.5)}[schedule]
    opt = mc.optim.SGD(0.01, schedule=sched) if sched is not None else mc.optim.SGD(0.01)
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0), steps=steps, optimizer=opt,
                 eval_every=3, chunk_size=3, callbacks=(lambda event: True,), progress=False)
    assert res.step == 3 and res.stop_reason == "callback"


# --- 5. command-line numbers are named as given ---------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(threads=st.integers(2**31, 2**70), command=st.sampled_from(["demo", "train", "bench"]))
def test_a_thread_count_past_an_int_names_threads_as_given(threads, command, tmp_path_factory):
    cfg = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "sinusoid_maml.toml")
    out = str(tmp_path_factory.mktemp("t"))
    argv = {"demo": ["demo", "--steps", "1", "--output", out],
            "train": ["train", cfg, "--output", out],
            "bench": ["bench", "--quick"]}[command]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main([*argv, "--threads", str(threads), "--quiet"]) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "--threads" in lines[0] and str(threads) in lines[0], lines


@settings(max_examples=20, deadline=None)
@given(threads=st.integers(2**31, 2**63 - 1))
def test_a_config_thread_count_past_an_int_names_the_key(threads, tmp_path_factory):
    cfg = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "sinusoid_maml.toml")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["train", cfg, "--set", f"threads={threads}", "--quiet", "--output",
                         str(tmp_path_factory.mktemp("t"))]) == 2
    line = err.getvalue().strip()
    assert "threads must be" in line and str(threads) in line and "n_threads" not in line, line


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(2**64 - 54321, 2**64 - 1))
def test_a_demo_seed_too_large_for_its_derived_seeds_names_seed_as_given(seed, tmp_path_factory):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["demo", "--steps", "1", "--seed", str(seed), "--quiet", "--output",
                         str(tmp_path_factory.mktemp("d"))]) == 2
    line = err.getvalue().strip()
    assert "--seed" in line and str(seed) in line, line



# --- 6. the scikit-learn meta-estimators' episode pools -------------------------------------------

@FAST
@given(meta_batch=st.integers(2**32, 2**63 - 1), resample_every=st.integers(1, 2**62),
       learner=st.sampled_from(["maml", "protonet", "reptile", "imaml"]),
       classifier=st.booleans())
def test_an_episode_pool_past_memory_names_meta_batch(meta_batch, resample_every, learner,
                                                      classifier):
    from metacore.sklearn import MetaMLPClassifier, MetaMLPRegressor
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    groups = np.repeat(np.arange(6), 10)
    if classifier:
        est, y = MetaMLPClassifier, (X[:, 0] > 0).astype(int)
    else:
        if learner == "protonet":
            learner = "maml"
        est, y = MetaMLPRegressor, X @ np.array([1.0, 2.0, 3.0])
    kw = {"n_way": 2, "k_shot": 2} if learner == "protonet" else {}
    model = est((4,), learner=learner, meta_batch=meta_batch, resample_every=resample_every,
                max_iter=2, **kw)
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match="meta_batch"):
        model.fit(X, y, groups=groups)
    assert time.perf_counter() - t0 < 5.0


# --- 7. CSV task ids past int64 -------------------------------------------------------------------

@FAST
@given(ids=st.lists(st.integers(-2**80, 2**80), min_size=2, max_size=5, unique=True)
       .filter(lambda v: any(not -2**63 <= i < 2**63 for i in v)),
       frame=st.booleans())
def test_integer_task_ids_past_int64_are_kept_as_written_in_numeric_order(ids, frame, tmp_path):
    rows = [(i, float(k), float(k % 2)) for i in ids for k in range(2)]
    if frame:
        table = {"t": np.array([r[0] for r in rows], dtype=object),
                 "x": np.array([r[1] for r in rows]), "y": np.array([r[2] for r in rows])}
        ts = mc.tasks.from_dataframe(table, task="t", target="y")
    else:
        path = tmp_path / "ids.csv"
        path.write_text("t,x,y\n" + "".join(f"{i},{x},{y}\n" for i, x, y in rows))
        ts = mc.tasks.from_csv(path, task="t", target="y")
    assert list(ts.names) == [str(i) for i in sorted(ids)]
    for name in ts.names:              # each task holds exactly its own rows
        X, _ = ts[list(ts.names).index(name)]
        assert sorted(X.ravel().tolist()) == [0.0, 1.0]


# --- 8. no L2 penalty means no penalty, whatever |θ| is -------------------------------------------

@FAST
@given(c=st.floats(1.4e154, 1.7e308), fit=st.booleans())
def test_the_objective_at_l2_0_ignores_a_norm_that_overflows(c, fit):
    # logits [c, c] for both rows: the loss is ln 2 exactly (an oracle independent of the core
    # and the reference); 0 × ‖θ‖² used to make it NaN once ‖θ‖² overflowed
    model = mc.Softmax(1, 2)
    theta = np.array([0.0, 0.0, c, c])
    ts = mc.TaskSet.from_arrays([np.ones((2, 1))], [np.array([0.0, 1.0])], n_support=1)
    obj = mc.Objective(model, ts)
    if fit:
        res = mc.fit(obj, theta, steps=2, optimizer=mc.optim.SGD(0.1), progress=False)
        values = list(res.history.objective)
    else:
        values = [obj.value(theta), obj.value_and_grad(theta)[0]]
    values.append(mc.reference.objective_value_and_grad(model, ts, theta)[0])
    assert all(v == pytest.approx(np.log(2.0), rel=1e-12) for v in values), values
