"""Generated bad input: every public call, given malformed arguments, either raises a
ValueError/TypeError whose message names the argument, or returns the correct result.

Each case starts from a valid call and replaces one argument by a mutation of its valid value:
wrong shapes, ranks and lengths, dtypes (object, string, bytes, complex, bool, int8, float16),
NaN/Inf, empty and huge sizes (zero-stride views of 10^12 rows), negative and huge counts,
non-contiguous, Fortran-ordered and read-only views, lists, wrong label ranges, θ of the wrong size.

- A mutation that makes the input invalid must raise (``must_fail``).
- An accepted input must give the result of the NumPy reference (or, for constructors, the packed
  data of the canonical conversion), so "no error" can never hide a wrong answer.
- Huge inputs may instead raise MemoryError, again naming the argument.

Hypothesis runs derandomized (fixed cases, no database). ``test_a_share_runs_in_a_child_process``
reruns every generator in a child interpreter with other seeds, so a crash (segfault, abort) is
seen as a crash and not as a dead test runner. ``python tests/test_bad_input.py [seed] [n]`` is that
child. The case counter is printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed as hyp_seed, settings, strategies as st

import metacore as mc
from layouts import layout
from metacore import reference as ref

CASES = {"n": 0}                # generated cases run in this process (reported by conftest.py)
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 2e-4}
HUGE = 10**12                   # rows of a zero-stride "huge" view: terabytes once copied

# --- mutations of one argument ------------------------------------------------------------------
# Value-keeping mutations give the same numbers in another container/layout/dtype; the bad ones
# break the value (non-finite, non-numeric) or the shape.
KEEP = ("list", "noncontig", "fortran", "readonly", "broadcast", "other_float")
CAST = ("int8", "int64", "bool", "float16")             # numbers, but not float32/float64
NON_NUMERIC = ("object", "object_none", "string", "bytes", "complex", "none", "text", "dict",
               "ragged", "masked", "timedelta", "datetime")
NON_FINITE = ("nan", "inf", "-inf")
SHAPE = ("short", "long", "empty", "ndim_up", "ndim_down", "scalar", "huge")
ARRAY_MUTATIONS = KEEP + CAST + NON_NUMERIC + NON_FINITE + SHAPE


def mutate(a: np.ndarray, how: str, data):
    """One mutation of the valid array ``a`` (draws positions from ``data``)."""
    a = np.asarray(a)
    if how == "list":
        return a.tolist()
    if how == "noncontig":
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], dtype=a.dtype) if a.ndim else a
        if a.ndim == 0:
            return a
        big[::2] = a
        return big[::2]
    if how in ("fortran", "readonly"):
        return layout(a, how)
    if how == "broadcast":
        return np.broadcast_to(a[:1], a.shape) if a.ndim and a.shape[0] else a
    if how == "other_float":
        return a.astype(np.float32 if a.dtype == np.float64 else np.float64)
    if how in ("int8", "int64", "float16"):
        with np.errstate(all="ignore"):
            return np.clip(np.round(a), -100, 100).astype(how)
    if how == "bool":
        return a != 0
    if how == "object":
        return a.astype(object)
    if how == "object_none":
        b = a.astype(object)
        if b.size:
            b.flat[data.draw(st.integers(0, b.size - 1))] = None
        return b
    if how == "masked":         # its mask would be ignored: refused whatever it masks
        mask = np.zeros(a.shape, dtype=bool)
        if a.size:
            mask.flat[data.draw(st.integers(0, a.size - 1))] = data.draw(st.booleans())
        return np.ma.masked_array(a, mask=mask)
    if how == "timedelta":
        return np.zeros(a.shape, dtype="m8[s]")
    if how == "datetime":
        return np.zeros(a.shape, dtype="M8[D]")
    if how == "string":
        return a.astype(str)
    if how == "bytes":
        return a.astype("S8")
    if how == "complex":
        return a.astype(np.complex128)
    if how == "none":
        return None
    if how == "text":
        return "not an array"
    if how == "dict":
        return {"a": 1}
    if how == "ragged":
        rows = [list(np.atleast_1d(r)) for r in a] if a.ndim else [1.0]
        return rows + [rows[0][:-1] if rows and len(rows[0]) > 1 else [1.0, 2.0]]
    if how in NON_FINITE:
        b = np.array(a, dtype=np.float64 if a.dtype.kind != "f" else a.dtype)
        if b.size == 0:
            return np.full((1,) + a.shape[1:], float(how))
        b.flat[data.draw(st.integers(0, b.size - 1))] = float(how)
        return b
    if how == "short":
        return a[:-1]
    if how == "long":
        return np.concatenate([a, a[:1]]) if a.ndim and a.shape[0] else np.ones(1)
    if how == "empty":
        return a[:0] if a.ndim else np.zeros(0)
    if how == "ndim_up":
        return a[None] if data.draw(st.booleans()) else a[..., None]
    if how == "ndim_down":
        return a.reshape(-1)[:1].reshape(()) if a.ndim <= 1 else a.reshape(-1)
    if how == "scalar":
        return np.float64(1.5)
    if how == "huge":
        return np.broadcast_to(np.ones((1,) + a.shape[1:], dtype=a.dtype), (HUGE,) + a.shape[1:])
    raise AssertionError(how)


def fails_anywhere(how):
    """Mutations no argument of any call may accept."""
    return how in NON_NUMERIC or how in NON_FINITE or how == "huge"


def expect(how, bad=(), unsure=()):
    """True: the call must fail; False: it must succeed; None: either (the oracle decides)."""
    if how in unsure:
        return None
    return fails_anywhere(how) or how in bad


# --- the outcome check ----------------------------------------------------------------------------
def _named(message, names):
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message)
               for n in names)


def check(call, names, must_fail, oracle, *, allow=()):
    """Run ``call``; an error must be a ValueError/TypeError (a MemoryError for sizes beyond the
    machine, or one in ``allow``) naming one of ``names``; a result must pass ``oracle``.
    ``must_fail``: True = the input is bad and must be refused, False = it is good and must be
    accepted, None = either."""
    CASES["n"] += 1
    if isinstance(names, str):
        names = (names,)
    try:
        result = call()
    except (ValueError, TypeError, MemoryError, *allow) as exc:
        assert must_fail is not False, f"good {names[0]} refused: {type(exc).__name__}: {exc}"
        assert _named(str(exc), names), (
            f"{type(exc).__name__} does not name any of {names}: {exc}")
        return None
    assert not must_fail, f"bad {names[0]} accepted; the call returned {result!r:.200}"
    oracle(result)
    return result


def assert_close(actual, expected, dtype):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.isfinite(actual).all()
    err = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert err <= RTOL[np.dtype(dtype)] or np.abs(actual - expected).max() < 1e-12, err


# --- valid base inputs --------------------------------------------------------------------------
LOSSES = ("mse", "logistic", "cross_entropy")


@st.composite
def base_model(draw):
    loss = draw(st.sampled_from(LOSSES))
    d = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 5), max_size=2))
    k = {"mse": draw(st.integers(1, 3)), "logistic": 1, "cross_entropy": draw(st.integers(2, 4))}
    heads = draw(st.sampled_from([None, None, 3]))
    return mc.MLP([d, *hidden, k[loss]], activation=draw(st.sampled_from(["relu", "tanh"])),
                  loss=loss, task_heads=heads)


def labels(rng, model, n):
    k = model.n_outputs
    if model.loss == "mse":
        return rng.normal(size=n) if k == 1 else rng.normal(size=(n, k))
    return rng.integers(0, 2 if model.loss == "logistic" else k, size=n).astype(np.float64)


@st.composite
def base_tasks(draw, model=None):
    """(model, X, y, offsets, n_support) of a valid ragged task set (1..3 tasks of 1..4 rows)."""
    model = model or draw(base_model())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    N = sum(sizes)
    X = rng.normal(size=(N, model.n_features))
    y = labels(rng, model, N)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_support = np.array([draw(st.integers(0, n)) for n in sizes], dtype=np.int64)
    return model, X, y, offsets, n_support


def canonical_float(value, dtype=None):
    """What a float array argument means: its values as float32/float64."""
    a = np.asarray(value)
    if dtype is None:
        dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    with np.errstate(all="ignore"):
        return a.astype(dtype)


def assert_valid_taskset(ts, X, y, offsets, n_support=None, dtype=None):
    """``ts`` holds exactly the canonical conversion of the arguments, and its invariants."""
    X = canonical_float(X, dtype)
    assert ts.dtype == X.dtype
    np.testing.assert_array_equal(ts.X, X)
    np.testing.assert_array_equal(ts.y, canonical_float(y, ts.dtype))
    np.testing.assert_array_equal(ts.offsets, np.asarray(offsets).astype(np.int64))
    sizes = np.diff(ts.offsets)
    assert (sizes > 0).all() and ts.offsets[0] == 0 and ts.offsets[-1] == ts.n_rows
    assert ((ts.n_support >= 0) & (ts.n_support <= sizes)).all()
    if n_support is not None:
        want = np.broadcast_to(np.asarray(n_support).astype(np.int64), sizes.shape)
        np.testing.assert_array_equal(ts.n_support, want)
    assert np.isfinite(ts.X).all() and np.isfinite(ts.y).all()
    assert not ts.X.flags.writeable


def bad_integer_values():
    """Integer-argument replacements: negative, zero, huge, non-integers, numpy scalars."""
    return st.one_of(
        st.integers(-10**20, 10**20), st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
        st.sampled_from(["3", b"3", 2.0, 1 + 2j, [1], (), np.int8(2), np.int64(-3),
                         np.float32(2.0), np.array(2), np.array([2])]),
    )


# --- TaskSet(X, y, offsets, n_support, task_ids, dtype) -----------------------------------------
INT_ARRAY_MUTATIONS = ("list", "noncontig", "readonly", "float", "bool", "negative", "object",
                       "string", "short", "long", "ndim_up", "scalar", "huge_value", "ragged",
                       "uint8", "none")


def mutate_int_array(a, how, data):
    a = np.asarray(a)
    if how == "float":
        return a.astype(np.float64)
    if how == "negative":
        b = a.copy()
        b[data.draw(st.integers(0, b.size - 1))] = -data.draw(st.integers(1, 10**18))
        return b
    if how == "huge_value":
        b = a.copy()
        b[data.draw(st.integers(0, b.size - 1))] = np.iinfo(np.int64).max
        return b
    if how == "uint8":
        return a.astype(np.uint8)
    if how == "bool":
        return a != 0
    return mutate(a, how, data)


def check_taskset_init(data):
    model, X, y, offsets, n_support = data.draw(base_tasks())
    args = {"X": X, "y": y, "offsets": offsets, "n_support": n_support, "task_ids": None,
            "dtype": None}
    arg = data.draw(st.sampled_from(list(args)))
    must_fail = None
    if arg in ("X", "y"):
        how = data.draw(st.sampled_from(ARRAY_MUTATIONS))
        args[arg] = mutate(args[arg], how, data)
        must_fail = expect(how, SHAPE) if arg == "X" else expect(
            how, SHAPE, unsure=("ndim_up", "ndim_down"))  # y (N,) and (N, 1) are both fine
    elif arg in ("offsets", "n_support", "task_ids"):
        base = np.arange(len(offsets) - 1) if arg == "task_ids" else args[arg]
        how = data.draw(st.sampled_from(INT_ARRAY_MUTATIONS))
        args[arg] = mutate_int_array(base, how, data)
        must_fail = how in ("float", "bool", "object", "string", "short", "long", "ndim_up",
                            "scalar", "ragged", "none", "negative")
        if how == "huge_value":
            must_fail = arg != "task_ids"          # any id >= 0 is an id
        if arg in ("n_support", "task_ids") and how == "none":
            must_fail = False                      # the defaults: all rows support, arange(T)
    else:
        args["dtype"] = data.draw(st.sampled_from(
            [np.float32, "float64", np.float16, np.int32, object, complex, "f8", "nonsense", 3]))
        must_fail = args["dtype"] not in (np.float32, "float64", "f8")

    def oracle(ts):
        assert_valid_taskset(ts, args["X"], args["y"], args["offsets"],
                             None if args["n_support"] is None or arg == "n_support"
                             else args["n_support"], args["dtype"])

    check(lambda: mc.TaskSet(**args), (arg,) + (("Xs",) if arg == "X" else ()), must_fail,
          oracle)


# --- TaskSet.from_arrays(Xs, ys, n_support, dtype) ----------------------------------------------
def check_from_arrays(data):
    model, X, y, offsets, n_support = data.draw(base_tasks())
    Xs = [X[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    ys = [y[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    args = {"Xs": Xs, "ys": ys, "n_support": int(n_support.min()), "dtype": None}
    arg = data.draw(st.sampled_from(["Xs", "ys", "Xs[i]", "ys[i]", "n_support", "dtype"]))
    must_fail = None
    names = (arg,)
    if arg in ("Xs", "ys"):
        how = data.draw(st.sampled_from(["empty_list", "text", "none", "array", "tuple", "gen",
                                         "drop", "extra"]))
        seq = args[arg]
        args[arg] = {"empty_list": [], "text": "abc", "none": None, "array": np.array(seq[:1]),
                     "tuple": tuple(seq), "gen": (s for s in seq), "drop": seq[:-1],
                     "extra": seq + seq[:1]}[how]
        must_fail = how in ("empty_list", "text", "none", "drop", "extra") or (
            how == "array" and len(seq) > 1)
        names = (arg, "ys", "Xs")  # a count mismatch is reported as ys against Xs
    elif arg in ("Xs[i]", "ys[i]"):
        key = arg[:2]
        i = data.draw(st.integers(0, len(Xs) - 1))
        how = data.draw(st.sampled_from(ARRAY_MUTATIONS))
        args[key] = list(args[key])
        args[key][i] = mutate(args[key][i], how, data)
        must_fail = expect(how, SHAPE) if key == "Xs" else expect(
            how, SHAPE, unsure=("ndim_up", "ndim_down"))
        names = (f"{key}[{i}]", key)
    elif arg == "n_support":
        args["n_support"] = data.draw(st.one_of(bad_integer_values(),
                                                st.lists(st.integers(-2, 5), max_size=4)))
    else:
        args["dtype"] = data.draw(st.sampled_from([np.float32, np.float16, int, object, "x"]))
        must_fail = args["dtype"] is not np.float32

    def oracle(ts):
        Xs_c = [canonical_float(x) for x in args["Xs"]]
        dtype = args["dtype"] or (np.float32 if all(x.dtype == np.float32 for x in Xs_c)
                                  else np.float64)
        X_all = np.concatenate([x.astype(dtype) for x in Xs_c])
        y_all = np.concatenate([canonical_float(t, dtype) for t in args["ys"]])
        sizes = [len(x) for x in Xs_c]
        assert_valid_taskset(ts, X_all, y_all, np.concatenate([[0], np.cumsum(sizes)]))

    call_args = dict(args)
    if arg in ("Xs", "ys") and how == "gen":  # the call consumes the generator, the oracle a list
        args[arg] = seq
    check(lambda: mc.TaskSet.from_arrays(**call_args), names, must_fail, oracle)


# --- TaskSet.from_groups(X, y, groups, n_support, dtype) ----------------------------------------
def check_from_groups(data):
    model, X, y, offsets, _ = data.draw(base_tasks())
    groups = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    args = {"X": X, "y": y, "groups": groups, "n_support": None, "dtype": None}
    arg = data.draw(st.sampled_from(["X", "y", "groups", "groups", "n_support"]))
    must_fail = None
    if arg in ("X", "y"):
        how = data.draw(st.sampled_from(ARRAY_MUTATIONS))
        args[arg] = mutate(args[arg], how, data)
        must_fail = expect(how, SHAPE) if arg == "X" else expect(
            how, SHAPE, unsure=("ndim_up", "ndim_down"))
    elif arg == "groups":
        how = data.draw(st.sampled_from(["strings", "floats", "nan", "object", "2d", "short",
                                         "complex", "shuffled", "none", "bytes", "negative"]))
        g = groups
        args["groups"] = {
            "strings": g.astype(str), "floats": g.astype(np.float64) + 0.5,
            "nan": np.where(np.arange(len(g)) == 0, np.nan, g.astype(float)),
            "object": g.astype(object), "2d": g[:, None], "short": g[:-1],
            "complex": g.astype(complex), "shuffled": g[::-1].copy(), "none": None,
            "bytes": g.astype("S4"), "negative": -g - 10**15}[how]
        must_fail = how in ("nan", "object", "2d", "short", "complex", "none")
    else:
        args["n_support"] = data.draw(bad_integer_values())

    def oracle(ts):
        g = np.asarray(args["groups"])
        _, inv = np.unique(g, return_inverse=True)
        order = np.argsort(inv.reshape(-1), kind="stable")
        sizes = np.bincount(inv.reshape(-1))
        Xc = canonical_float(args["X"])
        assert_valid_taskset(ts, Xc[order], canonical_float(args["y"], Xc.dtype)[order],
                             np.concatenate([[0], np.cumsum(sizes)]))

    check(lambda: mc.TaskSet.from_groups(**args), (arg,), must_fail, oracle)


# --- methods of a TaskSet -----------------------------------------------------------------------
def check_taskset_methods(data):
    model, X, y, offsets, n_support = data.draw(base_tasks())
    ts = mc.TaskSet(X, y, offsets, n_support)
    T = ts.n_tasks
    method = data.draw(st.sampled_from(["subset", "split_tasks", "with_support", "getitem",
                                        "support", "query", "astype"]))
    if method == "subset":
        idx = data.draw(st.one_of(
            st.lists(st.integers(-2 * T, 2 * T), max_size=4), bad_integer_values(),
            st.sampled_from([slice(None), slice(1, None), slice(5, 9), np.ones(T, bool),
                             np.zeros(T, bool), np.ones(T + 1, bool), np.array([[0]]),
                             np.array([0.0]), "0", None, np.array([0], dtype=object)])))

        def oracle(sub):
            if isinstance(idx, slice):
                want = np.arange(T)[idx]
            elif np.asarray(idx).dtype == bool:
                want = np.flatnonzero(idx)
            else:
                want = np.asarray(idx).reshape(-1) % T
            np.testing.assert_array_equal(sub.task_ids, ts.task_ids[want])
            for j, i in enumerate(want):
                np.testing.assert_array_equal(sub[j][0], ts[i][0])

        check(lambda: ts.subset(idx), ("indices",), None, oracle, allow=(IndexError,))
    elif method == "split_tasks":
        frac = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                   st.sampled_from([0, 1, 0.5, True, "0.2", None, 1j])))
        seed = data.draw(st.one_of(bad_integer_values(), st.just(0)))

        def oracle(pair):
            train, test = pair
            ids = np.sort(np.concatenate([train.task_ids, test.task_ids]))
            np.testing.assert_array_equal(ids, np.arange(T))
            assert train.n_tasks >= 1 and test.n_tasks >= 1

        check(lambda: ts.split_tasks(test_fraction=frac, seed=seed),
              ("test_fraction", "seed", "split_tasks"), None, oracle)
    elif method == "with_support":
        ns = data.draw(st.one_of(bad_integer_values(),
                                 st.lists(st.integers(-1, 5), min_size=T, max_size=T)))

        def oracle(new):
            want = ts.task_sizes if ns is None else np.broadcast_to(
                np.asarray(ns).astype(np.int64), (T,))
            np.testing.assert_array_equal(new.n_support, want)
            assert (new.n_support <= new.task_sizes).all() and (new.n_support >= 0).all()

        check(lambda: ts.with_support(ns), ("n_support",), None, oracle)
    elif method == "astype":
        dt = data.draw(st.sampled_from([np.float32, np.float64, "float32", np.float16, int,
                                        object, "S3", None, "nonsense"]))
        bad = dt in ("nonsense", "S3", np.float16, int, object)
        check(lambda: ts.astype(dt), ("dtype",), bad,
              lambda t: np.testing.assert_array_equal(t.X, ts.X.astype(t.dtype)))
    else:
        i = data.draw(bad_integer_values())
        fn = {"getitem": ts.__getitem__, "support": ts.support, "query": ts.query}[method]

        def oracle(pair):
            j = int(i) % T
            a = ts.offsets[j]
            lo = a + (ts.n_support[j] if method == "query" else 0)
            hi = a + ts.n_support[j] if method == "support" else ts.offsets[j + 1]
            np.testing.assert_array_equal(pair[0], ts.X[lo:hi])

        check(lambda: fn(i), ("task index",), None, oracle, allow=(IndexError,))


# --- models: MLP, Linear, Logistic, Softmax, init ------------------------------------------------
def check_model_constructors(data):
    which = data.draw(st.sampled_from(["MLP", "Linear", "Logistic", "Softmax"]))
    if which == "MLP":
        args = {"layer_sizes": [3, 4, 2], "activation": "relu", "loss": "mse", "task_heads": None}
        arg = data.draw(st.sampled_from(list(args)))
        args[arg] = data.draw({
            "layer_sizes": st.one_of(
                st.lists(st.one_of(st.integers(-3, 6), st.sampled_from([10**12, 2.0, "3", None,
                                                                        True, np.int8(3)])),
                         max_size=4),
                st.sampled_from([np.array([3, 2]), np.array([3.0, 2.0]), "32", None, 5, (3, 2),
                                 [[3, 2]], [10**10, 10**10, 10**10]])),
            "activation": st.sampled_from(["relu", "tanh", "sigmoid", "RELU", None, 1, b"relu"]),
            "loss": st.sampled_from(["mse", "logistic", "cross_entropy", "hinge", None, 0]),
            "task_heads": st.one_of(bad_integer_values(), st.integers(1, 4)),
        }[arg])
        call = lambda: mc.MLP(**args)  # noqa: E731
        names = (arg,)
    else:
        d = data.draw(st.one_of(bad_integer_values(), st.integers(1, 5)))
        k = data.draw(st.one_of(bad_integer_values(), st.integers(1, 5)))
        call = {"Linear": lambda: mc.Linear(d, k), "Logistic": lambda: mc.Logistic(d),
                "Softmax": lambda: mc.Softmax(d, k)}[which]
        names = ("layer_sizes", "layer_sizes[0]", "layer_sizes[1]", "loss", "d", "k")

    def oracle(model):
        s = model.layer_sizes
        assert all(isinstance(v, int) and v >= 1 for v in s) and len(s) >= 2
        n = sum(s[i + 1] * s[i] + s[i + 1] for i in range(len(s) - 2))
        n += (s[-1] * s[-2] + s[-1]) * (model.task_heads or 1)
        assert model.n_params == n < 2**63
        if model.n_params < 10**6:
            assert model.core_net().n_params == n  # the core agrees on θ's size

    check(call, names, None, oracle)


def check_init(data):
    model = data.draw(base_model())
    seed = data.draw(st.one_of(bad_integer_values(), st.integers(0, 2**70)))
    dtype = data.draw(st.sampled_from([np.float32, np.float64, "float32", "f8", np.float16,
                                       np.int64, object, complex, None, "nonsense"]))

    def oracle(theta):
        assert theta.shape == (model.n_params,) and theta.dtype in (np.float32, np.float64)
        assert np.isfinite(theta).all()
        np.testing.assert_array_equal(theta, model.init(seed=int(seed), dtype=theta.dtype))

    check(lambda: model.init(seed=seed, dtype=dtype), ("seed", "dtype"), None, oracle)


def check_huge_model(data):
    """Models too large for memory or for int64: a clear error, never an abort."""
    width = data.draw(st.sampled_from([10**6, 10**7, 2**31, 10**10, 2**40]))
    heads = data.draw(st.sampled_from([None, 10**6, 2**40]))
    try:
        model = mc.MLP([width, width, 1], task_heads=heads)
    except ValueError as exc:
        CASES["n"] += 1
        assert "layer_sizes" in str(exc)
        return
    check(lambda: model.init(seed=0), ("layer_sizes",), True, lambda _: None)


# --- predict(theta, X, task, n_threads) ---------------------------------------------------------
THETA_MUST_FAIL = set(CAST) | set(NON_NUMERIC) | set(NON_FINITE) | set(SHAPE)


def check_predict(data):
    model, X, *_ = data.draw(base_tasks())
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    theta = (model.init(seed=1) + 0.1).astype(dtype)
    args = {"theta": theta, "X": X, "task": 0, "n_threads": None}
    arg = data.draw(st.sampled_from(["theta", "X", "X", "task", "n_threads"]))
    must_fail = None
    if arg in ("theta", "X"):
        how = data.draw(st.sampled_from(ARRAY_MUTATIONS))
        args[arg] = mutate(args[arg], how, data)
        if arg == "theta":
            must_fail = how in THETA_MUST_FAIL
        else:  # any number of rows, zero included
            must_fail = expect(how, ("ndim_up", "ndim_down", "scalar"))
    elif arg == "task":
        args["task"] = data.draw(st.one_of(bad_integer_values(), st.integers(-1, 4)))
    else:
        args["n_threads"] = data.draw(st.one_of(bad_integer_values(), st.integers(-3, 9)))

    def oracle(out):
        th = canonical_float(args["theta"])
        Xc = canonical_float(args["X"], th.dtype)
        if Xc.shape[0] == 0:
            assert out.shape == ((0,) if model.n_outputs == 1 else (0, model.n_outputs))
            return
        expected = ref.predict(model, th.astype(np.float64), Xc.astype(np.float64),
                               task=int(args["task"]))
        assert out.dtype == th.dtype
        assert_close(out, expected, th.dtype)

    check(lambda: model.predict(args["theta"], args["X"], task=args["task"],
                                n_threads=args["n_threads"]), (arg,), must_fail, oracle)


# --- Objective(model, ts, weights, l2, rows, n_threads) -----------------------------------------
def check_objective_init(data):
    model, X, y, offsets, n_support = data.draw(base_tasks())
    ts = mc.TaskSet(X, y, offsets, n_support, task_ids=np.zeros(len(offsets) - 1, np.int64))
    T = ts.n_tasks
    args = {"model": model, "ts": ts, "weights": None, "l2": 0.0, "rows": "all",
            "n_threads": None}
    arg = data.draw(st.sampled_from(list(args) + ["labels", "weights", "rows"]))
    must_fail = None
    names = (arg,)
    if arg == "model":
        other = data.draw(base_model())
        args["model"] = data.draw(st.sampled_from([other, None, "mlp", ref, object()]))
        must_fail = None if isinstance(args["model"], mc.MLP) else True
        names = ("model", "ts", "y")
    elif arg == "ts":
        args["ts"] = data.draw(st.sampled_from([None, (X, y), X, "tasks"]))
        must_fail = True
    elif arg == "labels":
        # a TaskSet whose targets do not fit the loss head (wrong range, fractions, columns)
        bad = data.draw(st.sampled_from([2.0, -1.0, 0.5, 1e30, -1e30, 7.0, 3.0]))
        yb = np.array(y, dtype=np.float64, copy=True)
        yb.reshape(len(yb), -1)[data.draw(st.integers(0, len(yb) - 1)), 0] = bad
        if model.loss != "mse" and data.draw(st.booleans()):
            yb = np.stack([yb, yb], axis=1)           # 2-D labels for a classification head
        args["ts"] = mc.TaskSet(X, yb, offsets, n_support)
        names = ("y", "ts")
        must_fail = model.loss != "mse" and not (model.loss == "cross_entropy" and yb.ndim == 1
                                                 and bad < model.n_outputs and bad == int(bad)
                                                 and bad >= 0)
    elif arg == "weights":
        how = data.draw(st.sampled_from(ARRAY_MUTATIONS + ("negative",)))
        w = np.linspace(0.5, 1.5, T)
        args["weights"] = -w if how == "negative" else mutate(w, how, data)
        must_fail = False if how == "none" else expect(how, SHAPE + ("negative",))  # None: 1/T
    elif arg == "l2":
        args["l2"] = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                         st.sampled_from([None, "0.1", 1j, True, [0.1],
                                                          np.float32(0.5), -0.0])))
        lam = args["l2"]
        if isinstance(lam, float) and np.isfinite(lam) and lam > 1e3:
            args["l2"] = 1e3                          # keep (λ/2)‖θ‖² finite in float32
    elif arg == "rows":
        args["rows"] = data.draw(st.sampled_from(["all", "support", "query", "train", None, 0,
                                                  "ALL"]))
    else:
        args["n_threads"] = data.draw(st.one_of(bad_integer_values(), st.integers(-3, 9)))

    dtype = data.draw(st.sampled_from([np.float64, np.float32]))

    def oracle(obj):
        m = args["model"]
        theta = (m.init(seed=2) + 0.1).astype(dtype)
        value, grad = obj.value_and_grad(theta)
        t = obj.ts.astype(dtype)
        ev, eg = ref.objective_value_and_grad(m, t, theta.astype(np.float64),
                                              weights=obj.weights, l2=obj.l2, rows=obj.rows)
        assert_close(value, ev, dtype)
        assert_close(grad, eg, dtype)

    check(lambda: mc.Objective(**args), names, must_fail, oracle)


# --- the Objective's methods: value, grad, value_and_grad, task_losses, task_grads, hvp ---------
METHODS = ("value", "grad", "value_and_grad", "task_losses", "task_grads",
           "task_losses_and_grads", "value_grad_and_task_losses", "hvp")


def reference_result(method, model, ts, theta, v, weights, l2, rows):
    kw = dict(weights=weights, l2=l2, rows=rows)
    if method == "value":
        return ref.objective_value(model, ts, theta, **kw)
    if method == "grad":
        return ref.objective_grad(model, ts, theta, **kw)
    if method == "value_and_grad":
        return ref.objective_value_and_grad(model, ts, theta, **kw)
    if method == "task_losses":
        return ref.task_losses(model, ts, theta, rows=rows)
    if method == "task_grads":
        return ref.task_grads(model, ts, theta, rows=rows)
    if method == "task_losses_and_grads":
        return (ref.task_losses(model, ts, theta, rows=rows),
                ref.task_grads(model, ts, theta, rows=rows))
    if method == "value_grad_and_task_losses":
        return (*ref.objective_value_and_grad(model, ts, theta, **kw),
                ref.task_losses(model, ts, theta, rows=rows))
    return ref.objective_hvp(model, ts, theta, v, **kw)


def check_objective_methods(data):
    model, X, y, offsets, n_support = data.draw(base_tasks())
    heads = model.task_heads or 1
    task_ids = np.arange(len(offsets) - 1) % heads
    ts = mc.TaskSet(X, y, offsets, n_support, task_ids=task_ids)
    obj = mc.Objective(model, ts, weights=np.linspace(0.5, 2.0, ts.n_tasks), l2=0.01,
                       n_threads=data.draw(st.sampled_from([None, 1, 2, -1])))
    method = data.draw(st.sampled_from(METHODS))
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    args = {"theta": (0.5 * rng.normal(size=model.n_params)).astype(dtype)}
    if method == "hvp":
        args["v"] = rng.normal(size=model.n_params)
    arg = data.draw(st.sampled_from(list(args)))
    how = data.draw(st.sampled_from(ARRAY_MUTATIONS))
    args[arg] = mutate(args[arg], how, data)
    if arg == "theta":
        must_fail = how in THETA_MUST_FAIL
    else:  # v: any real numbers of θ's length, converted to θ's dtype
        must_fail = expect(how, SHAPE)

    def oracle(result):
        th = canonical_float(args["theta"])
        t = ts.astype(th.dtype)
        v = None if method != "hvp" else canonical_float(args["v"], th.dtype).astype(np.float64)
        expected = reference_result(method, model, t, th.astype(np.float64), v, obj.weights,
                                    obj.l2, obj.rows)
        results = result if isinstance(result, tuple) else (result,)
        expects = expected if isinstance(expected, tuple) else (expected,)
        assert len(results) == len(expects)
        for r, e in zip(results, expects):
            if isinstance(r, np.ndarray):
                assert r.dtype == th.dtype
            assert_close(r, e, th.dtype)

    fn = getattr(obj, method)
    check(lambda: fn(**args), (arg,), must_fail, oracle)


# --- the huge-output check: a clear MemoryError before anything is allocated --------------------
def test_task_grads_needing_terabytes_raise_memory_error_naming_the_output():
    T = 1_000_000                                        # one-row tasks
    ts = mc.TaskSet(np.zeros((T, 1)), np.zeros(T), np.arange(T + 1))
    model = mc.MLP([1, 1000, 1000, 1])                   # ~1e6 parameters: (T, P) = 7.3 TiB
    obj = mc.Objective(model, ts)
    theta = model.init(seed=0)
    with pytest.raises(MemoryError, match=r"task_grads would need 7\.3 TiB .*\(1000000, 1004001\)"):
        obj.task_grads(theta)
    with pytest.raises(MemoryError, match="task_grads"):
        obj.task_losses_and_grads(theta)


def test_huge_array_arguments_fail_naming_the_argument_without_copying():
    model = mc.Linear(3)
    theta = model.init(seed=0)
    huge = np.broadcast_to(np.ones((1, 3)), (HUGE, 3))           # 24 TB if copied
    for call, name in [(lambda: model.predict(theta, huge), "X"),
                       (lambda: model.predict(np.broadcast_to(theta[:1], (HUGE,)), huge[:2]),
                        "theta"),
                       (lambda: mc.TaskSet(huge, huge[:, 0], [0, HUGE]), "X"),
                       (lambda: mc.Objective(model, mc.TaskSet(np.ones((2, 3)), [1.0, 2.0], [0, 2]))
                        .hvp(theta, np.broadcast_to(theta[:1], (HUGE,))), "v")]:
        with pytest.raises((ValueError, MemoryError)) as info:
            call()
        assert _named(str(info.value), (name,)), info.value


# --- the private core behind the checks: sizes past int64, labels past int64 -------------------
def test_private_core_refuses_layer_sizes_whose_parameter_count_overflows_int64():
    from metacore import _core
    for sizes, heads in [([2**40, 2**40, 1], 1), ([2**31, 2**31, 2**31], 1), ([3, 2**62], 2)]:
        with pytest.raises(ValueError, match="layer_sizes"):
            _core.Net(sizes, "relu", "mse", heads)
    assert _core.Net([2**20, 2**20, 1], "relu", "mse", 1).n_params == 2**40 + 2 * 2**20 + 1


@pytest.mark.parametrize("label", [1e30, -1e30, 2.0**63, np.nan, 2.5])
def test_private_core_refuses_class_labels_beyond_int64_without_undefined_behaviour(label):
    # converting such a float to an integer is undefined behaviour (UBSan's float-cast-overflow):
    # the range is checked first
    from metacore import _core
    model = mc.Softmax(2, 3)
    y = np.array([[0.0], [label]])
    with pytest.raises(ValueError, match=r"^y: row 1 has class label"):
        _core.Objective64(model.core_net(), np.zeros((2, 2)), y, np.array([0, 2]),
                          np.array([1]), np.array([0]), "all")


# --- running the generators ---------------------------------------------------------------------
# --- training and meta-learning: fit, MetaObjective, learners, optimizers -----------------------
def huge_or_bad_integers():
    """Integers beyond int64 (and beyond uint64) besides the usual bad ones."""
    return st.one_of(bad_integer_values(), st.integers(2**63 - 2, 2**66),
                     st.sampled_from([2**63, 2**64, 2**64 + 1, -2**63 - 1, 10**40]))


def _small_meta(dtype=np.float64):
    model = mc.MLP([1, 4, 1], activation="tanh")
    ts = mc.tasks.sinusoid(4, k_support=3, k_query=3, seed=0, dtype=dtype)
    return model, ts


def _an_integer(value):
    """The documented rule for an integer argument: an int, a NumPy integer or a 0-d array of
    one (np.array(2) counts as 2); never a bool."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _fit_int_expectation(name, value, n_tasks):
    """True: must be refused; False: must train; None: either (a large but valid count)."""
    if value is None:
        return name in ("steps", "eval_every")
    if not _an_integer(value):
        return True
    v = int(value)
    if v > (2**64 - 1 if name == "seed" else 2**63 - 1) or v < -2**63:
        return True
    if v < {"seed": 0, "n_threads": -1}.get(name, 1) or (name == "n_threads" and v == 0):
        return True
    if name == "batch_tasks" and v > n_tasks:
        return True
    return None if v > 10 else False


