"""The command line run as users run it (a subprocess) on tiny configs: outputs and exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import metacore

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(metacore.__file__)))

TINY = """
name = "tiny"
[tasks]
family = "sinusoid"
n_test = 12
test_k_query = 20
[model]
hidden = [8]
[learner]
kind = "{kind}"
[train]
steps = 30
meta_batch = 4
chunk = 10
[evaluate]
steps = [0, 1, 2]
joint_steps = 20
joint_tasks = 20
plot = false
"""


def run(*args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [PACKAGE_ROOT] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "metacore", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tiny(tmp_path):
    def write(kind="maml", extra=""):
        path = tmp_path / f"{kind}.toml"
        path.write_text(TINY.format(kind=kind) + extra)
        return path
    return write


def test_train_then_evaluate_write_their_outputs(tiny, tmp_path):
    cfg = tiny("metasgd")
    r = run("train", str(cfg), "--output", "out", "--quiet", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    out = tmp_path / "out"
    assert {"config.toml", "checkpoint.npz", "history.npz", "results.json", "table.txt"} <= set(
        os.listdir(out))
    results = json.loads((out / "results.json").read_text())
    names = [rep["name"] for rep in results["reports"]]
    assert names[0] == "Meta-SGD" and [n.split()[0] for n in names[1:]] == ["scratch", "joint"]
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ck:
        assert ck["theta"].shape == (2 * 25,)              # θ and the learned rates
    assert np.load(out / "history.npz")["objective"].shape == (30,)

    r = run("evaluate", str(cfg), "--checkpoint", "out/checkpoint.npz", "--output", "ev",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Meta-SGD" in r.stdout and "± " in r.stdout
    again = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert again["reports"][0]["summary"] == results["reports"][0]["summary"]


def test_multitask_and_reptile_configs_train(tiny, tmp_path):
    r = run("train", str(tiny("multitask", '[weighting]\nkind = "uniform"\n')), "--set",
            "tasks.n_train=10", "--quiet", "--output", "mt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("train", str(tiny("reptile")), "--set", "optimizer.kind=none", "--quiet",
            "--output", "rp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, code, words", [
    (["train", "missing.toml"], 2, ["missing.toml"]),
    (["train", "{cfg}", "--set", "learner.kind=protonets"], 2, ["learner.kind", "'maml'"]),
    (["train", "{cfg}", "--set", "learner.kind=protonet"], 2, ["learner.kind 'protonet'",
                                                              "tasks.family 'sinusoid'"]),
    (["train", "{cfg}", "--set", "train.stepz=3"], 2, ["unknown key train.stepz"]),
    (["train", "{cfg}", "--threads", "0"], 2, ["--threads"]),
    (["evaluate", "{cfg}", "--checkpoint", "nope.npz"], 2, ["nope.npz"]),
    (["evaluate", "{cfg}"], 2, ["--checkpoint"]),
    (["frobnicate"], 2, ["invalid choice"]),
])
def test_errors_give_exit_codes_and_name_the_problem(tiny, tmp_path, args, code, words):
    cfg = str(tiny())
    r = run(*[a.format(cfg=cfg) for a in args], cwd=tmp_path)
    assert r.returncode == code
    for w in words:
        assert w in r.stderr
    assert "Traceback" not in r.stderr


def test_a_checkpoint_of_another_learner_is_refused(tiny, tmp_path):
    r = run("train", str(tiny("maml")), "--quiet", "--output", "m", cwd=tmp_path)
    assert r.returncode == 0
    r = run("evaluate", str(tiny("metasgd")), "--checkpoint", "m/checkpoint.npz", cwd=tmp_path)
    assert r.returncode == 2 and "learner 'maml'" in r.stderr


def test_missing_optional_dependency_exits_3(tmp_path):
    blocker = tmp_path / "block" / "sklearn"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    cfg = tmp_path / "d.toml"
    cfg.write_text('[tasks]\nfamily = "digits"\nn_train = 30\n[train]\nsteps = 2\n')
    r = run("train", str(cfg), "--quiet", cwd=tmp_path,
            env_extra={"PYTHONPATH": os.pathsep.join([str(tmp_path / "block"), PACKAGE_ROOT])})
    assert r.returncode == 3 and "metacore[data]" in r.stderr


def test_demo_runs_small_and_writes_table_and_json(tmp_path):
    r = run("demo", "--steps", "40", "--test-tasks", "15", "--output", "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("MAML", "Meta-SGD", "MAML++", "iMAML", "joint"):
        assert name in r.stdout
    assert "published, one step, 10-shot" in r.stdout
    assert "iMAML 200 inner steps (proximal, λ 50, 5 CG steps) at 0.0005, 40 meta-steps" \
        in r.stdout
    data = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert data["meta_steps"] == 40 and len(data["reports"]) == 5
    assert data["recipes"]["MAML++"] == {"inner_steps": 5, "inner_lr": 0.01, "meta_steps": 40}
    # every learner at its trained step count and more; Meta-SGD at the one step its rates
    # were learned for, not beyond
    steps = {r["name"]: [row["steps"] for row in r["summary"]] for r in data["reports"]}
    assert steps["Meta-SGD"] == [0, 1] and steps["MAML++"] == [0, 1, 5, 10]
    assert steps["iMAML"] == [0, 1, 10, 200, 400] and steps["MAML"] == [0, 1, 5, 10]
    # past their trained counts MAML++ (smallest positive learned rates) and iMAML (a converged
    # proximal loop) stay finite even after 40 meta-steps (MAML's fixed rate 0.01 need not)
    for rep in data["reports"]:
        if rep["name"] in ("MAML++", "iMAML"):
            assert all(np.isfinite(row["loss"]) for row in rep["summary"]), rep["name"]
    assert run("demo", "--steps", "0", cwd=tmp_path).returncode == 2


def test_bench_quick_prints_speedups(tmp_path):
    r = run("bench", "--quick", "--threads", "1", "--output", "b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]
    assert len(rows) == 5 and all(row["speedup"] > 0 for row in rows)
    assert "speed-up" in r.stdout


def test_demo_keeps_the_other_learners_when_one_diverges(tmp_path, monkeypatch, capsys):
    """A learner whose meta-training diverges (MAML++ at K = 20, seed 0, did at meta-step 557)
    is scored at its last finite θ and named under the table; the other learners' runs are kept
    and the demo completes (it used to end in a traceback, losing every row)."""
    import metacore as mc
    from metacore.app import cli

    real_fit = mc.fit

    def fit(problem, theta0, **kw):
        learner = problem.learner
        if isinstance(learner, mc.MAML) and learner.inner_steps == 5:   # the demo's MAML++
            res = real_fit(problem, theta0, **{**kw, "steps": 7})
            raise mc.FitDivergedError("the loss became inf at step 7", 7, None, res)
        return real_fit(problem, theta0, **kw)

    monkeypatch.setattr(mc, "fit", fit)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--steps", "20", "--test-tasks", "10", "--output", str(out),
                     "--quiet"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["diverged_at_meta_step"] == {"MAML++": 7}
    assert [r["name"] for r in data["reports"]] == ["MAML", "Meta-SGD", "MAML++", "iMAML",
                                                     "joint"]
    assert len(data["reports"]) == 5
    cli.main(["demo", "--steps", "20", "--test-tasks", "10", "--output", str(out)])
    printed = capsys.readouterr().out
    assert "MAML++: its meta-training diverged at meta-step 7" in printed
