"""Array inputs the other tests never generated: byte order, layout, memory kind, element type.

For every public entry point that takes arrays, an input in any layout (big-endian, strided,
negative strides, Fortran order, read-only, np.memmap) gives exactly the result of the plain
float64 C-contiguous array; an object that keeps an array keeps its own copy (the caller's
array is neither frozen nor aliased); a refusal is a TypeError/ValueError naming the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacore as mc
from layouts import LAYOUTS, layout
from metacore import _core

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


def _small(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12, 3))
    y = (rng.random(12) > 0.5).astype(float)
    model = mc.Logistic(3)
    ts = mc.TaskSet.from_arrays([X[:6], X[6:]], [y[:6], y[6:]], n_support=3)
    return model, ts, X, y


def _writable_base(a):
    """The float64 array ``a`` views, through which the caller may write later (``a`` itself
    when it views raw bytes, as the unaligned layout does)."""
    base = a.base
    return base if isinstance(base, np.ndarray) and base.dtype == a.dtype else a


# --- an object keeps its own copy: the caller's array is neither frozen nor aliased -------------
@settings(max_examples=30, **SETTINGS)
@given(how=st.sampled_from(LAYOUTS), alpha=st.lists(st.floats(0.01, 100.0), min_size=2,
                                                     max_size=2))
def test_fixed_weights_never_freeze_nor_alias_the_callers_array(tmp_path_factory, how, alpha):
    tmp = tmp_path_factory.mktemp("fixed")
    a = layout(np.array(alpha), how, tmp)
    writeable = a.flags.writeable
    w = mc.weighting.Fixed(a)
    assert a.flags.writeable == writeable          # was made read-only (the caller's array)
    np.testing.assert_array_equal(w.alpha, np.array(alpha))
    assert not w.alpha.flags.writeable
    with pytest.raises(ValueError):
        w.alpha.flags.writeable = True
    if a.flags.writeable:                           # a later write by the caller changes nothing
        base = _writable_base(a)
        base[...] = -7.0
        np.testing.assert_array_equal(w.alpha, np.array(alpha))
    model, ts, _, _ = _small()
    obj = mc.Objective(model, ts)
    want = mc.fit(obj, model.init(seed=0), steps=2, progress=False,
                  weighting=mc.weighting.Fixed(np.array(alpha))).theta
    got = mc.fit(obj, model.init(seed=0), steps=2, progress=False, weighting=w).theta
    np.testing.assert_array_equal(got, want)


def test_fixed_weights_from_a_view_keep_the_values_that_were_checked():
    """The view of a writeable buffer was kept: writing the buffer made α negative after the
    non-negativity check (and Fixed had set the caller's array read-only)."""
    buf = np.array([1.0, 2.0, 3.0])
    w = mc.weighting.Fixed(buf[:2])
    buf[0] = -7.0
    np.testing.assert_array_equal(w.alpha, [1.0, 2.0])
    plain = np.array([1.0, 2.0])
    mc.weighting.Fixed(plain)
    plain[0] = 5.0                                   # still the caller's, still writeable


@settings(max_examples=15, **SETTINGS)
@given(how=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_episode_source_keeps_its_own_pool(tmp_path_factory, how, seed):
    tmp = tmp_path_factory.mktemp("pool")
    X = np.random.default_rng(seed).normal(size=(24, 3))
    offsets = np.arange(0, 25, 6)
    a = layout(X, how, tmp)
    writeable = a.flags.writeable
    src = mc.tasks.EpisodeSource(a, offsets, n_way=2, k_shot=2, q_query=1)
    want = mc.tasks.EpisodeSource(X, offsets, n_way=2, k_shot=2, q_query=1).sample(3, seed=1,
                                                                                    dtype=np.float64)
    assert a.flags.writeable == writeable
    assert not src.X.flags.writeable
    if a.flags.writeable:
        base = _writable_base(a)
        base[...] = np.nan                           # was drawn into the episodes (or refused)
    got = src.sample(3, seed=1, dtype=np.float64)
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.y, want.y)


def test_class_images_source_shares_its_read_only_pool():
    """ClassImages.source takes the images' own read-only pool without a copy (Omniglot's is
    hundreds of MiB), and the pool stays read-only."""
    X = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    images = mc.data.class_images.ClassImages(X, np.repeat(np.arange(2), 4), ["a", "b"],
                                              ["g", "g"])
    src = images.source(n_way=2, k_shot=2, q_query=1)
    assert np.shares_memory(src.X, images.X) and not src.X.flags.writeable


# --- scikit-learn estimators: masks refused, the argument named, support rows copied ------------
def _sk_data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 3))
    return X, X @ np.array([1.0, 2.0, 3.0]), np.arange(40) % 4


