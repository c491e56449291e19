"""The first Ctrl-C in mc.fit waits for the chunk in progress only when it ends within a second;
a step of seconds or minutes (many inner steps) is stopped at once, the state left at its last
finished step — the same exact stop as a second Ctrl-C, resumable as any other."""

import time

import numpy as np
import pytest

import metacore as mc
from interrupts import interrupt_lag

SETUP = """
m = mc.MLP([1, 40, 40, 1]); ts = mc.tasks.sinusoid(4, k_support=5, k_query=5)
learner = mc.{learner}(m, inner_lr=1e-5, inner_steps={inner}, n_threads=1)
problem = mc.MetaObjective(learner, ts, meta_batch=2, n_threads=1)
theta = m.init(seed=0, dtype=np.float32)
"""


def _inner_steps_for(learner, seconds):
    """Inner steps that make one meta-step (2 tasks) last about ``seconds`` here."""
    m = mc.MLP([1, 40, 40, 1])
    ts = mc.tasks.sinusoid(2, k_support=5, k_query=5)
    n = 50_000
    t0 = time.perf_counter()
    getattr(mc, learner)(m, inner_lr=1e-5, inner_steps=n, n_threads=1).meta_value_and_grad(
        m.init(seed=0, dtype=np.float32), ts)
    return max(1, int(n * seconds / (time.perf_counter() - t0)))


def _child(tmp_path, learner, inner, delay):
    """(lag, steps finished, θ) of a 50-step fit stopped by one Ctrl-C after ``delay`` s."""
    out = tmp_path / "result.npy"
    lag = interrupt_lag(SETUP.format(learner=learner, inner=inner),
                        "mc.fit(problem, theta, steps=50, optimizer=mc.optim.Adam(lr=1e-3), "
                        "progress=False, n_threads=1)", delay=delay,
                        after=f"np.save({str(out)!r}, np.r_[err.result.step, err.result.theta])")
    saved = np.load(out)
    return lag, int(saved[0]), saved[1:].astype(np.float32)


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
