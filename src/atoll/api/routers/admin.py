"""atoll's own admin endpoints (/atoll-admin/...): audit, heal, notifications, faults, guests.

They are not part of the compute API; every one needs the ``atoll:admin`` rule.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from pydantic import StrictBool

from atoll import faults
from atoll.api import policy
from atoll.api.deps import ContextDep, JsonBody, RuntimeDep, openapi_body
from atoll.api.errors import validate
from atoll.api.schemas import Strict
from atoll.audit import run_audit
from atoll.context import RequestContext
from atoll.exceptions import BadRequest, NotFound
from atoll.heal import heal as run_heal

router = APIRouter(prefix="/atoll-admin")


@router.get("/audit")
def audit(rt: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    return run_audit(rt).as_dict()


class HealRequest(Strict):
    """``{"dry_run": true}`` only says what would be repaired; ``false`` repairs it."""

    dry_run: StrictBool


@router.post("/heal", openapi_extra=openapi_body(HealRequest))
def heal(body: JsonBody, rt: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    """Audit, repair what is safe to repair, audit again (see atoll.heal)."""
    policy.authorize(ctx, "atoll:admin")
    request = validate(HealRequest, body)
    return run_heal(rt, dry_run=request.dry_run).as_dict()


@router.get("/audit/stats")
def audit_stats(request: Request, ctx: ContextDep) -> dict[str, Any]:
    """Counters of the conductor's periodic audits in this process."""
    policy.authorize(ctx, "atoll:admin")
    counters = getattr(request.app.state, "audit_counters", None)
    if counters is None:
        raise NotFound("no conductor runs in this process, so there are no audit counters")
    return {"audit_stats": counters.snapshot()}


@router.get("/notifications")
def notifications(
    rt: RuntimeDep, ctx: ContextDep, instance_uuid: str | None = None, since: int = 0
) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    return {"notifications": rt.notifier.list(instance_uuid, since)}


@router.get("/faults")
def list_faults(ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    return {
        "points": [{"name": p.name, "description": p.description} for p in faults.registered()],
        "active": faults.active(),
    }


@router.put("/faults")
def set_faults(ctx: ContextDep, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Replace the active faults of this process: {"faults": {point: action}}."""
    policy.authorize(ctx, "atoll:admin")
    spec = body.get("faults")
    if not isinstance(spec, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in spec.items()
    ):
        raise BadRequest('The body must be {"faults": {"<point>": "<action>", ...}}')
    try:
        faults.configure(spec)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return {"active": faults.active()}


@router.get("/hosts/{host}/guests")
def guests(host: str, rt: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    cell = rt.cells.for_host(host)
    return {"guests": rt.compute(cell).list_guests(RequestContext.admin(), host)}


@router.get("/hosts/{host}/guests/{instance_uuid}")
def guest(host: str, instance_uuid: str, rt: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    cell = rt.cells.for_host(host)
    info = rt.compute(cell).describe_guest(RequestContext.admin(), host, instance_uuid)
    if not info:
        raise NotFound(f"no guest {instance_uuid} on {host}")
    return {"guest": info}


@router.get("/cells/{cell_name}/instances/{instance_uuid}")
def cell_copies(
    cell_name: str, instance_uuid: str, rt: RuntimeDep, ctx: ContextDep
) -> dict[str, Any]:
    """Every row a cell holds for a server: hidden and soft-deleted copies included."""
    from sqlalchemy import select

    from atoll.db.cell_models import Instance
    from atoll.db.session import session_scope

    policy.authorize(ctx, "atoll:admin")
    cell = rt.cells.by_name(cell_name)
    with session_scope(cell.db_url) as s:
        rows = s.scalars(select(Instance).where(Instance.uuid == instance_uuid)).all()
        copies = [
            {
                "uuid": r.uuid,
                "hidden": r.hidden,
                "deleted": r.deleted != 0,
                "vm_state": r.vm_state,
                "task_state": r.task_state,
                "power_state": r.power_state,
                "host": r.host,
                "node": r.node,
                "availability_zone": r.availability_zone,
                "flavor": r.flavor.get("cur"),
                "old_flavor": r.flavor.get("old"),
                "new_flavor": r.flavor.get("new"),
                "vcpus": r.vcpus,
                "memory_mb": r.memory_mb,
                "root_gb": r.root_gb,
                "ephemeral_gb": r.ephemeral_gb,
            }
            for r in rows
        ]
    return {"cell": cell.name, "instances": copies}


@router.get("/images")
def images(rt: RuntimeDep, ctx: ContextDep, instance_uuid: str | None = None) -> dict[str, Any]:
    """Every image, deleted ones too: follows the temporary snapshots of moves."""
    policy.authorize(ctx, "atoll:admin")
    return {"images": rt.images.list_all(instance_uuid=instance_uuid)}


@router.get("/volume-attachments")
def volume_attachments(
    rt: RuntimeDep, ctx: ContextDep, instance_uuid: str | None = None
) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    return {"attachments": rt.volumes.attachments(instance_uuid=instance_uuid)}


@router.get("/port-bindings")
def port_bindings(rt: RuntimeDep, ctx: ContextDep, port_id: str | None = None) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    bindings = rt.networks.bindings(port_id) if port_id else rt.networks.all_bindings()
    return {"bindings": bindings}
