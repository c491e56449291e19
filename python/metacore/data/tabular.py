"""User data as a TaskSet: a CSV file or a table (pandas DataFrame, or a dict of columns) whose
rows carry a task column.

Tasks are ordered by sorted task value (as :meth:`TaskSet.from_groups`), rows keep their file
order within a task and the first ``n_support`` rows of each task are its support rows. pandas is
optional: CSV files are read with the standard library.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from .taskset import TaskSet

__all__ = ["from_csv", "from_dataframe"]


def _names(name, value):
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise TypeError(f"{name} must be a column name or a non-empty list of column names, "
                        f"got {value!r}")
    return items


def _build(columns, get, task, target, features, n_support, dtype, source):
    """TaskSet from ``get(name) -> 1-D array`` over the table's ``columns``."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a column name, got {task!r}")
    targets = _names("target", target)
    if features is None:
        features = [c for c in columns if c != task and c not in targets]
    features = _names("features", features)
    for name, cols in (("task", [task]), ("target", targets), ("features", features)):
        missing = [c for c in cols if c not in columns]
        if missing:
            raise ValueError(f"{name}: column {missing[0]!r} is not in {source} "
                             f"(columns: {', '.join(map(str, columns))})")

    def floats(col):
        try:
            return np.asarray(get(col), dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"column {col!r} of {source} must be numeric: {exc}") from None

    X = np.column_stack([floats(c) for c in features])
    y = floats(targets[0]) if len(targets) == 1 else np.column_stack([floats(c) for c in targets])
    groups = np.asarray(get(task))
    if groups.dtype == object or groups.dtype.kind == "U":
        groups = groups.astype(str)
        try:  # numeric task ids read from text sort as numbers, not as strings
            groups = groups.astype(np.int64)
        except ValueError:
            pass
    return TaskSet.from_groups(X, y, groups, n_support=n_support, dtype=dtype)


def from_dataframe(df, *, task, target, features=None, n_support=None, dtype=None):
    """A TaskSet from a pandas DataFrame (or a dict of equal-length columns).

    task: the column naming each row's task; target: the column (or list of columns) to predict;
    features: the input columns (default: every other column); n_support: support rows per task
    (None: all rows; an int; or one int per task in sorted task order).
    """
    columns = [str(c) for c in (df.columns if hasattr(df, "columns") else df.keys())]
    if hasattr(df, "columns"):
        get = lambda c: df[c].to_numpy()  # noqa: E731
    else:
        get = lambda c: df[c]  # noqa: E731
    return _build(columns, get, task, target, features, n_support, dtype, "the table")


def from_csv(path, *, task, target, features=None, n_support=None, dtype=None, delimiter=","):
    """A TaskSet from a CSV file with a header row (arguments as :func:`from_dataframe`)."""
    path = os.fspath(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path} is empty (a header row is needed)") from None
        rows = [r for r in reader if r]
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if bad is not None:
        raise ValueError(f"{path}: line {bad + 2} has {len(rows[bad])} fields, the header "
                         f"{len(header)}")
    table = {h: [r[j].strip() for r in rows] for j, h in enumerate(header)}
    return _build(header, lambda c: table[c], task, target, features, n_support, dtype, path)
