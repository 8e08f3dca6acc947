"""Print the fault-injection counts at the end of the run (CI logs show them even with -q)."""

from tests.faults import harness


def pytest_terminal_summary(terminalreporter):
    for line in harness.REPORTS:
        terminalreporter.write_line(f"faults: {line}")
