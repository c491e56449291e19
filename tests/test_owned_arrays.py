"""Public containers own what they keep: a Checkpoint, an EvalReport, a FitEvent and a FitResult
never share an array with the caller (or with each other), so writing into the caller's array
afterwards changes nothing they hold. θ is float32 or float64 wherever it is taken, mc.save and
mc.Checkpoint included (an integer θ was silently saved as float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.evaluation.protocol import EvalReport


def _layouts(a):
    """The same values as a list, a contiguous array, a strided view and a slice of a bigger
    array: every way the caller's memory may reach the container."""
    big = np.empty(2 * a.shape[0], dtype=a.dtype)
    big[::2] = a
    pad = np.concatenate([a, a[:1]]) if a.shape[0] else a
    return {"list": a.tolist(), "array": a.copy(), "strided": big[::2],
            "slice": pad[:a.shape[0]]}


def _scribble(value):
    """Overwrite the caller's array (or list) in place."""
    if isinstance(value, list):
        value[:] = [123.0] * len(value)
    else:
        value[...] = 123.0


@settings(max_examples=60, deadline=None)
@given(P=st.integers(1, 40), T=st.integers(0, 5), dtype=st.sampled_from([np.float32, np.float64]),
       layout=st.sampled_from(["list", "array", "strided", "slice"]), seed=st.integers(0, 2**31))
def test_a_checkpoint_keeps_read_only_copies_of_every_array(P, T, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    originals = {"theta": rng.normal(size=P).astype(dtype),
                 "m": rng.normal(size=P).astype(dtype), "v": rng.random(P).astype(dtype),
                 "alpha": rng.random(T).astype(dtype), "ws": rng.normal(size=3 * T),
                 "best": rng.normal(size=P).astype(dtype), "recent": rng.random(4)}
    given_ = {k: _layouts(v)[layout] for k, v in originals.items()}
    if layout == "list":      # a list of float32 values reads back as float64
        originals = {k: np.asarray(v, dtype=np.float64) for k, v in originals.items()}
    ck = mc.Checkpoint(given_["theta"], moments={"m": given_["m"], "v": given_["v"]},
                       alpha=given_["alpha"], weighting_state=given_["ws"], step=3,
                       best={"theta": given_["best"], "score": 1.0, "step": 2, "bad_evals": 0},
                       recent_losses=given_["recent"])
    for v in given_.values():
        _scribble(v)
    held = {"theta": ck.theta, "m": ck.moments["m"], "v": ck.moments["v"], "alpha": ck.alpha,
            "ws": ck.weighting_state, "best": ck.best["theta"], "recent": ck.recent_losses}
    for name, arr in held.items():
        np.testing.assert_array_equal(arr, originals[name], err_msg=name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0.0
    assert ck.theta.dtype == originals["theta"].dtype


def test_a_checkpoint_saved_from_a_result_is_not_changed_by_the_result(tmp_path):
    model = mc.MLP([1, 6, 1])
    ts = mc.tasks.sinusoid(5, k_support=4, k_query=4, seed=2, dtype=np.float64)
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0, dtype=np.float64), steps=12,
                 eval_every=4, early_stopping=5, progress=False)
    ck = res.checkpoint()
    want = {"theta": res.theta.copy(), "best": res.best_record["theta"].copy(),
            "m": res.moments["m"].copy()}
    # the result's arrays are the caller's: writing into them leaves the checkpoint as taken,
    # and the result's best θ is not the record a resume continues from
    res.theta[:] = 0.0
    res.moments["m"][:] = 0.0
    res.best_theta[:] = 0.0
    np.testing.assert_array_equal(ck.theta, want["theta"])
    np.testing.assert_array_equal(ck.moments["m"], want["m"])
    np.testing.assert_array_equal(res.checkpoint().best["theta"], want["best"])
    mc.save(tmp_path / "ck.npz", ck)
    np.testing.assert_array_equal(mc.load(tmp_path / "ck.npz").theta, want["theta"])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, bool, object])
