"""Test-session options and reporting.

- ``--run-slow``: also run the tests marked ``slow`` (skipped by default), e.g. the 100,000-call
  memory soak of every public operation.
- The number of generated bad-input cases (tests/test_bad_input.py) is printed at the end.
"""

import sys

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="run the tests marked slow")


def pytest_collection_modifyitems(config, items):
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
