"""Found by a review of the session's reliability work (issue 12): paths that name no file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.app import experiment

from test_reliability3 import nash_alpha, nash_oracle

SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_an_empty_path_is_refused_and_nothing_is_written_beside_the_current_folder(
        tmp_path, monkeypatch):
    """mc.save('') (also `metacore predict --output ''`) made its temporary file in the parent of
    the current folder, abspath('') being the current folder, then failed renaming it to '' with
    a message naming the temporary file."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(ValueError, match="empty path") as err:
        mc.save("", np.zeros(3))
    assert ".tmp" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["here"] and os.listdir(here) == []


@SETTINGS
@given(name=st.sampled_from(["new", "p.csv", "ck.npz"]), exists=st.booleans(),
       sep=st.sampled_from([s for s in (os.sep, os.altsep) if s]))
def test_a_path_ending_in_a_separator_is_named_as_a_folder(tmp_path, name, exists, sep):
    """'runs/new/' (missing or a file) made a temporary file beside it and failed with
    "Not a directory: '.../..x1y2.tmp' -> 'runs/new/'": now refused naming the path."""
    folder = tmp_path / f"d{int(exists)}{name}"
    folder.mkdir(exist_ok=True)
    target = folder / name
    if exists:
        target.write_bytes(b"keep")
    path = str(target) + sep
    with pytest.raises(IsADirectoryError) as err:
        mc.save(path, np.zeros(3))
    msg = str(err.value)
    assert msg.startswith(f"cannot write {path}:") and ".tmp" not in msg, msg
    assert os.listdir(folder) == ([name] if exists else [])
    if exists:
        assert target.read_bytes() == b"keep"


# --- mc.adapt's lr: a 0-d array is a scalar, booleans are no rates ------------------------------
MODEL = mc.MLP([1, 4, 1])
X_S = np.linspace(-1.0, 1.0, 5)[:, None]
Y_S = np.sin(X_S[:, 0])


@SETTINGS
@given(lr=st.floats(1e-4, 0.5), dtype=st.sampled_from([np.float32, np.float64]),
       as_dtype=st.sampled_from([np.float32, np.float64]))
def test_a_0d_array_lr_is_the_scalar_rate(lr, dtype, as_dtype):
    """np.array(0.01) was refused as 'lr must be 1-D, got shape ()' although lr may be a scalar:
    it adapts exactly as the same number does (as the reference's plain gradient steps do)."""
    theta = MODEL.init(seed=0, dtype=dtype)
    rate = as_dtype(lr)
    got = mc.adapt(MODEL, theta, X_S, Y_S, steps=2, lr=np.array(rate))
    np.testing.assert_array_equal(got, mc.adapt(MODEL, theta, X_S, Y_S, steps=2, lr=float(rate)))
    want = theta.astype(np.float64)
    ts = mc.TaskSet.from_arrays([X_S], [Y_S], n_support=5, dtype=np.float64)
    for _ in range(2):
        want = want - float(rate) * mc.reference.objective_value_and_grad(MODEL, ts, want)[1]
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype is np.float32 else 1e-10,
                               atol=1e-5 if dtype is np.float32 else 1e-12)


@pytest.mark.parametrize("lr", [True, np.True_, np.ones(MODEL.n_params, dtype=bool),
                                [True] * MODEL.n_params, np.ones((2, MODEL.n_params), dtype=bool)])
def test_boolean_rates_are_refused_naming_lr(lr):
    """A boolean array ran as rates of 1.0 and True was refused as 'lr must be 1-D': booleans
    are a TypeError naming lr, as for every other setting."""
    with pytest.raises(TypeError, match="^lr must"):
        mc.adapt(MODEL, MODEL.init(seed=0), X_S, Y_S, steps=1, lr=lr)


