"""Calls back into the core from Python code that runs in the middle of a core call. The core
runs pending Python signal handlers at its interrupt points (that is how Ctrl-C works), so a
handler that calls metacore runs on the same thread while the outer call is still using its
thread-local workspace. The outer call — adaptation, a meta-gradient, an objective — must give
the same bits as undisturbed, whatever the handler calls — another net's shape (the outer workspace used to be freed under it: a
segfault) or the same shape (its buffers used to be overwritten: silently wrong results). And a
core handle that refuses new arrays keeps working on the old ones (it used to drop them while
the core still read them). Each case runs in its own process: the old faults crashed it."""

import os
import subprocess
import sys
import textwrap

import pytest

import metacore as mc

pytestmark = pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"),
                                reason="needs signal.setitimer (POSIX)")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))


def run(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(script)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    return out.stdout.split("\n")


REENTER = """
    import signal, sys
    import numpy as np
    import metacore as mc
    rng = np.random.default_rng(0)
    big = mc.MLP([8, 128, 128, 1], activation="relu")
    tb = big.init(seed=0)
    Xb, yb, Xq = rng.normal(size=(1500, 8)), rng.normal(size=1500), rng.normal(size=(40, 8))
    small = mc.MLP([2, 3, 1], activation="relu")
    imaml_big, imaml_small = mc.IMAML(big, reg=0.5, inner_lr=0.001), mc.IMAML(small, reg=0.5)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(6, 8)) for _ in range(4)],
                                [rng.normal(size=6) for _ in range(4)], n_support=3)
    maml_big = mc.MAML(big, inner_lr=0.001, n_threads=1)
    maml_outer = mc.MAML(big, inner_lr=0.001, inner_steps=6, n_threads=2)
    meta_small = ts
    objective = mc.Objective(big, mc.TaskSet.from_arrays([Xb], [yb]), n_threads=2)
    Xm, ym = np.tile(Xb, (4, 1)), np.tile(yb, 4)     # long enough for the 2 ms timer to land
    meta_big = mc.TaskSet.from_arrays([Xm[i::6] for i in range(6)], [ym[i::6] for i in range(6)],
                                      n_support=500)
    handler_calls = {
        "other shape": lambda: mc.adapt(small, small.init(seed=1), Xb[:5, :2], yb[:5], steps=2),
        "same shape": lambda: mc.adapt_predict(big, big.init(seed=2), Xb[:7], yb[:7], Xq,
                                               steps=2, lr=0.01),
        "batch": lambda: mc.adapt_batch(big, big.init(seed=3), ts, steps=2, n_threads=1),
        "imaml other": lambda: imaml_small.adapt(small.init(seed=4), Xb[:5, :2], yb[:5]),
        "imaml same": lambda: imaml_big.adapt(big.init(seed=5), Xb[:9], yb[:9], steps=2),
        "meta": lambda: maml_big.meta_value_and_grad(big.init(seed=6), meta_small),
        "objective": lambda: mc.Objective(big, ts).value_and_grad(big.init(seed=7)),
        "predict": lambda: big.predict(big.init(seed=8), Xq),
    }
    outer_calls = {
        "adapt": lambda: mc.adapt(big, tb, Xb, yb, steps=12, lr=0.001),
        "adapt_predict": lambda: mc.adapt_predict(big, tb, Xb, yb, Xq, steps=12, lr=0.001),
        "adapt_batch": lambda: mc.adapt_batch(big, tb, mc.TaskSet.from_arrays(
            [Xb[i::4] for i in range(4)], [yb[i::4] for i in range(4)], n_support=300),
            steps=40, lr=0.001, n_threads=2)[1],
        "imaml": lambda: imaml_big.adapt(tb, Xb, yb, steps=12),
        "meta": lambda: maml_outer.meta_value_and_grad(tb, meta_big)[1],
        "objective": lambda: np.concatenate([objective.value_and_grad(tb)[1]
                                             for _ in range(30)]),   # 30 calls: time to land
    }
    for outer, call in outer_calls.items():
        expect = call()                                   # undisturbed
        for name, inner in handler_calls.items():
            ran, busy = [0], [False]
            def handler(signum, frame, inner=inner):
                if busy[0]:          # the inner call runs pending handlers too: not again
                    return
                busy[0] = True
                ran[0] += 1
                try:
                    inner()
                finally:
                    busy[0] = False
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
            same = True
            for _ in range(3):
                same &= bool(np.array_equal(call(), expect))
            signal.setitimer(signal.ITIMER_REAL, 0)
            print(outer, "|", name, "|", same, ran[0] > 3)
"""


def test_a_signal_handler_calling_the_core_mid_call_leaves_the_outer_call_exact():
    lines = [line for line in run(REENTER) if line]
    assert len(lines) == 6 * 8, lines
    for line in lines:
        outer, inner, result = line.split(" | ")
        assert result == "True True", line     # same bits, and the handler did run


def test_a_refused_sample_from_keeps_the_handle_on_its_old_arrays():
    out = run("""
    import numpy as np
    import metacore as mc
    from metacore import _core
    net = mc.MLP([16, 32, 1], activation="relu")
    learner = mc.MAML(net, inner_lr=0.01)
    opt = mc.optim.Adam(lr=1e-3)
    T, r = 40, 60
    offsets = np.arange(0, T * r + 1, r, dtype=np.int64)
    n_support = np.full(T, r // 2, dtype=np.int64)
    def steps(refuse):
        step = _core.MetaStep64(learner.core_net(), *learner.core_spec(), 4, 1)
        rng = np.random.default_rng(0)
        step.sample_from(rng.normal(size=(T * r, 16)), rng.normal(size=T * r), offsets,
                         n_support)                  # the handle holds the only references
        if refuse:
            for bad in [dict(y=np.zeros(3)), dict(n_support=np.zeros(2, dtype=np.int64))]:
                args = dict(X=np.zeros((T * r, 16)), y=np.zeros(T * r), offsets=offsets,
                            n_support=n_support)
                args.update(bad)
                try:
                    step.sample_from(args["X"], args["y"], args["offsets"], args["n_support"])
                except ValueError:
                    pass
                else:
                    raise AssertionError("accepted")
            np.ones(10**6)                           # reuse the memory a freed X would free
        state = _core.TrainState64(net.init(seed=0), opt.core_config(), np.empty(0), 0, 0)
        out = state.run_meta(step, opt.core_config(), 10, 1)
        return np.asarray(out.objective), state.theta
    (a, ta), (b, tb) = steps(False), steps(True)
    print(np.array_equal(a, b) and np.array_equal(ta, tb), np.isfinite(a).all())
    """)
    assert out[0] == "True True", out
