"""What the metacore estimators share: hyper-parameter checks, the net they train, input
validation with scikit-learn's own utilities, label encoding and the mapping from net outputs to
predictions. For the library's own use (the estimators are in :mod:`metacore.sklearn`)."""

from __future__ import annotations

import contextlib
import numbers
import re
import warnings

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .. import _validation
from ..data.tabular import Standardizer
from ..models import MLP
from ..train.result import FitDivergedError
from .scaling import DataScaleWarning, check_scale

__all__ = ["MLPBase", "check_groups"]

DTYPES = {"float32": np.float32, "float64": np.float64}


def check_groups(groups, n_rows, name="groups"):
    """``groups`` as a 1-D array with one entry per row (integers or strings, kept exactly as
    given: the task ids "01" and "1" are two tasks; finite floats are matched by value, as are
    numbers of any type: 1, 1.0 and True are one task); None gives one task for every row."""
    if groups is None:
        return np.zeros(n_rows, dtype=np.int64)
    _validation.not_masked(name, groups)
    if isinstance(groups, (list, tuple)):
        # np.asarray would turn [1, "a"] into the strings "1" and "a" before the check below
        kinds = {type(v) for v in groups}
        if len(kinds) > 1 and not all(issubclass(k, numbers.Integral) for k in kinds):
            raise TypeError(f"{name} must hold integers or strings of one type, got "
                            f"{sorted(k.__name__ for k in kinds)}")
    arr = np.asarray(groups)
    if arr.ndim != 1 and not (arr.ndim == 2 and arr.shape[1] == 1):
        raise ValueError(f"{name} must be 1-D (one task per row), got shape {arr.shape}")
    if arr.dtype.kind not in "biufUO":   # complex, bytes, dates: not task ids (named here)
        raise TypeError(f"{name} must hold integers or strings, got dtype {arr.dtype}")
    g = column_or_1d(arr, warn=False)
    if g.shape[0] != n_rows:
        raise ValueError(f"{name} must have one entry per row of X ({n_rows}), got {g.shape[0]}")
    if g.dtype == object:
        kinds = {type(v) for v in g}
        if not all(issubclass(k, (str, numbers.Integral)) for k in kinds) or len(kinds) > 1:
            raise TypeError(f"{name} must hold integers or strings of one type, got "
                            f"{sorted(k.__name__ for k in kinds)}")
        g = g.astype(str) if issubclass(next(iter(kinds)), str) else g.astype(np.int64)
    if g.dtype.kind == "f":
        if not np.isfinite(g).all():
            raise ValueError(f"{name} must be finite, found {g[~np.isfinite(g)][0]}")
    elif g.dtype.kind not in "biuU":
        raise TypeError(f"{name} must hold integers or strings, got dtype {g.dtype}")
    return g