@pytest.fixture(scope="module")
def meta_regressor():
    from metacore.sklearn import MetaMLPRegressor
    X, y, g = _sk_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MetaMLPRegressor((4,), max_iter=5, random_state=0).fit(X, y, groups=g)


def _masked(a, data):
    mask = np.zeros(np.shape(a), dtype=bool)
    mask.flat[data.draw(st.integers(0, mask.size - 1))] = data.draw(st.booleans())
    return np.ma.masked_array(a, mask=mask)


@settings(max_examples=20, **SETTINGS)
@given(which=st.sampled_from(["X", "y", "groups"]), data=st.data())
def test_estimators_refuse_masked_arrays_naming_them(which, data):
    """np.asarray (and scikit-learn's check_array) drop a mask and train on the values under
    it: a masked entry of 1e6 was fitted as a value. TaskSet and every core entry point refuse
    masked arrays; the estimators now do too, naming the argument."""
    from metacore.sklearn import MultiTaskMLPRegressor
    X, y, g = _sk_data()
    args = {"X": X, "y": y, "groups": g}
    args[which] = _masked(args[which], data)
    with pytest.raises(TypeError, match=rf"^{which} must not be a masked array"):
        MultiTaskMLPRegressor((4,), max_iter=2, random_state=0).fit(args["X"], args["y"],
                                                                     groups=args["groups"])


@settings(max_examples=20, **SETTINGS)
@given(which=st.sampled_from(["predict", "X_support", "y_support", "X_query"]), data=st.data())
def test_meta_estimator_refuses_masked_rows_naming_them(meta_regressor, which, data):
    X, y, _ = _sk_data()
    Xs, ys, Xq = X[:10], y[:10], X[10:15]
    name = "X" if which == "predict" else which
    with pytest.raises(TypeError, match=rf"^{name} must not be a masked array"):
        if which == "predict":
            meta_regressor.predict(_masked(Xq, data))
        elif which == "X_support":
            meta_regressor.adapt(_masked(Xs, data), ys)
        elif which == "y_support":
            meta_regressor.adapt(Xs, _masked(ys, data))
        else:
            meta_regressor.adapt_predict(Xs, ys, _masked(Xq, data))


BAD_ROWS = {"nan": lambda X: np.where(np.arange(X.size).reshape(X.shape) == 1, np.nan, X),
            "width": lambda X: X[:, :2], "one_d": lambda X: X[0], "empty": lambda X: X[:0],
            "complex": lambda X: X.astype(complex), "text": lambda X: X.astype(str).astype(object)
            * 0 + "a"}


@settings(max_examples=30, **SETTINGS)
@given(bad=st.sampled_from(sorted(BAD_ROWS)), which=st.sampled_from(["X_support", "X_query"]),
       call=st.sampled_from(["adapt", "adapt_predict"]))
def test_meta_estimator_errors_name_the_support_or_query_rows(meta_regressor, bad, which, call):
    """scikit-learn's messages said "Input X contains NaN" / "X has 2 features" for the
    support and query rows of adapt and adapt_predict, whose arguments are X_support/X_query."""
    if call == "adapt" and which == "X_query":
        which = "X_support"
    X, y, _ = _sk_data()
    Xs, ys, Xq = X[:10], y[:10], X[10:15]
    if which == "X_support":
        Xs = BAD_ROWS[bad](Xs)
        ys = ys[:max(1, Xs.shape[0])] if Xs.ndim == 2 else ys
    else:
        Xq = BAD_ROWS[bad](Xq)
    with pytest.raises((ValueError, TypeError)) as info:
        if call == "adapt":
            meta_regressor.adapt(Xs, ys)
        else:
            meta_regressor.adapt_predict(Xs, ys, Xq)
    text = str(info.value)
    assert which in text
    assert "Input X " not in text and not text.startswith("X has")


