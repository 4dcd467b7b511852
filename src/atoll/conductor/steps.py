"""The conductor's steps: DBOS steps with fault points at their boundaries.

Every step of every workflow is declared with :func:`step` and opens with
:func:`boundary`, the named fault point drills and the fault matrix use
(``conductor.<workflow>.<step>``).  At a boundary each fault kind means what it
means for a message:

- ``raise``: the step fails before doing anything;
- ``hang``: the step hangs; past ``timeouts.workflow_step`` it is abandoned;
- ``kill``: the conductor dies there (SIGKILL);
- ``drop_reply``: the step does its work, then its result is lost, so the
  workflow sees a failure of a step that took effect (its undo must cope);
- ``duplicate_reply``: the step's work is done twice (it must be idempotent).

:func:`resume_guard` is how a move knows that its conductor died before the
point of no return: DBOS counts the dispatches of a workflow, and a second one
means the workflow is being resumed, so the first step it runs for real rolls
the move back instead of going on.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dbos import DBOS

from atoll import faults
from atoll.exceptions import ReplyLost, ResumedBeforePointOfNoReturn

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


# A step that fails is tried again (it is idempotent) this many times in all,
# after 0.5 s, 1 s, 2 s: a lost message or a blip of a database costs seconds,
# not a failed operation.  Steps before a move's point of no return are the
# exception (retries=False): their failure rolls the move back at once.
STEP_ATTEMPTS = 4
STEP_RETRY_INTERVAL_S = 0.5


def step(name: str, *, retries: bool = True) -> Callable[[F], F]:
    """A DBOS step named ``name``, honouring reply faults fired at its boundary."""

    def wrap(fn: F) -> F:
        def once(*args: Any, **kwargs: Any) -> Any:
            faults.take_outcome()
            result = fn(*args, **kwargs)
            outcome = faults.take_outcome()
            if outcome is None or not outcome.point.startswith("conductor."):
                return result
            if outcome.kind == "duplicate_reply":
                LOG.warning("fault: step %s runs a second time", name)
                return fn(*args, **kwargs)
            raise ReplyLost(f"step {name} took effect but its result was lost ({outcome.point})")

        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            attempts = STEP_ATTEMPTS if retries else 1
            for attempt in range(1, attempts + 1):
                try:
                    return once(*args, **kwargs)
                except ResumedBeforePointOfNoReturn:
                    raise
                except Exception as exc:
                    if attempt == attempts:
                        raise
                    delay = STEP_RETRY_INTERVAL_S * 2 ** (attempt - 1)
                    LOG.warning(
                        "step %s failed (%s); trying again in %.1fs (%d/%d)",
                        name,
                        exc,
                        delay,
                        attempt + 1,
                        attempts,
                    )
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return DBOS.step(name=name)(body)  # type: ignore[return-value]

    return wrap


def register_boundaries(workflow: str, steps: list[str]) -> None:
    for name in steps:
        point = f"conductor.{workflow}.{name}"
        faults.register(point, f"{workflow} workflow, before step '{name}'")


def boundary(workflow: str, name: str, **context: Any) -> None:
    """The fault point at the start of a step (see `atoll faults list`)."""
    from atoll.runtime import current

    faults.hit(
        f"conductor.{workflow}.{name}",
        timeout=current().settings.timeouts.workflow_step,
        **context,
    )


def resume_guard(what: str) -> None:
    """Raise if this workflow is running again after its conductor stopped."""
    workflow_id = DBOS.workflow_id
    if workflow_id is None:
        return
    status = DBOS.get_workflow_status(workflow_id)
    attempts = getattr(status, "recovery_attempts", None) or 0
    if attempts > 1:
        raise ResumedBeforePointOfNoReturn(
            f"the conductor driving this workflow stopped before {what}, before the point of "
            "no return; the move is rolled back"
        )