class MLPBase(BaseEstimator):
    """A dense net over a flat θ trained by the metacore engine (shared by every estimator).

    Subclasses set ``_loss`` ("mse" or "cross_entropy") and implement ``fit``. Learned state
    common to all: ``theta_`` (the net's parameters), ``layer_sizes_``, ``n_features_in_``,
    ``feature_names_in_`` (when fitted on a DataFrame), ``n_outputs_``; classifiers also
    ``classes_``.
    """

    _loss = "mse"

    # --- hyper-parameters, checked when fit is called ---------------------------------------
    def _check_common(self):
        hidden = self.hidden_layer_sizes
        if _validation.is_integer(hidden):
            hidden = (hidden,)
        try:
            hidden = () if hidden is None else tuple(hidden)
        except TypeError:        # 3.0, True: tuple() said only "'float' object is not iterable"
            hidden = (hidden,)
        for i, h in enumerate(hidden):
            if not _validation.is_integer(h):
                raise TypeError(f"hidden_layer_sizes must be positive integers, got "
                                f"{self.hidden_layer_sizes!r}")
            if h < 1:
                raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                                 f"{self.hidden_layer_sizes!r}")
            if h > np.iinfo(np.int64).max:    # named by its own index (the net's is one more)
                raise ValueError(f"hidden_layer_sizes[{i}] must be <= "
                                 f"{np.iinfo(np.int64).max}, got {h}")
        _validation.choice("activation", self.activation, ("relu", "tanh"))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        _validation.real("learning_rate_init", self.learning_rate_init, minimum=0.0,
                         min_open=True)
        _validation.integer("max_iter", self.max_iter, minimum=1)
        if self.n_threads is not None:
            _validation.n_threads(self.n_threads)
        if not isinstance(self.verbose, (bool, np.bool_)):   # True/False as well as 0, 1, 2
            _validation.integer("verbose", self.verbose, minimum=0)
        return [int(h) for h in hidden]

    # metacore's names for what fit passes down, and the estimator parameters they come from
    # (the subclasses add theirs); 'steps' is an ordinary word, renamed only as 'steps=...'
    _PASSED_AS = {"lr": "learning_rate_init", "layer_sizes": "hidden_layer_sizes",
                  "steps": "max_iter"}

    @contextlib.contextmanager
    def _own_names(self, **extra):
        """Every ValueError/TypeError/MemoryError/OverflowError raised inside (and a
        FitDivergedError's advice) names this estimator's parameters, not the arguments
        metacore's optimizer, objective, net and learner took them as (``learning_rate_init=1e-320``
        is Adam's ``lr``): the same exception, its message renamed (``_PASSED_AS`` updated with
        ``extra``)."""
        names = {**self._PASSED_AS, **extra}
        try:
            yield
        except (ValueError, TypeError, MemoryError, OverflowError, FloatingPointError) as exc:
            _validation.rename_in(exc, names, strict=("steps",))
            raise

    def _seeds(self):
        """(init seed, training seed) from random_state."""
        rs = check_random_state(self.random_state)
        return int(rs.randint(2**31 - 1)), int(rs.randint(2**31 - 1))

    @property
    def _is_classifier(self):
        return self._loss != "mse"

    # --- data -------------------------------------------------------------------------------
    def _validate_fit_data(self, X, y, warm=False):
        """(X of the working dtype, targets for the net: class codes or float values, the
        latter standardised with ``normalize_y``; ``warm``: a warm start, which keeps the
        previous fit's target scaling). Warns (:class:`DataScaleWarning`) when X, or a
        regressor's target, is far from unit scale."""
        dt = DTYPES[self.dtype]
        _validation.not_masked("X", X)
        _validation.not_masked("y", y)
        if self._is_classifier:
            X, y = validate_data(self, X, y, dtype=dt)
            check_classification_targets(y)
            encoder = LabelEncoder().fit(y)
            self.classes_ = encoder.classes_
            if self.classes_.shape[0] < 2:
                raise ValueError(f"y has only one class ({self.classes_[0]!r}); a classifier "
                                 f"needs at least 2 classes")
            self._check_scale(X, None)
            return X, encoder.transform(y).astype(dt)
        X, y = validate_data(self, X, y, dtype=dt, multi_output=True, y_numeric=True)
        # a value beyond float32's range is named, not cast to inf (sklearn checked float64)
        y = _validation.float_array("y", y, dtype=dt)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        self._single_output = y.ndim == 1
        normalize = self._fit_target_scaling(y, warm)
        self._check_scale(X, None if normalize else y)
        return X, self._net_targets(y)

    def _check_scale(self, X, y):
        """The one DataScaleWarning of this fit, when X (or y) is far from unit scale; its
        diagnosis is kept for the FitDivergedError that may follow (see _fit_or_keep)."""
        report = check_scale(X, y, getattr(self, "feature_names_in_", None))
        self.__dict__["_scale_cause"] = report.cause(type(self).__name__) if report else None
        if report:
            warnings.warn(report.warning(type(self).__name__), DataScaleWarning, stacklevel=5)

    # --- a regressor's target ---------------------------------------------------------------
    def _fit_target_scaling(self, y, warm):
        """Sets the (mean, scale) per output that the net's targets are standardised with
        (``normalize_y=True``; None otherwise) and returns whether there is one. A warm start
        keeps the previous fit's: θ is in its units."""
        normalize = _validation.boolean("normalize_y", self.normalize_y)
        previous = self.__dict__.get("_target_scaling") if warm else None
        if warm and normalize != (previous is not None):
            raise ValueError(f"warm_start=True: normalize_y={normalize}, but the previous fit "
                             f"{'did not standardise' if normalize else 'standardised'} y, and "
                             f"θ is in its units; refit with warm_start=False")
        if normalize and previous is None:
            s = Standardizer().fit(y.reshape(y.shape[0], -1))
            previous = (s.mean_, s.scale_)
        self._target_scaling = previous
        return normalize

    def _net_targets(self, y):
        """Targets in the net's units: y itself, or standardised with normalize_y."""
        scaling = self.__dict__.get("_target_scaling")
        if scaling is None:
            return y
        z = (y.reshape(y.shape[0], -1) - scaling[0]) / scaling[1]
        return z.reshape(y.shape).astype(y.dtype)

    def _validate_X(self, X, name="X"):
        """Rows for a fitted estimator; ``name``: the argument they came as (``X_support``,
        ``X_query``), which scikit-learn's messages ("Input X contains NaN", "X has 2
        features") then name instead of X."""
        check_is_fitted(self, "theta_")
        _validation.not_masked(name, X)
        if name == "X":
            return validate_data(self, X, reset=False, dtype=DTYPES[self.dtype])
        try:
            return validate_data(self, X, reset=False, dtype=DTYPES[self.dtype])
        except (ValueError, TypeError) as exc:
            exc = _validation.rename_in(exc, {"X": name})
            if exc.args and isinstance(exc.args[0], str) and name not in exc.args[0]:
                exc.args = (f"{name}: {exc.args[0]}",) + tuple(exc.args[1:])  # "Expected 2D array"
            raise exc from None

    def _n_outputs_for(self, y):
        if self._is_classifier:
            return int(self.classes_.shape[0])
        return 1 if y.ndim == 1 else int(y.shape[1])

    # --- the net ----------------------------------------------------------------------------
    def _new_model(self, hidden, n_outputs, task_heads=None):
        self.layer_sizes_ = tuple([int(self.n_features_in_)] + hidden + [int(n_outputs)])
        self.n_outputs_ = int(n_outputs)
        model = MLP(list(self.layer_sizes_), activation=self.activation, loss=self._loss,
                    task_heads=task_heads, head=self._head_kind())
        # the fitted layout: θ's meaning must not follow a later set_params(head=...)
        self.head_layout_ = (task_heads, model.head)
        # predict then leaves __dict__ unchanged
        self.__dict__["_cache"] = {"model": (self._model_key(), model)}
        return model

    def _task_heads(self):
        return None

    def _head_kind(self):
        """What a per-task head owns (metacore.MLP's ``head``): "full" unless a subclass says."""
        return "full"

    def _cached(self, name, key, build):
        """The object ``build()`` made for ``key`` — everything it is built from: fitted state
        and the hyper-parameters as they are now —, kept between calls and built again when the
        key changes. A ``set_params`` after fit therefore acts at once, as it does after a
        pickle round trip (which drops the cache: compiled nets and learners are not pickled)."""
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            cache[name] = hit = (key, build())
        return hit[1]

    def _model_key(self):
        layout = getattr(self, "head_layout_", (self._task_heads(), self._head_kind()))
        return (tuple(self.layer_sizes_), self.activation, layout)

    def _model(self):
        """The fitted net."""
        key = self._model_key()
        return self._cached("model", key, lambda: MLP(
            list(key[0]), activation=self.activation, loss=self._loss, task_heads=key[2][0],
            head=key[2][1]))

    @contextlib.contextmanager
    def _fit_or_keep(self):
        """A fit that does not finish — input refused, training diverged (FitDivergedError),
        Ctrl-C — leaves the estimator as it was: a fitted one keeps predicting with its model,
        an unfitted one stays unfitted (never half of a new fit: new sizes beside an old θ).
        A FitDivergedError on data far from unit scale names that as the likely cause."""
        before = dict(self.__dict__)
        try:
            yield
        except BaseException as exc:
            cause = self.__dict__.get("_scale_cause")
            self.__dict__.clear()
            self.__dict__.update(before)
            if isinstance(exc, FitDivergedError) and exc.args and isinstance(exc.args[0], str):
                # the engine's advice names its own clip_norm, which the estimators do not have
                text = re.sub(r" or clip_norm(?=\.)", "", exc.args[0])
                exc.args = (text + (f" {cause}" if cause else ""),) + tuple(exc.args[1:])
            raise
        finally:
            self.__dict__.pop("_scale_cause", None)

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_cache", None)
        return state

    def _raw(self, theta, X, task=0):
        """Net outputs (n, k) for rows X."""
        out = self._model().predict(theta, X, task=task, n_threads=self.n_threads)
        return out.reshape(X.shape[0], -1)

    # --- outputs to predictions -------------------------------------------------------------
    def _to_prediction(self, raw, classes=None):
        if self._is_classifier:
            classes = self.classes_ if classes is None else classes
            return classes[np.argmax(raw[:, :classes.shape[0]], axis=1)]
        out = raw.astype(np.float64)
        scaling = self.__dict__.get("_target_scaling")   # normalize_y: back to y's units
        if scaling is not None:
            out = out * scaling[1] + scaling[0]
        return out[:, 0] if getattr(self, "_single_output", True) else out

    def _to_proba(self, raw, classes=None):
        classes = self.classes_ if classes is None else classes
        # one column per class: after adapting an N-way model to support rows of fewer classes,
        # the outputs past them belong to no class (one class: probability 1)
        return softmax(raw[:, :classes.shape[0]].astype(np.float64), axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if not self._is_classifier:
            tags.target_tags.multi_output = True
        return tags