FIT_INTS = ("steps", "batch_tasks", "batch_rows", "eval_every", "seed", "n_threads",
            "chunk_size", "checkpoint_every", "early_stopping")


def check_fit_arguments(data):
    """mc.fit's integer arguments on both problems: a good value trains, anything else (huge
    ones included) is a ValueError/TypeError naming the argument."""
    meta = data.draw(st.booleans())
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    model, ts = _small_meta(dtype)
    problem = (mc.MetaObjective(mc.MAML(model), ts, meta_batch=2) if meta
               else mc.Objective(model, ts))
    name = data.draw(st.sampled_from(FIT_INTS if not meta else
                                     tuple(n for n in FIT_INTS if not n.startswith("batch_"))))
    value = data.draw(huge_or_bad_integers())
    if name == "steps" and isinstance(value, int) and 3 < value <= 2**63 - 1:
        value += 2**63      # a valid huge run would train for ages: make it out of range
    kw = dict(steps=2, progress=False, optimizer=mc.optim.SGD(0.01))
    kw[name] = value
    must_fail = _fit_int_expectation(name, value, ts.n_tasks)

    def oracle(res):
        assert np.isfinite(res.theta).all() and res.theta.dtype == dtype

    theta = model.init(seed=0, dtype=dtype)
    check(lambda: mc.fit(problem, theta, **kw), (name,), must_fail, oracle)


