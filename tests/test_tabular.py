"""The tabular loaders: task ids kept exactly as written, what is ambiguous refused with the column
named, support/shuffle/stratify splits, standardisation fitted on training tasks only, task names
carried through derived sets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacore as mc
from metacore.data.tabular import Standardizer, from_csv, from_dataframe

pd = pytest.importorskip("pandas")


def write(tmp_path, text, name="t.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- task ids, names -----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.text(alphabet="0123ab", min_size=1, max_size=3), min_size=1, max_size=30),
       values=st.data())
def test_csv_task_ids_are_kept_exactly_as_written(tmp_path, ids, values):
    xs = values.draw(st.lists(st.floats(-1e6, 1e6), min_size=len(ids), max_size=len(ids)))
    lines = ["task,x,y"] + [f"{t},{x!r},{i}" for i, (t, x) in enumerate(zip(ids, xs))]
    ts = from_csv(write(tmp_path, "\n".join(lines)), task="task", target="y")
    assert sorted(ts.names) == sorted(set(ids))
    for name, size in zip(ts.names, ts.task_sizes):
        assert ids.count(name) == size
    for i, name in enumerate(ts.names):     # rows keep their file order within a task
        expected = [x for t, x in zip(ids, xs) if t == name]
        np.testing.assert_array_equal(ts[i][0][:, 0], expected)


def test_leading_zero_ids_are_not_merged(tmp_path):
    ts = from_csv(write(tmp_path, "task,x,y\n01,1,0\n1,2,1\n1,3,1\n"), task="task", target="y")
    assert ts.names == ("01", "1") and ts.task_sizes.tolist() == [1, 2]


def test_integer_ids_sort_numerically_and_names_stay_text(tmp_path):
    ts = from_csv(write(tmp_path, "task,x,y\n10,1,0\n2,2,1\n"), task="task", target="y")
    assert ts.names == ("2", "10")


def test_a_utf8_bom_does_not_hide_the_first_column(tmp_path):
    path = write(tmp_path, "\ufefftask,x,y\na,1,0\n")
    assert from_csv(path, task="task", target="y").names == ("a",)


@pytest.mark.parametrize("text, match", [
    ("task,x,y\n,1,0\na,2,1\n", "task column 'task': line 2 of {path} has no task id"),
    ("task,x,x,y\na,1,2,0\n", "column name 'x' more than once"),
    ("task,x,y\na,1+2j,0\n", "column 'x': line 2 of {path} has '1+2j', a complex number"),
    ("task,x,y\na,abc,0\n", "column 'x' must be numeric: line 2 of {path} has 'abc'"),
    ("task,x,y\na,1,0\na,nan,0\n", "column 'x' must be finite: line 3 of {path} has nan"),
    # what Python's float() also reads: digit separators and digits of other scripts
    ("task,x,y\na,1_000,0\n", "column 'x' must be numeric: line 2 of {path} has '1_000'"),
    ("task,x,y\na,１２,0\n", "column 'x' must be numeric: line 2 of {path} has '１２'"),
    ("task,x,y\na,1,٣\n", "column 'y' must be numeric: line 2 of {path} has '٣'"),
])
def test_csv_refuses_what_is_ambiguous_naming_the_column(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        from_csv(path, task="task", target="y")
    assert match.format(path=path) in str(err.value)


def test_dataframe_refusals_name_the_column():
    base = {"task": ["a", "b"], "x": [1.0, 2.0], "y": [0.0, 1.0]}
    with pytest.raises(ValueError, match=r"task column 'task': row 1 of the table has no task id"):
        from_dataframe(pd.DataFrame(dict(base, task=["a", None])), task="task", target="y")
    with pytest.raises(ValueError, match=r"task column 'task': row 0 of the table has no task id"):
        from_dataframe(pd.DataFrame(dict(base, task=[np.nan, 1.0])), task="task", target="y")
    with pytest.raises(ValueError, match=r"column 'x'.*complex"):
        from_dataframe(pd.DataFrame(dict(base, x=[1 + 2j, 2.0])), task="task", target="y")
    with pytest.raises(ValueError, match="mixes text and numbers"):
        from_dataframe(dict(base, task=["1", 1]), task="task", target="y")
    dup = pd.DataFrame([[1, 2.0, 3.0, 0.0]], columns=["task", "x", "x", "y"])
    with pytest.raises(ValueError, match="'x' more than once"):
        from_dataframe(dup, task="task", target="y")


# --- where an error is: the file's 1-based line, counted independently -------------------------
BAD_VALUES = {  # kind -> (the bad row's fields for columns task,x,y; what the message says)
    "numeric": (["a", "abc", "0"], "column 'x' must be numeric: {at} has 'abc'"),
    "complex": (["a", "1+2j", "0"], "column 'x': {at} has '1+2j', a complex number"),
    "finite": (["a", "inf", "0"], "column 'x' must be finite: {at} has inf"),
    "target": (["a", "1", "zz"], "column 'y' must be numeric: {at} has 'zz'"),
    "task id": (["", "1", "0"], "task column 'task': {at} has no task id"),
    "fields": (["a", "1"], "{at} has 2 fields, the header 3"),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(BAD_VALUES)), n_rows=st.integers(1, 12), data=st.data())
def test_every_csv_error_cites_the_files_line(tmp_path, kind, n_rows, data):
    """Good rows around one bad row at a random place, blank lines and quoted fields that span
    two lines among them: the message names "line N of PATH" with N the bad row's first line in
    the file (counted here from the text written, 1-based)."""
    bad_at = data.draw(st.integers(0, n_rows - 1))
    text = "task,x,y\n"
    for i in range(n_rows):
        if data.draw(st.booleans()):
            text += "\n"                                           # a blank line (skipped)
        if i == bad_at:
            line = text.count("\n") + 1
            text += ",".join(BAD_VALUES[kind][0]) + "\n"
        elif data.draw(st.booleans()):
            text += f'"t{i % 3}\nx",{i}.5,1\n'                      # a task id over two lines
        else:
            text += f"t{i % 3},{i}.5,1\n"
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        from_csv(path, task="task", target="y")
    assert BAD_VALUES[kind][1].format(at=f"line {line} of {path}") in str(err.value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.binary(max_size=200), tail=st.binary(max_size=200),
       bad=st.sampled_from([b"\xff", b"\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"]))
def test_a_file_that_is_not_utf8_is_named(tmp_path, head, tail, bad):
    """Bytes that are not UTF-8 anywhere in the file (a binary file, or Latin-1 text): a
    ValueError naming the file and saying it is not UTF-8 text, never a bare decode error."""
    path = tmp_path / "data.csv"
    path.write_bytes(b"task,x,y\n" + head + bad + tail)
    with pytest.raises(ValueError) as err:
        from_csv(path, task="task", target="y")
    msg = str(err.value)
    line = int(msg.split(" ", 2)[1])       # the first undecodable byte is in head or is bad
    assert msg == f"line {line} of {path} is not UTF-8 text" + msg[msg.index(": byte "):]
    assert 2 <= line <= (b"task,x,y\n" + head).count(b"\n") + 1


def test_a_latin1_file_is_named_not_utf8(tmp_path):
    path = write(tmp_path, "task,x,y\na,1,0\n\ncafé,1,0\n", encoding="latin-1")
    with pytest.raises(ValueError) as err:
        from_csv(path, task="task", target="y")
    assert str(err.value).startswith(f"line 4 of {path} is not UTF-8 text: byte 19 of the file, "
                                     f"b'\\xe9', cannot be decoded")


@pytest.mark.parametrize("empty", [[], ()])
def test_an_empty_feature_list_is_refused_naming_features(tmp_path, empty):
    """features=[] is not "every other column" (that is None): refused, naming the argument."""
    path = write(tmp_path, "task,x,z,y\na,1,2,0\nb,2,3,1\n")
    for load in (lambda f: from_csv(path, task="task", target="y", features=f),
                 lambda f: from_dataframe(pd.read_csv(path), task="task", target="y",
                                          features=f)):
        with pytest.raises(ValueError, match=r"^features must name at least one column"):
            load(empty)
        assert load(None).n_features == 2 and load(["z"]).n_features == 1


def test_integer_column_labels_work():
    df = pd.DataFrame({0: [1, 1, 2], 1: [0.5, 1.5, 2.5], 2: [0.0, 1.0, 0.0]})
    ts = from_dataframe(df, task=0, target=2)
    assert ts.names == ("1", "2") and ts.n_features == 1


# --- splits ------------------------------------------------------------------------------------
def test_support_as_fraction_or_count_shuffle_and_stratify():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"task": np.repeat(["a", "b"], 20), "x": np.arange(40.0),
                       "y": np.tile(np.repeat([0.0, 1.0], [15, 5]), 2)})
    ts = from_dataframe(df, task="task", target="y", support=0.5)
    assert ts.n_support.tolist() == [10, 10]
    np.testing.assert_array_equal(ts.support(0)[0][:, 0], np.arange(10.0))   # file order
    assert from_dataframe(df, task="task", target="y", support=3).n_support.tolist() == [3, 3]
    s1 = from_dataframe(df, task="task", target="y", support=0.5, shuffle=True, seed=1)
    s2 = from_dataframe(df, task="task", target="y", support=0.5, shuffle=True, seed=1)
    np.testing.assert_array_equal(s1.X, s2.X)
    assert not np.array_equal(s1.X, ts.X)
    strat = from_dataframe(df, task="task", target="y", support=0.4, stratify=True, seed=2)
    for i in range(2):
        assert np.sum(strat.support(i)[1] == 1.0) == 2       # 5 of 20 positives, 8 support rows
    with pytest.raises(ValueError, match="support"):
        from_dataframe(df, task="task", target="y", support=1.5)
    assert rng is not None


def test_names_follow_subset_split_and_pickle():
    df = pd.DataFrame({"task": list("abcdef"), "x": np.arange(6.0), "y": np.zeros(6)})
    ts = from_dataframe(df, task="task", target="y")
    train, test = ts.split_tasks(test_fraction=0.5, seed=0)
    assert sorted(train.names + test.names) == list("abcdef")
    assert ts.subset([2, 0]).names == ("c", "a")
    assert pickle.loads(pickle.dumps(test)).names == test.names
    assert ts.astype(np.float32).names == ts.names
    assert mc.TaskSet.from_arrays([np.ones((1, 1))], [np.ones(1)]).names == ("0",)


# --- standardisation ---------------------------------------------------------------------------
def test_standardize_is_fitted_on_training_tasks_and_applied_to_others(tmp_path):
    train = write(tmp_path, "task,x,y\na,0,0\na,2,1\nb,4,0\nb,6,1\n", "train.csv")
    test = write(tmp_path, "task,x,y\nc,100,0\nc,3,1\n", "test.csv")
    scaler = Standardizer()
    tr = from_csv(train, task="task", target="y", standardize=scaler)
    np.testing.assert_allclose(scaler.mean_, [3.0])
    np.testing.assert_allclose(tr.X.mean(), 0.0, atol=1e-12)
    te = from_csv(test, task="task", target="y", standardize=scaler)
    np.testing.assert_allclose(te.X[:, 0], (np.array([100.0, 3.0]) - 3.0) / np.sqrt(5.0))
    again = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_allclose(again.transform([[3.0]]), [[0.0]])
    only_a = Standardizer()
    from_csv(train, task="task", target="y", standardize=only_a, fit_tasks=["a"])
    np.testing.assert_allclose(only_a.mean_, [1.0])
    with pytest.raises(ValueError, match="fit_tasks: task 'z'"):
        from_csv(train, task="task", target="y", standardize=Standardizer(), fit_tasks=["z"])
    # one id given alone is that task, not its characters ("12" is not tasks "1" and "2")
    ids = write(tmp_path, "task,x,y\n1,0,0\n2,10,1\n12,150,0\n12,150,1\n", "ids.csv")
    for one in ("12", 12):
        alone = Standardizer()
        from_csv(ids, task="task", target="y", standardize=alone, fit_tasks=one)
        np.testing.assert_allclose(alone.mean_, [150.0])


@given(exponent=st.integers(-300, 307), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_standardizer_is_exact_for_finite_columns_of_any_magnitude(exponent, seed):
    """Columns of huge or tiny finite values are scaled like their moderate twins (the
    squares in a plain variance overflow or underflow), never silently zeroed."""
    base = np.random.default_rng(seed).normal(size=(7, 3))
    X = base * 10.0 ** exponent
    s = Standardizer().fit(X)
    want = Standardizer().fit(base)
    np.testing.assert_allclose(s.transform(X), want.transform(base), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.scale_ / 10.0 ** exponent, base.std(axis=0), rtol=1e-9)


def test_task_ids_of_other_digits_stay_text(tmp_path):
    # '²'.isdigit() is True but int('²') fails: such ids are text, ordered as text
    ts = from_csv(write(tmp_path, "t,x,y\n²,1,2\n1,2,3\n10,3,4\n"), task="t", target="y")
    assert ts.names == ("1", "10", "²")


@pytest.mark.parametrize("table, match", [
    ({"t": [1, 1, 2], "a": [1.0, 2.0], "y": [0, 1, 0]},
     "columns must have equal lengths, got 't': 3, 'a': 2, 'y': 3"),
    ({"t": [1, 1], "a": 5, "y": [0, 1]}, "column 'a' of the table must be a sequence"),
    ({"t": [1, 1], "a": "ab", "y": [0, 1]}, "column 'a' of the table must be a sequence"),
    ({"t": [1, 1], "a": [10 ** 400, 1], "y": [0, 1]}, "integer beyond float64's range"),
])
def test_a_dict_of_columns_is_checked_like_a_dataframe(table, match):
    with pytest.raises(ValueError, match=match):
        from_dataframe(table, task="t", target="y")


def test_a_folder_given_as_the_csv_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; give the CSV file"):
        from_csv(tmp_path, task="t", target="y")
