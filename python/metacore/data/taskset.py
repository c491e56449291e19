"""Many small supervised tasks packed into contiguous buffers.

A :class:`TaskSet` holds ``T`` tasks as one block of rows:

- ``X`` of shape ``(N, d)`` and ``y`` of shape ``(N,)`` or ``(N, k)``, C-contiguous, float32 or
  float64 (both of the same working dtype; class labels are stored as floats of that dtype, e.g.
  ``2.0``);
- ``offsets`` of shape ``(T + 1,)``: task ``i`` is rows ``offsets[i]:offsets[i + 1]`` (never empty);
- ``n_support`` of shape ``(T,)``: the first ``n_support[i]`` rows of task ``i`` are its support
  rows, the remaining ``n_i − n_support[i]`` its query rows;
- ``task_ids`` of shape ``(T,)``: the identity of each task in the set it was first built from
  (kept by :meth:`TaskSet.subset` and :meth:`TaskSet.split_tasks`; it picks the output head of a
  model with per-task heads);
- ``names``: one string per task, the task's label as the user wrote it (``from_groups`` and the
  tabular loaders; else ``str(task_id)``), kept by every derived set, so a split says which tasks
  it holds.

The buffers are private copies made once at creation and exposed read-only, so the compiled core can
use them without copying and the caller's arrays are never aliased.
"""

from __future__ import annotations


import numpy as np

from .. import _validation
LOSSES = ("mse", "logistic", "cross_entropy")   # the loss heads a model can have

__all__ = ["TaskSet"]


