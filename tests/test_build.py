"""How the package was built: one version everywhere, build_info's facts, the thread default."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import metacore as mc
from metacore import _core

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code, **env_extra):
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(mc.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- the version ------------------------------------------------------------------------------
def test_package_and_core_report_the_same_version():
    assert isinstance(mc.__version__, str) and mc.__version__
    assert mc.__version__ == _core.__version__
    assert mc.build_info()["version"] == mc.__version__


def test_version_matches_pyproject():
    if sys.version_info >= (3, 11):
        import tomllib
        with open(ROOT / "pyproject.toml", "rb") as f:
            expected = tomllib.load(f)["project"]["version"]
    else:
        try:
            expected = importlib.metadata.version("metacore")
        except importlib.metadata.PackageNotFoundError:
            pytest.skip("no tomllib (Python < 3.11) and metacore is not installed")
    assert mc.__version__ == expected
    assert _core.__version__ == expected


def test_installed_metadata_matches_when_installed():
    try:
        installed = importlib.metadata.version("metacore")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("metacore is not installed (running from the source tree)")
    assert installed == mc.__version__ == _core.__version__


# --- build_info ---------------------------------------------------------------------------------
def test_build_info_has_the_documented_keys_with_sensible_values():
    info = mc.build_info()
    assert isinstance(info, dict)
    for key in ("version", "compiler", "openmp", "simd_targets", "simd_active",
                "default_threads"):
        assert key in info, key
    assert isinstance(info["compiler"], str) and info["compiler"].strip()
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["simd_targets"], str) and info["simd_targets"].strip()
    assert isinstance(info["simd_active"], str) and info["simd_active"].strip()
    # the instruction set in use is one of those compiled for
    assert info["simd_active"] in info["simd_targets"]
    assert isinstance(info["default_threads"], int) and not isinstance(info["default_threads"],
                                                                       bool)
    assert info["default_threads"] >= 1
    if "max_threads" in info:
        assert isinstance(info["max_threads"], int) and info["max_threads"] >= 1
    if "cxx_standard" in info:
        assert info["cxx_standard"] >= 201703
    if not info["openmp"]:
        assert info["default_threads"] == 1
    json.dumps(info)                                   # plain data


def test_build_info_returns_a_fresh_dict():
    info = mc.build_info()
    info["compiler"] = "changed"
    assert mc.build_info()["compiler"] != "changed"


@pytest.mark.parametrize("n", [1, 3])
def test_default_threads_respects_omp_num_threads(n):
    if n > 1 and not mc.build_info()["openmp"]:
        pytest.skip("built without OpenMP: always one thread")
    out = run_python("""
        import metacore as mc
        print(mc.build_info()["default_threads"])
    """, OMP_NUM_THREADS=str(n))
    # capped at the processors this process may use (affinity, cgroup quota)
    assert out.split() == [str(min(n, mc.build_info()["usable_processors"]))]


def test_objective_with_n_threads_none_runs_under_omp_num_threads_1():
    # None = the OpenMP default; under OMP_NUM_THREADS=1 it gives the numbers of n_threads=1
    out = run_python("""
        import numpy as np, metacore as mc
        rng = np.random.default_rng(0)
        model = mc.MLP([8, 16, 1], activation="tanh")
        ts = mc.TaskSet(rng.normal(size=(6000, 8)), rng.normal(size=6000),
                        np.arange(0, 6001, 60))
        theta = model.init(seed=0)
        a = mc.Objective(model, ts).grad(theta)
        b = mc.Objective(model, ts, n_threads=1).grad(theta)
        print(mc.build_info()["default_threads"], np.array_equal(a, b))
    """, OMP_NUM_THREADS="1")
    assert out.split() == ["1", "True"]


def test_explicit_thread_counts_leave_the_global_openmp_setting_alone():
    before = mc.build_info()["default_threads"]
    rng = np.random.default_rng(1)
    model = mc.MLP([8, 16, 1], activation="tanh")
    ts = mc.TaskSet(rng.normal(size=(3000, 8)), rng.normal(size=3000), np.arange(0, 3001, 30))
    theta = model.init(seed=1)
    for n in (1, 3, 7, -1):
        mc.Objective(model, ts, n_threads=n).value_and_grad(theta)
        model.predict(theta, ts.X, n_threads=n)
        assert mc.build_info()["default_threads"] == before


@pytest.mark.parametrize("name", ["AVX2", " avx2", "sse"])
def test_an_unknown_isa_name_is_reported_not_silently_ignored(name):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(mc.__file__))
    env = dict(os.environ, METACORE_ISA=name, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", "import metacore"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "METACORE_ISA" in r.stderr and repr(name) in r.stderr
