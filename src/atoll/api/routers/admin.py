"""atoll's own admin endpoints (/atoll-admin/...): audit, notifications, faults, guests.

They are not part of the compute API; every one needs the ``atoll:admin`` rule.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from atoll import faults
from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep
from atoll.audit import run_audit
from atoll.context import RequestContext
from atoll.exceptions import BadRequest, NotFound

router = APIRouter(prefix="/atoll-admin")


@router.get("/audit")
def audit(rt: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "atoll:admin")
    return run_audit(rt).as_dict()


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
