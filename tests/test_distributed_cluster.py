"""RayBackend joins an existing cluster by address: a head node started here with
``ray start --head`` on loopback (a free port, its own temp dir so no other Ray user on this
machine sees it), a driver in another process that connects with each form of address —
``"127.0.0.1:PORT"``, ``"auto"`` (the address in ``RAY_ADDRESS``) and Ray Client's
``"ray://127.0.0.1:PORT"`` — and gets the local θ bit for bit, its actors gone after
``close()`` while the cluster runs on."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

import metacore as mc

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'metacore[ray]')")

DRIVER = textwrap.dedent("""
    import sys
    import numpy as np
    import metacore as mc
    address, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(2)
    Xs = [rng.normal(size=(8, 2)) for _ in range(30)]
    ts = mc.TaskSet.from_arrays(Xs, [np.tanh(x.sum(axis=1)) for x in Xs], n_support=4)
    model = mc.MLP([2, 8, 1], activation="tanh")
    meta = mc.MetaObjective(mc.MAML(model, inner_lr=0.05), ts, meta_batch=12)
    obj = mc.Objective(model, ts)
    theta = model.init(seed=1)
    kw = dict(optimizer=mc.optim.Adam(lr=0.01), steps=5, progress=False)
    with mc.distributed.RayBackend(2, 1, address=address, step_timeout_s=60) as backend:
        m = mc.fit(meta, theta, backend=backend, **kw).theta
        o = mc.fit(obj, theta, backend=backend, **kw).theta
        pids = backend.actor_pids()
    import ray
    assert not ray.is_initialized()     # close() disconnected what the backend connected
    np.savez(out, meta=m, obj=o, meta_local=mc.fit(meta, theta, **kw).theta,
             obj_local=mc.fit(obj, theta, **kw).theta, pids=np.array(pids))
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is not a live process
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def head():
    """(environment, GCS port, Ray Client port) of a head node started for these tests."""
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray command is not installed")
    src = str(pathlib.Path(mc.__file__).resolve().parents[1])    # the metacore under test
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p), RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled")    # head and driver agree (ray start turns token auth on
                                     # when ~/.ray/auth_token exists; ray.init does not)
    env.pop("RAY_ADDRESS", None)
    port, client_port = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="mcray", dir="/tmp")   # short: Ray's socket paths are long
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         f"--ray-client-server-port={client_port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield env, port, client_port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)      # --block: the head stops its cluster on TERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("form", ["host:port", "auto", "ray://"])
def test_connect_by_address_to_a_cluster_started_here(head, form, tmp_path):
    env, port, client_port = head
    if form == "ray://":
        pytest.importorskip("grpc", reason="Ray Client needs grpcio: pip install 'ray[client]' "
                                           "(part of metacore[ray])")
    address = {"host:port": f"127.0.0.1:{port}", "auto": "auto",
               "ray://": f"ray://127.0.0.1:{client_port}"}[form]
    if form == "auto":
        env = dict(env, RAY_ADDRESS=f"127.0.0.1:{port}")
    out = tmp_path / "thetas.npz"
    for attempt in range(3):
        run = subprocess.run([sys.executable, "-c", DRIVER, address, str(out)],
                             env=env, capture_output=True, text=True, timeout=240)
        # Ray Client's own start-up can fail on a loaded machine (its proxy finds the server
        # process it just spawned a zombie: "Initialization failure from server"); that, and
        # only that, is tried again
        if run.returncode == 0 or "Initialization failure from server" not in run.stderr:
            break
    assert run.returncode == 0, run.stderr[-3000:]
    r = np.load(out)
    np.testing.assert_array_equal(r["meta"], r["meta_local"])
    np.testing.assert_array_equal(r["obj"], r["obj_local"])
    assert r["pids"].shape == (2,) and all(p > 0 for p in r["pids"])
    # close() killed the actors: their processes are gone while the cluster still runs
    deadline = time.monotonic() + 20
    while any(alive(int(p)) for p in r["pids"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(int(p)) for p in r["pids"])
