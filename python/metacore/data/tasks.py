"""Built-in task families, each returned as a :class:`~metacore.taskset.TaskSet`.

Every family draws from ``np.random.default_rng(seed)``, so the same arguments give the same tasks.
The hidden per-task parameters are not stored in the TaskSet; ``sinusoid_params`` and
``linear_family_params`` recompute exactly the ones a family used for the same seed (the family
draws them first, in the same order).
"""

from __future__ import annotations


import numpy as np

from .. import _validation
from .tabular import from_csv, from_dataframe
from .digits import CHUNK, digits, digits_classes
from .taskset import TaskSet

__all__ = ["sinusoid", "sinusoid_params", "linear_family", "logistic_family",
           "linear_family_params", "SinusoidSource", "EpisodeSource", "digits", "digits_classes", "from_csv",
           "from_dataframe"]


def _interval(name, value):
    """A pair (lo, hi) of finite reals with lo <= hi."""
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a pair (lo, hi), got {type(value).__name__}") from None
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi), got {len(items)} entries")
    lo = _validation.real(f"{name}[0]", items[0])
    hi = _validation.real(f"{name}[1]", items[1])
    if lo > hi:
        raise ValueError(f"{name} must have lo <= hi, got ({lo}, {hi})")
    return lo, hi


# --- drawing in bounded pieces ---------------------------------------------------------------------
# CHUNK (digits.py): elements per NumPy call, so a family of any size stops within milliseconds
# of Ctrl-C (one call over 2^29 rows took seconds). NumPy's generators draw sequentially, so
# chunked draws give exactly the stream of one call of the total size.


def _chunks(total):
    """(start, stop) of consecutive pieces of at most CHUNK elements covering range(total)."""
    return ((a, min(a + CHUNK, total)) for a in range(0, total, CHUNK))


def _draw(draw, shape):
    """``draw(size=m)`` called piece by piece into one float64 array of ``shape``: the numbers
    one ``draw(size=shape)`` gives, in C order."""
    out = np.empty(shape, dtype=np.float64)
    flat = out.reshape(-1)
    for a, b in _chunks(flat.size):
        flat[a:b] = draw(size=b - a)
    return out


def _cast(src, dtype):
    """``src`` (float64) converted to ``dtype`` piece by piece; None when an entry is not finite
    there (NaN, ±inf, or beyond float32's range): the caller then lets TaskSet name it."""
    out = src if dtype == np.float64 else np.empty(src.shape, dtype=dtype)
    flat_in, flat_out = src.reshape(-1), out.reshape(-1)
    with np.errstate(over="ignore"):
        for a, b in _chunks(flat_in.size):
            if out is not src:
                flat_out[a:b] = flat_in[a:b]
            if not np.isfinite(flat_out[a:b]).all():
                return None
    return out


def _task_set(X, y, offsets, n_support, dtype):
    """The TaskSet of generated float64 (X, y): converted and checked in pieces, then packed
    without a second pass (TaskSet's own one-call checks and copy took seconds on 2^29 rows); a
    value not finite in ``dtype`` goes through TaskSet's constructor, whose error names it."""
    Xc, yc = _cast(X, dtype), _cast(y, dtype)
    if Xc is None or yc is None:
        return TaskSet(X, y, offsets, n_support=n_support, dtype=dtype)
    sizes = np.diff(offsets)
    return TaskSet.from_checked(Xc, yc, offsets, sizes, np.arange(sizes.shape[0],
                                                                    dtype=np.int64)
                                ).with_support(n_support)


# --- sinusoid regression (Finn et al., 2017) ------------------------------------------------------
def _sinusoid_params(rng, n_tasks, amplitude, phase):
    A = rng.uniform(amplitude[0], amplitude[1], size=n_tasks)
    phi = rng.uniform(phase[0], phase[1], size=n_tasks)
    return A, phi


