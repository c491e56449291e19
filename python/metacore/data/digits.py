r"""N-way K-shot episodes from scikit-learn's bundled digits (1,797 images of 8×8 pixels, no
download), with the Omniglot protocol's class augmentation.

A *class* is a digit seen at one rotation: class id ``c = 4·digit + r`` is the digit rotated by
``r · 90°`` (r = 0..3), so rotations make 40 classes of about 180 images each
(``rotations=False``: 10 classes, id = digit). Meta-training and meta-testing use disjoint classes,
split by digit so that every rotation of a digit falls on the same side, and 6 and 9 (each a
rotation of the other) on the same side too:

    train digits {0, 1, 4, 6, 8, 9}  (24 classes)     test digits {2, 3, 5, 7}  (16 classes)

An episode draws ``n_way`` distinct classes, relabels them 0..n_way−1 in the order drawn, and
``k_shot + q_query`` distinct images of each: the ``n_way · k_shot`` support rows come first
(class after class), then the ``n_way · q_query`` query rows. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import functools

import numpy as np

from .. import _validation
from .taskset import TaskSet

__all__ = ["digits", "digits_classes", "TRAIN_DIGITS", "TEST_DIGITS"]

TRAIN_DIGITS = (0, 1, 4, 6, 8, 9)
TEST_DIGITS = (2, 3, 5, 7)
_SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def digit_images():
    """For the library's own use: (images (n, 8, 8) float64 in [0, 1], digit labels (n,)),
    loaded once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("mc.tasks.digits needs scikit-learn (its bundled digits images): "
                          "pip install 'metacore[data]'") from None
    data = load_digits()
    return data.images / 16.0, data.target.astype(np.int64)




def _check_digits(name, digits):
    items = _validation.int_sequence(name, digits, minimum=0)
    bad = [d for d in items if d > 9]
    if bad:
        raise ValueError(f"{name} must hold digits 0..9, got {bad[0]}")
    return items


def digits_classes(split="train", *, rotations=True, train_digits=TRAIN_DIGITS):
    """The class ids of a split: ``"train"`` (the digits ``train_digits``), ``"test"`` (the
    others) or ``"all"``. With rotations a digit's four classes are 4·digit + 0..3."""
    _validation.choice("split", split, _SPLITS)
    train = set(_check_digits("train_digits", train_digits))
    if rotations and (6 in train) != (9 in train):
        raise ValueError("train_digits: with rotations 6 and 9 must be on the same side of the "
                         "split (each is the other turned by 180°)")
    chosen = [d for d in range(10)
              if split == "all" or (d in train) == (split == "train")]
    if not chosen:
        raise ValueError(f"the {split!r} split of train_digits={sorted(train)} has no digits")
    per = 4 if rotations else 1
    return np.array([per * d + r for d in chosen for r in range(per)], dtype=np.int64)


