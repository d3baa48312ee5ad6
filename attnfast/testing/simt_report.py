"""pytest plugin: at the end of the session, a table of the kernels run under the SIMT harness.

Register it in tests/conftest.py with ``pytest_plugins = ["attnfast.testing.simt_report"]``. It
prints nothing when no test loaded the harness (it never loads it itself).
"""
from __future__ import annotations


def _table(rows: list[dict]) -> list[str]:
    head = ("kernel", "dtype", "grid", "block", "smem", "launches", "status")
    cells = [head] + [(r["kernel"], r["dtype"], r["grid"], r["block"], str(r["smem"]),
                       str(r["launches"]), r["status"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    fmt = lambda c: "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()  # noqa: E731
    return [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(c) for c in cells[1:]]


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    from attnfast.testing import simt

    rows = simt.launch_log()
    if not rows:
        return
    terminalreporter.section("kernels run under the SIMT harness")
    for line in _table(rows):
        terminalreporter.write_line(line)
    kernels = {(r["kernel"]) for r in rows}
    terminalreporter.write_line(
        f"{len(kernels)} kernel instantiation(s), {len(rows)} configuration(s), "
        f"{sum(r['launches'] for r in rows)} launch(es)")
