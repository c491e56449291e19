r"""Multi-task estimators: one net trained on every task at once, minimising
Σ_i α_i f_i(θ) + (λ/2)‖θ‖² over the tasks given by ``groups``."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score

from .. import _validation
from .. import weighting as _weighting
from ..data.taskset import TaskSet
from ..optim import SGD, Adam
from ..problems import Objective
from ..train.fit import fit as _engine_fit
from .base import MLPBase, check_groups

__all__ = ["MultiTaskMLPRegressor", "MultiTaskMLPClassifier", "weighting_by_name"]

_NAMES = {name.lower(): cls for name, cls in _weighting.BY_NAME.items() if name != "Fixed"}
_NAMES["eval_driven"] = _NAMES["evaldriven"]


def weighting_by_name(value, classifier):
    """A weighting strategy from ``weighting=``: None or "uniform" (α = 1/T), a strategy's name
    in lower case ("dwa", "mgda", "evaldriven", ...; EvalDriven scores classifiers by accuracy),
    or a :mod:`metacore.weighting` object."""
    if value is None:
        return None
    if isinstance(value, _weighting.Weighting):
        return value
    if isinstance(value, str) and value.lower() in _NAMES:
        cls = _NAMES[value.lower()]
        if cls is _weighting.EvalDriven:
            return cls(metric="accuracy" if classifier else "loss", eval_every=10)
        return cls()
    raise ValueError(f"weighting must be None, one of {sorted(_NAMES)} or a metacore.weighting "
                     f"object, got {value!r}")


class _MultiTask(MLPBase):
    def __init__(self, hidden_layer_sizes=(64,), *, activation="relu", task_heads=False,
                 head="full", weighting=None, alpha=0.0, solver="adam", learning_rate_init=0.01,
                 max_iter=200,
                 batch_tasks=None, batch_rows=None, validation_fraction=0.2, warm_start=False,
                 dtype="float32", random_state=None, n_threads=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.task_heads = task_heads
        self.head = head
        self.weighting = weighting
        self.alpha = alpha
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.batch_tasks = batch_tasks
        self.batch_rows = batch_rows
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def _task_heads(self):
        return self.n_tasks_ if self.task_heads else None

    def _head_kind(self):
        return self.head if self.task_heads else "full"

    def fit(self, X, y, groups=None):
        """Train on the rows of every task at once.

        groups : array-like of shape (n_samples,), optional
            The task of each row (integers or strings, taken exactly as written). None: one task.

        A fit that does not finish (refused arguments, FitDivergedError, Ctrl-C) leaves a
        fitted estimator as it was: e.g. a warm start onto heads the previous θ cannot start
        keeps predicting with it.

        Warns
        -----
        DataScaleWarning
            X (or the regressor's y, without ``normalize_y``) is far from unit scale; once per
            fit, naming the worst columns and the fix.
        UserWarning
            ``validation_fraction`` is set but the weighting holds no rows out.

        Raises
        ------
        FitDivergedError
            The loss, its gradient or the update turned non-finite; the message names the step,
            the rate to lower and, on badly scaled data, the scale as the likely cause.
        """
        with self._fit_or_keep():
            return self._fit(X, y, groups)

    def _fit(self, X, y, groups):
        hidden = self._check_common()
        _validation.boolean("task_heads", self.task_heads)
        _validation.choice("head", self.head, ("full", "bias"))
        if self.head == "bias" and not self.task_heads:
            raise ValueError("head='bias' (one output bias per task) needs task_heads=True")
        _validation.real("alpha", self.alpha, minimum=0.0)
        _validation.choice("solver", self.solver, ("adam", "sgd"))
        fraction = _validation.real("validation_fraction", self.validation_fraction, minimum=0.0,
                                    maximum=1.0, max_open=True)
        warm = (_validation.boolean("warm_start", self.warm_start) and hasattr(self, "theta_"))
        old = (self.layer_sizes_, getattr(self, "classes_", None), self.tasks_,
               self._model()) if warm else None
        X, y = self._validate_fit_data(X, y, warm)
        g = check_groups(groups, X.shape[0])
        self.tasks_, codes = np.unique(g, return_inverse=True)
        self.n_tasks_ = int(self.tasks_.shape[0])
        strategy = weighting_by_name(self.weighting, self._is_classifier)
        default = type(self).__init__.__kwdefaults__["validation_fraction"]
        if not isinstance(strategy, _weighting.EvalDriven) and fraction != default:
            warnings.warn(f"validation_fraction={self.validation_fraction!r} is ignored by "
                          f"weighting={self.weighting!r}: only EvalDriven holds rows out",
                          UserWarning, stacklevel=3)
        init_seed, seed = self._seeds()
        # EvalDriven adjusts α from held-out rows: a validation_fraction of each task's rows,
        # drawn at random, become its query rows (a task of one row keeps it for training).
        n_support = None
        if isinstance(strategy, _weighting.EvalDriven) and fraction > 0:
            order = np.random.default_rng(seed).permutation(X.shape[0])
            X, y, codes = X[order], y[order], codes[order]
            sizes = np.bincount(codes)
            held = np.clip(np.round(fraction * sizes), 1, np.maximum(sizes - 1, 1))
            n_support = np.where(sizes >= 2, sizes - held, sizes).astype(np.int64)
        ts = TaskSet.from_groups(X, y, codes, n_support=n_support)
        # Objective's l2 is alpha; eval_every is max_iter unless the strategy sets its own
        passed = {"l2": "alpha"}
        if not isinstance(strategy, _weighting.EvalDriven):
            passed["eval_every"] = "max_iter"
        with self._own_names(**passed):
            return self._fit_net(hidden, X, y, ts, strategy, n_support, warm, old, init_seed,
                                 seed)

    def _fit_net(self, hidden, X, y, ts, strategy, n_support, warm, old, init_seed, seed):
        model = self._new_model(hidden, self._n_outputs_for(y),
                                self.n_tasks_ if self.task_heads else None)
        new = (self.layer_sizes_, getattr(self, "classes_", None), self.tasks_)
        if warm and not (old[0] == new[0] and np.array_equal(old[1], new[1])
                         and np.array_equal(old[2], new[2])):
            raise ValueError("warm_start=True: X, the classes or the tasks differ from the "
                             "previous fit; refit with warm_start=False")
        start = model.init(seed=init_seed, dtype=X.dtype)
        if warm:
            # the previous fit's θ, moved into this fit's heads when task_heads/head changed
            # (bias-only heads → a full head per task starting at the shared one)
            try:
                start = model.theta_from(old[3], self.theta_)
            except ValueError as e:
                raise ValueError(f"warm_start=True: the previous fit's heads (task_heads="
                                 f"{old[3].task_heads is not None}, head={old[3].head!r}) "
                                 f"cannot start these (task_heads="
                                 f"{model.task_heads is not None}, head={model.head!r}); "
                                 f"refit with warm_start=False") from e
            start = start.astype(X.dtype, copy=False)
        rows = "all" if n_support is None or (ts.n_query == 0).all() else "support"
        obj = Objective(model, ts, l2=self.alpha, rows=rows, n_threads=self.n_threads)
        every = strategy.eval_every if isinstance(strategy, _weighting.EvalDriven) \
            else self.max_iter
        optimizer = (Adam(lr=self.learning_rate_init) if self.solver == "adam"
                     else SGD(lr=self.learning_rate_init))
        res = _engine_fit(obj, start, optimizer=optimizer,
                          steps=self.max_iter, weighting=strategy, batch_tasks=self.batch_tasks,
                          batch_rows=self.batch_rows, eval_every=every,
                          progress=bool(self.verbose), seed=seed, n_threads=self.n_threads)
        self.theta_ = res.theta
        curve = np.asarray(res.history.objective, dtype=np.float64)
        history = np.asarray(res.history.weights, dtype=np.float64)
        if warm:    # as scikit-learn's MLPs: a warm fit extends the curve and the count
            curve = np.concatenate([self.loss_curve_, curve])
            history = np.concatenate([self.weights_history_, history])
        self.loss_curve_ = curve
        self.task_weights_ = history[-1].copy()
        self.weights_history_ = history
        self.n_iter_ = int(self.max_iter) + (self.n_iter_ if warm else 0)
        return self

    def _outputs(self, X, groups):
        """Net outputs (n, k), each row through its task's head."""
        X = self._validate_X(X)
        if not self.task_heads:
            if groups is not None:
                check_groups(groups, X.shape[0])
            return self._raw(self.theta_, X)
        if groups is None:
            if self.n_tasks_ == 1:
                return self._raw(self.theta_, X)
            raise ValueError(f"groups is needed: this model has one output head per task "
                             f"({self.n_tasks_} tasks)")
        g = check_groups(groups, X.shape[0])
        numeric = "biuf"       # numbers match by value whatever their dtype (0 == 0.0)
        if (g.dtype.kind in numeric) != (self.tasks_.dtype.kind in numeric):
            shown = ", ".join(repr(v) for v in np.unique(g)[:5].tolist())
            raise ValueError(f"groups: task(s) {shown} were not seen in fit: its task labels "
                             f"have dtype {self.tasks_.dtype}, these {g.dtype} (numbers and "
                             f"strings never name the same task)")
        unseen = np.setdiff1d(np.unique(g), self.tasks_)
        if unseen.shape[0]:
            shown = ", ".join(repr(v) for v in unseen[:5].tolist())
            raise ValueError(f"groups: task(s) {shown} were not seen in fit; a model with "
                             f"per-task heads (task_heads=True) predicts only the tasks it was "
                             f"fitted on. Use task_heads=False (one shared head) to predict new "
                             f"tasks")
        task = np.searchsorted(self.tasks_, g)
        out = np.empty((X.shape[0], self.n_outputs_), dtype=self.theta_.dtype)
        for t in np.unique(task):
            rows = task == t
            out[rows] = self._raw(self.theta_, X[rows], task=int(t))
        return out

    def predict(self, X, groups=None):
        """Predictions for rows X of the tasks ``groups`` (needed with per-task heads)."""
        return self._to_prediction(self._outputs(X, groups))


class MultiTaskMLPRegressor(RegressorMixin, _MultiTask):
    r"""A multi-task MLP regressor: ``fit(X, y, groups=task)`` minimises
    Σ_i α_i f_i(θ) + (λ/2)‖θ‖², f_i the mean squared error of task i, with the metacore engine.

    Like scikit-learn's MLPs it expects features of about unit scale: ``fit`` warns
    (:class:`~metacore.sklearn.DataScaleWarning`, naming the worst columns) when a column of X is
    far from it (root mean square above 10, or values spanning less than 0.01; see
    :mod:`metacore.sklearn.scaling`) — use ``make_pipeline(StandardScaler(), ...)`` — and, with
    ``normalize_y=False``, when y is (root mean square above 10 or standard deviation below 0.1).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (64,)
        Widths of the hidden layers (shared by every task).
    activation : {"relu", "tanh"}
    task_heads : bool, default False
        One output layer per task after the shared trunk (hard parameter sharing). Prediction
        then needs ``groups`` and refuses tasks unseen in fit; False: one head for every task,
        which predicts any task.
    head : {"full", "bias"}, default "full"
        With ``task_heads=True``, what each task's head owns: a whole output layer ("full"), or
        only its output bias ("bias": one shared net and one learned level per task, the
        per-group intercepts of a random-intercept model on a non-linear predictor; the alpha
        penalty shrinks every level towards 0, as ridge does with one-hot group columns). See
        ``metacore.MLP``'s ``head``.
    weighting : None, str or metacore.weighting object
        How α is set: None/"uniform" (1/T), or a strategy by name ("dwa", "uncertainty", "rlw",
        "famo", "gradnorm", "mgda", "pcgrad", "cagrad", "imtlg", "nashmtl", "alignedmtl",
        "gradvac", "evaldriven") or object (``metacore.weighting.EvalDriven(...)``).
    alpha : float, default 0
        L2 penalty λ on all of θ (heads included).
    normalize_y : bool, default False
        Standardise the target for training (each output by the training targets' mean and
        standard deviation) and map predictions back, as ``TransformedTargetRegressor(...,
        transformer=StandardScaler())`` would. Off by default, as in scikit-learn's
        MLPRegressor and GaussianProcessRegressor: θ, ``alpha`` and ``loss_curve_`` then stay in
        y's units (with no hidden layer and ``head="bias"``, θ is the ridge solution on y
        itself). Turn it on for a target far from unit scale (prices, counts; ``fit`` warns):
        from an initialisation whose outputs are of order 1, the default learning rates reach
        a target offset by 10 or of spread 0.1 badly (measured R² below −0.4). With it on,
        ``alpha`` and ``loss_curve_`` are in the standardised units, and a warm start keeps the
        first fit's scaling.
    solver : {"adam", "sgd"}, default "adam"
        The optimizer (scikit-learn's MLP names them so): Adam (Kingma & Ba 2015), or plain
        full-step gradient descent, whose early stopping shrinks the parameters the data moves
        least — e.g. per-task slopes warm-started from a shared model (see ``warm_start``).
    learning_rate_init : float, default 0.01
        The optimizer's learning rate.
    max_iter : int, default 200
        Optimizer steps (each over every task's rows unless batch_tasks/batch_rows are set).
    batch_tasks, batch_rows : int or None
        Tasks per step and rows per drawn task (None: all).
    validation_fraction : float in [0, 1), default 0.2
        With EvalDriven weighting: the share of each task's rows held out to evaluate it,
        rounded, at least one row and at most all but one (a task of one row is not held out).
    warm_start : bool, default False
        Continue from the previous fit's θ (same features, outputs and tasks); ``n_iter_``,
        ``loss_curve_`` and ``weights_history_`` go on from the previous fit's, and the
        optimizer starts afresh (as scikit-learn's MLPs do outside ``partial_fit``). Heads may grow
        between fits (``metacore.MLP.theta_from``): one shared head → a head per task, or
        ``head="bias"`` → ``"full"``, each task's new head starting at what it computed, e.g.
        per-task intercepts first, then each task's slopes free to move from the shared ones.
    dtype : {"float32", "float64"}, default "float32"
        The working precision.
    random_state : int, RandomState or None
        Seeds the initial θ and every draw.
    n_threads : int or None
        None: the core's default; -1: all cores; k: k threads. Results do not depend on it.
    verbose : int, default 0
        Above 0: a progress bar.

    Attributes
    ----------
    theta_ : ndarray (P,)
        The trained parameters. ``layer_sizes_``, ``n_outputs_`` describe the net.
    tasks_ : ndarray
        The tasks seen in fit (sorted); ``n_tasks_`` their number.
    task_weights_ : ndarray (T,)
        α at the end; ``weights_history_`` (E, T) α at every evaluation.
    loss_curve_ : ndarray (n_iter_,)
        The objective at every step.
    n_features_in_, feature_names_in_
    """

    def __init__(self, hidden_layer_sizes=(64,), *, activation="relu", task_heads=False,
                 head="full", weighting=None, alpha=0.0, normalize_y=False, solver="adam",
                 learning_rate_init=0.01, max_iter=200, batch_tasks=None, batch_rows=None,
                 validation_fraction=0.2, warm_start=False, dtype="float32", random_state=None,
                 n_threads=None, verbose=0):
        super().__init__(hidden_layer_sizes, activation=activation, task_heads=task_heads,
                         head=head, weighting=weighting, alpha=alpha, solver=solver,
                         learning_rate_init=learning_rate_init, max_iter=max_iter,
                         batch_tasks=batch_tasks, batch_rows=batch_rows,
                         validation_fraction=validation_fraction, warm_start=warm_start,
                         dtype=dtype, random_state=random_state, n_threads=n_threads,
                         verbose=verbose)
        self.normalize_y = normalize_y

    def score(self, X, y, groups=None, sample_weight=None):
        """R² of ``predict(X, groups)`` (averaged uniformly over outputs)."""
        return r2_score(y, self.predict(X, groups), sample_weight=sample_weight)


class MultiTaskMLPClassifier(ClassifierMixin, _MultiTask):
    r"""A multi-task MLP classifier (softmax cross-entropy): ``fit(X, y, groups=task)``
    minimises Σ_i α_i f_i(θ) + (λ/2)‖θ‖² over the tasks; ``weighting="evaldriven"`` sets α from
    each task's held-out accuracy. Parameters and attributes as :class:`MultiTaskMLPRegressor`,
    plus ``classes_``; ``predict_proba(X, groups=None)`` gives class probabilities."""

    _loss = "cross_entropy"

    def predict_proba(self, X, groups=None):
        """Class probabilities (n, n_classes) in the order of ``classes_``."""
        return self._to_proba(self._outputs(X, groups))

    def score(self, X, y, groups=None, sample_weight=None):
        """Accuracy of ``predict(X, groups)``."""
        return accuracy_score(y, self.predict(X, groups), sample_weight=sample_weight)