def digits(n_tasks, *, n_way=5, k_shot=1, q_query=15, classes="train", rotations=True, seed=0,
           dtype=np.float32):
    """``n_tasks`` N-way K-shot classification episodes as a TaskSet.

    Parameters
    ----------
    classes : "train", "test", "all" or a sequence of class ids
        Which classes episodes draw from (see :func:`digits_classes`; ids are 4·digit + rotation
        with ``rotations``, else the digit).
    rotations : bool
        Make four classes of each digit by rotating its images by 0°, 90°, 180° and 270°.

    Returns
    -------
    TaskSet
        X (n_tasks · n_way · (k_shot + q_query), 64) in [0, 1], y integer labels 0..n_way−1 stored
        as floats, n_support = n_way · k_shot. Use with ``mc.MLP([64, ..., n_way],
        loss="cross_entropy")``.
    """
    n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
    n_way = _validation.integer("n_way", n_way, minimum=2)
    k_shot = _validation.integer("k_shot", k_shot, minimum=1)
    q_query = _validation.integer("q_query", q_query, minimum=0)
    if not isinstance(rotations, (bool, np.bool_)):
        raise TypeError(f"rotations must be a bool, got {type(rotations).__name__}")
    dtype = _validation.float_dtype("dtype", dtype)
    rng = np.random.default_rng(_validation.seed("seed", seed))
    if isinstance(classes, str):
        pool = digits_classes(classes, rotations=bool(rotations))
    else:
        pool = np.array(_validation.int_sequence("classes", classes, minimum=0), dtype=np.int64)
        n_classes = 40 if rotations else 10
        if pool.max() >= n_classes or len(set(pool.tolist())) != len(pool):
            raise ValueError(f"classes must be distinct ids in 0..{n_classes - 1}, got "
                             f"{pool.tolist()}")
    if n_way > len(pool):
        raise ValueError(f"n_way must be <= the number of classes to draw from ({len(pool)}), "
                         f"got {n_way}")

    per_class = k_shot + q_query
    # the episodes' images (and the draws that pick them), before anything is allocated
    _validation.fits_in_memory(f"n_tasks={n_tasks} episodes of n_way={n_way} classes × "
                               f"(k_shot + q_query = {per_class}) images",
                               n_tasks * (n_way * per_class * 64 * 8 * 4 + len(pool) * 16))
    images, labels = digit_images()
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    smallest = min(len(by_digit[c // 4 if rotations else c]) for c in pool)
    if per_class > smallest:
        raise ValueError(f"k_shot + q_query must be <= {smallest} (images in the smallest "
                         f"class), got {per_class}")

    # Every array below is built in pieces of about CHUNK elements, so Ctrl-C stops a large
    # draw within milliseconds; NumPy's draws are sequential, so the pieces draw exactly the
    # numbers one call over the whole would (row-wise sorts do not see the piece boundaries).
    # Classes per episode: the first n_way of a random permutation of the pool (label = position).
    chosen = np.empty((n_tasks, n_way), dtype=np.int64)
    for a, b in _pieces(n_tasks, len(pool)):
        chosen[a:b] = pool[np.argsort(rng.random((b - a, len(pool))), axis=1)[:, :n_way]]
    digit, rot = (chosen // 4, chosen % 4) if rotations else (chosen, np.zeros_like(chosen))
    imgs = np.empty((n_tasks, n_way, per_class, 8, 8))
    for d in np.unique(digit):
        where = np.nonzero(digit == d)
        # per_class distinct images of digit d for every (episode, class) that drew it
        for a, b in _pieces(len(where[0]), len(by_digit[d]) + per_class * 64):
            w = (where[0][a:b], where[1][a:b])
            keys = rng.random((b - a, len(by_digit[d])))
            picks = by_digit[d][np.argpartition(keys, per_class - 1, axis=1)[:, :per_class]]
            imgs[w] = images[picks]
    for r in range(1, 4):
        where = np.nonzero(rot == r)
        for a, b in _pieces(len(where[0]), per_class * 64):
            w = (where[0][a:b], where[1][a:b])
            imgs[w] = np.rot90(imgs[w], k=r, axes=(2, 3))
    imgs = imgs.reshape(n_tasks, n_way, per_class, 64)
    # support rows of every class first, then the query rows, cast to dtype piece by piece
    n_rows, n_sup = n_way * per_class, n_way * k_shot
    X = np.empty((n_tasks, n_rows, 64), dtype=dtype)
    y = np.empty((n_tasks, n_rows), dtype=dtype)
    for a, b in _pieces(n_tasks, n_rows * 64):
        y[a:b, :n_sup] = np.repeat(np.arange(n_way), k_shot)
        y[a:b, n_sup:] = np.repeat(np.arange(n_way), q_query)
        X[a:b, :n_sup] = imgs[a:b, :, :k_shot].reshape(b - a, -1, 64)
        X[a:b, n_sup:] = imgs[a:b, :, k_shot:].reshape(b - a, -1, 64)
    offsets = np.arange(n_tasks + 1, dtype=np.int64) * n_rows
    # images in [0, 1] and labels 0..n_way−1: finite in either dtype, nothing left to check
    return TaskSet.from_checked(X.reshape(-1, 64), y.reshape(-1), offsets,
                                np.full(n_tasks, n_sup, dtype=np.int64),
                                np.arange(n_tasks, dtype=np.int64))


# Elements per NumPy call while drawing a task family (here and in tasks.py): Python handles a
# pending Ctrl-C between calls, so a family of any size stops within milliseconds of it.
CHUNK = 1 << 20


def _pieces(n, per_item):
    """(start, stop) pieces of range(n) of about CHUNK elements, ``per_item`` elements each."""
    step = max(1, CHUNK // max(1, per_item))
    return ((a, min(a + step, n)) for a in range(0, n, step))
