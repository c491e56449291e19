"""Issue 12, round 8: errors name what the user gave, and Ctrl-C stops the task families.

1. The scikit-learn estimators name their own hyper-parameters (``learning_rate_init``,
   ``alpha``, ``outer_lr``, ...) in every error raised while fit passes them down to metacore
   under other names (Adam's ``lr``, Objective's ``l2``, ...).
2. ``metacore train`` names the config key (``model.hidden``, ...) of a value a library call
   refused under its own argument name (MLP's ``layer_sizes``).
3. The task families draw in bounded pieces: Ctrl-C stops ``mc.tasks.sinusoid`` of very many
   rows promptly, and the pieces give exactly the numbers of one unchunked draw.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.data import tasks as tasks_module
from metacore.sklearn import (DataScaleWarning, MetaMLPClassifier, MetaMLPRegressor,
                              MultiTaskMLPClassifier, MultiTaskMLPRegressor)

from interrupts import interrupt_lag

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))
FAST = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def _word(name, text):
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) is not None


# --- 1. scikit-learn estimators name their own hyper-parameters --------------------------------

def _data(classifier):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 2))
    y = (X[:, 0] > 0).astype(int) if classifier else X[:, 0]
    return X, y, np.repeat([0, 1, 2], 8)


ESTIMATORS = [MultiTaskMLPRegressor, MultiTaskMLPClassifier, MetaMLPRegressor,
              MetaMLPClassifier]
# a positive rate that is zero or subnormal in the working dtype
TINY_RATE = {"float32": st.floats(1e-320, 1e-39), "float64": st.floats(1e-323, 1e-309)}


def _fit_error(est):
    X, y, g = _data(est._loss != "mse")
    with pytest.raises((ValueError, TypeError, MemoryError, OverflowError)) as info:
        est.fit(X, y, groups=g)
    return str(info.value)


@FAST
@given(cls=st.sampled_from(ESTIMATORS), dtype=st.sampled_from(["float32", "float64"]),
       data=st.data())
def test_a_learning_rate_zero_in_the_dtype_is_named_learning_rate_init(cls, dtype, data):
    lr = data.draw(TINY_RATE[dtype])
    msg = _fit_error(cls(hidden_layer_sizes=(3,), learning_rate_init=lr, max_iter=1,
                         dtype=dtype, random_state=0))
    assert _word("learning_rate_init", msg), msg
    assert not _word("lr", msg), msg


@FAST
@given(cls=st.sampled_from([MultiTaskMLPRegressor, MultiTaskMLPClassifier]),
       alpha=st.floats(3.5e38, 1e308))
def test_an_l2_penalty_beyond_the_dtype_is_named_alpha(cls, alpha):
    msg = _fit_error(cls(hidden_layer_sizes=(3,), alpha=alpha, max_iter=1, dtype="float32",
                         random_state=0))
    assert _word("alpha", msg), msg
    assert not _word("l2", msg), msg


@FAST
@given(cls=st.sampled_from([MetaMLPRegressor, MetaMLPClassifier]),
       outer_lr=st.floats(1e-320, 1e-39))
def test_reptiles_outer_step_is_named_outer_lr_not_lr(cls, outer_lr):
    # Reptile's outer step is its SGD optimizer's lr: the error names outer_lr
    msg = _fit_error(cls(hidden_layer_sizes=(3,), learner="reptile", outer_lr=outer_lr,
                         max_iter=1, dtype="float32", random_state=0))
    assert _word("outer_lr", msg), msg
    assert not _word("lr", msg) and not _word("learning_rate_init", msg), msg


@FAST
@given(cls=st.sampled_from(ESTIMATORS), width=st.integers(2**40, 2**63 - 1))
def test_a_hidden_width_beyond_memory_is_named_hidden_layer_sizes(cls, width):
    msg = _fit_error(cls(hidden_layer_sizes=(width,), max_iter=1, random_state=0))
    assert _word("hidden_layer_sizes", msg), msg
    assert not _word("layer_sizes", msg), msg


def test_renaming_keeps_the_exception_its_type_and_other_words():
    exc = mc._validation.rename_in(ValueError("lr=1e-320 is zero; steps are 3; steps=2"),
                                   {"lr": "learning_rate_init", "steps": "max_iter"},
                                   strict=("steps",))
    assert type(exc) is ValueError
    assert str(exc) == "learning_rate_init=1e-320 is zero; steps are 3; max_iter=2"


# --- 2. the CLI names the config key --------------------------------------------------------------

TINY = """
name = "tiny"
[tasks]
family = "sinusoid"
n_test = 4
n_train = 8
[model]
hidden = {hidden}
[learner]
kind = "{kind}"
[train]
steps = 2
meta_batch = 2
[evaluate]
steps = [0]
baselines = []
plot = false
"""


def _cli(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    return subprocess.run([sys.executable, "-m", "metacore", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_names_key(r, key, argument):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    assert key in lines[0] and not _word(argument, lines[0]), lines[0]


@pytest.mark.parametrize("kind", ["maml", "multitask", "reptile"])
@pytest.mark.parametrize("width", [2**62, 2**63 - 1])
def test_a_hidden_width_beyond_memory_names_model_hidden(tmp_path, kind, width):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.format(hidden="[8]", kind=kind))
    r = _cli(tmp_path, "train", str(cfg), "--quiet", "--output", "o", "--set",
             f"model.hidden=[{width}]")
    _assert_names_key(r, "model.hidden", "layer_sizes")
    cfg.write_text(TINY.format(hidden=f"[4, {width}]", kind=kind))       # the same in a file
    r = _cli(tmp_path, "train", str(cfg), "--quiet", "--output", "o")
    _assert_names_key(r, "model.hidden", "layer_sizes")


@pytest.mark.parametrize("setting, key, argument", [
    ("learner.inner_steps=4611686018427387904", "learner.inner_steps", "inner_steps"),
    ("model.hidden=[3037000500,3037000500]", "model.hidden", "layer_sizes"),
])
def test_sizes_refused_while_training_name_their_config_keys(tmp_path, setting, key, argument):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.format(hidden="[8]", kind="maml"))
    r = _cli(tmp_path, "train", str(cfg), "--quiet", "--output", "o", "--set", setting)
    _assert_names_key(r, key, argument)


# --- 3. task families: Ctrl-C between bounded pieces, the same numbers --------------------------

def _old_sinusoid(n_tasks, k_support, k_query, amplitude, phase, x_range, seed):
    """The unchunked draw the family made before it drew in pieces (float64 X, y)."""
    rng = np.random.default_rng(seed)
    n = k_support + k_query
    A = rng.uniform(amplitude[0], amplitude[1], size=n_tasks)
    phi = rng.uniform(phase[0], phase[1], size=n_tasks)
    x = rng.uniform(x_range[0], x_range[1], size=(n_tasks, n))
    return x.reshape(-1, 1), (A[:, None] * np.sin(x - phi[:, None])).reshape(-1)


def _old_family(n_tasks, n_features, n_rows, relatedness_noise, seed):
    rng = np.random.default_rng(seed)
    theta_star = rng.normal(size=n_features)
    thetas = theta_star + relatedness_noise * rng.normal(size=(n_tasks, n_features))
    if isinstance(n_rows, int):
        sizes = np.full(n_tasks, n_rows, dtype=np.int64)
    else:
        sizes = rng.integers(n_rows[0], n_rows[1], size=n_tasks, endpoint=True).astype(np.int64)
    X = rng.normal(size=(int(sizes.sum()), n_features))
    z = np.einsum("nd,nd->n", X, np.repeat(thetas, sizes, axis=0))
    return rng, X, z, sizes


@FAST
@given(chunk=st.integers(1, 40), n_tasks=st.integers(1, 6), k_support=st.integers(0, 30),
       k_query=st.integers(1, 30), seed=st.integers(0, 2**32), f32=st.booleans())
def test_sinusoid_drawn_in_pieces_equals_one_draw(monkeypatch, chunk, n_tasks, k_support,
                                                   k_query, seed, f32):
    monkeypatch.setattr(tasks_module, "CHUNK", chunk)     # many pieces on small sizes
    dt = np.float32 if f32 else np.float64
    ts = mc.tasks.sinusoid(n_tasks, k_support=k_support, k_query=k_query, seed=seed, dtype=dt)
    X, y = _old_sinusoid(n_tasks, k_support, k_query, (0.1, 5.0), (0.0, np.pi), (-5.0, 5.0),
                         seed)
    np.testing.assert_array_equal(ts.X, X.astype(dt))
    np.testing.assert_array_equal(ts.y, y.astype(dt))
    assert ts.X.dtype == dt and (ts.n_support == k_support).all()
    assert (ts.offsets == np.arange(n_tasks + 1) * (k_support + k_query)).all()


@FAST
@given(chunk=st.integers(1, 40), n_tasks=st.integers(1, 5), n_features=st.integers(1, 7),
       n_rows=st.one_of(st.integers(1, 12), st.tuples(st.integers(1, 5), st.integers(5, 12))),
       noise=st.floats(0, 2), rel=st.floats(0, 2), seed=st.integers(0, 2**32),
       logistic=st.booleans(), f32=st.booleans())
def test_linear_and_logistic_families_drawn_in_pieces_equal_one_draw(
        monkeypatch, chunk, n_tasks, n_features, n_rows, noise, rel, seed, logistic, f32):
    monkeypatch.setattr(tasks_module, "CHUNK", chunk)
    dt = np.float32 if f32 else np.float64
    rng, X, z, sizes = _old_family(n_tasks, n_features, n_rows, rel, seed)
    if logistic:
        ts = mc.tasks.logistic_family(n_tasks, n_features=n_features, n_rows=n_rows,
                                      relatedness_noise=rel, seed=seed, dtype=dt, n_support=1)
        p = np.exp(-np.logaddexp(0.0, -z))
        y = (rng.random(z.shape[0]) < p).astype(np.float64)
    else:
        ts = mc.tasks.linear_family(n_tasks, n_features=n_features, n_rows=n_rows,
                                    relatedness_noise=rel, noise=noise, seed=seed, dtype=dt,
                                    n_support=1)
        y = z + noise * rng.normal(size=z.shape[0])
    np.testing.assert_array_equal(ts.X, X.astype(dt))
    np.testing.assert_array_equal(ts.y, y.astype(dt))
    np.testing.assert_array_equal(ts.task_sizes, sizes)
    assert (ts.n_support == 1).all()
    star, thetas = mc.tasks.linear_family_params(n_tasks, n_features=n_features,
                                                 relatedness_noise=rel, seed=seed)
    r = np.random.default_rng(seed)
    np.testing.assert_array_equal(star, r.normal(size=n_features))
    np.testing.assert_array_equal(thetas, star + rel * r.normal(size=(n_tasks, n_features)))


def _old_digits(n_tasks, n_way, k_shot, q_query, rotations, seed):
    """The unchunked draw mc.tasks.digits made before it drew in pieces (float64 X, y)."""
    from metacore.data.digits import digit_images
    rng = np.random.default_rng(seed)
    pool = mc.tasks.digits_classes("train", rotations=rotations)
    images, labels = digit_images()
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    per_class = k_shot + q_query
    chosen = pool[np.argsort(rng.random((n_tasks, len(pool))), axis=1)[:, :n_way]]
    digit, rot = (chosen // 4, chosen % 4) if rotations else (chosen, np.zeros_like(chosen))
    imgs = np.empty((n_tasks, n_way, per_class, 8, 8))
    for d in np.unique(digit):
        where = np.nonzero(digit == d)
        keys = rng.random((len(where[0]), len(by_digit[d])))
        imgs[where] = images[by_digit[d][np.argpartition(keys, per_class - 1,
                                                         axis=1)[:, :per_class]]]
    for r in range(1, 4):
        where = np.nonzero(rot == r)
        imgs[where] = np.rot90(imgs[where], k=r, axes=(2, 3))
    imgs = imgs.reshape(n_tasks, n_way, per_class, 64)
    lab = np.broadcast_to(np.arange(n_way, dtype=np.float64)[None, :, None],
                          (n_tasks, n_way, per_class))
    X = np.concatenate([imgs[:, :, :k_shot].reshape(n_tasks, -1, 64),
                        imgs[:, :, k_shot:].reshape(n_tasks, -1, 64)], axis=1)
    y = np.concatenate([lab[:, :, :k_shot].reshape(n_tasks, -1),
                        lab[:, :, k_shot:].reshape(n_tasks, -1)], axis=1)
    return X.reshape(-1, 64), y.reshape(-1)


@FAST
@given(chunk=st.integers(1, 3000), n_tasks=st.integers(1, 6), n_way=st.integers(2, 6),
       k_shot=st.integers(1, 3), q_query=st.integers(0, 3), rotations=st.booleans(),
       seed=st.integers(0, 2**32), f32=st.booleans())
def test_digits_drawn_in_pieces_equal_one_draw(monkeypatch, chunk, n_tasks, n_way, k_shot,
                                               q_query, rotations, seed, f32):
    from metacore.data import digits as digits_module
    monkeypatch.setattr(digits_module, "CHUNK", chunk)
    dt = np.float32 if f32 else np.float64
    ts = mc.tasks.digits(n_tasks, n_way=n_way, k_shot=k_shot, q_query=q_query,
                         rotations=rotations, seed=seed, dtype=dt)
    X, y = _old_digits(n_tasks, n_way, k_shot, q_query, rotations, seed)
    np.testing.assert_array_equal(ts.X, X.astype(dt))
    np.testing.assert_array_equal(ts.y, y.astype(dt))
    assert ts.X.dtype == ts.y.dtype == dt and (ts.n_support == n_way * k_shot).all()
    assert (ts.task_ids == np.arange(n_tasks)).all()


def test_a_value_beyond_float32_is_still_named_by_the_taskset():
    with pytest.raises(ValueError, match=r"^y has .* exceeds float32's range"):
        mc.tasks.sinusoid(2, amplitude=(1e39, 2e39), dtype=np.float32)


@pytest.mark.parametrize("call", [
    # one task of 2^26 rows: NumPy's single calls over it took up to 1.7 s to return before
    "mc.tasks.sinusoid(1, k_support=2**26, k_query=0)",
    "mc.tasks.linear_family(1, n_features=8, n_rows=2**24)",
    "mc.tasks.logistic_family(1, n_features=8, n_rows=2**24, dtype=np.float32)",
    # 2^14 episodes, 1.3 s on a quiet machine: 2^13 took about the 1 s delay this test once
    # used, and sometimes finished before the signal
    "mc.tasks.digits(2**14, n_way=5, k_shot=5, q_query=15, dtype=np.float32)",
])
def test_ctrl_c_stops_a_task_family_of_very_many_rows(call):
    # every call takes 1.3-2.4 s on a quiet machine: the signal comes well inside it
    lag = interrupt_lag("", call, delay=0.3)
    assert lag < 0.5


# --- 3b. TaskSet's own checks, conversion and copy run in pieces ----------------------------------

@FAST
@given(piece=st.integers(1, 50), rows=st.integers(1, 30), cols=st.integers(1, 4),
       src=st.sampled_from(["<f8", ">f8", "<f4", "<i8", ">i4", "|b1", "<u2"]),
       dst=st.sampled_from([np.float32, np.float64]), transpose=st.booleans(),
       bad=st.one_of(st.none(), st.sampled_from([np.nan, np.inf, -np.inf, 1e39])),
       seed=st.integers(0, 2**32))
def test_float_array_in_pieces_equals_one_conversion(monkeypatch, piece, rows, cols, src, dst,
                                                     transpose, bad, seed):
    monkeypatch.setattr(mc._validation, "PIECE", piece)
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=(rows, cols)) * 100).astype(src)
    a = a.T if transpose else a
    if bad is not None and a.dtype.itemsize == 8 and a.dtype.kind == "f":
        a = a.copy()
        a[tuple(int(rng.integers(0, n)) for n in a.shape)] = bad
        with np.errstate(over="ignore"):
            refused = not np.isfinite(np.asarray(bad, dtype=dst))     # 1e39 fits float64 only
        if refused:
            with pytest.raises(ValueError, match="^X (must be finite|has .* exceeds)"):
                mc._validation.float_array("X", a, dtype=dst)
            return
    out = mc._validation.float_array("X", a, dtype=dst)
    with np.errstate(over="ignore"):
        want = np.ascontiguousarray(a, dtype=dst)
    np.testing.assert_array_equal(out, want)
    assert out.dtype == np.dtype(dst) and out.flags.c_contiguous
    copy = mc._validation.copy_in_pieces(want)
    np.testing.assert_array_equal(copy, want)
    assert copy.flags.c_contiguous and not np.shares_memory(copy, want)


def test_a_non_finite_entry_in_a_late_piece_is_named_with_its_index(monkeypatch):
    monkeypatch.setattr(mc._validation, "PIECE", 4)
    X = np.ones((10, 3))
    X[8, 1] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, found nan at index \(8, 1\)"):
        mc.TaskSet(X, np.zeros(10), [0, 10])


@pytest.mark.parametrize("dtype", ["np.float32", "np.float64"])
def test_ctrl_c_stops_a_taskset_of_very_many_rows(dtype):
    # 2^26 × 2 float64 (1 GiB): its finite check, cast and private copy were single NumPy calls.
    # The call takes 0.13–1.9 s on a 2-core AMD EPYC (fast when the allocator reuses pages it
    # already faulted in), so the SIGINT comes early, at 0.05 s, to land inside it.
    lag = interrupt_lag("X = np.random.default_rng(0).normal(size=(2**26, 2)); y = X[:, 0].copy()",
                        f"mc.TaskSet(X, y, [0, 2**26], dtype={dtype})", delay=0.05)
    assert lag < 0.5


def test_a_divergence_during_fit_advises_the_estimators_learning_rate():
    # a huge outer rate blows θ up: FitDivergedError, its "(lr …)" read as learning_rate_init
    X, y, g = _data(False)
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(3,), learning_rate_init=1e30, max_iter=50,
                                dtype="float32", random_state=0)
    with pytest.raises(mc.FitDivergedError) as info, \
            pytest.warns(DataScaleWarning, match="target is far from unit scale"):
        est.fit(X, y * 1e30, groups=g)
    assert not _word("lr", str(info.value)), str(info.value)
