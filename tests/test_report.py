"""mc.report: rows labelled by dict keys, a plot that never touches the user's matplotlib state,
honest axes and bands; EvalReport's repr and to_dataframe against a direct computation."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.evaluation.protocol import EvalReport
from metacore.evaluation.report import LOG_SCALE_RATIO
from metacore.evaluation.statistics import MIN_TASKS_FOR_CI

scipy_stats = pytest.importorskip("scipy.stats")


def _report(name, losses, accuracies=None, steps=None):
    losses = np.asarray(losses, dtype=np.float64)
    steps = tuple(range(losses.shape[0])) if steps is None else steps
    acc = None if accuracies is None else np.asarray(accuracies, dtype=np.float64)
    return EvalReport(name=name, steps=steps, losses=losses, accuracies=acc)


def _direct(values, bounds):
    """mean, half-width and clipped ends by NumPy + SciPy's t quantile (the oracle)."""
    v = np.asarray(values, dtype=np.float64)
    m = v.mean()
    h = scipy_stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return m, h, max(m - h, bounds[0]), min(m + h, bounds[1])


@pytest.fixture(scope="module")
def two_thetas():
    model = mc.MLP([1, 8, 1], activation="relu", loss="mse")
    ts = mc.tasks.sinusoid(8, k_support=5, k_query=10, seed=3)
    a = mc.evaluate(model, model.init(seed=0), ts, steps=(0, 1, 3))
    b = mc.evaluate(model, model.init(seed=1), ts, steps=(0, 1, 3))
    return a, b


# --- the table and the JSON keep the caller's labels ----------------------------------------------
def test_format_table_labels_rows_by_the_dict_keys(two_thetas, tmp_path):
    a, b = two_thetas
    assert a.name == b.name == "theta"
    table = mc.report.format_table({"MAML": a, "scratch": b})
    rows = table.splitlines()[3:]
    assert [r.split()[0] for r in rows] == ["MAML", "scratch"]
    assert "theta" not in table
    for row, rep in zip(rows, (a, b)):
        m, h = _direct(rep.losses[1], (0.0, math.inf))[:2]
        shown = f"{m:.3f}"
        cell = row.split()[4:7]       # the 1-step column: mean ± half-width, rounded up
        assert cell[:2] == [shown, "±"]
        assert h + abs(m - float(shown)) <= float(cell[2]) < h + abs(m - float(shown)) + 1e-3
    # a sequence keeps the reports' own names
    assert [r.split()[0] for r in mc.report.format_table([a, b]).splitlines()[3:]] == \
        ["theta", "theta"]
    mc.report.save_json({"MAML": a, "scratch": b}, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["name"] for r in data["reports"]] == ["MAML", "scratch"]
    assert not list(tmp_path.glob(".*.tmp"))      # written atomically, no leftovers


def test_format_table_refuses_bad_arguments(two_thetas):
    a, _ = two_thetas
    with pytest.raises(ValueError, match="metric"):
        mc.report.format_table([a], metric="acc")
    with pytest.raises(TypeError, match="reports"):
        mc.report.format_table({"x": 1.0})
    with pytest.raises(TypeError, match="reports"):
        mc.report.format_table(3)


def test_format_table_says_which_methods_have_too_few_tasks():
    few = _report("r", [[1.0, 2.0, 3.0]])
    table = mc.report.format_table({"tiny": few})
    assert "tiny: 3" in table and f"at least {MIN_TASKS_FOR_CI}" in table
    assert "±" not in table.splitlines()[3]


