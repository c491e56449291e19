r"""Is the user's data on the scale the estimators' nets are built for? Checked once per ``fit``.

scikit-learn leaves scaling to the user (``make_pipeline(StandardScaler(), estimator)``) and its
MLP guide says why: "Multi-layer Perceptron is sensitive to feature scaling, so it is highly
recommended to scale your data", to [0, 1], [-1, 1] or mean 0 and variance 1. The metacore
estimators assume the same: He/Glorot initial weights (variance ∝ 1/fan_in, for inputs of unit
variance) and default learning rates tuned on unit-scale data. Gradient steps scale with the
inputs (the first layer's curvature with their square), so a column far above unit scale makes
the (inner-loop) steps overshoot or diverge, and one far below it is learned orders of magnitude
slower. ``fit`` warns (:class:`DataScaleWarning`, once, naming the worst columns) when

- a feature column's root mean square √(mean(x²)) — the size of the values the first layer
  multiplies, offset included — is above :data:`LARGE` = 10, or its values span (max − min) less
  than :data:`SMALL_SPAN` = 0.01 (a column that spans less than float32's resolution at 1 counts
  as constant: what StandardScaler leaves of a column constant but for rounding);
- a regressor's target (each output) has a root mean square above 10 or a standard deviation
  below :data:`SMALL_TARGET_SD` = 0.1, unless ``normalize_y=True`` standardises it.

Where the bounds come from (``benchmarks/sklearn_scale.py``: 4 tasks of 100 rows, 8 columns,
every column scaled or offset by s, each estimator at its defaults): on the large side scores
fall from s = 10 on (MultiTaskMLPRegressor R² 0.25 → −0.45, MAML's classifier accuracy 0.84 →
0.67, Reptile's meta-training diverges; an offset of 100 takes MultiTaskMLPClassifier from 0.72
to 0.56). On the small side the losses come later, as a feature only needs its weights to grow:
0 to 12 points at s = 1e-2, while at s = 1e-3 most meta-learners fall to chance (MAML's
regressor R² 0.46 → 0.00, FOMAML's accuracy 0.81 → 0.56); a span of 0.01 lies between the two
(280 Gaussian rows span about 5.5 sd). A target's spread must exceed the output's error at
initialisation, of order 1: at s = 0.1 every regressor is below R² = −0.4, and a target offset
by 10 below −0.8. Features are judged by their span, not their standard deviation, so that a
rarely non-zero column (a one-hot category, a mostly blank pixel of digits / 16, sd 0.0015)
whose few values reach unit scale is not flagged. The output of StandardScaler (root mean
square 1, span ≥ 2) or MinMaxScaler (values in [0, 1], span 1) never is; MaxAbsScaler's can be,
as it does not centre: a column 10⁶ ± 1 becomes 1 ± 10⁻⁶, whose variation a net cannot see.
"""

from __future__ import annotations

import numpy as np

from .. import _validation

__all__ = ["DataScaleWarning", "LARGE", "SMALL_SPAN", "SMALL_TARGET_SD", "ScaleReport",
           "check_scale"]

LARGE = 10.0
SMALL_SPAN = 0.01
SMALL_TARGET_SD = 0.1
# a feature column whose values differ by no more than this is constant (float32's eps)
CONSTANT_SPAN = float(np.finfo(np.float32).eps)
SHOWN = 3


class DataScaleWarning(UserWarning):
    """``fit`` was given features (or a regressor a target) far from unit scale: gradient
    training with the estimators' initialisation and default learning rates is ill-conditioned
    on them. Scale the features in a pipeline, ``make_pipeline(StandardScaler(), estimator)``,
    and give regressors ``normalize_y=True``."""


