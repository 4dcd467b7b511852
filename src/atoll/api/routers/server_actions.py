"""POST /servers/{id}/action: the body's single key names the action.

Each action checks policy, moves the server into its task state with a
compare-and-swap (a concurrent conflicting action gets 409), records the
instance action and starts the workflow that does the work.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Response
from pydantic import ValidationError

from atoll import actions
from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep, VersionDep
from atoll.api.schemas.server_actions import Migrate, Reboot, Resize
from atoll.api.server_records import ServerRecord, get_server
from atoll.conductor import engine
from atoll.conductor.workflows import power
from atoll.context import RequestContext
from atoll.db import instances
from atoll.exceptions import BadRequest, Conflict, InstanceInvalidState, NotFound
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
    return Response(status_code=204 if name == "confirmResize" else 202)


# ---------------------------------------------------------------- moves


def _start_move(
    rt: Runtime,
    ctx: RequestContext,
    record: ServerRecord,
    *,
    verb: str,
    act: str,
    new_flavor: dict[str, Any],
    migration_type: str,
    requested_host: str | None,
) -> None:
    from atoll.conductor import moves
    from atoll.conductor.workflows import move
    from atoll.db.cell_models import Migration
    from atoll.db.session import session_scope

    if not record.host:
        raise Conflict(f"Cannot '{verb}' instance {record.uuid}: it has no host")
    allow_cross_cell = policy.check(
        ctx, "compute:servers:resize:cross_cell", {"project_id": record.project_id}
    )
    cell_db = transition(
        record, ctx, verb, vm_states=("active", "stopped"), task_state="resize_prep"
    )
    migration_uuid = str(uuidlib.uuid4())
    try:
        with session_scope(cell_db) as s:
            s.add(
                Migration(
                    uuid=migration_uuid,
                    instance_uuid=record.uuid,
                    source_compute=record.host,
                    source_node=record.node,
                    old_flavor_id=str(record.flavor.get("id", "")),
                    new_flavor_id=str(new_flavor.get("id", "")),
                    status="pre-migrating",
                    migration_type=migration_type,
                    user_id=ctx.user_id,
                    project_id=ctx.project_id,
                )
            )
        actions.start_action(cell_db, ctx, record.uuid, act)
        mv = moves.describe_new_move(
            rt,
            record,
            migration_uuid=migration_uuid,
            new_flavor=new_flavor,
            allow_cross_cell=allow_cross_cell,
            requested_host=requested_host,
            migration_type=migration_type,
        )
    except Exception:
        instances.save(cell_db, record.uuid, task_state=None)
        raise
    engine.start(move.move_server, move.workflow_id(migration_uuid), ctx.to_dict(), mv)


@action("resize")
def resize(rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any) -> None:
    from atoll.api.quotas import QuotaEngine
    from atoll.db import flavors

    policy.authorize(ctx, "os_compute_api:servers:resize", {"project_id": record.project_id})
    try:
        args = Resize.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(
            f"Invalid input for field/attribute resize: {exc.errors()[0]['msg']}"
        ) from None
    try:
        new = flavors.get(rt.settings.api_db, str(args.flavorRef))
    except NotFound as exc:
        raise BadRequest(exc.message) from None
    old = record.flavor
    if str(new["flavorid"]) == str(old.get("flavorid")):
        raise BadRequest("When resizing, instances must change flavor!")
    volume_backed = any(v.get("boot_index") == 0 for v in record.volumes) or not record.image_ref
    if not volume_backed and new["root_gb"] < old["root_gb"]:
        raise BadRequest(
            "Resizing to a smaller root disk is not allowed: "
            f"{old['root_gb']} GB -> {new['root_gb']} GB."
        )
    if not volume_backed and new["root_gb"] == 0 and old["root_gb"] != 0:
        raise BadRequest("Resize to zero disk flavor is not allowed.")
    deltas = {
        k: v
        for k, v in (
            ("cores", new["vcpus"] - old["vcpus"]),
            ("ram", new["memory_mb"] - old["memory_mb"]),
        )
        if v > 0
    }
    if deltas:
        QuotaEngine(rt).check_deltas(record.project_id, deltas)
    _start_move(
        rt,
        ctx,
        record,
        verb="resize",
        act="resize",
        new_flavor=new,
        migration_type="resize",
        requested_host=None,
    )


@action("migrate")
def migrate(rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any) -> None:
    policy.authorize(
        ctx, "os_compute_api:os-migrate-server:migrate", {"project_id": record.project_id}
    )
    try:
        args = Migrate.model_validate(body or {})
    except ValidationError as exc:
        raise BadRequest(
            f"Invalid input for field/attribute migrate: {exc.errors()[0]['msg']}"
        ) from None
    host = args.host
    if host is not None:
        if ver < "2.56":
            raise BadRequest(
                "Invalid input for field/attribute migrate: 'host' needs microversion 2.56"
            )
        policy.authorize(
            ctx, "os_compute_api:os-migrate-server:migrate:host", {"project_id": record.project_id}
        )
        try:
            rt.cells.for_host(host)
        except NotFound:
            raise BadRequest(f"Compute host {host} could not be found.") from None
        if host == record.host:
            raise BadRequest(f"The target host can't be the same one: {host}.")
    _start_move(
        rt,
        ctx,
        record,
        verb="migrate",
        act="migrate",
        new_flavor=record.flavor,
        migration_type="migration",
        requested_host=host,
    )


def _finish_move(
    rt: Runtime, ctx: RequestContext, record: ServerRecord, *, verb: str, act: str, task_state: str
) -> dict[str, Any]:
    from atoll.conductor import moves

    if record.vm_state != "resized":
        raise Conflict(
            f"Cannot '{verb}' instance {record.uuid} while it is in vm_state {record.vm_state}"
        )
    cell_db = transition(record, ctx, verb, vm_states=("resized",), task_state=task_state)
    try:
        mv = moves.describe_finished_move(rt, record.uuid, record.cell)
        actions.start_action(cell_db, ctx, record.uuid, act)
    except Exception:
        instances.save(cell_db, record.uuid, task_state=None)
        raise
    return mv


@action("confirmResize")
def confirm_resize(
    rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any
) -> None:
    from atoll.conductor.workflows import confirm

    policy.authorize(
        ctx, "os_compute_api:servers:confirm_resize", {"project_id": record.project_id}
    )
    mv = _finish_move(
        rt, ctx, record, verb="confirmResize", act="confirmResize", task_state="resize_confirming"
    )
    engine.start(
        confirm.confirm_resize,
        confirm.workflow_id(mv["migration_uuid"], ctx.request_id),
        ctx.to_dict(),
        mv,
    )


@action("revertResize")
def revert_resize(
    rt: Runtime, ctx: RequestContext, ver: Any, record: ServerRecord, body: Any
) -> None:
    from atoll.conductor.workflows import revert

    policy.authorize(ctx, "os_compute_api:servers:revert_resize", {"project_id": record.project_id})
    mv = _finish_move(
        rt, ctx, record, verb="revertResize", act="revertResize", task_state="resize_reverting"
    )
    engine.start(
        revert.revert_resize,
        revert.workflow_id(mv["migration_uuid"], ctx.request_id),
        ctx.to_dict(),
        mv,
    )
