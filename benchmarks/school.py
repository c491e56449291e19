"""The school data (139 schools = tasks, 15,362 students, 27 features + a constant): every
model on the same splits. Run from the repository root:

    PYTHONPATH=python python benchmarks/school.py [DATA] [--repetitions 10] [--steps 400]
        [--hidden 32] [--rows ridge,pooled,heads,intercepts,prox,imaml,estimator,reptile]
        [--json PATH]

DATA (default ../shared/data) holds school/school.mat. Protocol of the multi-task literature
(``mc.datasets.school_splits``, seed 0): per school a random 75 %/25 % train/test split of its
students, 10 repetitions. Metrics on the test rows, in the original exam-score units:
"pooled" = 1 − SSE/SST over all test rows pooled, "per school" = the mean over schools of each
school's 1 − SSE/SST. Mean ± sd over the repetitions.

Features are standardised and the target centred and scaled on the training rows (the constant
column is dropped: every model has intercepts). Hyper-parameters are chosen on an inner split of
the TRAINING rows only (``school_splits(train, repetitions=1)``: per school 75 % inner-fit, 25 %
validation), by the pooled validation explained variance; the chosen setting is then refitted on
all training rows. The test rows are used only for the reported figures.

Rows:
- ridge, pooled / one per school / pooled + per-school intercepts (scikit-learn ``Ridge``;
  α from a grid on the validation rows).
- multi-task net: ``mc.MLP([27, H, H, 1], task_heads=139)``, shared trunk + one output layer per
  school, ``mc.fit(mc.Objective(...))``; every head starts from the pooled net's output layer (so
  the number of steps is a shrinkage of the heads towards the pooled net, chosen on validation);
  weighting uniform, or the adaptive strategy best on validation (DWA, Uncertainty, FAMO).
- shared model + per-school intercepts, one ``mc.fit`` of bias-only heads
  (``mc.MLP(..., task_heads=139, head="bias")``: one shared net, one learned output bias per
  school), pooled weights n_i/N, L2 λ on all of θ and the number of Adam steps chosen on
  validation (Adam 5e-3, up to 1,500 steps, scored every 100: early stopping at the best
  validation score): linear (``mc.Linear(27, task_heads=139, head="bias")``, the metacore twin
  of ridge + intercepts) and a 27-H-1 relu net (H = ``--bias-hidden``, 16).
- linear, bias-only heads then a full head per school: every school's linear head (own slopes
  and intercept) started from the fitted bias-head model, then SGD 0.03 on the pooled objective
  for a number of steps (up to 600, scored every 50) chosen on validation — early stopping as a
  shrinkage of each school's slopes towards the shared ones (the mean-regularised multi-task
  model of Evgeniou & Pontil 2004, reached by stopping instead of by its penalty).
- linear, bias-only heads, then proximal adaptation per school (``prox``): the mean-regularised
  multi-task model of Evgeniou & Pontil (2004) with its explicit penalty, w_i = w_0 + v_i, w_0
  the fitted linear bias-head model, and per school v_i = argmin SSE_i + lb v_b² + ly‖v_year‖² +
  lx‖v_student‖² (its own intercept, school × year effects and student slopes, each group with
  its own shrinkage; the school-level columns keep w_0's slopes). Each v_i is ``mc.IMAML``'s
  proximal inner loop (Rajeswaran et al. 2019, eq. 3) run to convergence from 0 on the school's
  residuals, with λ = 2·lb/n_i and the columns scaled by √(lb/l_group) (a slope on a column
  scaled by s has the penalty lb/s²). (lb, ly, lx) chosen on validation from PROX_GRID.
- iMAML init (``imaml``): ``mc.fit(mc.MetaObjective(mc.IMAML(mc.Linear(27), ...), schools))``
  (support/query = halves of each school's shuffled training rows, Adam 1e-3, meta-batch 20)
  from the bias-head model with one global intercept, on the columns scaled as above (the
  school-level ones by 0.05: their slopes stay shared), then each school adapted from θ by
  the same proximal inner loop on all its training rows. ly, lx from the prox row; lb and the
  number of meta-steps (0 or 300) chosen on validation.
- the scikit-learn estimator (``estimator``): ``MetaMLPRegressor(hidden_layer_sizes=(),
  learner="imaml", reg=λ, inner_lr=0.02, inner_steps=100, learning_rate_init=1e-2,
  max_iter=1000, meta_batch=20)`` fitted on the training rows with ``groups`` = school (its own
  episode sampler: support/query halves of each school's rows), then for each school
  ``adapt_predict`` on its training rows — what a scikit-learn user writes, no column scaling or
  per-group penalties: one λ for every coefficient, chosen on validation from ESTIMATOR_REGS.
  And the two-stage model of the ``intercepts`` rows with ``MultiTaskMLPRegressor``: school
  intercepts (``head="bias"``), then ``warm_start`` into full heads with ``solver="sgd"``, the
  number of stage-2 steps from TWO_STAGE_STEPS on validation (``estimator_two_stage``).
- what a sceptic would also run (``sceptic``), scikit-learn non-linear models with the school as a
  feature: ``HistGradientBoostingRegressor`` with the school as a categorical feature (learning
  rate and number of trees from GBM_GRID, L2 1.0), and ``MLPRegressor(hidden_layer_sizes=(32,))``
  on the features and the one-hot school (a school's own shift of every hidden unit; α from
  MLP_ALPHAS, Adam, 300 epochs, one seed).
- Reptile init adapted per school: ``mc.fit(mc.MetaObjective(mc.Reptile(...), schools))`` from
  the pooled net, then per school ``mc.adapt_predict`` on its training rows with per-parameter
  rates that adapt only the output layer (bias rate and weight rate, steps chosen on validation).
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
from sklearn.linear_model import Ridge

import metacore as mc
from metacore.evaluation.statistics import explained_variance, task_explained_variance

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
L2S = (1e-4, 3e-4, 1e-3)   # λ of the bias-head models (mean squared error in sd² units)
ROWS = ("ridge", "pooled", "heads", "intercepts", "prox", "imaml", "estimator", "reptile",
        "sceptic")
GBM_GRID = [(lr, n) for lr in (0.02, 0.05, 0.1) for n in (50, 100, 300)]   # (learning rate, trees)
MLP_ALPHAS = (0.3, 1.0, 3.0)      # scikit-learn MLPRegressor's L2 penalty
ESTIMATOR_REGS = (3.0, 10.0, 30.0)   # iMAML's λ in the scikit-learn estimator row
# Columns of the school data (after the constant is dropped): exam year (3 dummies), the school's
# % free school meals and % VR band 1 in that year, then the student's gender (2), VR band (3)
# and ethnic group (11), then the school's gender (3) and denomination (3).
YEAR, SCHOOL_YEAR, STUDENT, SCHOOL = [0, 1, 2], [3, 4], list(range(5, 21)), list(range(21, 27))
ADAPTED = YEAR + STUDENT      # the columns whose slopes each school owns in the prox/iMAML rows
PROX_GRID = [(lb, ly, lx) for lb in (10.0, 30.0, 100.0, 300.0, 1000.0)
             for ly in (100.0, 300.0, 1000.0) for lx in (100.0, 300.0, 1000.0)]


# --- metrics ----------------------------------------------------------------------------------
def scores(y, pred, offsets):
    """(pooled, mean over schools) explained variance of ``pred`` on rows ``y`` grouped by
    ``offsets``."""
    return (explained_variance(y, pred),
            float(np.mean(task_explained_variance(y, pred, offsets))))


# --- data ---------------------------------------------------------------------------------------
class Scaled:
    """One train/test pair, standardised on the training rows: X (without the constant column)
    to mean 0 / sd 1, y to mean 0 / sd 1; ``back`` maps predictions to exam-score units."""

    def __init__(self, train, test):
        X = train.X[:, :-1]
        self.mu, self.sd = X.mean(axis=0), X.std(axis=0)
        self.sd[self.sd == 0] = 1.0
        self.ym, self.ys = float(train.y.mean()), float(train.y.std())
        self.train, self.test = self.taskset(train), self.taskset(test)
        self.y_test = test.y
        self.offsets_test = test.offsets

    def taskset(self, ts):
        return mc.TaskSet((ts.X[:, :-1] - self.mu) / self.sd, (ts.y - self.ym) / self.ys,
                          ts.offsets, task_ids=ts.task_ids)

    def back(self, pred):
        return pred * self.ys + self.ym


def school_of_rows(ts):
    return np.repeat(np.arange(ts.n_tasks), np.diff(ts.offsets))


def one_hot(ts):
    return np.eye(ts.n_tasks)[school_of_rows(ts)]


def inner_split(ts, seed):
    """(fit, val) TaskSets: per school 75 % / 25 % of ``ts``'s rows."""
    return next(mc.datasets.school_splits(ts, repetitions=1, seed=seed))