# --- the plot -------------------------------------------------------------------------------------
def test_plot_never_switches_the_backend_nor_uses_pyplot(two_thetas, tmp_path):
    pytest.importorskip("matplotlib")
    package = os.path.dirname(os.path.dirname(mc.__file__))
    code = f"""
import sys, numpy as np, matplotlib
matplotlib.use("pdf")
import metacore as mc
from metacore.evaluation.protocol import EvalReport
r = EvalReport("a", (0, 1), np.array([[1.0, 2, 3, 4, 5], [0.5, 1, 1.5, 2, 2.5]]))
fig = mc.report.plot([r])
path = mc.report.plot({{"A": r}}, {str(tmp_path / 'c.png')!r})
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
print(type(fig).__name__, path)
"""
    env = dict(os.environ, PYTHONPATH=package)
    env.pop("MPLBACKEND", None)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["Figure", str(tmp_path / "c.png")]
    with open(tmp_path / "c.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_on_a_given_axes_the_means_and_clipped_bands(two_thetas):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    a, b = two_thetas
    fig = Figure()
    ax = fig.add_subplot()
    assert mc.report.plot({"MAML": a, "scratch": b}, ax=ax) is fig
    assert [line.get_label() for line in ax.get_lines()] == ["MAML", "scratch"]
    for line, rep in zip(ax.get_lines(), (a, b)):
        np.testing.assert_array_equal(line.get_xdata(), [0, 1, 3])
        np.testing.assert_allclose(line.get_ydata(), rep.losses.mean(axis=1), rtol=1e-12)
    assert len(ax.collections) == 2                      # one band per report
    for band, rep in zip(ax.collections, (a, b)):
        ys = band.get_paths()[0].vertices[:, 1]
        ends = [_direct(rep.losses[j], (0.0, math.inf))[2:] for j in range(3)]
        np.testing.assert_allclose([ys.min(), ys.max()],
                                   [min(e[0] for e in ends), max(e[1] for e in ends)], rtol=1e-9)
    assert "95% CI" in ax.get_title() and "8 tasks" in ax.get_title()


def test_plot_clips_accuracy_bands_to_0_1_and_flags_too_few_tasks():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    acc = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0, 0.9]])
    clipped = _report("wide", np.ones((2, 6)), acc)
    few = _report("few", np.ones((2, 3)), np.full((2, 3), 0.5))
    fig = mc.report.plot({"wide": clipped, "few": few}, metric="accuracy")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert ys.max() == 1.0 and ys.min() == 0.0          # the t interval runs past both ends
    m0, h0 = _direct(acc[0], (0, 1))[:2]
    assert m0 + h0 > 1.0 and acc[1].mean() - _direct(acc[1], (0, 1))[1] < 0.0
    assert len(ax.collections) == 1                      # no band for 3 tasks
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["wide", "few (no CI: 3 tasks)"]
    assert "3/6 tasks" in ax.get_title()


def test_plot_uses_a_log_axis_when_one_loss_explodes():
    pytest.importorskip("matplotlib")
    calm = _report("calm", [[1.0] * 5, [0.5] * 5, [0.3] * 5])
    boom = _report("boom", [[1.0] * 5, [80.0] * 5, [1e5] * 5])
    mild = _report("mild", [[1.0] * 5, [5.0] * 5, [0.3 * LOG_SCALE_RATIO / 2] * 5])   # ratio 25
    assert mc.report.plot([calm, boom]).axes[0].get_yscale() == "log"
    assert mc.report.plot([calm, mild]).axes[0].get_yscale() == "linear"
    assert mc.report.plot([calm, boom], yscale="linear").axes[0].get_yscale() == "linear"
    assert mc.report.plot([calm], yscale="log").axes[0].get_yscale() == "log"
    assert "log scale" in mc.report.plot([calm, boom]).axes[0].get_ylabel()


def test_plot_leaves_out_diverged_points_and_says_so():
    pytest.importorskip("matplotlib")
    rep = _report("gd", [[1.0] * 5, [2.0] * 5, [math.inf] * 5], steps=(0, 1, 5))
    ax = mc.report.plot([rep]).axes[0]
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [0, 1])
    assert line.get_label() == "gd (diverged from 5 steps)"


def test_plot_refuses_bad_arguments(two_thetas, tmp_path):
    pytest.importorskip("matplotlib")
    a, _ = two_thetas
    with pytest.raises(TypeError, match="ax"):
        mc.report.plot([a], ax="left")
    with pytest.raises(ValueError, match="yscale"):
        mc.report.plot([a], yscale="symlog")
    with pytest.raises(ValueError, match="metric"):
        mc.report.plot([a], metric="mse")


def _without_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.axes"):
        monkeypatch.setitem(sys.modules, name, None)     # import matplotlib... fails


@pytest.mark.parametrize("where", [None, "x.png", "sub/x.svg", "x"])
def test_plot_without_matplotlib_says_what_to_install(two_thetas, tmp_path, monkeypatch, where):
    """With or without a path (it returned None for a path, silently plotting nothing)."""
    a, _ = two_thetas
    _without_matplotlib(monkeypatch)
    path = None if where is None else tmp_path / where
    with pytest.raises(ImportError, match=r"^metacore.report.plot needs matplotlib: "
                                          r"pip install 'metacore\[plot\]'"):
        mc.report.plot([a], path)
    assert os.listdir(tmp_path) == []       # no file, no folder


def test_a_run_without_matplotlib_writes_everything_else_and_says_so(tmp_path, monkeypatch,
                                                                     capsys):
    from metacore.app import cli
    _without_matplotlib(monkeypatch)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\n[tasks]\nfamily = "sinusoid"\nn_test = 5\n'
                   '[model]\nhidden = [4]\n[learner]\nkind = "maml"\n'
                   '[train]\nsteps = 2\nmeta_batch = 2\n'
                   '[evaluate]\nsteps = [0, 1]\nbaselines = []\nplot = true\n')
    assert cli.main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "plot: skipped (metacore.report.plot needs matplotlib: pip install " \
           "'metacore[plot]'" in out
    assert {"results.json", "table.txt", "checkpoint.npz"} <= set(os.listdir(tmp_path / "out"))
    assert "adaptation.png" not in os.listdir(tmp_path / "out")


