"""TaskSet and the built-in task families: what they promise, checked on concrete values."""

import copy
import pickle

import numpy as np
import pytest

from metacore import tasks
from metacore.data.taskset import TaskSet


# --- fixtures -------------------------------------------------------------------------------------
def ragged_arrays(dtype=np.float64):
    """Three tasks of 2, 4 and 3 rows, d = 3; each row's values identify it."""
    sizes = [2, 4, 3]
    Xs = [np.arange(n * 3, dtype=dtype).reshape(n, 3) + 100 * t for t, n in enumerate(sizes)]
    ys = [np.arange(n, dtype=dtype) + 10 * t for t, n in enumerate(sizes)]
    return Xs, ys


@pytest.fixture
def ragged():
    Xs, ys = ragged_arrays()
    return TaskSet.from_arrays(Xs, ys, n_support=[1, 3, 0]), Xs, ys


# --- packing --------------------------------------------------------------------------------------
def test_from_arrays_packs_ragged_tasks_back_to_back(ragged):
    ts, Xs, ys = ragged
    np.testing.assert_array_equal(ts.offsets, [0, 2, 6, 9])
    assert ts.offsets.dtype == np.int64 and ts.n_support.dtype == np.int64
    np.testing.assert_array_equal(ts.X, np.concatenate(Xs))
    np.testing.assert_array_equal(ts.y, np.concatenate(ys))
    np.testing.assert_array_equal(ts.task_sizes, [2, 4, 3])
    np.testing.assert_array_equal(ts.n_support, [1, 3, 0])
    np.testing.assert_array_equal(ts.n_query, [1, 1, 3])
    np.testing.assert_array_equal(ts.task_ids, [0, 1, 2])
    assert (ts.n_tasks, ts.n_rows, ts.n_features, ts.n_outputs) == (3, 9, 3, 1)
    assert len(ts) == 3 and ts.dtype == np.float64
    assert ts.X.flags.c_contiguous and ts.y.flags.c_contiguous


def test_getitem_support_and_query_are_views_of_each_task(ragged):
    ts, Xs, ys = ragged
    for i in range(3):
        X_i, y_i = ts[i]
        np.testing.assert_array_equal(X_i, Xs[i])
        np.testing.assert_array_equal(y_i, ys[i])
        assert np.shares_memory(X_i, ts.X) and np.shares_memory(y_i, ts.y)
        s = ts.n_support[i]
        Xs_i, ys_i = ts.support(i)
        Xq_i, yq_i = ts.query(i)
        np.testing.assert_array_equal(Xs_i, Xs[i][:s])
        np.testing.assert_array_equal(ys_i, ys[i][:s])
        np.testing.assert_array_equal(Xq_i, Xs[i][s:])
        np.testing.assert_array_equal(yq_i, ys[i][s:])
    assert ts.support(2)[0].shape == (0, 3)       # n_support 0: no support rows
    np.testing.assert_array_equal(ts[-1][1], ys[2])
    np.testing.assert_array_equal(ts.query(-3)[1], [1.0])
    assert [len(y) for _, y in ts] == [2, 4, 3]


@pytest.mark.parametrize("i", [3, -4, 100])
def test_task_index_out_of_range_is_index_error(ragged, i):
    ts = ragged[0]
    with pytest.raises(IndexError, match="out of range"):
        ts[i]
    with pytest.raises(IndexError):
        ts.support(i)
    with pytest.raises(IndexError):
        ts.query(i)


def test_task_index_must_be_an_integer(ragged):
    with pytest.raises(TypeError, match="task index"):
        ragged[0][1.0]
    with pytest.raises(TypeError, match="task index"):
        ragged[0][0:2]


def test_n_support_none_means_every_row_is_support():
    Xs, ys = ragged_arrays()
    ts = TaskSet.from_arrays(Xs, ys)
    np.testing.assert_array_equal(ts.n_support, [2, 4, 3])
    np.testing.assert_array_equal(ts.n_query, [0, 0, 0])
    assert ts.query(1)[0].shape == (0, 3)


def test_n_support_int_applies_to_every_task():
    Xs, ys = ragged_arrays()
    ts = TaskSet.from_arrays(Xs, ys, n_support=2)
    np.testing.assert_array_equal(ts.n_support, [2, 2, 2])
    np.testing.assert_array_equal(ts.n_query, [0, 2, 1])


def test_constructor_from_packed_buffers():
    X = np.arange(10.0).reshape(5, 2)
    y = np.arange(5.0)
    ts = TaskSet(X, y, [0, 2, 5], n_support=[1, 2], task_ids=[7, 3])
    np.testing.assert_array_equal(ts[1][0], X[2:5])
    np.testing.assert_array_equal(ts.support(1)[1], [2.0, 3.0])
    np.testing.assert_array_equal(ts.task_ids, [7, 3])


