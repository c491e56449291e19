r"""What :func:`metacore.fit` minimises: a :class:`Objective` (multi-task learning,
Σ_i α_i f_i(θ) + (λ/2)‖θ‖²) or a :class:`MetaObjective` (meta-learning: a learner's meta-loss over
meta-batches drawn at every step). Both are computed by the compiled core."""

from __future__ import annotations

import numpy as np

from . import _validation
from .data.tasks import EpisodeSource, SinusoidSource
from .data.taskset import TaskSet
from .learners import Learner
from .models import MLP

__all__ = ["Objective", "MetaObjective"]

ROWS = ("all", "support", "query")


class Objective:
    r"""f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖², with f_i the mean row loss of task i over its chosen rows.

    Parameters
    ----------
    model : MLP
        The net (``mc.MLP``, ``mc.Linear``, ``mc.Logistic``, ``mc.Softmax``).
    ts : TaskSet
        The tasks. Task i uses output head ``ts.task_ids[i]`` when the model has per-task heads.
    weights : array-like of shape (T,) or None
        Non-negative finite task weights α; None gives 1/T each.
    l2 : float
        λ >= 0, applied to all of θ.
    rows : {"all", "support", "query"}
        Which rows of every task enter f_i.
    n_threads : int or None
        None = the OpenMP default (respects OMP_NUM_THREADS), -1 = all cores, k >= 1 = k threads.
        Results are bit-identical for any thread count.

    ``task_losses`` and ``task_grads`` return the unweighted f_i and ∇f_i (no α, no L2): what the
    weighting strategies consume. ``hvp`` is the exact Σ α_i ∇²f_i(θ) v + λ v, by forward-over-reverse
    differentiation through the net. θ's dtype (float32 or float64) decides the dtype of the work; the
    TaskSet is converted once per dtype and kept.
    """

    def __init__(self, model, ts, weights=None, l2=0.0, rows="all", n_threads=None):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a metacore model (MLP), got {type(model).__name__}")
        if not isinstance(ts, TaskSet):
            raise TypeError(f"ts must be a TaskSet, got {type(ts).__name__}")
        if ts.n_features != model.n_features:
            raise ValueError(f"ts has {ts.n_features} features but the model expects "
                             f"{model.n_features}")
        if model.task_heads is not None and int(ts.task_ids.max()) >= model.task_heads:
            raise ValueError(f"ts.task_ids go up to {int(ts.task_ids.max())} but the model has "
                             f"task_heads={model.task_heads}")
        ts.check_labels(model.loss, model.n_outputs)
        self.model = model
        self.ts = ts
        self.rows = _validation.choice("rows", rows, ROWS)
        self._check_rows()
        self.l2 = _validation.real("l2", l2, minimum=0.0)
        self.weights = weights
        self.n_threads = _validation.n_threads(n_threads)
        self._handles = {}

    # --- configuration ----------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """The task weights α (T,), float64."""
        return self._weight_state[0]

    @weights.setter
    def weights(self, value):
        T = self.ts.n_tasks
        if value is None:
            w = np.full(T, 1.0 / T)
        else:
            # a private copy: the caller's array is neither frozen nor read later
            w = np.array(_validation.float_array("weights", value, ndim=1, dtype=np.float64))
            if w.shape[0] != T:
                raise ValueError(f"weights must have one entry per task ({T}), got {w.shape[0]}")
            if (w < 0).any():
                i = int(np.argmax(w < 0))
                raise ValueError(f"weights must be non-negative, got {w[i]} for task {i}")
        w.setflags(write=False)
        self._weight_state = (w, {})    # α and its typed copies, swapped in one assignment

    @property
    def n_params(self) -> int:
        return self.model.n_params

    def param_groups(self) -> dict:
        """Named ranges ``{name: (begin, end)}`` of θ for optimizer parameter groups
        (``metacore.optim``, ``groups=``): ``"model"`` (all of θ); with per-task heads also
        ``"shared"`` (the entries every task uses) and ``"heads"`` (the per-task output layers)."""
        P, groups = self.n_params, {"model": (0, self.n_params)}
        if self.model.task_heads:
            S = self.model.n_shared_params
            groups.update(shared=(0, S), heads=(S, P))
        return groups

    @property
    def n_tasks(self) -> int:
        return self.ts.n_tasks

    def _check_rows(self):
        if self.rows == "all":
            return
        counts = self.ts.n_support if self.rows == "support" else self.ts.n_query
        if (counts == 0).any():
            i = int(np.argmax(counts == 0))
            raise ValueError(f"rows={self.rows!r}: task {i} has no {self.rows} rows")

    # Compiled handles and typed copies are per-process caches: never pickled, rebuilt lazily.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_weight_state"] = (state["_weight_state"][0], {})
        return state

    def core_handle(self, dtype):
        """The compiled objective over the tasks converted to ``dtype`` (built once per dtype;
        keyed by the canonical dtype, and stored only once built)."""
        dtype = _validation.float_dtype("dtype", dtype)
        _validation.in_dtype_range("l2", self.l2, dtype)   # the core computes λθ in dtype
        handle = self._handles.get(dtype)
        if handle is None:
            from . import _core
            ts = self.ts.astype(dtype)
            cls = _core.Objective32 if dtype == np.float32 else _core.Objective64
            y = ts.y if ts.y.ndim == 2 else ts.y.reshape(-1, 1)
            handle = cls(self.model.core_net(), ts.X, y, ts.offsets, ts.n_support, ts.task_ids,
                         self.rows)
            handle = self._handles.setdefault(dtype, handle)
        return handle

    def _prepare(self, theta):
        theta = _validation.theta("theta", theta, self.n_params)
        return theta, self.core_handle(theta.dtype)

    def typed_weights(self, dtype):
        """α as an array of ``dtype`` (converted once per dtype)."""
        dtype = _validation.float_dtype("dtype", dtype)
        weights, cache = self._weight_state
        w = cache.get(dtype)
        if w is None:
            with np.errstate(over="ignore"):
                w = weights.astype(dtype)
            if not np.isfinite(w).all():
                i = int(np.argmin(np.isfinite(w)))
                _validation.in_dtype_range(f"weights[{i}]", float(weights[i]), dtype)
            w.setflags(write=False)
            w = cache.setdefault(dtype, w)
        return w

    # --- the numbers ----------------------------------------------------------------------
    def value(self, theta) -> float:
        """f(θ)."""
        theta, h = self._prepare(theta)
        return h.value_and_grad(theta, self.typed_weights(theta.dtype), self.l2, False, self.n_threads)[0]

    def grad(self, theta) -> np.ndarray:
        """∇f(θ), shape (P,), θ's dtype."""
        return self.value_and_grad(theta)[1]

    def value_and_grad(self, theta):
        """(f(θ), ∇f(θ)) from one pass over the data."""
        theta, h = self._prepare(theta)
        value, grad, _ = h.value_and_grad(theta, self.typed_weights(theta.dtype), self.l2, True,
                                          self.n_threads)
        return value, grad

    def value_grad_and_task_losses(self, theta):
        """(f(θ), ∇f(θ), f_i(θ) for every task) from one pass."""
        theta, h = self._prepare(theta)
        return h.value_and_grad(theta, self.typed_weights(theta.dtype), self.l2, True, self.n_threads)

    def task_losses(self, theta) -> np.ndarray:
        """Unweighted f_i(θ) for every task, shape (T,)."""
        theta, h = self._prepare(theta)
        return h.value_and_grad(theta, self.typed_weights(theta.dtype), self.l2, False,
                                self.n_threads)[2]

    def task_grads(self, theta) -> np.ndarray:
        """Unweighted ∇f_i(θ) for every task, shape (T, P) (zero outside the layers task i uses)."""
        return self.task_losses_and_grads(theta)[1]

    def task_losses_and_grads(self, theta):
        """(f_i (T,), ∇f_i (T, P)) from one parallel pass."""
        theta, h = self._prepare(theta)
        grads, losses = h.task_grads(theta, self.n_threads)
        return losses, grads

    def hvp(self, theta, v) -> np.ndarray:
        """Σ α_i ∇²f_i(θ) v + λ v, exact (forward-over-reverse), shape (P,)."""
        theta, h = self._prepare(theta)
        v = _validation.float_array("v", v, ndim=1, dtype=theta.dtype)
        if v.shape[0] != self.n_params:
            raise ValueError(f"v must have length {self.n_params}, got {v.shape[0]}")
        return h.hvp(theta, v, self.typed_weights(theta.dtype), self.l2, self.n_threads)

    def spec(self) -> dict:
        """Plain data naming this problem, as a checkpoint records it: the tasks' shape (tasks,
        rows, features), the rows used and λ."""
        return {"kind": "multitask", "n_tasks": self.n_tasks,
                "data": [self.ts.n_tasks, int(self.ts.X.shape[0]), self.ts.n_features],
                "rows": self.rows, "l2": self.l2}

    def __repr__(self):
        return (f"Objective({self.model!r}, {self.ts.n_tasks} tasks, l2={self.l2}, "
                f"rows={self.rows!r})")


