"""Task families: digits episodes, sinusoid and linear/logistic statistics, user data."""

import numpy as np
import pytest

import metacore as mc
from metacore import tasks



def _need_sklearn():
    pytest.importorskip("sklearn")


# --- digits --------------------------------------------------------------------------------------
def test_digits_episodes_have_the_promised_shapes_labels_and_ranges():
    _need_sklearn()
    ts = tasks.digits(7, n_way=5, k_shot=2, q_query=3, seed=1)
    assert (ts.n_tasks, ts.n_features, ts.dtype) == (7, 64, np.float32)
    np.testing.assert_array_equal(ts.task_sizes, 5 * (2 + 3))
    np.testing.assert_array_equal(ts.n_support, 10)
    assert ts.X.min() >= 0.0 and ts.X.max() <= 1.0
    for i in range(ts.n_tasks):
        _, ys = ts.support(i)
        _, yq = ts.query(i)
        # labels remapped per episode: 0..n_way-1, k_shot support and q_query query rows each
        np.testing.assert_array_equal(np.bincount(ys.astype(int)), [2] * 5)
        np.testing.assert_array_equal(np.bincount(yq.astype(int)), [3] * 5)


def test_digits_split_keeps_rotations_and_6_with_9_on_one_side():
    _need_sklearn()
    train, test = tasks.digits_classes("train"), tasks.digits_classes("test")
    assert not set(train) & set(test)
    assert len(train) + len(test) == 40
    for side in (train, test):
        digits = set(side // 4)
        assert all({4 * d + r for r in range(4)} <= set(side) for d in digits)
        assert (6 in digits) == (9 in digits)
    with pytest.raises(ValueError, match="6 and 9"):
        tasks.digits_classes("train", train_digits=(0, 1, 6))
    np.testing.assert_array_equal(tasks.digits_classes("test", rotations=False), [2, 3, 5, 7])


def test_digits_test_episodes_hold_only_unseen_classes():
    _need_sklearn()
    from metacore.data.digits import digit_images
    images, labels = digit_images()
    ts = tasks.digits(20, n_way=4, k_shot=1, q_query=2, classes="test", rotations=False, seed=0)
    test_digits = set(tasks.digits_classes("test", rotations=False).tolist())
    flat = images.reshape(len(images), 64).astype(np.float32)
    lookup = {row.tobytes(): int(d) for row, d in zip(flat, labels)}
    seen = {lookup[row.tobytes()] for row in ts.X}
    assert seen <= test_digits


def test_digits_rotations_are_rotated_images_and_seeded():
    _need_sklearn()
    a = tasks.digits(3, seed=5)
    b = tasks.digits(3, seed=5)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, tasks.digits(3, seed=6).X)
    from metacore.data.digits import digit_images
    images, _ = digit_images()
    originals = {images[i].astype(np.float32).tobytes() for i in range(len(images))}
    rot_counts = [0, 0]
    for row in tasks.digits(10, classes="train", seed=0).X:
        img = row.reshape(8, 8)
        rot_counts[img.tobytes() in originals] += 1
    assert rot_counts[0] > 0 and rot_counts[1] > 0   # rotated and unrotated classes both drawn


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_way=1), "n_way"), (dict(k_shot=0), "k_shot"), (dict(n_way=17, classes="test"),
                                                            "n_way"),
    (dict(classes=[0, 0, 1, 2, 3]), "distinct"), (dict(classes="val"), "split"),
    (dict(k_shot=100, q_query=100), "k_shot \\+ q_query")])
def test_digits_bad_arguments_are_named(kwargs, match):
    _need_sklearn()
    with pytest.raises(ValueError, match=match):
        tasks.digits(2, **kwargs)


# --- sinusoid, linear, logistic ------------------------------------------------------------------
def test_sinusoid_tasks_stay_in_their_ranges():
    ts = tasks.sinusoid(400, k_support=5, k_query=7, seed=3, dtype=np.float64)
    A, phi = tasks.sinusoid_params(400, seed=3)
    assert 0.1 <= A.min() and A.max() <= 5.0 and 0.0 <= phi.min() and phi.max() <= np.pi
    assert -5.0 <= ts.X.min() and ts.X.max() <= 5.0
    x, y = ts.X[:, 0].reshape(400, 12), ts.y.reshape(400, 12)
    np.testing.assert_allclose(y, A[:, None] * np.sin(x - phi[:, None]), atol=1e-12)
    np.testing.assert_array_equal(ts.n_support, 5)