def val_score(val, pred):
    """The pooled validation explained variance every choice of this script maximises; a
    setting whose predictions are not finite (a diverged fit) scores −inf: it loses the choice
    instead of ending the run."""
    pred = np.asarray(pred, dtype=np.float64)
    return explained_variance(val.y, pred) if np.isfinite(pred).all() else -np.inf


# --- ridge baselines --------------------------------------------------------------------------
def ridge_pooled(fit, val, alpha=None):
    if alpha is None:
        return max(ALPHAS, key=lambda a: val_score(val, ridge_pooled(fit, val, a)))
    return Ridge(alpha=alpha).fit(fit.X, fit.y).predict(val.X)


def ridge_intercepts(fit, val, alpha=None):
    if alpha is None:
        return max(ALPHAS, key=lambda a: val_score(val, ridge_intercepts(fit, val, a)))
    r = Ridge(alpha=alpha).fit(np.hstack([fit.X, one_hot(fit)]), fit.y)
    return r.predict(np.hstack([val.X, one_hot(val)]))


def ridge_per_school(fit, val, alpha=None):
    if alpha is None:
        return max(ALPHAS, key=lambda a: val_score(val, ridge_per_school(fit, val, a)))
    out = []
    for i in range(fit.n_tasks):
        (Xf, yf), (Xv, _) = fit[i], val[i]
        out.append(Ridge(alpha=alpha).fit(Xf, yf).predict(Xv))
    return np.concatenate(out)


