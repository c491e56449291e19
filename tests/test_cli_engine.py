"""`metacore train` runs on the one engine: its checkpoint is mc.save's, --resume continues
bit-identically, Ctrl-C leaves a checkpoint to resume from, history.npz covers the whole run,
and every optimizer key of the TOML reaches mc.fit."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import metacore as mc
from metacore.app import config, experiment

from test_cli import PACKAGE_ROOT, run

META = """
name = "meta"
[tasks]
family = "sinusoid"
n_test = 8
[model]
hidden = [8]
[learner]
kind = "{kind}"
[train]
steps = 60
meta_batch = 4
chunk = 10
validate_every = 10
checkpoint_every = 20
[evaluate]
steps = [0, 1]
baselines = []
plot = false
"""

MULTITASK = """
name = "mt"
[tasks]
family = "linear"
n_features = 4
k_support = 6
k_query = 4
n_train = 6
n_test = 5
[model]
hidden = [5]
[learner]
kind = "multitask"
[weighting]
kind = "dwa"
[weighting.settings]
temperature = 3.0
[optimizer]
kind = "adam"
lr = 0.01
[train]
steps = 60
meta_batch = 4
chunk = 10
validate_every = 10
checkpoint_every = 25
[evaluate]
steps = [0, 1]
lr = 0.05
baselines = []
plot = false
"""


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("text", [META.format(kind="maml"), META.format(kind="metasgd"),
                                  MULTITASK], ids=["maml", "metasgd", "multitask-dwa"])
def test_resume_is_bit_identical_and_history_covers_the_whole_run(tmp_path, text):
    cfg = write(tmp_path, text)
    ok(run("train", cfg, "--quiet", "--output", "whole", cwd=tmp_path))
    ok(run("train", cfg, "--quiet", "--output", "parts", "--steps", "30", cwd=tmp_path))
    half = mc.load(tmp_path / "parts" / "checkpoint.npz")
    assert half.step == 30
    ok(run("train", cfg, "--quiet", "--output", "parts", "--resume", cwd=tmp_path))

    whole, parts = (mc.load(tmp_path / d / "checkpoint.npz") for d in ("whole", "parts"))
    assert whole.step == parts.step == 60
    np.testing.assert_array_equal(parts.theta, whole.theta)
    assert parts.info["config"]["name"] == config.load(cfg).name

    h_whole = np.load(tmp_path / "whole" / "history.npz")
    h_parts = np.load(tmp_path / "parts" / "history.npz")
    assert sorted(h_whole.files) == sorted(h_parts.files)
    np.testing.assert_array_equal(h_parts["step"], np.arange(60))
    # evaluated every validate_every steps and at each checkpoint, once at each resume step
    every = config.load(cfg).train.checkpoint_every
    np.testing.assert_array_equal(h_parts["eval_step"], sorted(
        set(range(0, 61, 10)) | set(range(0, 61, every))))
    for key in ("objective", "grad_norm", "lr", "train_loss", "val_loss", "task_losses",
                "weights"):
        np.testing.assert_array_equal(h_parts[key], h_whole[key], err_msg=key)
    assert np.isfinite(h_parts["val_loss"]).all()
    if "multitask" in text:                        # α over time, one column per training task
        assert h_parts["weights"].shape == (len(h_parts["eval_step"]), 6)
        assert not np.allclose(h_parts["weights"], h_parts["weights"][0])


def test_mc_load_reads_the_cli_checkpoint_and_mc_fit_resumes_it(tmp_path):
    cfg = write(tmp_path, META.format(kind="maml"))
    ok(run("train", cfg, "--quiet", "--output", "o", "--steps", "40", cwd=tmp_path))
    ck = mc.load(tmp_path / "o" / "checkpoint.npz")
    assert ck.resumable and ck.step == 40 and ck.problem["kind"] == "meta"
    assert mc.learners.from_dict(ck.problem["learner"]).kind == "maml"
    assert ck.info["learner"] == "maml" and config.from_dict(ck.info["config"]).train.steps == 40
    exp = experiment.build(config.from_dict(ck.info["config"]))
    res = mc.fit(experiment.problem(exp), ck, steps=5, progress=False)
    assert res.step == 45


def test_sigint_writes_a_checkpoint_exits_130_and_resume_finishes_the_run(tmp_path):
    # The signal goes out once the first checkpoint (step 250) exists, in a run configured for
    # ten million steps, so no machine finishes it first (a 20,000-step run once did: timing is
    # not a test). The cut run is then resumed to a fixed step and compared with a whole run
    # to that step.
    text = META.format(kind="maml").replace("hidden = [8]", "hidden = [40, 40]").replace(
        "meta_batch = 4", "meta_batch = 10").replace("steps = 60", "steps = 10000000").replace(
        "checkpoint_every = 20", "checkpoint_every = 250").replace("validate_every = 10",
                                                                    "validate_every = 0")
    cfg = write(tmp_path, text)
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "metacore", "train", cfg, "--quiet",
                             "--output", "cut"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = tmp_path / "cut" / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert err.count("metacore: interrupted") == 1, err     # said once, with the resume line
    cut = mc.load(ckpt)
    assert 250 <= cut.step < 10000000
    end = str(cut.step + 300)

    ok(run("train", cfg, "--quiet", "--output", "cut", "--resume", "--steps", end, cwd=tmp_path))
    ok(run("train", cfg, "--quiet", "--output", "whole", "--steps", end, cwd=tmp_path))
    resumed, whole = (mc.load(tmp_path / d / "checkpoint.npz") for d in ("cut", "whole"))
    assert resumed.step == whole.step == int(end)
    np.testing.assert_array_equal(resumed.theta, whole.theta)
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "history.npz")["objective"],
                                  np.load(tmp_path / "whole" / "history.npz")["objective"])


SGD = """
[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
clip_norm = 0.5
"""


def test_every_optimizer_key_reaches_multitask_training(tmp_path):
    mt = MULTITASK.replace('kind = "dwa"', 'kind = "uniform"').replace(
        "[weighting.settings]\ntemperature = 3.0\n", "")
    sgd = mt[:mt.index("[optimizer]")] + SGD + mt[mt.index("[train]"):]
    ok(run("train", write(tmp_path, mt, "adam.toml"), "--quiet", "--output", "adam",
           cwd=tmp_path))
    ok(run("train", write(tmp_path, sgd, "sgd.toml"), "--quiet", "--output", "sgd",
           cwd=tmp_path))
    theta_adam = mc.load(tmp_path / "adam" / "checkpoint.npz").theta
    theta_sgd = mc.load(tmp_path / "sgd" / "checkpoint.npz").theta
    assert not np.array_equal(theta_adam, theta_sgd)

    cfg = config.loads(sgd)
    exp = experiment.build(cfg)
    theta0 = exp.model.init(seed=0, dtype=np.float32)
    direct = mc.fit(mc.Objective(exp.model, exp.train_tasks), theta0,
                    optimizer=mc.optim.SGD(lr=0.05, momentum=0.9, clip_norm=0.5),
                    weighting=mc.weighting.Uniform(), batch_tasks=4, steps=60, seed=0,
                    progress=False)
    np.testing.assert_array_equal(theta_sgd, direct.theta)
    assert mc.load(tmp_path / "sgd" / "checkpoint.npz").optimizer == direct.optimizer


@pytest.mark.parametrize("optimizer, words", [
    ('kind = "adam"\nmomentum = 0.9', ["momentum", "'betas'"]),
    ('kind = "sgd"\nlr = 0.1\nbeta = 0.9', ["optimizer.beta", "momentum"]),
    ('kind = "sgd"\nlr = 0.1\n[optimizer.schedule]\nkind = "cosine"\nstepz = 10',
     ["stepz", "steps"]),
])
def test_an_optimizer_key_the_kind_does_not_take_is_refused(tmp_path, optimizer, words):
    text = MULTITASK.replace('kind = "adam"\nlr = 0.01', optimizer)
    r = run("train", write(tmp_path, text), "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr


def test_set_reaches_weighting_settings_and_a_new_kind_drops_the_old_ones(tmp_path):
    path = write(tmp_path, MULTITASK)
    cfg = config.load(path, overrides=["weighting.settings.temperature=5.0"])
    assert cfg.weighting.strategy().temperature == 5.0
    cfg = config.load(path, overrides=["weighting.kind=uniform"])
    assert (cfg.weighting.kind, cfg.weighting.settings) == ("uniform", {})
    cfg = config.load(path, overrides=["weighting.kind=mgda"])
    assert cfg.weighting.settings == {}
    with pytest.raises(config.ConfigError, match="'tasks.n_way' is not a table"):
        config.load(path, overrides=["tasks.n_way.x=3"])
    r = run("train", path, "--quiet", "--output", "o", "--set", "weighting.kind=pcgrad",
            "--set", "train.steps=5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "multi-task (PCGrad)" in (tmp_path / "o" / "table.txt").read_text()


def test_the_table_names_the_weighting_strategy(tmp_path):
    r = ok(run("train", write(tmp_path, MULTITASK), "--output", "o", "--set", "train.steps=5",
               cwd=tmp_path))
    assert "multi-task (DWA)" in r.stdout


def test_evaluate_takes_the_config_from_the_checkpoint_and_keeps_train_outputs(tmp_path):
    cfg = write(tmp_path, META.format(kind="maml"))
    ok(run("train", cfg, "--quiet", "--output", "o", cwd=tmp_path))
    before = {n: (tmp_path / "o" / n).read_bytes() for n in ("results.json", "table.txt")}
    os.remove(cfg)
    r = ok(run("evaluate", "--checkpoint", "o/checkpoint.npz", cwd=tmp_path))
    assert "MAML" in r.stdout
    assert {"evaluation.json", "evaluation_table.txt"} <= set(os.listdir(tmp_path / "o"))
    assert before == {n: (tmp_path / "o" / n).read_bytes() for n in before}

    theta = mc.load(tmp_path / "o" / "checkpoint.npz").theta
    mc.save(tmp_path / "bare.npz", theta)             # θ only: no config inside
    r = run("evaluate", "--checkpoint", "bare.npz", cwd=tmp_path)
    assert r.returncode == 2 and "CONFIG.toml" in r.stderr


def test_version_prints_the_version(tmp_path):
    r = ok(run("--version", cwd=tmp_path))
    assert r.stdout.strip() == f"metacore {mc.__version__}"


def test_a_weighting_for_a_meta_learner_is_refused_not_ignored(tmp_path):
    """Task weights exist only in the multi-task objective: asking a meta-learner for one is a
    config error (exit 2) naming the key, never silently dropped."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "w"\n[learner]\nkind = "maml"\n[weighting]\nkind = "dwa"\n'
                   '[train]\nsteps = 2\n')
    r = run("train", str(cfg), "--quiet", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 2 and "weighting applies to learner.kind 'multitask'" in r.stderr