class MetaObjective:
    r"""The meta-learning problem for :func:`metacore.fit`: at step t, draw a meta-batch of
    ``meta_batch`` tasks and take the learner's meta-loss and meta-gradient over it,

        F_t(θ) = (1/B) Σ_{i ∈ B_t} L_q,i(φ_i(θ)),   φ_i = the learner's inner loop on task i's
        support rows,

    (Finn et al. 2017, eq. 1 and algorithm 1). The draw is keyed on (seed, t): a resumed run draws
    the tasks the uninterrupted one drew.

    Parameters
    ----------
    learner : MAML, FOMAML, ANIL, MetaSGD, Reptile, ProtoNet, RidgeHead or IMAML
        The inner loop and the meta-gradient (``learner.meta_value_and_grad``).
    tasks : TaskSet or task source
        A TaskSet whose tasks all have support and query rows (step t takes ``meta_batch``
        distinct tasks, chosen by ``CounterRng(seed, t)``), or a task source —
        ``mc.tasks.SinusoidSource()``, ``mc.tasks.EpisodeSource(...)`` /
        ``ClassImages.source(...)`` — whose fresh tasks the core generates at every step.
    meta_batch : int >= 1
        Tasks per meta-step (at most the TaskSet's number of tasks).
    n_threads : int or None
        Threads over the meta-batch (None: the learner's setting). Results are bit-identical for
        any thread count.

    Raises ValueError/TypeError naming the argument for a task set without support or query rows,
    a meta-batch larger than the task set, or tasks that do not fit the learner's model.
    """

    def __init__(self, learner, tasks, meta_batch=25, n_threads=None):
        self.learner = _validation.instance("learner", learner, Learner,
                                            "a metacore learner (MAML, FOMAML, ANIL, MetaSGD, "
                                            "Reptile, ProtoNet, RidgeHead, IMAML)")
        if not isinstance(tasks, (TaskSet, SinusoidSource, EpisodeSource)):
            raise TypeError(f"tasks must be a TaskSet or a task source (mc.tasks.SinusoidSource, "
                            f"mc.tasks.EpisodeSource), got {type(tasks).__name__}")
        self.meta_batch = _validation.integer("meta_batch", meta_batch, minimum=1)
        if isinstance(tasks, TaskSet):
            learner.check_batch(tasks, tasks.dtype, "tasks")
            if self.meta_batch > tasks.n_tasks:
                raise ValueError(f"meta_batch must be <= the number of tasks ({tasks.n_tasks}), "
                                 f"got {self.meta_batch}")
        else:
            learner.check_source(tasks, "tasks")
            if isinstance(tasks, SinusoidSource):   # the core generates these rows each step
                rows = self.meta_batch * (tasks.k_support + tasks.k_query)
                _validation.fits_in_memory(
                    f"meta_batch={self.meta_batch} tasks of k_support + k_query = "
                    f"{tasks.k_support + tasks.k_query} rows each", rows * 2 * 8)
        self.tasks = tasks
        self.n_threads = (learner.n_threads if n_threads is None
                          else _validation.n_threads(n_threads))

    @property
    def model(self):
        return self.learner.model

    @property
    def n_params(self) -> int:
        """Length of the parameters trained (Meta-SGD: θ and its rates, 2P)."""
        return self.learner.n_params

    def param_groups(self) -> dict:
        """The learner's named ranges of the trained parameters (``Learner.param_groups``)."""
        return self.learner.param_groups()

    def core_step(self, dtype, n_threads=None):
        """A new compiled meta-step over these tasks for ``dtype``, running the meta-batch on
        ``n_threads`` threads (None: this problem's setting). Each fit builds its own: the step
        keeps mutable workspaces, so one must never serve two runs at once (nor be pickled)."""
        from . import _core
        dtype = _validation.float_dtype("dtype", dtype)
        self.learner.check_dtype(dtype)   # hyper-parameters that the working dtype cannot hold
        cls = _core.MetaStep32 if dtype == np.float32 else _core.MetaStep64
        threads = self.n_threads if n_threads is None else n_threads
        try:    # the core's own refusal of a size names nothing: say which setting asked
            step = cls(self.learner.core_net(), *self.learner.core_spec(), self.meta_batch,
                       threads, **self.learner.core_options())
            if isinstance(self.tasks, TaskSet):
                ts = self.learner.check_batch(self.tasks, dtype, "tasks")
                step.sample_from(ts.X, ts.y, ts.offsets, ts.n_support)
            elif isinstance(self.tasks, EpisodeSource):
                step.episodes_from(*self.tasks.core_args(dtype))
            else:
                step.generate(*self.tasks.core_args())
        except MemoryError as exc:
            raise MemoryError(f"meta_batch={self.meta_batch} with tasks {self.tasks!r}: "
                              f"the meta-step's buffers do not fit in memory ({exc})") from None
        return step

    def spec(self) -> dict:
        """Plain data naming this problem (the learner, its model and the meta-batch size), as a
        checkpoint records it."""
        if isinstance(self.tasks, TaskSet):
            tasks = {"taskset": [self.tasks.n_tasks, int(self.tasks.X.shape[0]),
                                 self.tasks.n_features]}
        elif isinstance(self.tasks, EpisodeSource):
            tasks = {"episodes": [self.tasks.n_classes, int(self.tasks.X.shape[0]),
                                  self.tasks.n_way, self.tasks.k_shot, self.tasks.q_query]}
        else:
            tasks = {"sinusoid": [list(a) if isinstance(a, tuple) else a
                                  for a in self.tasks.core_args()]}
        return {"kind": "meta", "learner": self.learner.to_dict(), "meta_batch": self.meta_batch,
                "tasks": tasks}

    def __repr__(self):
        what = (f"{self.tasks.n_tasks} tasks" if isinstance(self.tasks, TaskSet)
                else repr(self.tasks))
        return f"MetaObjective({self.learner!r}, {what}, meta_batch={self.meta_batch})"
