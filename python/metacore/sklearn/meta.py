r"""Meta-learning estimators: ``fit(X, y, groups=task)`` learns an initial θ from episodes drawn
from the tasks, ``adapt(X_support, y_support)`` turns it into a model of a new task in a few
gradient steps."""

from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from .. import _validation
from ..learners import ANIL, FOMAML, IMAML, MAML, MetaSGD, ProtoNet, Reptile, RidgeHead
from ..optim import Adam
from ..problems import MetaObjective
from ..train.fit import fit as _engine_fit
from .base import DTYPES, MLPBase, check_groups
from .episodes import EpisodeSampler, stratified_order, support_size

__all__ = ["MetaMLPRegressor", "MetaMLPClassifier"]

LEARNERS = {"maml": MAML, "fomaml": FOMAML, "anil": ANIL, "metasgd": MetaSGD, "reptile": Reptile,
            "mamlpp": MAML, "imaml": IMAML, "protonet": ProtoNet, "ridgehead": RidgeHead}
# bytes an episode of a pool costs besides its rows: its row indices, labels and support count
# (NumPy array headers and list slots), a lower bound
EPISODE_OVERHEAD_BYTES = 256
# learners that classify a new task from its support embeddings, with no gradient steps
EPISODE_HEADS = ("protonet", "ridgehead")
# the hyper-parameters only some learners use: name -> those learners
USED_BY = {"reg": ("imaml", "ridgehead"), "outer_lr": ("reptile",),
           "inner_lr": tuple(k for k in LEARNERS if k not in EPISODE_HEADS),
           "inner_steps": tuple(k for k in LEARNERS if k not in EPISODE_HEADS)}


