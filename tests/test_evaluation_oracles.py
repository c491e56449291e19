"""The statistics of mc.evaluate, EvalReport and mc.report against oracles outside the library:
SciPy's Student-t interval, per-task losses recomputed from mc.adapt + model.predict in float64,
scikit-learn's accuracy and nearest centroid, a NumPy Adam for the joint baseline, and the
decimal rounding a table must show (never an interval narrower than computed)."""

import decimal
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.evaluation import statistics as stats
from metacore.evaluation.protocol import EvalReport

scipy_stats = pytest.importorskip("scipy.stats")
sk_metrics = pytest.importorskip("sklearn.metrics")


def _scipy_ci(v, confidence=0.95):
    """(mean, half-width) by SciPy: t.interval around the mean with scale sem."""
    v = np.asarray(v, dtype=np.float64)
    m = math.fsum(v) / v.size
    sem = scipy_stats.sem(v)
    if sem == 0.0:        # SciPy's interval is NaN for a zero scale; the half-width is 0
        return m, 0.0
    lo, hi = scipy_stats.t.interval(confidence, v.size - 1, loc=m, scale=sem)
    return m, (hi - lo) / 2


# --- mean and interval over tasks -----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(v=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40),
       confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_mean_ci_is_scipys_t_interval(v, confidence):
    m, h = mc.mean_ci(v, confidence)
    want_m, want_h = _scipy_ci(v, confidence)
    assert m == pytest.approx(want_m, rel=1e-12, abs=1e-12)
    assert h == pytest.approx(want_h, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(v=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=12),
       e=st.sampled_from([-1070, -1040, -600, -300, 0, 300, 500, 1000]))
def test_mean_ci_of_huge_and_tiny_values_is_scipys_scaled(v, e):
    """v · 2^e is exact (as long as v · 2^e stays normal): its mean and half-width are those of
    v times 2^e. A 1e160 loss once made the spread's squares overflow (the summary said inf,
    "diverged"); 1e-320 losses underflowed to a zero-width interval."""
    v = np.asarray(v)
    scaled = np.ldexp(v, e)
    if e < -1022:      # subnormal: v · 2^e rounds; the oracle takes the rounded values
        v = np.ldexp(scaled, -e)
    m, h = mc.mean_ci(scaled)
    want_m, want_h = _scipy_ci(v)
    assert math.isfinite(m) and math.isfinite(h)
    assert m == pytest.approx(math.ldexp(want_m, e), rel=1e-12 if e >= -1022 else 1e-9,
                              abs=math.ldexp(1e-12, e) + 5e-324 * 4)
    assert h == pytest.approx(math.ldexp(want_h, e), rel=1e-9 if e >= -1022 else 1e-6,
                              abs=math.ldexp(1e-12, e) + 5e-324 * 32)


def test_mean_ci_regressions_at_the_float_range_ends():
    m, h = mc.mean_ci([1e160, 0.0, 0.0, 0.0, 0.0])
    assert m == 2e159 and h == pytest.approx(_scipy_ci(np.array([1.0, 0, 0, 0, 0]))[1] * 1e160,
                                              rel=1e-12)
    m, h = mc.mean_ci(np.array([1, 2, 3, 4, 5]) * 1e-320)
    assert m == 3e-320 and h == pytest.approx(1.9634e-320, rel=1e-3)   # was 0.0
    # a spread beyond the float range: the half-width is inf, the mean exact
    m, h = mc.mean_ci([1.7e308, -1.7e308])
    assert m == 0.0 and h == math.inf


@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_two_and_three_tasks(n):
    v = [0.25, 0.75, 0.5][:n]
    m, h = mc.mean_ci(v)
    assert m == pytest.approx(np.mean(v), rel=1e-15)
    if n == 1:
        assert math.isnan(h)
    else:
        assert h == pytest.approx(_scipy_ci(v)[1], rel=1e-9)   # t = 12.71, 4.30
    iv = stats.interval(v, bounds=(0.0, 1.0))
    assert iv.too_few and iv.n == n and math.isnan(iv.half_width) and math.isnan(iv.low)
    rep = EvalReport("few", (0,), np.array([v]), np.array([v]))
    row = rep.summary()[0]
    assert row["too_few_tasks"] and row["loss_interval"] is None and row["accuracy_interval"] is None
    assert row["loss"] == m and math.isnan(row["loss_ci"])
    # with min_tasks lowered, 2 and 3 tasks get SciPy's interval
    if n > 1:
        row = rep.summary(min_tasks=2)[0]
        assert not row["too_few_tasks"] and row["loss_ci"] == pytest.approx(h, rel=1e-15)