LEARNERS = {"MAML": mc.MAML, "ANIL": mc.ANIL, "MetaSGD": mc.MetaSGD, "Reptile": mc.Reptile,
            "FOMAML": mc.FOMAML}


def check_meta_arguments(data):
    """Learners and MetaObjective: integer and real settings (huge ones included), θ and the
    task batch mutated; the meta-loss of an accepted call is finite and matches a plain call."""
    model, ts = _small_meta()
    kind = data.draw(st.sampled_from(sorted(LEARNERS)))
    what = data.draw(st.sampled_from(["inner_steps", "inner_lr", "meta_batch", "n_threads",
                                      "theta", "batch"]))
    if what in ("inner_steps", "meta_batch", "n_threads"):
        value = data.draw(huge_or_bad_integers())
        bad_type = not _an_integer(value)
        limit = {"inner_steps": 4, "meta_batch": ts.n_tasks, "n_threads": 4}[what]
        ok = not bad_type and (1 <= int(value) <= limit or (what == "n_threads" and value == -1))
        if what == "meta_batch":
            call = lambda: mc.MetaObjective(LEARNERS[kind](model), ts, meta_batch=value)
        elif value is None and what == "n_threads":
            ok, call = True, (lambda: LEARNERS[kind](model, n_threads=None))
        else:
            call = lambda: LEARNERS[kind](model, **{what: value})
        if ok or bad_type:
            must_fail = not ok
        else:   # beyond int64, below 1, more tasks than the set has, more threads than an int
            v = int(value)
            must_fail = (v > 2**63 - 1 or v < 1 or what == "meta_batch"
                         or (what == "n_threads" and v > 2**31 - 1)) or None
        check(call, (what,), must_fail, lambda _: None)
        return
    learner = LEARNERS[kind](model)
    theta = model.init(seed=1)
    params = learner.init(theta) if kind == "MetaSGD" else theta
    if what == "inner_lr":
        value = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                    st.sampled_from([-1.0, "0.1", None, 1e308, 2**63,
                                                     np.float32(0.01)])))
        ok = (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
              and np.isfinite(float(value)) and float(value) >= 0)
        check(lambda: LEARNERS[kind](model, inner_lr=value), ("inner_lr",),
              None if ok else True, lambda _: None)
        return
    how = data.draw(st.sampled_from(ARRAY_MUTATIONS))
    if what == "theta":
        bad = mutate(params, how, data)
        must_fail = how in THETA_MUST_FAIL
        call = lambda: learner.meta_value_and_grad(bad, ts)
        names = ("theta",)
    else:
        X = mutate(ts.X, how, data)
        must_fail = True if fails_anywhere(how) else None
        call = lambda: learner.meta_value_and_grad(params, mc.TaskSet(X, ts.y, ts.offsets,
                                                                        ts.n_support))
        names = ("X",)

    def oracle(result):
        loss, grad = result
        assert np.isfinite(loss) and np.isfinite(grad).all()

    check(call, names, must_fail, oracle)


