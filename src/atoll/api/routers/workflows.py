"""``GET /atoll-admin/workflows/{workflow_id}``: a durable workflow and its steps.

Every multi-step operation runs as a DBOS workflow under a stable id; the move
family's ids are::

    move-{migration_uuid}                      resize or cold migrate
    confirm-{migration_uuid}-{request_id}      confirm a resize
    revert-{migration_uuid}-{request_id}       revert a resize

(the request id is the ``x-openstack-request-id`` of the call that started it).
The answer shows the workflow's DBOS status (PENDING, SUCCESS, ERROR, ...), its
result and its ``outcome`` (running, succeeded or failed: a move that rolled
back ends in SUCCESS with the result "error", so the status alone does not
say); the steps recorded so far in the order they ran, each with the error it
raised, if any; for the move family, the steps a successful run calls
(``planned_steps``), so a client can say "step k of n"; and, when the workflow
left a fault on its server (a failed or rolled-back move), that ``fault``.
Needs ``atoll:admin``; an unknown id is a 404.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from atoll.api import policy
from atoll.api.deps import ContextDep, isotime
from atoll.exceptions import AtollError, NotFound

router = APIRouter(prefix="/atoll-admin", tags=["atoll-admin"])

# The ``@DBOS.step(name=...)`` names each workflow calls, in order, when it
# succeeds (atoll.conductor.workflows.move/confirm/revert, atoll.conductor.moves).
PLANNED_STEPS: dict[str, list[str]] = {
    "move_server": [
        "move.conductor_event_start",
        "move.allocations_to_migration",
        "move.schedule",
        "move.set_task_state",
        "move.copy_to_target_cell",
        "move.prep_dest",
        "move.prep_source",
        "move.finish_dest",
        "move.delete_snapshot",
        "move.cut_over",
        "move.conductor_event_finish",
    ],
    "confirm_resize": [
        "confirm.start",
        "confirm.release_source",
        "move.drop_migration_allocation",
        "confirm.drop_source_copy",
        "confirm.finish",
    ],
    "revert_resize": [
        "revert.start",
        "revert.release_dest",
        "revert.restore_source",
        "move.allocations_back_to_server",
        "revert.swap_back",
        "revert.finish",
    ],
}
# Steps of ``move_server`` that only a move to another cell runs.
CROSS_CELL_ONLY_STEPS = frozenset({"move.copy_to_target_cell", "move.delete_snapshot"})
# Where each workflow kind records its server's fault (a key of the ``mv`` it runs on).
_FAULT_DB_KEY = {
    "move_server": "source_db",
    "confirm_resize": "dest_db",
    "revert_resize": "dest_db",
}


class WorkflowEngineUnavailable(AtollError):
    """The workflow engine does not run in this process."""

    code = 503
    title = "serviceUnavailable"


def _move_args(status: Any) -> dict[str, Any] | None:
    """The ``mv`` dict a move-family workflow was started with (its second argument)."""
    inputs = getattr(status, "input", None) or {}
    args = inputs.get("args") if isinstance(inputs, dict) else None
    if args and len(args) >= 2 and isinstance(args[1], dict):
        return args[1]
    return None


def _cross_cell(mv: dict[str, Any] | None, steps: list[dict[str, Any]]) -> bool | None:
    """Whether a move goes to another cell; None while the scheduler has not chosen."""
    names = [s["name"] for s in steps]
    if "move.copy_to_target_cell" in names:
        return True
    if mv is not None:
        for step in steps:
            output = step.get("_output")
            if step["name"] == "move.schedule" and isinstance(output, list) and output:
                first = output[0]
                if isinstance(first, dict) and "cell_id" in first:
                    return first["cell_id"] != mv.get("source_cell_id")
    if "move.prep_dest" in names:
        return False
    return None


def planned_steps(name: str, mv: dict[str, Any] | None, steps: list[dict[str, Any]]) -> list[str]:
    """The steps a successful run of this workflow calls (known moves trimmed to their kind)."""
    planned = list(PLANNED_STEPS.get(name, []))
    if name == "move_server" and _cross_cell(mv, steps) is False:
        planned = [s for s in planned if s not in CROSS_CELL_ONLY_STEPS]
    return planned


def _fault(name: str, mv: dict[str, Any] | None, since_ms: int | None) -> dict[str, Any] | None:
    """The newest fault the workflow's server got since the workflow started."""
    from atoll.db.cell_models import InstanceFault
    from atoll.db.session import session_scope

    key = _FAULT_DB_KEY.get(name)
    if mv is None or key is None or not mv.get(key) or not mv.get("instance_uuid"):
        return None
    query = (
        select(InstanceFault)
        .where(InstanceFault.instance_uuid == mv["instance_uuid"], InstanceFault.deleted == 0)
        .order_by(InstanceFault.id.desc())
    )
    if since_ms:
        since = dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC).replace(tzinfo=None)
        # a second of slack for clocks that round differently
        query = query.where(InstanceFault.created_at >= since - dt.timedelta(seconds=1))
    try:
        with session_scope(mv[key]) as s:
            row = s.scalars(query.limit(1)).first()
            if row is None:
                return None
            return {
                "code": row.code,
                "message": row.message,
                "host": row.host,
                "created": isotime(row.created_at),
            }
    except Exception:  # a cell that does not answer must not hide the workflow
        return None


RUNNING = frozenset({"PENDING", "ENQUEUED", "DELAYED"})
# What the move-family workflows return when they failed and rolled back (or gave up).
FAILED_RESULTS = frozenset({"error"})


def outcome(status: str, result: Any) -> str:
    """running, failed or succeeded: a workflow that caught its failure ends in SUCCESS
    with the result "error", so the DBOS status alone does not say."""
    if status in RUNNING:
        return "running"
    if status != "SUCCESS" or result in FAILED_RESULTS:
        return "failed"
    return "succeeded"


def _simple(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


@router.get("/workflows/{workflow_id}")
def show_workflow(workflow_id: str, ctx: ContextDep) -> dict[str, Any]:
    """A workflow's status and recorded steps (``atoll:admin``)."""
    from atoll.conductor import engine

    policy.authorize(ctx, "atoll:admin")
    try:
        status = engine.status(workflow_id)
    except Exception as exc:  # the workflow DB cannot be reached
        raise WorkflowEngineUnavailable(
            f"The workflow engine cannot be asked about {workflow_id}: {exc}"
        ) from None
    if status is None:
        raise NotFound(f"Workflow {workflow_id} could not be found.")
    steps: list[dict[str, Any]] = []
    for info in engine.steps(workflow_id):
        error = info.get("error")
        steps.append(
            {
                "name": info.get("function_name"),
                "error": None if error is None else (str(error) or type(error).__name__),
                "started_at": info.get("started_at_epoch_ms"),
                "completed_at": info.get("completed_at_epoch_ms"),
                "_output": info.get("output"),
            }
        )
    mv = _move_args(status)
    planned = planned_steps(status.name, mv, steps)
    for step in steps:
        step.pop("_output", None)
    error = status.error
    return {
        "workflow": {
            "id": status.workflow_id,
            "name": status.name,
            "status": status.status,
            "outcome": outcome(status.status, _simple(status.output)),
            "result": _simple(status.output),
            "error": None if error is None else (str(error) or type(error).__name__),
            "instance_uuid": mv.get("instance_uuid") if mv else None,
            "created_at": status.created_at,
            "updated_at": status.updated_at,
            "steps": steps,
            "planned_steps": planned,
            "fault": _fault(status.name, mv, status.created_at),
        }
    }
