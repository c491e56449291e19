"""Task names are data: any text (line breaks, carriage returns, quotes, commas, tabs, NUL,
surrounding spaces, any script) survives a CSV file read by mc.tasks.from_csv, results.json,
the output of ``metacore predict`` and the reprs and tables that show it — each stays one
parseable field, one task, one row. (The reader stripped every value, merging " a", "a\\n" and
"a" into one task; NumPy's str dtype dropped a trailing NUL, merging "a\\x00" into "a"; predict's
CSV left a value with "\\r" unquoted; TaskSet's repr and format_table printed line breaks raw.)"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.app import cli, experiment
from metacore.data.tabular import from_csv
from metacore.evaluation.protocol import EvalReport

AWKWARD = ["a\nb", "a", "a\x00", " a", "a ", "\nstart", 'q"uote', "com,ma", "cr\rx", "crlf\r\n",
           "tab\tx", "ünïcødé", "名前", "😀", '"', ",", "\x1c\x85\u2028sep"]

# any text but lone surrogates (no UTF-8 file holds them) and blank text (a missing task id)
names_st = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8) \
    .filter(lambda s: s.strip() != "")
name_lists = st.lists(st.one_of(names_st, st.sampled_from(AWKWARD)), min_size=1, max_size=8,
                      unique=True)


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _integer_text(u):
    u = u.strip()          # " 12" is 12, its name kept as written
    digits = u[1:] if u.startswith("-") else u
    return digits.isascii() and digits.isdigit() and str(int(u)) == u


def _numeric(names):
    """Whether the ids sort as integers: all integers, no two texts of the same one."""
    return all(map(_integer_text, names)) and len({int(n) for n in names}) == len(names)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=name_lists, rows=st.integers(2, 4))
def test_from_csv_keeps_every_name_as_written_one_task_each(tmp_path, names, rows):
    path = tmp_path / "t.csv"
    data = [[n, 10.0 * i + k, float(i)] for i, n in enumerate(names) for k in range(rows)]
    _write(path, ["task", "x", "y"], data)
    ts = from_csv(path, task="task", target="y", n_support=1)
    want = sorted(names, key=int) if _numeric(names) else sorted(names)
    assert ts.names == tuple(want) and ts.n_tasks == len(names)
    for j, name in enumerate(ts.names):       # each task holds the rows written under its name
        i = names.index(name)
        X, y = ts[j]
        np.testing.assert_array_equal(X[:, 0], [10.0 * i + k for k in range(rows)])
        assert (y == i).all()
    text = repr(ts)
    assert "\n" not in text and "\r" not in text
    shown = [repr(n if len(n) <= 16 else n[:15] + "…") for n in ts.names[:3]]
    assert text.endswith(f"names=[{', '.join(shown)}{', ...' if len(names) > 3 else ''}])")


@settings(max_examples=60, deadline=None)
@given(names=name_lists)
def test_format_table_keeps_one_line_per_method_whatever_its_name(names):
    rep = EvalReport(name="r", steps=(0, 1), losses=np.ones((2, 5)))
    table = mc.report.format_table({n: rep for n in names}, title="t\nitle")
    lines = table.splitlines()     # also splits at \x1c, \x85, \u2028: none may be left raw
    assert len(lines) == 3 + len(names)
    assert lines[0] == "t\\nitle"
    for line, n in zip(lines[3:], names):
        label = "".join(c if c.isprintable() else repr(c)[1:-1] for c in n)
        assert line.startswith(label) and line.split()[-3:] == ["1.000", "±", "0.000"]


def test_format_table_refuses_a_title_that_is_no_text():
    rep = EvalReport(name="r", steps=(0,), losses=np.ones((1, 5)))
    with pytest.raises(TypeError, match="^title must be a str or None, got int 3$"):
        mc.report.format_table([rep], title=3)


# --- the command line: a CSV run's results.json and predict's output ------------------------
TRAIN_NAMES = ["a\nb", "a", " a", "a\x00", 'q"uote', "com,ma", "cr\rx", "ünï"]

EXPERIMENT = """
name = "names"
[tasks]
family = "csv"
path = "shops.csv"
task_column = "shop"
target = "sales"
support = 0.5
test_fraction = 0.5
[model]
hidden = [4]
[learner]
kind = "maml"
inner_lr = 0.05
[train]
steps = 3
meta_batch = 2
[evaluate]
steps = [0, 1]
baselines = []
plot = false
"""


def _rows(names, n, seed):
    rng = np.random.default_rng(seed)
    return [[name, *map(repr, rng.normal(size=2).tolist()), repr(float(rng.normal()))]
            for name in names for _ in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    _write(folder / "shops.csv", ["shop", "f1", "f2", "sales"], _rows(TRAIN_NAMES, 6, 0))
    (folder / "names.toml").write_text(EXPERIMENT)
    assert cli.main(["train", str(folder / "names.toml"), "--output", str(folder / "out"),
                     "--quiet"]) == 0
    return folder


def test_results_json_holds_every_task_name_exactly(run):
    text = (run / "out" / "results.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert sorted(data["train_tasks"] + data["test_tasks"]) == sorted(TRAIN_NAMES)
    (per_task,) = data["per_task"].values()
    assert sorted(per_task["loss"]) == sorted(data["test_tasks"])
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in per_task["loss"].values())
    ck = mc.load(run / "out" / "checkpoint.npz")
    assert ck.info["test_tasks"] == data["test_tasks"]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=name_lists, seed=st.integers(0, 1000))
def test_predict_writes_csv_that_reads_back_to_its_input(run, tmp_path, names, seed):
    """Every input row comes back once, its task name and numbers as written, adapted on the
    support rows of its own task (the same prediction as adapting on them in-process)."""
    rows = _rows(names, 2, seed)
    _write(tmp_path / "in.csv", ["shop", "f1", "f2", "sales"], rows)
    support = _rows(names, 3, seed + 1)
    _write(tmp_path / "s.csv", ["shop", "f1", "f2", "sales"], support)
    got = experiment.run_predict(str(run / "out" / "checkpoint.npz"), str(tmp_path / "in.csv"),
                                 str(tmp_path / "p.csv"), support_path=str(tmp_path / "s.csv"),
                                 steps=1, quiet=True)
    out = _read(tmp_path / "p.csv")
    assert out[0] == ["shop", "f1", "f2", "sales", "prediction"]
    assert [r[:4] for r in out[1:]] == rows
    assert (tmp_path / "p.csv").read_bytes().count(b"\r\n") >= len(rows) + 1   # RFC 4180 rows
    ck = mc.load(run / "out" / "checkpoint.npz")
    for name in names:
        mine = [i for i, r in enumerate(rows) if r[0] == name]
        Xs = np.array([[float(v) for v in r[1:3]] for r in support if r[0] == name])
        ys = np.array([float(r[3]) for r in support if r[0] == name])
        Xq = np.array([[float(v) for v in rows[i][1:3]] for i in mine])
        want = mc.adapt_predict(ck.model, ck.theta, Xs.astype(ck.theta.dtype),
                                ys.astype(ck.theta.dtype), Xq.astype(ck.theta.dtype), steps=1,
                                lr=0.05)
        np.testing.assert_allclose([float(out[1 + i][4]) for i in mine], got[mine], rtol=1e-6)
        np.testing.assert_allclose(got[mine], want, rtol=1e-5, atol=1e-6)