def check_step_sizes(data):
    """lr and eps must stay normal numbers in θ's dtype: 1e-50 is 0 in float32 and would freeze
    θ (or divide by 0) silently; fit and update refuse them naming the argument."""
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    name = data.draw(st.sampled_from(["lr", "eps"]))
    exponent = data.draw(st.floats(-330, 308))
    value = 10.0 ** exponent
    if value == 0.0 or not np.isfinite(value):
        value = 5e-324
    kind = data.draw(st.sampled_from(["sgd", "adam", "adamw"] if name == "lr" else ["adam", "adamw"]))
    opt = mc.optim.from_dict({"kind": kind, name: value, **({"lr": 0.01} if name == "eps" and
                                                            kind == "sgd" else {})})
    info = np.finfo(dtype)
    must_fail = not (float(info.tiny) <= value <= float(info.max))
    model, ts = _small_meta(dtype)
    theta = model.init(seed=0, dtype=dtype)
    via = data.draw(st.sampled_from(["fit", "update", "meta"]))
    if via == "fit":
        call = lambda: mc.fit(mc.Objective(model, ts), theta, optimizer=opt, steps=1,
                              progress=False)
    elif via == "meta":
        call = lambda: mc.fit(mc.MetaObjective(mc.MAML(model), ts, meta_batch=2), theta,
                              optimizer=opt, steps=1, progress=False)
    else:
        th = theta.copy()
        call = lambda: opt.update(th, np.ones_like(th), opt.init_state(th), 0)

    def run():
        try:
            return call()
        except FloatingPointError:    # a huge step may diverge: not what is checked here
            assert not must_fail
            return None

    check(run, (name,), must_fail, lambda _: None)


