r"""The school data: exam scores of 15,362 London students in 139 secondary schools (Inner London
Education Authority, 1985–87), the classic multi-task regression benchmark (Bakker & Heskes 2003;
Evgeniou & Pontil 2004; Argyriou, Evgeniou & Pontil 2008).

``school.mat`` as distributed with MALSAR and by Argyriou et al. holds two 1×139 cell arrays: ``X``,
per school an (n_i, 28) matrix (year and student/school attributes, binary-coded, plus a constant
1 in the last column), and ``Y``, per school the (n_i, 1) exam scores. One school is one task.

Protocol of the multi-task literature (:func:`school_splits`): per school a random 75 % / 25 %
train/test split of its students, 10 repetitions, the explained variance
(:func:`metacore.evaluation.statistics.explained_variance`) on the test rows, mean ± sd.
"""

from __future__ import annotations

import os
import pathlib
import zlib

import numpy as np

from .. import _validation
from .taskset import TaskSet

__all__ = ["school", "school_splits"]


def _cells(mat, key, path):
    cells = mat.get(key)
    if not isinstance(cells, np.ndarray) or cells.dtype != object or cells.size == 0:
        keys = sorted(k for k in mat if not k.startswith("_"))
        raise ValueError(f"path: {path} is not the school data: it needs a cell array {key!r} "
                         f"(one matrix per school), found keys {keys}")
    return [np.asarray(c) for c in cells.reshape(-1)]


def _real(cell, name, path):
    """A cell of the file as a float64 matrix; ValueError naming the cell when it holds text,
    nested cells or complex numbers (whose imaginary part a cast would drop)."""
    if cell.dtype.kind not in "biuf":
        what = "complex numbers" if cell.dtype.kind == "c" else f"{cell.dtype} values"
        raise ValueError(f"path: {path}: {name} holds {what}, not a real matrix: this is not "
                         f"the school data")
    return cell.astype(np.float64)


def school(path, *, dtype=np.float64):
    """The school data as a TaskSet of 139 regression tasks (no query rows).

    Returns
    -------
    TaskSet
        ``X`` (15362, 28) as stored (the last column is the constant 1), ``y`` (15362,) exam
        scores, task i = the i-th school of the file, ``names`` ``"school 1"`` … ``"school 139"``
        (the file has no names; these are positions in it, kept through ``subset`` and splits).
    """
    path = pathlib.Path(_validation.path("path", path))
    if path.is_dir():
        raise IsADirectoryError(f"path: {path} is a folder; give the school.mat file in it")
    if not path.is_file():
        raise FileNotFoundError(f"path: {path} does not exist (the school data, school.mat, as "
                                f"distributed with MALSAR)")
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise ImportError("mc.datasets.school needs SciPy to read .mat files: "
                          "pip install scipy") from None
    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, TypeError, OSError, IndexError, EOFError,
            zlib.error) as e:   # a cut or damaged file fails deep inside SciPy's reader
        raise ValueError(f"path: {path} is not a readable MATLAB .mat file: "
                         f"{type(e).__name__}: {e}") from None
    Xs, ys = _cells(mat, "X", path), _cells(mat, "Y", path)
    if len(Xs) != len(ys):
        raise ValueError(f"path: {path} has {len(Xs)} schools in X but {len(ys)} in Y")
    Xs = [_real(x, f"X{{{i + 1}}}", path) for i, x in enumerate(Xs)]
    ys = [_real(y, f"Y{{{i + 1}}}", path) for i, y in enumerate(ys)]
    for i, y in enumerate(ys):
        if y.ndim == 2 and y.shape[1] != 1:
            raise ValueError(f"path: {path}: Y{{{i + 1}}} has shape {y.shape}; the school data "
                             f"has one exam score per student (a column)")
    ts = TaskSet.from_arrays(Xs, [y.reshape(-1) for y in ys], dtype=dtype)
    return ts.with_names([f"school {i + 1}" for i in range(ts.n_tasks)])


def school_splits(tasks, *, repetitions=10, train_fraction=0.75, seed=0):
    """Per repetition, ``(train, test)``: each school's rows split at random,
    ``round(train_fraction · n_i)`` (at least 1, at most n_i − 1) to train, the rest to test.

    ``tasks`` is a TaskSet (e.g. :func:`school`) or the path of ``school.mat``. Both sets keep
    every task, its task_id and name; rows keep their order within each side. Deterministic for
    a seed; repetition r uses the r-th draw of one generator.
    """
    if isinstance(tasks, (str, os.PathLike)):
        tasks = school(tasks)
    _validation.instance("tasks", tasks, TaskSet, "a TaskSet or the path of school.mat")
    repetitions = _validation.integer("repetitions", repetitions, minimum=1)
    f = _validation.real("train_fraction", train_fraction, minimum=0.0, maximum=1.0,
                         min_open=True, max_open=True)
    if tasks.task_sizes.min() < 2:
        raise ValueError("tasks: every task needs at least 2 rows to be split, task "
                         f"{int(np.argmin(tasks.task_sizes))} has 1")
    rng = np.random.default_rng(_validation.seed("seed", seed))
    # everything above is checked at the call; the splits are drawn as they are asked for
    return _draw_splits(tasks, repetitions, f, rng)


def _draw_splits(tasks, repetitions, f, rng):
    sizes = tasks.task_sizes
    n_train = np.clip(np.round(f * sizes).astype(np.int64), 1, sizes - 1)
    for _ in range(repetitions):
        train_rows, test_rows = [], []
        for start, n, k in zip(tasks.offsets[:-1], sizes, n_train):
            perm = rng.permutation(n)
            train_rows.append(start + np.sort(perm[:k]))
            test_rows.append(start + np.sort(perm[k:]))
        yield _rows(tasks, train_rows), _rows(tasks, test_rows)


def _rows(tasks, rows):
    """The TaskSet of the chosen rows of each task (no query rows), keeping ids and names."""
    sizes = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    order = np.concatenate(rows)
    return TaskSet(tasks.X[order], tasks.y[order], offsets, task_ids=tasks.task_ids,
                   dtype=tasks.dtype, names=tasks.names)
