"""Test-session reporting: the number of generated bad-input cases (tests/test_bad_input.py)."""

import sys


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_bad_input")
    if mod is not None and mod.CASES["n"]:
        child = mod.CASES.get("child", 0)
        terminalreporter.write_line(
            f"generated bad-input cases: {mod.CASES['n']} in this process"
            + (f", {child} in a child process" if child else ""))
