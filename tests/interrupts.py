"""Ctrl-C in a child process: the one helper the learners' interrupt tests share. The child runs
``setup``, then ``call`` while a thread sends SIGINT to the process after ``delay`` seconds."""

import os
import subprocess
import sys
import textwrap

import metacore as mc

_CHILD = """
import os, signal, sys, threading, time
sys.path.insert(0, {path!r})
import numpy as np, metacore as mc
{setup}
def fire():
    time.sleep({delay})
    global t_sig
    t_sig = time.perf_counter()
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=fire, daemon=True).start()
t_call = time.perf_counter()
try:
    {call}
    print("finished", time.perf_counter() - t_call)
except KeyboardInterrupt as err:
    lag = time.perf_counter() - t_sig
    {after}
    print("interrupted", lag)
"""


def interrupt_lag(setup, call, *, delay=0.5, timeout=300, after="pass"):
    """Seconds from SIGINT to the KeyboardInterrupt of ``call``; AssertionError (with the child's
    output) when the call finished or the child failed instead. ``after``: a statement the child
    runs on the interrupt (``err`` is the KeyboardInterrupt), e.g. saving ``err.result``. The
    child imports the metacore under test, not the source tree."""
    path = os.path.dirname(os.path.dirname(mc.__file__))
    code = _CHILD.format(path=path, setup=textwrap.dedent(setup).strip(), call=call, delay=delay,
                         after=after)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout)
    words = r.stdout.split()
    if words and words[0] == "finished":   # the call must outlast the delay with room to spare
        raise AssertionError(f"{call} finished in {float(words[1]):.2f} s, before the SIGINT at "
                             f"{delay} s: give the test a longer call or a shorter delay")
    assert words and words[0] == "interrupted", r.stdout + r.stderr
    return float(words[1])
