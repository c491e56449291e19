"""``metacore train`` keeps its history in increments while a run goes on (history_parts/, one
file per checkpoint, folded into history.npz when the process's run ends), so a checkpoint costs
the same late in a long run as early; a run killed outright (SIGKILL: no handler runs) resumes
with its whole history, and a part history.npz already holds is not counted twice."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import metacore as mc
from metacore.app import experiment

from test_cli import PACKAGE_ROOT, run
from test_cli_engine import META, ok, write


def long_meta(tmp_path, every):
    text = META.format(kind="maml").replace("steps = 60", "steps = 10000000").replace(
        "checkpoint_every = 20", f"checkpoint_every = {every}").replace(
        "validate_every = 10", "validate_every = 0")
    return write(tmp_path, text)


def test_a_killed_run_resumes_with_its_whole_history(tmp_path):
    cfg = long_meta(tmp_path, 100)
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "metacore", "train", cfg, "--quiet",
                             "--output", "killed"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / experiment.HISTORY_PARTS
    deadline = time.monotonic() + 120
    while (not parts.is_dir() or len(os.listdir(parts)) < 3) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before its third checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "killed" / experiment.HISTORY).exists()   # only parts were written
    step = mc.load(tmp_path / "killed" / "checkpoint.npz").step
    end = str(step + 150)
    ok(run("train", cfg, "--quiet", "--output", "killed", "--resume", "--steps", end,
           cwd=tmp_path))
    ok(run("train", cfg, "--quiet", "--output", "whole", "--steps", end, cwd=tmp_path))
    killed = np.load(tmp_path / "killed" / experiment.HISTORY)
    whole = np.load(tmp_path / "whole" / experiment.HISTORY)
    np.testing.assert_array_equal(killed["step"], np.arange(int(end)))
    np.testing.assert_array_equal(killed["objective"], whole["objective"])
    # (the evaluation steps differ: the killed run derived its cadence from 10^7 steps)
    assert (np.diff(killed["eval_step"]) > 0).all()          # none twice
    assert not parts.exists() and not (tmp_path / "whole" / experiment.HISTORY_PARTS).exists()


def test_a_part_history_npz_already_holds_is_not_counted_twice(tmp_path):
    # a kill between writing history.npz and removing the parts leaves both on disk
    cfg = long_meta(tmp_path, 20)
    ok(run("train", cfg, "--quiet", "--output", "a", "--steps", "40", cwd=tmp_path))
    out = tmp_path / "a"
    arrays = dict(np.load(out / experiment.HISTORY))
    late = arrays["step"] >= 20
    part = {k: (v[late] if v.shape[:1] == arrays["step"].shape else v) for k, v in
            arrays.items()}
    (out / experiment.HISTORY_PARTS).mkdir()
    np.savez(out / experiment.HISTORY_PARTS / f"{20:020d}.npz", **part)
    ok(run("train", cfg, "--quiet", "--output", "a", "--resume", "--steps", "60", cwd=tmp_path))
    ok(run("train", cfg, "--quiet", "--output", "b", "--steps", "60", cwd=tmp_path))
    a, b = (np.load(tmp_path / d / experiment.HISTORY) for d in "ab")
    np.testing.assert_array_equal(a["step"], np.arange(60))
    np.testing.assert_array_equal(a["objective"], b["objective"])


def test_a_fresh_run_does_not_inherit_an_earlier_runs_history(tmp_path):
    cfg = long_meta(tmp_path, 20)
    ok(run("train", cfg, "--quiet", "--output", "o", "--steps", "40", cwd=tmp_path))
    shutil.copytree(tmp_path / "o", tmp_path / "keep")
    (tmp_path / "o" / experiment.HISTORY_PARTS).mkdir()
    shutil.copy(tmp_path / "o" / experiment.HISTORY,
                tmp_path / "o" / experiment.HISTORY_PARTS / f"{0:020d}.npz")
    ok(run("train", cfg, "--quiet", "--output", "o", "--steps", "20", cwd=tmp_path))
    h = np.load(tmp_path / "o" / experiment.HISTORY)
    np.testing.assert_array_equal(h["step"], np.arange(20))
    assert not (tmp_path / "o" / experiment.HISTORY_PARTS).exists()


def test_a_fresh_run_killed_before_its_first_checkpoint_leaves_the_earlier_run_whole(tmp_path):
    cfg = long_meta(tmp_path, 20)
    ok(run("train", cfg, "--quiet", "--output", "o", "--steps", "40", cwd=tmp_path))
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "metacore", "train", cfg, "--quiet",
                             "--output", "o", "--set", "train.checkpoint_every=100000000"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(1.5)                      # training, far from its first checkpoint
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert mc.load(tmp_path / "o" / "checkpoint.npz").step == 40
    np.testing.assert_array_equal(np.load(tmp_path / "o" / experiment.HISTORY)["step"],
                                  np.arange(40))
    ok(run("train", cfg, "--quiet", "--output", "o", "--resume", "--steps", "60", cwd=tmp_path))
    ok(run("train", cfg, "--quiet", "--output", "w", "--steps", "60", cwd=tmp_path))
    np.testing.assert_array_equal(np.load(tmp_path / "o" / experiment.HISTORY)["objective"],
                                  np.load(tmp_path / "w" / experiment.HISTORY)["objective"])


def part(first, n, value):
    """A History of n steps from ``first``, one evaluation at its first step."""
    return mc.History.from_arrays({
        "step": np.arange(first, first + n), "objective": np.full(n, value),
        "grad_norm": np.ones(n), "lr": np.full(n, 1e-3), "eval_step": np.array([first]),
        "train_loss": np.array([value]), "task_losses": np.full((1, 2), value),
        "weights": np.full((1, 2), 0.5), "val_loss": np.array([np.nan]),
        "elapsed": np.array([0.1])})


def test_many_parts_are_read_in_order_once_each(tmp_path):
    # a run killed late leaves hundreds of parts (reading them once per part read before made
    # a resume quadratic in their number)
    out = tmp_path / "many"
    (out / experiment.HISTORY_PARTS).mkdir(parents=True)
    for i in range(300):
        np.savez(out / experiment.HISTORY_PARTS / f"{i * 50:020d}.npz",
                 **part(i * 50, 50, float(i)).to_arrays())
    history = experiment._prior_history(str(out), 300 * 50).to_arrays()
    np.testing.assert_array_equal(history["step"], np.arange(300 * 50))
    np.testing.assert_array_equal(history["objective"], np.repeat(np.arange(300.0), 50))
    np.testing.assert_array_equal(history["eval_step"], np.arange(300) * 50)
