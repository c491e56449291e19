"""Test-session options and reporting.

- ``--run-slow``: also run the tests marked ``slow`` (skipped by default), e.g. the 100,000-call
  memory soak of every public operation.
- The number of generated bad-input cases (tests/test_bad_input.py) is printed at the end.
- A run that inherited SIGINT ignored (started in the background) restores Python's handler.
- Hypothesis draws its examples *derandomized* (the same examples on every run of the same test
  code, as Hypothesis's own "ci" profile does), so a CI verdict is reproducible and a red run can be
  replayed exactly. ``--soak N`` draws fresh random examples instead, N times as many per test
  (database off; ``--hypothesis-seed S`` replays one soak): the way to look for new failing inputs,
  e.g. ``python -m pytest --soak 5 -k "weighting or bad_input"``.
"""

import signal
import sys

import pytest
from hypothesis import settings

# A test run started in the background of a script (`python -m pytest &`, nohup) inherits SIGINT
# ignored, as POSIX shells do for background jobs, and so would every child process it starts:
# the Ctrl-C tests (which send SIGINT to this process or to children) would then test nothing
# and fail. Python's own handler is what a user at a terminal has; children get the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

settings.register_profile("metacore", derandomize=True, database=None, print_blob=True)
settings.load_profile("metacore")     # before the test modules build their settings objects


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="run the tests marked slow")
    parser.addoption("--soak", type=int, default=0, metavar="N",
                     help="fresh random Hypothesis examples, N times each test's count")


def pytest_configure(config):
    if config.getoption("--soak") < 0:
        raise pytest.UsageError("--soak must be a positive number of times")


def _soak(items, times):
    """Every @given test: random examples (not derandomized), ``times`` × its max_examples."""
    done = set()                       # parametrized items share one test function
    for item in items:
        test = getattr(item, "obj", None)
        test = getattr(test, "__func__", test)   # a test method: its function holds the settings
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is None or not hasattr(test, "hypothesis") or id(test) in done:
            continue
        done.add(id(test))
        test._hypothesis_internal_use_settings = settings(
            own, derandomize=False, database=None, max_examples=own.max_examples * times)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        _soak(items, config.getoption("--soak"))
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_bad_input")
    if mod is not None and mod.CASES["n"]:
        child = mod.CASES.get("child", 0)
        terminalreporter.write_line(
            f"generated bad-input cases: {mod.CASES['n']} in this process"
            + (f", {child} in a child process" if child else ""))
