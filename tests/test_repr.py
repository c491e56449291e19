"""Short reprs and to_dataframe() of FitResult (and its History) and TaskSet, checked against the
arrays they come from."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def multitask():
    model = mc.MLP([1, 6, 1], activation="tanh", loss="mse")
    ts = mc.tasks.sinusoid(3, k_support=6, k_query=6, seed=2)
    ts = ts.with_names(["north", "south", "east"])
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0), steps=25, eval_every=10,
                 validation=ts, progress=False, record_task_losses=True)
    return ts, res


@pytest.fixture(scope="module")
def meta():
    model = mc.MLP([1, 6, 1], activation="tanh", loss="mse")
    learner = mc.MAML(model, inner_lr=0.01)
    return mc.fit(mc.MetaObjective(learner, mc.tasks.SinusoidSource(), meta_batch=4),
                  model.init(seed=0), steps=12, eval_every=5, progress=False)


def _short(text, lines=2):
    assert text.count("\n") < lines and "array(" not in text and "..." not in text.split("(")[0]
    assert max(len(line) for line in text.splitlines()) < 200
    return text


# --- FitResult --------------------------------------------------------------------------------------
def test_fit_result_repr_is_short_and_says_what_happened(multitask, meta):
    _, res = multitask
    text = _short(repr(res))
    assert text.startswith(f"FitResult(multitask, 3 tasks, {res.theta.shape[0]} params, "
                           "25 steps to step 25, stop_reason='steps'")
    h = res.history
    assert f"train loss {h.train_loss[0]:.4g} -> {h.train_loss[-1]:.4g}" in text
    assert f"val loss {h.val_loss[-1]:.4g}" in text
    text = _short(repr(meta))
    assert text.startswith("FitResult(meta, ") and "12 steps to step 12" in text
    assert "nan" not in text      # meta-learning has no train loss before its first step
    _short(repr(res.history), lines=1)
    assert repr(res.history).startswith("History(25 steps, 4 evaluations, 3 tasks")


def test_fit_result_to_dataframe_per_step(multitask):
    ts, res = multitask
    h = res.history
    df = res.to_dataframe(task_names=ts.names)
    assert len(df) == 25
    np.testing.assert_array_equal(df["step"], h.step)
    for k in ("objective", "grad_norm", "lr"):
        np.testing.assert_array_equal(df[k], getattr(h, k))
    for j, name in enumerate(["north", "south", "east"]):
        np.testing.assert_array_equal(df[f"task_loss[{name}]"], h.step_task_losses[:, j])
        np.testing.assert_array_equal(df[f"weight[{name}]"], h.step_weights[:, j])
    # the objective is the α-weighted sum of the recorded task losses (a direct computation)
    np.testing.assert_allclose(
        df["objective"], (h.step_task_losses * h.step_weights).sum(axis=1), rtol=1e-10)
    assert "task_loss[0]" in res.to_dataframe().columns       # no names: 0..T−1


def test_fit_result_to_dataframe_per_evaluation(multitask, meta):
    ts, res = multitask
    h = res.history
    df = res.to_dataframe(kind="eval", task_names=ts.names)
    np.testing.assert_array_equal(df["step"], [0, 10, 20, 25])
    np.testing.assert_array_equal(df["step"], h.eval_step)
    for k in ("train_loss", "val_loss", "elapsed"):
        np.testing.assert_array_equal(df[k], getattr(h, k))
    for j, name in enumerate(ts.names):
        np.testing.assert_array_equal(df[f"task_loss[{name}]"], h.task_losses[:, j])
        np.testing.assert_array_equal(df[f"weight[{name}]"], h.weights[:, j])
        np.testing.assert_array_equal(df[f"val_task_loss[{j}]"], h.val_task_losses[:, j])
    # multi-task: the evaluation's train loss is Σ α_i f_i (no L2 here)
    np.testing.assert_allclose(df["train_loss"], (h.task_losses * h.weights).sum(axis=1),
                               rtol=1e-10)
    md = meta.to_dataframe(kind="eval")
    assert list(md.columns) == ["step", "train_loss", "val_loss", "elapsed"]
    np.testing.assert_array_equal(md["train_loss"], meta.history.train_loss)
    ms = meta.to_dataframe()
    np.testing.assert_array_equal(ms["support_loss"], meta.history.support_loss)
    np.testing.assert_array_equal(ms["objective"], meta.history.objective)


def test_fit_result_to_dataframe_refuses_bad_arguments(multitask):
    _, res = multitask
    with pytest.raises(ValueError, match="kind"):
        res.to_dataframe(kind="epoch")
    with pytest.raises(ValueError, match="task_names"):
        res.to_dataframe(task_names=["a", "b"])


# --- TaskSet ---------------------------------------------------------------------------------------
def _grouped(seed, n_tasks, d, k):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, size=n_tasks)
    labels = np.array([f"shop-{t:02d}" for t in range(n_tasks)])
    groups = np.repeat(labels, sizes)
    order = rng.permutation(groups.shape[0])          # rows of the tasks interleaved
    X = rng.normal(size=(groups.shape[0], d))
    y = rng.normal(size=(groups.shape[0],) if k == 1 else (groups.shape[0], k))
    return X[order], y[order], groups[order], sizes


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 6), st.integers(1, 4), st.sampled_from([1, 2]))
def test_taskset_to_dataframe_per_task_and_per_row(seed, n_tasks, d, k):
    X, y, groups, sizes = _grouped(seed, n_tasks, d, k)
    ts = mc.TaskSet.from_groups(X, y, groups, n_support=1)
    df = ts.to_dataframe()
    assert list(df.columns) == ["task", "task_id", "n_rows", "n_support", "n_query"]
    assert list(df["task"]) == [f"shop-{t:02d}" for t in range(n_tasks)]
    np.testing.assert_array_equal(df["n_rows"], sizes)           # counted from the input
    np.testing.assert_array_equal(df["n_support"], np.ones(n_tasks))
    np.testing.assert_array_equal(df["n_query"], sizes - 1)
    rows = ts.to_dataframe(rows=True)
    assert len(rows) == X.shape[0]
    for t, name in enumerate(ts.names):
        mine = rows[rows["task"] == name]
        original = groups == name                                 # the caller's rows of task t
        got = mine[[f"x{j}" for j in range(d)]].to_numpy()
        # the same rows (as a set: from_groups keeps each task's rows in file order)
        np.testing.assert_array_equal(got, X[original])
        want_y = y[original] if k == 1 else y[original]
        cols = ["y"] if k == 1 else [f"y{j}" for j in range(k)]
        np.testing.assert_array_equal(mine[cols].to_numpy().reshape(want_y.shape), want_y)
        assert list(mine["split"]) == ["support"] + ["query"] * (int(original.sum()) - 1)


def test_taskset_repr_is_short_and_names_its_tasks():
    X, y, groups, _ = _grouped(0, 5, 2, 1)
    ts = mc.TaskSet.from_groups(X, y, groups, n_support=2)
    text = _short(repr(ts), lines=1)
    assert "n_tasks=5" in text and f"n_rows={X.shape[0]}" in text
    assert "names=['shop-00', 'shop-01', 'shop-02', ...]" in text   # quoted: a comma stays inside
    assert "names=" not in repr(mc.tasks.sinusoid(3, k_support=2, k_query=2, seed=0))


def test_every_to_dataframe_without_pandas_names_the_install(multitask, monkeypatch):
    ts, res = multitask
    monkeypatch.setitem(sys.modules, "pandas", None)
    for call in (ts.to_dataframe, res.to_dataframe, res.history.to_dataframe):
        with pytest.raises(ImportError, match="pip install pandas"):
            call()