class _Meta(MLPBase):
    n_way = None
    k_shot = None
    q_query = None

    # --- pieces ------------------------------------------------------------------------------
    def _learner(self):
        """The learner of the current hyper-parameters (inner_lr, inner_steps, ... as set now)
        over the fitted net; ValueError when ``learner`` no longer names the kind θ was
        meta-trained for (its θ may carry learned rates or λ that another kind lacks)."""
        fitted = self.__dict__.get("_fitted_learner", self.learner)
        if self.learner != fitted:
            raise ValueError(f"learner={self.learner!r}, but this model was meta-trained with "
                             f"learner={fitted!r}: fit again after changing learner")
        steps = self.__dict__.get("_fitted_inner_steps", self.inner_steps)
        if self.learner == "mamlpp" and self.inner_steps != steps:   # rates per step in θ
            raise ValueError(f"inner_steps={self.inner_steps!r}, but this MAML++ model learned "
                             f"its rates for {steps} inner step(s): fit again after changing "
                             f"inner_steps")
        key = (self.learner, self.inner_lr, self.inner_steps, self.outer_lr, self.reg,
               self.n_threads, self.max_iter, self._model_key())
        return self._cached("learner", key, self._new_learner)

    def _new_learner(self):
        cls = LEARNERS[self.learner]
        if cls is ProtoNet:
            return ProtoNet(self._model(), n_threads=self.n_threads)
        if cls is RidgeHead:
            return RidgeHead(self._model(), reg=self.reg, n_threads=self.n_threads)
        kw = {"inner_lr": self.inner_lr, "inner_steps": self.inner_steps,
              "n_threads": self.n_threads}
        if cls is Reptile:
            kw["outer_lr"] = self.outer_lr
        if cls is IMAML:
            kw["reg"] = self.reg
        if self.learner == "mamlpp":   # the paper's schedules scaled to max_iter meta-steps
            kw.update(per_step_rates="layer", multi_step_loss=True,
                      msl_anneal_steps=max(1, self.max_iter // 10),
                      first_order_until=self.max_iter // 3)
        return cls(self._model(), **kw)

    def _check_meta(self):
        _validation.choice("learner", self.learner, tuple(LEARNERS))
        _validation.real("inner_lr", self.inner_lr, minimum=0.0)
        _validation.integer("inner_steps", self.inner_steps, minimum=1)
        _validation.real("outer_lr", self.outer_lr, minimum=0.0, min_open=True)
        _validation.real("reg", self.reg, minimum=0.0, min_open=True)
        _validation.integer("meta_batch", self.meta_batch, minimum=1)
        _validation.integer("resample_every", self.resample_every, minimum=1)
        support_size(self.support, 2)
        _validation.optional_integer("query", self.query, minimum=1)
        if (self.n_way is None) != (self.k_shot is None):
            raise ValueError(f"n_way and k_shot go together: give both or neither, got "
                             f"n_way={self.n_way!r}, k_shot={self.k_shot!r}")
        if self.n_way is not None:
            _validation.integer("n_way", self.n_way, minimum=2)
            _validation.integer("k_shot", self.k_shot, minimum=1)
        _validation.optional_integer("q_query", self.q_query, minimum=1)
        if self.learner in EPISODE_HEADS:
            what = {"protonet": "the nearest class mean", "ridgehead": "a ridge head fitted on "
                    "the support embeddings"}[self.learner]
            if not self._is_classifier or self.n_way is None:
                raise ValueError(f"learner={self.learner!r} classifies N-way K-shot episodes by "
                                 f"{what}: use MetaMLPClassifier with n_way and k_shot")
            if not self._check_common():
                raise ValueError(f"learner={self.learner!r} embeds rows with the net's last "
                                 f"layer: hidden_layer_sizes must name at least one layer (its "
                                 f"last width is the embedding's)")
        self._warn_unused()

    def _warn_unused(self):
        """UserWarning naming each hyper-parameter set away from its default that this learner
        does not use (``reg`` with learner='maml', ...): set, it would otherwise be ignored
        without a word. A warning, not an error, as scikit-learn does for ``l1_ratio`` without
        ``penalty='elasticnet'``: a grid over learner × reg still runs."""
        defaults = inspect.signature(type(self).__init__).parameters
        for name, users in USED_BY.items():
            value = getattr(self, name)
            if self.learner not in users and value != defaults[name].default:
                warnings.warn(f"{name}={value!r} is ignored by learner={self.learner!r}: only "
                              f"{', '.join(map(repr, users))} use {name}", UserWarning,
                              stacklevel=5)
        if self.n_way is not None and self.query is not None:
            warnings.warn(f"query={self.query!r} is ignored with n_way/k_shot episodes: q_query "
                          f"sets their query rows (per class)", UserWarning, stacklevel=5)
        if self.n_way is None and self.q_query is not None:
            warnings.warn(f"q_query={self.q_query!r} is ignored without n_way and k_shot: query "
                          f"sets the query rows of an episode", UserWarning, stacklevel=5)

    def fit(self, X, y, groups=None):
        """Meta-train on episodes drawn from the tasks ``groups`` (see
        :mod:`metacore.sklearn.episodes`): a fresh pool of ``meta_batch × resample_every``
        episodes every ``resample_every`` steps, ``meta_batch`` of them per step. A fit that
        does not finish (refused arguments, FitDivergedError, Ctrl-C) leaves a fitted
        estimator as it was; a finished one replaces everything, also an adapted estimator's
        support rows.

        Warns
        -----
        DataScaleWarning
            X (or the regressor's y, without ``normalize_y``) is far from unit scale; once per
            fit, naming the worst columns and the fix.
        UserWarning
            A hyper-parameter the learner does not use is set away from its default.

        Raises
        ------
        FitDivergedError
            The meta-loss, its gradient or the update turned non-finite; the message names the
            step, the rates to lower and, on badly scaled data, the scale as the likely cause.
        """
        with self._fit_or_keep():
            return self._fit(X, y, groups)

    def _fit(self, X, y, groups):
        hidden = self._check_common()
        self._check_meta()
        for name in ("adapted_", "support_"):   # what adapt() set belongs to the old θ
            self.__dict__.pop(name, None)
        self._fitted_learner = self.learner
        self._fitted_inner_steps = self.inner_steps
        X, y = self._validate_fit_data(X, y)
        g = check_groups(groups, X.shape[0])
        self.tasks_, codes = np.unique(g, return_inverse=True)
        self.n_tasks_ = int(self.tasks_.shape[0])
        # Reptile's outer step is its optimizer's lr; MAML++'s schedules come from max_iter
        passed = {"lr": "outer_lr"} if self.learner == "reptile" else {}
        if self.learner == "mamlpp":
            passed.update(msl_anneal_steps="max_iter", first_order_until="max_iter")
        with self._own_names(**passed):
            return self._fit_meta(hidden, X, y, codes)

    def _fit_meta(self, hidden, X, y, codes):
        n_out = self.n_way if self.n_way is not None else self._n_outputs_for(y)
        if self.learner in EPISODE_HEADS:   # the last width is the embedding (a linear layer)
            hidden, n_out = hidden[:-1], hidden[-1]
        model = self._new_model(hidden, n_out)
        learner = self._learner()
        sampler = EpisodeSampler(X, y, codes, support=self.support, query=self.query,
                                 stratify=self._is_classifier, n_way=self.n_way,
                                 k_shot=self.k_shot, q_query=self.q_query)
        self._warn_left_out(sampler.tasks, self.tasks_, "meta-training", stacklevel=5)
        init_seed, seed = self._seeds()
        start = model.init(seed=init_seed, dtype=X.dtype)
        if isinstance(learner, (MAML, MetaSGD, RidgeHead)):   # θ packed with learned rates or λ
            start = learner.init(start)
        optimizer = (learner.default_optimizer(self.max_iter) if isinstance(learner, Reptile)
                     else Adam(lr=self.learning_rate_init))
        # a pool holds meta_batch × resample_every episodes of at least 2 rows each, and each
        # episode costs a few small arrays: refused before NumPy is asked for it (whose
        # MemoryError would name no argument)
        n_pool = self.meta_batch * min(self.resample_every, self.max_iter)
        _validation.fits_in_memory(
            f"meta_batch={self.meta_batch} × resample_every={self.resample_every} episodes per "
            f"pool", n_pool * (EPISODE_OVERHEAD_BYTES + 2 * (X.shape[1] + 1) * X.dtype.itemsize))
        bar = _progress(self.max_iter) if self.verbose else None
        curves, done, pool = [], 0, 0
        try:
            while done < self.max_iter:
                n = min(self.resample_every, self.max_iter - done)
                tasks = sampler.draw(self.meta_batch * n, seed, pool)
                problem = MetaObjective(learner, tasks, meta_batch=self.meta_batch,
                                        n_threads=self.n_threads)
                start = _engine_fit(problem, start, optimizer=optimizer if pool == 0 else None,
                                    steps=n, eval_every=n, progress=False, seed=seed,
                                    n_threads=self.n_threads)
                curves.append(np.asarray(start.history.objective, dtype=np.float64))
                done, pool = done + n, pool + 1
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(loss=f"{curves[-1][-1]:.4g}")
        finally:
            if bar is not None:
                bar.close()
        self.params_ = start.theta
        self.theta_ = self.params_[:model.n_params]
        self.loss_curve_ = np.concatenate(curves)
        self.n_iter_ = int(self.max_iter)
        return self

    # --- a new task ---------------------------------------------------------------------------
    def _support_targets(self, y_support, n_rows):
        """(targets for the net, the classes they stand for or None)."""
        dt = DTYPES[self.dtype]
        _validation.not_masked("y_support", y_support)
        if not self._is_classifier:
            y = check_array(y_support, ensure_2d=False, dtype=dt, input_name="y_support")
            want = (n_rows,) if self._single_output else (n_rows, self.n_outputs_)
            if y.shape != want and not (self._single_output and y.shape == (n_rows, 1)):
                raise ValueError(f"y_support must have shape {want}, got {y.shape}")
            return self._net_targets(y.reshape(want)), None
        y = column_or_1d(y_support, warn=True)
        if y.shape[0] != n_rows:
            raise ValueError(f"y_support must have one label per row of X_support ({n_rows}), "
                             f"got {y.shape[0]}")
        check_classification_targets(y)
        if self.n_way is not None:
            classes = np.unique(y)
            if classes.shape[0] > self.n_way and self.learner not in EPISODE_HEADS:
                raise ValueError(f"y_support has {classes.shape[0]} classes; this model was "
                                 f"meta-trained on {self.n_way}-way episodes")
        else:
            classes = self.classes_
            unseen = np.setdiff1d(np.unique(y), classes)
            if unseen.shape[0]:
                raise ValueError(f"y_support: classes {unseen[:5].tolist()} were not seen in "
                                 f"fit; meta-train with n_way/k_shot to adapt to new classes")
        return np.searchsorted(classes, y).astype(dt), classes

    def adapt(self, X_support, y_support, *, steps=None):
        """A fitted estimator for a new task: θ adapted by the learner's inner loop (``steps``
        steps, default ``inner_steps``) on the task's labelled rows. Its ``predict``,
        ``predict_proba`` and ``score`` work as usual; this estimator is left unchanged."""
        check_is_fitted(self, "params_")
        Xs = self._validate_X(X_support, "X_support")
        ys, classes = self._support_targets(y_support, Xs.shape[0])
        new = copy.copy(self)
        new.__dict__["_cache"] = dict(self.__dict__.get("_cache", {}))   # its own, not ours
        if self.learner in EPISODE_HEADS:  # θ stays; the support rows give the head
            self._learner().adapt(self.params_, Xs, ys, steps=steps)   # checks the episode
            # private copies: validate_data may return the caller's own array, whose later
            # writes would change this estimator's predictions
            new.support_ = (_validation.owned(Xs, X_support), _validation.owned(ys, y_support))
        else:
            new.theta_ = self._learner().adapt(self.params_, Xs, ys, steps=steps)
            self._check_adapted(new.theta_, "adapted θ", steps)
        new.adapted_ = True
        if classes is not None:
            new.classes_ = classes
        return new

    def adapt_predict(self, X_support, y_support, X_query, *, steps=None):
        """Predictions for ``X_query`` after adapting to (X_support, y_support): one call into
        the core (the latency path)."""
        check_is_fitted(self, "params_")
        return self._adapt_predict(self._validate_X(X_support, "X_support"), y_support,
                                   self._validate_X(X_query, "X_query"), steps)

    def _adapt_predict(self, Xs, y_support, Xq, steps=None):
        """adapt_predict on rows already validated: few_shot_score checks X (its columns, by
        name for a DataFrame) once, then adapts on NumPy slices of it."""
        ys, classes = self._support_targets(y_support, Xs.shape[0])
        raw = self._learner().adapt_predict(self.params_, Xs, ys, Xq, steps=steps)
        self._check_adapted(raw, "outputs on X_query", steps)
        return self._to_prediction(np.asarray(raw).reshape(Xq.shape[0], -1), classes)

    def _warn_left_out(self, kept, names, doing, stacklevel=4):
        """A UserWarning naming the tasks (of ``names``, by index) not in ``kept``: too small for
        an episode, so left out of ``doing`` — silently, before, though every row counts."""
        kept = set(int(i) for i in kept)
        left = [str(n) for i, n in enumerate(names) if i not in kept]
        if not left:
            return
        why = (f"fewer than n_way={self.n_way} classes with k_shot + 1 = {self.k_shot + 1} rows "
               f"each" if self.n_way is not None else
               f"too few rows to split into support and query rows (support={self.support!r})")
        shown = ", ".join(map(repr, left[:5])) + (", ..." if len(left) > 5 else "")
        warnings.warn(f"{len(left)} of {len(names)} tasks have {why} and are left out of "
                      f"{doing}: {shown}", UserWarning, stacklevel=stacklevel)

    def _check_adapted(self, values, what, steps):
        """FloatingPointError naming the inner loop's settings when adaptation diverged: NaN
        predictions would otherwise pass for answers (adapt_predict), or fail later naming an
        internal θ (adapt, then predict)."""
        values = np.asarray(values)
        if np.isfinite(values).all():
            return
        n = self.inner_steps if steps is None else steps
        raise FloatingPointError(f"the adaptation to this task diverged: its {what} are not "
                                 f"finite after {n} inner step(s) at inner_lr={self.inner_lr!r} "
                                 f"(try fewer steps, a smaller inner_lr, or support rows on the "
                                 f"training data's scale)")

    def _check_ready(self):
        if self.n_way is not None and not getattr(self, "adapted_", False):
            raise ValueError("this model was meta-trained on N-way episodes whose labels are "
                             "drawn afresh for every task: adapt(X_support, y_support) to a "
                             "task first, then predict with the estimator it returns")

    def _current(self, X):
        """Outputs of the current model for rows X: the net of θ, or (ProtoNet, RidgeHead) the
        logits of the head built on the adapted support rows."""
        if self.learner in EPISODE_HEADS and hasattr(self, "support_"):
            raw = self._learner().adapt_predict(self.params_, *self.support_, X)
            return np.asarray(raw).reshape(X.shape[0], -1)
        return self._raw(self.theta_, X)

    def predict(self, X):
        """Predictions of the current θ: the adapted one after :meth:`adapt`, else the
        meta-learned initialisation (no adaptation)."""
        X = self._validate_X(X)
        self._check_ready()
        return self._to_prediction(self._current(X))

    def few_shot_score(self, X, y, groups=None, sample_weight=None):
        """R² (regressors) or accuracy (classifiers) of ``predict(X)``; with ``groups``, the
        few-shot score: each task's rows are split into support (``support``) and query rows
        (stratified for classifiers), θ is adapted on the support rows and scored on the query
        rows, all query rows pooled (sample_weight then unused). A classifier meta-trained on
        N-way K-shot episodes (``n_way``, ``k_shot``) is scored as it was trained: one episode
        per task that has ``n_way`` classes of ``k_shot + 1`` rows or more (``n_way`` of them
        drawn, ``k_shot`` support rows and up to ``q_query`` query rows per class, all the
        others when None); ValueError when no task has them."""
        metric = accuracy_score if self._is_classifier else r2_score
        if groups is None:
            return metric(y, self.predict(X), sample_weight=sample_weight)
        X = self._validate_X(X)
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have one entry per row of X ({X.shape[0]}), got shape "
                             f"{y.shape}")
        g = check_groups(groups, X.shape[0])
        rng = np.random.default_rng(self._seeds()[1])
        truth, pred = [], []
        if self._is_classifier and self.n_way is not None:
            codes = np.unique(y, return_inverse=True)[1].reshape(-1).astype(np.float64)
            names, tasks = np.unique(g, return_inverse=True)
            sampler = EpisodeSampler(X, codes, tasks.reshape(-1), n_way=self.n_way,
                                     k_shot=self.k_shot, q_query=self.q_query)
            self._warn_left_out(sampler.tasks, names, "the score")
            for task in sampler.tasks:
                rows, s, _ = sampler.episode(rng, task)
                pred.append(self._adapt_predict(X[rows[:s]], y[rows[:s]], X[rows[s:]]))
                truth.append(y[rows[s:]])
            return metric(np.concatenate(truth), np.concatenate(pred))
        names, codes, counts = np.unique(g, return_inverse=True, return_counts=True)
        # each task's rows in file order, found once (a stable sort by task)
        by_task = np.split(np.argsort(codes.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
        kept = np.flatnonzero(counts >= 2)
        if kept.size:
            self._warn_left_out(kept, names, "the score")
        for rows in (by_task[i] for i in kept):
            order = (stratified_order(rng, y[rows]) if self._is_classifier
                     else rng.permutation(rows.shape[0]))
            s = min(support_size(self.support, rows.shape[0]), rows.shape[0] - 1)
            sup, qry = rows[order[:s]], rows[order[s:]]
            pred.append(self._adapt_predict(X[sup], y[sup], X[qry]))
            truth.append(y[qry])
        if not truth:
            raise ValueError("score with groups needs a task with at least 2 rows")
        return metric(np.concatenate(truth), np.concatenate(pred))


def _progress(total):
    try:
        from tqdm.auto import tqdm
    except ImportError:   # no bar without tqdm (a dependency, but maybe not installed here)
        return None
    return tqdm(total=total, unit="step", desc="meta-training")


_DOC_PARAMS = r"""
    The features should be of about unit scale, as for scikit-learn's MLPs:
    ``make_pipeline(StandardScaler(), ...)``. ``fit`` warns
    (:class:`~metacore.sklearn.DataScaleWarning`, naming the worst columns) when a column of X
    has a root mean square above 10 or spans less than 0.01 (see
    :mod:`metacore.sklearn.scaling`), and, for the regressor without ``normalize_y``, when y has a
    root mean square above 10 or a standard deviation below 0.1; a meta-training that then
    diverges raises ``FitDivergedError`` naming that as the likely cause.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (64,)
    activation : {"relu", "tanh"}
    learner : str, default "maml"
        The meta-learner (:mod:`metacore.learners`): "maml", "fomaml", "anil", "metasgd",
        "reptile", "mamlpp", "imaml", "protonet" or "ridgehead". "mamlpp": MAML++ (Antoniou et al. 2019) —
        learned per-layer, per-step inner rates, the multi-step loss annealed over the first
        ``max_iter // 10`` meta-steps and first-order meta-gradients for the first third.
        "imaml": implicit MAML (Rajeswaran et al. 2019) with proximal weight ``reg``.
        "protonet" (prototypical networks, Snell et al. 2017) and "ridgehead" (R2D2's
        closed-form ridge head, Bertinetto et al. 2019, initial λ = ``reg``; classifiers with
        ``n_way``/``k_shot`` only): the net's last layer, of width ``hidden_layer_sizes[-1]``
        and linear, is the embedding; a new task's classes are the nearest means of its support
        rows' embeddings, or a ridge regression from them to the one-hot labels (no gradient
        steps: inner_lr, inner_steps and ``steps`` are unused).
    inner_lr, inner_steps : float, int
        The inner loop: ``inner_steps`` SGD steps of rate ``inner_lr`` on the support rows.
    outer_lr : float, default 0.1
        Reptile's outer step ε (annealed linearly to 0); other learners use Adam.
    reg : float > 0, default 1.0
        iMAML's proximal regulariser λ; RidgeHead's initial ridge λ (then learned).

    A hyper-parameter the chosen learner does not use (``reg`` but for "imaml" and
    "ridgehead", ``outer_lr`` but for "reptile", ``inner_lr`` and ``inner_steps`` for
    "protonet" and "ridgehead"; ``query`` with ``n_way``, ``q_query`` without) is still
    validated, and ``fit`` warns (UserWarning, naming it) when it is set away from its default.
    meta_batch : int, default 8
        Episodes per meta-step.
    support : float in (0, 1) or int, default 0.5
        Support rows of an episode: a fraction of its task's rows or a count (also used by
        ``score(..., groups=...)``).
    query : int or None
        Query rows per episode (None: all the task's other rows).
    normalize_y : bool, default False (MetaMLPRegressor only)
        Standardise the target (each output by the training targets' mean and standard
        deviation) for meta-training and for ``adapt``'s support targets, and map predictions
        back. scikit-learn's ``TransformedTargetRegressor`` cannot reach ``adapt``, so the
        estimator does it. Off by default, as in scikit-learn's MLPRegressor: θ and
        ``loss_curve_`` stay in y's units. Turn it on for a target far from unit scale
        (``fit`` warns): the inner loop's steps grow with the target, and at the default rates
        a target offset by 10, or of spread 0.1, takes MAML, Reptile and Meta-SGD below
        R² = −1 (``benchmarks/sklearn_scale.py``).
    learning_rate_init : float, default 1e-3
        Adam's outer learning rate.
    max_iter : int, default 500
        Meta-steps.
    resample_every : int, default 50
        Steps between fresh pools of episodes.
    dtype, random_state, n_threads, verbose
        As :class:`MultiTaskMLPRegressor`.

    Attributes
    ----------
    params_ : ndarray
        The meta-learned parameters (Meta-SGD: θ and its per-parameter rates; MAML++: θ and its
        per-step, per-layer rates; RidgeHead: θ, log λ and the logit scale).
    theta_ : ndarray (P,)
        The net's θ predictions use (after :meth:`adapt`, the adapted θ).
    tasks_, n_tasks_, loss_curve_ (the meta-loss per step), layer_sizes_, n_outputs_,
    n_features_in_, feature_names_in_
"""


class MetaMLPRegressor(RegressorMixin, _Meta):
    def score(self, X, y, groups=None, sample_weight=None):
        return self.few_shot_score(X, y, groups, sample_weight)

    score.__doc__ = _Meta.few_shot_score.__doc__

    def __init__(self, hidden_layer_sizes=(64,), *, activation="relu", learner="maml",
                 inner_lr=0.01, inner_steps=1, outer_lr=0.1, reg=1.0, meta_batch=8, support=0.5,
                 query=None, normalize_y=False, learning_rate_init=1e-3, max_iter=500,
                 resample_every=50, dtype="float32", random_state=None, n_threads=None,
                 verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learner = learner
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.outer_lr = outer_lr
        self.reg = reg
        self.meta_batch = meta_batch
        self.support = support
        self.query = query
        self.normalize_y = normalize_y
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.resample_every = resample_every
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose


class MetaMLPClassifier(ClassifierMixin, _Meta):
    _loss = "cross_entropy"

    def score(self, X, y, groups=None, sample_weight=None):
        return self.few_shot_score(X, y, groups, sample_weight)

    score.__doc__ = _Meta.few_shot_score.__doc__

    def __init__(self, hidden_layer_sizes=(64,), *, activation="relu", learner="maml",
                 inner_lr=0.1, inner_steps=1, outer_lr=0.1, reg=1.0, meta_batch=8, support=0.5,
                 query=None, n_way=None, k_shot=None, q_query=None, learning_rate_init=1e-3,
                 max_iter=500, resample_every=50, dtype="float32", random_state=None,
                 n_threads=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learner = learner
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.outer_lr = outer_lr
        self.reg = reg
        self.meta_batch = meta_batch
        self.support = support
        self.query = query
        self.n_way = n_way
        self.k_shot = k_shot
        self.q_query = q_query
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.resample_every = resample_every
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def predict_proba(self, X):
        """Class probabilities (n, n_classes) of the current θ, in the order of ``classes_``."""
        X = self._validate_X(X)
        self._check_ready()
        return self._to_proba(self._current(X))


MetaMLPRegressor.__doc__ = (
    "A meta-learned MLP regressor (mean squared error): ``fit(X, y, groups=task)`` meta-trains "
    "an initial θ on episodes of the tasks; ``adapt(X_support, y_support)`` returns a fitted "
    "estimator for a new task.\n" + _DOC_PARAMS)
MetaMLPClassifier.__doc__ = (
    "A meta-learned MLP classifier (softmax cross-entropy). Episodes are stratified by class; "
    "with ``n_way`` and ``k_shot`` they are N-way K-shot episodes (``q_query`` query rows per "
    "class, default all the others), whose labels are drawn afresh per task, so the model can "
    "adapt to classes never seen in fit (``adapt`` first, then predict).\n" + _DOC_PARAMS)
