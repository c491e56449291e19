"""User data as a TaskSet: a CSV file or a table (pandas DataFrame, or a dict of columns) whose
rows carry a task column.

- Task ids are kept exactly as written: the CSV ids "01" and "1" are two tasks, and every task's
  name (``TaskSet.names``) is its id as a string. Tasks are ordered by id, numerically when every
  id is an integer, else as strings. A missing task id is an error.
- Columns are named by their labels as the table has them (strings, or integers for a DataFrame
  with integer column labels); a duplicated column name, a UTF-8 byte-order mark (stripped), a
  complex, non-numeric or non-finite value are refused or handled explicitly, and every error
  names the column and where the value is: "line N of PATH" in a CSV file (1-based, the header
  is line 1, as editors count), "row i of the table" in a DataFrame (0-based, as it indexes).
- Within a task, rows keep their file order unless ``shuffle`` (or ``stratify``, which shuffles
  within classes); the first ``support`` rows of each task are its support rows.
- ``standardize``: a :class:`Standardizer`, fitted on the tasks of the first file it is given
  (or on ``fit_tasks`` of it) and applied, as stored, to every later file: the training tasks'
  scaling, never the test tasks'.

pandas is optional: CSV files are read with the standard library's csv module.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os

import numpy as np

from .. import _validation
from .taskset import TaskSet

__all__ = ["from_csv", "from_dataframe", "Standardizer", "stratified_order", "read_csv",
           "float_columns", "check_class_labels"]


class Standardizer:
    """Feature scaling x ↦ (x − mean) / scale, fitted once on training rows and kept.

    ``mean_`` and ``scale_`` (the population standard deviation, 1 for a constant column — also
    one constant but for rounding, spread ≤ n·eps·|mean|) are set
    by :meth:`fit`; ``to_dict``/``from_dict`` give plain data for checkpoints."""

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    @property
    def fitted(self) -> bool:
        return self.mean_ is not None

    def fit(self, X):
        # the shared checker: np.asarray(X, dtype=float64) dropped a complex part (a warning
        # only) and a mask, parsed strings, and turned NaN or None into "its spread exceeds the
        # float64 range"
        X = _validation.float_array("X", X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"the Standardizer is fitted on rows of features (n, d), n >= 1; "
                             f"got shape {X.shape}")
        # Moments of X / max|x| per column, scaled back: squares of values near 1e154 and above
        # would overflow and turn a finite column into zeros.
        big = np.abs(X).max(axis=0) if X.shape[0] else np.ones(X.shape[1:])
        big = np.where(big > 0, big, 1.0)
        with np.errstate(over="ignore"):
            mean = (X / big).mean(axis=0) * big
            scale = (X / big).std(axis=0) * big
        bad = np.flatnonzero(~np.isfinite(mean) | ~np.isfinite(scale))
        if bad.size:
            raise ValueError(f"feature column {int(bad[0])} cannot be standardized: its spread "
                             "exceeds the float64 range")
        # a column constant but for rounding (0.3 and 0.30000000000000004) has a spread of a few
        # ulps of its mean: scaled by it, rounding noise would become values of order 1; such a
        # column counts as constant (the bound scikit-learn's StandardScaler uses, n·eps·|mean|)
        noise = X.shape[0] * np.finfo(np.float64).eps * np.abs(mean)
        self.mean_ = mean
        self.scale_ = np.where((scale > noise) & (scale > 0), scale, 1.0)
        return self

    def transform(self, X):
        if not self.fitted:
            raise ValueError("the Standardizer is not fitted: give it to the loader of the "
                             "training tasks first (or call fit)")
        X = _validation.float_array("X", X, ndim=(1, 2), dtype=np.float64)
        if X.shape[-1] != self.mean_.shape[0]:
            raise ValueError(f"X has {X.shape[-1]} features, the Standardizer was fitted on "
                             f"{self.mean_.shape[0]}")
        return (X - self.mean_) / self.scale_

    def to_dict(self) -> dict:
        return {"mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, d):
        self = cls()
        self.mean_ = np.asarray(d["mean"], dtype=np.float64)
        self.scale_ = np.asarray(d["scale"], dtype=np.float64)
        return self

    def __repr__(self):
        return f"Standardizer({'fitted' if self.fitted else 'not fitted'})"


def stratified_order(rng, labels):
    """A random order of ``range(len(labels))`` in which every prefix holds the classes in about
    their overall proportions: rows are shuffled, then sorted by (rank within class + u) / class
    size with one uniform offset u per class (systematic sampling)."""
    n = labels.shape[0]
    perm = rng.permutation(n)
    lab = labels[perm]
    _, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    by_class = np.argsort(inv, kind="stable")
    rank = np.empty(n, dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[by_class] = np.arange(n) - np.repeat(starts, counts)
    key = (rank + rng.random(counts.shape[0])[inv]) / counts[inv]
    return perm[np.argsort(key, kind="stable")]


# --- column names --------------------------------------------------------------------------------
def _label_ok(value):
    return isinstance(value, (str, numbers.Integral)) and not isinstance(value, (bool, np.bool_))


def _names(name, value):
    if isinstance(value, (list, tuple)) and not value:
        raise ValueError(f"{name} must name at least one column, got an empty list (leave it "
                         f"None for every other column)")
    if _label_ok(value):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(_label_ok(v) for v in value):
        return list(value)
    raise TypeError(f"{name} must be a column name or a non-empty list of column names, "
                    f"got {value!r}")


def _check_columns(columns, source):
    seen, dup = set(), []
    for c in columns:
        if c in seen and c not in dup:
            dup.append(c)
        seen.add(c)
    if dup:
        raise ValueError(f"{source} has the column name {dup[0]!r} more than once; rename the "
                         f"duplicate columns (which one to use is ambiguous)")


# --- where a value is ---------------------------------------------------------------------------
class CsvTable(dict):
    """What :func:`read_csv` returns as ``table``: ``{name: [text of each row]}`` that also knows
    each data row's 1-based line number in the file (``lines``), so errors cite the file's line."""

    def __init__(self, columns, lines):
        super().__init__(columns)
        self.lines = lines


def _at(values, source):
    """i -> where data row i is, in words: "line N of PATH" (the file's 1-based line, as editors
    number them) for a column read from a CSV file, else "row i of SOURCE" (0-based, as in the
    table)."""
    lines = getattr(values, "lines", None)
    if lines is not None:
        return lambda i: f"line {lines[i]} of {source}"
    return lambda i: f"row {i} of {source}"


class _Column(list):
    """A CSV column's texts with the file lines of its rows (see :class:`CsvTable`)."""

    def __init__(self, values, lines):
        super().__init__(values)
        self.lines = lines