def test_multi_output_targets():
    X = np.zeros((4, 2))
    y = np.arange(12.0).reshape(4, 3)
    ts = TaskSet(X, y, [0, 1, 4])
    assert ts.n_outputs == 3 and ts.y.shape == (4, 3)
    np.testing.assert_array_equal(ts[1][1], y[1:])


def test_one_task_of_one_row():
    ts = TaskSet([[1.5, 2.5]], [3.0], [0, 1], n_support=0)
    assert (ts.n_tasks, ts.n_rows, ts.n_features) == (1, 1, 2)
    assert ts.query(0)[1].tolist() == [3.0]


def test_repr_summarises_the_set(ragged):
    text = repr(ragged[0])
    assert text.startswith("TaskSet(")
    for part in ("n_tasks=3", "n_rows=9", "n_features=3", "dtype=float64", "task_sizes=2..4",
                 "n_support=0..3"):
        assert part in text


# --- dtype ----------------------------------------------------------------------------------------
def test_dtype_default_keeps_float32_and_promotes_the_rest():
    X32 = np.ones((3, 2), dtype=np.float32)
    assert TaskSet(X32, np.zeros(3), [0, 3]).dtype == np.float32
    assert TaskSet(X32, np.zeros(3), [0, 3]).y.dtype == np.float32   # y follows X
    assert TaskSet(np.ones((3, 2), dtype=np.int32), [0, 1, 1], [0, 3]).dtype == np.float64
    assert TaskSet(np.ones((3, 2), dtype=np.float16), np.zeros(3), [0, 3]).dtype == np.float64
    assert TaskSet(X32, np.zeros(3), [0, 3], dtype=np.float64).X.dtype == np.float64
    # from_arrays: float32 only when every task is float32
    assert TaskSet.from_arrays([X32, X32], [np.zeros(3)] * 2).dtype == np.float32
    assert TaskSet.from_arrays([X32, X32.astype(np.float64)], [np.zeros(3)] * 2).dtype == np.float64


def test_class_labels_are_stored_as_floats_of_the_working_dtype():
    ts = TaskSet(np.ones((3, 1), dtype=np.float32), np.array([0, 2, 1]), [0, 3])
    assert ts.y.dtype == np.float32
    np.testing.assert_array_equal(ts.y, [0.0, 2.0, 1.0])


def test_astype_converts_once_and_caches(ragged):
    ts = ragged[0]
    assert ts.astype(np.float64) is ts
    ts32 = ts.astype(np.float32)
    assert ts32.dtype == np.float32 and ts32.X.dtype == np.float32 and ts32.y.dtype == np.float32
    assert ts.astype("float32") is ts32
    np.testing.assert_array_equal(ts32.X, ts.X.astype(np.float32))
    np.testing.assert_array_equal(ts32.offsets, ts.offsets)
    np.testing.assert_array_equal(ts32.n_support, ts.n_support)
    np.testing.assert_array_equal(ts32.task_ids, ts.task_ids)
    assert not ts32.X.flags.writeable


def test_astype_to_float32_rejects_values_that_overflow():
    ts = TaskSet([[1e300]], [0.0], [0, 1])
    with pytest.raises(ValueError, match=r"^X has 1e\+300 at index \(0, 0\), which exceeds "
                                         r"float32's range \(±3\.4e38\)"):
        ts.astype(np.float32)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "complex128"])
