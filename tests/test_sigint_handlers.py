"""mc.fit's Ctrl-C handling and the process's own SIGINT setting: a process told to ignore
Ctrl-C (a job started with ``&`` from a script, ``signal.SIG_IGN``) keeps ignoring it during a
fit, and whatever handler was set before a fit is the one set after it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import metacore as mc


def test_an_ignored_sigint_stays_ignored_during_a_fit():
    script = textwrap.dedent("""
        import os, signal, threading, time
        import numpy as np, metacore as mc
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ts = mc.tasks.sinusoid(64, k_support=10, k_query=10, seed=0)
        model = mc.MLP([1, 40, 40, 1], activation="relu")
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        res = mc.fit(mc.Objective(model, ts, n_threads=1), model.init(seed=0), steps=10000,
                     progress=False)
        print(res.steps_run, round(time.perf_counter() - t0, 2),
              signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    steps, seconds, still_ignored = out.stdout.split()
    assert float(seconds) > 0.2, f"the fit ended before the signal ({seconds} s): no check"
    assert int(steps) == 10000 and still_ignored == "True"


def test_the_handler_set_before_a_fit_is_set_after_it():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        ts = mc.tasks.sinusoid(4, k_support=5, k_query=5, seed=0)
        model = mc.MLP([1, 8, 1])
        mc.fit(mc.Objective(model, ts), model.init(seed=0), steps=3, progress=False)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_during_the_chunk_that_ends_the_run_still_stops_the_caller():
    """The loop looks at the Ctrl-C flag between chunks: one that came during the last chunk
    (or the final evaluation or checkpoint) was dropped with the handler, and `metacore train`
    went on to its next fit call. Now fit raises KeyboardInterrupt with the finished result."""
    import threading
    import time

    ts = mc.tasks.sinusoid(64, k_support=10, k_query=10, seed=0)
    model = mc.MLP([1, 40, 40, 1], activation="relu")
    obj = mc.Objective(model, ts, n_threads=1)
    steps = 500
    while True:                          # chunks of 0.3–0.6 s on the machine at hand
        t0 = time.perf_counter()
        mc.fit(obj, model.init(seed=0), steps=steps, chunk_size=steps, eval_every=steps,
               progress=False)
        if time.perf_counter() - t0 >= 0.3:
            break
        steps *= 2
    # two chunks; the SIGINT goes out 0.1 s into the second, the last: timed by the first, it
    # is expected to end well within the loop's grace, so it runs to its end, then fit stops
    timers = []

    def second_chunk_starts(event):
        if event.step == steps:
            timers.append(threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)))
            timers[-1].start()
    try:
        with pytest.raises(KeyboardInterrupt) as err:
            mc.fit(obj, model.init(seed=0), steps=2 * steps, chunk_size=steps,
                   eval_every=steps, callbacks=[second_chunk_starts], progress=False)
    finally:
        for t in timers:
            t.cancel()
    assert timers, "the first chunk's evaluation did not run"
    assert err.value.result.step == 2 * steps      # the chunk ran to its end, then stopped