GENERATORS = {  # check function -> examples per run (the total must stay >= 1,000)
    check_taskset_init: 200,
    check_from_arrays: 120,
    check_from_groups: 100,
    check_taskset_methods: 150,
    check_model_constructors: 150,
    check_init: 60,
    check_huge_model: 15,
    check_predict: 150,
    check_objective_init: 150,
    check_objective_methods: 220,
    check_fit_arguments: 120,
    check_meta_arguments: 150,
    check_step_sizes: 80,
}
MIN_CASES = 1000
assert sum(GENERATORS.values()) >= MIN_CASES

COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])


def _as_test(fn, n, **kw):
    test = settings(max_examples=n, **COMMON, **kw)(given(st.data())(fn))
    test.__name__ = "test_" + fn.__name__[len("check_"):]
    test.__doc__ = fn.__doc__
    return test


for _fn, _n in GENERATORS.items():
    _test = _as_test(_fn, _n, derandomize=True)
    globals()[_test.__name__] = _test
del _fn, _n, _test


def run_share(seed: int, fraction: float) -> int:
    """Every generator with ``fraction`` of its examples and another seed (the child's job)."""
    for fn, n in GENERATORS.items():
        hyp_seed(seed)(_as_test(fn, max(5, int(n * fraction)), derandomize=False))()
    return CASES["n"]


def test_a_share_runs_in_a_child_process():
    """A fifth of the cases again, with other seeds, in a child: a crash there fails this test
    with the signal rather than taking the test runner down."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-W", "error", __file__, "12345", "0.2"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (f"child exited with {proc.returncode} "
                                  f"(a negative code is a signal)\n{proc.stdout}\n{proc.stderr}")
    n = int(re.search(r"cases: (\d+)", proc.stdout).group(1))
    CASES["child"] = n
    assert n >= sum(GENERATORS.values()) // 5


if __name__ == "__main__":
    # The child: python tests/test_bad_input.py SEED FRACTION
    n = run_share(int(sys.argv[1]), float(sys.argv[2]))
    print(f"cases: {n}")
