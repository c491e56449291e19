"""ClassImages.shifted (pixel-shift augmentation of a meta-train pool), ClassImages.take (classes
by index) and the Omniglot validation split: against a direct per-pixel computation, class sizes
and memory, and character disjointness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from metacore.app.omniglot import validation_split
from metacore.data.class_images import ClassImages


def images(sizes, side=5, seed=0, alphabets=None):
    rng = np.random.default_rng(seed)
    n = int(sum(sizes))
    X = rng.random((n, side * side)).astype(np.float32)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    names = [f"c{c}" for c in range(len(sizes))]
    return ClassImages(X, labels, names, alphabets or ["a"] * len(sizes))


def shift_by_loops(img, dy, dx):
    """The oracle: out[i, j] = img[i − dy, j − dx] where that pixel exists, else 0."""
    s = img.shape[0]
    out = np.zeros_like(img)
    for i in range(s):
        for j in range(s):
            if 0 <= i - dy < s and 0 <= j - dx < s:
                out[i, j] = img[i - dy, j - dx]
    return out


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       shifts=st.lists(st.tuples(st.integers(-4, 4), st.integers(-4, 4)), min_size=0, max_size=4),
       seed=st.integers(0, 2**16))
def test_shifted_images_keep_their_class_and_match_a_per_pixel_shift(sizes, shifts, seed):
    base = images(sizes, seed=seed)
    aug = base.shifted(shifts)
    m = 1 + len(shifts)
    assert aug.n_classes == base.n_classes
    np.testing.assert_array_equal(aug.class_sizes, m * base.class_sizes)
    assert aug.X.shape == (m * base.X.shape[0], 25) and aug.X.dtype == np.float32
    assert aug.X.nbytes == m * base.X.nbytes                      # the memory the docstring states
    assert aug.class_names == base.class_names and aug.class_alphabets == base.class_alphabets
    for c in range(base.n_classes):
        orig, got = base.images(c), aug.images(c)
        n = orig.shape[0]
        np.testing.assert_array_equal(got[:n], orig)              # originals first
        for b, (dy, dx) in enumerate(shifts, start=1):
            for i in range(n):
                np.testing.assert_array_equal(got[b * n + i], shift_by_loops(orig[i], dy, dx))


def test_shift_by_one_moves_the_ink_and_keeps_its_total_inside():
    X = np.zeros((1, 9), dtype=np.float32)
    X[0, 4] = 1.0                                                 # the centre pixel of a 3×3 image
    aug = ClassImages(X, [0], ["x"], ["a"]).shifted([(0, 1), (1, 0), (-1, -1)])
    got = aug.images(0)
    assert got[1][1, 2] == 1 and got[2][2, 1] == 1 and got[3][0, 0] == 1
    np.testing.assert_array_equal(got.reshape(4, -1).sum(axis=1), [1, 1, 1, 1])


def test_shifted_refuses_bad_shifts():
    base = images([2, 2])
    with pytest.raises(ValueError, match="shifts"):
        base.shifted([(5, 0)])
    with pytest.raises(ValueError, match="shifts"):
        base.shifted([(1, 0, 2)])
    for bad in [(0, 1.7), (0.9, 0.9), (1.0, 0), ("1", 0), (True, 0)]:   # never rounded
        with pytest.raises(TypeError, match="shifts"):
            base.shifted([bad])


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(st.integers(-2**63, -1), st.integers(3, 2**63 - 1)),
       dtype=st.sampled_from([np.int64, np.uint64]))
def test_labels_outside_the_classes_are_named_before_anything_is_allocated(bad, dtype):
    if dtype is np.uint64 and bad < 0:
        bad = 2**64 + bad
    labels = np.array([0, 1, bad], dtype=np.int64 if bad < 2**63 else np.uint64)
    with pytest.raises(ValueError, match=r"labels must be class numbers 0\.\.2"):
        ClassImages(np.zeros((3, 4)), labels, ["a", "b", "c"], ["x"] * 3)


@pytest.mark.parametrize("n", [10**9, 10**12, 2**62])
def test_episodes_past_memory_name_n_before_allocating(n):
    with pytest.raises(MemoryError, match=f"n={n} episodes"):
        images([3, 3, 3]).episodes(n, n_way=2, k_shot=1, q_query=1)


def test_take_relabels_and_keeps_every_image_of_the_taken_classes():
    base = images([1, 3, 2, 4], seed=3, alphabets=["a", "b", "a", "b"])
    sub = base.take([3, 1])
    np.testing.assert_array_equal(sub.class_sizes, [4, 3])
    np.testing.assert_array_equal(sub.labels, [0, 0, 0, 0, 1, 1, 1])
    expected = np.concatenate([base.images(3), base.images(1)]).reshape(7, -1)
    np.testing.assert_array_equal(sub.X, expected)
    assert sub.class_names == ("c3", "c1") and sub.class_alphabets == ("b", "b")
    for bad in ([], [4], [1, 1], [0.5]):
        with pytest.raises(ValueError, match="classes"):
            base.take(bad)


def test_validation_split_holds_out_whole_characters_with_all_rotations():
    names, alphabets = [], []
    for a in ("A", "B"):
        for ch in range(7):
            for r in (0, 90, 180, 270):
                names.append(f"{a}/char{ch}@{r}")
                alphabets.append(a)
    X = np.arange(len(names) * 2 * 4, dtype=np.float32).reshape(-1, 4) / 1000
    base = ClassImages(X, np.repeat(np.arange(len(names)), 2), names, alphabets)
    train, val = validation_split(base, every=5)
    char = lambda n: n.split("@")[0]                               # noqa: E731
    tr, va = {char(n) for n in train.class_names}, {char(n) for n in val.class_names}
    assert not tr & va and len(tr) + len(va) == 14
    assert len(va) == 3 and val.n_classes == 4 * len(va)          # characters 2, 7, 12 of 14
    assert train.n_classes + val.n_classes == base.n_classes
    assert train.X.shape[0] + val.X.shape[0] == base.X.shape[0]


@pytest.mark.parametrize("n_way", [1, 0, -1])
def test_episodes_and_sources_agree_that_an_episode_has_two_classes_or_more(n_way):
    base = images([3, 3, 3])
    with pytest.raises(ValueError, match="n_way must be >= 2"):
        base.episodes(2, n_way=n_way, k_shot=1, q_query=1)
    with pytest.raises(ValueError, match="n_way must be >= 2"):
        base.source(n_way=n_way, k_shot=1, q_query=1)