def _column(table, name):
    lines = getattr(table, "lines", None)
    return table[name] if lines is None else _Column(table[name], lines)


# --- values --------------------------------------------------------------------------------------
def _floats(col, values, source):
    at = _at(values, source)
    arr = np.asarray(values)
    if arr.dtype.kind == "c":
        raise ValueError(f"column {col!r} of {source} holds complex numbers; features and targets "
                         f"must be real")
    if arr.dtype == object or arr.dtype.kind in "US":
        out = np.empty(arr.shape[0], dtype=np.float64)
        for i, v in enumerate(arr.tolist()):
            if isinstance(v, complex) or (isinstance(v, str) and "j" in v.lower()
                                          and v.strip().lower() not in ("inf", "-inf")):
                raise ValueError(f"column {col!r}: {at(i)} has {v!r}, a complex number; "
                                 f"features and targets must be real")
            try:
                if isinstance(v, str) and (not v.isascii() or "_" in v):
                    # float() also reads '1_000' and non-ASCII digits ('１２', '١٢')
                    raise ValueError(v)
                out[i] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"column {col!r} must be numeric: {at(i)} has "
                                 f"{v!r}") from None
            except OverflowError:     # a Python int beyond float64
                raise ValueError(f"column {col!r}: {at(i)} has an integer beyond float64's "
                                 f"range (±1.8e308): rescale the column") from None
            if math.isinf(out[i]) and isinstance(v, str) \
                    and v.strip().lstrip("+-").lower() not in ("inf", "infinity"):
                # '1e309' or 400 digits: finite as written, beyond float64 once read
                text = v.strip() if len(v.strip()) <= 40 else v.strip()[:37] + "..."
                raise ValueError(f"column {col!r}: {at(i)} has {text!r}, which exceeds "
                                 f"float64's range (±1.8e308): rescale the column")
        arr = out
    elif arr.dtype.kind not in "biuf":
        raise ValueError(f"column {col!r} of {source} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"column {col!r} must be finite: {at(i)} has {arr[i]}")
    return arr


def _task_ids(col, values, source):
    """Task ids as strings exactly as written (a number stays as its text in a CSV; a DataFrame's
    integers and strings as str(v)), plus the order key (numeric when every id is an integer)."""
    at = _at(values, source)
    raw = list(values)
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, str) and v.strip() == "") or (
                not isinstance(v, str) and _is_na(v)):
            raise ValueError(f"task column {col!r}: {at(i)} has no task id "
                             f"({v!r}); every row needs one")
    if len({isinstance(v, str) for v in raw}) > 1:
        raise ValueError(f"task column {col!r} of {source} mixes text and numbers; the ids "
                         f"'1' and 1 would be ambiguous")
    out = []
    for i, v in enumerate(raw):
        if isinstance(v, (float, np.floating)):
            if float(v) != int(v):
                raise ValueError(f"task column {col!r}: {at(i)} has the non-integer "
                                 f"task id {v!r}")
            v = int(v)
        out.append(v if isinstance(v, str) else str(v))
    # object, not NumPy's str dtype, which drops trailing NUL characters ("a\x00" became "a")
    names = np.empty(len(out), dtype=object)
    names[:] = out
    uniq = sorted(set(out))

    def integer_text(u):     # "-12" yes; "--1", "+1", "01", "١" (non-ASCII digits) no
        u = u.strip()        # " 12" (a file written "a, 12, 3.5") is 12, as pandas reads it
        digits = u[1:] if u.startswith("-") else u
        return digits.isascii() and digits.isdigit() and str(int(u)) == u

    # integers sort numerically; the names stay as written, so " 1" beside "1" (two tasks, as
    # "01" and "1") keeps both as text
    if all(integer_text(u) for u in uniq) and len({int(u) for u in uniq}) == len(uniq):
        if all(-2**63 <= int(u) < 2**63 for u in uniq):
            return names, np.array([int(n) for n in out], dtype=np.int64)
        # ids past int64 (still integers as written): ordered numerically by their ranks
        uniq = sorted(uniq, key=int)
    # the order key: each id's rank (text ids sorted by code point, as before)
    rank = {u: r for r, u in enumerate(uniq)}
    return names, np.array([rank[n] for n in out], dtype=np.int64)