def gbm(fit, val, setting=None, seed=0):
    from sklearn.ensemble import HistGradientBoostingRegressor
    if setting is None:
        return max(GBM_GRID, key=lambda g: val_score(val, gbm(fit, val, g, seed)))
    lr, trees = setting
    school = [fit.n_features]          # the last column: the school's index, a category
    m = HistGradientBoostingRegressor(learning_rate=lr, max_iter=trees, l2_regularization=1.0,
                                      categorical_features=school, random_state=seed)
    m.fit(np.hstack([fit.X, school_of_rows(fit)[:, None]]), fit.y)
    return m.predict(np.hstack([val.X, school_of_rows(val)[:, None]]))


def mlp_one_hot(fit, val, alpha=None, seed=0):
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    if alpha is None:
        return max(MLP_ALPHAS, key=lambda a: val_score(val, mlp_one_hot(fit, val, a, seed)))
    m = MLPRegressor(hidden_layer_sizes=(32,), alpha=alpha, max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(np.hstack([fit.X, one_hot(fit)]), fit.y)
    return m.predict(np.hstack([val.X, one_hot(val)]))


# --- nets ---------------------------------------------------------------------------------------
def pooled_objective(model, ts, l2):
    n = np.diff(ts.offsets).astype(np.float64)
    return mc.Objective(model, ts, weights=n / n.sum(), l2=l2, n_threads=1)


def train_pooled(model, ts, steps, seed, l2=1e-3, start=None):
    start = model.init(seed=seed, dtype=np.float64) if start is None else start
    return mc.fit(pooled_objective(model, ts, l2), start, optimizer=mc.optim.Adam(lr=1e-2),
                  steps=steps, progress=False, seed=seed).theta


def predict_heads(model, theta, ts):
    return np.concatenate([model.predict(theta, ts[i][0], task=i) for i in range(ts.n_tasks)])


def heads_from_pooled(pooled_model, theta, T):
    """θ of the task-head model whose every head is the pooled net's output layer."""
    n_head = pooled_model.layer_sizes[-2] + 1
    return np.concatenate([theta[:-n_head], np.tile(theta[-n_head:], T)])


def multitask(fit, val, hidden, steps, seed, weighting, theta_pooled_fit, chosen=None):
    """Validation: returns the best number of head steps and its score; refit: predictions."""
    T = fit.n_tasks
    pooled = mc.MLP([fit.n_features, hidden, hidden, 1])
    model = mc.MLP([fit.n_features, hidden, hidden, 1], task_heads=T)
    obj = mc.Objective(model, fit, l2=1e-4, n_threads=1)
    res = heads_from_pooled(pooled, theta_pooled_fit, T)
    opt = mc.optim.Adam(lr=1e-3)
    if chosen is not None:
        if chosen > 0:
            res = mc.fit(obj, res, optimizer=opt, steps=chosen, weighting=weighting,
                         progress=False, seed=seed).theta
        return predict_heads(model, res, val)
    best = (val_score(val, predict_heads(model, res, val)), 0)
    done, r = 0, res
    for block in (25, 25, 50, 100, 200):
        r = mc.fit(obj, r, optimizer=opt, steps=block, weighting=weighting, progress=False,
                   seed=seed)
        done += block
        best = max(best, (val_score(val, predict_heads(model, r.theta, val)), done))
    return best


def stopped_fit(model, obj, start, optimizer, val, seed, steps, every, max_steps):
    """``mc.fit`` from ``start``. Validation (``steps`` None): (best pooled validation score,
    its step count), scored every ``every`` steps up to ``max_steps``; refit (``steps`` given):
    (predictions on ``val``'s rows, θ)."""
    seen = []

    def score(event):
        seen.append((val_score(val, predict_heads(model, event.theta, val)), event.step))

    res = mc.fit(obj, start, optimizer=optimizer, steps=max_steps if steps is None else steps,
                 eval_every=every, callbacks=() if steps is not None else (score,),
                 progress=False, seed=seed)
    return max(seen) if steps is None else (predict_heads(model, res.theta, val), res.theta)


def bias_heads(hidden, fit, val, l2, seed, steps=None, every=100, max_steps=1500):
    """Shared model + one learned intercept per school (bias-only heads), one ``mc.fit``
    (Adam 5e-3); returns as :func:`stopped_fit`."""
    model = mc.MLP([fit.n_features, *hidden, 1], task_heads=fit.n_tasks, head="bias")
    return stopped_fit(model, pooled_objective(model, fit, l2),
                       model.init(seed=seed, dtype=np.float64), mc.optim.Adam(lr=5e-3), val,
                       seed, steps, every, max_steps)


def slopes_from_bias_heads(fit, val, theta_bias, l2, seed, steps=None):
    """A full linear head per school (own slopes and intercept), every head started from the
    fitted bias-head model (shared W, the school's intercept), then plain gradient steps (SGD
    0.03) on the pooled objective: the number of steps, chosen on validation, sets how far each
    school's slopes move from the shared ones (early stopping as shrinkage towards the shared
    model). Returns as :func:`stopped_fit`."""
    T, d = fit.n_tasks, fit.n_features
    model = mc.Linear(d, task_heads=T)
    start = np.concatenate([np.append(theta_bias[:d], theta_bias[d + t]) for t in range(T)])
    return stopped_fit(model, pooled_objective(model, fit, l2), start, mc.optim.SGD(lr=0.03),
                       val, seed, steps, every=50, max_steps=600)


def prox_learner(model, Z, lb, steps):
    """``mc.IMAML`` whose inner loop (``adapt``) solves one school's proximal problem

        φ* = argmin_φ (1/n) Σ (ŷ(φ) − y)² + (λ/2)‖φ − θ‖²,   λ = 2·lb/n,

    on its n rows Z, i.e. SSE + lb‖φ − θ‖²: the prior of a school's deviation from θ is the same
    whatever its size, so small schools are shrunk harder (Evgeniou & Pontil 2004's penalty per
    task). Step 1/(L + λ), L = 2‖[Z 1]‖²/n the largest curvature of the mean squared error, so
    the inner loop contracts; ``steps`` steps."""
    n = Z.shape[0]
    reg = 2.0 * lb / n
    curvature = 2.0 * np.linalg.norm(np.hstack([Z, np.ones((n, 1))]), 2) ** 2 / n
    return mc.IMAML(model, reg=reg, inner_lr=1.0 / (curvature + reg), inner_steps=steps,
                    cg_steps=1, n_threads=1)


def slope_scales(lb, ly, lx):
    """Column scales of the adapted columns (years, then student features): a slope on a
    column scaled by s has the proximal penalty lb/s² in the original units, so s =
    √(lb/ly) for the year columns and √(lb/lx) for the student columns give the intercept,
    the school × year effects and the student slopes their own shrinkage."""
    return np.array([np.sqrt(lb / ly)] * len(YEAR) + [np.sqrt(lb / lx)] * len(STUDENT))


def prox_heads(fit, val, theta_bias, lb, ly, lx, steps=300):
    """Evgeniou & Pontil's mean-regularised model, per school w_i = w_0 + v_i with the penalty
    lb v_b² + ly‖v_year‖² + lx‖v_student‖² (SSE units; v_b the school's intercept), w_0 the
    fitted bias-head model (shared slopes, the school's intercept): each school's v_i is the
    proximal adaptation of a linear model (``mc.IMAML``'s inner loop, from 0) on the residuals
    of w_0, on the year and student columns scaled by :func:`slope_scales`. The school-level
    columns keep w_0's slopes (they are constant within a school: its intercept covers them).
    Predictions on ``val``'s rows."""
    T = fit.n_tasks
    base = mc.Linear(fit.n_features, task_heads=T, head="bias")
    model = mc.Linear(len(ADAPTED))
    scale = slope_scales(lb, ly, lx)
    start = np.zeros(model.n_params)
    out = []
    for i in range(T):
        (Xf, yf), (Xv, _) = fit[i], val[i]
        Zf, Zv = Xf[:, ADAPTED] * scale, Xv[:, ADAPTED] * scale
        resid = yf - base.predict(theta_bias, Xf, task=i)
        learner = prox_learner(model, Zf, lb, steps)
        out.append(base.predict(theta_bias, Xv, task=i)
                   + learner.adapt_predict(start, Zf, resid, Zv))
    return np.concatenate(out)


# iMAML: every column scaled so that the proximal penalty of its slope is set by the column's
# group; the school-level columns (constant within a school, or within a school and year) get
# the scale 0.05, a penalty 400·lb: adapting them would only duplicate the intercept.
FROZEN_SCALE = 0.05


def imaml_scales(lb, ly, lx):
    s = np.full(len(YEAR) + len(SCHOOL_YEAR) + len(STUDENT) + len(SCHOOL), FROZEN_SCALE)
    s[ADAPTED] = slope_scales(lb, ly, lx)
    return s


def imaml_init(fit, theta_bias, lb, ly, lx, meta_steps, seed):
    """Meta-learned initialisation θ of ``mc.Linear(27)`` on the scaled columns: ``mc.fit`` of
    ``mc.MetaObjective(mc.IMAML(...))`` over the schools (each school's rows shuffled once,
    support = first half, query = second half; meta-batch 20, Adam 1e-3), started from the
    bias-head model (shared slopes, intercept = the students' mean of the school intercepts).
    The inner loop is the proximal problem of :func:`prox_learner` at the median support
    size's λ; the outer loop is the implicit meta-gradient (Rajeswaran et al. 2019)."""
    T, d = fit.n_tasks, fit.n_features
    scale = imaml_scales(lb, ly, lx)
    n = fit.task_sizes
    start = np.append(theta_bias[:d] / scale, np.average(theta_bias[d:], weights=n))
    if meta_steps == 0:
        return start
    rng = np.random.default_rng(seed)
    order = np.concatenate([a + rng.permutation(b - a)
                            for a, b in zip(fit.offsets[:-1], fit.offsets[1:])])
    meta = mc.TaskSet(fit.X[order] * scale, fit.y[order], fit.offsets, n_support=n // 2,
                      task_ids=fit.task_ids)
    model = mc.Linear(d)
    support = [meta.support(i)[0] for i in range(T)]
    reg = 2.0 * lb / float(np.median(n // 2))
    curvature = max(2.0 * np.linalg.norm(np.hstack([Z, np.ones((len(Z), 1))]), 2) ** 2 / len(Z)
                    for Z in support)
    learner = mc.IMAML(model, reg=reg, inner_lr=1.0 / (curvature + reg), inner_steps=100,
                       cg_steps=5, n_threads=1)
    return mc.fit(mc.MetaObjective(learner, meta, meta_batch=20), start,
                  optimizer=mc.optim.Adam(lr=1e-3), steps=meta_steps, progress=False,
                  seed=seed).theta


def imaml_adapted(fit, val, theta, lb, ly, lx, steps=300):
    """Each school adapted from the meta-learned θ by the proximal inner loop on its rows
    (:func:`prox_learner`, λ = 2·lb/n_i); predictions on ``val``'s rows."""
    scale = imaml_scales(lb, ly, lx)
    model = mc.Linear(fit.n_features)
    out = []
    for i in range(fit.n_tasks):
        (Xf, yf), (Xv, _) = fit[i], val[i]
        learner = prox_learner(model, Xf * scale, lb, steps)
        out.append(learner.adapt_predict(theta, Xf * scale, yf, Xv * scale))
    return np.concatenate(out)


def estimator_imaml(fit, val, reg, seed):
    """The scikit-learn estimator a user would reach for (``MetaMLPRegressor(learner="imaml")``
    on a linear model): meta-trained over the schools of ``fit`` (groups = school), then adapted
    to each school on its ``fit`` rows and asked for its ``val`` rows (standardised units)."""
    from metacore.sklearn import MetaMLPRegressor
    est = MetaMLPRegressor(hidden_layer_sizes=(), learner="imaml", reg=reg, inner_lr=0.02,
                           inner_steps=100, meta_batch=20, learning_rate_init=1e-2,
                           max_iter=1000, n_threads=1, random_state=seed)
    est.fit(fit.X, fit.y, groups=school_of_rows(fit))
    pred = np.empty(val.X.shape[0])
    for t in range(fit.n_tasks):
        f0, f1 = fit.offsets[t], fit.offsets[t + 1]
        v0, v1 = val.offsets[t], val.offsets[t + 1]
        pred[v0:v1] = est.adapt_predict(fit.X[f0:f1], fit.y[f0:f1], val.X[v0:v1])
    return pred


TWO_STAGE_STEPS = (100, 200, 300, 400, 500, 600, 800)   # stage-2 SGD steps, on validation


def estimator_two_stage(fit, val, seed, steps=TWO_STAGE_STEPS):
    """The two-stage school model as a scikit-learn user writes it with
    ``MultiTaskMLPRegressor``: a linear model with one intercept per school (``head="bias"``,
    λ 1e-3, 1,500 Adam steps at 5e-3, students weighted alike), then ``set_params(head="full",
    warm_start=True, solver="sgd", learning_rate_init=0.03)`` and more fits, every school's
    head starting at the shared slopes and its intercept. Returns {stage-2 steps: predictions
    on ``val``} for each count of ``steps`` (0: the first stage alone)."""
    from metacore.sklearn import MultiTaskMLPRegressor
    g = school_of_rows(fit)
    n = np.bincount(g).astype(np.float64)
    est = MultiTaskMLPRegressor(hidden_layer_sizes=(), task_heads=True, head="bias", alpha=1e-3,
                                learning_rate_init=5e-3, max_iter=1500,
                                weighting=mc.weighting.Fixed(n / n.sum()), dtype="float64",
                                random_state=seed, n_threads=1).fit(fit.X, fit.y, groups=g)
    gv = school_of_rows(val)
    out = {0: est.predict(val.X, groups=gv)}
    est.set_params(head="full", warm_start=True, solver="sgd", learning_rate_init=0.03)
    done = 0
    for k in steps:
        est.set_params(max_iter=k - done).fit(fit.X, fit.y, groups=g)
        done = k
        out[k] = est.predict(val.X, groups=gv)
    return out


def adapt_rates(model, bias_rate, weight_rate):
    P, H = model.n_params, model.layer_sizes[-2]
    rates = np.zeros(P)
    rates[P - H - 1:P - 1] = weight_rate
    rates[P - 1] = bias_rate
    return rates


def adapt_all(model, theta, fit, val, rates, steps):
    return np.concatenate([mc.adapt_predict(model, theta, *fit[i], val[i][0], steps=steps,
                                            lr=rates) for i in range(fit.n_tasks)])


def reptile(model, fit, theta, steps, seed):
    meta = mc.TaskSet(fit.X, fit.y, fit.offsets, n_support=fit.task_sizes // 2,
                      task_ids=fit.task_ids)   # each step: support half, query half
    learner = mc.Reptile(model, inner_lr=0.01, inner_steps=5, outer_lr=0.1, n_threads=1)
    return mc.fit(mc.MetaObjective(learner, meta, meta_batch=10), theta, steps=steps,
                  progress=False, seed=seed).theta


# --- one repetition -------------------------------------------------------------------------------
def repetition(train, test, rep, args):
    s = Scaled(train, test)
    fit, val = inner_split(s.train, seed=1000 + rep)
    out, chosen = {}, {}

    def record(name, pred):
        out[name] = scores(s.y_test, s.back(pred), s.offsets_test)

    rows = args.rows
    for name, f in (("ridge, pooled", ridge_pooled), ("ridge, one per school", ridge_per_school),
                    ("ridge, pooled + school intercepts", ridge_intercepts)):
        if "ridge" not in rows:
            break
        a = f(fit, val)
        chosen[name] = f"alpha={a}"
        record(name, f(s.train, s.test, a))

    H, steps = args.hidden, args.steps
    pooled = mc.MLP([s.train.n_features, H, H, 1])
    if {"pooled", "heads", "reptile"} & rows:
        th_fit = train_pooled(pooled, fit, steps, rep)
        th_all = train_pooled(pooled, s.train, steps, rep)
        record("metacore pooled net", pooled.predict(th_all, s.test.X))
    if "heads" in rows:
        heads(fit, val, s, H, steps, rep, th_fit, th_all, record, chosen)
    if {"intercepts", "prox", "imaml"} & rows:
        lin = linear_bias_heads(fit, val, s, rep)
    if "intercepts" in rows:
        intercepts(fit, val, s, args.bias_hidden, rep, lin, record, chosen)
    if {"prox", "imaml"} & rows:
        penalties = prox(fit, val, s, lin, record, chosen)
    if "imaml" in rows:
        imaml(fit, val, s, lin, penalties, rep, record, chosen)
    if "estimator" in rows:
        name = "metacore MetaMLPRegressor(learner='imaml'), linear, adapted per school"
        reg = max(ESTIMATOR_REGS, key=lambda r: val_score(val, estimator_imaml(fit, val, r, rep)))
        chosen[name] = f"reg={reg}"
        record(name, estimator_imaml(s.train, s.test, reg, rep))
        name = ("metacore MultiTaskMLPRegressor, linear: school intercepts, then warm-started "
                "full heads (SGD)")
        on_val = estimator_two_stage(fit, val, rep)
        k = max(on_val, key=lambda k: val_score(val, on_val[k]))
        chosen[name] = f"stage-2 steps={k}"
        record(name, estimator_two_stage(s.train, s.test, rep, steps=(k,) if k else ())[k])
    if "reptile" in rows:
        adapted(fit, val, s, pooled, th_fit, th_all, rep, args, record, chosen)
    if "sceptic" in rows:
        for name, f in (("gradient boosting, school as a category (scikit-learn)", gbm),
                        ("MLP 32, features + one-hot school (scikit-learn)", mlp_one_hot)):
            g = f(fit, val, seed=rep)
            chosen[name] = str(g)
            record(name, f(s.train, s.test, g, seed=rep))
    return out, chosen


def heads(fit, val, s, H, steps, rep, th_fit, th_all, record, chosen):
    """Multi-task heads: uniform and the adaptive weighting best on validation."""
    candidates = {"uniform": mc.weighting.Uniform(), "DWA": mc.weighting.DWA(),
                  "Uncertainty": mc.weighting.Uncertainty(), "FAMO": mc.weighting.FAMO()}
    val_results = {k: multitask(fit, val, H, steps, rep, w, th_fit)
                   for k, w in candidates.items()}
    k = val_results["uniform"][1]
    chosen["metacore multi-task heads, uniform"] = f"head steps={k}"
    record("metacore multi-task heads, uniform",
           multitask(s.train, s.test, H, steps, rep, candidates["uniform"], th_all, chosen=k))
    best = max((v, n) for n, v in val_results.items() if n != "uniform")[1]
    k = val_results[best][1]
    chosen["metacore multi-task heads, best adaptive"] = f"{best}, head steps={k}"
    record("metacore multi-task heads, best adaptive",
           multitask(s.train, s.test, H, steps, rep, candidates[best], th_all, chosen=k))



def linear_bias_heads(fit, val, s, rep):
    """The linear bias-head model (shared slopes + one intercept per school): λ and the number
    of steps chosen on validation; returns (λ, steps, test predictions, θ fitted on the
    inner-fit rows, θ fitted on all training rows)."""
    _, k, l2 = max(bias_heads((), fit, val, l2, rep) + (l2,) for l2 in L2S)
    pred, theta_all = bias_heads((), s.train, s.test, l2, rep, steps=k)
    _, theta_fit = bias_heads((), fit, val, l2, rep, steps=k)
    return l2, k, pred, theta_fit, theta_all


def intercepts(fit, val, s, H, rep, lin, record, chosen):
    """Shared model + one intercept per school (bias-only heads), linear (``lin``, from
    :func:`linear_bias_heads`) and a 27-H-1 net; λ and the number of steps chosen on
    validation."""
    l2, k, pred, theta_fit, theta = lin
    label = "metacore linear + school intercepts (bias-only heads)"
    chosen[label] = f"L2={l2}, steps={k}"
    record(label, pred)
    # then a full head per school, started from the bias-head model: steps on validation
    _, k2 = slopes_from_bias_heads(fit, val, theta_fit, l2, rep)
    label = "metacore linear, bias-only heads, then a full head per school from them"
    chosen[label] = f"L2={l2}, {k} + {k2} steps"
    record(label, slopes_from_bias_heads(s.train, s.test, theta, l2, rep, steps=k2)[0])
    _, k, l2 = max(bias_heads((H,), fit, val, l2, rep) + (l2,) for l2 in L2S)
    label = f"metacore 27-{H}-1 net + school intercepts (bias-only heads)"
    chosen[label] = f"L2={l2}, steps={k}"
    record(label, bias_heads((H,), s.train, s.test, l2, rep, steps=k)[0])


def prox(fit, val, s, lin, record, chosen):
    """Evgeniou & Pontil's mean-regularised model by per-school proximal adaptation from the
    linear bias-head model; (lb, ly, lx) chosen on validation. Returns the choice."""
    _, _, _, theta_fit, theta = lin
    lb, ly, lx = max(PROX_GRID, key=lambda g: val_score(val, prox_heads(fit, val, theta_fit, *g)))
    label = "metacore linear, bias-only heads, then proximal adaptation per school"
    chosen[label] = f"lb={lb}, ly={ly}, lx={lx}"
    record(label, prox_heads(s.train, s.test, theta, lb, ly, lx))
    return lb, ly, lx


IMAML_GRID = [(lb, m) for lb in (3.0, 10.0, 30.0, 100.0) for m in (0, 300)]


def imaml(fit, val, s, lin, penalties, rep, record, chosen):
    """iMAML-meta-learned initialisation adapted per school by the proximal inner loop: the
    slope penalties (ly, lx) are the prox row's (chosen on validation); the intercept penalty lb
    and the number of meta-steps (0: the bias-head model with one global intercept) are chosen
    on validation from IMAML_GRID."""
    _, _, _, theta_fit, theta = lin
    _, ly, lx = penalties

    def score(g):
        lb, m = g
        return val_score(val, imaml_adapted(fit, val, imaml_init(fit, theta_fit, lb, ly, lx, m,
                                                                 rep), lb, ly, lx))

    lb, k = max(IMAML_GRID, key=score)
    label = "metacore iMAML init (meta-trained), proximal adaptation per school"
    chosen[label] = f"lb={lb}, ly={ly}, lx={lx}; meta-steps={k}"
    record(label, imaml_adapted(s.train, s.test, imaml_init(s.train, theta, lb, ly, lx, k, rep),
                                lb, ly, lx))


def adapted(fit, val, s, pooled, th_fit, th_all, rep, args, record, chosen):
    """Reptile init, adapted per school (output layer only)."""
    m_fit = reptile(pooled, fit, th_fit, args.meta_steps, rep)
    m_all = reptile(pooled, s.train, th_all, args.meta_steps, rep)
    grid = [(br, wr, k) for br in (0.05, 0.2) for wr in (0.0, 0.002) for k in (5, 20)]
    br, wr, k = max(grid, key=lambda g: val_score(
        val, adapt_all(pooled, m_fit, fit, val, adapt_rates(pooled, g[0], g[1]), g[2])))
    chosen["metacore Reptile init, adapted per school"] = f"bias lr={br}, W lr={wr}, steps={k}"
    record("metacore Reptile init, adapted per school",
           adapt_all(pooled, m_all, s.train, s.test, adapt_rates(pooled, br, wr), k))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default="../shared/data")
    p.add_argument("--repetitions", type=int, default=10)
    p.add_argument("--steps", type=int, default=400, help="Adam steps of the pooled net")
    p.add_argument("--meta-steps", type=int, default=300, help="Reptile meta-steps")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--bias-hidden", type=int, default=16,
                   help="hidden width of the net with bias-only heads")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"comma-separated groups of rows to run, from {','.join(ROWS)}")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.rows = set(args.rows.split(","))
    if not args.rows <= set(ROWS):
        p.error(f"--rows: unknown group(s) {sorted(args.rows - set(ROWS))}; choose from {ROWS}")
    path = pathlib.Path(args.data) / "school" / "school.mat"
    ts = mc.datasets.school(path)
    t0 = time.perf_counter()
    results, choices = {}, []
    for rep, (train, test) in enumerate(mc.datasets.school_splits(
            ts, repetitions=args.repetitions, seed=0)):
        out, chosen = repetition(train, test, rep, args)
        choices.append(chosen)
        for k, v in out.items():
            results.setdefault(k, []).append(v)
        print(f"repetition {rep}: " + ", ".join(f"{k} {100 * v[0]:.1f}" for k, v in out.items()),
              file=sys.stderr, flush=True)
        print(f"  chosen: {chosen}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    from machine import cpu_name   # benchmarks/ is on sys.path when run as a script
    cpu = cpu_name()
    print(f"School, {args.repetitions} repetitions, {wall:.0f} s wall on {cpu}\n")
    print("| model | explained variance, pooled test rows (%) | mean over schools (%) |")
    print("|---|---|---|")
    for k, v in results.items():
        a = 100 * np.array(v)
        print(f"| {k} | {a[:, 0].mean():.1f} ± {a[:, 0].std(ddof=1) if len(a) > 1 else 0:.1f} "
              f"| {a[:, 1].mean():.1f} ± {a[:, 1].std(ddof=1) if len(a) > 1 else 0:.1f} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"results": results, "chosen": choices, "wall_s": wall, "cpu": cpu}, indent=1))


if __name__ == "__main__":
    main()
