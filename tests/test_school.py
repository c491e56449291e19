"""benchmarks/school.py: its metrics are the explained variance computed directly, and a short
multi-task run (shared trunk + per-school heads started from the pooled net) beats one ridge
per school on 20 schools of the real data (skipped, naming the file, when the data is absent)."""

import importlib.util
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metacore as mc

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("METACORE_DATA", ROOT.parent / "shared" / "data"))
SCHOOL = DATA / "school" / "school.mat"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("school_bench", ROOT / "benchmarks" / "school.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(2, 9), min_size=1, max_size=6), seed=st.integers(0, 2**31))
def test_scores_are_one_minus_sse_over_sst_pooled_and_per_school(sizes, seed):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    y = rng.normal(50.0, 10.0, n)
    pred = y + rng.normal(0.0, 5.0, n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    pooled, per_school = bench.scores(y, pred, offsets)
    direct = 1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    each = [1.0 - ((y[a:b] - pred[a:b]) ** 2).sum() / ((y[a:b] - y[a:b].mean()) ** 2).sum()
            for a, b in zip(offsets[:-1], offsets[1:])]
    assert pooled == pytest.approx(direct, rel=1e-12, abs=1e-12)
    assert per_school == pytest.approx(np.mean(each), rel=1e-12, abs=1e-12)


def test_scores_of_a_perfect_and_of_a_mean_prediction():
    y = np.array([1.0, 2.0, 4.0, 3.0, 7.0, 5.0])
    offsets = np.array([0, 3, 6])
    assert bench.scores(y, y, offsets) == (1.0, 1.0)
    pooled, _ = bench.scores(y, np.full(6, y.mean()), offsets)
    assert pooled == pytest.approx(0.0, abs=1e-15)


def test_scaling_is_undone_by_back():
    rng = np.random.default_rng(0)
    train = mc.TaskSet(np.hstack([rng.normal(3, 2, (12, 3)), np.ones((12, 1))]),
                       rng.normal(40, 8, 12), [0, 5, 12])
    s = bench.Scaled(train, train)
    assert np.allclose(s.train.X.mean(axis=0), 0.0) and np.allclose(s.train.X.std(axis=0), 1.0)
    assert s.train.n_features == 3                     # the constant column is dropped
    assert np.allclose(s.back(s.train.y), train.y)


def test_short_multitask_run_beats_one_ridge_per_school_on_20_schools():
    # the benchmark's own procedure: head steps chosen on an inner split of the training rows
    if not SCHOOL.is_file():
        pytest.skip(f"{SCHOOL} is missing (the real school data is not on this machine)")
    ts = mc.datasets.school(SCHOOL).subset(np.arange(20))
    train, test = next(mc.datasets.school_splits(ts, repetitions=1, seed=0))
    s = bench.Scaled(train, test)
    fit, val = bench.inner_split(s.train, seed=1000)
    alpha = bench.ridge_per_school(fit, val)
    ridge = bench.scores(s.y_test, s.back(bench.ridge_per_school(s.train, s.test, alpha)),
                         s.offsets_test)[0]
    pooled = mc.MLP([s.train.n_features, 16, 16, 1])
    uniform = mc.weighting.Uniform()
    _, head_steps = bench.multitask(fit, val, 16, 100, 0, uniform,
                                    bench.train_pooled(pooled, fit, 100, seed=0))
    theta = bench.train_pooled(pooled, s.train, 100, seed=0)
    pred = bench.multitask(s.train, s.test, 16, 100, 0, uniform, theta, chosen=head_steps)
    multitask = bench.scores(s.y_test, s.back(pred), s.offsets_test)[0]
    assert multitask > ridge + 0.01, (multitask, ridge)
