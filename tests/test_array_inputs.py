"""Array inputs the other tests never generated: byte order, layout, memory kind, element type.

For every public entry point that takes arrays, an input in any layout (big-endian, strided,
negative strides, Fortran order, read-only, np.memmap) gives exactly the result of the plain
float64 C-contiguous array; an object that keeps an array keeps its own copy (the caller's
array is neither frozen nor aliased); a refusal is a TypeError/ValueError naming the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacore as mc

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])
LAYOUTS = ("plain", "big_endian", "strided", "negative_strides", "fortran", "readonly",
           "memmap", "memmap_readonly", "view")


def layout(a, how, tmp_path):
    """``a`` (float64, C-contiguous) with the same values in another layout or memory."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if how == "plain":
        return a.copy()
    if how == "big_endian":
        return a.astype(">f8")
    if how == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
        big[..., ::2] = a
        return big[..., ::2]
    if how == "negative_strides":
        return a[::-1].copy()[::-1]
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how in ("memmap", "memmap_readonly"):
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.dat"
        m = np.memmap(path, dtype=np.float64, mode="w+", shape=a.shape)
        m[...] = a
        m.flush()
        return m if how == "memmap" else np.memmap(path, dtype=np.float64, mode="r",
                                                   shape=a.shape)
    if how == "view":           # a C-contiguous view into a larger, writeable buffer
        big = np.zeros((a.size + 3,))
        big[1:a.size + 1] = a.reshape(-1)
        return big[1:a.size + 1].reshape(a.shape)
    raise AssertionError(how)


def _small(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12, 3))
    y = (rng.random(12) > 0.5).astype(float)
    model = mc.Logistic(3)
    ts = mc.TaskSet.from_arrays([X[:6], X[6:]], [y[:6], y[6:]], n_support=3)
    return model, ts, X, y


# --- an object keeps its own copy: the caller's array is neither frozen nor aliased -------------
@settings(max_examples=30, **SETTINGS)
@given(how=st.sampled_from(LAYOUTS), alpha=st.lists(st.floats(0.01, 100.0), min_size=2,
                                                     max_size=2))
def test_fixed_weights_never_freeze_nor_alias_the_callers_array(tmp_path_factory, how, alpha):
    tmp = tmp_path_factory.mktemp("fixed")
    a = layout(np.array(alpha), how, tmp)
    writeable = a.flags.writeable
    w = mc.weighting.Fixed(a)
    assert a.flags.writeable == writeable          # was made read-only (the caller's array)
    np.testing.assert_array_equal(w.alpha, np.array(alpha))
    assert not w.alpha.flags.writeable
    with pytest.raises(ValueError):
        w.alpha.flags.writeable = True
    if a.flags.writeable:                           # a later write by the caller changes nothing
        base = a.base if isinstance(a.base, np.ndarray) else a
        base[...] = -7.0
        np.testing.assert_array_equal(w.alpha, np.array(alpha))
    model, ts, _, _ = _small()
    obj = mc.Objective(model, ts)
    want = mc.fit(obj, model.init(seed=0), steps=2, progress=False,
                  weighting=mc.weighting.Fixed(np.array(alpha))).theta
    got = mc.fit(obj, model.init(seed=0), steps=2, progress=False, weighting=w).theta
    np.testing.assert_array_equal(got, want)


def test_fixed_weights_from_a_view_keep_the_values_that_were_checked():
    """The view of a writeable buffer was kept: writing the buffer made α negative after the
    non-negativity check (and Fixed had set the caller's array read-only)."""
    buf = np.array([1.0, 2.0, 3.0])
    w = mc.weighting.Fixed(buf[:2])
    buf[0] = -7.0
    np.testing.assert_array_equal(w.alpha, [1.0, 2.0])
    plain = np.array([1.0, 2.0])
    mc.weighting.Fixed(plain)
    plain[0] = 5.0                                   # still the caller's, still writeable


@settings(max_examples=15, **SETTINGS)
@given(how=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_episode_source_keeps_its_own_pool(tmp_path_factory, how, seed):
    tmp = tmp_path_factory.mktemp("pool")
    X = np.random.default_rng(seed).normal(size=(24, 3))
    offsets = np.arange(0, 25, 6)
    a = layout(X, how, tmp)
    writeable = a.flags.writeable
    src = mc.tasks.EpisodeSource(a, offsets, n_way=2, k_shot=2, q_query=1)
    want = mc.tasks.EpisodeSource(X, offsets, n_way=2, k_shot=2, q_query=1).sample(3, seed=1,
                                                                                    dtype=np.float64)
    assert a.flags.writeable == writeable
    assert not src.X.flags.writeable
    if a.flags.writeable:
        base = a.base if isinstance(a.base, np.ndarray) else a
        base[...] = np.nan                           # was drawn into the episodes (or refused)
    got = src.sample(3, seed=1, dtype=np.float64)
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.y, want.y)


def test_class_images_source_shares_its_read_only_pool():
    """ClassImages.source takes the images' own read-only pool without a copy (Omniglot's is
    hundreds of MiB), and the pool stays read-only."""
    X = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    images = mc.data.class_images.ClassImages(X, np.repeat(np.arange(2), 4), ["a", "b"],
                                              ["g", "g"])
    src = images.source(n_way=2, k_shot=2, q_query=1)
    assert np.shares_memory(src.X, images.X) and not src.X.flags.writeable