def _feature_scales(X):
    """(root mean square, span) of each column of X (n, d), in float64, overflow-free and in
    pieces of rows (no copy of X is made; Ctrl-C lands between pieces)."""
    top, bottom = X.max(axis=0).astype(np.float64), X.min(axis=0).astype(np.float64)
    big = np.maximum(np.abs(top), np.abs(bottom))
    big = np.where(big > 0, big, 1.0)
    squares = np.zeros(X.shape[1])
    step = max(1, _validation.PIECE // max(1, X.shape[1]))
    for a in range(0, X.shape[0], step):
        squares += np.square(X[a:a + step] / big).sum(axis=0, dtype=np.float64)
    return big * np.sqrt(squares / X.shape[0]), top - bottom


def _target_scales(y):
    """(root mean square, standard deviation) of each output of y (n,) or (n, k), in float64
    and overflow-free; the deviation of an output constant but for rounding (≤ n·eps·|mean|, as
    StandardScaler bounds it) is 0."""
    y = y.reshape(y.shape[0], -1).astype(np.float64)
    big = np.abs(y).max(axis=0)
    big = np.where(big > 0, big, 1.0)
    mean, sd = (y / big).mean(axis=0) * big, (y / big).std(axis=0) * big
    sd = np.where(sd > y.shape[0] * np.finfo(np.float64).eps * np.abs(mean), sd, 0.0)
    return np.hypot(mean, sd), sd


class ScaleReport:
    """The columns of X (and outputs of y) found far from unit scale: lists of
    (name, what, value), worst first."""

    def __init__(self, features, n_features, target):
        self.features, self.n_features, self.target = features, n_features, target

    def __bool__(self):
        return bool(self.features or self.target)

    def _what(self):
        parts = []
        if self.features:
            shown = ", ".join(f"{name} ({what} {value:.3g})"
                              for name, what, value in self.features[:SHOWN])
            more = len(self.features) - SHOWN
            parts.append(f"{len(self.features)} of the {self.n_features} feature columns of X "
                         f"are far from unit scale: {shown}"
                         + (f" and {more} more" if more > 0 else ""))
        if self.target:
            shown = ", ".join(f"{name} ({what} {value:.3g})" for name, what, value in self.target)
            parts.append(f"the target is far from unit scale: {shown}")
        return "; ".join(parts)

    def _remedy(self, estimator):
        fixes = []
        if self.features:
            fixes.append(f"standardise the features in a pipeline, make_pipeline(StandardScaler(), "
                         f"{estimator}(...))")
        if self.target:
            fixes.append(f"pass normalize_y=True ({estimator}(normalize_y=True) standardises y "
                         f"for training and maps its predictions back)")
        return " and ".join(fixes)

    def warning(self, estimator):
        """The one warning's text for ``estimator`` (its class name)."""
        bounds = [f"root mean square at most {LARGE:g}"]
        if self.features:
            bounds.append(f"features spanning at least {SMALL_SPAN:g}")
        if self.target:
            bounds.append(f"a target's standard deviation at least {SMALL_TARGET_SD:g}")
        return (f"{estimator}.fit: {self._what()}. The net's initialisation and default "
                f"learning rates assume data of about unit scale ({', '.join(bounds)}); on "
                f"these, gradient training is ill-conditioned: it may diverge or learn little. "
                f"To fix it, {self._remedy(estimator)}.")

    def cause(self, estimator):
        """What a FitDivergedError adds: the likely cause and the fix."""
        return (f"More likely, the data's scale is the cause ({self._what()}): "
                f"{self._remedy(estimator)}.")


def check_scale(X, y=None, feature_names=None):
    """The :class:`ScaleReport` of features X (n, d) and, for a regressor whose target is not
    standardised, targets y (n,) or (n, k); empty (false) when every column is on a usable
    scale. Columns are named by ``feature_names`` ('worst area') or their index ('column 3')."""
    features = []
    if X.shape[0] and X.shape[1]:
        rms, span = _feature_scales(X)
        for j in range(X.shape[1]):
            name = repr(str(feature_names[j])) if feature_names is not None else f"column {j}"
            if rms[j] > LARGE:
                features.append((np.log10(rms[j]), name, "root mean square", rms[j]))
            elif CONSTANT_SPAN < span[j] < SMALL_SPAN:
                features.append((-np.log10(span[j]), name, "span", span[j]))
    features.sort(key=lambda f: -f[0])
    target = []
    if y is not None and y.shape[0]:
        rms, sd = _target_scales(y)
        for j in range(rms.shape[0]):
            name = "y" if y.ndim == 1 else f"y column {j}"
            if rms[j] > LARGE:
                target.append((name, "root mean square", rms[j]))
            elif 0 < sd[j] < SMALL_TARGET_SD:
                target.append((name, "standard deviation", sd[j]))
    return ScaleReport([f[1:] for f in features], X.shape[1], target)
