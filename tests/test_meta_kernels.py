"""The meta-step's kernels (θ's register-blocked transposes, the query rows' own pass, the HVP that
reuses the support rows' forward pass) at every instruction-set level this CPU can run, each in a
child process (tests/meta_kernel_checks.py): the core against the NumPy reference, the
meta-gradient against central finite differences, and bit-identical at 1 and 2 threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import metacore as mc

HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = ["baseline", "avx2", "avx512"]


def _runnable():
    cpu = mc.build_info().get("simd_cpu", "")
    return LEVELS[: LEVELS.index(cpu) + 1] if cpu in LEVELS else []


@pytest.mark.parametrize("level", LEVELS)
def test_meta_kernels_match_reference_and_finite_differences_at_level(level):
    if level not in _runnable():
        pytest.skip(f"this CPU cannot run the {level} kernels (best: {mc.build_info()['simd_cpu']})")
    env = dict(os.environ, METACORE_ISA=level, OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(mc.__file__)), HERE]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "meta_kernel_checks.py"), level],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"meta kernel checks passed at {level}" in proc.stdout