def sinusoid_params(n_tasks, *, amplitude=(0.1, 5.0), phase=(0.0, np.pi), seed=0):
    """The amplitudes and phases ``(A, φ)``, each (n_tasks,) float64, that
    ``sinusoid(n_tasks, amplitude=amplitude, phase=phase, seed=seed)`` uses."""
    n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
    amplitude, phase = _interval("amplitude", amplitude), _interval("phase", phase)
    _validation.fits_in_memory(f"n_tasks={n_tasks} tasks' amplitudes and phases",
                               n_tasks * 8 * 4)          # A, φ and their uniform draws
    return _sinusoid_params(np.random.default_rng(_validation.seed("seed", seed)), n_tasks,
                            amplitude, phase)


def sinusoid(n_tasks, *, k_support=10, k_query=10, amplitude=(0.1, 5.0), phase=(0.0, np.pi),
             x_range=(-5.0, 5.0), seed=0, dtype=np.float32):
    """Sinusoid regression tasks: ``y = A sin(x − φ)``.

    Per task, ``A ~ U(amplitude)`` and ``φ ~ U(phase)``; per row ``x ~ U(x_range)``. Each task has
    ``k_support + k_query`` rows, the first ``k_support`` its support rows.

    Returns
    -------
    TaskSet
        X of shape (n_tasks · (k_support + k_query), 1), 1-D y, n_support = k_support, in ``dtype``.
        The (A, φ) of each task are given by :func:`sinusoid_params` with the same arguments.
    """
    n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
    k_support = _validation.integer("k_support", k_support, minimum=0)
    k_query = _validation.integer("k_query", k_query, minimum=0)
    if k_support + k_query == 0:
        raise ValueError("k_support + k_query must be >= 1 (a task needs a row), got 0 and 0")
    amplitude, phase = _interval("amplitude", amplitude), _interval("phase", phase)
    x_range = _interval("x_range", x_range)
    dtype = _validation.float_dtype("dtype", dtype)
    rng = np.random.default_rng(_validation.seed("seed", seed))

    n = k_support + k_query
    _validation.fits_in_memory(f"n_tasks={n_tasks} tasks of k_support + k_query = {n} rows",
                               n_tasks * n * 8 * 4)     # x, y and their float64 temporaries
    A, phi = _sinusoid_params(rng, n_tasks, amplitude, phase)
    x = _draw(lambda size: rng.uniform(x_range[0], x_range[1], size=size), n_tasks * n)
    y = np.empty_like(x)        # A sin(x − φ) in float64, row piece by row piece
    for a, b in _chunks(x.shape[0]):
        task = np.arange(a, b, dtype=np.int64) // n
        y[a:b] = A[task] * np.sin(x[a:b] - phi[task])
    offsets = np.arange(n_tasks + 1, dtype=np.int64) * n
    return _task_set(x.reshape(-1, 1), y, offsets, k_support, dtype)


class SinusoidSource:
    """The infinite sinusoid family as a task source: fresh tasks at every meta-training step, as
    in the MAML paper. Tasks are generated in the compiled core, so ``learner.fit`` draws them
    inside its GIL-free chunks.

    Task i of step s: ``A ~ U(amplitude)``, ``φ ~ U(phase)``, ``k_support + k_query`` rows with
    ``x ~ U(x_range)`` and ``y = A sin(x − φ)`` (the first ``k_support`` rows are support rows),
    every number a pure function of (seed, s, i, row) through the core's counter-based generator:
    the same tasks for any thread count, and a run resumed at step s draws what it would have.
    (These are not the tasks :func:`sinusoid` draws for the same seed: that uses NumPy's
    generator.)
    """

    def __init__(self, *, k_support=10, k_query=10, amplitude=(0.1, 5.0), phase=(0.0, np.pi),
                 x_range=(-5.0, 5.0)):
        self.k_support = _validation.integer("k_support", k_support, minimum=1)
        self.k_query = _validation.integer("k_query", k_query, minimum=1)
        self.amplitude = _interval("amplitude", amplitude)
        self.phase = _interval("phase", phase)
        self.x_range = _interval("x_range", x_range)

    def core_args(self):
        """For the library's own use: the source's settings in the order the core takes them."""
        return self.k_support, self.k_query, self.amplitude, self.phase, self.x_range

    def sample(self, n_tasks, *, step=0, seed=0, dtype=np.float32):
        """The ``n_tasks`` tasks that meta-training step ``step`` with ``seed`` draws, as a
        TaskSet (X of shape (n_tasks · (k_support + k_query), 1), 1-D y)."""
        from .. import _core
        n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
        step = _validation.integer("step", step, minimum=0)
        dtype = _validation.float_dtype("dtype", dtype)
        X, y, offsets, n_support = _core.sinusoid_tasks(
            *self.core_args(), _validation.seed("seed", seed), step, n_tasks,
            dtype == np.float32)
        return TaskSet.from_checked(X, y, offsets, n_support, np.arange(n_tasks, dtype=np.int64))

    def __repr__(self):
        return (f"SinusoidSource(k_support={self.k_support}, k_query={self.k_query}, "
                f"amplitude={self.amplitude}, phase={self.phase}, x_range={self.x_range})")