def test_dtype_must_be_float32_or_float64(dtype):
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        TaskSet(np.ones((2, 1)), np.ones(2), [0, 2], dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        TaskSet([[1.0]], [1.0], [0, 1]).astype(dtype)
    with pytest.raises(TypeError, match="dtype"):
        TaskSet.from_arrays([np.ones((2, 1))], [np.ones(2)], dtype=dtype)


# --- ownership, layout, read-only -----------------------------------------------------------------
def test_buffers_are_read_only_and_cannot_be_made_writeable(ragged):
    ts = ragged[0]
    for arr in (ts.X, ts.y, ts.offsets, ts.n_support, ts.task_ids, ts.task_sizes, ts.n_query):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 0
        with pytest.raises(ValueError):
            arr.flags.writeable = True
    with pytest.raises(ValueError):
        ts[0][0][0, 0] = 1.0
    with pytest.raises(AttributeError):
        ts.X = np.zeros((9, 3))


def test_constructor_does_not_alias_or_mutate_the_callers_arrays():
    X = np.arange(6.0).reshape(3, 2)
    y = np.arange(3.0)
    ts = TaskSet(X, y, [0, 1, 3])
    X[0, 0] = 99.0
    y[:] = -1.0
    assert ts.X[0, 0] == 0.0 and ts.y.tolist() == [0.0, 1.0, 2.0]
    assert X.flags.writeable and y.flags.writeable            # caller's flags untouched
    assert not np.shares_memory(ts.X, X) and not np.shares_memory(ts.y, y)


def test_contiguous_views_of_the_callers_memory_are_copied():
    base = np.arange(20.0).reshape(10, 2)
    ts = TaskSet(base[2:5], base[2:5, 0], [0, 3])
    base[:] = 0.0
    np.testing.assert_array_equal(ts.X, [[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]])
    np.testing.assert_array_equal(ts.y, [4.0, 6.0, 8.0])


def test_from_arrays_and_from_groups_do_not_alias_the_callers_arrays():
    Xs, ys = ragged_arrays()
    ts = TaskSet.from_arrays(Xs, ys)
    Xs[0][:] = -5.0
    ys[1][:] = -5.0
    assert ts.X.min() >= 0 and ts.y.min() >= 0
    X, y, g = np.ones((4, 2)), np.arange(4.0), np.array([0, 0, 1, 1])
    tg = TaskSet.from_groups(X, y, g)
    X[:] = 0.0
    y[:] = 0.0
    g[:] = 1
    np.testing.assert_array_equal(tg.X, np.ones((4, 2)))
    np.testing.assert_array_equal(tg.offsets, [0, 2, 4])


def test_read_only_inputs_are_accepted_and_left_read_only():
    X = np.arange(6.0).reshape(3, 2)
    y = np.arange(3.0)
    X.setflags(write=False)
    y.setflags(write=False)
    ts = TaskSet(X, y, [0, 3])
    np.testing.assert_array_equal(ts.X, X)
    assert not X.flags.writeable
    tsa = TaskSet.from_arrays([X], [y])
    np.testing.assert_array_equal(tsa.y, y)


def test_non_contiguous_inputs_are_packed_c_contiguous():
    wide = np.arange(24.0).reshape(4, 6)
    X = wide[:, ::2]                     # strided columns
    F = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    y = wide[:, 1]                       # strided 1-D
    for Xin in (X, F):
        ts = TaskSet(Xin, y, [0, 2, 4])
        assert ts.X.flags.c_contiguous and ts.y.flags.c_contiguous
        np.testing.assert_array_equal(ts.X, Xin)
        np.testing.assert_array_equal(ts.y, [1.0, 7.0, 13.0, 19.0])
    ta = TaskSet.from_arrays([X[:2], F[2:]], [y[:2], y[2:]])
    np.testing.assert_array_equal(ta.X, np.concatenate([X[:2], F[2:]]))
    tg = TaskSet.from_groups(F, y, [1, 0, 1, 0])
    np.testing.assert_array_equal(tg.X, F[[1, 3, 0, 2]])


def test_lists_are_accepted_as_array_likes():
    ts = TaskSet.from_arrays([[[1, 2], [3, 4]], [[5, 6]]], [[0, 1], [1]], n_support=1)
    np.testing.assert_array_equal(ts.X, [[1, 2], [3, 4], [5, 6]])
    assert ts.dtype == np.float64


def test_pickle_and_deepcopy_round_trip_stay_read_only(ragged):
    ts = ragged[0]
    for other in (pickle.loads(pickle.dumps(ts)), copy.deepcopy(ts)):
        assert other is not ts and not np.shares_memory(other.X, ts.X)
        for name in ("X", "y", "offsets", "n_support", "task_ids"):
            np.testing.assert_array_equal(getattr(other, name), getattr(ts, name))
            assert not getattr(other, name).flags.writeable


# --- from_groups ----------------------------------------------------------------------------------
def test_from_groups_orders_tasks_by_sorted_group_and_keeps_row_order():
    X = np.arange(7.0)[:, None]
    y = np.arange(7.0) * 10
    groups = np.array([5, 2, 5, 9, 2, 5, 2])
    ts = TaskSet.from_groups(X, y, groups, n_support=1)
    np.testing.assert_array_equal(ts.offsets, [0, 3, 6, 7])            # groups 2, 5, 9
    np.testing.assert_array_equal(ts[0][0].ravel(), [1, 4, 6])
    np.testing.assert_array_equal(ts[1][0].ravel(), [0, 2, 5])
    np.testing.assert_array_equal(ts[2][1], [30.0])
    np.testing.assert_array_equal(ts.support(1)[0].ravel(), [0])       # first row of its task
    np.testing.assert_array_equal(ts.query(0)[1], [40.0, 60.0])
    np.testing.assert_array_equal(ts.task_ids, [0, 1, 2])


def test_from_groups_accepts_string_groups():
    ts = TaskSet.from_groups(np.arange(4.0)[:, None], np.zeros(4), ["b", "a", "b", "a"])
    np.testing.assert_array_equal(ts[0][0].ravel(), [1, 3])


def test_from_groups_per_task_support_counts():
    ts = TaskSet.from_groups(np.zeros((5, 1)), np.zeros(5), [0, 1, 1, 1, 0], n_support=[2, 1])
    np.testing.assert_array_equal(ts.n_query, [0, 2])


# --- subset / split / with_support ----------------------------------------------------------------
def test_subset_gathers_tasks_in_order_and_keeps_task_ids(ragged):
    ts, Xs, ys = ragged
    sub = ts.subset([2, 0])
    np.testing.assert_array_equal(sub.offsets, [0, 3, 5])
    np.testing.assert_array_equal(sub.X, np.concatenate([Xs[2], Xs[0]]))
    np.testing.assert_array_equal(sub.y, np.concatenate([ys[2], ys[0]]))
    np.testing.assert_array_equal(sub.n_support, [0, 1])
    np.testing.assert_array_equal(sub.task_ids, [2, 0])
    # ids survive a second subset: they point at the set first built
    np.testing.assert_array_equal(sub.subset([1]).task_ids, [0])
    np.testing.assert_array_equal(ts.subset(np.array([-1])).task_ids, [2])
    np.testing.assert_array_equal(ts.subset(slice(1, None)).task_ids, [1, 2])
    np.testing.assert_array_equal(ts.subset(slice(None, None, -2)).task_ids, [2, 0])
    np.testing.assert_array_equal(ts.subset(np.array([True, False, True])).task_ids, [0, 2])
    np.testing.assert_array_equal(ts.subset([1, 1]).offsets, [0, 4, 8])    # repeats allowed
    assert ts.subset(1).n_tasks == 1


def test_subset_errors(ragged):
    ts = ragged[0]
    with pytest.raises(IndexError, match="indices"):
        ts.subset([0, 3])
    with pytest.raises(ValueError, match="indices"):
        ts.subset([])
    with pytest.raises(ValueError, match="indices"):
        ts.subset(slice(5, None))
    with pytest.raises(TypeError, match="indices"):
        ts.subset([0.0, 1.0])
    with pytest.raises(ValueError, match="indices"):
        ts.subset(np.array([True, False]))


def test_split_tasks_is_a_disjoint_covering_deterministic_split():
    ts = tasks.linear_family(20, n_features=2, n_rows=(3, 6), seed=1)
    train, test = ts.split_tasks(test_fraction=0.25, seed=3)
    assert (train.n_tasks, test.n_tasks) == (15, 5)
    ids = np.concatenate([train.task_ids, test.task_ids])
    np.testing.assert_array_equal(np.sort(ids), np.arange(20))
    assert np.all(np.diff(train.task_ids) > 0) and np.all(np.diff(test.task_ids) > 0)
    for part in (train, test):                       # each task's rows travel with its id
        for j, tid in enumerate(part.task_ids):
            np.testing.assert_array_equal(part[j][0], ts[tid][0])
    again = ts.split_tasks(test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again[1].task_ids, test.task_ids)
    other = ts.split_tasks(test_fraction=0.25, seed=4)
    assert not np.array_equal(other[1].task_ids, test.task_ids)


def test_split_tasks_keeps_both_sides_non_empty():
    ts = tasks.sinusoid(3, k_support=1, k_query=1)
    train, test = ts.split_tasks(test_fraction=0.01)
    assert (train.n_tasks, test.n_tasks) == (2, 1)
    train, test = ts.split_tasks(test_fraction=0.99)
    assert (train.n_tasks, test.n_tasks) == (1, 2)


def test_split_tasks_errors():
    ts = tasks.sinusoid(4)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            ts.split_tasks(test_fraction=bad)
    with pytest.raises(ValueError, match="seed"):
        ts.split_tasks(seed=-1)
    with pytest.raises(ValueError, match="at least 2 tasks"):
        tasks.sinusoid(1).split_tasks()


def test_with_support_changes_only_the_split(ragged):
    ts = ragged[0]
    new = ts.with_support(1)
    np.testing.assert_array_equal(new.n_support, [1, 1, 1])
    np.testing.assert_array_equal(new.n_query, [1, 3, 2])
    np.testing.assert_array_equal(new.X, ts.X)
    np.testing.assert_array_equal(new.task_ids, ts.task_ids)
    np.testing.assert_array_equal(ts.n_support, [1, 3, 0])     # the original is unchanged
    np.testing.assert_array_equal(ts.with_support(None).n_query, [0, 0, 0])
    with pytest.raises(ValueError, match="n_support"):
        ts.with_support(3)


# --- input errors ---------------------------------------------------------------------------------
def test_mismatched_lengths_name_the_argument():
    with pytest.raises(ValueError, match="y must have one row per row of X"):
        TaskSet(np.ones((3, 2)), np.ones(4), [0, 3])
    with pytest.raises(ValueError, match="ys must have one entry per task"):
        TaskSet.from_arrays([np.ones((2, 1))] * 3, [np.ones(2)] * 2)
    with pytest.raises(ValueError, match=r"ys\[1\] must have one row per row of Xs\[1\]"):
        TaskSet.from_arrays([np.ones((2, 1)), np.ones((3, 1))], [np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match="groups must have one entry per row of X"):
        TaskSet.from_groups(np.ones((3, 1)), np.ones(3), [0, 1])


def test_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="Xs must hold at least one task"):
        TaskSet.from_arrays([], [])
    with pytest.raises(ValueError, match=r"Xs\[1\] must have at least one row"):
        TaskSet.from_arrays([np.ones((2, 1)), np.ones((0, 1))], [np.ones(2), np.ones(0)])
    with pytest.raises(ValueError, match="X must have at least one row"):
        TaskSet.from_groups(np.ones((0, 2)), np.ones(0), [])
    with pytest.raises(ValueError, match="X must have at least one column"):
        TaskSet(np.ones((2, 0)), np.ones(2), [0, 2])
    with pytest.raises(ValueError, match="y must have at least one column"):
        TaskSet(np.ones((2, 1)), np.ones((2, 0)), [0, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    X = np.ones((3, 2))
    X[1, 1] = bad
    with pytest.raises(ValueError, match=r"X must be finite.*\(1, 1\)"):
        TaskSet(X, np.ones(3), [0, 3])
    y = np.ones(3)
    y[2] = bad
    with pytest.raises(ValueError, match="y must be finite"):
        TaskSet(np.ones((3, 2)), y, [0, 3])
    with pytest.raises(ValueError, match=r"Xs\[1\] must be finite"):
        TaskSet.from_arrays([np.ones((3, 2)), X], [np.ones(3)] * 2)
    with pytest.raises(ValueError, match=r"ys\[0\] must be finite"):
        TaskSet.from_arrays([np.ones((3, 2))], [y])
    with pytest.raises(ValueError, match="X must be finite"):
        TaskSet.from_groups(X, np.ones(3), [0, 0, 1])


def test_float64_values_that_overflow_float32_are_refused():
    with pytest.raises(ValueError, match=r"^X has 1e\+39 at index \(0, 0\), which exceeds "
                                         r"float32's range \(±3\.4e38\)"):
        TaskSet([[1e39]], [0.0], [0, 1], dtype=np.float32)
    with pytest.raises(ValueError, match=r"^y has -1e\+39 at index \(0,\), which exceeds "):
        TaskSet([[1.0]], [-1e39], [0, 1], dtype=np.float32)


def test_wrong_dimensionality_is_refused():
    with pytest.raises(ValueError, match="X must be 2-D"):
        TaskSet(np.ones(3), np.ones(3), [0, 3])
    with pytest.raises(ValueError, match="y must be 1-D or 2-D"):
        TaskSet(np.ones((3, 1)), np.ones((3, 1, 1)), [0, 3])
    with pytest.raises(ValueError, match=r"Xs\[0\] must be 2-D"):
        TaskSet.from_arrays([np.ones(3)], [np.ones(3)])
    with pytest.raises(ValueError, match=r"Xs\[1\] must have 2 columns like Xs\[0\]"):
        TaskSet.from_arrays([np.ones((2, 2)), np.ones((2, 3))], [np.ones(2)] * 2)
    with pytest.raises(ValueError, match=r"ys\[1\] must have the trailing shape"):
        TaskSet.from_arrays([np.ones((2, 2))] * 2, [np.ones(2), np.ones((2, 1))])
    with pytest.raises(ValueError, match="groups must be 1-D"):
        TaskSet.from_groups(np.ones((2, 1)), np.ones(2), [[0, 1]])


def test_non_numeric_inputs_are_type_errors():
    with pytest.raises(TypeError, match="X must hold real numbers"):
        TaskSet([["a"]], [1.0], [0, 1])
    with pytest.raises(TypeError, match="y must hold real numbers"):
        TaskSet([[1.0]], [1j], [0, 1])
    with pytest.raises(TypeError, match="Xs must be a sequence"):
        TaskSet.from_arrays(3, [1.0])
    with pytest.raises(TypeError, match="groups must hold integers or strings"):
        TaskSet.from_groups([[1.0]], [1.0], np.array([None], dtype=object))


@pytest.mark.parametrize("offsets, match", [
    ([1, 3], "offsets must start at 0"),
    ([0, 2, 2, 3], "strictly increasing"),
    ([0, 2, 1, 3], "strictly increasing"),
    ([0, 2], "offsets must end at the number of rows of X"),
    ([0, 4], "offsets must end at the number of rows of X"),
    ([0], "offsets must have at least 2 entries"),
    ([[0, 3]], "offsets must be 1-D"),
])
def test_bad_offsets_are_value_errors(offsets, match):
    with pytest.raises(ValueError, match=match):
        TaskSet(np.ones((3, 1)), np.ones(3), offsets)


def test_offsets_must_be_integers():
    with pytest.raises(TypeError, match="offsets must hold integers"):
        TaskSet(np.ones((3, 1)), np.ones(3), [0.0, 3.0])


@pytest.mark.parametrize("n_support, err, match", [
    (-1, ValueError, "n_support must be >= 0"),
    (3, ValueError, "n_support must be <= the size of every task.*task 0 has 2 rows"),
    ([1, 2], ValueError, "n_support must have one entry per task"),
    ([1, 5, 0], ValueError, r"n_support\[1\] must be in \[0, 4\]"),
    ([1, -1, 0], ValueError, r"n_support\[1\]"),
    (1.0, TypeError, "n_support must hold integers"),
    (True, TypeError, "n_support must be an integer"),
    ([1.0, 2.0, 0.0], TypeError, "n_support must hold integers"),
])
def test_bad_n_support(n_support, err, match):
    Xs, ys = ragged_arrays()
    with pytest.raises(err, match=match):
        TaskSet.from_arrays(Xs, ys, n_support=n_support)


def test_bad_task_ids():
    with pytest.raises(ValueError, match="task_ids must have one entry per task"):
        TaskSet(np.ones((2, 1)), np.ones(2), [0, 1, 2], task_ids=[0])
    with pytest.raises(ValueError, match="task_ids must be >= 0"):
        TaskSet(np.ones((2, 1)), np.ones(2), [0, 1, 2], task_ids=[0, -1])
    with pytest.raises(TypeError, match="task_ids must hold integers"):
        TaskSet(np.ones((2, 1)), np.ones(2), [0, 1, 2], task_ids=[0.0, 1.0])


# --- check_labels ---------------------------------------------------------------------------------
def labelled(y, offsets):
    y = np.asarray(y, dtype=float)
    return TaskSet(np.zeros((len(y), 1)), y, offsets)


def test_check_labels_accepts_fitting_labels():
    labelled([0, 1, 1, 0], [0, 2, 4]).check_labels("logistic", 1)
    labelled([0, 2, 1, 2], [0, 2, 4]).check_labels("cross_entropy", 3)
    labelled([0.3, -2.0], [0, 2]).check_labels("mse", 1)
    TaskSet(np.zeros((2, 1)), np.zeros((2, 1)), [0, 2]).check_labels("mse", 1)
    TaskSet(np.zeros((2, 1)), np.zeros((2, 3)), [0, 2]).check_labels("mse", 3)


def test_check_labels_logistic_names_task_and_row():
    ts = labelled([0, 1, 1, 0, 2, 1], [0, 2, 6])
    with pytest.raises(ValueError, match=r"^y must hold labels in \{0, 1\}.*task 1 \(task_id 1\) "
                                         r"row 2 has 2\.0"):
        ts.check_labels("logistic", 1)
    # after subset, the position and the original task_id differ: both are named
    with pytest.raises(ValueError, match=r"task 0 \(task_id 1\) row 2"):
        ts.subset([1]).check_labels("logistic", 1)


def test_check_labels_cross_entropy():
    with pytest.raises(ValueError, match=r"^y must hold integer labels in \[0, 3\).*task 0 "
                                         r"\(task_id 0\) row 1 has 1\.5"):
        labelled([0, 1.5, 2], [0, 3]).check_labels("cross_entropy", 3)
    with pytest.raises(ValueError, match=r"task 1 \(task_id 1\) row 0 has 3\.0"):
        labelled([0, 1, 3], [0, 2, 3]).check_labels("cross_entropy", 3)
    with pytest.raises(ValueError, match=r"row 0 has -1\.0"):
        labelled([-1, 1], [0, 2]).check_labels("cross_entropy", 2)
    with pytest.raises(ValueError, match="^y must be 1-D"):
        TaskSet(np.zeros((2, 1)), np.zeros((2, 2)), [0, 2]).check_labels("cross_entropy", 2)
    with pytest.raises(ValueError, match="n_outputs must be >= 2"):
        labelled([0, 1], [0, 2]).check_labels("cross_entropy", 1)


def test_check_labels_mse_shapes():
    with pytest.raises(ValueError, match=r"^y must have shape \(2, 3\)"):
        labelled([0, 1], [0, 2]).check_labels("mse", 3)
    with pytest.raises(ValueError, match=r"^y must have shape \(2,\) or \(2, 1\)"):
        TaskSet(np.zeros((2, 1)), np.zeros((2, 2)), [0, 2]).check_labels("mse", 1)


def test_check_labels_argument_errors():
    ts = labelled([0, 1], [0, 2])
    with pytest.raises(ValueError, match="loss must be one of"):
        ts.check_labels("hinge", 1)
    with pytest.raises(ValueError, match="n_outputs must be 1 for loss='logistic'"):
        ts.check_labels("logistic", 2)
    with pytest.raises(TypeError, match="n_outputs must be an integer"):
        ts.check_labels("mse", 1.0)
    with pytest.raises(ValueError, match="^y must be 1-D"):
        TaskSet(np.zeros((2, 1)), np.zeros((2, 1)), [0, 2]).check_labels("logistic", 1)


# --- task families --------------------------------------------------------------------------------
def test_sinusoid_shapes_split_and_dtype():
    ts = tasks.sinusoid(6, k_support=5, k_query=7)
    assert (ts.n_tasks, ts.n_rows, ts.n_features, ts.n_outputs) == (6, 72, 1, 1)
    assert ts.dtype == np.float32 and ts.y.dtype == np.float32
    np.testing.assert_array_equal(ts.offsets, np.arange(7) * 12)
    np.testing.assert_array_equal(ts.n_support, [5] * 6)
    np.testing.assert_array_equal(ts.n_query, [7] * 6)
    assert tasks.sinusoid(2, dtype=np.float64).dtype == np.float64


def test_sinusoid_values_follow_the_drawn_parameters():
    ts = tasks.sinusoid(50, k_support=4, k_query=6, amplitude=(1.0, 2.0), phase=(0.5, 1.0),
                        x_range=(-1.0, 3.0), seed=4, dtype=np.float64)
    A, phi = tasks.sinusoid_params(50, amplitude=(1.0, 2.0), phase=(0.5, 1.0), seed=4)
    assert A.shape == phi.shape == (50,)
    assert A.min() >= 1.0 and A.max() <= 2.0 and phi.min() >= 0.5 and phi.max() <= 1.0
    assert ts.X.min() >= -1.0 and ts.X.max() <= 3.0
    for i in range(50):
        X_i, y_i = ts[i]
        np.testing.assert_allclose(y_i, A[i] * np.sin(X_i[:, 0] - phi[i]), rtol=1e-12)
        assert np.abs(y_i).max() <= A[i]


def test_sinusoid_default_ranges_bound_y():
    ts = tasks.sinusoid(200)
    assert np.abs(ts.y).max() <= 5.0
    assert ts.X.min() >= -5.0 and ts.X.max() <= 5.0
    # tasks differ: the amplitude varies across tasks
    peaks = np.array([np.abs(y).max() for _, y in ts])
    assert peaks.std() > 0.5


def test_sinusoid_is_deterministic_for_a_seed():
    a, b, c = tasks.sinusoid(5, seed=11), tasks.sinusoid(5, seed=11), tasks.sinusoid(5, seed=12)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)


def test_sinusoid_argument_errors():
    with pytest.raises(ValueError, match="n_tasks must be >= 1"):
        tasks.sinusoid(0)
    with pytest.raises(TypeError, match="n_tasks must be an integer"):
        tasks.sinusoid(2.0)
    with pytest.raises(ValueError, match="k_support must be >= 0"):
        tasks.sinusoid(2, k_support=-1)
    with pytest.raises(ValueError, match=r"k_support \+ k_query must be >= 1"):
        tasks.sinusoid(2, k_support=0, k_query=0)
    with pytest.raises(ValueError, match="amplitude must have lo <= hi"):
        tasks.sinusoid(2, amplitude=(3.0, 1.0))
    with pytest.raises(ValueError, match="phase must be a pair"):
        tasks.sinusoid(2, phase=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match=r"x_range\[1\] must be finite"):
        tasks.sinusoid(2, x_range=(0.0, np.inf))
    with pytest.raises(TypeError, match="dtype"):
        tasks.sinusoid(2, dtype=np.int64)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        tasks.sinusoid(2, seed=-3)


def test_linear_family_shapes_and_ragged_sizes():
    ts = tasks.linear_family(8, n_features=4, n_rows=30, n_support=10)
    assert (ts.n_tasks, ts.n_rows, ts.n_features) == (8, 240, 4)
    assert ts.dtype == np.float64
    np.testing.assert_array_equal(ts.n_query, [20] * 8)
    rag = tasks.linear_family(40, n_features=3, n_rows=(5, 9), n_support=5, seed=2,
                              dtype=np.float32)
    assert rag.dtype == np.float32
    assert rag.task_sizes.min() >= 5 and rag.task_sizes.max() <= 9
    assert len(np.unique(rag.task_sizes)) > 1              # really ragged
    assert rag.n_rows == rag.task_sizes.sum()


def test_linear_family_without_noise_is_exactly_linear_in_the_task_parameters():
    ts = tasks.linear_family(5, n_features=3, n_rows=12, relatedness_noise=0.5, noise=0.0, seed=7)
    theta_star, thetas = tasks.linear_family_params(5, n_features=3, relatedness_noise=0.5, seed=7)
    assert theta_star.shape == (3,) and thetas.shape == (5, 3)
    for i in range(5):
        X_i, y_i = ts[i]
        np.testing.assert_allclose(y_i, X_i @ thetas[i], rtol=1e-12, atol=1e-12)
        fitted = np.linalg.lstsq(X_i, y_i, rcond=None)[0]
        np.testing.assert_allclose(fitted, thetas[i], atol=1e-10)


def test_linear_family_relatedness_and_noise_scale():
    _, same = tasks.linear_family_params(4, n_features=6, relatedness_noise=0.0, seed=1)
    np.testing.assert_array_equal(same, np.broadcast_to(same[0], same.shape))
    star, spread = tasks.linear_family_params(2000, n_features=6, relatedness_noise=0.3, seed=1)
    assert abs((spread - star).std() - 0.3) < 0.01
    ts = tasks.linear_family(3, n_features=2, n_rows=4000, noise=0.5, seed=5)
    _, thetas = tasks.linear_family_params(3, n_features=2, seed=5)
    resid = np.concatenate([ts[i][1] - ts[i][0] @ thetas[i] for i in range(3)])
    assert abs(resid.std() - 0.5) < 0.02


def test_logistic_family_labels_are_bernoulli_of_the_logit():
    ts = tasks.logistic_family(3, n_features=2, n_rows=5000, relatedness_noise=0.2, seed=3)
    assert set(np.unique(ts.y)) == {0.0, 1.0}
    ts.check_labels("logistic", 1)
    _, thetas = tasks.linear_family_params(3, n_features=2, relatedness_noise=0.2, seed=3)
    for i in range(3):
        X_i, y_i = ts[i]
        p = 1.0 / (1.0 + np.exp(-X_i @ thetas[i]))
        # the label frequency matches the mean probability (5000 rows: s.e. < 0.01)
        assert abs(y_i.mean() - p.mean()) < 0.03
        # and labels agree with the sign of the logit more often than not
        assert np.mean((X_i @ thetas[i] > 0) == (y_i == 1)) > 0.6


def test_families_are_deterministic_for_a_seed():
    for family in (tasks.linear_family, tasks.logistic_family):
        a = family(4, n_rows=(3, 8), seed=9)
        b = family(4, n_rows=(3, 8), seed=9)
        c = family(4, n_rows=(3, 8), seed=10)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        assert not np.array_equal(a.X[:3], c.X[:3])


def test_family_argument_errors():
    with pytest.raises(ValueError, match="n_features must be >= 1"):
        tasks.linear_family(2, n_features=0)
    with pytest.raises(ValueError, match="n_rows must be >= 1"):
        tasks.linear_family(2, n_rows=0)
    with pytest.raises(ValueError, match="n_rows must have lo <= hi"):
        tasks.linear_family(2, n_rows=(9, 3))
    with pytest.raises(ValueError, match="n_rows must be a pair"):
        tasks.logistic_family(2, n_rows=(1, 2, 3))
    with pytest.raises(TypeError, match=r"n_rows\[0\] must be an integer"):
        tasks.linear_family(2, n_rows=(1.5, 3))
    with pytest.raises(TypeError, match="n_rows must be an integer or a pair"):
        tasks.linear_family(2, n_rows=7.0)
    with pytest.raises(ValueError, match="relatedness_noise must be >= 0"):
        tasks.logistic_family(2, relatedness_noise=-0.1)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        tasks.linear_family(2, noise=-1.0)
    with pytest.raises(ValueError, match="n_support must be <= the size of every task"):
        tasks.linear_family(2, n_rows=(3, 5), n_support=6)
    with pytest.raises(ValueError, match="n_tasks must be >= 1"):
        tasks.linear_family_params(0)


def test_query_rows_are_each_tasks_rows_after_its_support():
    ts = TaskSet(np.arange(20.0).reshape(10, 2), np.arange(10.0), [0, 4, 5, 10],
                 n_support=[1, 1, 5])
    rows, counts = ts.query_rows()
    np.testing.assert_array_equal(rows, [1, 2, 3])
    np.testing.assert_array_equal(counts, [3, 0, 0])
    rows, counts = ts.query_rows(all_when_none=True)     # tasks 1 and 2 have none: all rows
    np.testing.assert_array_equal(rows, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(counts, [3, 1, 5])
    np.testing.assert_array_equal(ts.X[rows[:3]], ts.query(0)[0])   # the per-task view
