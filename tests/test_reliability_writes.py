"""Every file metacore writes besides checkpoints — evaluation JSON and plots, the CLI's tables,
configs and bench results — is written atomically (tests/test_persistence_robustness.py covers
mc.save): a write that fails leaves the previous file whole and no temporary file; writers racing
on one path leave one whole file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc


@pytest.fixture(scope="module")
def reports():
    model = mc.MLP([1, 8, 1], activation="tanh", loss="mse")
    ts = mc.tasks.sinusoid(6, k_support=4, k_query=4, seed=1, dtype=np.float64)
    theta = model.init(seed=0)
    return [mc.evaluate(model, theta, ts, steps=(0, 1), name="A"),
            mc.evaluate(model, theta, ts, steps=(0, 2), name="B")]


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.sampled_from([object(), {1, 2}, b"bytes", np.float128(1) if hasattr(np, "float128")
                            else complex(1, 2), float("nan")]),
       key=st.text(min_size=1, max_size=8))
def test_a_failing_save_json_keeps_the_previous_file(reports, tmp_path, bad, key):
    path = tmp_path / "results.json"
    mc.report.save_json(reports, path, extra={"note": 1})
    before = path.read_bytes()
    try:
        mc.report.save_json(reports, path, extra={key: bad})
    except (TypeError, ValueError):
        assert path.read_bytes() == before          # refused: the old file is untouched
    else:
        data = json.loads(path.read_text())         # accepted (NaN is valid JSON for Python)
        assert key in data and len(data["reports"]) == 2
    assert _leftovers(tmp_path) == []


def test_racing_save_json_leaves_one_whole_file(reports, tmp_path):
    path = tmp_path / "results.json"
    errors = []

    def writer(i):
        try:
            for _ in range(10):
                mc.report.save_json(reports, path, extra={"writer": i, "pad": "x" * 1000 * i})
        except Exception as exc:     # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = json.loads(path.read_text())
    assert data["pad"] == "x" * 1000 * data["writer"] and len(data["reports"]) == 2
    assert _leftovers(tmp_path) == []


def test_a_failing_plot_keeps_the_previous_file(reports, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    assert mc.report.plot(reports, path) is not None
    before = path.read_bytes()
    assert before[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "curve.not-a-format"
    bad.write_bytes(b"old")
    with pytest.raises(ValueError):
        mc.report.plot(reports, bad)
    assert bad.read_bytes() == b"old" and path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_the_app_writes_only_through_the_atomic_writer():
    """No plain open(..., "w") / savefig(path) / write_text left in the package: every file it
    writes goes through train.checkpoint.write_atomic."""
    import ast
    root = os.path.dirname(mc.__file__)
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py") or "reference" in folder:
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if fname == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                           and set(a.value) & set("wax") for a in node.args[1:2]):
                    found.append(f"{path}:{node.lineno} open(..., {node.args[1].value!r})")
                if fname in ("savefig", "write_text", "write_bytes", "savetxt", "to_csv") and \
                        node.args and not isinstance(node.args[0], ast.Name):
                    found.append(f"{path}:{node.lineno} {fname}")
    assert found == []


def _run_child(script, *args, timeout):
    """A Python child running ``script`` with ``args`` on the metacore under test (the installed
    one in CI, python/ in a checkout)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


# Forked writers, each saving a checkpoint in a loop until one signal lands at a random moment:
# Ctrl-C (Python's default handler: KeyboardInterrupt) or SIGTERM (no handler: the process dies).
# Whatever the moment, no temporary file is left, the checkpoint on disk is whole, and Ctrl-C
# reaches the writer as KeyboardInterrupt (inside np.savez it used to surface as zipfile's
# "Can't close the ZIP file" ValueError).
SIGNAL_CHILD = """
import faulthandler, os, random, signal, sys, time
import metacore as mc
model = mc.MLP([4, 64, 1])
ck = mc.Checkpoint(model.init(seed=0), model=model)
folder, n = sys.argv[1], int(sys.argv[2])
path = os.path.join(folder, "ck.npz")
mc.save(path, ck)
rng = random.Random(0)
for i in range(n):
    sig = signal.SIGTERM if i % 4 == 0 else signal.SIGINT
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            faulthandler.register(signal.SIGUSR1)    # a writer that hangs says where
            os.write(w, b"x")
            while True:
                mc.save(path, ck)
        except KeyboardInterrupt:
            os._exit(130)
        finally:
            os._exit(1)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    time.sleep(rng.uniform(0.0, 0.008))
    os.kill(pid, sig)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    if not done:
        print("HUNG", i, int(sig), flush=True)
        os.kill(pid, signal.SIGUSR1)
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        break
    got = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exit {os.WEXITSTATUS(status)}")
    want = f"signal {int(sig)}" if sig == signal.SIGTERM else "exit 130"
    left = sorted(f for f in os.listdir(folder) if f.endswith(".tmp"))
    if got != want or left:
        print("FAILED", i, int(sig), got, left)
        break
    mc.load(path)
print("done", i + 1)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writers are forked (POSIX only)")
def test_ctrl_c_and_sigterm_at_random_moments_of_a_write_leave_no_temporary_file(tmp_path):
    n = 200
    out = _run_child(SIGNAL_CHILD, tmp_path, n, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["done", str(n)], (out.stdout, out.stderr[-6000:])


@pytest.mark.parametrize("bad", ["ck\0.npz", "ck\ud800.npz", "no/such/folder/ck.npz", "."])
def test_a_write_that_fails_leaves_the_signal_handlers_as_they_were(tmp_path, bad):
    import signal
    mine = lambda signum, frame: None     # noqa: E731 - a user's own handler
    before = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises((ValueError, OSError)):
            mc.save(os.path.join(tmp_path, bad) if "/" in bad else bad, mc.Checkpoint(np.ones(3)))
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


# Signals that land at chosen moments of one write, each case in its own process (some end it):
# SETUP runs first; the write's temporary file is made by a mkstemp that first sends the case's
# signals to the process, so they arrive while the write holds them.
SIGNAL_CASE = """
import os, signal, sys, tempfile, time
import numpy as np
import metacore as mc
from metacore.train.checkpoint import write_atomic
folder = sys.argv[1]
path = os.path.join(folder, "out.bin")
write_atomic(path, lambda f: f.write(b"old"))
real_mkstemp = tempfile.mkstemp
def signalled_mkstemp(*a, **k):
    for s in SEND_IN_HOLD:
        os.kill(os.getpid(), s)
    return real_mkstemp(*a, **k)
{setup}
tempfile.mkstemp = signalled_mkstemp
try:
    write_atomic(path, WRITE)
    print("returned")