def _is_na(v):
    if isinstance(v, (float, np.floating)):
        return not np.isfinite(v)
    try:
        import pandas as pd
    except ImportError:
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# --- building the TaskSet ------------------------------------------------------------------------
def _build(columns, get, *, task, target, features, n_support, support, shuffle, stratify,
           standardize, fit_tasks, seed, dtype, source):
    if not _label_ok(task):
        raise TypeError(f"task must be a column name, got {task!r}")
    _check_columns(columns, source)
    targets = _names("target", target)
    if features is None:
        features = [c for c in columns if c != task and c not in targets]
        if not features:
            raise ValueError(f"{source} has no feature column: its columns "
                             f"({', '.join(map(repr, columns))}) are the task and target ones")
    features = _names("features", features)
    for name, cols in (("task", [task]), ("target", targets), ("features", features)):
        missing = [c for c in cols if c not in columns]
        if missing:
            raise ValueError(f"{name}: column {missing[0]!r} is not in {source} "
                             f"(columns: {', '.join(map(repr, columns))})")
        if len(set(cols)) != len(cols):
            raise ValueError(f"{name} names a column twice: {cols!r}")
    overlap = set(features) & ({task} | set(targets))
    if overlap:
        raise ValueError(f"features must not include the task or target column "
                         f"{sorted(map(str, overlap))[0]!r}")
    X = np.column_stack([_floats(c, get(c), source) for c in features])
    ys = [_floats(c, get(c), source) for c in targets]
    y = ys[0] if len(ys) == 1 else np.column_stack(ys)
    names, key = _task_ids(task, get(task), source)
    raw = X
    if standardize is not None and standardize is not False:
        if not isinstance(standardize, Standardizer):
            raise TypeError(f"standardize must be a metacore Standardizer (fitted on the training "
                            f"tasks' file, applied to the others) or None, got "
                            f"{type(standardize).__name__}")
        scaler = standardize
        if not standardize.fitted:
            rows = np.ones(len(names), bool)
            if fit_tasks is not None:
                # one id as written, not its characters ("12" is task 12, not 1 and 2)
                one = isinstance(fit_tasks, (str, bytes)) or _validation.is_integer(fit_tasks)
                wanted = [str(_validation.scalar(t)) for t in ([fit_tasks] if one else fit_tasks)]
                if not wanted:
                    raise ValueError("fit_tasks selects no task: give the training tasks' ids, "
                                     "or None for every task")
                unknown = sorted(set(wanted) - set(names.tolist()))
                if unknown:
                    raise ValueError(f"fit_tasks: task {unknown[0]!r} is not in {source}")
                # a set, not np.isin: NumPy's str dtype would drop a trailing NUL of an id
                chosen = set(wanted)
                rows = np.array([n in chosen for n in names.tolist()], dtype=bool)
            # fitted here, handed to the caller's Standardizer only once the whole set is built:
            # a call refused later (support, stratify, range) must leave it unfitted
            scaler = Standardizer().fit(X[rows])
        X = scaler.transform(X)
    _check_range(X, raw, y, features, targets, get, source, dtype)
    if n_support is not None and support is not None:
        raise ValueError("give support (a fraction or a count per task) or n_support, not both")
    rng = np.random.default_rng(_validation.seed("seed", seed))
    if stratify and y.ndim != 1:
        raise ValueError(f"stratify needs one target column of class labels, got {targets!r}")
    order = np.arange(len(names))
    if shuffle or stratify:   # a permutation per task; from_groups keeps the order within a task
        order = np.empty(0, dtype=np.int64)
        for t in np.unique(key):
            rows = np.flatnonzero(key == t)
            part = stratified_order(rng, y[rows]) if stratify else rng.permutation(rows.shape[0])
            order = np.concatenate([order, rows[part]])
    X, y, key, names = X[order], y[order], key[order], names[order]
    if support is not None or _validation.is_integer(n_support):
        # one count for every task: checked here, so that a task too small is named by its id
        _, first, sizes = np.unique(key, return_index=True, return_counts=True)
        n_support = _support_counts("support" if support is not None else "n_support",
                                    n_support if support is None else support, sizes,
                                    names[first])
    ts = TaskSet.from_groups(X, y, key, n_support=n_support, dtype=dtype)
    first = np.unique(key, return_index=True)[1]
    out = TaskSet.from_checked(ts.X, ts.y, ts.offsets, ts.n_support, ts.task_ids,
                               names=names[first].tolist())
    if standardize is not None and standardize is not False and not standardize.fitted:
        standardize.mean_, standardize.scale_ = scaler.mean_, scaler.scale_
    return out