@settings(max_examples=20, deadline=None)
@given(c=st.floats(0.0, 1.0), n=st.integers(2, 30))
def test_all_equal_values_have_a_zero_width_interval(c, n):
    m, h = mc.mean_ci([c] * n)
    assert abs(m - c) <= 4e-16 * c and 0.0 <= h <= 1e-15 * max(c, 1e-300)
    iv = stats.interval([c] * n, bounds=(0.0, 1.0), min_tasks=2)
    assert 0.0 <= iv.low <= iv.high <= 1.0 and iv.high - iv.low <= 4e-15
    m, h = mc.mean_ci([2.0 ** -3] * n)      # exactly representable: exactly zero
    assert (m, h) == (0.125, 0.0)


def test_non_finite_task_values_are_said_not_averaged():
    assert mc.mean_ci([1.0, math.inf]) == (math.inf, pytest.approx(math.nan, nan_ok=True))
    m, h = mc.mean_ci([1.0, -math.inf])
    assert m == -math.inf and math.isnan(h)     # was +inf
    for v in ([math.inf, -math.inf], [math.nan, 1.0]):
        m, h = mc.mean_ci(v)
        assert math.isnan(m) and math.isnan(h)
    # a report: one diverged task (loss inf, accuracy NaN) makes the step diverged, not a number
    losses = np.array([[0.5, 0.6, 0.7, 0.8, 0.9], [0.4, np.inf, 0.5, 0.6, 0.3]])
    accs = np.array([[0.5, 0.6, 0.7, 0.8, 0.9], [0.4, np.nan, 0.5, 0.6, 0.3]])
    rep = EvalReport("d", (0, 1), losses, accs)
    row = rep.summary()[1]
    assert row["loss"] == math.inf and math.isnan(row["accuracy"])
    assert row["loss_interval"] is None and row["accuracy_interval"] is None
    for metric in ("loss", "accuracy"):
        assert mc.report.format_table([rep], metric=metric).splitlines()[3].split()[-1] \
            == "diverged"


def test_confidence_of_one_is_refused_naming_it():
    with pytest.raises(ValueError, match="confidence must be < 1"):
        mc.mean_ci([1.0, 2.0, 3.0], confidence=1.0)
    with pytest.raises(ValueError, match="confidence must be > 0"):
        mc.mean_ci([1.0, 2.0, 3.0], confidence=0.0)


@settings(max_examples=40, deadline=None)
@given(v=st.lists(st.one_of(st.floats(0.0, 0.02), st.floats(0.97, 1.0)), min_size=5,
                  max_size=15), confidence=st.sampled_from([0.9, 0.95]))
def test_clipping_near_the_range_ends_against_scipy(v, confidence):
    """Values near 0 and 1: the interval is SciPy's, cut to the metric's range, flagged."""
    for bounds in ((0.0, 1.0), (0.0, math.inf)):
        iv = stats.interval(v, confidence, bounds)
        m, h = _scipy_ci(v, confidence)
        low, high = max(m - h, bounds[0]), min(m + h, bounds[1])
        assert iv.low == pytest.approx(low, rel=1e-9, abs=1e-12)
        assert iv.high == pytest.approx(high, rel=1e-9, abs=1e-12)
        assert bounds[0] <= iv.low <= iv.mean <= iv.high <= bounds[1]
        if abs(m - h - bounds[0]) > 1e-9 and abs(m + h - bounds[1]) > 1e-9:
            assert iv.clipped == (m - h < bounds[0] or m + h > bounds[1])


# --- per-step curves against adapting each task directly ------------------------------------------
def _tasks(kind, dtype, seed):
    rng = np.random.default_rng(seed)
    n_out = {"mse": 1, "mse3": 3, "logistic": 1, "cross_entropy": 4}[kind]
    loss = "mse" if kind == "mse3" else kind
    model = mc.MLP([3, 6, n_out], activation="tanh", loss=loss)
    Xs = [rng.normal(size=(11, 3)).astype(dtype) for _ in range(6)]
    if kind == "mse":
        ys = [rng.normal(size=11).astype(dtype) for _ in range(6)]
    elif kind == "mse3":
        ys = [rng.normal(size=(11, 3)).astype(dtype) for _ in range(6)]
    else:
        ys = [rng.integers(0, 2 if kind == "logistic" else 4, 11) for _ in range(6)]
    return model, mc.TaskSet.from_arrays(Xs, ys, n_support=5), model.init(seed=seed, dtype=dtype)