except BaseException as exc:
    print("raised", type(exc).__name__)
tempfile.mkstemp = real_mkstemp
left = [n for n in os.listdir(folder) if n.endswith(".tmp")]
print("left", left, open(path, "rb").read())
{after}
"""

CASES = {   # name: (setup, after, exit code, the first lines printed, the file's bytes after)
    # Ctrl-C and SIGTERM (default action) together while held: SIGTERM is not lost behind the
    # KeyboardInterrupt; the process dies of it, and the file is gone
    "int+term held": ("SEND_IN_HOLD = [signal.SIGINT, signal.SIGTERM]\n"
                      "WRITE = lambda f: f.write(b'new')", "", -15, [], b"old"),
    # a writer that swallows every exception, SIGTERM's included: the write ends, then the
    # process dies of SIGTERM all the same
    "term swallowed": ("SEND_IN_HOLD = []\n"
                       "def WRITE(f):\n"
                       "    try:\n"
                       "        os.kill(os.getpid(), signal.SIGTERM)\n"
                       "        time.sleep(0.05)\n"
                       "    except BaseException:\n"
                       "        pass\n"
                       "    f.write(b'new')", "", -15, [], b"new"),
    # Ctrl-C inside a finaliser (its KeyboardInterrupt is printed as "Exception ignored" and
    # dropped by Python): raised again once the write is over
    "int in finaliser": ("SEND_IN_HOLD = []\n"
                         "class Finalised:\n"
                         "    def __del__(self):\n"
                         "        os.kill(os.getpid(), signal.SIGINT)\n"
                         "        time.sleep(0.05)\n"
                         "def WRITE(f):\n"
                         "    Finalised()\n"
                         "    f.write(b'new')", "", 0,
                         ["raised KeyboardInterrupt", "left [] b'new'"], b"new"),
    # Ctrl-C with SIGINT's default action (the process ends): the temporary file goes first
    "int default": ("SEND_IN_HOLD = []\n"
                    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
                    "def WRITE(f):\n"
                    "    os.kill(os.getpid(), signal.SIGINT)\n"
                    "    time.sleep(0.05)", "", -2, [], b"old"),
    # the user's own SIGTERM handler raising (a graceful shutdown) while held: raised after the
    # file is gone; both handlers are the user's again, and Ctrl-C still works
    "user handler": ("class Shutdown(Exception):\n"
                     "    pass\n"
                     "def shutdown(signum, frame):\n"
                     "    raise Shutdown\n"
                     "signal.signal(signal.SIGTERM, shutdown)\n"
                     "SEND_IN_HOLD = [signal.SIGTERM]\n"
                     "WRITE = lambda f: f.write(b'new')",
                     "print(signal.getsignal(signal.SIGTERM) is shutdown,\n"
                     "      signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
                     "try:\n"
                     "    os.kill(os.getpid(), signal.SIGINT)\n"
                     "    time.sleep(0.5)\n"
                     "    print('Ctrl-C lost')\n"
                     "except KeyboardInterrupt:\n"
                     "    print('Ctrl-C works')", 0,
                     ["raised Shutdown", "left [] b'old'", "True True", "Ctrl-C works"], b"old"),
}


@pytest.mark.skipif(not hasattr(os, "kill") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("case", list(CASES))
def test_signals_at_chosen_moments_of_a_write(tmp_path, case):
    setup, after, code, lines, data = CASES[case]
    script = SIGNAL_CASE.replace("{setup}", setup).replace("{after}", after)
    out = _run_child(script, tmp_path, timeout=120)
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr[-2000:])
    assert out.stdout.split("\n")[:len(lines)] == lines, out.stdout
    assert _leftovers(tmp_path) == []
    assert (tmp_path / "out.bin").read_bytes() == data