@settings(max_examples=10, **SETTINGS)
@given(how=st.sampled_from(["plain", "view", "memmap"]), seed=st.integers(0, 2**16))
def test_adapted_episode_head_keeps_its_own_support_rows(tmp_path_factory, how, seed):
    """A ProtoNet estimator's adapt kept X_support as given (validate_data returns the caller's
    array when it already has the estimator's dtype, float64 here): a later write to it changed
    the adapted estimator's predictions."""
    from metacore.sklearn import MetaMLPClassifier
    tmp = tmp_path_factory.mktemp("support")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 4))
    y = np.arange(60) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MetaMLPClassifier((8,), n_way=2, k_shot=2, learner="protonet", max_iter=3,
                                random_state=0, dtype="float64").fit(X, y)
    Xs = layout(X[:4], how, tmp)
    ys = np.array([0, 1, 0, 1])
    new = est.adapt(Xs, ys)
    want = new.predict_proba(X[4:10])
    base = _writable_base(Xs)
    base[...] = 1e3
    np.testing.assert_array_equal(new.predict_proba(X[4:10]), want)


# --- object arrays: refused, saying which entry is no number or how to convert ------------------
def _object_calls():
    model, ts, X, y = _small()
    theta = model.init(seed=0)
    obj = mc.Objective(model, ts)
    return {
        "Xs[0]": (X, lambda v: mc.TaskSet.from_arrays([v], [y])),
        "X_support": (X, lambda v: mc.adapt(model, theta, v, y, steps=1, lr=0.1)),
        "X": (X, lambda v: model.predict(theta, v)),
        "theta": (theta, lambda v: obj.value_and_grad(v)),
        "alpha": (np.array([1.0, 2.0]), lambda v: mc.weighting.Fixed(v)),
        "start": (theta, lambda v: mc.fit(obj, v, steps=1, progress=False)),
    }


@settings(max_examples=40, **SETTINGS)
@given(name=st.sampled_from(["Xs[0]", "X_support", "X", "theta", "alpha", "start"]),
       entry=st.sampled_from(["none", "pd_na", "text", "numbers"]), data=st.data())
def test_object_arrays_are_refused_naming_what_they_hold(name, entry, data):
    """An object array (what np.asarray makes of a DataFrame with nullable Float64 columns) was
    refused with "got dtype object" alone, though every entry may be a number; the message now
    names the first entry that is none (a missing value, a string) or says how to convert."""
    pd = pytest.importorskip("pandas")
    good, call = _object_calls()[name]
    v = good.astype(object)
    at = data.draw(st.integers(0, v.size - 1))
    index = tuple(int(i) for i in np.unravel_index(at, v.shape))
    bad = {"none": None, "pd_na": pd.NA, "text": "1.5", "numbers": None}[entry]
    if entry != "numbers":
        v.flat[at] = bad
    with pytest.raises(TypeError) as info:
        call(v)
    text = str(info.value)
    assert text.startswith(f"{name} must")
    if entry in ("none", "pd_na"):
        assert f"a missing value, {bad!r}, at index {index}" in text
    elif entry == "text":
        assert f"str '1.5' at index {index}" in text
    else:
        assert f"np.asarray({name}, dtype=float)" in text
        np.testing.assert_array_equal(np.asarray(v, dtype=float), good)


def test_a_nullable_float_dataframe_is_refused_with_how_to_convert():
    pd = pytest.importorskip("pandas")
    model, _, X, y = _small()
    frame = pd.DataFrame(X).astype("Float64")
    with pytest.raises(TypeError, match=r"nullable Float64/Int64 columns: convert with "
                                        r"np\.asarray\(X, dtype=float\)"):
        model.predict(model.init(seed=0), frame)
    np.testing.assert_array_equal(model.predict(model.init(seed=0), np.asarray(frame, dtype=float)),
                                  model.predict(model.init(seed=0), X))


# --- Standardizer: the shared checker, not np.asarray(X, dtype=float64) ------------------------
STANDARDIZER_BAD = {
    "nan": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 1, np.nan, X), ValueError,
            "X must be finite"),
    "inf": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 1, np.inf, X), ValueError,
            "X must be finite"),
    "complex": (lambda X: X + 1j, TypeError, "X must hold real numbers"),
    "masked": (lambda X: np.ma.masked_array(X, mask=np.eye(*X.shape, dtype=bool)), TypeError,
               "X must not be a masked array"),
    "none": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 1, None, X.astype(object)),
             TypeError, "a missing value, None"),
    "text": (lambda X: X.astype(str), TypeError, "X must hold real numbers"),
}


