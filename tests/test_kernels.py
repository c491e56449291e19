"""The compiled kernels at every instruction-set level this CPU can run: AVX-512, AVX2+FMA and the
baseline are each forced with METACORE_ISA in a child process (the level is fixed when the core
loads) that runs tests/kernel_checks.py — the core against the NumPy reference and central finite
differences on shapes that hit the tiles' tails — and the levels agree with each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import metacore as mc

HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = ["baseline", "avx2", "avx512"]


def _env(level):
    env = dict(os.environ)
    env["METACORE_ISA"] = level
    # the metacore under test (installed, or the source tree's), not whatever else is on the path
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(mc.__file__)), HERE])
    env["OMP_NUM_THREADS"] = "2"
    return env


def _runnable():
    cpu = mc.build_info().get("simd_cpu", "")
    if cpu not in LEVELS:  # a build without multiversioning (non-x86, -march=native)
        return []
    return LEVELS[: LEVELS.index(cpu) + 1]


def test_build_info_names_the_running_level():
    info = mc.build_info()
    assert info["simd_active"] in info["simd_targets"]
    if info["simd_cpu"] in LEVELS and "METACORE_ISA" not in os.environ:
        assert info["simd_active"] == info["simd_cpu"]


@pytest.mark.parametrize("level", LEVELS)
def test_kernels_match_reference_and_finite_differences_at_level(level):
    if level not in _runnable():
        pytest.skip(f"this CPU cannot run the {level} kernels (best: {mc.build_info()['simd_cpu']})")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "kernel_checks.py"), level],
                          env=_env(level), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"kernel checks passed at {level}" in proc.stdout


def test_an_unknown_or_higher_level_falls_back_to_the_cpus_best():
    code = "import json, metacore as mc; print(json.dumps(mc.build_info()))"
    env = _env("no-such-level")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    info = json.loads(out)
    assert info["simd_active"] == info["simd_cpu"]


def _w1_and_w2_in_child(level):
    code = """
import json, numpy as np, metacore as mc
model = mc.MLP([1, 40, 40, 1], activation="relu", loss="mse")
theta = model.init(seed=0, dtype=np.float32)
batch = mc.tasks.SinusoidSource(k_support=10, k_query=10).sample(25, step=0, seed=0, dtype=np.float32)
loss, grad = mc.MAML(model, inner_lr=0.01, inner_steps=1).meta_value_and_grad(theta, batch)
rng = np.random.default_rng(0)
X = rng.standard_normal((600, 64)); y = (rng.random(600) < 0.5).astype(float)
ts = mc.TaskSet(X, y, np.array([0, 200, 400, 600]))
v, g = mc.Objective(mc.Logistic(64), ts, n_threads=1).value_and_grad(0.1 * rng.standard_normal(65))
print(json.dumps({"level": mc.build_info()["simd_active"], "w1": [float(loss)] + grad.tolist(),
                  "w2": [float(v)] + g.tolist()}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=_env(level), capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out)


def test_levels_agree_to_rounding():
    """Across instruction sets results may differ in the last bits (FMA contraction, vector
    lengths change the summation order), never by more."""
    levels = _runnable()
    if len(levels) < 2:
        pytest.skip("only one instruction-set level runs on this CPU")
    runs = [_w1_and_w2_in_child(level) for level in levels]
    assert [r["level"] for r in runs] == levels
    for r in runs[1:]:
        np.testing.assert_allclose(r["w1"], runs[0]["w1"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r["w2"], runs[0]["w2"], rtol=1e-12, atol=1e-14)
