r"""Labelled images grouped into classes, and the N-way K-shot episodes drawn from them.

A :class:`ClassImages` holds ``N`` flattened images ``X (N, s²)`` sorted by class, the class of
each image, and for each class its name and its alphabet. Splits go by alphabet, so every class
made from one character (its rotations) stays on one side.

An episode draws ``n_way`` distinct classes, relabels them 0..n_way−1 in the order drawn, and
``k_shot + q_query`` distinct images of each: the ``n_way · k_shot`` support rows come first
(class after class), then the ``n_way · q_query`` query rows — the conventions of
:func:`metacore.tasks.digits`.
"""

from __future__ import annotations


import numpy as np

from .. import _validation
from .tasks import EpisodeSource
from .taskset import TaskSet

__all__ = ["ClassImages"]


def _frozen(arr):
    arr.flags.writeable = False
    return arr.view()


class ClassImages:
    """Images of many classes, ready to be drawn into few-shot episodes.

    Parameters
    ----------
    X : array-like, shape (N, image_size²)
        Flattened square images, rows of class 0 first, then class 1, ... (float32 in [0, 1]).
    labels : array-like of int, shape (N,)
        The class of each row, non-decreasing, every class 0..C−1 present.
    class_names : sequence of str, length C
    class_alphabets : sequence of str, length C
        The alphabet (or any other group) of each class; :meth:`subset` splits by it.

    ``X`` and ``labels`` are read-only copies.
    """

    def __init__(self, X, labels, class_names, class_alphabets):
        X = np.array(_validation.float_array("X", X, ndim=2, dtype=np.float32), copy=True)
        self._setup(X, labels, class_names, class_alphabets)

    @classmethod
    def from_checked(cls, X, labels, class_names, class_alphabets):
        """For the library's own use: ``X`` a new float32 array nobody else holds, taken
        without the copy (the shifted pool of Omniglot minimal is 163 MiB); the other arguments
        are checked as by the constructor."""
        self = cls.__new__(cls)
        self._setup(X, labels, class_names, class_alphabets)
        return self

    def _setup(self, X, labels, class_names, class_alphabets):
        labels = _validation.as_array("labels", labels)
        if labels.dtype.kind not in "iu" or labels.shape != (X.shape[0],):
            raise ValueError(f"labels must be {X.shape[0]} integers (one per row of X), got "
                             f"dtype {labels.dtype} and shape {labels.shape}")
        names, groups = tuple(class_names), tuple(class_alphabets)
        if len(groups) != len(names):
            raise ValueError(f"class_alphabets must have one entry per class ({len(names)}), "
                             f"got {len(groups)}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            # checked before bincount, which would allocate one count per value up to the largest
            raise ValueError(f"labels must be class numbers 0..{len(names) - 1} (one per entry "
                             f"of class_names), got values from {labels.min()} to {labels.max()}")
        counts = np.bincount(labels, minlength=len(names)) if labels.size else np.zeros(0, int)
        if (labels.size == 0 or (np.diff(labels) < 0).any() or labels.min() < 0
                or counts.shape[0] != len(names) or (counts == 0).any()):
            raise ValueError(f"labels must be sorted and cover every class 0..{len(names) - 1} "
                             f"(one per entry of class_names)")
        side = int(round(np.sqrt(X.shape[1])))
        if side * side != X.shape[1]:
            raise ValueError(f"X must hold flattened square images, got {X.shape[1]} columns")
        self._X = _frozen(X)
        self._labels = _frozen(labels.astype(np.int64))
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.class_names = names
        self.class_alphabets = groups
        self.image_size = side

    # --- what it holds ---------------------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        """(N, image_size²) float32 in [0, 1], read-only; rows sorted by class."""
        return self._X

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64: the class of each row of X."""
        return self._labels

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_sizes(self) -> np.ndarray:
        """(C,) int64: images per class."""
        return np.diff(self._starts)

    @property
    def alphabets(self) -> tuple:
        """The distinct alphabets, in class order."""
        return tuple(dict.fromkeys(self.class_alphabets))

    def images(self, c):
        """(n_c, image_size, image_size) read-only view of the images of class ``c``."""
        c = _validation.integer("c", c, minimum=0, maximum=self.n_classes - 1)
        s = self.image_size
        return self._X[self._starts[c]:self._starts[c + 1]].reshape(-1, s, s)

    # --- splits -----------------------------------------------------------------------------------
    def subset(self, alphabets):
        """The classes of the alphabets named ``alphabets`` (class order kept from this set).
        Every class of an alphabet goes along, so all rotations of a character stay together."""
        if isinstance(alphabets, str):
            alphabets = [alphabets]
        wanted = list(dict.fromkeys(alphabets))
        if not wanted:
            raise ValueError("alphabets must name at least one alphabet, got none")
        unknown = [a for a in wanted if a not in set(self.class_alphabets)]
        if unknown:
            raise ValueError(f"alphabets: {unknown[0]!r} is not one of {list(self.alphabets)}")
        keep = [c for c, g in enumerate(self.class_alphabets) if g in set(wanted)]
        rows = np.concatenate([np.arange(self._starts[c], self._starts[c + 1]) for c in keep])
        labels = np.repeat(np.arange(len(keep)), self.class_sizes[keep])
        return ClassImages.from_checked(self._X[rows], labels, [self.class_names[c] for c in keep],
                                        [self.class_alphabets[c] for c in keep])

    def take(self, classes):
        """The classes of the indices ``classes`` (in that order, relabelled 0..len−1), each with
        all its images. Splitting a set by character — e.g. holding out every rotation of some
        characters as a validation split — takes the indices of those characters' classes."""
        idx = _validation.as_array("classes", classes)
        if idx.dtype.kind not in "iu" or idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"classes must be a non-empty 1-D array of class indices, got dtype "
                             f"{idx.dtype} and shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= self.n_classes or np.unique(idx).size != idx.size:
            raise ValueError(f"classes must be distinct indices in 0..{self.n_classes - 1}")
        rows = np.concatenate([np.arange(self._starts[c], self._starts[c + 1]) for c in idx])
        labels = np.repeat(np.arange(idx.size), self.class_sizes[idx])
        return ClassImages.from_checked(self._X[rows], labels, [self.class_names[c] for c in idx],
                                        [self.class_alphabets[c] for c in idx])

    def shifted(self, shifts=((0, 1), (0, -1), (1, 0), (-1, 0))):
        """Data augmentation: every class keeps its images and gains, for each ``(dy, dx)`` of
        ``shifts``, a copy of each of them translated by dy rows (down) and dx columns (right),
        the pixels moved in from the border set to 0 (no ink). Class ``c`` of the result holds
        ``(1 + len(shifts)) · n_c`` images: the originals first, then one block per shift in
        the order given. Names and alphabets are kept. Memory: ``(1 + len(shifts))`` times X.

        Meant for a meta-train pool (an episode may then draw an image and its shifted copy);
        never for the classes episodes are scored on.
        """
        pairs = []
        for d in shifts:   # each entry an int (not 1.7, which int() would make 1, nor True)
            a = list(d.reshape(-1)) if isinstance(d, np.ndarray) else list(d) \
                if isinstance(d, (list, tuple)) else [d]
            if not all(_validation.is_integer(v) for v in a):
                raise TypeError(f"shifts must be (dy, dx) integer pairs, got {d!r}")
            pairs.append(tuple(int(v) for v in a))
        s = self.image_size
        if any(len(d) != 2 or abs(d[0]) >= s or abs(d[1]) >= s for d in pairs):
            raise ValueError(f"shifts must be (dy, dx) integer pairs with |dy|, |dx| < {s}, "
                             f"got {pairs}")
        blocks = []
        for c in range(self.n_classes):
            imgs = self.images(c)
            out = [imgs]
            for dy, dx in pairs:
                moved = np.zeros_like(imgs)
                src = imgs[:, max(0, -dy):s - max(0, dy), max(0, -dx):s - max(0, dx)]
                moved[:, max(0, dy):max(0, dy) + src.shape[1],
                      max(0, dx):max(0, dx) + src.shape[2]] = src
                out.append(moved)
            blocks.append(np.concatenate(out).reshape(-1, s * s))
        labels = np.repeat(np.arange(self.n_classes), self.class_sizes * (1 + len(pairs)))
        return ClassImages.from_checked(np.concatenate(blocks), labels, self.class_names,
                                        self.class_alphabets)

    # --- episodes ---------------------------------------------------------------------------------
    def episodes(self, n, *, n_way, k_shot, q_query=15, seed=0, dtype=np.float32):
        """``n`` N-way K-shot classification episodes as a TaskSet.

        Per episode: ``n_way`` classes without replacement, relabelled 0..n_way−1 in the order
        drawn, and ``k_shot + q_query`` images of each without replacement; support rows
        (``n_way · k_shot``, class after class) first, then the query rows. Deterministic for a
        seed. Use with ``mc.MLP([image_size², ..., n_way], loss="cross_entropy")``.
        """
        n = _validation.integer("n", n, minimum=1)
        n_way = _validation.integer("n_way", n_way, minimum=2)
        k_shot = _validation.integer("k_shot", k_shot, minimum=1)
        q_query = _validation.integer("q_query", q_query, minimum=0)
        dtype = _validation.float_dtype("dtype", dtype)
        rng = np.random.default_rng(_validation.seed("seed", seed))
        C, sizes = self.n_classes, self.class_sizes
        if n_way > C:
            raise ValueError(f"n_way must be <= the number of classes ({C}), got {n_way}")
        per_class = k_shot + q_query
        if per_class > sizes.min():
            raise ValueError(f"k_shot + q_query must be <= {sizes.min()} (images in the smallest "
                             f"class), got {per_class}")
        # the draw's arrays (class keys and their order; image keys and picks) and the
        # episodes themselves, refused before NumPy is asked for them (its MemoryError names no
        # argument)
        rows_out = n * n_way * per_class
        _validation.fits_in_memory(
            f"n={n} episodes of {n_way}-way {k_shot}-shot ({q_query} queries per class)",
            16 * n * C + 16 * n * n_way * int(sizes.max())
            + rows_out * (self._X.shape[1] * (4 + np.dtype(dtype).itemsize) + 40))

        # classes: the first n_way of a random permutation per episode (label = position)
        chosen = np.argsort(rng.random((n, C)), axis=1)[:, :n_way]
        # images: the per_class smallest random keys among the class's own images
        keys = rng.random((n, n_way, int(sizes.max())))
        keys[np.arange(keys.shape[2]) >= sizes[chosen][..., None]] = np.inf
        picks = np.argpartition(keys, per_class - 1, axis=2)[..., :per_class]
        rows = self._starts[chosen][..., None] + picks                      # (n, n_way, per_class)
        order = np.concatenate([rows[:, :, :k_shot].reshape(n, -1),
                                rows[:, :, k_shot:].reshape(n, -1)], axis=1).reshape(-1)
        labels = np.broadcast_to(np.arange(n_way, dtype=np.float64)[None, :, None],
                                 (n, n_way, per_class))
        y = np.concatenate([labels[:, :, :k_shot].reshape(n, -1),
                            labels[:, :, k_shot:].reshape(n, -1)], axis=1).reshape(-1)
        offsets = np.arange(n + 1, dtype=np.int64) * (n_way * per_class)
        # The gathered rows are a fresh array of checked images: handed over without the copy
        # TaskSet makes of a caller's arrays (600 20-way 5-shot episodes of 28×28 images are
        # 720 MiB; the copy doubled the peak).
        X = self._X[order]
        X = X if X.dtype == dtype else X.astype(dtype)
        return TaskSet.from_checked(X, y.astype(dtype), offsets,
                                    np.full(n, n_way * k_shot, dtype=np.int64),
                                    np.arange(n, dtype=np.int64))

    def source(self, *, n_way, k_shot, q_query=15):
        """An :class:`~metacore.data.tasks.EpisodeSource` over these classes: fresh N-way K-shot
        episodes drawn in the core at every meta-training step (``mc.MetaObjective(learner,
        images.source(n_way=5, k_shot=1), meta_batch=32)``)."""
        return EpisodeSource.from_checked(self.X, self._starts, n_way=n_way, k_shot=k_shot,
                                          q_query=q_query)

    def __len__(self) -> int:
        return self.n_classes

    def __repr__(self):
        return (f"ClassImages(n_classes={self.n_classes}, n_images={self._X.shape[0]}, "
                f"image_size={self.image_size}, alphabets={len(self.alphabets)})")
