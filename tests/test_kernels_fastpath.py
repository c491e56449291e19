"""The lean call path: float_array's fast path for arrays already in the core's layout, the
adapt wrappers' fast path for plain numbers, and the learners' memo of the last checked batch.
Each fast path must give what the full checks give, and refuse what they refuse."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore import _core, _validation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_array_fast_path_returns_the_array_itself(dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    assert _validation.float_array("X", a, ndim=2, dtype=dtype) is a
    assert _validation.float_array("X", a, ndim=(1, 2)) is a
    r = a.ravel()
    assert _validation.float_array("X", r, ndim=1, dtype=dtype) is r


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_array_fast_path_still_refuses_non_finite_entries(bad, dtype):
    a = np.ones((4, 3), dtype=dtype)
    a[2, 1] = bad
    with pytest.raises(ValueError, match=r"X must be finite.*\(2, 1\)"):
        _validation.float_array("X", a, ndim=2, dtype=dtype)
    # an overflowing but finite array passes
    big = np.full(5, np.finfo(dtype).max, dtype=dtype)
    assert _validation.float_array("X", big, ndim=1, dtype=dtype) is big


def test_float_array_slow_path_still_converts_and_checks_shape():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    strided = a[:, ::2]
    out = _validation.float_array("X", strided, ndim=2, dtype=np.float64)
    assert out.flags.c_contiguous and np.array_equal(out, strided)
    swapped = a.astype(">f8")
    out = _validation.float_array("X", swapped, ndim=2)
    assert out.dtype == np.float64 and out.dtype.isnative and np.array_equal(out, a)
    f32 = _validation.float_array("X", a, ndim=2, dtype=np.float32)
    assert f32.dtype == np.float32 and np.array_equal(f32, a.astype(np.float32))
    with pytest.raises(ValueError, match="X must be 1-D"):
        _validation.float_array("X", a, ndim=1, dtype=np.float64)


def _sine_model():
    return mc.MLP([1, 8, 1], activation="tanh", loss="mse")


@pytest.mark.parametrize("lr, steps, error, match", [
    (-0.1, 5, ValueError, "lr must be >= 0"),
    (float("nan"), 5, ValueError, "lr must be finite"),
    (float("inf"), 5, ValueError, "lr must be finite"),
    (0.1, -1, ValueError, "steps must be >= 0"),
    (0.1, True, TypeError, "steps must be an integer"),
    (0.1, 2.0, TypeError, "steps must be an integer"),
])
def test_adapt_fast_path_refuses_what_the_checks_refuse(lr, steps, error, match):
    model = _sine_model()
    theta = model.init(seed=0)
    X = np.linspace(-1, 1, 5)[:, None]
    with pytest.raises(error, match=match):
        mc.adapt_predict(model, theta, X, np.sin(X[:, 0]), X, steps=steps, lr=lr)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adapt_fast_path_gives_the_reference_values(dtype):
    model = _sine_model()
    theta = model.init(seed=1, dtype=dtype)
    X = np.linspace(-2, 2, 7, dtype=dtype)[:, None]
    y = np.sin(X[:, 0])
    out = mc.adapt_predict(model, theta, X, y, X, steps=3, lr=0.05)
    # the same call through the slow paths: a NumPy float lr, a list input, an int64 step count
    slow = mc.adapt_predict(model, theta, X.tolist(), y.tolist(), X, steps=np.int64(3),
                            lr=np.float64(0.05))
    assert np.array_equal(out, slow)
    expect = mc.reference.adapt_predict(model, theta.astype(np.float64), X, y, X, steps=3,
                                        lr=0.05)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expect, rtol=tol, atol=tol)


def _batch(seed, dtype=np.float32):
    return mc.tasks.SinusoidSource(k_support=5, k_query=5).sample(4, step=0, seed=seed, dtype=dtype)


def test_learner_memo_gives_the_same_result_as_a_fresh_check():
    model = mc.MLP([1, 16, 1], activation="relu", loss="mse")
    theta = model.init(seed=0, dtype=np.float32)
    learner = mc.MAML(model, inner_lr=0.01, n_threads=1)
    b1, b2 = _batch(1), _batch(2)
    first = learner.meta_value_and_grad(theta, b1)
    again = learner.meta_value_and_grad(theta, b1)     # memo hit
    other = learner.meta_value_and_grad(theta, b2)     # another batch: checked afresh
    fresh = mc.MAML(model, inner_lr=0.01, n_threads=1).meta_value_and_grad(theta, b2)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    assert other[0] == fresh[0] and np.array_equal(other[1], fresh[1])
    # a float64 θ after a float32 one: the batch is converted, not the memo's float32 copy reused
    l64, g64 = learner.meta_value_and_grad(theta.astype(np.float64), b1)
    assert g64.dtype == np.float64
    ref_l, ref_g = mc.reference.maml_value_and_grad(model, theta.astype(np.float64), b1,
                                                    inner_lr=0.01)
    np.testing.assert_allclose(g64, ref_g, rtol=1e-9, atol=1e-12)


def test_learner_memo_does_not_skip_the_checks_of_a_new_batch():
    model = mc.MLP([1, 8, 1], activation="relu", loss="mse")
    theta = model.init(seed=0, dtype=np.float32)
    learner = mc.MAML(model, inner_lr=0.01)
    learner.meta_value_and_grad(theta, _batch(1))
    wrong = mc.TaskSet(np.zeros((6, 2)), np.zeros(6), [0, 3, 6], n_support=1)
    with pytest.raises(ValueError, match="features"):
        learner.meta_value_and_grad(theta, wrong)
    no_query = mc.TaskSet(np.zeros((6, 1)), np.zeros(6), [0, 3, 6], n_support=3)
    with pytest.raises(ValueError, match="no query rows"):
        learner.meta_value_and_grad(theta, no_query)


def test_learner_with_a_memo_pickles_copies_and_keeps_nothing_alive():
    import gc
    import weakref
    model = mc.MLP([1, 8, 1], activation="relu", loss="mse")
    theta = model.init(seed=0, dtype=np.float32)
    learner = mc.MAML(model, inner_lr=0.01)
    batch = _batch(3)
    value = learner.meta_value_and_grad(theta, batch)[0]
    for clone in (pickle.loads(pickle.dumps(learner)), copy.deepcopy(learner)):
        assert clone == learner
        assert clone.meta_value_and_grad(theta, batch)[0] == value
    ref = weakref.ref(batch)
    del batch
    gc.collect()
    assert ref() is None


# The core's finiteness check (metacore::all_finite, one for every binding) tests exponent bits
# in vector lanes: a non-finite value must be found in any lane of any vector, in the scalar
# tail, at either end, and every finite bit pattern (largest, subnormal, signed zero) must pass.
@given(n_hidden=st.integers(1, 40), data=st.data())
@settings(max_examples=60, deadline=None)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_core_finiteness_check_finds_every_non_finite_entry(dtype, n_hidden, data):
    model = mc.MLP([1, n_hidden, 1], loss="mse")
    P = model.n_params
    info = np.finfo(dtype)
    edge = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, -0.0, 0.0],
                    dtype=dtype)
    theta = data.draw(st.lists(st.sampled_from(list(edge) + [1.0, -2.5]), min_size=P,
                               max_size=P).map(lambda v: np.array(v, dtype=dtype)))
    xs = np.zeros((3, 1), dtype=dtype)
    ys = np.zeros(3, dtype=dtype)
    phi = _core.adapt(model.core_net(), theta, xs, ys, 0, 0.01, None, False)
    np.testing.assert_array_equal(phi.view(np.uint8), theta.view(np.uint8))  # all finite: passes
    i = data.draw(st.sampled_from(sorted({0, P - 1, data.draw(st.integers(0, P - 1))})))
    bad = data.draw(st.sampled_from([np.nan, -np.nan, np.inf, -np.inf]))
    theta[i] = bad
    with pytest.raises(ValueError, match=rf"theta must be finite, found .* at flat index {i}$"):
        _core.adapt(model.core_net(), theta, xs, ys, 0, 0.01, None, False)