@settings(max_examples=30, **SETTINGS)
@given(bad=st.sampled_from(sorted(STANDARDIZER_BAD)), method=st.sampled_from(["fit", "transform"]),
       seed=st.integers(0, 2**16))
def test_standardizer_refuses_what_it_would_have_mangled(bad, method, seed):
    """Standardizer.fit/transform took np.asarray(X, dtype=float64): a complex part was dropped
    (a warning only), a mask ignored (the value under it fitted), strings parsed, and NaN or None
    reported as "its spread exceeds the float64 range" (transform returned NaN)."""
    from metacore.data.tabular import Standardizer
    X = np.random.default_rng(seed).normal(size=(5, 3))
    make, kind, text = STANDARDIZER_BAD[bad]
    scaler = Standardizer()
    if method == "transform":
        scaler.fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a ComplexWarning is no refusal
        with pytest.raises(kind, match=text):
            getattr(scaler, method)(make(X))


@settings(max_examples=20, **SETTINGS)
@given(how=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_standardizer_gives_the_same_numbers_for_any_layout(tmp_path_factory, how, seed):
    from metacore.data.tabular import Standardizer
    tmp = tmp_path_factory.mktemp("std")
    X = np.random.default_rng(seed).normal(size=(6, 3)) * 10.0
    want = Standardizer().fit(X)
    got = Standardizer().fit(layout(X, how, tmp))
    np.testing.assert_array_equal(got.mean_, want.mean_)
    np.testing.assert_array_equal(got.scale_, want.scale_)
    np.testing.assert_array_equal(got.transform(layout(X, how, tmp)), want.transform(X))


# --- every entry point: any layout gives exactly the plain array's result ------------------------
def _entry_points():
    model, ts, X, y = _small()
    theta = model.init(seed=0)
    obj = mc.Objective(model, ts, l2=1e-3)
    maml = mc.MAML(model, inner_lr=0.1)
    rates = np.full(model.n_params, 0.1)
    groups = np.arange(12) % 2
    return {
        "value_and_grad θ": (theta, lambda v: obj.value_and_grad(v)),
        "task_losses_and_grads θ": (theta, lambda v: obj.task_losses_and_grads(v)),
        "hvp v": (theta, lambda v: (obj.hvp(theta, v),)),
        "fit start": (theta, lambda v: (mc.fit(obj, v, steps=2, progress=False).theta,)),
        "predict θ": (theta, lambda v: (model.predict(v, X),)),
        "predict X": (X, lambda v: (model.predict(theta, v),)),
        "adapt θ": (theta, lambda v: (mc.adapt(model, v, X, y, steps=2, lr=0.1),)),
        "adapt X_support": (X, lambda v: (mc.adapt(model, theta, v, y, steps=2, lr=0.1),)),
        "adapt y_support": (y, lambda v: (mc.adapt(model, theta, X, v, steps=2, lr=0.1),)),
        "adapt lr": (rates, lambda v: (mc.adapt(model, theta, X, y, steps=2, lr=v),)),
        "adapt_predict X_query": (X, lambda v: (mc.adapt_predict(model, theta, X, y, v, steps=2,
                                                                 lr=0.1),)),
        "learner.adapt X_support": (X, lambda v: (maml.adapt(theta, v, y, steps=2),)),
        "meta_value_and_grad θ": (theta, lambda v: maml.meta_value_and_grad(v, ts)),
        "from_arrays Xs": (X, lambda v: (mc.TaskSet.from_arrays([v], [y], n_support=3).X,)),
        "from_arrays ys": (y, lambda v: (mc.TaskSet.from_arrays([X], [v], n_support=3).y,)),
        "from_groups X": (X, lambda v: (mc.TaskSet.from_groups(v, y, groups).X,)),
        "Objective weights": (np.array([1.0, 3.0]),
                              lambda v: (mc.Objective(model, ts, weights=v).value(theta),)),
        "evaluate θ": (theta, lambda v: tuple(np.array([[r["loss"], r.get("accuracy", 0.0)]
                                                         for r in mc.evaluate(
                                                             model, v, ts, steps=(0, 1), lr=0.1,
                                                             progress=False).summary()]).T)),
    }


@settings(max_examples=60, **SETTINGS)
@given(call=st.sampled_from(sorted(_entry_points())), how=st.sampled_from(LAYOUTS))
def test_every_layout_gives_the_plain_arrays_result(tmp_path_factory, call, how):
    tmp = tmp_path_factory.mktemp("layout")
    good, f = _entry_points()[call]
    v = layout(good, how, tmp)
    before = np.array(v, copy=True)
    got, want = f(v), f(np.ascontiguousarray(good, dtype=np.float64))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(v), before)       # the caller's values untouched


