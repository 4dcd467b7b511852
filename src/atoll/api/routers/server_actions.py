"""POST /servers/{id}/action: the body's single key names the action.

Each action checks policy, moves the server into its task state with a
compare-and-swap (a concurrent conflicting action gets 409), records the
instance action and starts the workflow that does the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Response
from pydantic import ValidationError

from atoll import actions
from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep, VersionDep
from atoll.api.schemas.server_actions import Reboot
from atoll.api.server_records import ServerRecord, get_server
from atoll.conductor import engine
from atoll.conductor.workflows import power
from atoll.context import RequestContext
from atoll.db import instances
from atoll.exceptions import BadRequest, Conflict, InstanceInvalidState
from atoll.runtime import Runtime

router = APIRouter()

Handler = Callable[[Runtime, RequestContext, Any, ServerRecord, Any], None]
HANDLERS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def transition(
    record: ServerRecord,
    ctx: RequestContext,
    verb: str,
    *,
    vm_states: tuple[str, ...],
    task_state: str,
    expected_task: tuple[str | None, ...] = (None,),
) -> str:
    """Claim the server for ``verb`` or raise 409 naming the state that forbids it."""
    if record.cell is None:
        raise Conflict(f"Cannot '{verb}' instance {record.uuid} while it is in vm_state building")
    if record.locked and not ctx.is_admin:
        raise Conflict(f"Instance {record.uuid} is locked")
    try:
        instances.save(
            record.cell.db_url,
            record.uuid,
            expected_vm_state=vm_states,
            expected_task_state=expected_task,
            task_state=task_state,
        )
    except InstanceInvalidState:
        current = instances.get(record.cell.db_url, record.uuid)
        raise Conflict(
            f"Cannot '{verb}' instance {record.uuid} while it is in vm_state "
            f"{current.vm_state}"
            + (f" and task_state {current.task_state}" if current.task_state else "")
        ) from None
    return record.cell.db_url


def _power(
    rt: Runtime,
    ctx: RequestContext,
    record: ServerRecord,
    verb: str,
    act: str,
    vm_states: tuple[str, ...],
    task_state: str,
    hard: bool = False,
) -> None:
    cell_db = transition(record, ctx, verb, vm_states=vm_states, task_state=task_state)
    actions.start_action(cell_db, ctx, record.uuid, act)
    engine.start(
        power.power_action,
        power.workflow_id(act, record.uuid, ctx.request_id),
        ctx.to_dict(),
        record.uuid,
        act,
        hard,
    )


@action("os-stop")
def stop(rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any) -> None:
    policy.authorize(ctx, "os_compute_api:servers:stop", {"project_id": record.project_id})
    _power(rt, ctx, record, "stop", "stop", ("active", "error"), "powering-off")


@action("os-start")
def start(rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any) -> None:
    policy.authorize(ctx, "os_compute_api:servers:start", {"project_id": record.project_id})
    _power(rt, ctx, record, "start", "start", ("stopped",), "powering-on")


@action("reboot")
def reboot(rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any) -> None:
    policy.authorize(ctx, "os_compute_api:servers:reboot", {"project_id": record.project_id})
    try:
        args = Reboot.model_validate(body)
    except ValidationError:
        raise BadRequest(
            "Invalid input for field/attribute reboot: 'type' must be SOFT or HARD"
        ) from None
    hard = args.type.upper() == "HARD"
    if hard:
        if not record.host:
            raise Conflict(
                f"Cannot 'reboot' instance {record.uuid}: it has no host (it was "
                "never placed); delete it instead"
            )
        _power(
            rt,
            ctx,
            record,
            "reboot",
            "reboot",
            ("active", "stopped", "error"),
            "rebooting_hard",
            hard=True,
        )
    else:
        _power(rt, ctx, record, "reboot", "reboot", ("active",), "rebooting")


@router.post("/servers/{server_id}/action", status_code=202)
def server_action(
    server_id: str,
    rt: RuntimeDep,
    ctx: ContextDep,
    ver: VersionDep,
    body: dict[str, Any] = Body(...),
) -> Response:
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest('The action body must hold exactly one action, e.g. {"os-stop": null}')
    ((name, args),) = body.items()
    handler = HANDLERS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    record = get_server(rt, ctx, server_id)
    handler(rt, ctx, ver, record, args)
    return Response(status_code=202)