# --- EvalReport: repr and to_dataframe --------------------------------------------------------------
def test_eval_report_repr_is_short(two_thetas):
    a, _ = two_thetas
    text = repr(a)
    assert text.startswith("EvalReport('theta', n_tasks=8, steps=(0, 1, 3)")
    assert "\n" not in text and len(text) < 160 and "array" not in text
    m, h = _direct(a.losses[2], (0, math.inf))[:2]
    assert f"loss after 3 = {m:.4g} ± " in text
    shown_h = float(text.split(" ± ")[1].rstrip(")"))
    # rounded up at 2 significant digits, covering the mean's own rounding: never narrower
    need = h + abs(m - float(f"{m:.4g}"))
    assert need <= shown_h <= need + 10.0 ** (math.floor(math.log10(need)) - 1) * 1.000001


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 3), st.integers(0, 2 ** 32 - 1))
def test_eval_report_to_dataframe_matches_a_direct_computation(n_tasks, n_steps, seed):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    losses = rng.exponential(1.0, size=(n_steps, n_tasks))
    accs = rng.integers(0, 11, size=(n_steps, n_tasks)) / 10.0
    rep = _report("R", losses, accs, steps=tuple(range(0, 2 * n_steps, 2)))
    df = rep.to_dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == n_steps
    assert list(df["method"]) == ["R"] * n_steps and list(df["n_tasks"]) == [n_tasks] * n_steps
    assert list(df["steps"]) == list(rep.steps)
    for metric, values, bounds in (("loss", losses, (0.0, math.inf)),
                                   ("accuracy", accs, (0.0, 1.0))):
        np.testing.assert_allclose(df[metric], values.mean(axis=1), rtol=1e-12)
        few = n_tasks < MIN_TASKS_FOR_CI
        assert list(df["too_few_tasks"]) == [few] * n_steps
        for j in range(n_steps):
            row = df.iloc[j]
            if few:
                assert math.isnan(row[metric + "_ci"]) and math.isnan(row[metric + "_low"])
                assert not row[metric + "_clipped"]
                continue
            m, h, low, high = _direct(values[j], bounds)
            assert row[metric + "_ci"] == pytest.approx(h, rel=1e-9, abs=1e-12)
            assert row[metric + "_low"] == pytest.approx(low, rel=1e-9, abs=1e-12)
            assert row[metric + "_high"] == pytest.approx(high, rel=1e-9, abs=1e-12)
            assert bounds[0] <= row[metric + "_low"] <= row[metric + "_high"] <= bounds[1]
            assert row[metric + "_clipped"] == (m - h < bounds[0] or m + h > bounds[1])


def test_eval_report_to_dataframe_without_accuracy_and_concatenated(two_thetas):
    pd = pytest.importorskip("pandas")
    a, b = two_thetas
    df = pd.concat([a.to_dataframe(), b.to_dataframe()], ignore_index=True)
    assert not any(c.startswith("accuracy") for c in df.columns)
    np.testing.assert_allclose(df["loss"], np.concatenate([a.losses.mean(1), b.losses.mean(1)]),
                               rtol=1e-12)


def test_to_dataframe_without_pandas_names_the_install(two_thetas, monkeypatch):
    a, _ = two_thetas
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        a.to_dataframe()


def test_plot_accuracy_leaves_out_regression_reports(two_thetas):
    pytest.importorskip("matplotlib")
    a, _ = two_thetas
    cls = _report("clf", np.ones((2, 6)), np.full((2, 6), 0.5))
    ax = mc.report.plot({"reg": a, "clf": cls}, metric="accuracy").axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["clf"]
    with pytest.raises(ValueError, match="accuracies"):
        mc.report.plot([a], metric="accuracy")


def test_a_wide_band_alone_keeps_a_linear_axis():
    pytest.importorskip("matplotlib")
    # mean 1, values 1 ± d (sd d): the band reaches down to 1e-4 > 0, four orders of magnitude
    # below its top, while the means span none
    d = (1 - 1e-4) / (scipy_stats.t.ppf(0.975, 4) / math.sqrt(5))
    wide = _report("wide", [[1 + d, 1 - d, 1 + d, 1 - d, 1.0]] * 2)
    ax = mc.report.plot([wide]).axes[0]
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(1e-4, rel=1e-6) and ys.max() / ys.min() > LOG_SCALE_RATIO
    assert ax.get_yscale() == "linear"


def test_the_demo_without_matplotlib_writes_its_table_and_json_and_says_so(tmp_path,
                                                                          monkeypatch, capsys):
    from metacore.app import cli
    _without_matplotlib(monkeypatch)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--steps", "2", "--test-tasks", "5", "--output", str(out)]) == 0
    assert f"wrote {out}/results.json, {out}/table.txt (no plot: pip install 'metacore[plot]')" \
        in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["results.json", "table.txt"]
