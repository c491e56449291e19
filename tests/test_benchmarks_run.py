"""The pytest-benchmark suite in benchmarks/ runs and checks its results against the reference,
but it sits outside the default test run, so nothing else would notice when it breaks (it once
called the deprecated ``learner.fit``, an error under the suite's warning filter). Here it runs in
pytest-benchmark's smoke mode, ``--benchmark-disable``: every benchmarked call once, untimed,
with all of the suite's correctness checks."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmark_suite_runs_and_its_checks_pass():
    pytest.importorskip("pytest_benchmark")
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-disable",
                          "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