def _direct(model, theta, ts, steps, lr):
    """Per-task query loss and accuracy: φ = mc.adapt(...), outputs = model.predict(φ, Xq) in
    float64, the loss written out (SciPy's logsumexp / log-sigmoid), the accuracy by sklearn."""
    from scipy.special import log_expit, logsumexp
    losses, accs = [], []
    for i in range(ts.n_tasks):
        (Xs, ys), (Xq, yq) = ts.support(i), ts.query(i)
        phi = np.asarray(mc.adapt(model, theta, Xs, ys, steps=steps, lr=lr), dtype=np.float64)
        z = np.asarray(model.predict(phi, np.asarray(Xq, dtype=np.float64)), dtype=np.float64)
        yq = np.asarray(yq, dtype=np.float64)
        if model.loss == "mse":
            losses.append(np.mean((z.reshape(yq.shape[0], -1) - yq.reshape(yq.shape[0], -1)) ** 2))
        elif model.loss == "logistic":
            z = z.reshape(-1)
            losses.append(-np.mean(yq * log_expit(z) + (1 - yq) * log_expit(-z)))
            accs.append(sk_metrics.accuracy_score(yq.astype(int), (z > 0).astype(int)))
        else:
            labels = yq.astype(int)
            losses.append(np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))
            accs.append(sk_metrics.accuracy_score(labels, z.argmax(axis=1)))
    return np.array(losses), (np.array(accs) if accs else None)


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["mse", "mse3", "logistic", "cross_entropy"]),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 1000),
       lr=st.sampled_from([0.03, 0.3]))
def test_per_step_curves_are_each_tasks_adapted_loss_and_accuracy(kind, dtype, seed, lr):
    model, ts, theta = _tasks(kind, dtype, seed)
    steps = (0, 1, 5)
    rep = mc.evaluate(model, theta, ts, steps=steps, lr=lr, progress=False)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for j, s in enumerate(steps):
        losses, accs = _direct(model, theta, ts, s, lr)
        np.testing.assert_allclose(rep.losses[j], losses, rtol=rtol)
        if accs is None:
            assert rep.accuracies is None
        else:
            np.testing.assert_array_equal(rep.accuracies[j], accs)
        row = rep.summary(min_tasks=2)[j]
        m, h = _scipy_ci(losses)
        assert row["loss"] == pytest.approx(m, rel=rtol) and row["steps"] == s
        assert row["loss_ci"] == pytest.approx(h, rel=max(rtol, 1e-9) * 1e3)
        if accs is not None:
            m, h = _scipy_ci(accs)
            assert row["accuracy"] == pytest.approx(m, rel=1e-12)
            if h > 0:
                assert row["accuracy_ci"] == pytest.approx(h, rel=1e-9)


# --- baselines ----------------------------------------------------------------------------------
def test_joint_baseline_is_numpy_adam_on_the_pooled_rows():
    """mc.baselines.joint on a linear model against Adam written out in NumPy, with the design
    matrix read from model.predict (the net is affine in θ): not the core's gradient."""
    rng = np.random.default_rng(1)
    model = mc.Linear(3)
    Xs = [rng.normal(size=(n, 3)) for n in (6, 9, 4)]
    ys = [rng.normal(size=len(X)) for X in Xs]
    ts = mc.TaskSet.from_arrays(Xs, ys, n_support=2)
    theta0, P = model.init(seed=0), model.n_params

    def design(X):
        b = np.asarray(model.predict(np.zeros(P), X), dtype=np.float64).reshape(-1)
        cols = [np.asarray(model.predict(np.eye(P)[j], X)).reshape(-1) - b for j in range(P)]
        return np.stack(cols, axis=1), b

    pieces = [design(X) for X in Xs]
    for weights in (None, [0.5, 0.3, 0.2]):
        got = mc.baselines.joint(model, ts, theta0, steps=7, lr=0.05, weights=weights)
        w = np.full(3, 1 / 3) if weights is None else np.asarray(weights)
        th, m, v = theta0.copy(), np.zeros(P), np.zeros(P)
        for t in range(1, 8):      # f = Σ_i w_i mean_rows (a·θ + b − y)², all rows of each task
            g = sum(wi * 2 / len(y) * A.T @ (A @ th + b - y)
                    for wi, (A, b), y in zip(w, pieces, ys))
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            th = th - (0.05 / (1 - 0.9 ** t)) * m / (np.sqrt(v) / math.sqrt(1 - 0.999 ** t) + 1e-8)
        np.testing.assert_allclose(got, th, rtol=1e-12, atol=1e-14)


