"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Atoll, running_atoll


@pytest.fixture
def atoll(tmp_path: Path) -> Iterator[Atoll]:
    """A fresh embedded atoll with the demo layout (2 cells x 2 hosts)."""
    with running_atoll(tmp_path) as deployment:
        yield deployment


@pytest.fixture
def make_atoll(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory for an embedded atoll with settings overrides."""
    contexts = []

    def make(**overrides):  # type: ignore[no-untyped-def]
        ctx = running_atoll(tmp_path / f"atoll{len(contexts)}", **overrides)
        contexts.append(ctx)
        return ctx.__enter__()

    yield make
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix (rows: fault points, columns: kinds, pass counts)."""
    from tests.faults.matrix import RESULTS

    lines = RESULTS.table()
    if not lines:
        return
    terminalreporter.section("fault matrix")
    for line in lines:
        terminalreporter.write_line(line)
    RESULTS.write(Path(terminalreporter.config.rootpath) / ".fault-matrix.json")