class EpisodeSource:
    """Fresh N-way K-shot classification episodes at every meta-training step, drawn in the core
    from a labelled pool (Vinyals et al., 2016; the Omniglot protocol of Finn et al., 2017).

    Parameters
    ----------
    X : array-like (N, d), float32 or float64
        The pool's rows, grouped by class: class c is rows ``class_offsets[c]:class_offsets[c+1]``.
    class_offsets : array-like (C + 1,), int
        From 0 to N, non-decreasing; every class needs ``k_shot + q_query`` rows.
    n_way : int >= 2
        Classes per episode (``n_way <= C``): one class is no classification (its loss is 0),
        as ``ClassImages.episodes`` says too.
    k_shot, q_query : int >= 1
        Support and query rows per class (meta-training needs query rows).

    Episode i of step s takes ``n_way`` distinct classes and ``k_shot + q_query`` distinct rows of
    each, all chosen by the core's counter-based generator from (seed, s, i): the same episodes for
    any thread count, and a run resumed at step s draws what it would have. Labels are 0..N−1 in
    the episode's class order; the ``n_way · k_shot`` support rows (class after class) come first.
    Used as ``mc.MetaObjective(learner, source, meta_batch)`` with a cross-entropy model of
    ``n_way`` outputs; ``ClassImages.source(...)`` builds one from a data set.
    """

    def __init__(self, X, class_offsets, *, n_way, k_shot, q_query=15):
        # a private read-only copy, as a TaskSet keeps: the caller's later writes to their array
        # would change the pool the episodes are drawn from after it was checked
        pool = _validation.owned(_validation.float_array("X", X, ndim=2), X)
        self._setup(_validation.frozen(pool), class_offsets, n_way, k_shot, q_query)

    @classmethod
    def from_checked(cls, X, class_offsets, *, n_way, k_shot, q_query=15):
        """For the library's own use: a source over ``X``, a float32/float64 C-contiguous pool
        that nobody writes to (a ClassImages' read-only images), taken without the copy (the
        shifted Omniglot pool is 163 MiB); the rest is checked as by the constructor."""
        self = cls.__new__(cls)
        self._setup(X, class_offsets, n_way, k_shot, q_query)
        return self

    def _setup(self, X, class_offsets, n_way, k_shot, q_query):
        self.X = X
        offsets = _validation.as_array("class_offsets", class_offsets)   # a mask is refused
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
            raise TypeError(f"class_offsets must be a 1-D integer array, got {offsets.dtype} of "
                            f"shape {offsets.shape}")
        if offsets.dtype == np.uint64 and offsets.size and offsets.max() > _validation.INT64_MAX:
            raise ValueError(f"class_offsets must fit in int64, got {int(offsets.max())}")
        self.class_offsets = offsets.astype(np.int64)
        self.n_way = _validation.integer("n_way", n_way, minimum=2)
        self.k_shot = _validation.integer("k_shot", k_shot, minimum=1)
        self.q_query = _validation.integer("q_query", q_query, minimum=1)
        self.sample(1)           # the core checks the pool once, with its messages

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_classes(self) -> int:
        return self.class_offsets.shape[0] - 1

    def core_args(self, dtype):
        """For the library's own use: the pool converted to ``dtype`` and the episode shape."""
        return (np.ascontiguousarray(self.X, dtype=dtype), self.class_offsets, self.n_way,
                self.k_shot, self.q_query)

    def sample(self, n_tasks, *, step=0, seed=0, dtype=np.float32):
        """The ``n_tasks`` episodes meta-training step ``step`` with ``seed`` draws, as a
        TaskSet."""
        from .. import _core
        n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
        step = _validation.integer("step", step, minimum=0)
        dtype = _validation.float_dtype("dtype", dtype)
        X, y, offsets, n_support = _core.episode_tasks(
            *self.core_args(dtype), _validation.seed("seed", seed), step, n_tasks)
        return TaskSet.from_checked(X, y, offsets, n_support, np.arange(n_tasks, dtype=np.int64))

    def __repr__(self):
        return (f"EpisodeSource({self.n_classes} classes, n_way={self.n_way}, "
                f"k_shot={self.k_shot}, q_query={self.q_query})")


