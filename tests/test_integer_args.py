"""One rule for integer arguments, applied by one checker (metacore._validation.is_integer /
integer) in every public function that takes a count, an index, a size or a seed: a Python int,
a NumPy integer scalar or a 0-d integer array (``np.array(3)`` counts as 3, as NumPy's own
indexing takes it) is accepted and gives exactly what the int gives; a bool, a float (3.0
included), a string or an array of one or more dimensions is a TypeError naming the argument.
(TaskSet.subset took np.array(1) while ts[np.array(1)], fit(steps=np.array(3)) and every other
count refused it.)"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import _validation

K = 2      # the value every call below is given, in each form

ACCEPTED = {"int": K, "np.int8": np.int8(K), "np.int64": np.int64(K), "np.uint64": np.uint64(K),
            "0-d int64": np.array(K), "0-d >i4": np.array(K, dtype=">i4"),
            "0-d uint8": np.array(K, dtype=np.uint8), "0-d object int": np.array(K, dtype=object)}
REFUSED = {"True": True, "np.True_": np.True_, "0-d bool": np.array(True), "float": float(K),
           "np.float64": np.float64(K), "0-d float": np.array(float(K)), "str": str(K),
           "1-d [K]": np.array([K]), "list [K]": [K], "complex": complex(K, 0)}


def _tasks():
    return mc.tasks.sinusoid(4, k_support=3, k_query=3, seed=0, dtype=np.float64)


MODEL = mc.MLP([1, 3, 1])
THETA = MODEL.init(seed=0, dtype=np.float64)
TS = _tasks()
X, Y = TS.support(0)


def _fit(**kw):
    args = dict(steps=2, progress=False)
    args.update(kw)
    return mc.fit(mc.Objective(MODEL, TS), THETA, **args).theta


def _sklearn(**kw):
    from metacore.sklearn import MultiTaskMLPRegressor
    rng = np.random.default_rng(0)
    Xs, ys = rng.normal(size=(12, 2)), rng.normal(size=12)
    est = MultiTaskMLPRegressor(hidden_layer_sizes=3, max_iter=3, random_state=0)
    return est.set_params(**kw).fit(Xs, ys, groups=np.repeat([0, 1], 6)).theta_


def _frame(**kw):
    table = {"task": ["a"] * 4 + ["b"] * 4, "x": np.arange(8.0), "y": np.arange(8.0) ** 2}
    return mc.tasks.from_dataframe(table, task="task", target="y", **kw).n_support


# label -> (the call given v, the argument's name in a refusal, whether a 1-d array or list is
# another valid argument there rather than a refused one)
CALLS = {
    "ts[i]": (lambda v: TS[v][0], "task index", False),
    "ts.support(i)": (lambda v: TS.support(v)[1], "task index", False),
    "ts.query(i)": (lambda v: TS.query(v)[1], "task index", False),
    "ts.with_support": (lambda v: TS.with_support(v).n_support, "n_support", True),
    "ts.split_tasks seed": (lambda v: TS.split_tasks(seed=v)[1].task_ids, "seed", False),
    "sinusoid n_tasks": (lambda v: mc.tasks.sinusoid(v, seed=1).X, "n_tasks", False),
    "sinusoid k_support": (lambda v: mc.tasks.sinusoid(3, k_support=v).n_support, "k_support",
                           False),
    "sinusoid seed": (lambda v: mc.tasks.sinusoid(3, seed=v).X, "seed", False),
    "MLP layer size": (lambda v: mc.MLP([1, v, 1]).n_params, r"layer_sizes\[1\]", False),
    "init seed": (lambda v: MODEL.init(seed=v), "seed", False),
    "MAML inner_steps": (lambda v: mc.MAML(MODEL, inner_steps=v).inner_steps, "inner_steps",
                         False),
    "MetaObjective meta_batch": (lambda v: mc.MetaObjective(mc.MAML(MODEL), TS,
                                                            meta_batch=v).meta_batch,
                                 "meta_batch", False),
    "adapt steps": (lambda v: mc.adapt(MODEL, THETA, X, Y, steps=v), "steps", False),
    "evaluate steps": (lambda v: mc.evaluate(MODEL, THETA, TS, steps=(0, v),
                                             progress=False).losses, r"steps\[1\]", False),
    "fit steps": (lambda v: _fit(steps=v), "steps", False),
    "fit seed": (lambda v: _fit(seed=v, batch_tasks=2), "seed", False),
    "fit batch_tasks": (lambda v: _fit(batch_tasks=v), "batch_tasks", False),
    "fit early_stopping": (lambda v: _fit(early_stopping=v, eval_every=1), "early_stopping",
                           False),
    "Objective n_threads": (lambda v: mc.Objective(MODEL, TS, n_threads=v).value(THETA),
                            "n_threads", False),
    "from_dataframe support": (lambda v: _frame(support=v), "support", False),   # or fraction
    "sklearn max_iter": (lambda v: _sklearn(max_iter=v), "max_iter", False),
    "sklearn hidden_layer_sizes": (lambda v: _sklearn(hidden_layer_sizes=v),
                                   "hidden_layer_sizes", True),
}


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b)
        assert np.asarray(a).dtype == np.asarray(b).dtype
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("label", list(CALLS))
@pytest.mark.parametrize("form", list(ACCEPTED))
def test_an_integer_in_any_form_gives_what_the_int_gives(label, form):
    call = CALLS[label][0]
    _same(call(ACCEPTED[form]), call(K))


@pytest.mark.parametrize("label", list(CALLS))
@pytest.mark.parametrize("form", list(REFUSED))
def test_anything_else_is_a_type_error_naming_the_argument(label, form):
    call, name, sequence_ok = CALLS[label]
    if sequence_ok and form in ("1-d [K]", "list [K]"):
        return             # a per-task / per-layer sequence is another valid argument there
    if label == "from_dataframe support" and form in ("float", "np.float64", "0-d float"):
        # a real is a fraction of the rows there: 2.0 is out of (0, 1), and named as a count
        with pytest.raises(ValueError, match=r"^support must be a fraction in \(0, 1\) or an "
                                             r"integer row count, got .*the integer 2\)$"):
            call(REFUSED[form])
        return
    with pytest.raises(TypeError, match=name):
        call(REFUSED[form])


def test_subset_takes_a_0d_array_as_the_one_task_an_int_selects():
    for v in ACCEPTED.values():
        sub = TS.subset(v)
        assert sub.task_ids.tolist() == [K] == TS.subset([K]).task_ids.tolist()
        np.testing.assert_array_equal(sub.X, TS.subset(K).X)


@pytest.mark.parametrize("value,expected", [
    (3, True), (np.int16(-3), True), (np.array(-3), True), (np.array(2**63, dtype=np.uint64), True),
    (True, False), (np.bool_(False), False), (np.array(True), False), (3.0, False),
    (np.array(3.0), False), (np.array([3]), False), (np.zeros((1, 1), int), False), ("3", False),
    (None, False)])
def test_is_integer_is_the_one_rule(value, expected):
    assert _validation.is_integer(value) is expected


def test_integer_returns_a_python_int_and_keeps_its_bounds():
    assert type(_validation.integer("n", np.array(5, dtype=np.uint16))) is int
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        _validation.integer("n", np.array(0), minimum=1)
    with pytest.raises(ValueError, match=r"^n must be <= 9223372036854775807"):
        _validation.integer("n", np.array(2**63, dtype=np.uint64))
    with pytest.raises(TypeError, match=r"^n must be an integer, got ndarray array\(\[3\]\)$"):
        _validation.integer("n", np.array([3]))
