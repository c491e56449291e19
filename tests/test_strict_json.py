"""Every JSON file metacore writes is strict JSON (RFC 8259): a number that is not finite is
written as null — never Python's NaN/Infinity tokens, which strict parsers and JavaScript's
JSON.parse reject — through the one writer (train.checkpoint.write_json, atomic)."""

from __future__ import annotations

import ast
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.evaluation.protocol import EvalReport
from metacore.train.checkpoint import json_text, write_json


def strict_loads(text):
    """json.loads that refuses NaN, Infinity and -Infinity, as RFC 8259 parsers do."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def nulled(value):
    """The oracle: ``value`` with non-finite floats as None, NumPy scalars as Python numbers."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {k: nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nulled(v) for v in value]
    return value


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, np.float32("nan"), np.float32(np.inf),
                     np.float64(-np.inf), np.float32(1.5), np.int64(-3), np.bool_(True)]),
    st.integers(-10**6, 10**6), st.booleans(), st.none(), st.text(max_size=5))
nested = st.recursive(numbers, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(data=nested)
def test_json_text_is_strict_and_keeps_every_finite_value(data):
    assert strict_loads(json_text(data)) == nulled(data)      # finite floats read back bit for bit


def test_json_text_refuses_on_request_and_names_what_json_cannot_hold():
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_text({"x": [1.0, math.inf]}, non_finite="error")
    assert json_text({"x": [1.0, 2]}, non_finite="error", indent=None) == '{"x": [1.0, 2]}'
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_text({"x": object()})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        json_text(loop)
    with pytest.raises(ValueError, match="non_finite"):
        json_text({}, non_finite="nan")


def _report(name, losses, accuracies=None):
    losses = np.asarray(losses, dtype=np.float64)
    return EvalReport(name=name, steps=tuple(range(losses.shape[0])), losses=losses,
                      accuracies=accuracies)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_tasks=st.integers(1, 8), n_steps=st.integers(1, 3),
       diverged=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 7)), max_size=4),
       seed=st.integers(0, 2**32 - 1),
       extra=st.dictionaries(st.sampled_from(["seconds", "note", "per_task"]), nested,
                             max_size=3))
def test_save_json_writes_strict_json_with_null_for_non_finite_numbers(
        tmp_path, n_tasks, n_steps, diverged, seed, extra):
    rng = np.random.default_rng(seed)
    losses = rng.uniform(0.0, 5.0, (n_steps, n_tasks))
    acc = rng.uniform(0.0, 1.0, (n_steps, n_tasks))
    for s, t in diverged:                 # a diverged task: loss inf, accuracy NaN
        if s < n_steps and t < n_tasks:
            losses[s, t], acc[s, t] = math.inf, math.nan
    rep = _report("m", losses, acc)
    path = tmp_path / "results.json"
    mc.report.save_json({"A": rep}, path, extra=extra)
    data = strict_loads(path.read_text())
    want = nulled(dict(rep.to_dict(), name="A"))
    assert data["reports"] == [want]
    for row, s in zip(data["reports"][0]["summary"], range(n_steps)):
        mean = float(np.mean(losses[s]))
        assert row["loss"] == (mean if math.isfinite(mean) else None)
        if n_tasks < 5:                          # too few tasks: no interval, written as null
            assert row["loss_ci"] is None and row["too_few_tasks"] is True
    for k, v in extra.items():
        assert data[k] == nulled(v)
    assert mc.report.load_json(path) == data
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_load_json_still_reads_files_of_earlier_versions(tmp_path):
    path = tmp_path / "old.json"
    path.write_text('{"reports": [], "x": NaN, "y": Infinity}')
    data = mc.report.load_json(path)
    assert math.isnan(data["x"]) and data["y"] == math.inf


def test_write_json_is_atomic_and_leaves_the_old_file_on_a_bad_value(tmp_path):
    path = tmp_path / "f.json"
    write_json(path, {"a": math.nan, "b": [np.float32(0.25)]})
    assert path.read_text() == '{\n  "a": null,\n  "b": [\n    0.25\n  ]\n}'
    with pytest.raises(TypeError):
        write_json(path, {"a": {1, 2}})
    assert strict_loads(path.read_text()) == {"a": None, "b": [0.25]}
    assert os.listdir(tmp_path) == ["f.json"]


def test_the_cli_results_json_is_strict_when_adaptation_diverges(tmp_path):
    """metacore train with an evaluation rate that blows every task up: results.json holds the
    diverged means and per-task losses as null (it held Infinity and NaN)."""
    from metacore.app import cli
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\n[tasks]\nfamily = "sinusoid"\nn_test = 6\n'
                   '[model]\nhidden = [4]\n[learner]\nkind = "maml"\n'
                   '[train]\nsteps = 4\nmeta_batch = 2\n'
                   '[evaluate]\nsteps = [0, 2]\nlr = 1e30\nbaselines = []\nplot = false\n')
    assert cli.main(["train", str(cfg), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    data = strict_loads((tmp_path / "out" / "results.json").read_text())
    (rep,) = data["reports"]
    assert rep["summary"][0]["loss"] > 0 and rep["summary"][1]["loss"] is None
    per_task = data["per_task"][rep["name"]]["loss"]
    assert len(per_task) == 6
    assert all(v[0] > 0 and v[1] is None for v in per_task.values())


def test_the_package_writes_json_only_through_json_text():
    """One encoder: the only json.dump/json.dumps call in the package is json_text's."""
    import metacore.train.checkpoint as checkpoint
    root = os.path.dirname(mc.__file__)
    calls = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
                calls += [(os.path.relpath(path, root), node.lineno) for node in ast.walk(tree)
                          if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                          and node.func.attr in ("dump", "dumps")
                          and getattr(node.func.value, "id", None) == "json"]
    src, first = __import__("inspect").getsourcelines(checkpoint.json_text)
    assert len(calls) == 1, calls
    assert calls[0][0] == os.path.join("train", "checkpoint.py")
    assert first <= calls[0][1] < first + len(src)