def test_scratch_baseline_is_a_fresh_init():
    model = mc.MLP([2, 5, 1])
    got = mc.baselines.scratch(model, seed=4)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, model.init(seed=4, dtype=np.float32))
    np.testing.assert_array_equal(mc.baselines.scratch(model, seed=4, dtype=np.float64),
                                  model.init(seed=4, dtype=np.float64))


def test_pixel_class_mean_is_sklearns_nearest_centroid():
    from sklearn.neighbors import NearestCentroid
    from metacore.app.omniglot import pixel_class_mean
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(25, 6)).astype(np.float32) for _ in range(4)]
    y = np.concatenate([np.repeat(np.arange(5), 2), np.repeat(np.arange(5), 3)])
    ts = mc.TaskSet.from_arrays(Xs, [y] * 4, n_support=10)
    want = [sk_metrics.accuracy_score(y[10:], NearestCentroid().fit(
        X[:10].astype(np.float64), y[:10]).predict(X[10:].astype(np.float64))) for X in Xs]
    np.testing.assert_allclose(pixel_class_mean(ts, 5, 2), want, rtol=1e-15)


# --- the table, the repr, the JSON --------------------------------------------------------------
def _rounds_out(shown, x, digits, up):
    """``shown`` is ``x`` rounded outward at ``digits`` decimals: at most one unit away, on the
    far side (the oracle: Python's decimal module on the exact float)."""
    q = decimal.Decimal(1).scaleb(-digits)
    exact = decimal.Decimal(x)
    s = decimal.Decimal(shown)
    assert s.as_tuple().exponent == -digits
    if up:
        assert s >= exact.quantize(q, decimal.ROUND_FLOOR) and s - exact < q
        assert float(s) >= x - 1e-15 * abs(x)
    else:
        assert s <= exact.quantize(q, decimal.ROUND_CEILING) and exact - s < q
        assert float(s) <= x + 1e-15 * abs(x)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 12), seed=st.integers(0, 2 ** 32 - 1),
       scale=st.sampled_from([1e-5, 1e-3, 0.1, 1.0, 30.0]))
def test_format_table_never_shows_an_interval_narrower_than_computed(n, seed, scale):
    rng = np.random.default_rng(seed)
    losses = rng.exponential(scale, size=(2, n))
    accs = rng.integers(0, 21, size=(2, n)) / 20.0
    rep = EvalReport("R", (0, 3), losses, accs)
    for metric, mult, digits, hi in (("loss", 1.0, 3, math.inf), ("accuracy", 100.0, 1, 1.0)):
        cells = mc.report.format_table([rep], metric=metric).splitlines()[3]
        cells = cells.split(None, 1)[1]
        for j, row in enumerate(rep.summary()):
            values = (losses if metric == "loss" else accs)[j]
            m, h = _scipy_ci(values)
            cell = cells.split("  ")[0] if j == 0 else cells.rsplit("  ", 1)[1]
            cell = cell.strip()
            shown = cell.split()[0]
            assert shown == f"{row[metric] * mult:.{digits}f}"
            assert float(shown) == pytest.approx(m * mult, abs=0.5 * 10 ** -digits + 1e-12)
            if cell.endswith("]*"):            # clipped: the ends, rounded outward
                low, high = cell.split("[")[1].rstrip("]*").split(", ")
                lo_c, hi_c = max(m - h, 0.0), min(m + h, hi)
                assert row[metric + "_clipped"]
                _rounds_out(low, lo_c * mult, digits, up=False)
                _rounds_out(high, hi_c * mult, digits, up=True)
                assert float(low) >= 0.0 and float(high) <= hi * mult
            else:
                assert cell.split()[1] == "±"
                half = float(cell.split()[2])
                need = (h + abs(m - float(shown) / mult)) * mult
                # covers [m − h, m + h] and is the smallest such number shown
                assert half >= need * (1 - 1e-12) and half < need + 10 ** -digits + 1e-12