def _check_range(X, raw, y, features, targets, get, source, dtype):
    """ValueError naming the column and "line N of PATH" for a finite value that exceeds
    float32's range (±3.4e38) when the TaskSet is asked for float32 (it would become inf there;
    the TaskSet's own message can only give an index into X or y)."""
    try:
        if dtype is None or np.dtype(dtype) != np.float32:
            return
    except TypeError:
        return   # refused, by name, by the TaskSet
    limit = float(np.finfo(np.float32).max)
    for cols, arr, before in ((features, X, raw), (targets, y.reshape(y.shape[0], -1), None)):
        big = ~(np.abs(arr) <= limit)
        if big.any():
            i, j = (int(k) for k in np.argwhere(big)[0])
            value = arr[i, j] if before is None else before[i, j]
            scaled = "" if before is None or before is arr else f" ({arr[i, j]!r} standardized)"
            raise ValueError(f"column {cols[j]!r}: {_at(get(cols[j]), source)(i)} has "
                             f"{float(value)!r}{scaled}, which exceeds float32's range (±3.4e38), "
                             f"the dtype requested: rescale the column, or use float64")


def _support_counts(name, support, sizes, names):
    """Support rows per task: a fraction in (0, 1) of every task's rows (rounded, at least 1 and
    at most n − 1 when the task has 2 rows or more) or a count (at most every task's size; a
    task too small is named by its id, ``names``)."""
    if isinstance(_validation.scalar(support), (bool, np.bool_)):
        raise TypeError(f"support must be a fraction in (0, 1) or a row count, got {support!r}")
    if _validation.is_integer(support):
        n = _validation.integer(name, support, minimum=0)
        if n > sizes.min():
            i = int(np.argmin(sizes))
            raise ValueError(f"{name}: {n} support rows per task, but task {str(names[i])!r} has "
                             f"only {int(sizes[i])} row{'' if sizes[i] == 1 else 's'}")
        return np.full(sizes.shape, n, dtype=np.int64)
    f = _validation.real("support", support)
    if not 0.0 < f < 1.0:
        whole = f" (as a count: the integer {int(f)})" if f > 1.0 and float(f).is_integer() else ""
        raise ValueError(f"support must be a fraction in (0, 1) or an integer row count, got "
                         f"{support!r}{whole}")
    counts = np.round(f * sizes).astype(np.int64)
    return np.where(sizes >= 2, np.clip(counts, 1, sizes - 1), sizes)


