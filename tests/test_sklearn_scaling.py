"""The estimators and the scale of the user's data (issue 14): ``fit`` warns once
(DataScaleWarning, naming the worst columns and the fix) iff a feature column — or a regressor's
target, without ``normalize_y`` — is far from unit scale; never on standardised data or on the
README's examples; the same data in ``make_pipeline(StandardScaler(), ...)`` fits well; a fit
that diverges names the scale as the likely cause; ``normalize_y=True`` is
TransformedTargetRegressor's standardised target, reaching ``adapt`` too."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.base import clone  # noqa: E402
from sklearn.compose import TransformedTargetRegressor  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402

import metacore as mc  # noqa: E402
from metacore.sklearn import (DataScaleWarning, MetaMLPClassifier, MetaMLPRegressor,  # noqa: E402
                              MultiTaskMLPClassifier, MultiTaskMLPRegressor)

ONE = dict(random_state=0, n_threads=1)
LEARNERS = ("maml", "fomaml", "anil", "metasgd", "reptile", "mamlpp", "imaml")
MANY = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def scale_warnings(record):
    return [w for w in record if issubclass(w.category, DataScaleWarning)]


# --- the data: breast cancer as a user has it ------------------------------------------
def breast_cancer():
    """The 30 raw columns (a DataFrame, so columns have names), the diagnosis, 'worst area'
    (185-4254) as a regression target from the other 29, and 4 tasks: quartiles of
    'mean texture'."""
    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target.to_numpy()
    task = np.digitize(X["mean texture"], np.quantile(X["mean texture"], [0.25, 0.5, 0.75]))
    return X, y, X.drop(columns="worst area"), X["worst area"].to_numpy(), task


# (id, class, parameters, regressor, score asserted in the pipeline). Measured by
# benchmarks/sklearn_scale.py's breast_cancer() (same split and seeds; regressors with
# normalize_y=True): multi-task accuracy 0.979 / 0.986 with heads, R² 0.974 / 0.943; meta
# accuracy 0.972-1.000, 2-way 5-shot MAML 0.987, ProtoNet 0.910, RidgeHead 0.936; meta R²
# 0.968-0.974, iMAML 0.901, Reptile 0.595. Raw, the same estimators score 0.25-0.94 accuracy and
# R² from 0.94 down to divergence.
CASES = [("mt-clf", MultiTaskMLPClassifier, {}, False, 0.95),
         ("mt-clf-heads", MultiTaskMLPClassifier, {"task_heads": True}, False, 0.95),
         ("mt-reg", MultiTaskMLPRegressor, {}, True, 0.9),
         ("mt-reg-heads", MultiTaskMLPRegressor, {"task_heads": True}, True, 0.9)]
CASES += [(f"meta-clf-{lr}", MetaMLPClassifier, {"learner": lr}, False, 0.95) for lr in LEARNERS]
CASES += [("meta-clf-maml-2way", MetaMLPClassifier, {"n_way": 2, "k_shot": 5}, False, 0.95),
          ("meta-clf-protonet", MetaMLPClassifier,
           {"learner": "protonet", "n_way": 2, "k_shot": 5}, False, 0.88),
          ("meta-clf-ridgehead", MetaMLPClassifier,
           {"learner": "ridgehead", "n_way": 2, "k_shot": 5}, False, 0.9)]
CASES += [(f"meta-reg-{lr}", MetaMLPRegressor, {"learner": lr}, True,
           {"reptile": 0.5, "imaml": 0.85}.get(lr, 0.9)) for lr in LEARNERS]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_raw_breast_cancer_warns_once_naming_the_worst_columns_and_the_fix(case):
    _, cls, kw, regressor, _ = case
    X, y, Xr, yr, task = breast_cancer()
    A, b = (Xr, yr) if regressor else (X, y)
    est = cls(**kw, **ONE, max_iter=5)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            est.fit(A, b, groups=task)
        except mc.FitDivergedError as exc:     # names the same cause
            assert "More likely, the data's scale is the cause" in str(exc)
    found = scale_warnings(seen)
    assert len(found) == 1 and found[0].category is DataScaleWarning
    assert issubclass(DataScaleWarning, UserWarning)
    text = str(found[0].message)
    # the worst columns by name (their root mean square: 1.05e3, 743), the fix, exactly
    worst = "'mean area' (root mean square 743)" if regressor else \
        "'worst area' (root mean square 1.05e+03)"
    assert text.startswith(f"{cls.__name__}.fit: ") and worst in text, text
    assert f"make_pipeline(StandardScaler(), {cls.__name__}(...))" in text
    assert (f"{cls.__name__}(normalize_y=True)" in text) == regressor
    assert ("the target is far from unit scale: y (root mean square 1.05e+03)" in text) \
        == regressor
    assert found[0].filename == __file__       # points at the caller's fit


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_standardised_breast_cancer_fits_well_without_a_warning(case):
    _, cls, kw, regressor, threshold = case
    X, y, Xr, yr, task = breast_cancer()
    A, b = (Xr, yr) if regressor else (X, y)
    tr, te = train_test_split(np.arange(len(b)), random_state=0, stratify=task)
    est = cls(**kw, **ONE, **({"normalize_y": True} if regressor else {}))
    pipe = make_pipeline(StandardScaler(), est)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.fit(A.iloc[tr], b[tr], **{f"{pipe.steps[-1][0]}__groups": task[tr]})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        score = est.score(pipe[:-1].transform(A.iloc[te]), b[te], groups=task[te])
    # the only warning allowed: an N-way score naming a test task too small for an episode
    messages = [str(w.message) for w in seen]
    assert all("left out of the score" in m for m in messages), messages
    assert np.isfinite(score) and score >= threshold, score


# --- generated scales --------------------------------------------------------------------------
N = 200
# a column: (kind, exponent) → values and whether it is far from unit scale (with margins of at
# least 3× around the bounds: root mean square 10, span 0.01 (200 Gaussian rows span 4-7 sd))
COLUMN = st.one_of(
    st.tuples(st.just("gauss"), st.sampled_from([-4, -3, -2, -1, 0, 0.5, 1.5, 2, 3, 4, 5, 6])),
    st.tuples(st.just("offset"), st.sampled_from([0, 0.5, 1.5, 2, 4, 6])),
    st.tuples(st.just("rare"), st.sampled_from([0.005, 0.05])),     # a one-hot category
    st.tuples(st.just("constant"), st.sampled_from([0.0, 0.3, 5.0])),
    st.tuples(st.just("rounding"), st.just(0)))                      # 0.3, 0.1 + 0.2


def column(kind, k, rng):
    """(values, far from unit scale)"""
    if kind == "gauss":
        return 10.0 ** k * rng.normal(size=N), k >= 1.5 or k <= -3
    if kind == "offset":
        return 10.0 ** k + rng.normal(size=N), k >= 1.5
    if kind == "rare":
        values = (rng.random(N) < k).astype(float)
        values[0] = 1.0
        return values, False
    if kind == "constant":
        return np.full(N, k), False
    return np.where(rng.random(N) < 0.5, 0.3, 0.1 + 0.2), False


def generated(columns, seed):
    rng = np.random.default_rng(seed)
    made = [column(kind, k, rng) for kind, k in columns]
    X = np.column_stack([m[0] for m in made])
    bad = [j for j, m in enumerate(made) if m[1]]
    signal = rng.normal(size=N)
    groups = np.repeat(np.arange(4), N // 4)
    return X, bad, signal, groups


ESTIMATOR_KINDS = {
    "mt-reg": lambda **kw: MultiTaskMLPRegressor(**kw),
    "mt-clf": lambda **kw: MultiTaskMLPClassifier(**kw),
    "meta-reg": lambda **kw: MetaMLPRegressor(**kw),
    "meta-clf": lambda **kw: MetaMLPClassifier(**kw),
    "protonet": lambda **kw: MetaMLPClassifier(learner="protonet", n_way=2, k_shot=3, **kw),
}


@MANY
@given(columns=st.lists(COLUMN, min_size=1, max_size=5),
       kind=st.sampled_from(list(ESTIMATOR_KINDS)),
       target=st.sampled_from([(0, 0), (-2, 0), (0.5, 0), (2, 0), (4, 0), (0, 100)]),
       normalize=st.booleans(), dtype=st.sampled_from(["float32", "float64"]),
       rate=st.sampled_from([None, 1e6]), seed=st.integers(0, 2**16))
def test_fit_warns_iff_a_column_is_far_from_unit_scale(columns, kind, target, normalize, dtype,
                                                        rate, seed):
    X, bad, signal, groups = generated(columns, seed)
    regressor = kind.endswith("reg")
    y_exp, y_offset = target
    y = 10.0 ** y_exp * signal / signal.std() + y_offset if regressor else \
        (signal > 0).astype(int)
    bad_target = regressor and not normalize and (y_exp <= -2 or y_exp >= 2 or y_offset)
    kw = dict(hidden_layer_sizes=(4,), max_iter=3, dtype=dtype, **ONE)
    if rate is not None:            # a rate that blows up any fit: the divergence's message
        kw["learning_rate_init"] = rate
    if regressor:
        kw["normalize_y"] = normalize
    est = ESTIMATOR_KINDS[kind](**kw)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            est.fit(X, y, groups=groups)
            diverged = None
        except mc.FitDivergedError as exc:
            diverged = str(exc)
    found = scale_warnings(seen)
    event(f"warned: {bool(found)}, diverged: {diverged is not None}")
    assert len(found) == (1 if bad or bad_target else 0), [str(w.message) for w in found]
    if found:
        text = str(found[0].message)
        if bad:
            assert f" {len(bad)} of the {X.shape[1]} feature columns of X " in text
            named = [int(j) for j in re.findall(r"column (\d+) \(", text)]
            assert named and set(named) <= set(bad), (named, bad)
        assert ("the target is far from unit scale" in text) == bool(bad_target)
    if diverged is not None:   # a blow-up names the scale when it was warned about
        assert ("More likely, the data's scale is the cause" in diverged) == bool(found)
        assert "clip_norm" not in diverged
        assert not hasattr(est, "theta_")
    else:                      # never NaN outputs
        out = (est.predict(X, groups=groups) if kind.startswith("mt") and regressor else
               est.predict_proba(X, groups=groups) if kind == "mt-clf" else
               est.adapt_predict(X[:20], y[:20], X) if regressor else
               est.adapt(X[:50], y[:50]).predict_proba(X))
        assert np.isfinite(out).all()


@MANY
@given(columns=st.lists(COLUMN, min_size=1, max_size=6), seed=st.integers(0, 2**16),
       scaler=st.sampled_from([StandardScaler, MinMaxScaler]),
       dtype=st.sampled_from(["float32", "float64"]))
def test_no_warning_on_standardised_or_min_max_scaled_data(columns, seed, scaler, dtype):
    X, _, signal, groups = generated(columns, seed)
    for est in (MultiTaskMLPRegressor(hidden_layer_sizes=(4,), max_iter=1, dtype=dtype, **ONE),
                MetaMLPClassifier(hidden_layer_sizes=(4,), max_iter=1, dtype=dtype, **ONE)):
        y = signal if est._loss == "mse" else (signal > 0).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            make_pipeline(scaler(), est).fit(X, y, **{f"{type(est).__name__.lower()}__groups":
                                                      groups})


def test_the_bounds_are_the_documented_ones():
    # root mean square above 10 (a column 10 ± 0.1 is not; 10.5 ± 0.1 is); span below 0.01
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, size=(100, 1))
    z -= z.mean()
    groups = np.zeros(100, dtype=int)
    for X, warns in ((9.9 + 0.1 * z, False), (10.5 + 0.1 * z, True),
                     (0.02 * z / np.ptp(z), False), (0.005 * z / np.ptp(z), True),
                     (1e-8 * z, False)):       # below float32's resolution at 1: constant
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            MultiTaskMLPClassifier(hidden_layer_sizes=(2,), max_iter=1, **ONE).fit(
                X, (z[:, 0] > 0).astype(int), groups=groups)
        assert len(scale_warnings(seen)) == warns, X[:2]


def test_digits_as_the_readme_scales_them_do_not_warn_and_raw_digits_do():
    X, y = load_digits(return_X_y=True)
    est = MultiTaskMLPClassifier(hidden_layer_sizes=(8,), max_iter=1, **ONE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X / 16.0, y)            # a pixel with one non-zero value: sd 0.0015, span 0.06
    with pytest.warns(DataScaleWarning, match=r"19 of the 64 feature columns of X .*column 59 "
                                               r"\(root mean square 12\.9\)"):
        est.fit(X, y)


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SKLEARN_SNIPPETS = [b for b in re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)
                    if "metacore.sklearn" in b]


def test_the_readme_has_scikit_learn_snippets():
    assert len(SKLEARN_SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SKLEARN_SNIPPETS)))
def test_the_readme_scikit_learn_snippets_raise_no_scale_warning(index, tmp_path):
    package = str(pathlib.Path(mc.__file__).resolve().parents[1])
    code = ("import warnings\nfrom metacore.sklearn import DataScaleWarning\n"
            "warnings.simplefilter('error', DataScaleWarning)\n" + SKLEARN_SNIPPETS[index])
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, PYTHONPATH=package))
    assert run.returncode == 0, run.stderr[-3000:]


# --- a fit that diverges -----------------------------------------------------------------------
def test_a_divergence_on_raw_data_names_the_scale_and_the_fix_not_clip_norm():
    _, _, Xr, yr, task = breast_cancer()
    est = MetaMLPRegressor(**ONE)              # MAML on the raw table: θ overflows at step 0
    with pytest.warns(DataScaleWarning), pytest.raises(mc.FitDivergedError) as info:
        est.fit(Xr, yr, groups=task)
    text = str(info.value)
    assert "the update of step 0 (learning_rate_init 0.001" in text
    assert "More likely, the data's scale is the cause (8 of the 29 feature columns" in text
    assert "'mean area' (root mean square 743)" in text
    assert ("make_pipeline(StandardScaler(), MetaMLPRegressor(...)) and pass normalize_y=True"
            in text)
    assert "clip_norm" not in text and info.value.step == 0
    assert not hasattr(est, "theta_")          # no half-fitted estimator predicting NaN


def test_a_divergence_on_standardised_data_blames_the_rate_alone():
    X, y, _, _, task = breast_cancer()
    X = StandardScaler().fit_transform(X)
    est = MultiTaskMLPClassifier(solver="sgd", learning_rate_init=1e30, **ONE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(mc.FitDivergedError) as info:
            est.fit(X, y, groups=task)
    text = str(info.value)
    assert text.endswith("Try a lower learning rate."), text
    assert "scale" not in text and "clip_norm" not in text


def test_a_refit_that_diverges_keeps_the_fitted_model():
    _, _, Xr, yr, task = breast_cancer()
    Xs = StandardScaler().fit_transform(Xr)
    est = MetaMLPRegressor(normalize_y=True, max_iter=20, **ONE).fit(Xs, yr, groups=task)
    before = est.predict(Xs)
    with pytest.warns(DataScaleWarning), pytest.raises(mc.FitDivergedError):
        est.set_params(normalize_y=False, max_iter=500).fit(Xr, yr, groups=task)
    np.testing.assert_array_equal(est.predict(Xs), before)    # its target scaling kept too
    assert "_scale_cause" not in est.__dict__


# --- normalize_y -------------------------------------------------------------------------------
def regression_tasks(n_outputs=1, seed=0):
    """4 related tasks (shared slopes, each moved a little) with a target in the hundreds."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(160, 3))
    g = np.repeat(np.arange(4), 40)
    w = rng.normal(size=(1, 3, n_outputs)) + 0.2 * rng.normal(size=(4, 3, n_outputs))
    y = 900.0 + 300.0 * (np.einsum("nd,ndk->nk", X, w[g]) + 0.3 * np.sin(X[:, :1]))
    return X, (y[:, 0] if n_outputs == 1 else y), g


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_normalize_y_is_a_target_standard_scaler(n_outputs):
    X, y, g = regression_tasks(n_outputs)
    kw = dict(hidden_layer_sizes=(8,), max_iter=300, dtype="float64", **ONE)
    est = MultiTaskMLPRegressor(normalize_y=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X, y, groups=g)
    ttr = TransformedTargetRegressor(MultiTaskMLPRegressor(**kw), transformer=StandardScaler())
    ttr.fit(X, y, groups=g)
    np.testing.assert_allclose(est.predict(X), ttr.predict(X), rtol=1e-9)
    assert est.predict(X).shape == y.shape