def test_format_table_shows_a_tiny_interval_as_at_least_one_unit():
    rep = EvalReport("tiny", (0,), np.array([[1e-5, 2e-5, 3e-5, 1e-5, 2e-5]]))
    assert "0.000 ± 0.001" in mc.report.format_table([rep])      # was "0.000 ± 0.000"
    acc = EvalReport("a", (0,), np.ones((1, 5)), np.array([[0.52, 0.5, 0.5, 0.5, 0.5]]))
    h = _scipy_ci([0.52, 0.5, 0.5, 0.5, 0.5])[1] * 100       # 1.1106
    assert "50.4 ± 1.2" in mc.report.format_table([acc], metric="accuracy")   # was ± 1.1
    assert 1.1 < h < 1.2


@settings(max_examples=30, deadline=None)
@given(v=st.lists(st.floats(0.01, 50.0), min_size=5, max_size=10))
def test_repr_half_width_is_rounded_up(v):
    rep = EvalReport("r", (2,), np.array([v]))
    text = repr(rep)
    m, h = _scipy_ci(v)
    shown_m, shown_h = text.split("loss after 2 = ")[1].rstrip(")").split(" ± ")
    assert shown_m == f"{rep.summary()[0]['loss']:.4g}"
    need = h + abs(m - float(shown_m))
    assert float(shown_h) >= need * (1 - 1e-12)
    if need == 0.0:
        assert float(shown_h) == 0.0
        return
    assert float(shown_h) <= need + 10.0 ** (math.floor(math.log10(need)) - 1) * 1.000001


def _same(a, b):
    """Equal JSON-like data, NaN equal to NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


def _nulled(value):
    """What strict JSON holds of ``value``: its non-finite floats as None."""
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulled(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def test_save_json_load_json_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    full = EvalReport("full", (0, 1, 5), rng.exponential(1.0, (3, 8)),
                      rng.integers(0, 5, (3, 8)) / 4, lr=np.float32(0.25), info={"seed": 3})
    few = EvalReport("few", (0, 1), np.array([[1.0, np.inf], [0.5, 0.25]]), lr=np.ones(4))
    path = tmp_path / "sub" / "r.json"
    mc.report.save_json({"A": full, "B": few}, path, extra={"note": "x"})
    data = mc.report.load_json(path)
    assert data["note"] == "x" and [r["name"] for r in data["reports"]] == ["A", "B"]
    for saved, rep in zip(data["reports"], (full, few)):
        assert _same(saved, _nulled(dict(rep.to_dict(), name=saved["name"])))
        for row, want in zip(saved["summary"], rep.summary()):
            assert _same(row, _nulled(want))
    assert data["reports"][0]["lr"] == 0.25 and data["reports"][1]["lr"] == "learned"
    assert data["reports"][1]["summary"][0]["loss"] is None     # strict JSON: inf as null
    assert json.loads(path.read_text())["reports"][0]["n_tasks"] == 8


def test_save_json_refuses_an_extra_that_would_replace_the_reports(tmp_path):
    rep = EvalReport("r", (0,), np.ones((1, 5)))
    with pytest.raises(ValueError, match="extra must not have the key 'reports'"):
        mc.report.save_json([rep], tmp_path / "r.json", extra={"reports": []})
    with pytest.raises(TypeError, match="extra must be a dict"):
        mc.report.save_json([rep], tmp_path / "r.json", extra=[("a", 1)])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, error, match", [
    (((0, 1), np.ones((1, 5))), ValueError, r"losses must have shape \(len\(steps\), n_tasks\)"),
    (((0,), np.ones(5)), ValueError, "losses must be 2-D"),
    (((0,), np.ones((1, 0))), ValueError, "with T >= 1"),
    (((0,), np.ones((1, 5)), np.ones((1, 4))), ValueError, "accuracies must have the shape"),
    (((0,), -np.ones((1, 5))), ValueError, "losses must be >= 0"),
    (((0,), np.ones((1, 5)), np.full((1, 5), 1.5)), ValueError, r"accuracies must be in \[0, 1\]"),
    (((1, 0), np.ones((2, 5))), ValueError, "steps must be increasing"),
])
def test_a_report_built_by_hand_is_checked(args, error, match):
    with pytest.raises(error, match=match):
        EvalReport("x", *args)


def test_a_report_from_lists_has_its_sizes():
    rep = EvalReport("l", [0, 2], [[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert rep.n_tasks == 5 and rep.steps == (0, 2)
    assert rep.at(0) == pytest.approx(_scipy_ci([1, 2, 3, 4, 5]), rel=1e-12)