def from_dataframe(df, *, task, target, features=None, n_support=None, support=None,
                   shuffle=False, stratify=False, standardize=None, fit_tasks=None, seed=0,
                   dtype=None):
    """A TaskSet from a pandas DataFrame (or a dict of equal-length columns).

    task: the column naming each row's task (ids kept as written; ``TaskSet.names``);
    target: the column (or list of columns) to predict; features: the input columns (None, the
    default: every other column; an empty list is a ValueError naming ``features``); column
    names are the table's labels (strings or integers). Errors about a value name its column
    and "row i of the table" (0-based); :func:`from_csv`'s name "line N of PATH" (1-based).
    support: support rows per task, a fraction in (0, 1) or a count (or n_support: None, an int,
    or one int per task in task order); shuffle: shuffle each task's rows first (seeded by
    ``seed``); stratify: shuffle within classes so that support and query rows keep each task's
    class proportions; standardize: a :class:`Standardizer`, fitted here (on ``fit_tasks``, a
    list of task ids, or on every task) when not yet fitted, else applied as fitted.
    """
    if hasattr(df, "columns"):
        columns = list(df.columns)
        _check_columns(columns, "the table")

        def get(c):
            return df[c].to_numpy()
    else:
        columns = list(df.keys())
        lengths = {}
        for c in columns:
            v = df[c]
            if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
                raise ValueError(f"column {c!r} of the table must be a sequence of values (one "
                                 f"per row), got {type(v).__name__}")
            lengths[c] = len(v)
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{c!r}: {n}" for c, n in lengths.items())
            raise ValueError(f"the table's columns must have equal lengths, got {shown}")

        def get(c):
            return df[c]
    return _build(columns, get, task=task, target=target, features=features,
                  n_support=n_support, support=support, shuffle=shuffle, stratify=stratify,
                  standardize=standardize, fit_tasks=fit_tasks, seed=seed, dtype=dtype,
                  source="the table")


def from_csv(path, *, task, target, features=None, n_support=None, support=None, shuffle=False,
             stratify=False, standardize=None, fit_tasks=None, seed=0, dtype=None,
             delimiter=","):
    """A TaskSet from a CSV file with a header row (arguments as :func:`from_dataframe`). The
    file is read as UTF-8 (a byte-order mark is dropped) with the csv module; every value is
    text, so task ids are kept exactly as written: as the csv module reads them, surrounding
    spaces and quoted commas, quotes and line breaks included (``a `` and ``a`` are two tasks),
    which is how :mod:`csv` (and ``metacore predict``) writes them back."""
    header, table = read_csv(path, delimiter=delimiter)
    return _build(header, lambda c: _column(table, c), task=task, target=target,
                  features=features, n_support=n_support, support=support, shuffle=shuffle,
                  stratify=stratify, standardize=standardize, fit_tasks=fit_tasks, seed=seed,
                  dtype=dtype, source=os.fspath(path))