def test_an_integer_theta_is_refused_by_save_and_checkpoint_as_everywhere(tmp_path, dtype):
    """θ's dtype decides the run's; an integer θ is a TypeError naming theta for mc.fit,
    mc.adapt, model.predict — and now for mc.save and mc.Checkpoint, which stored it as
    float64 (or, for Checkpoint, as an int64 file that mc.load then refused as corrupt)."""
    model = mc.MLP([2, 3, 1])
    theta = np.arange(model.n_params).astype(dtype)
    X = np.ones((4, 2))
    ts = mc.TaskSet.from_arrays([X], [np.ones(4)])
    calls = {
        "save": lambda: mc.save(tmp_path / "t.npz", theta),
        "save model": lambda: mc.save(tmp_path / "t.npz", theta, model=model),
        "Checkpoint": lambda: mc.Checkpoint(theta),
        "fit": lambda: mc.fit(mc.Objective(model, ts), theta, steps=1, progress=False),
        "adapt": lambda: mc.adapt(model, theta, X, np.ones(4), steps=1),
        "predict": lambda: model.predict(theta, X),
    }
    for what, call in calls.items():
        with pytest.raises(TypeError, match=r"^(theta|start) must be a float32 or float64"):
            call()
        assert not (tmp_path / "t.npz").exists(), what


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_keeps_a_float_thetas_dtype_and_checks_its_length_against_the_model(tmp_path,
                                                                              dtype):
    model = mc.MLP([2, 3, 1])
    theta = model.init(seed=1, dtype=dtype)
    mc.save(tmp_path / "t.npz", theta, model=model)
    ck = mc.load(tmp_path / "t.npz")
    assert ck.theta.dtype == dtype and np.array_equal(ck.theta, theta)
    with pytest.raises(ValueError, match=r"theta must have length 13 \(the model's n_params\), "
                                         r"got 14"):
        mc.save(tmp_path / "u.npz", np.append(theta, dtype(0)), model=model)
    assert not (tmp_path / "u.npz").exists()


@settings(max_examples=40, deadline=None)
@given(S=st.integers(1, 3), T=st.integers(1, 9), classifier=st.booleans(),
       layout=st.sampled_from(["array", "strided", "slice"]), seed=st.integers(0, 2**31))
def test_an_eval_report_keeps_its_own_read_only_values(S, T, classifier, layout, seed):
    rng = np.random.default_rng(seed)
    losses = rng.random((S, T))
    acc = rng.random((S, T)) if classifier else None

    def given_(a):
        if layout == "array":
            return a.copy()
        big = np.zeros((S, 2 * T))
        big[:, ::2] = a
        return big[:, ::2] if layout == "strided" else np.ascontiguousarray(big)[:, ::2]

    gl, ga = given_(losses), (None if acc is None else given_(acc))
    rep = EvalReport(name="r", steps=tuple(range(S)), losses=gl, accuracies=ga)
    before = rep.summary()
    gl[...] = -5.0           # would fail the report's own check (losses >= 0) if it were kept
    if ga is not None:
        ga[...] = 7.0
    np.testing.assert_array_equal(rep.losses, losses)
    if acc is not None:
        np.testing.assert_array_equal(rep.accuracies, acc)
        assert not rep.accuracies.flags.writeable
    assert not rep.losses.flags.writeable
    assert repr(rep.summary()) == repr(before)      # (NaN half-widths compare as text)


def test_a_contiguous_float64_losses_array_is_copied_too():
    """float_array hands back the caller's own array when it already fits: that one case used
    to be kept as is."""
    losses = np.ones((2, 5))
    rep = EvalReport(name="r", steps=(0, 1), losses=losses)
    assert not np.shares_memory(rep.losses, losses)
    losses[0, 0] = np.inf
    assert np.isfinite(rep.losses).all()


def test_a_callback_that_changes_its_event_changes_neither_run_nor_history():
    model = mc.MLP([1, 5, 1])
    ts = mc.tasks.sinusoid(4, k_support=5, k_query=5, seed=4, dtype=np.float64)

    def run(callback):
        return mc.fit(mc.Objective(model, ts), model.init(seed=0, dtype=np.float64), steps=9,
                      eval_every=3, callbacks=[callback] if callback else (),
                      weighting=mc.weighting.DWA(), progress=False)

    def vandal(event):
        event.task_losses[:] = -1.0
        event.weights[:] = 0.0
        event.theta[:] = 0.0

    clean, touched = run(None), run(vandal)
    h, g = clean.history, touched.history
    np.testing.assert_array_equal(h.task_losses, g.task_losses)
    np.testing.assert_array_equal(h.weights, g.weights)
    np.testing.assert_array_equal(clean.theta, touched.theta)
    assert (g.task_losses > 0).all()
