"""The first Ctrl-C in mc.fit waits for the chunk in progress only when it ends within a second;
a step of seconds or minutes (many inner steps) is stopped at once, the state left at its last
finished step — the same exact stop as a second Ctrl-C, resumable as any other."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import metacore as mc

CHILD = """
import os, signal, sys, threading, time
sys.path.insert(0, {path!r})
import numpy as np, metacore as mc
m = mc.MLP([1, 40, 40, 1]); ts = mc.tasks.sinusoid(4, k_support=5, k_query=5)
learner = mc.{learner}(m, inner_lr=1e-5, inner_steps={inner}, n_threads=1)
problem = mc.MetaObjective(learner, ts, meta_batch=2, n_threads=1)
theta = m.init(seed=0, dtype=np.float32)
def fire():
    time.sleep({delay})
    global t_sig
    t_sig = time.perf_counter()
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=fire, daemon=True).start()
try:
    mc.fit(problem, theta, steps=50, optimizer=mc.optim.Adam(lr=1e-3), progress=False,
           n_threads=1)
    print("finished")
except KeyboardInterrupt as err:
    lag = time.perf_counter() - t_sig
    np.save({out!r}, err.result.theta)
    print("interrupted", lag, err.result.step)
"""


def _inner_steps_for(learner, seconds):
    """Inner steps that make one meta-step (2 tasks) last about ``seconds`` here."""
    import time
    m = mc.MLP([1, 40, 40, 1])
    ts = mc.tasks.sinusoid(2, k_support=5, k_query=5)
    n = 50_000
    t0 = time.perf_counter()
    getattr(mc, learner)(m, inner_lr=1e-5, inner_steps=n, n_threads=1).meta_value_and_grad(
        m.init(seed=0, dtype=np.float32), ts)
    return max(1, int(n * seconds / (time.perf_counter() - t0)))


def _child(tmp_path, learner, inner, delay):
    path = os.path.dirname(os.path.dirname(mc.__file__))
    out = str(tmp_path / "theta.npy")
    code = CHILD.format(path=path, learner=learner, inner=inner, delay=delay, out=out)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=300)
    words = r.stdout.split()
    assert words and words[0] == "interrupted", r.stdout + r.stderr
    return float(words[1]), int(words[2]), np.load(out)


@pytest.mark.parametrize("learner", ["Reptile", "IMAML"])
@pytest.mark.parametrize("delay", [0.5, 4.0], ids=["first-step", "a-timed-step"])
def test_one_ctrl_c_stops_a_long_step_at_once_and_exactly(tmp_path, learner, delay):
    # steps of about 3 s on the machine at hand: the SIGINT lands in the first, untimed step
    # (0.5 s) or about 1 s into the second, timed one (4 s), 2 s before its expected end
    inner = _inner_steps_for(learner, seconds=3.0)
    lag, step, theta = _child(tmp_path, learner, inner, delay)
    assert lag < 1.0, f"{lag:.2f} s from Ctrl-C to the stop"
    m = mc.MLP([1, 40, 40, 1])
    start = m.init(seed=0, dtype=np.float32)
    if step == 0:
        np.testing.assert_array_equal(theta, start)
    else:            # the finished steps, bit for bit as a run of that many steps
        ts = mc.tasks.sinusoid(4, k_support=5, k_query=5)
        learner_ = getattr(mc, learner)(m, inner_lr=1e-5, inner_steps=inner, n_threads=1)
        # (an explicit optimizer: Reptile's default anneals over the run's step count)
        whole = mc.fit(mc.MetaObjective(learner_, ts, meta_batch=2, n_threads=1), start,
                       steps=step, optimizer=mc.optim.Adam(lr=1e-3), progress=False,
                       n_threads=1)
        np.testing.assert_array_equal(theta, whole.theta)