def read_csv(path, delimiter=",", source=None):
    """``(header, table)`` of a CSV file with a header row: the column names (stripped) and
    ``{name: [text of each row]}`` (a :class:`CsvTable`, whose ``lines`` give each row's 1-based
    line in the file; blank lines are skipped), each text exactly as the csv module reads it —
    quoted delimiters, quotes, line breaks and surrounding spaces included. Read as UTF-8 (a
    byte-order mark is dropped); an empty file, a file with no rows, a duplicated column name,
    a row with another field count, a quoted field never closed, text that is not UTF-8 or a
    malformed line is a ValueError naming the file (and the line: "line N of PATH", counted
    from 1 as editors do). ``source``: how messages name the file (e.g. "--input new.csv";
    default its path)."""
    path = _validation.path("path", path)
    where = path if source is None else source
    if os.path.isdir(path):
        raise IsADirectoryError(f"{'path: ' + path if source is None else source} is a folder; "
                                f"give the CSV file in it")
    rows, lines, ends = [], [], []
    record = []                                   # the text of the record being read

    def text_lines(fh):
        for line in fh:
            record.append(line)
            yield line

    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(text_lines(fh), delimiter=delimiter)
        try:
            try:
                written = next(reader)
                header = [h.strip() for h in written]   # "x, task, y" names "task"
            except StopIteration:
                raise ValueError(f"{where} is empty (a header row is needed)") from None
            done, text = reader.line_num, ""
            record.clear()
            for r in reader:
                if r:                             # a record starts on the line after the last
                    rows.append(r)
                    lines.append(done + 1)
                    ends.append(reader.line_num)
                text, done = "".join(record), reader.line_num
                record.clear()
        except UnicodeDecodeError:
            raise ValueError(_not_utf8(path, where)) from None
        except csv.Error as exc:
            raise ValueError(f"line {reader.line_num} of {where} is not valid CSV: "
                             f"{exc}") from None
    if rows and _unclosed(text, delimiter):
        # the csv module reads an unclosed quote to the end of the file as one field: the rows
        # after it would be lost in it (or become one task id)
        raise ValueError(f"line {lines[-1]} of {where} opens a quoted field (\") that is never "
                         f"closed: the file ends inside it, lines {lines[-1]}-{ends[-1]}; close "
                         f"the quote or remove it")
    if not rows:
        raise ValueError(f"{where} has a header but no rows")
    same = [w for w, h in zip(written, header) if header.count(h) > 1]
    if same != [h for h in header if header.count(h) > 1]:   # a clash written with spaces
        raise ValueError(f"{where} has the column names {', '.join(map(repr, same))}, the same "
                         f"once the spaces around them are dropped; rename the duplicate columns")
    _check_columns(header, where)
    bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if bad is not None:
        span = (f" (its record runs over lines {lines[bad]}-{ends[bad]}: is a quote (\") on "
                f"line {lines[bad]} not closed?)" if ends[bad] > lines[bad] else "")
        raise ValueError(f"line {lines[bad]} of {where} has {len(rows[bad])} fields, the header "
                         f"{len(header)}{span}")
    # values exactly as written (a quoted " a" or "a\n" is not "a": stripping merged tasks);
    # numbers parse with surrounding spaces all the same
    return header, CsvTable({h: [r[j] for r in rows] for j, h in enumerate(header)},
                            np.asarray(lines, dtype=np.int64))


def _unclosed(record, delimiter):
    """Whether the text of a file's last record ends inside a quoted field (the csv module's
    lenient mode reads it to the end of the file; a stray quote inside a field is literal)."""
    if record.count('"') % 2 == 0:
        return False
    try:
        list(csv.reader(io.StringIO(record), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _not_utf8(path, where):
    """The message for a file that does not decode as UTF-8, with the first bad byte's line and
    offset (the decoder reads in chunks, so its own offset is not the file's: read again)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return (f"line {line} of {where} is not UTF-8 text: byte {exc.start} of the file, "
                f"{raw[exc.start:exc.start + 1]!r}, cannot be decoded ({exc.reason}); is it a "
                f"binary file? Save the table as a UTF-8 CSV file")
    return f"{where} is not UTF-8 text"      # changed while being read


def float_columns(table, columns, source):
    """The named columns of ``table`` (a dict of columns, as :func:`read_csv` gives) as one float64
    array (n_rows, len(columns)); a missing column, or a non-numeric, complex or non-finite value,
    is a ValueError naming the column (and the row) and ``source``."""
    missing = [c for c in columns if c not in table]
    if missing:
        raise ValueError(f"column {missing[0]!r} is not in {source} (columns: "
                         f"{', '.join(map(repr, table))})")
    return np.column_stack([_floats(c, _column(table, c), source) for c in columns])


def check_class_labels(y, loss, column, lines, source, n_classes=None):
    """ValueError naming ``column`` and "line N of SOURCE" (``lines``: each value's line in the
    file, as :func:`read_csv` gives) for the first value of ``y`` (float, in file order) that is
    not a class label of ``loss``: 0 or 1 for "logistic", an integer in [0, n_classes) for
    "cross_entropy" (``n_classes`` None: any integer >= 0)."""
    y = np.asarray(y, dtype=np.float64)
    if loss == "logistic":
        bad, want = (y != 0) & (y != 1), "0 or 1"
    else:
        top = np.inf if n_classes is None else n_classes
        bad = (y != np.floor(y)) | (y < 0) | (y >= top)
        want = ("an integer code 0, 1, 2, ..." if n_classes is None
                else f"an integer code in 0..{n_classes - 1}")
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"column {column!r}: line {lines[i]} of {source} has {y[i]:g}, not a "
                         f"class label for loss={loss!r} ({want})")
