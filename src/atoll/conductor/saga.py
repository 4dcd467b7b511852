"""An undo stack for workflows: each completed step pushes its undo.

Workflows stay plain functions (DESIGN: "durability is invisible in the code"):
every do and undo is a DBOS step, so a workflow resumed after a crash replays
the recorded steps, rebuilds the same stack, and rolls back exactly what had
completed.  Undos run newest first; one that fails is logged and the others
still run, because leaving more behind would not help the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)


class Saga:
    def __init__(self, name: str) -> None:
        self.name = name
        self._undo: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, undo: Callable[..., Any], *args: Any) -> None:
        self._undo.append((undo, args))

    def rollback(self) -> list[str]:
        """Run every undo, newest first; return the errors of those that failed."""
        errors: list[str] = []
        while self._undo:
            undo, args = self._undo.pop()
            try:
                undo(*args)
            except Exception as exc:
                LOG.exception("%s: undo %s failed", self.name, getattr(undo, "__name__", undo))
                errors.append(f"{getattr(undo, '__name__', undo)}: {exc}")
        return errors

    def forget(self) -> None:
        """Past the point of no return: nothing is undone any more."""
        self._undo.clear()
