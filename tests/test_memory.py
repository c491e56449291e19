"""Memory: repeated calls of every public operation (and of refused calls) leave the resident
memory flat; outputs too large for the machine are a MemoryError naming them (see also
tests/test_bad_input.py for huge inputs).

The default run makes 3,000 calls of each operation after a warm-up; ``--run-slow`` makes
100,000 (as does ``python benchmarks/memory_soak.py``, which prints the figures). Skipped in
sanitizer builds, whose allocator quarantines freed memory.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import metacore as mc
from public_calls import ERROR_CALLS, PUBLIC_CALLS, problem, rss_bytes, soak

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm"),
    pytest.mark.skipif(bool(mc.build_info().get("sanitize")),
                       reason="ASan's quarantine keeps freed memory resident"),
]

OPERATIONS = sorted(PUBLIC_CALLS) + sorted(ERROR_CALLS)


@pytest.fixture(scope="module")
def small_problem():
    return problem()


@pytest.mark.parametrize("name", OPERATIONS)
def test_repeated_calls_leave_resident_memory_flat(name, small_problem):
    before, after, _ = soak(name, small_problem, 3_000, warmup=300)
    # a leak of one small array (>= 24 bytes) per call would show as >= 70 KiB
    assert after - before <= 64 * 1024, f"{name}: RSS grew {(after - before) / 1024:.0f} KiB"


@pytest.mark.slow
@pytest.mark.parametrize("name", OPERATIONS)
def test_100_000_calls_leave_resident_memory_flat(name, small_problem):
    before, after, _ = soak(name, small_problem, 100_000)
    assert after - before <= 1024 * 1024, f"{name}: RSS grew {(after - before) / 1024:.0f} KiB"


def test_an_output_larger_than_memory_is_a_memory_error_and_leaves_no_trace(small_problem):
    T = 200_000                                       # (T, P) float64 = 1.6 TB
    ts = mc.TaskSet(np.zeros((T, 1)), np.zeros(T), np.arange(T + 1))
    model = mc.MLP([1, 2000, 1000, 1])
    obj = mc.Objective(model, ts)
    theta = model.init(seed=0)
    with pytest.raises(MemoryError):                  # the first call builds the core's handle
        obj.task_grads(theta)
    before = rss_bytes()
    for _ in range(200):
        with pytest.raises(MemoryError, match=r"task_grads would need .* TiB for its "
                                              r"\(200000, \d+\) float64 output"):
            obj.task_grads(theta)
    assert rss_bytes() - before <= 64 * 1024


_AFTER_FAILED_GROWTH = r"""
import resource, sys, threading, numpy as np, metacore as mc
def episodes(rows, seed):
    r = np.random.default_rng(seed)
    y = np.concatenate([np.arange(20), r.integers(0, 20, size=rows - 20)]).astype(float)
    return mc.TaskSet.from_arrays([r.random((rows, 784))], [y], n_support=20, dtype=np.float32)
model = mc.MLP([784, 512, 512, 64], activation="relu")
theta = model.init(seed=0, dtype=np.float32)
learner = mc.ProtoNet(model, n_threads=1)
small, big, mid = episodes(40, 0), episodes(1024, 1), episodes(1000, 2)
learner.meta_value_and_grad(theta, small)
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
try:
    learner.meta_value_and_grad(theta, big)
    failed = False
except MemoryError:
    failed = True
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
g = learner.meta_value_and_grad(theta, mid)[1]
fresh = {}
t = threading.Thread(target=lambda: fresh.update(g=learner.meta_value_and_grad(theta, mid)[1]))
t.start(); t.join()                      # another thread: a workspace of its own, built afresh
print(failed, np.array_equal(g, fresh["g"]))
"""


@pytest.mark.parametrize("headroom_mib", [2, 6, 10, 14])
def test_a_meta_step_whose_buffers_failed_to_grow_leaves_the_next_call_exact(headroom_mib):
    """The calling thread keeps its meta-step workspace between calls; a call whose episode
    needs larger buffers than the memory allows (a MemoryError part-way through growing them)
    must not leave a workspace that believes it grew: the next call, on rows the old buffers
    cannot hold, gives the bits a fresh workspace gives (before the fix: a heap overflow, a
    crash or a silently wrong gradient)."""
    import subprocess
    proc = subprocess.run([sys.executable, "-c", _AFTER_FAILED_GROWTH, str(headroom_mib)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed, equal = proc.stdout.split()
    assert equal == "True", proc.stdout
    if headroom_mib <= 6:   # far below the ≈ 20 MB the 1,024-row episode's buffers need
        assert failed == "True", "the capped call did not fail: the scenario was not exercised"
