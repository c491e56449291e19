"""tests/conftest.py's Hypothesis settings, as README "Reliability" describes them: the same
examples on every plain run (derandomized), and with ``--soak N`` fresh examples, N times as many
per test — for plain, parametrized and class-method tests (a method made ``--soak`` stop with an
INTERNALERROR: its settings live on the function, not on the bound method)."""

import os
import shutil
import subprocess
import sys

PROBE = '''
import os
import pytest
from hypothesis import given, settings, strategies as st

def record(name, x):
    with open(os.path.join(os.environ["PROBE_DIR"], name), "a") as fh:
        fh.write(f"{x}\\n")

@settings(max_examples=5)
@given(st.integers(0, 10**12))
def test_plain(x):
    record("plain", x)

@pytest.mark.parametrize("k", [1, 2])
@settings(max_examples=3)
@given(st.integers(0, 10**12))
def test_param(k, x):
    record("param", (k, x))

class TestMethods:
    @settings(max_examples=4)
    @given(st.integers(0, 10**12))
    def test_method(self, x):
        record("method", x)
'''


def session(folder, *options):
    """Run the probe tests once; {test: [drawn values]}, then clear the records."""
    env = dict(os.environ, PROBE_DIR=str(folder / "out"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *options, "test_probe.py"], cwd=folder / "suite", env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = {}
    for name in ("plain", "param", "method"):
        path = folder / "out" / name
        out[name] = path.read_text().split("\n")[:-1]
        path.unlink()
    return out


def test_plain_runs_repeat_and_a_soak_draws_fresh_examples_n_times_as_many(tmp_path):
    (tmp_path / "suite").mkdir()
    (tmp_path / "out").mkdir()
    shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "suite")
    (tmp_path / "suite" / "test_probe.py").write_text(PROBE)
    first, second = session(tmp_path), session(tmp_path)
    assert first == second                       # derandomized: the same examples every run
    assert {k: len(v) for k, v in first.items()} == {"plain": 5, "param": 6, "method": 4}
    soak_a, soak_b = session(tmp_path, "--soak", "2"), session(tmp_path, "--soak", "2")
    assert {k: len(v) for k, v in soak_a.items()} == {"plain": 10, "param": 12, "method": 8}
    for name in first:    # fresh: most values differ from the fixed run's and between soaks
        assert len(set(soak_a[name]) - set(first[name])) >= len(soak_a[name]) // 2, name
        assert len(set(soak_a[name]) - set(soak_b[name])) >= len(soak_a[name]) // 2, name
