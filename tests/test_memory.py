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