# --- related linear and logistic tasks ------------------------------------------------------------
def _family_params(rng, n_tasks, n_features, relatedness_noise):
    theta_star = _draw(rng.normal, n_features)
    thetas = _draw(rng.normal, (n_tasks, n_features))
    for a, b in _chunks(n_tasks * n_features):     # θ* + relatedness_noise · N(0, I), in pieces
        rows = thetas.reshape(-1)[a:b]
        rows[:] = theta_star[np.arange(a, b) % n_features] + relatedness_noise * rows
    return theta_star, thetas


def linear_family_params(n_tasks, *, n_features=10, relatedness_noise=0.1, seed=0):
    """The shared ``θ*`` (n_features,) and the per-task ``θ_i`` (n_tasks, n_features), float64,
    that :func:`linear_family` and :func:`logistic_family` use for the same arguments and seed."""
    n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
    n_features = _validation.integer("n_features", n_features, minimum=1)
    relatedness_noise = _validation.real("relatedness_noise", relatedness_noise, minimum=0.0)
    _validation.fits_in_memory(f"n_tasks={n_tasks} × n_features={n_features} task parameters",
                               n_tasks * n_features * 8 * 2)
    return _family_params(np.random.default_rng(_validation.seed("seed", seed)), n_tasks, n_features,
                          relatedness_noise)


def _task_sizes(rng, n_tasks, n_rows):
    """n_rows as an int (every task) or a pair (lo, hi): sizes drawn uniformly in [lo, hi]."""
    if _validation.is_integer(n_rows):
        return np.full(n_tasks, _validation.integer("n_rows", n_rows, minimum=1), dtype=np.int64)
    if isinstance(n_rows, (bool, np.bool_, str, bytes)) or not hasattr(n_rows, "__len__"):
        raise TypeError(f"n_rows must be an integer or a pair (lo, hi) of integers, "
                        f"got {type(n_rows).__name__}")
    if len(n_rows) != 2:
        raise ValueError(f"n_rows must be a pair (lo, hi), got {len(n_rows)} entries")
    lo = _validation.integer("n_rows[0]", n_rows[0], minimum=1)
    hi = _validation.integer("n_rows[1]", n_rows[1], minimum=1)
    if lo > hi:
        raise ValueError(f"n_rows must have lo <= hi, got ({lo}, {hi})")
    sizes = np.empty(n_tasks, dtype=np.int64)
    for a, b in _chunks(n_tasks):
        sizes[a:b] = rng.integers(lo, hi, size=b - a, endpoint=True)
    return sizes