# --- validation helpers (private: the shared ones live in _validation) --------------------------------
def _int_array(name, value, ndim=1):
    """An array-like of integers as int64 (bools and floats refused)."""
    arr = _validation.as_array(name, value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {int(arr.max())}")
    return arr.astype(np.int64)


def _check_xy(X, y, dtype, x_name="X", y_name="y"):
    """X (n, d) and y (n,) or (n, k) converted to the working dtype, C layout, finite."""
    X = _validation.float_array(x_name, X, ndim=2, finite=False)
    dt = X.dtype if dtype is None else _validation.float_dtype("dtype", dtype)
    # The finite check runs after the cast: a float64 value may overflow to inf in float32, which
    # is then reported as a ValueError (the cast's own overflow warning is silenced).
    with np.errstate(over="ignore"):
        X = _validation.float_array(x_name, X, ndim=2, dtype=dt)
        y = _validation.float_array(y_name, y, ndim=(1, 2), dtype=dt)
    if X.shape[0] == 0:
        raise ValueError(f"{x_name} must have at least one row, got shape {X.shape}")
    if X.shape[1] == 0:
        raise ValueError(f"{x_name} must have at least one column (feature), got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError(f"{y_name} must have at least one column (output), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{y_name} must have one row per row of {x_name} ({X.shape[0]}), "
                         f"got {y.shape[0]}")
    return X, y


def _check_offsets(offsets, n_rows):
    offsets = _int_array("offsets", offsets)
    if offsets.shape[0] < 2:
        raise ValueError(f"offsets must have at least 2 entries (one task), got {offsets.shape[0]}")
    if offsets[0] != 0:
        raise ValueError(f"offsets must start at 0, got offsets[0]={offsets[0]}")
    sizes = np.diff(offsets)
    if (sizes <= 0).any():
        i = int(np.argmax(sizes <= 0))
        raise ValueError(f"offsets must be strictly increasing (no empty task), got "
                         f"offsets[{i}]={offsets[i]} and offsets[{i + 1}]={offsets[i + 1]}")
    if offsets[-1] != n_rows:
        raise ValueError(f"offsets must end at the number of rows of X ({n_rows}), "
                         f"got offsets[-1]={offsets[-1]}")
    return offsets


def _check_support(n_support, sizes):
    """None (every row is support), one int for every task, or one int per task."""
    if n_support is None:
        return sizes.copy()
    if isinstance(_validation.scalar(n_support), (bool, np.bool_)):
        raise TypeError(f"n_support must be an integer or a sequence of integers, "
                        f"got {n_support!r}")
    if _validation.is_integer(n_support):
        n = _validation.integer("n_support", n_support, minimum=0)
        if n > sizes.min():
            i = int(np.argmin(sizes))
            raise ValueError(f"n_support must be <= the size of every task, got {n} but task {i} "
                             f"has {sizes[i]} rows")
        return np.full(sizes.shape, n, dtype=np.int64)
    arr = _int_array("n_support", n_support)
    if arr.shape[0] != sizes.shape[0]:
        raise ValueError(f"n_support must have one entry per task ({sizes.shape[0]}), "
                         f"got {arr.shape[0]}")
    bad = (arr < 0) | (arr > sizes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"n_support[{i}] must be in [0, {sizes[i]}] (the size of task {i}), "
                         f"got {arr[i]}")
    return arr


def _check_task_ids(task_ids, n_tasks):
    if task_ids is None:
        return np.arange(n_tasks, dtype=np.int64)
    arr = _int_array("task_ids", task_ids)
    if arr.shape[0] != n_tasks:
        raise ValueError(f"task_ids must have one entry per task ({n_tasks}), got {arr.shape[0]}")
    if (arr < 0).any():
        i = int(np.argmax(arr < 0))
        raise ValueError(f"task_ids must be >= 0, got task_ids[{i}]={arr[i]}")
    return arr


def _check_names(names, n_tasks):
    """None, or a tuple of one string per task."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise TypeError(f"names must be a sequence of strings (one per task), got "
                        f"{type(names).__name__}")
    items = tuple(names)
    if len(items) != n_tasks:
        raise ValueError(f"names must have one entry per task ({n_tasks}), got {len(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"names[{i}] must be a str, got {type(item).__name__}")
    return items


# --- the task set ---------------------------------------------------------------------------------
class TaskSet:
    """``T`` tasks packed into contiguous read-only buffers.

    Parameters
    ----------
    X : array-like, shape (N, d)
        The rows of all tasks, task after task.
    y : array-like, shape (N,) or (N, k)
        Targets; class labels (0/1 for logistic, 0..k−1 for cross-entropy) are stored as floats of
        the working dtype.
    offsets : array-like of int, shape (T + 1,)
        Task ``i`` is rows ``offsets[i]:offsets[i + 1]``; ``offsets[0] = 0``, strictly increasing
        (no empty task), ``offsets[T] = N``.
    n_support : None, int or array-like of int, shape (T,)
        Support rows at the start of each task, ``0 <= n_support[i] <= n_i``. ``None``: every row
        is a support row (no query rows).
    task_ids : None or array-like of int, shape (T,)
        Identity of each task (>= 0, repeats allowed); default ``arange(T)``.
    dtype : None, np.float32 or np.float64
        Working dtype. ``None``: float32 when X is float32, else float64.
    names : None or sequence of str, length T
        A name per task, carried along with ``task_ids`` by every derived TaskSet.

    Notes
    -----
    The inputs are converted once (dtype, C layout) into private copies; the caller's arrays are
    never modified nor kept. ``X``, ``y``, ``offsets``, ``n_support``, ``task_ids``, ``task_sizes``
    and ``n_query`` are read-only arrays.
    """

    def __init__(self, X, y, offsets, n_support=None, task_ids=None, dtype=None, names=None):
        X_c, y_c = _check_xy(X, y, dtype)
        offsets = _check_offsets(offsets, X_c.shape[0])
        sizes = np.diff(offsets)
        self._set(_validation.owned(X_c, X), _validation.owned(y_c, y), offsets,
                  _check_support(n_support, sizes),
                  _check_task_ids(task_ids, sizes.shape[0]), _check_names(names, sizes.shape[0]))

    @classmethod
    def from_checked(cls, X, y, offsets, n_support, task_ids, names=None):
        """For the library's own use: a TaskSet over already checked arrays that nobody else
        writes to (no checks, no copy); ``names`` one string per task or None."""
        self = cls.__new__(cls)
        self._set(X, y, offsets, n_support, task_ids, names)
        return self

    def _set(self, X, y, offsets, n_support, task_ids, names=None):
        self._names = None if names is None else tuple(str(n) for n in names)
        self._X = _validation.frozen(X)
        self._y = _validation.frozen(y)
        self._offsets = _validation.frozen(offsets)
        self._n_support = _validation.frozen(n_support)
        self._task_ids = _validation.frozen(task_ids)
        self._sizes = _validation.frozen(np.diff(offsets))
        self._n_query = _validation.frozen(self._sizes - n_support)
        self._astype_cache = {}

    # --- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, Xs, ys, n_support=None, dtype=None):
        """Pack per-task arrays: ``Xs[i]`` of shape (n_i, d), ``ys[i]`` of shape (n_i,) or (n_i, k).

        ``n_support`` is None (all rows support), one int for every task, or one int per task.
        ``dtype`` None gives float32 when every ``Xs[i]`` is float32, else float64.
        """
        Xs, ys = _task_list("Xs", Xs), _task_list("ys", ys)
        if len(ys) != len(Xs):
            raise ValueError(f"ys must have one entry per task of Xs ({len(Xs)}), got {len(ys)}")
        # First pass: shapes and the working dtype; second pass: cast and check finiteness.
        Xs = [_validation.float_array(f"Xs[{i}]", x, ndim=2, finite=False) for i, x in enumerate(Xs)]
        if dtype is None:
            f32 = all(x.dtype == np.float32 for x in Xs)
            dtype = np.float32 if f32 else np.float64
        dtype = _validation.float_dtype("dtype", dtype)
        pairs = [_check_xy(x, t, dtype, f"Xs[{i}]", f"ys[{i}]")
                 for i, (x, t) in enumerate(zip(Xs, ys))]
        X0, y0 = pairs[0]
        for i, (x, t) in enumerate(pairs):
            if x.shape[1] != X0.shape[1]:
                raise ValueError(f"Xs[{i}] must have {X0.shape[1]} columns like Xs[0], "
                                 f"got shape {x.shape}")
            if t.shape[1:] != y0.shape[1:]:
                raise ValueError(f"ys[{i}] must have the trailing shape of ys[0] {y0.shape[1:]}, "
                                 f"got shape {t.shape}")
        sizes = np.array([x.shape[0] for x, _ in pairs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # np.concatenate always allocates: the packed buffers are private.
        X = np.concatenate([x for x, _ in pairs], axis=0)
        y = np.concatenate([t for _, t in pairs], axis=0)
        return cls.from_checked(X, y, offsets, _check_support(n_support, sizes),
                                np.arange(len(pairs), dtype=np.int64))

    @classmethod
    def from_groups(cls, X, y, groups, n_support=None, dtype=None):
        """Split rows labelled by task into a TaskSet.

        Tasks are ordered by sorted unique value of ``groups`` (task ``i`` is
        ``np.unique(groups)[i]`` and gets ``task_ids[i] = i``); rows keep their original order
        within a task, and the first ``n_support`` rows of each task are its support rows.
        ``groups`` holds integers or strings (finite floats are accepted too).
        """
        X_c, y_c = _check_xy(X, y, dtype)
        g = _validation.as_array("groups", groups)
        if g.ndim != 1:
            raise ValueError(f"groups must be 1-D, got shape {g.shape}")
        if g.shape[0] != X_c.shape[0]:
            raise ValueError(f"groups must have one entry per row of X ({X_c.shape[0]}), "
                             f"got {g.shape[0]}")
        if g.dtype == object or g.dtype.kind not in "biufUS":
            raise TypeError(f"groups must hold integers or strings, got dtype {g.dtype}")
        if g.dtype.kind == "f" and not np.isfinite(g).all():
            raise ValueError(f"groups must be finite, found {g[~np.isfinite(g)][0]}")
        labels, inverse = np.unique(g, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")  # stable: rows keep their order within a task
        sizes = np.bincount(inverse).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # Fancy indexing allocates: the gathered buffers are private.
        return cls.from_checked(X_c[order], y_c[order], offsets, _check_support(n_support, sizes),
                                np.arange(sizes.shape[0], dtype=np.int64),
                                names=[str(v) for v in labels.tolist()])

    # --- buffers and shape facts -----------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        """Rows of all tasks, (N, d), read-only."""
        return self._X

    @property
    def y(self) -> np.ndarray:
        """Targets, (N,) or (N, k), same dtype as X, read-only."""
        return self._y

    @property
    def offsets(self) -> np.ndarray:
        """(T + 1,) int64: task i is rows offsets[i]:offsets[i + 1]."""
        return self._offsets

    @property
    def n_support(self) -> np.ndarray:
        """(T,) int64: support rows at the start of each task."""
        return self._n_support

    @property
    def task_ids(self) -> np.ndarray:
        """(T,) int64: identity of each task in the set it was first built from."""
        return self._task_ids

    @property
    def names(self) -> tuple:
        """(T,) strings: each task's name (its group label as written, else its task_id)."""
        if self._names is None:
            return tuple(str(i) for i in self._task_ids.tolist())
        return self._names

    @property
    def n_tasks(self) -> int:
        return self._offsets.shape[0] - 1

    @property
    def n_rows(self) -> int:
        return self._X.shape[0]

    @property
    def n_features(self) -> int:
        return self._X.shape[1]

    @property
    def n_outputs(self) -> int:
        """1 for 1-D y, else y.shape[1]."""
        return 1 if self._y.ndim == 1 else self._y.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self._X.dtype

    @property
    def task_sizes(self) -> np.ndarray:
        """(T,) int64: n_i = offsets[i + 1] − offsets[i]."""
        return self._sizes

    @property
    def n_query(self) -> np.ndarray:
        """(T,) int64: n_i − n_support[i]."""
        return self._n_query

    def query_rows(self, *, all_when_none=False):
        """(rows, counts): the indices (int64) of every task's query rows, task after task, and
        how many each task has; with ``all_when_none``, a task without query rows gives all its
        rows instead (scored on what it has)."""
        starts = self._offsets[:-1] + self._n_support
        if all_when_none:
            starts = np.where(self._n_query > 0, starts, self._offsets[:-1])
        counts = self._offsets[1:] - starts
        rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, self._offsets[1:])])
        return rows.astype(np.int64), counts.astype(np.int64)

    # --- per-task views --------------------------------------------------------------------------
    def _task(self, i):
        if not _validation.is_integer(i):
            raise TypeError(f"task index must be an integer (use subset() for several tasks), "
                            f"got {type(i).__name__}")
        i = int(_validation.scalar(i))
        T = self.n_tasks
        if not -T <= i < T:
            raise IndexError(f"task index {i} out of range for {T} tasks")
        return int(i) % T

    def __len__(self) -> int:
        return self.n_tasks

    def __getitem__(self, i):
        """(X_i, y_i): read-only views of all rows of task i."""
        i = self._task(i)
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._X[a:b], self._y[a:b]

    def __iter__(self):
        for i in range(self.n_tasks):
            yield self[i]

    def support(self, i):
        """(X, y) views of the support rows of task i."""
        i = self._task(i)
        a = self._offsets[i]
        s = a + self._n_support[i]
        return self._X[a:s], self._y[a:s]

    def query(self, i):
        """(X, y) views of the query rows of task i."""
        i = self._task(i)
        s = self._offsets[i] + self._n_support[i]
        b = self._offsets[i + 1]
        return self._X[s:b], self._y[s:b]

    # --- derived task sets -----------------------------------------------------------------------
    def subset(self, indices):
        """The tasks ``indices`` (ints, negative allowed, repeats allowed; a slice; or a boolean
        mask of length T) in that order, as a new TaskSet keeping their task_ids and splits. One
        integer (an int, a NumPy integer or a 0-d integer array) selects that one task. Raises
        TypeError for indices that are no integers, IndexError for one out of range and
        ValueError for a mask of another length or a selection of no task."""
        T = self.n_tasks
        if isinstance(indices, slice):
            idx = np.arange(T)[indices]
        else:
            if _validation.is_integer(indices):   # one index, however given (np.array(1) too)
                indices = [_validation.integer("indices", indices)]
            arr = _validation.as_array("indices", indices)
            if arr.dtype == bool:
                if arr.shape != (T,):
                    raise ValueError(f"indices as a boolean mask must have shape ({T},), "
                                     f"got {arr.shape}")
                idx = np.flatnonzero(arr)
            else:
                if arr.size == 0:  # np.asarray([]) is float64: say "empty", not "not integers"
                    raise ValueError("indices must select at least one task, got none")
                idx = _int_array("indices", arr)
                if ((idx < -T) | (idx >= T)).any():
                    bad = idx[(idx < -T) | (idx >= T)][0]
                    raise IndexError(f"indices: task index {bad} out of range for {T} tasks")
                idx = idx % T
        if idx.shape[0] == 0:
            raise ValueError("indices must select at least one task, got none")
        sizes = self._sizes[idx]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # Row r of the new set comes from row r − offsets[j] + old_offsets[idx[j]] of this one.
        rows = np.arange(offsets[-1]) + np.repeat(self._offsets[idx] - offsets[:-1], sizes)
        return TaskSet.from_checked(self._X[rows], self._y[rows], offsets, self._n_support[idx],
                                    self._task_ids[idx],
                                    # unnamed tasks stay unnamed (names come from task_ids): one
                                    # lookup per task, not a rebuilt tuple of all T names each
                                    None if self._names is None
                                    else [self._names[i] for i in idx.tolist()])

    def split_tasks(self, test_fraction=0.2, seed=0):
        """Hold out ``round(test_fraction · T)`` random tasks (at least 1, at most T − 1).

        Returns ``(train, test)``: disjoint, together every task once, each keeping the original
        task order and task_ids. Deterministic for a seed.
        """
        f = _validation.real("test_fraction", test_fraction, minimum=0.0, maximum=1.0, min_open=True)
        if f == 1.0:
            raise ValueError("test_fraction must be < 1, got 1.0")
        rng = np.random.default_rng(_validation.seed("seed", seed))
        T = self.n_tasks
        if T < 2:
            raise ValueError(f"split_tasks needs at least 2 tasks, got {T}")
        n_test = min(max(int(round(f * T)), 1), T - 1)
        perm = rng.permutation(T)
        return self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test]))

    def astype(self, dtype):
        """This TaskSet in another working dtype: ``self`` if it already is, else a converted copy
        made once and cached (repeated calls return the same object)."""
        dt = _validation.float_dtype("dtype", dtype)
        if dt == self.dtype:
            return self
        if dt not in self._astype_cache:
            with np.errstate(over="ignore"):  # overflow to inf is caught by the finite check
                X = _validation.float_array("X", self._X, dtype=dt)
                y = _validation.float_array("y", self._y, dtype=dt)
            # offsets/n_support/task_ids are read-only, so sharing them is safe; stored only once
            # converted (a failed conversion caches nothing), and racing threads get one object.
            return self._astype_cache.setdefault(dt, TaskSet.from_checked(
                X, y, self._offsets, self._n_support, self._task_ids, self._names))
        return self._astype_cache[dt]

    def with_support(self, n_support):
        """The same tasks with a new support/query split (None, an int, or one int per task).
        The read-only buffers are shared, not copied."""
        ns = _check_support(n_support, self._sizes)
        return TaskSet.from_checked(self._X, self._y, self._offsets, ns, self._task_ids,
                                    self._names)

    def with_names(self, names):
        """The same tasks named ``names`` (one str per task, or None: named by task_id); the read-only
        buffers are shared, not copied."""
        return TaskSet.from_checked(self._X, self._y, self._offsets, self._n_support,
                                    self._task_ids, _check_names(names, self.n_tasks))

    # --- label checks for a loss head ------------------------------------------------------------
    def check_labels(self, loss, n_outputs):
        """Raise ValueError("y ...") when y does not fit a model's loss head.

        - ``"logistic"``: y 1-D with values in {0, 1} (``n_outputs`` must be 1);
        - ``"cross_entropy"``: y 1-D, integer-valued, in [0, n_outputs) (``n_outputs`` >= 2);
        - ``"mse"``: y of shape (N,) or (N, 1) when ``n_outputs`` is 1, else (N, n_outputs).

        The message names the first offending task (position and task_id) and its row.
        """
        _validation.choice("loss", loss, LOSSES)
        k = _validation.integer("n_outputs", n_outputs, minimum=1)
        y = self._y
        if loss == "mse":
            if not (y.shape[1:] == (k,) or (k == 1 and y.ndim == 1)):
                N = self.n_rows
                want = f"({N},) or ({N}, 1)" if k == 1 else f"({N}, {k})"
                raise ValueError(f"y must have shape {want} for loss='mse' with n_outputs={k}, "
                                 f"got {y.shape}")
            return
        if loss == "logistic" and k != 1:
            raise ValueError(f"n_outputs must be 1 for loss='logistic', got {k}")
        if loss == "cross_entropy" and k < 2:
            raise ValueError(f"n_outputs must be >= 2 for loss='cross_entropy', got {k}")
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one label per row) for loss={loss!r}, "
                             f"got shape {y.shape}")
        if loss == "logistic":
            bad = (y != 0) & (y != 1)
            want = "labels in {0, 1}"
        else:
            bad = (y != np.floor(y)) | (y < 0) | (y >= k)
            want = f"integer labels in [0, {k})"
        if bad.any():
            row = int(np.argmax(bad))
            t = int(np.searchsorted(self._offsets, row, side="right")) - 1
            named = f", {self._names[t]!r}" if self._names is not None else ""
            raise ValueError(f"y must hold {want} for loss={loss!r}; task {t} "
                             f"(task_id {self._task_ids[t]}{named}) row {row - self._offsets[t]} "
                             f"has {float(y[row])}")

    def __reduce__(self):
        # Pickle/copy as plain buffers; the rebuilt set freezes its own (fresh) arrays again.
        return (_rebuild, (self._X, self._y, self._offsets, self._n_support, self._task_ids,
                           self._names))

    def __repr__(self):
        def span(a):
            lo, hi = int(a.min()), int(a.max())
            return str(lo) if lo == hi else f"{lo}..{hi}"
        names = ""
        if self._names is not None:   # the first few names: which tasks this set holds
            # quoted and escaped (repr): a name's comma, quote or line break stays inside it
            short = [repr(n if len(n) <= 16 else n[:15] + "…") for n in self._names[:3]]
            shown = ", ".join(short) + (", ..." if len(self._names) > 3 else "")
            names = f", names=[{shown}]"
        return (f"TaskSet(n_tasks={self.n_tasks}, n_rows={self.n_rows}, "
                f"n_features={self.n_features}, n_outputs={self.n_outputs}, dtype={self.dtype}, "
                f"task_sizes={span(self._sizes)}, n_support={span(self._n_support)}{names})")


    def to_dataframe(self, rows=False):
        """A pandas DataFrame (pandas imported here; ImportError naming ``pip install pandas``
        without it).

        rows=False: one row per task — ``task`` (its name, :attr:`names`), ``task_id``,
        ``n_rows``, ``n_support``, ``n_query``. rows=True: one row per example, task after task
        — ``task`` (the name), ``split`` ("support" or "query"), the features ``x0 … x{d−1}`` and
        the target ``y`` (``y0 … y{k−1}`` for 2-D targets), in the working dtype.
        """
        rows = _validation.boolean("rows", rows)
        pd = _validation.pandas("TaskSet.to_dataframe")
        names = np.array(self.names, dtype=object)
        if not rows:
            return pd.DataFrame({"task": names, "task_id": np.array(self._task_ids),
                                 "n_rows": np.array(self._sizes),
                                 "n_support": np.array(self._n_support),
                                 "n_query": np.array(self._n_query)})
        sizes = self._sizes
        position = np.arange(self.n_rows) - np.repeat(self._offsets[:-1], sizes)
        support = position < np.repeat(self._n_support, sizes)
        frame = {"task": np.repeat(names, sizes),
                 "split": np.where(support, "support", "query").astype(object)}
        X = np.array(self._X)
        for j in range(X.shape[1]):
            frame[f"x{j}"] = X[:, j]
        if self._y.ndim == 1:
            frame["y"] = np.array(self._y)
        else:
            for j in range(self._y.shape[1]):
                frame[f"y{j}"] = np.array(self._y[:, j])
        return pd.DataFrame(frame)


def _rebuild(X, y, offsets, n_support, task_ids, names=None):
    return TaskSet.from_checked(X, y, offsets, n_support, task_ids, names)


def _task_list(name, value):
    """A non-empty list of per-task arrays (a list, tuple or any iterable of arrays)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of per-task arrays, got {type(value).__name__}")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of per-task arrays, "
                        f"got {type(value).__name__}") from None
    if not items:
        raise ValueError(f"{name} must hold at least one task, got an empty sequence")
    return items