# --- Nash-MTL on rank-deficient Gram matrices (more tasks than gradient directions) -------------
@st.composite
def rank_deficient(draw):
    """T tasks whose gradients span only r < T directions (T > the shared parameters, or
    linearly dependent tasks): α must grow to about 1/√ridge along the null space of K."""
    T = draw(st.integers(8, 40))
    r = draw(st.integers(1, max(1, T // 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    G = rng.normal(size=(T, r)) @ rng.normal(size=(r, 60))
    return G * rng.choice([-1.0, 1.0], size=(T, 1)) if r == 1 else G


@settings(max_examples=10, deadline=None)
@given(G=rank_deficient())
def test_nash_mtl_reaches_the_solution_on_rank_deficient_tasks_within_the_default_max_iter(G):
    """With the damped step 1/(1+λ) alone, α grew by only about 1 + 1/√T per iteration where it
    must grow by 1e4: at the default max_iter = 50, 20 tasks of rank 5 were 65 % and 50 tasks of
    rank 10 98 % from the solution (some tasks then had g_i·d < 0; 40 linear-regression tasks
    after 300 steps of mc.fit: 96 %). Core and reference now agree with the SciPy oracle."""
    want = nash_oracle(G @ G.T)
    core, reference = nash_alpha(G)
    np.testing.assert_allclose(core, want, rtol=1e-6)
    np.testing.assert_allclose(reference, want, rtol=1e-6)


@pytest.mark.parametrize("output", ["", "newdir" + os.sep, "in.csv" + os.sep])
def test_predict_refuses_an_output_naming_no_file_before_any_work(tmp_path, output, capsys,
                                                                    monkeypatch):
    """`metacore predict --output ''` (or 'newdir/') ran the whole prediction, then failed in the
    write naming a temporary file: refused first, naming --output, exit code 2. (The checkpoint
    is not even read: a placeholder file stands for it.)"""
    from metacore.app import cli
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ck.npz").write_bytes(b"not read")
    (tmp_path / "in.csv").write_text("store,price\nnew,1\n")
    capsys.readouterr()
    try:
        rc = cli.main(["predict", "ck.npz", "--input", "in.csv", "--output", output, "--quiet"])
    except SystemExit as exc:       # argparse refuses '' itself, naming the option
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    if output:
        assert err.startswith(f"metacore: error: --output {output} is a folder"), err
    else:
        assert "argument --output: must not be empty" in err, err
        with pytest.raises(ValueError, match="^--output is empty"):     # the library call
            experiment.run_predict("ck.npz", "in.csv", "", quiet=True)
    assert sorted(os.listdir(tmp_path)) == ["ck.npz", "in.csv"]


@pytest.mark.parametrize("with_run", [True, False])
def test_loading_a_folder_says_it_is_a_folder(tmp_path, with_run):
    """mc.load('runs/x') (also `metacore predict runs/x`, `evaluate --checkpoint runs/x`) said
    only "[Errno 21] Is a directory: 'runs/x'": it now says so and names the run's checkpoint."""
    if with_run:
        mc.save(tmp_path / "checkpoint.npz", np.zeros(3))
    with pytest.raises(IsADirectoryError) as err:
        mc.load(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{str(tmp_path)!r} is a folder, not a checkpoint file"), msg
    assert ("checkpoint.npz" in msg) == with_run, msg


@pytest.mark.parametrize("checkpoint", ["", "newdir" + os.sep, "run.npz" + os.sep])
def test_fit_refuses_a_checkpoint_naming_no_file_before_training(tmp_path, monkeypatch,
                                                                 checkpoint):
    """fit(checkpoint='') or 'newdir/' trained, then failed at the first save: refused first."""
    monkeypatch.chdir(tmp_path)
    m = mc.MLP([2, 1])
    ts = mc.TaskSet.from_arrays([np.ones((3, 2)), np.zeros((3, 2))], [np.ones(3), np.zeros(3)])
    calls = []
    with pytest.raises(ValueError, match="^checkpoint(=| is an empty path)") as err:
        mc.fit(mc.Objective(m, ts), m.init(seed=0), steps=2, checkpoint=checkpoint,
               progress=False, callbacks=(calls.append,))
    assert calls == [] and os.listdir(tmp_path) == [], str(err.value)