def test_linear_family_relatedness_is_controlled_by_the_noise():
    _, same = tasks.linear_family_params(50, n_features=4, relatedness_noise=0.0, seed=0)
    assert np.ptp(same, axis=0).max() == 0.0           # every task is θ*
    spreads = [tasks.linear_family_params(2000, n_features=4, relatedness_noise=s,
                                          seed=0)[1].std(axis=0).mean() for s in (0.1, 1.0)]
    np.testing.assert_allclose(spreads, [0.1, 1.0], rtol=0.05)
    ts = tasks.logistic_family(10, n_features=4, n_rows=30, n_support=10, seed=0)
    assert set(np.unique(ts.y)) <= {0.0, 1.0} and (ts.n_query == 20).all()


# --- user data -----------------------------------------------------------------------------------
CSV = "task,a,b,y\nt2,1,2,3\nt1,4,5,6\nt2,7,8,9\nt1,1,1,1\nt1,2,2,2\n"


def test_from_csv_groups_rows_by_task_in_file_order(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(CSV)
    ts = tasks.from_csv(path, task="task", target="y", n_support=1)
    np.testing.assert_array_equal(ts.offsets, [0, 3, 5])            # t1, then t2
    np.testing.assert_array_equal(ts.X, [[4, 5], [1, 1], [2, 2], [1, 2], [7, 8]])
    np.testing.assert_array_equal(ts.y, [6, 1, 2, 3, 9])
    np.testing.assert_array_equal(ts.n_support, [1, 1])
    only_b = tasks.from_csv(path, task="task", target="y", features=["b"])
    np.testing.assert_array_equal(only_b.X[:, 0], [5, 1, 2, 2, 8])


def test_numeric_task_ids_from_text_sort_as_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("task,x,y\n10,1,1\n2,2,2\n")
    np.testing.assert_array_equal(tasks.from_csv(path, task="task", target="y").X[:, 0], [2, 1])


def test_bad_csv_and_columns_are_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(CSV)
    with pytest.raises(ValueError, match="'z'"):
        tasks.from_csv(path, task="task", target="z")
    path.write_text("task,a,y\nt,1,oops\n")
    with pytest.raises(ValueError, match="'y'.*numeric"):
        tasks.from_csv(path, task="task", target="y")
    path.write_text("task,a,y\nt,1\n")
    with pytest.raises(ValueError, match="line 2"):
        tasks.from_csv(path, task="task", target="y")


def test_from_dataframe_accepts_dicts_and_pandas():
    cols = {"g": np.array([1, 0, 1]), "x": [0.5, 1.5, 2.5], "y": [1.0, 2.0, 3.0]}
    ts = tasks.from_dataframe(cols, task="g", target="y")
    np.testing.assert_array_equal(ts.X[:, 0], [1.5, 0.5, 2.5])
    pd = pytest.importorskip("pandas")
    ts2 = tasks.from_dataframe(pd.DataFrame(cols), task="g", target="y")
    np.testing.assert_array_equal(ts2.X, ts.X)
    assert isinstance(ts2, mc.TaskSet)


@pytest.mark.parametrize("make", [
    lambda: mc.tasks.sinusoid(2**62),
    lambda: mc.tasks.sinusoid(10, k_support=2**60),
    lambda: mc.tasks.linear_family(2**40, n_features=4),
    lambda: mc.tasks.logistic_family(100, n_features=10, n_rows=2**40),
])
def test_task_sets_beyond_memory_are_refused_naming_the_arguments(make):
    """Sizes the machine cannot hold end in a MemoryError that names the arguments asking for
    them, raised before anything is allocated (not NumPy's 'array is too big')."""
    with pytest.raises(MemoryError, match="n_tasks=.*(k_support|n_features|n_rows)"):
        make()
