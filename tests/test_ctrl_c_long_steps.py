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


def test_a_ctrl_c_landing_as_a_chunk_returns_keeps_the_chunk_in_the_history(monkeypatch,
                                                                            tmp_path):
    # the core polls every 10 ms: a SIGINT in its last gap is handled only once the call has
    # returned — the chunk it finished must be in the result's history and the checkpoint
    import os
    import signal
    from metacore.train import loop
    m = mc.MLP([1, 20, 1])
    problem = mc.MetaObjective(mc.MAML(m, inner_lr=0.01, inner_steps=2),
                               mc.tasks.sinusoid(4, k_support=5, k_query=5), meta_batch=2)
    original = loop.Run.run_chunk

    def chunk_then_sigint(self, n):
        out = original(self, n)
        os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(loop.Run, "run_chunk", chunk_then_sigint)
    with pytest.raises(KeyboardInterrupt) as err:
        mc.fit(problem, m.init(seed=0), steps=50, progress=False,
               checkpoint=str(tmp_path / "ck.npz"))
    res = err.value.result
    assert res.step >= 1 and len(res.history.objective) == res.steps_run == res.step
    assert mc.load(tmp_path / "ck.npz").step == res.step


def test_a_ctrl_c_during_evaldriven_evaluation_stops_before_the_next_chunk(monkeypatch):
    import os
    import signal
    from metacore.train import loop
    m = mc.MLP([1, 8, 1])
    obj = mc.Objective(m, mc.tasks.sinusoid(6, k_support=5, k_query=5, seed=0))
    original = loop.Run.evaluate_weights

    def evaluate_then_sigint(self):
        original(self)
        os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(loop.Run, "evaluate_weights", evaluate_then_sigint)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt) as err:
        mc.fit(obj, m.init(seed=0), steps=100_000, chunk_size=100_000,
               weighting=mc.weighting.EvalDriven(eval_every=100_000), progress=False)
    assert err.value.result.step == 0 and time.perf_counter() - t0 < 5.0
