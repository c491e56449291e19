"""The Ray backend and the CPUs it asks for: actors that cannot all be placed are an error, not
a hang; and backends that share the local cluster one of them started keep it until the last
of them closes. Each case runs in its own process, which starts its own local cluster."""

import os
import subprocess
import sys
import textwrap

import pytest

try:
    import ray  # noqa: F401
except ImportError:
    ray = None

pytestmark = pytest.mark.skipif(ray is None, reason="ray is not installed "
                                                    "(pip install 'metacore[ray]')")
import metacore  # noqa: E402

# the metacore these tests import (the installed one in CI, python/ in a checkout with PYTHONPATH)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(metacore.__file__)))


def run(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split("\n")


COMMON = """
    import numpy as np, ray, metacore as mc
    rng = np.random.default_rng(0)
    ts = mc.TaskSet.from_arrays([rng.normal(size=(40, 3)) for _ in range(64)],
                                [rng.normal(size=40) for _ in range(64)])
    model = mc.MLP([3, 4, 1])
    obj, th0 = mc.Objective(model, ts), model.init(seed=0)
    local = mc.fit(obj, th0, steps=3, progress=False).theta
    def fit(backend):
        return mc.fit(obj, th0, steps=3, progress=False, backend=backend).theta
    def attempt(backend, error, label):   # prints label, seconds and message if it raises
        import time
        t0 = time.perf_counter()
        try:
            fit(backend)
            print("fitted")
        except error as e:
            print(label, round(time.perf_counter() - t0), str(e))
"""


def test_more_cpus_than_the_local_cluster_has_is_an_error_naming_them():
    out = run(COMMON + """
    import os
    n = len(os.sched_getaffinity(0)) + 1
    b = mc.distributed.RayBackend(n_workers=n, step_timeout_s=None)   # it used to wait for ever
    attempt(b, ValueError, "refused")
    b.close()
    print("ray up after close:", ray.is_initialized())
    """)
    assert out[0].startswith("refused"), out
    assert "n_workers × cpus_per_worker" in out[0] and "local Ray cluster has" in out[0]
    assert out[1] == "ray up after close: False"


def test_backends_sharing_the_cluster_one_started_keep_it_until_the_last_closes():
    out = run(COMMON + """
    b1 = mc.distributed.RayBackend(1)
    b2 = mc.distributed.RayBackend(1)
    print(np.array_equal(fit(b1), local), np.array_equal(fit(b2), local))
    b1.close()                           # b1 started the cluster: b2 still uses it
    print(ray.is_initialized(), np.array_equal(fit(b2), local))
    b1.close()                           # twice: nothing
    big = mc.distributed.RayBackend(n_workers=64, step_timeout_s=None)
    try:                                 # a backend sharing the local cluster: refused at once
        fit(big)
    except ValueError as e:
        print("refused", "local Ray cluster has" in str(e))
    big.close()
    b2.close()                           # the last one: disconnects, the cluster stops
    print(ray.is_initialized())
    """)
    assert out[:4] == ["True True", "True True", "refused True", "False"], out


def test_cpus_the_process_s_other_backends_hold_are_counted_at_once():
    out = run(COMMON + """
    import os
    n = len(os.sched_getaffinity(0))
    b1 = mc.distributed.RayBackend(n)                 # holds every CPU of the local cluster
    print(np.array_equal(fit(b1), local))
    b2 = mc.distributed.RayBackend(1, step_timeout_s=None)    # it used to wait for ever
    attempt(b2, ValueError, "refused")
    b1.stop_actors()                                  # frees them: b2 now fits
    print(np.array_equal(fit(b2), local))
    b2.close()
    b1.close()
    """)
    assert out[0] == "True", out
    assert out[1].startswith("refused") and "other RayBackend" in out[1], out
    assert "stop_actors()" in out[1] and int(out[1].split()[1]) < 30, out
    assert out[2] == "True", out


def test_actors_a_cluster_cannot_place_fail_after_start_timeout_s():
    # a cluster the backend did not start (it may grow): waited for, up to start_timeout_s
    out = run(COMMON + """
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    b = mc.distributed.RayBackend(n_workers=2, start_timeout_s=3)
    attempt(b, RuntimeError, "gave up")
    b.close()
    print(ray.is_initialized(), np.array_equal(fit(mc.distributed.RayBackend(1)), local))
    ray.shutdown()
    """)
    assert out[0].startswith("gave up") and "did not start within start_timeout_s=3" in out[0]
    assert 3 <= int(out[0].split()[2]) < 60
    assert out[1] == "True True"          # the user's cluster stays up and usable


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process tree from /proc")
def test_close_leaves_no_process_of_the_local_cluster_it_started():
    # every process the run started (Ray's GCS, raylet, dashboard agents, the actors' workers:
    # all descendants of this driver) has exited once close() returns, while the driver lives on
    out = run(COMMON + """
    import glob, os, time
    def stat(pid):       # (parent pid, state) from /proc, or None once the process is gone
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[1]), fields[0]
        except (OSError, IndexError, ValueError):
            return None
    def descendants(root):
        parents = {int(p.split("/")[2]): stat(int(p.split("/")[2]))
                   for p in glob.glob("/proc/[0-9]*")}
        found, todo = set(), [root]
        while todo:
            me = todo.pop()
            kids = [p for p, st in parents.items() if st and st[0] == me and p not in found]
            found.update(kids)
            todo.extend(kids)
        return found
    with mc.distributed.RayBackend(2) as b:
        print(np.array_equal(fit(b), local))
        started = descendants(os.getpid())
        actors = set(b.actor_pids())
    print(actors <= started, len(started) > len(actors))
    deadline = time.monotonic() + 30
    def left():
        return [p for p in started if (stat(p) or (0, "Z"))[1] != "Z"]
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    print("left:", left(), ray.is_initialized())
    """)
    assert out[:3] == ["True", "True True", "left: [] False"], out