def _family(n_tasks, n_features, n_rows, relatedness_noise, seed):
    """Draw (θ_i, X, offsets) shared by the linear and logistic families, in a fixed order:
    θ*, θ_i, task sizes, X ~ N(0, I)."""
    n_tasks = _validation.integer("n_tasks", n_tasks, minimum=1)
    n_features = _validation.integer("n_features", n_features, minimum=1)
    relatedness_noise = _validation.real("relatedness_noise", relatedness_noise, minimum=0.0)
    rng = np.random.default_rng(_validation.seed("seed", seed))
    _validation.fits_in_memory(f"n_tasks={n_tasks} × n_features={n_features} task parameters",
                               n_tasks * n_features * 8 * 2)
    _, thetas = _family_params(rng, n_tasks, n_features, relatedness_noise)
    sizes = _task_sizes(rng, n_tasks, n_rows)
    total = float(sizes.sum(dtype=np.float64))      # the row count, before an int64 sum can wrap
    what = f"n_tasks={n_tasks} tasks of n_rows={n_rows} rows × n_features={n_features}"
    _validation.fits_in_memory(what, total * n_features * 8 * 3)
    if total * n_features > 2.0**62:
        raise ValueError(f"n_rows: {what} is past the largest size (2^63 − 1)")
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = _draw(rng.normal, (int(offsets[-1]), n_features))
    # z_r = x_r · θ_task(r): each row against its own task's parameters, rows piece by piece
    z = np.empty(X.shape[0], dtype=np.float64)
    per = max(1, CHUNK // n_features)
    for a in range(0, X.shape[0], per):
        b = min(a + per, X.shape[0])
        task = np.searchsorted(offsets, np.arange(a, b), side="right") - 1
        z[a:b] = np.einsum("nd,nd->n", X[a:b], thetas[task])
    return rng, X, z, offsets


def linear_family(n_tasks, *, n_features=10, n_rows=50, n_support=None, relatedness_noise=0.1,
                  noise=0.1, seed=0, dtype=np.float64):
    """Related linear-regression tasks.

    ``θ* ~ N(0, I_d)``, ``θ_i = θ* + relatedness_noise · N(0, I_d)``, rows ``x ~ N(0, I_d)`` and
    ``y = x·θ_i + noise · ε`` with ``ε ~ N(0, 1)``.

    Parameters
    ----------
    n_rows : int or (lo, hi)
        Rows per task, or a range: each task's size is drawn uniformly from [lo, hi] (ragged).
    n_support : None, int or per-task ints
        Support rows at the start of each task (None: every row is support).

    Returns
    -------
    TaskSet with 1-D y in ``dtype``; :func:`linear_family_params` gives θ* and θ_i.
    """
    noise = _validation.real("noise", noise, minimum=0.0)
    dtype = _validation.float_dtype("dtype", dtype)
    rng, X, z, offsets = _family(n_tasks, n_features, n_rows, relatedness_noise, seed)
    y = _draw(rng.normal, z.shape[0])
    for a, b in _chunks(z.shape[0]):
        y[a:b] = z[a:b] + noise * y[a:b]
    return _task_set(X, y, offsets, n_support, dtype)


def logistic_family(n_tasks, *, n_features=10, n_rows=50, n_support=None, relatedness_noise=0.1,
                    seed=0, dtype=np.float64):
    """Related binary-classification tasks: as :func:`linear_family`, but with labels
    ``y ~ Bernoulli(σ(x·θ_i))`` in {0, 1}, ``σ(z) = 1 / (1 + e^{−z})`` (stored as 0.0/1.0)."""
    dtype = _validation.float_dtype("dtype", dtype)
    rng, X, z, offsets = _family(n_tasks, n_features, n_rows, relatedness_noise, seed)
    y = _draw(rng.random, z.shape[0])
    for a, b in _chunks(z.shape[0]):
        p = np.exp(-np.logaddexp(0.0, -z[a:b]))  # σ(z) without overflow for large |z|
        y[a:b] = (y[a:b] < p).astype(np.float64)
    return _task_set(X, y, offsets, n_support, dtype)