@pytest.mark.parametrize("call", sorted(_entry_points()))
def test_an_unaligned_array_gives_the_aligned_arrays_result(tmp_path, call):
    """Every entry point, not a sample: an unaligned buffer passed the layout checks of the
    fast paths and reached the core's kernels as a misaligned pointer (undefined behaviour)."""
    good, f = _entry_points()[call]
    v = layout(good, "unaligned", tmp_path)
    for a, b in zip(f(v), f(np.ascontiguousarray(good, dtype=np.float64))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_core_refuses_an_unaligned_array_naming_it(tmp_path):
    """The bindings are the last gate: a misaligned buffer is refused there, naming the
    argument, also where it cannot be copied (θ updated in place)."""
    model, ts, X, y = _small()
    theta = layout(model.init(seed=0), "unaligned", tmp_path)
    opt = mc.optim.SGD(lr=0.1)
    with pytest.raises(ValueError, match=r"theta must be aligned"):
        opt.update(theta, np.zeros(model.n_params), opt.init_state(theta), 0)
    with pytest.raises(ValueError, match=r"theta must be aligned"):
        _core.adapt(model.core_net(), theta, np.ascontiguousarray(X), np.ascontiguousarray(y),
                    2, 0.1, None, False)


def test_an_in_place_update_refuses_a_masked_theta():
    theta = np.ma.masked_array(np.ones(3), mask=[False, True, False])
    opt = mc.optim.SGD(lr=0.1)
    with pytest.raises(TypeError, match="theta must not be a masked array"):
        opt.update(theta, np.ones(3), opt.init_state(np.ones(3)), 0)
    np.testing.assert_array_equal(theta.data, np.ones(3))


DATA_CALLS = ("predict X", "adapt X_support", "adapt_predict X_query", "learner.adapt X_support",
              "from_arrays Xs", "from_groups X", "hvp v")
CONVERSIONS = {                  # another dtype -> the float64 array it stands for
    "big_endian_f4": (lambda a: a.astype(">f4"), lambda a: a.astype(np.float32)),
    "float16": (lambda a: a.astype(np.float16), lambda a: a.astype(np.float16).astype(np.float64)),
    "big_endian_i8": (lambda a: np.round(a * 4).astype(">i8"), lambda a: np.round(a * 4)),
    "int8": (lambda a: np.round(a * 4).astype(np.int8), lambda a: np.round(a * 4)),
    "uint64": (lambda a: np.round(np.abs(a) * 4).astype(np.uint64),
               lambda a: np.round(np.abs(a) * 4)),
    "bool": (lambda a: a > 0, lambda a: (a > 0).astype(np.float64)),
    "list": (lambda a: a.tolist(), lambda a: a),
}


@settings(max_examples=60, **SETTINGS)
@given(call=st.sampled_from(DATA_CALLS), conversion=st.sampled_from(sorted(CONVERSIONS)))
def test_other_dtypes_give_the_result_of_their_values(call, conversion):
    """Data in another dtype (big-endian float32, float16, big-endian or small ints, uint64,
    bool, a list) gives exactly the result of the array of its values."""
    good, f = _entry_points()[call]
    make, same = CONVERSIONS[conversion]
    got, want = f(make(good)), f(same(good))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@settings(max_examples=10, **SETTINGS)
@given(data=st.data())
def test_episode_source_refuses_masked_class_offsets(data):
    X = np.random.default_rng(0).normal(size=(24, 3))
    offsets = np.arange(0, 25, 6)
    with pytest.raises(TypeError, match="^class_offsets must not be a masked array"):
        mc.tasks.EpisodeSource(X, _masked(offsets, data), n_way=2, k_shot=2, q_query=1)