@pytest.mark.parametrize("cls, kw, measured", [
    (MultiTaskMLPRegressor, dict(max_iter=300), (0.948, -1.56)),
    (MetaMLPRegressor, dict(max_iter=300, learning_rate_init=0.01), (0.941, 0.545))])
def test_normalize_y_fits_a_target_in_the_hundreds_that_raw_targets_do_not(cls, kw, measured):
    X, y, g = regression_tasks()
    kw = dict(kw, hidden_layer_sizes=(8,), dtype="float64", **ONE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = cls(normalize_y=True, **kw).fit(X, y, groups=g).score(X, y, groups=g)
    with pytest.warns(DataScaleWarning, match=r"the target is far from unit scale: y \(root mean "
                                               r"square 1\.05e\+03\)"):
        raw = cls(**kw).fit(X, y, groups=g).score(X, y, groups=g)
    assert good > 0.9 and raw < 0.6, (good, raw)    # measured: (R² normalised, R² raw)


@pytest.mark.parametrize("learner", ["maml", "reptile", "imaml"])
def test_normalize_y_reaches_adapt_adapt_predict_and_the_few_shot_score(learner):
    X, y, g = regression_tasks()
    kw = dict(hidden_layer_sizes=(8,), learner=learner, max_iter=100, dtype="float64", **ONE)
    est = MetaMLPRegressor(normalize_y=True, **kw).fit(X, y, groups=g)
    mean, sd = est.__dict__["_target_scaling"]        # the training targets' mean and sd
    np.testing.assert_allclose([mean[0], sd[0]], [y.mean(), y.std()], rtol=1e-12)
    by_hand = MetaMLPRegressor(**kw).fit(X, (y - mean) / sd, groups=g)
    s, q = slice(0, 20), slice(20, 40)
    expect = by_hand.adapt_predict(X[s], (y[s] - mean) / sd, X[q]) * sd + mean
    np.testing.assert_array_equal(est.adapt_predict(X[s], y[s], X[q]), expect)
    np.testing.assert_array_equal(est.adapt(X[s], y[s]).predict(X[q]), expect)
    np.testing.assert_array_equal(est.predict(X[q]), by_hand.predict(X[q]) * sd + mean)
    # the few-shot score (same seed: the same support/query splits), in y's units
    np.testing.assert_allclose(est.score(X, y, groups=g), by_hand.score(X, (y - mean) / sd,
                                                                         groups=g), rtol=1e-12)


def test_normalize_y_belongs_to_the_regressors_and_round_trips():
    assert MultiTaskMLPRegressor().get_params()["normalize_y"] is False
    assert MetaMLPRegressor(normalize_y=True).get_params()["normalize_y"] is True
    assert "normalize_y" not in MultiTaskMLPClassifier().get_params()
    assert "normalize_y" not in MetaMLPClassifier().get_params()
    assert clone(MultiTaskMLPRegressor(normalize_y=True)).normalize_y is True
    X, y, g = regression_tasks()
    est = MultiTaskMLPRegressor(normalize_y=True, max_iter=20, **ONE).fit(X, y, groups=g)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    with pytest.raises(TypeError, match="normalize_y must be True or False, got str 'yes'"):
        MultiTaskMLPRegressor(normalize_y="yes").fit(X, y, groups=g)


def test_an_estimator_pickled_before_normalize_y_still_predicts():
    X, y, g = regression_tasks()
    est = MultiTaskMLPRegressor(max_iter=20, **ONE).fit(X / 1.0, (y - y.mean()) / y.std(),
                                                        groups=g)
    state = est.__getstate__()
    state.pop("_target_scaling")
    state.pop("normalize_y")                   # neither existed then
    old = MultiTaskMLPRegressor.__new__(MultiTaskMLPRegressor)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.predict(X), est.predict(X))


def test_a_warm_start_keeps_the_first_fits_target_scaling_and_refuses_a_switch():
    X, y, g = regression_tasks()
    est = MultiTaskMLPRegressor(normalize_y=True, warm_start=True, max_iter=50, dtype="float64",
                                **ONE).fit(X, y, groups=g)
    first = est.__dict__["_target_scaling"]
    est.fit(X, y + 1000.0, groups=g)           # θ continues in the first fit's units
    assert est.__dict__["_target_scaling"] is first and est.n_iter_ == 100
    before = est.predict(X)
    with pytest.raises(ValueError, match="warm_start=True: normalize_y=False, but the previous "
                                         "fit standardised y"):
        est.set_params(normalize_y=False).fit(X, (y - y.mean()) / y.std(), groups=g)
    np.testing.assert_array_equal(est.predict(X), before)
